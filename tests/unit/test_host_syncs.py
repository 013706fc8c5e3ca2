"""A training step copies nothing from the device to the host beyond what TRL's own DPO step copies (its metrics).

Host copies are counted as the ops that need one: `item()`/`int()` (`_local_scalar_dense`), `nonzero`,
`masked_select`, indexing with a boolean mask, and `Tensor.tolist`.
"""

import pytest
import torch
from datasets import Dataset
from test_trainer import ROWS, make_args
from tiny_models import build_model
from torch.utils._python_dispatch import TorchDispatchMode
from trl import DPOConfig, DPOTrainer

from dmpo_trl import DMPOTrainer


class HostCopies(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        boolean_index = "index" in name and any(
            isinstance(arg, (list, tuple)) and any(isinstance(x, torch.Tensor) and x.dtype == torch.bool for x in arg)
            for arg in [*args, *kwargs.values()]
        )
        if boolean_index or any(op in name for op in ("_local_scalar_dense", "nonzero", "masked_select")):
            self.ops.append(name)
        return func(*args, **kwargs)


def host_copies_of_a_step(trainer, rows, monkeypatch):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    trainer.model.train()
    tolist_calls = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self, *a: tolist_calls.append(1) or tolist(self, *a))
    with HostCopies() as copies:
        trainer.compute_loss(trainer.model, batch).backward()
    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    return copies.ops + ["tolist"] * len(tolist_calls)


@pytest.mark.parametrize("prefix_sharing, pack_rows", [(True, False), (False, False), (True, True)])
def test_training_step_copies_no_more_than_trl(tokenizer, tmp_path, monkeypatch, prefix_sharing, pack_rows):
    pairs = [{**row, "rejected": row["rejected"][0]} for row in ROWS]
    trl = DPOTrainer(
        build_model(tokenizer),
        ref_model=build_model(tokenizer, seed=1),
        args=make_args(tmp_path / "trl", config_class=DPOConfig),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
    )
    trl_copies = host_copies_of_a_step(trl, pairs, monkeypatch)
    for rows in (pairs, ROWS):  # K = 1, and K = 1..3 in one batch
        ours = DMPOTrainer(
            build_model(tokenizer),
            ref_model=build_model(tokenizer, seed=1),
            args=make_args(tmp_path / "ours", prefix_sharing=prefix_sharing, pack_rows=pack_rows),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        batch = ours.data_collator([ours.train_dataset[i] for i in range(len(rows))])
        assert ("row_ids" in batch) is pack_rows  # several rows in one sequence
        copies = host_copies_of_a_step(ours, rows, monkeypatch)
        assert len(copies) <= len(trl_copies), (copies, trl_copies)
        assert set(copies) <= {"aten._local_scalar_dense.default"}, copies  # metrics' item(), as in TRL
