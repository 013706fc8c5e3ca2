"""Ranks a small log with a tiny model and kills itself (SIGKILL) after `KILL_AFTER` users are journaled.

Run by tests/integration/test_resume.py as `python tests/helpers/killed_evaluation.py OUTPUT MODE KILL_AFTER`.
"""

import os
import signal
import sys

from resume_helpers import RANKING_SETTINGS, evaluation_inputs

from dmpo_trl import evaluation, journal


def main(output: str, mode: str, kill_after: int) -> None:
    if kill_after:
        append = journal.Journal.append

        def append_then_die(self, index, result):
            append(self, index, result)
            if len(self.done) >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)  # as `kill -9` would, right after a user is on disk

        journal.Journal.append = append_then_die
    model, tokenizer, examples, log = evaluation_inputs()
    evaluation.evaluate_ranking(model, tokenizer, examples, log, mode=mode, output=output, **RANKING_SETTINGS)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
