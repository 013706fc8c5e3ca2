"""Generate the results pages at build time from the results files under `benchmarks/results/`.

Run by the mkdocs-gen-files plugin (`mkdocs.yml`); nothing is written to `docs/` or `benchmarks/`.

1. Every results file outside the per-run `runs/` folders (the `.md` reports, their `.png` plots, the `.json`,
   `.jsonl` and `.log` files) is copied into the site under the same path, `benchmarks/results/...`, so pages link to
   the files themselves and a link to a missing file fails the strict build.
2. A page may hold a marker line `<!-- results: FOLDER/FILE.md -->`: it is replaced by that report, generated from
   the file as it is now (headings demoted under the page's own, its links rewritten to point at the copies), with
   a line naming the file and its JSON, and the plot beside it when there is one (`<!-- results: FILE.md plot -->`);
   table columns that are empty in every row are left out.
3. `results/files.md` lists every run folder (`benchmarks/results/<study>/<run>/`, with its `notes.md` and
   `manifest.json`), then every report with its title, its JSON and its plot.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import mkdocs_gen_files


ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
SITE_RESULTS = "benchmarks/results"  # where the copies live in the site, the same path as in the repository
COPIED = {".md", ".png", ".json", ".jsonl", ".log"}
RUN_FILES = {"notes.md", "manifest.json"}  # what every run folder holds besides its results
MARKER = re.compile(r"^<!-- results: (?P<file>\S+\.md)(?P<plot> plot)? -->$", re.M)
LINK = re.compile(r"(!?\[[^\]]*\])\((?!https?://|#|mailto:)([^)\s]+)\)")


def results_files() -> list[Path]:
    """The results files outside `runs/` folders (the per-seed raw runs), sorted."""
    return sorted(
        path
        for path in RESULTS.rglob("*")
        if path.is_file() and path.suffix in COPIED and "runs" not in path.relative_to(RESULTS).parts
    )


def run_folders() -> list[Path]:
    """The run folders, `benchmarks/results/<study>/<run>/`, sorted."""
    return sorted(path for path in RESULTS.glob("*/*") if path.is_dir())


def relative_link(target: str, page: str) -> str:
    """`target` (a path inside the site) as a link from the page at `page`."""
    return posixpath.relpath(target, posixpath.dirname(page) or ".")


def title_of(report: Path) -> str:
    for line in report.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return report.stem


def drop_empty_columns(lines: list[str]) -> list[str]:
    """Markdown tables without the columns that are empty in every row (e.g. generation metrics a run skipped)."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("|"):
            out.append(lines[i])
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].startswith("|"):
            j += 1
        rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[i:j]]
        if len(rows) > 2 and len({len(row) for row in rows}) == 1:
            keep = [c for c in range(len(rows[0])) if any(row[c] for row in rows[2:])]
            rows = [[row[c] for c in keep] for row in rows]
            out.extend("| " + " | ".join(row) + " |" for row in rows)
        else:
            out.extend(lines[i:j])
        i = j
    return out


def include(name: str, page: str, plot: bool) -> str:
    """The report `benchmarks/results/<name>` rendered for the page at `page`."""
    report = RESULTS / name
    if not report.is_file():
        raise FileNotFoundError(f"{page}: no results file benchmarks/results/{name}")
    folder = posixpath.dirname(f"{SITE_RESULTS}/{name}")

    def rewrite(match: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(folder, match.group(2)))
        return f"{match.group(1)}({relative_link(target, page)})"

    body = []
    for line in report.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):  # a heading: two levels under the page's
            line = "#" * min(len(line) - len(line.lstrip("#")) + 2, 6) + line.lstrip("#")
        body.append(LINK.sub(rewrite, line))
    sources = [f"[`benchmarks/results/{name}`]({relative_link(f'{SITE_RESULTS}/{name}', page)})"]
    for sibling in sorted(report.parent.glob(f"{report.stem}.json*")):
        rel = sibling.relative_to(RESULTS).as_posix()
        sources.append(f"[`{sibling.name}`]({relative_link(f'{SITE_RESULTS}/{rel}', page)})")
    lines = [
        '!!! note "Generated from the results file"',
        f"    This section is {sources[0]} as it stands in the repository"
        + (f", with its data in {', '.join(sources[1:])}." if sources[1:] else "."),
        "",
    ]
    image = report.with_suffix(".png")
    if plot and image.is_file():
        rel = image.relative_to(RESULTS).as_posix()
        lines += [f"![{title_of(report)}]({relative_link(f'{SITE_RESULTS}/{rel}', page)})", ""]
    return "\n".join(lines + drop_empty_columns(body)) + "\n"


