import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


HELPERS = Path(__file__).resolve().parents[1] / "helpers"


def run_training(output: Path, processes: int, mode: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")])}
    env["DS_ACCELERATOR"] = "cpu"
    script = str(HELPERS / "multiprocess_train.py")
    if processes == 1:
        command = [sys.executable, script]
    else:
        torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
        command = [torchrun, "--nproc_per_node", str(processes), "--master_port", "29533", script]
    result = subprocess.run(
        command + [str(output), *([mode] if mode else [])], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {**json.loads(output.read_text()), "stderr": result.stderr}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return run_training(tmp_path_factory.mktemp("one") / "one.json", processes=1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [None, "2", "3", "fsdp"], ids=["ddp", "zero2", "zero3", "fsdp2"])
def test_two_processes_train_as_one(tmp_path, one_process, mode):
    """Two gloo processes (DDP, DeepSpeed ZeRO-2/3 on its CPU accelerator, or FSDP2 through accelerate; see
    multiprocess_train.py for how FSDP runs on CPU) give the single-process losses, with K lists and prefix
    sharing."""
    if mode in ("2", "3"):
        pytest.importorskip("deepspeed")
    two = run_training(tmp_path / "two.json", processes=2, mode=mode)
    one = one_process
    assert (two["world_size"], one["world_size"]) == (2, 1)
    assert two["deepspeed"] is (mode in ("2", "3"))
    assert two["fsdp"] is (mode == "fsdp")
    if mode == "fsdp":  # every decoder layer's weights are sharded across the two processes
        layers = [name for name in two["parameters"] if ".layers." in name]
        assert layers and set(layers) <= set(two["sharded"])
    else:
        assert two["sharded"] == []
    assert two["prefix_sharing"] is True and one["prefix_sharing"] is True
    steps_two, steps_one = ([log for log in run["log"] if "loss" in log] for run in (two, one))
    assert len(steps_two) == len(steps_one) == 4
    # 18 rows in global batches of 4: 5 steps per epoch, so 4 steps are 0.8 epochs in both runs
    assert steps_two[-1]["epoch"] == pytest.approx(4 / math.ceil(18 / 4), abs=1e-3)
    assert all(math.isfinite(log["loss"]) and log["num_negatives"] >= 1 for log in steps_two)
    for step_two, step_one in zip(steps_two, steps_one):
        assert step_two["loss"] == pytest.approx(step_one["loss"], abs=1e-5)
        assert step_two["rewards/margins"] == pytest.approx(step_one["rewards/margins"], abs=1e-5)
    assert two["eval"]["eval_loss"] == pytest.approx(one["eval"]["eval_loss"], abs=1e-5)
    assert "eval_rewards/accuracies" in two["eval"]


@pytest.mark.slow
def test_fsdp_on_a_cpu_launch_is_not_silent(tmp_path):
    """accelerate runs a gloo CPU launch with `fsdp=True` as DDP: the trainer says so instead of pretending."""
    run = run_training(tmp_path / "cpu.json", processes=2, mode="fsdp-as-launched")
    assert run["fsdp"] is False and run["sharded"] == []
    assert "fsdp is set, but accelerate runs this launch as MULTI_CPU" in run["stderr"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["likelihood", "generation"])
def test_ranking_in_two_processes_equals_one(tmp_path, mode):
    """The users are split across two gloo processes and gathered: the result equals a single process's."""
    from resume_helpers import RANKING_SETTINGS, evaluation_inputs

    from dmpo_trl.evaluation import evaluate_ranking

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")])}
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    output = tmp_path / "two.json"
    command = [torchrun, "--nproc_per_node", "2", "--master_port", "29534", str(HELPERS / "multiprocess_ranking.py")]
    result = subprocess.run(command + [str(output), mode], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    two = json.loads(output.read_text())
    model, tokenizer, examples, log = evaluation_inputs()
    one = evaluate_ranking(model, tokenizer, examples, log, mode=mode, **RANKING_SETTINGS)
    assert two["metrics"] == one["metrics"] and two["per_user"] == one["per_user"]
    assert two["users"] == [example.user for example in examples]
    assert not list(tmp_path.glob("*.progress*"))  # both processes' journals are gone


def test_a_command_leaves_the_process_group_it_joined(tmp_path, monkeypatch):
    """A `dmpo-trl` command run in a process group leaves it before returning (gloo can abort a process that exits
    still in one)."""
    import torch.distributed as dist

    from dmpo_trl.cli import main

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(["evaluate", "--baseline", "no-such-baseline"]) == 2  # a user's mistake ends the command early
    assert not dist.is_initialized()
