"""The per-step metrics `DMPOTrainer` logs, in TRL's names and extended for K rejected responses.

TRL's token-level metrics (`entropy`, `num_tokens`, `logits/chosen`, `logits/rejected`, `mean_token_accuracy`) are
computed from the fused LM head's outputs in either batch layout (one row per sequence, or packed rows); the reward
metrics (`rewards/*`, `logps/*`, `num_negatives`) from per-row values. Only per-row or per-batch sums go through
`gather`, with one host copy per metric, so logging adds no host sync that a boolean index would.
"""

from __future__ import annotations

import torch

from ._trl_compat import count_train_tokens, trainer_metrics


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of `values` where `mask` is True, without boolean indexing (whose output size needs a host sync).

    Example:
    ```python
    >>> masked_sum(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([True, False, True]))
    tensor(5.)
    ```
    """
    return values.masked_fill(~mask, 0).sum()


def _gather_mean(trainer, values: torch.Tensor) -> float:
    return trainer.accelerator.gather(values.detach().float()).mean().item()


def _gather_ratio(trainer, numerator: torch.Tensor, denominator: torch.Tensor) -> float:
    numerator = trainer.accelerator.gather_for_metrics(numerator.detach().float()).sum()
    denominator = trainer.accelerator.gather_for_metrics(denominator.detach().float()).sum()
    return (numerator / denominator.clamp(min=1)).item()  # 0 when nothing was counted, with one host copy


def log_aux_loss(trainer, mode: str, aux_loss: torch.Tensor) -> None:
    """The MoE router loss, as TRL logs it (`aux_loss`)."""
    trainer_metrics(trainer, mode)["aux_loss"].append(trainer.accelerator.gather_for_metrics(aux_loss).mean().item())


def log_token_metrics(trainer, mode: str, inputs, outputs, chosen_tokens, rejected_tokens) -> None:
    """TRL's token-level metrics: entropy, num_tokens, logits/*, mean_token_accuracy.

    `chosen_tokens` and `rejected_tokens` mark the positions of the per-token outputs that score a chosen or a
    rejected response's token.
    """
    seq_len = chosen_tokens.size(1)
    metrics = trainer_metrics(trainer, mode)
    scored = chosen_tokens | rejected_tokens
    entropy = outputs.entropy[:, -seq_len:].detach()
    metrics["entropy"].append(_gather_ratio(trainer, masked_sum(entropy, scored), scored.sum()))
    num_tokens = 0
    if mode == "train":
        # TRL's count, tokens of the one-sequence-per-response layout, also where the batch is packed
        tokens = inputs["row_tokens"] if "row_tokens" in inputs else inputs["attention_mask"]
        num_tokens = trainer.accelerator.gather_for_metrics(tokens.sum()).sum().item()
    metrics["num_tokens"] = [count_train_tokens(trainer, num_tokens)]  # the running total; eval adds no tokens
    mean_logits = outputs.mean_logits[:, -seq_len:].detach()
    metrics["logits/chosen"].append(
        _gather_ratio(trainer, masked_sum(mean_logits, chosen_tokens), chosen_tokens.sum())
    )
    metrics["logits/rejected"].append(
        _gather_ratio(trainer, masked_sum(mean_logits, rejected_tokens), rejected_tokens.sum())
    )
    is_top1 = outputs.is_top1[:, -seq_len:]
    metrics["mean_token_accuracy"].append(
        _gather_ratio(trainer, masked_sum(is_top1.float(), chosen_tokens), chosen_tokens.sum())
    )


def log_reward_metrics(
    trainer, mode: str, beta: float, chosen_logps, rejected_logps, chosen_logratios, rejected_logratios, mask
) -> None:
    """Per-row reward metrics in TRL's names, extended for K (only per-row tensors go through `gather`).

    `rewards/rejected` and `logps/rejected` average a row's K responses, `rewards/rejected_max` takes its highest
    reward, and `rewards/accuracies` counts the rows whose chosen reward beats every rejected one.
    """
    count = mask.sum(dim=1)
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    mean_rejected = (rejected_rewards * mask).sum(dim=1) / count
    max_rejected = rejected_rewards.masked_fill(~mask, float("-inf")).max(dim=1).values
    metrics = trainer_metrics(trainer, mode)
    metrics["rewards/chosen"].append(_gather_mean(trainer, chosen_rewards))
    metrics["rewards/rejected"].append(_gather_mean(trainer, mean_rejected))
    metrics["rewards/rejected_max"].append(_gather_mean(trainer, max_rejected))
    metrics["rewards/margins"].append(_gather_mean(trainer, chosen_rewards - mean_rejected))
    metrics["rewards/accuracies"].append(_gather_mean(trainer, chosen_rewards > max_rejected))
    metrics["logps/chosen"].append(_gather_mean(trainer, chosen_logps))
    metrics["logps/rejected"].append(_gather_mean(trainer, (rejected_logps.detach() * mask).sum(dim=1) / count))
    metrics["num_negatives"].append(_gather_mean(trainer, count))
