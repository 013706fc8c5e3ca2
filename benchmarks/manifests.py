"""Write each run folder's `manifest.json` from what its results files record, and check the paths the docs name.

A run folder is `benchmarks/results/<study>/<run>/`. Its manifest holds the command that made it, the git commit(s),
the library versions and the settings, each read from the folder's own files: the `provenance` entries of its JSON
and JSON-lines records (`dmpo_trl.provenance.provenance()`), the `config` / `settings` they record, and the command
blocks of its `notes.md`. What the folder does not record is written as null, and `missing` says why; nothing is
filled in from elsewhere except the commands and commits in `RECORDED`, each quoted from the report or page named
beside it. Rerunning it rewrites the manifests identically.

    python -m benchmarks.manifests            # write every manifest.json
    python -m benchmarks.manifests --check    # every results path named in README.md, docs/ and
                                              # benchmarks/README.md exists, every run folder has its two files
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

RECORDED: dict[str, dict[str, Any]] = {
    # folders without a notes.md: the command (and, where the records hold none, the commit) as a page or report
    # quotes it, in today's `python -m` form
    "quality/tuned": {
        "command": "python -m benchmarks.quality --num_valid_users 50 --more_test_users 170 --generation_methods none"
        " --methods random popular zero-shot sft dpo dmpo-k4 --method_settings dmpo-k4:0.001:2 dpo:0.003:1"
        " sft:0.003:1 --results_dir benchmarks/results/quality/tuned --work_dir outputs/quality-tuned",
        "source": "docs/results/main-comparison.md (To reproduce)",
    },
    "quality/lr": {
        "command": 'V="--seeds 0 --num_valid_users 50 --evaluate_on valid --generation_methods none'
        ' --explain_users 0"\npython -m benchmarks.quality $V --methods random popular sft dpo dmpo-k4'
        " --learning_rate 3e-3 --results_dir benchmarks/results/quality/lr/lr3e-3 --work_dir outputs/quality-lr/lr3e-3"
        "   # ... one dir per setting\npython -m benchmarks.quality.selection benchmarks/results/quality/lr/*",
        "source": "docs/results/main-comparison.md (To reproduce; the other settings differ in --learning_rate and"
        " --num_train_epochs, as each run's config records)",
    },
    "quality/tuned-k": {
        "command": "python -m benchmarks.quality --num_valid_users 50 --more_test_users 170 --generation_methods none"
        " --learning_rate 1e-3 --num_train_epochs 2 --methods random popular dpo dmpo-k2 dmpo-k4 dmpo-k8"
        " --results_dir benchmarks/results/quality/tuned-k",
        "source": "docs/results/k-curve.md",
    },
    "classic/tuned": {
        "command": "python -m benchmarks.classic_baselines --seeds 0 --report false & python -m"
        " benchmarks.classic_baselines --seeds 1 --report false; wait; python -m benchmarks.classic_baselines"
        " --report_only",
        "source": "docs/results/classic-baselines.md (To reproduce)",
    },
    "cross_domain/genres": {"command": "python -m benchmarks.cross_domain", "source": "docs/results/cross-domain.md"},
    "gpu_check/h200": {"command": "python -m benchmarks.gpu_check --json", "source": "h200.md (header)"},
    "quality/levers": {
        "command": "python -m benchmarks.quality.levers --out benchmarks/results/quality/levers/quality-levers.md",
        "source": "quality-levers.md (last line: made by the script, without --out) and docs/results/levers.md",
        "commit": "720ae6c",
        "commit_source": "quality-levers.md (last line)",
    },
    "prefix_sharing/k-sweep": {
        "command": "python -m benchmarks.prefix_sharing --k 1 4 8 16 --steps 2 --warmup 1 --threads 1\n"
        "python -m benchmarks.prefix_sharing --check",
        "source": "prefix_sharing.md (header)",
    },
    "prefix_sharing/policy": {
        "command": "python -m benchmarks.prefix_sharing --sweep --rounds 1 --threads 2\n"
        "python -m benchmarks.prefix_sharing --policy --rounds 2 --threads 2\n"
        "python -m benchmarks.prefix_sharing --policy --shapes ultrafeedback short_prompt --rounds 3 --threads 2",
        "source": "prefix_sharing_policy.md (each section names its command)",
        "commit": ["0cb3ec2", "752cddb", "533fe84"],
        "commit_source": "prefix_sharing_policy.md (the sweep, the first and the second policy run, in that order)",
    },
    "row_packing/cpu": {
        "command": "python -m benchmarks.row_packing --output benchmarks/results/row_packing/cpu/row_packing.jsonl",
        "source": "row_packing.md (header)",
    },
    "ranking_throughput/24users": {
        "command": "python -m benchmarks.ranking_throughput --num_users 24 --users_per_forward 4 8 --threads 2"
        " --output benchmarks/results/ranking_throughput/24users/ranking_throughput.json",
        "source": "ranking_throughput.json (`settings`: num_users, users_per_forward, threads, output)",
    },
    "evaluate/candidates-prompt": {
        "command": "dmpo-trl evaluate --dataset movielens-100k --num-candidates 20 --num-users 500 --seed 0"
        " (--baseline random|popular)",
        "source": "movielens100k_20cand_500users.json (`note`)",
    },
}
PREDATES = (
    "not recorded: these runs predate the `provenance` entry of the results files, and no report or page names it"
)
WHY: dict[str, dict[str, str]] = {
    # why a field is null, where the general reason would say less
    **{
        key: {"commit": PREDATES, "library_versions": PREDATES}
        for key in (
            "quality/tuned",
            "quality/lr",
            "quality/tuned-k",
            "quality/shared",
            "quality/300users",
            "quality/candidates",
        )
    },  # fmt: skip
    "quality/shared": {
        "commit": PREDATES,
        "library_versions": PREDATES,
        "command": "not recorded: no notes.md, report or page gives it; `settings` is the config the runs recorded",
    },
    "quality/300users": {
        "commit": PREDATES,
        "library_versions": PREDATES,
        "command": "not recorded beyond `--num_train_users 300` (docs/results/shared-setting.md); `settings` is the "
        "config the runs recorded",
    },
    "quality/candidates": {
        "commit": PREDATES,
        "library_versions": PREDATES,
        "command": "not recorded beyond `--prompt_style candidates` (docs/results/levers.md); `settings` is the "
        "config the runs recorded",
    },
    "large_log/synthetic": {
        "command": "not recorded: the report names the script and seed 0 only; `settings` is what large_log.json "
        "records"
    },
    "evaluate/candidates-prompt": {
        "commit": "not recorded: the file holds the figures and a `note` (the command), no provenance",
        "library_versions": "not recorded: the file holds the figures and a `note` (the command), no provenance",
    },
    "prefix_sharing/k-sweep": {
        "commit": "not recorded: neither prefix_sharing.md (dated 2026-11-27) nor prefix_sharing.jsonl names a commit",
        "library_versions": "not recorded: prefix_sharing.jsonl holds the figures only",
        "settings": "not recorded in a machine-readable file: the command in prefix_sharing.md sets them",
    },
    "prefix_sharing/policy": {
        "library_versions": "not recorded: prefix_sharing_policy.jsonl holds the figures only",
        "settings": "not recorded in a machine-readable file: the commands in prefix_sharing_policy.md set them",
    },
    "quality/levers": {
        "library_versions": "not recorded: quality-levers.md names only the commit; each run it reads records its own",
        "settings": "not recorded in a machine-readable file: the levers and folders are listed in "
        "benchmarks/quality/levers.py (LEVERS) and in the report",
    },
    "gpu_check/h200": {
        "settings": "not recorded apart from the figures: h200.md says every setting is the script's default, "
        "printed in h200.log and among the figures in h200.jsonl",
    },
}


def run_folders(root: Path = RESULTS) -> list[Path]:
    """Every `<study>/<run>/` folder under `root`, sorted."""
    return sorted(path for path in root.glob("*/*") if path.is_dir())


def _ignored(paths: list[Path]) -> set[Path]:
    """The paths git ignores (trained adapters, caches): not results, and absent from a fresh clone."""
    if not paths:
        return set()
    try:
        done = subprocess.run(
            ["git", "check-ignore", "--stdin"],
            input="\n".join(str(path) for path in paths),
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
    except OSError:  # no git: every file counts
        return set()
    return {Path(line) for line in done.stdout.splitlines() if line}


def records(folder: Path) -> list[tuple[str, dict]]:
    """Every JSON object the folder's results files hold (JSON and JSON-lines, git-ignored files left out), with its
    path relative to the folder."""
    out = []
    paths = sorted(folder.rglob("*.json*"))
    ignored = _ignored(paths)
    for path in paths:
        if path in ignored:
            continue
        if path.name == "manifest.json" or path.suffix not in {".json", ".jsonl"} or path.name == "candidates.json":
            continue
        rel = path.relative_to(folder).as_posix()
        text = path.read_text(encoding="utf-8")
        objects = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else []
        if path.suffix == ".json":
            objects = [json.loads(text)]
        out += [(rel, obj) for obj in objects if isinstance(obj, dict)]
    return out


def _provenances(rel: str, obj: dict) -> list[dict]:
    """The provenance entries of one record, in the common form {commit, dirty, python, libraries}."""
    found = []
    if isinstance(obj.get("provenance"), dict):
        prov = obj["provenance"]
        git = prov.get("git") or {}
        found.append(
            {
                "commit": git.get("commit"),
                "dirty": git.get("dirty"),
                "python": prov.get("python"),
                "libraries": {**({"dmpo_trl": prov["dmpo_trl"]} if "dmpo_trl" in prov else {}), **prov["libraries"]},
            }
        )
    if "git_commit" in obj or "versions" in obj:  # the classic baselines' form
        found.append(
            {"commit": obj.get("git_commit"), "dirty": None, "python": None, "libraries": obj.get("versions") or {}}
        )
    for value in obj.values():  # gpu_check's JSON lines nest theirs under results
        if isinstance(value, dict) and "provenance" in value:
            found += _provenances(rel, value)
    return found


def _one_or_all(values: list) -> Any:
    distinct = list(dict.fromkeys(json.dumps(v, sort_keys=True) for v in values if v is not None))
    if not distinct:
        return None
    decoded = [json.loads(v) for v in distinct]
    return decoded[0] if len(decoded) == 1 else decoded


def settings_of(folder: Path, recs: list[tuple[str, dict]]) -> Any:
    """The settings the folder's records hold: quality-study configs (the report's and the distinct configs its runs
    trained with), or the `config` / `settings` of other studies."""
    configs: dict[str, list[str]] = {}
    for rel, obj in recs:
        for key in ("config", "settings"):
            if isinstance(obj.get(key), dict):
                configs.setdefault(json.dumps(obj[key], sort_keys=True), []).append(rel)
        if rel == "classic.json":
            keep = ("quality_dir", "quality_config", "grids", "selection_rule", "cornac_settings", "seeds")
            configs.setdefault(json.dumps({k: obj.get(k) for k in keep}, sort_keys=True), []).append(rel)
        if "note" in obj and isinstance(obj["note"], str):
            configs.setdefault(json.dumps({"note": obj["note"]}), []).append(rel)
        if rel.endswith("row_packing.jsonl") and "shape" in obj:
            row = {k: obj[k] for k in ("shape", "batch_size", "k", "rounds") if k in obj}
            configs.setdefault(json.dumps(row, sort_keys=True), []).append(rel)
    if not configs:
        return None
    entries = [{"recorded_in": _files(files), "values": json.loads(text)} for text, files in configs.items()]
    return entries[0]["values"] if len(entries) == 1 else entries


def _files(files: list[str]) -> list[str] | str:
    files = list(dict.fromkeys(files))
    return files if len(files) <= 6 else f"{len(files)} files: {files[0]} ... {files[-1]}"


def notes_command(folder: Path) -> str | None:
    """The indented command blocks of the folder's notes.md, joined (None if it has none)."""
    notes = folder / "notes.md"
    if not notes.is_file():
        return None
    blocks, current = [], []
    for line in notes.read_text(encoding="utf-8").splitlines() + [""]:
        if line.startswith("    "):
            current.append(line[4:])
        elif current and line.strip():
            blocks.append("\n".join(current))
            current = []
        elif current:
            current.append("")
    if current:
        blocks.append("\n".join(current))
    blocks = [block.strip() for block in blocks]
    commands = [b for b in blocks if re.search(r"python -m benchmarks|dmpo-trl ", b)]
    return "\n\n".join(commands) or None


