"""The benchmarks of dmpo-trl: each study runs from the repository root as `python -m benchmarks.<study>` (the quality
study and its tools: `python -m benchmarks.quality`, `python -m benchmarks.quality.<tool>`) and writes under
`benchmarks/results/<study>/<run>/`. `benchmarks/README.md` indexes every quoted figure."""
