"""Ranks the resume tests' small log with a tiny model in however many processes torchrun starts.

Run by tests/distributed/test_multiprocess.py as
`torchrun --nproc_per_node 2 tests/helpers/multiprocess_ranking.py OUT.json MODE`: each process ranks its share of the
users, the results are gathered, and the first process writes OUT.json.
"""

import sys

from resume_helpers import RANKING_SETTINGS, evaluation_inputs

from dmpo_trl.distributed import end_process_group, process_rank
from dmpo_trl.evaluation import evaluate_ranking


def main(output: str, mode: str) -> None:
    model, tokenizer, examples, log = evaluation_inputs()
    result = evaluate_ranking(model, tokenizer, examples, log, mode=mode, output=output, **RANKING_SETTINGS)
    assert result["metrics"]["num_users"] == len(examples), result["metrics"]  # every process gets the whole result
    assert process_rank()[1] == 2


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    end_process_group()