def manifest(folder: Path, root: Path = RESULTS) -> dict[str, Any]:
    key = folder.relative_to(root).as_posix()
    recs = records(folder)
    provenances = [p for rel, obj in recs for p in _provenances(rel, obj)]
    recorded = RECORDED.get(key, {})
    missing: dict[str, str] = {}
    why = WHY.get(key, {})

    command, source = recorded.get("command"), recorded.get("source")
    if command is None:
        command, source = notes_command(folder), "notes.md"
    if command is None:
        source = None
        missing["command"] = why.get("command", "not recorded: no notes.md, report or results page gives it")

    commits = _one_or_all([p["commit"] for p in provenances])
    commit_source = None
    if commits:
        several = " (a list: the runs ran at several commits)" if isinstance(commits, list) else ""
        commit_source = "the `provenance` of the results files" + several
    dirty = any(p["dirty"] for p in provenances) if any(p["dirty"] is not None for p in provenances) else None
    if commits is None and "commit" in recorded:
        commits, commit_source = recorded["commit"], recorded["commit_source"]
    if commits is None:
        missing["commit"] = why.get("commit", "not recorded: no provenance in the results files, no commit named")

    libraries: dict[str, Any] = {}
    for name in dict.fromkeys(n for p in provenances for n in p["libraries"]):
        libraries[name] = _one_or_all([p["libraries"].get(name) for p in provenances])
    python = _one_or_all([p["python"] for p in provenances])
    if not libraries:
        missing["library_versions"] = why.get("library_versions", "not recorded in the results files")
    settings = settings_of(folder, recs)
    if settings is None:
        missing["settings"] = why.get("settings", "not recorded in a machine-readable file")

    files = sorted(
        path.relative_to(folder).as_posix()
        for path in folder.iterdir()
        if path.is_file() and path.name not in {"manifest.json", "notes.md"}
    )
    folders = sorted(path.name + "/" for path in folder.iterdir() if path.is_dir())
    return {
        "study": folder.parent.name,
        "run": folder.name,
        "command": command,
        "command_source": source,
        "commit": commits,
        "commit_source": commit_source,
        "dirty": dirty,
        "python": python,
        "library_versions": libraries or None,
        "settings": settings,
        "results": files + folders,
        "records_read": len(recs),
        "missing": missing,
    }


