"""Runs `dmpo-trl train FLAGS...` and kills itself (SIGKILL) right after checkpoint `KILL_AT` is saved.

Run by tests/integration/test_resume.py as `python tests/helpers/killed_training.py KILL_AT FLAGS...`.
"""

import os
import signal
import sys

from transformers import TrainerCallback

from dmpo_trl import cli, trainer


class KillAfterSave(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)  # as `kill -9` would, once the checkpoint is on disk


def main(kill_at: int, flags: list[str]) -> None:
    init = trainer.DMPOTrainer.__init__

    def init_with_kill(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(KillAfterSave(kill_at))

    trainer.DMPOTrainer.__init__ = init_with_kill
    sys.exit(cli.main(["train", *flags]))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
