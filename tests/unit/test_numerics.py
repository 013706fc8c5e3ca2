"""Finite losses and gradients at the edges: reward margins of +-1e4, half precision, K up to 64, one-token responses,
and prompts that fill `max_length`, for every loss type (dmpo, sdpo, sigmoid, sft)."""

import logging
import math

import pytest
import torch
from datasets import Dataset
from tiny_models import build_model

from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl.losses import PREFERENCE_LOSSES


MARGIN = 1e4  # a reward margin, beta * (r_w - r_l)
HALF = [torch.bfloat16, torch.float16]


def extreme_inputs(beta, k, dtype):
    """Three rows with log-ratios of +-1e4/beta: chosen far ahead, far behind, and tied; the third half padding."""
    m = MARGIN / beta
    chosen = torch.tensor([m, -m, m], dtype=dtype)
    rejected = torch.tensor([[-m], [m], [m]], dtype=dtype).repeat(1, k)
    mask = torch.ones(3, k, dtype=torch.bool)
    mask[2, max(1, k // 2) :] = False
    rejected[2][~mask[2]] = float("nan")  # padding never reaches the loss, whatever it holds
    return chosen.requires_grad_(), rejected.requires_grad_(), mask


# float16 holds at most 65504: its log-ratios are 1e4 (beta=1); the wider types take 1e5 (beta=0.1) as well.
CASES = [(beta, dtype) for dtype in (torch.float32, torch.bfloat16) for beta in (0.1, 1.0)] + [(1.0, torch.float16)]


@pytest.mark.parametrize("k", [1, 2, 64])
@pytest.mark.parametrize("beta, dtype", CASES)
@pytest.mark.parametrize("loss_type", sorted(PREFERENCE_LOSSES))
def test_losses_are_finite_at_extreme_margins(loss_type, beta, dtype, k):
    chosen, rejected, mask = extreme_inputs(beta, k, dtype)
    loss = PREFERENCE_LOSSES[loss_type](chosen, rejected, mask, beta)
    loss.sum().backward()
    assert loss.dtype == torch.float32  # computed in float32 at least
    assert torch.isfinite(loss).all(), loss
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    assert (rejected.grad[~mask] == 0).all()
    # Far ahead: no loss, no gradient. Far behind: the loss is the margin 2e4 (+ log K for S-DPO, whose logsumexp
    # counts K equal terms) and d loss / d r_w = -beta. Tied: log 2 (S-DPO: softplus(log n) = log(1 + n), n real).
    # Plackett-Luce adds log(n!) wherever n responses tie.
    behind = 2 * MARGIN + (math.log(k) if loss_type in ("sdpo", "plackett_luce") else 0.0)
    tied = math.log(1 + mask[2].sum().item() if loss_type == "sdpo" else 2)
    ahead = 0.0
    if loss_type == "plackett_luce":  # its terms also order the negatives, here tied: log(n!) for n tied responses
        ahead, tied = math.lgamma(k + 1), math.lgamma(mask[2].sum().item() + 2)
        behind += math.lgamma(k + 1)
    rtol = 1e-5 if dtype == torch.float32 else 1e-2  # bfloat16 and float16 round the log-ratios themselves
    torch.testing.assert_close(loss.detach(), torch.tensor([ahead, behind, tied]), rtol=rtol, atol=1e-4)
    torch.testing.assert_close(chosen.grad[:2].float(), torch.tensor([0.0, -beta]), rtol=1e-2, atol=1e-6)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("loss_type", sorted(PREFERENCE_LOSSES))
def test_losses_under_autocast_equal_float32(loss_type, dtype):
    chosen, rejected, mask = extreme_inputs(0.1, 64, torch.float32)
    expected = PREFERENCE_LOSSES[loss_type](chosen, rejected, mask, 0.1)
    with torch.autocast("cpu", dtype=dtype):
        loss = PREFERENCE_LOSSES[loss_type](chosen, rejected, mask, 0.1)
    torch.testing.assert_close(loss, expected)


# --- through a real DMPOTrainer on a tiny model ---------------------------------------------------------------------

BETA = 0.1
MAX_LENGTH = 24


def edge_rows(tokenizer):
    """Pre-tokenized rows: one-token responses, K = 64 and K = 1, and a prompt that alone fills `max_length`."""
    vocab = range(10, len(tokenizer))
    prompt = tokenizer("The user watched Heat. Next:")["input_ids"]
    return [
        {"prompt_ids": prompt, "chosen_ids": [vocab[0]], "rejected_ids": [[token] for token in vocab[1:65]]},
        {"prompt_ids": prompt[:3], "chosen_ids": [vocab[70]], "rejected_ids": [[vocab[71]]]},
        {"prompt_ids": [vocab[5]] * MAX_LENGTH, "chosen_ids": [vocab[1]], "rejected_ids": [[vocab[2]]]},
        {"prompt_ids": prompt[:5], "chosen_ids": [vocab[80], vocab[81]], "rejected_ids": [[vocab[82]], [vocab[83]]]},
    ]


@pytest.fixture(scope="module")
def trainers(tokenizer, tmp_path_factory):
    """One trainer per loss type, sharing a model; the reference log-probs are precomputed so they can be shifted."""
    made = {}
    for loss_type in ["dmpo", "sdpo", "sigmoid", "sft"]:
        args = DMPOConfig(
            output_dir=str(tmp_path_factory.mktemp(loss_type)),
            per_device_train_batch_size=4,
            report_to=[],
            beta=BETA,
            max_length=MAX_LENGTH,
            loss_type=[loss_type],
            precompute_ref_log_probs=True,
            max_steps=1,
        )
        made[loss_type] = DMPOTrainer(
            build_model(tokenizer, seed=0),
            ref_model=build_model(tokenizer, seed=1),
            args=args,
            train_dataset=Dataset.from_list(edge_rows(tokenizer)),
            processing_class=tokenizer,
        )
    return made


def test_prompt_filling_max_length_is_dropped_with_a_count(tokenizer, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.trainer"):
        trainer = DMPOTrainer(
            build_model(tokenizer),
            ref_model=build_model(tokenizer, seed=1),
            args=DMPOConfig(output_dir=str(tmp_path), report_to=[], max_length=MAX_LENGTH),
            train_dataset=Dataset.from_list(edge_rows(tokenizer)),
            processing_class=tokenizer,
        )
    assert "Dropped 1 of 4 rows from the train dataset" in caplog.text
    assert trainer.train_dataset["num_rejected"] == [64, 1, 2]


def shifted_batch(trainer, shift):
    """The whole (kept) dataset as one batch, with the reference log-probs moved so that each reward margin
    beta * (r_w - r_l) grows by `shift`: the chosen log-ratio by shift / (2 beta), each rejected one by minus that."""
    step = shift / (2 * BETA)

    def move(row):
        return {
            "ref_chosen_logps": row["ref_chosen_logps"] - step,
            "ref_rejected_logps": [logp + step for logp in row["ref_rejected_logps"]],
        }

    dataset = trainer.train_dataset.map(move)
    return trainer.data_collator([dataset[i] for i in range(len(dataset))])


def loss_and_grads(trainer, batch, dtype=None):
    trainer.model.zero_grad()
    trainer.model.train()
    if dtype is None:
        loss = trainer.compute_loss(trainer.model, batch)
    else:
        with torch.autocast("cpu", dtype=dtype):
            loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    return loss.detach().float(), grads


@pytest.mark.parametrize("shift", [2 * MARGIN, -2 * MARGIN])
@pytest.mark.parametrize("dtype", [None, *HALF], ids=["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("loss_type", ["dmpo", "sdpo", "sigmoid", "sft"])
def test_trainer_step_is_finite_at_extreme_margins(trainers, loss_type, dtype, shift):
    """A real compute_loss + backward: finite, and at the margins the loss the formula gives (sft: its own value)."""
    trainer = trainers[loss_type]
    assert trainer.train_dataset["num_rejected"] == [64, 1, 2]
    batch = shifted_batch(trainer, shift)
    loss, grads = loss_and_grads(trainer, batch, dtype)
    assert torch.isfinite(loss), loss
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if loss_type == "sft":  # the chosen responses' negative log-likelihood: no reference, no margin
        assert 0 < loss < 20
        return
    if shift > 0:  # every chosen response far ahead
        assert loss < 1e-3
        assert all(g.abs().max() < 1e-3 for g in grads)
    else:  # every chosen response far behind: about the margin, 2e4 (S-DPO adds log K per row)
        assert loss == pytest.approx(2 * MARGIN, rel=1e-3)
        assert max(g.abs().max() for g in grads) > 0


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("loss_type", ["dmpo", "sdpo", "sigmoid", "sft"])
def test_trainer_step_under_autocast_is_close_to_float32(trainers, loss_type, dtype):
    trainer = trainers[loss_type]
    batch = shifted_batch(trainer, 0.0)
    expected, _ = loss_and_grads(trainer, batch)
    loss, grads = loss_and_grads(trainer, batch, dtype)
    assert all(torch.isfinite(g).all() for g in grads)
    assert loss == pytest.approx(expected.item(), rel=0.05, abs=0.05)