def write_all(root: Path = RESULTS) -> list[Path]:
    written = []
    for folder in run_folders(root):
        path = folder / "manifest.json"
        path.write_text(json.dumps(manifest(folder, root), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


PATH = re.compile(r"(?:\.\./)*benchmarks/results/[\w./*-]*|(?<![\w/.-])results/[\w./*-]+")


def named_paths(root: Path = ROOT) -> list[tuple[str, str]]:
    """(file, path) for every results path named in README.md, docs/**/*.md and benchmarks/README.md."""
    sources = [root / "README.md", root / "benchmarks" / "README.md", *sorted((root / "docs").rglob("*.md"))]
    out = []
    for source in sources:
        text = source.read_text(encoding="utf-8")
        for match in PATH.finditer(text):
            found = match.group(0).rstrip(".")
            out.append((source.relative_to(root).as_posix(), found))
    return out


def check(root: Path = ROOT) -> list[str]:
    """Problems: results paths named in the docs that do not exist, run folders without notes.md or manifest.json."""
    problems = []
    for source, found in named_paths(root):
        if found.startswith("results/") and source != "benchmarks/README.md":
            continue  # another folder's `results/` (docs/results/ pages link by relative paths)
        tail = (
            found.split("benchmarks/results/", 1)[-1] if "benchmarks/results/" in found else found[len("results/") :]
        )
        path = root / "benchmarks" / "results" / tail
        if "*" in tail:
            ok = any((root / "benchmarks" / "results").glob(tail.rstrip("/")))
        elif "$" in tail or "{" in tail or "<" in tail:  # a shell variable or a placeholder
            continue
        else:
            ok = path.exists() or path.with_suffix("").exists()
        if not ok and not _written_by_a_command(found, source, root):
            problems.append(f"{source}: {found} does not exist")
    for folder in run_folders(root / "benchmarks" / "results"):
        for name in ("notes.md", "manifest.json"):
            if not (folder / name).is_file():
                problems.append(f"{folder.relative_to(root)}: no {name}")
    return problems


def _written_by_a_command(found: str, source: str, root: Path) -> bool:
    """A path given as a command's output or work folder that a rerun would write (e.g. `--results_dir X/new`)."""
    text = (root / source).read_text(encoding="utf-8")
    return bool(re.search(rf"--(?:results_dir|out_dir|output|out|work_dir)\s+{re.escape(found)}", text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the paths and the run folders' files")
    args = parser.parse_args(argv)
    if not args.check:
        for path in write_all():
            print(f"wrote {path.relative_to(ROOT)}")
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if args.check:
        print(f"{len(named_paths())} results paths named, {len(run_folders())} run folders; {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
