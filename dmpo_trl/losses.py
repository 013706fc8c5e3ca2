"""Multi-negative preference losses as pure tensor functions.

Each takes the chosen log-ratios `(B,)`, the rejected log-ratios `(B, K)` and a boolean mask `(B, K)` of the real
negatives (rows may have fewer than K), and returns the per-row loss `(B,)`. A log-ratio is
r(y) = log pi(y|x) - log pi_ref(y|x), summed over the completion tokens. With K = 1 all three equal DPO's
-log sigmoid(beta * (r_w - r_l)).

The losses are computed in float32 at least (half-precision log-ratios are upcast: a sum over 64 negatives of
log-ratios near 1e4 overflows float16), padded entries never reach the result (not even a NaN or inf there), and loss
and gradients stay finite for reward margins of any size.

Example:
```python
>>> import torch
>>> chosen = torch.tensor([1.0])
>>> rejected, mask = torch.tensor([[0.0, 2.0]]), torch.tensor([[True, True]])
>>> dmpo_loss(chosen, rejected, mask, beta=1.0)  # -log sigmoid(1 - 1)
tensor([0.6931])
```
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the last dimension of the entries where `mask` is True (each row needs at least one)."""
    return values.masked_fill(~mask, 0.0).sum(-1) / mask.sum(-1).to(values.dtype)


def _upcast(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in float32 when they are in a narrower float type (float16, bfloat16), else unchanged."""
    return tuple(t.float() if t.is_floating_point() and torch.finfo(t.dtype).bits < 32 else t for t in tensors)


def dmpo_loss(
    chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """DMPO (Bai et al. 2024): -log sigmoid(beta * (r_w - mean_k r_k)), the mean over each row's real negatives."""
    chosen_logratios, rejected_logratios = _upcast(chosen_logratios, rejected_logratios)
    return -F.logsigmoid(beta * (chosen_logratios - masked_mean(rejected_logratios, mask)))


def sdpo_loss(
    chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """Softmax-DPO (Chen et al. 2024): -log sigmoid(-logsumexp_k(beta * (r_k - r_w))), stable for any margin."""
    chosen_logratios, rejected_logratios = _upcast(chosen_logratios, rejected_logratios)
    logits = beta * (rejected_logratios - chosen_logratios.unsqueeze(-1))
    logits = logits.masked_fill(~mask, float("-inf"))  # padding drops out of the logsumexp, NaN or not
    # -log sigmoid(-x) = softplus(x), which stays finite where the sigmoid form under- or overflows.
    return F.softplus(torch.logsumexp(logits, dim=-1))


def pairwise_sigmoid_loss(
    chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """TRL's DPO loss averaged over the K pairs (chosen, rejected_k): what exploding a row into K pairs trains."""
    chosen_logratios, rejected_logratios = _upcast(chosen_logratios, rejected_logratios)
    pair_losses = -F.logsigmoid(beta * (chosen_logratios.unsqueeze(-1) - rejected_logratios.masked_fill(~mask, 0.0)))
    return masked_mean(pair_losses, mask)


def plackett_luce_loss(
    chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """Listwise Plackett-Luce loss over the ranking chosen > rejected_1 > ... > rejected_K (the rejected responses in
    the order given, best first): -sum_i log(exp(s_i) / sum_{j >= i} exp(s_j)) with s = beta * r, over each row's
    real responses. Its first term is S-DPO's loss; the others also rank the negatives among themselves, so give them
    in an order that means something (e.g. by a ranker's scores). K = 1 is DPO.

    Example:
    ```python
    >>> chosen, rejected, mask = torch.tensor([0.0]), torch.tensor([[0.0, 0.0]]), torch.tensor([[True, True]])
    >>> plackett_luce_loss(chosen, rejected, mask, beta=1.0)  # log 3 + log 2
    tensor([1.7918])
    ```
    """
    chosen_logratios, rejected_logratios = _upcast(chosen_logratios, rejected_logratios)
    real = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=-1)  # (B, K+1)
    scores = beta * torch.cat([chosen_logratios.unsqueeze(-1), rejected_logratios], dim=-1).masked_fill(~real, 0.0)
    # term i = -log sum_{j >= i} exp(s_j - s_i), from the differences themselves: float32 keeps them exact where
    # the scores are 1e4 apart and some tie (log-sum-exps of the raw scores would lose the ties to rounding)
    differences = scores.unsqueeze(-2) - scores.unsqueeze(-1)  # [..., i, j] = s_j - s_i
    position = torch.arange(real.size(-1), device=real.device)
    counted = real.unsqueeze(-2) & real.unsqueeze(-1) & (position.unsqueeze(0) >= position.unsqueeze(1))
    # what is not counted gets the smallest finite value: it adds nothing to a log-sum-exp and keeps gradients finite
    differences = differences.masked_fill(~counted, torch.finfo(differences.dtype).min)
    return torch.logsumexp(differences, dim=-1).masked_fill(~real, 0.0).sum(-1)


PREFERENCE_LOSSES = {
    "dmpo": dmpo_loss,
    "sdpo": sdpo_loss,
    "sigmoid": pairwise_sigmoid_loss,
    "plackett_luce": plackett_luce_loss,
}
