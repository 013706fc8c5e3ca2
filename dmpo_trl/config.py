"""`DMPOConfig`: TRL's `DPOConfig` plus the few fields that K rejected responses need."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers.utils import is_torch_bf16_gpu_available
from trl import DPOConfig


#: Loss types that understand K >= 1 rejected responses per row. Any other TRL loss type works on pairwise data.
MULTI_NEGATIVE_LOSSES = ("dmpo", "sdpo", "sigmoid", "plackett_luce", "sft")

#: The loss types TRL 1.16's `DPOTrainer._compute_loss` implements (a test checks this list against TRL's source).
TRL_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)

#: Every loss type `DMPOTrainer` accepts.
LOSS_TYPES = MULTI_NEGATIVE_LOSSES + tuple(name for name in TRL_LOSS_TYPES if name not in MULTI_NEGATIVE_LOSSES)


def check_loss_types(loss_types: list[str]) -> None:
    """Raise a `ValueError` listing the valid names when a loss type is unknown.

    Example:
    ```python
    >>> check_loss_types(["dmpo", "sft"])
    >>> try:
    ...     check_loss_types(["dmpo_typo"])
    ... except ValueError as error:
    ...     print(error)
    Unknown loss_type ['dmpo_typo']: choose from ['dmpo', 'sdpo', 'sigmoid', 'plackett_luce', 'sft', 'hinge', ...].
    ```
    """
    unknown = [name for name in loss_types if name not in LOSS_TYPES]
    if unknown:
        raise ValueError(f"Unknown loss_type {unknown}: choose from {list(LOSS_TYPES)}.")


_TRI_STATES = {"auto": "auto", "true": True, "false": False}


def _tri_state_field(help: str) -> Any:
    """A field that is "auto", True or False, given as `auto`, `true` or `false` (defaults to "auto").

    Typed `str` rather than `bool | str`: HfArgumentParser would turn the union into a bool flag. `_tri_state`
    normalises the value in `DMPOConfig.__post_init__`.
    """
    return field(default="auto", metadata={"help": help, "choices": ["auto", "true", "false", "True", "False"]})


def _tri_state(name: str, value: str | bool) -> str | bool:
    """`value` of the field `name` as "auto", True or False; an unknown string raises a `ValueError`."""
    if isinstance(value, bool):
        return value
    if str(value).lower() not in _TRI_STATES:
        raise ValueError(f"`{name}` must be auto, true or false, got {value!r}.")
    return _TRI_STATES[str(value).lower()]


@dataclass
class DMPOConfig(DPOConfig):
    r"""
    Configuration for [`DMPOTrainer`]: every [`~trl.DPOConfig`] field, plus the ones below.

    Parameters:
        loss_type (`list[str]`, *optional*, defaults to `["dmpo"]`):
            Loss(es) to use, combined with `loss_weights` as in TRL. With r = log pi(y|x) - log pi_ref(y|x) summed over
            the completion tokens:

            - `"dmpo"`: -log sigmoid(beta * (r(chosen) - mean_k r(rejected_k))), the mean over a row's real negatives.
            - `"sdpo"`: Softmax-DPO, -log sigmoid(-logsumexp_k(beta * (r(rejected_k) - r(chosen)))).
            - `"sigmoid"`: TRL's DPO loss; with K > 1, the mean over k of the K pairwise losses.
            - `"plackett_luce"`: listwise, -sum_i log softmax_i over the ranking chosen > rejected_1 > ... > rejected_K
              (the rejected responses in the order given): S-DPO's term plus one per negative for the ones after it.
            - `"sft"`: negative log-likelihood of the chosen response (the DMPO paper adds it with weight 1.0).

            With K = 1 the first three are exactly TRL's DPO loss. Other TRL loss types (e.g. `"hinge"`, `"ipo"`) run
            TRL's own implementation and need pairwise data (K = 1). So do TRL's `ld_alpha`, `use_weighting` (WPO)
            and an `f_divergence_type` other than `"reverse_kl"`: with them TRL's loss runs, `"dmpo"`, `"sdpo"` and
            `"plackett_luce"` as the `"sigmoid"` they equal at K = 1, so a `DPOConfig` that trains with `DPOTrainer`
            trains unchanged as a `DMPOConfig`; a row with K > 1 is refused, naming it. An unknown name is refused
            when the config is built, with the list of valid ones.
        length_normalize (`bool`, *optional*, defaults to `False`):
            Use the mean per-token log-ratio r(y) / |y| instead of the sum in the `"dmpo"`, `"sdpo"`, `"sigmoid"` and
            `"plackett_luce"` rewards (SimPO-style length normalisation), so a long response is not penalised for its
            length alone. Per-token rewards are about |y| times smaller: raise `beta` to match (SimPO uses 2-2.5).
        max_negatives (`int` or `None`, *optional*, defaults to `None`):
            Keep at most this many rejected responses per row, subsampled without replacement (seeded by `seed` and
            the row index). `None` keeps them all.
        prefix_sharing (`str` or `bool`, *optional*, defaults to `"auto"`):
            Run each prompt once for all of its K+1 responses (one packed sequence with a block attention mask) in the
            policy and reference forwards. Log-probs and gradients equal the unshared path's; the tokens fall from
            (K+1)(P+C) to about P+(K+1)(C+1), but attention runs over the whole packed row. `"auto"` decides per
            batch from token counts (short responses after a long prompt share, responses much longer than the
            prompt do not; the rule and its measurements are in `dmpo_trl.collator`), `True` always shares, `False`
            never does. The command line takes `auto`, `true` or `false`. Models whose attention cannot take a custom
            mask fall back to the unshared path with a warning. TRL's pairwise-only loss types always run unshared.
        pack_rows (`str` or `bool`, *optional*, defaults to `"auto"`):
            Where a batch is shared, put several rows' packed sequences into one sequence of at most 4096 tokens
            (`dmpo_trl.collator.MAX_PACKED_LENGTH`), each token tagged with its row so that attention never crosses
            rows and positions restart per row: log-probs, losses, gradients and the MoE router loss equal the
            one-row-per-sequence layout's, without the padding between rows of uneven length. `"auto"` groups rows
            where the collator's cost rule (tokens plus attention) finds it cheaper (`dmpo_trl.collator.grouping`),
            `True` always groups, for the fewest padded tokens, `False` never does. On MovieLens rows at batch 4 and
            8, `"auto"` took 0.54-0.92x of the one-row step time where it grouped and ran the one-row step where it
            did not; `True` took 0.92-1.26x (`benchmarks/results/row_packing/cpu/row_packing.md`). The command line
            takes `auto`, `true` or `false`.

    One default differs from `DPOConfig`: left unset, `bf16` is TRL's `True` where a GPU supports bf16 (or with
    `use_cpu=True`) and `False` on a machine without one, where TRL's default stops with "Your setup doesn't support
    bf16/gpu".

    Example:
    ```python
    >>> from dmpo_trl import DMPOConfig
    >>> args = DMPOConfig("out", loss_type=["dmpo", "sft"], loss_weights=[1.0, 1.0], max_negatives=4, report_to="none")
    >>> args.loss_type
    ['dmpo', 'sft']
    ```
    """

    loss_type: list[str] = field(
        default_factory=lambda: ["dmpo"],
        metadata={
            "help": "Loss type(s): 'dmpo' (default), 'sdpo', 'sigmoid', 'sft', or any TRL DPO loss for pairwise data. "
            "Combine several with `loss_weights`."
        },
    )
    length_normalize: bool = field(
        default=False,
        metadata={"help": "Rewards from the mean per-token log-ratio instead of the sum (length-fair rewards)."},
    )
    max_negatives: int | None = field(
        default=None,
        metadata={"help": "Keep at most this many rejected responses per row (seeded subsample). None keeps all."},
    )

    prefix_sharing: str = _tri_state_field(
        "Run each prompt once for all of its responses (packed sequence, block attention mask): 'auto' (per batch, "
        "where it is cheaper), 'true' (always) or 'false' (never)."
    )
    pack_rows: str = _tri_state_field(
        "Put several rows' packed sequences into one sequence (no padding between rows, attention kept within each "
        "row): 'auto' (where it is cheaper), 'true' (always) or 'false' (never)."
    )

    def __post_init__(self):
        if self.bf16 is None and not self.fp16 and not self.use_cpu and not is_torch_bf16_gpu_available():
            self.bf16 = False
        super().__post_init__()  # TRL makes `loss_type` a list and checks `len(loss_weights)` against it
        check_loss_types(self.loss_type)
        for name in ("prefix_sharing", "pack_rows"):
            setattr(self, name, _tri_state(name, getattr(self, name)))
        if self.max_negatives is not None and self.max_negatives < 1:
            raise ValueError(f"`max_negatives` must be >= 1 or None, got {self.max_negatives}.")
