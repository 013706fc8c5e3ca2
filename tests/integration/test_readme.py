"""The README's `Ranker` and `dmpo-trl rank` examples run as written, in a fresh folder, on the folder the README's
own short command makes (the embedded SmolLM2-135M and MovieLens-100K)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def block(language: str, first_line: str) -> str:
    """The README's fenced `language` block whose first line starts with `first_line`."""
    for body in re.findall(rf"```{language}\n(.*?)```", README, flags=re.S):
        if body.startswith(first_line):
            return body
    raise AssertionError(f"README has no {language} block starting with {first_line!r}")


@pytest.mark.slow
def test_ranker_and_rank_examples_run_as_written(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def run(*command):
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout, done.stderr

    _, err = run("bash", "-c", block("bash", "dmpo-trl demo"))  # the command the README says makes the folder
    assert [line for line in err.splitlines() if "Warning" in line or "[WARNING]" in line] == []
    assert (tmp_path / "outputs" / "demo" / "ranker.json").is_file()
    out, _ = run(
        sys.executable,
        "-c",
        block("python", "from dmpo_trl import Ranker")
        + "\nprint(ranker.rank("
        + ('["Heat (1995)"], ["Babe (1995)", "Fargo (1996)"]))'),
    )
    assert "Fargo (1996)" in out and "Babe (1995)" in out
    run("bash", "-c", block("bash", "echo '{"))
    ranked = [json.loads(line) for line in (tmp_path / "ranked.jsonl").read_text().splitlines()]
    assert [sorted(r["item"] for r in row["ranking"]) for row in ranked] == [["1", "100", "258"]]
