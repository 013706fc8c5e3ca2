import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_trains_in_two_processes(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    output = tmp_path / "result.json"
    tests_dir = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests_dir), os.environ.get("PYTHONPATH", "")])}
    command = [torchrun, "--nproc_per_node", "2", "--master_port", "29533", str(tests_dir / "multiprocess_train.py")]
    result = subprocess.run(command + [str(output)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(output.read_text())
    assert record["world_size"] == 2
    steps = [log for log in record["log"] if "loss" in log]
    assert len(steps) == 4
    # 18 rows split over 2 processes x 2 rows per step: 5 steps per epoch, so 4 steps are 0.8 epochs (one process
    # alone would need 9 steps per epoch)
    assert steps[-1]["epoch"] == pytest.approx(4 / math.ceil(18 / (2 * 2)), abs=1e-3)
    assert all(math.isfinite(log["loss"]) and log["num_negatives"] >= 1 for log in steps)
    assert "eval_rewards/accuracies" in record["eval"] and math.isfinite(record["eval"]["eval_loss"])
