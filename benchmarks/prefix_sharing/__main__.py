"""`python -m benchmarks.prefix_sharing`: the study (see `benchmarks.prefix_sharing` for what it measures)."""

from . import main


if __name__ == "__main__":
    main()
