"""Long jobs survive `kill -9`: a rerun continues where the killed one stopped and ends with the unbroken result."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmpo_trl.evaluation import evaluate as evaluation  # the module whose scoring and generation a rerun calls
from dmpo_trl.evaluation import progress_path


HELPERS = Path(__file__).resolve().parents[1] / "helpers"


def run_script(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *map(str, args)], env=env, capture_output=True, text=True, timeout=300)


def without_timing(result: dict) -> dict:
    return {key: value for key, value in result.items() if key != "wall_time_s"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["likelihood", "generation", "auc"])
def test_killed_evaluation_resumes_to_the_unbroken_result(tmp_path, mode, monkeypatch):
    from resume_helpers import RANKING_SETTINGS, evaluation_inputs

    model, tokenizer, examples, log = evaluation_inputs()
    settings = dict(RANKING_SETTINGS, mode=mode)
    evaluation.evaluate_ranking(model, tokenizer, examples, log, output=tmp_path / "unbroken.json", **settings)

    output = tmp_path / "killed.json"
    killed = run_script(HELPERS / "killed_evaluation.py", output, mode, 4)
    assert killed.returncode == -9  # SIGKILL, right after the 4th user reached the journal
    assert not output.exists()
    lines = progress_path(output).read_text().splitlines()
    assert len(lines) == 1 + 4 and json.loads(lines[0])["settings"]["mode"] == mode

    # the rerun (here in this process) computes only the 5 users the killed run had not finished
    calls = []
    score, generate = evaluation.score_candidates, evaluation.generate_answers
    monkeypatch.setattr(evaluation, "score_candidates", lambda *a, **k: calls.append(1) or score(*a, **k))
    monkeypatch.setattr(evaluation, "generate_answers", lambda m, t, p, *a: calls.extend(p) or generate(m, t, p, *a))
    resumed = evaluation.evaluate_ranking(
        model,
        tokenizer,
        examples,
        log,
        num_candidates=5,
        seed=3,
        mode=mode,
        batch_size=2,
        progress=False,
        output=output,
    )
    per_user_calls = {"likelihood": 1, "generation": 1, "auc": 1}[mode]
    assert len(calls) == (len(examples) - 4) * per_user_calls
    expected = json.loads((tmp_path / "unbroken.json").read_text())
    assert without_timing(json.loads(output.read_text())) == without_timing(expected)
    assert without_timing(resumed) == without_timing(expected)
    assert not progress_path(output).exists()  # the journal goes once the result is written


@pytest.mark.slow
def test_a_journal_with_other_settings_is_refused(tmp_path):
    from resume_helpers import evaluation_inputs

    model, tokenizer, examples, log = evaluation_inputs()
    output = tmp_path / "r.json"
    killed = run_script(HELPERS / "killed_evaluation.py", output, "likelihood", 2)
    assert killed.returncode == -9
    with pytest.raises(ValueError, match="other settings \\(seed\\)"):
        evaluation.evaluate_ranking(
            model, tokenizer, examples, log, num_candidates=5, seed=4, batch_size=2, progress=False, output=output
        )


@pytest.mark.slow
def test_killed_training_resumes_to_the_unbroken_weights(tmp_path):
    """`dmpo-trl train` killed with SIGKILL after its second checkpoint, rerun with `--resume_from_checkpoint true`,
    ends with the weights of a run that was never killed (LoRA with dropout: the RNG state comes back too)."""
    from recipe_helpers import tiny_flags, write_tiny_log
    from safetensors.torch import load_file
    from tiny_models import save_tiny

    from dmpo_trl import cli

    model_dir = save_tiny(tmp_path / "model")
    log_files = write_tiny_log(tmp_path)
    common = ["--use_peft", "--no_evaluate_before", "--no_evaluate_after", "--max_steps", "4"]
    common += ["--save_strategy", "steps", "--save_steps", "1"]  # the last --save_strategy wins

    unbroken = tmp_path / "unbroken"
    assert cli.main(["train", *tiny_flags(log_files, model_dir, unbroken, *common)]) == 0

    killed = tmp_path / "killed"
    flags = tiny_flags(log_files, model_dir, killed, *common)
    run = run_script(HELPERS / "killed_training.py", 2, *flags)
    assert run.returncode == -9, run.stderr[-2000:]
    assert (killed / "checkpoint-2").is_dir() and not (killed / "checkpoint-3").exists()
    assert not (killed / "adapter_model.safetensors").exists()  # the final model was never saved

    assert cli.main(["train", *flags, "--resume_from_checkpoint", "true"]) == 0
    expected, resumed = (load_file(folder / "adapter_model.safetensors") for folder in (unbroken, killed))
    assert expected.keys() == resumed.keys() and expected
    largest = max((expected[name] - resumed[name]).abs().max().item() for name in expected)
    print(f"largest adapter weight difference, resumed vs unbroken: {largest}")
    assert largest <= 1e-6, largest
    before = load_file(killed / "checkpoint-2" / "adapter_model.safetensors")
    assert any((before[name] - resumed[name]).abs().max() > 0 for name in before)  # steps 3-4 did train