def copy_results() -> None:
    for path in results_files():
        rel = f"{SITE_RESULTS}/{path.relative_to(RESULTS).as_posix()}"
        if path.suffix == ".png":
            with mkdocs_gen_files.open(rel, "wb") as out:
                out.write(path.read_bytes())
        else:
            with mkdocs_gen_files.open(rel, "w", encoding="utf-8") as out:
                out.write(path.read_text(encoding="utf-8"))


def expand_markers() -> None:
    for source in sorted(DOCS.rglob("*.md")):
        page = source.relative_to(DOCS).as_posix()
        text = source.read_text(encoding="utf-8")
        if not MARKER.search(text):
            continue
        text = MARKER.sub(lambda m, page=page: include(m.group("file"), page, bool(m.group("plot"))), text)
        with mkdocs_gen_files.open(page, "w", encoding="utf-8") as out:
            out.write(text)


def files_page() -> None:
    page = "results/files.md"
    lines = [
        "---",
        "hide:",
        "  - toc",
        "---",
        "",
        "# Every results file",
        "",
        "Generated when the site is built from `benchmarks/results/`: each report with its title, its JSON (settings,",
        "per-user ranks, library versions and the git commit) and its plot. The per-seed raw runs (`runs/` folders)",
        "stay in the repository.",
        "",
        "| file | data | plot | title |",
        "|---|---|---|---|",
    ]
    for report in (path for path in results_files() if path.suffix == ".md" and path.name not in RUN_FILES):
        rel = report.relative_to(RESULTS).as_posix()
        data = [
            f"[{sibling.name}]({relative_link(f'{SITE_RESULTS}/{sibling.relative_to(RESULTS).as_posix()}', page)})"
            for sibling in sorted(report.parent.glob(f"{report.stem}.json*"))
        ]
        image = report.with_suffix(".png")
        plot = (
            f"[{image.name}]({relative_link(f'{SITE_RESULTS}/{image.relative_to(RESULTS).as_posix()}', page)})"
            if image.is_file()
            else ""
        )
        link = f"[{rel}]({relative_link(f'{SITE_RESULTS}/{rel}', page)})"
        lines.append(f"| {link} | {', '.join(data)} | {plot} | {title_of(report).replace('|', '/')} |")
    others = [path for path in results_files() if path.suffix in {".json", ".jsonl"} and path.name not in RUN_FILES]
    others = [path for path in others if not any(path.parent.glob(f"{path.name.split('.')[0]}.md"))]
    if others:
        lines += ["", "Results files without a report:", ""]
        for path in others:
            rel = path.relative_to(RESULTS).as_posix()
            lines.append(f"- [{rel}]({relative_link(f'{SITE_RESULTS}/{rel}', page)})")
    lines += ["", "## Run folders", "", "| study | run | notes | manifest |", "|---|---|---|---|"]
    for folder in run_folders():
        rel = folder.relative_to(RESULTS).as_posix()
        cells = [
            f"[{name}]({relative_link(f'{SITE_RESULTS}/{rel}/{name}', page)})" if (folder / name).is_file() else ""
            for name in ("notes.md", "manifest.json")
        ]
        lines.append(f"| {folder.parent.name} | {folder.name} | {' | '.join(cells)} |")
    with mkdocs_gen_files.open(page, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    mkdocs_gen_files.set_edit_path(page, "gen_results.py")


copy_results()
expand_markers()
files_page()
