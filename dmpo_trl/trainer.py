"""`DMPOTrainer`: TRL's `DPOTrainer` where `rejected` may hold K responses, trained with DMPO, S-DPO or DPO losses."""

from __future__ import annotations

import contextlib
import json
import logging
import textwrap
from typing import Any

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset, IterableDataset
from datasets.fingerprint import Hasher
from transformers import AutoTokenizer, PreTrainedTokenizerBase, ProcessorMixin
from trl import DPOConfig, DPOTrainer
from trl.data_utils import _tokenize, common_prefix_length
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id, global_then_local_main_first, use_adapter

from .collator import DataCollatorForMultiPreference
from .config import MULTI_NEGATIVE_LOSSES, DMPOConfig, check_loss_types
from .journal import share_saved_weights
from .losses import PREFERENCE_LOSSES
from .rows import check_row, check_tokenized_row, extract_implicit_prompt, subsample
from .sharing import (
    packed_forward_kwargs,
    packed_router_aux_loss,
    recording_router_logits,
    unpack_rows,
    unsupported_reason,
)


logger = logging.getLogger(__name__)


def length_status(
    prompt_ids: list, chosen_ids: list, rejected_ids: list, max_length: int, truncation_mode: str
) -> str | None:
    """`"dropped"` when the prompt alone fills `max_length` (`keep_start`), `"truncated"` when a response runs past."""
    prompt = len(prompt_ids)
    if truncation_mode == "keep_start" and prompt >= max_length:
        return "dropped"
    longest = max([len(chosen_ids)] + [len(r) for r in rejected_ids])
    return "truncated" if prompt < max_length < prompt + longest else None


def pairwise_refusal(index: int, dataset_name: str, count: int, reason: str) -> str:
    """The error for a row with K > 1 rejected responses where TRL's pairwise loss runs (`reason` says why)."""
    return (
        f"Row {index} of the {dataset_name} dataset has {count} rejected responses, but {reason} runs TRL's pairwise "
        "DPO loss, which takes one rejected response per row. Use loss_type 'dmpo', 'sdpo', 'sigmoid' or "
        "'plackett_luce' without ld_alpha, use_weighting and f_divergence_type, or set max_negatives=1."
    )


class StreamedLengthCheck:
    """Filter for a streamed (`IterableDataset`) split, whose rows cannot be counted before training reads them.

    As rows stream in, it drops those whose prompt alone fills `max_length` (with `keep_start`) and warns about them
    and about responses that run past `max_length`, naming the row and the count so far; warnings come at counts
    1, 2, 4, 8, ... so that a long stream does not flood the log.
    """

    def __init__(self, max_length: int, truncation_mode: str, dataset_name: str):
        self.max_length, self.truncation_mode, self.dataset_name = max_length, truncation_mode, dataset_name
        self.dropped = self.truncated = 0

    def __call__(self, row: dict[str, Any], index: int) -> bool:
        status = length_status(
            row["prompt_ids"], row["chosen_ids"], row["rejected_ids"], self.max_length, self.truncation_mode
        )
        if status == "dropped":
            self.dropped += 1
            self._warn(self.dropped, f"Dropped row {index}", "its prompt alone fills", "dropped")
            return False
        if status == "truncated":
            self.truncated += 1
            self._warn(self.truncated, f"Row {index}", "a response runs past", "truncated")
        return True

    def _warn(self, count: int, subject: str, what: str, done: str) -> None:
        if count & (count - 1) == 0:  # a power of two
            logger.warning(
                f"{subject} of the streamed {self.dataset_name} dataset: {what} max_length={self.max_length}; "
                f"{count} row(s) {done} so far (reported at counts 1, 2, 4, 8, ...)."
            )


def _column_names(dataset) -> list[str]:
    names = getattr(dataset, "column_names", None)
    return list(names) if names is not None else list(next(iter(dataset)).keys())


def refuse_vision_inputs(processing_class, train_dataset, eval_dataset) -> None:
    """Raise `NotImplementedError` for a processor (`ProcessorMixin`) or a dataset with an `image`/`images` column."""
    if isinstance(processing_class, ProcessorMixin):
        raise NotImplementedError(
            "DMPOTrainer takes a tokenizer as `processing_class`, not a processor "
            f"({type(processing_class).__name__}): vision-language models and image inputs are not supported."
        )
    if isinstance(eval_dataset, dict):
        datasets = [("train", train_dataset), *eval_dataset.items()]
    else:
        datasets = [("train", train_dataset), ("eval", eval_dataset)]
    for name, dataset in datasets:
        if dataset is None:
            continue
        images = [column for column in _column_names(dataset) if column in ("image", "images")]
        if images:
            raise NotImplementedError(
                f"The {name} dataset has an `{images[0]}` column: DMPOTrainer does not support image inputs "
                "(text-only rows: `prompt`, `chosen`, `rejected`)."
            )


def resolve_pad_token(tokenizer: PreTrainedTokenizerBase, args: DPOConfig) -> str:
    """The padding token as TRL's `DPOTrainer` picks it: `args.pad_token`, else the tokenizer's, else its EOS token."""
    pad_token = args.pad_token or tokenizer.pad_token or tokenizer.eos_token
    if pad_token not in tokenizer.get_vocab():
        raise ValueError(
            f"The specified `pad_token` ('{pad_token}') is not found in the vocabulary of the given "
            f"`processing_class` ({tokenizer.__class__.__name__}). Ensure that the `pad_token` exists "
            "in the vocabulary before using it as a padding token."
        )
    return pad_token


def split_by_row(seq_logps: torch.Tensor, inputs: dict[str, torch.Tensor], width: int | None = None):
    """Split per-sequence values laid out as [B chosen, sum(K) rejected] into chosen (B,) and rejected (B, Kmax).

    Returns `(chosen, rejected, mask)`; padded entries of `rejected` are 0 and False in `mask`. The layout comes from
    the collator (`rejected_index`, `rejected_mask`), so nothing is copied to the host. `width` pads the K dimension
    to a fixed size (at least the batch's largest K).
    """
    index, mask = inputs["rejected_index"], inputs["rejected_mask"]
    chosen = seq_logps[: index.size(0)]
    rejected = seq_logps[index].masked_fill(~mask, 0.0)
    if width is not None and width > index.size(1):
        rejected = torch.nn.functional.pad(rejected, (0, width - index.size(1)))
        mask = torch.nn.functional.pad(mask, (0, width - index.size(1)), value=False)
    return chosen, rejected, mask


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of `values` where `mask` is True, without boolean indexing (whose output size needs a host sync)."""
    return values.masked_fill(~mask, 0).sum()


#: Batch keys that describe the K layout; TRL's own `_compute_loss` (pairwise losses) must not pass them to the model.
LAYOUT_KEYS = ("num_rejected", "rejected_index", "rejected_mask", "sequence_rows", "row_tokens")

#: Where TRL's own loss runs (pairwise rows), the K-response losses run as the one they equal at K = 1: TRL's sigmoid.
PAIRWISE_EQUIVALENT = {"dmpo": "sigmoid", "sdpo": "sigmoid", "plackett_luce": "sigmoid"}


def trl_only_options(args: DPOConfig) -> list[str]:
    """The `DPOConfig` options set in `args` that only TRL's pairwise loss implements (WPO, LD-DPO, f-divergences).

    Example:
    ```python
    >>> trl_only_options(DPOConfig("out", use_weighting=True, ld_alpha=0.5, bf16=False, report_to="none"))
    ['ld_alpha=0.5', 'use_weighting=True']
    ```
    """
    options = []
    if args.ld_alpha is not None:
        options.append(f"ld_alpha={args.ld_alpha}")
    if args.use_weighting:
        options.append("use_weighting=True")
    if args.f_divergence_type != "reverse_kl":
        options.append(f"f_divergence_type={args.f_divergence_type!r}")
    return options


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module | None):
    """Run `module` in eval mode (no dropout) inside the block, then give each submodule back its own mode."""
    if module is None:
        yield
        return
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


class DMPOTrainer(DPOTrainer):
    """
    Trainer for Direct Multi-Preference Optimization (DMPO): a drop-in [`~trl.DPOTrainer`] whose datasets may give a
    list of K rejected responses per row (K may differ between rows), contrasted with the chosen one in one loss.

    Any TRL preference dataset (`prompt`/`chosen`/`rejected`, plain text or conversational) trains unchanged, and so
    do pre-tokenized rows (`prompt_ids`/`chosen_ids`/`rejected_ids`, the last one id list or K of them). Text only: a
    processor or an image column raises `NotImplementedError`. The constructor is TRL's; `args` is a [`DMPOConfig`]
    (a plain `DPOConfig` also works and trains TRL's loss). On pairwise rows every `DPOConfig` option gives TRL's
    numbers, with one departure from TRL 1.16: the reference (an explicit `ref_model`, or the PEFT base model with the
    adapter off) always runs in eval mode, so dropout never reaches it; the model's own mode is left as it was.

    Example:
    ```python
    >>> from datasets import Dataset
    >>> from dmpo_trl import DMPOConfig, DMPOTrainer
    >>> dataset = Dataset.from_list([
    ...     {"prompt": "The user watched Heat. Next:", "chosen": " Casino", "rejected": [" Babe", " Jumanji"]},
    ... ])
    >>> trainer = DMPOTrainer("Qwen/Qwen2.5-0.5B", args=DMPOConfig("out"), train_dataset=dataset)  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    ```
    """

    _tag_names = ["trl", "dpo", "dmpo"]
    _name = "DMPO"
    _paper = {
        "title": "Finetuning Large Language Model for Personalized Ranking",
        "id": "2405.16127",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @misc{bai2024finetuning,
                title         = {{Finetuning Large Language Model for Personalized Ranking}},
                author        = {Zhuoxi Bai and Ning Wu and Fengyu Cai and Xinyi Zhu and Yun Xiong},
                year          = 2024,
                eprint        = {2405.16127},
                archivePrefix = {arXiv},
                url           = {https://arxiv.org/abs/2405.16127},
            }"""),
    }

    def __init__(
        self,
        model,
        ref_model=None,
        args: DPOConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset=None,
        processing_class: PreTrainedTokenizerBase | None = None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = DMPOConfig(f"{model_name.split('/')[-1]}-DMPO")
        refuse_vision_inputs(processing_class, train_dataset, eval_dataset)
        loss_types = [args.loss_type] if isinstance(args.loss_type, str) else list(args.loss_type)
        check_loss_types(loss_types)  # a plain DPOConfig does not check them
        # TRL's own loss types, and its pairwise extras (WPO, LD-DPO, f-divergences), run TRL's `_compute_loss` on
        # pairwise rows, where 'dmpo', 'sdpo' and 'plackett_luce' are TRL's 'sigmoid': a DPOConfig that works with
        # DPOTrainer works unchanged as a DMPOConfig. Only rows with K > 1 rejected responses are refused.
        trl_losses = [name for name in loss_types if name not in MULTI_NEGATIVE_LOSSES]
        reasons = ([f"loss_type={trl_losses}"] if trl_losses else []) + trl_only_options(args)
        self._pairwise_only = bool(reasons)
        self._pairwise_reason = " and ".join(reasons)
        if self._pairwise_only and getattr(args, "length_normalize", False):
            raise ValueError(
                f"length_normalize=True applies to the losses {list(MULTI_NEGATIVE_LOSSES[:-1])}; "
                f"{self._pairwise_reason} runs TRL's own loss, which sums."
            )
        trl_loss_types = [PAIRWISE_EQUIVALENT.get(name, name) for name in loss_types] if reasons else loss_types
        self._max_num_rejected = 1
        if processing_class is None:
            model_id = model if isinstance(model, str) else get_config_model_id(model.config)
            processing_class = AutoTokenizer.from_pretrained(model_id, trust_remote_code=args.trust_remote_code)
        if data_collator is None:
            processing_class.pad_token = resolve_pad_token(processing_class, args)
            data_collator = DataCollatorForMultiPreference(
                pad_token_id=processing_class.pad_token_id,
                max_length=args.max_length,
                truncation_mode=args.truncation_mode,
                pad_to_multiple_of=args.pad_to_multiple_of,
                share_prompt=False if self._pairwise_only else getattr(args, "prefix_sharing", "auto"),
                pack_rows=getattr(args, "pack_rows", False),
            )
        # TRL reads (and checks) its loss names from `args` in its constructor; the user's config keeps their own.
        user_loss_type, args.loss_type = args.loss_type, trl_loss_types
        try:
            super().__init__(
                model=model,
                ref_model=ref_model,
                args=args,
                data_collator=data_collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                compute_metrics=compute_metrics,
                callbacks=callbacks,
                optimizers=optimizers,
                quantization_config=quantization_config,
                peft_config=peft_config,
            )
        finally:
            args.loss_type = user_loss_type
        self.loss_types = list(trl_loss_types)
        if getattr(args, "fsdp", None) and not self.is_fsdp_enabled:
            logger.warning(
                f"fsdp is set, but accelerate runs this launch as {self.accelerator.distributed_type.value}: it "
                "enables FSDP only on GPU-type back-ends (CUDA, XPU, NPU, ...), so the model is not sharded."
            )

        self._resolve_prefix_sharing()

    def _resolve_prefix_sharing(self) -> None:
        """Turn prefix sharing off, with a warning that says why, when a model cannot take the packed layout."""
        if not getattr(self.data_collator, "share_prompt", False):
            return
        for role, candidate in (("model", self.model), ("ref_model", self.ref_model)):
            reason = unsupported_reason(candidate) if candidate is not None else None
            if reason:
                packing = ", without row packing" if getattr(self.data_collator, "pack_rows", False) else ""
                logger.warning(
                    f"Prefix sharing is off: the {role}'s {reason}. Falling back to the unshared forward{packing}."
                )
                self.data_collator.share_prompt = False
                return

    def _precompute_ref_logps(self, dataset, name, batch_size):
        """TRL's precompute, cached under the dataset's fingerprint, the reference model and what shapes its values."""
        self._resolve_prefix_sharing()  # runs inside DPOTrainer.__init__, before our own check after it
        # TRL keys its cache file on (dataset fingerprint, model hash); the tokenized fingerprint leaves out `args`, so
        # the settings that change the stored values join the model hash for the length of the pass.
        model_hash = self._precompute_model_hash
        settings = {
            "max_length": self.args.max_length,
            "truncation_mode": self.args.truncation_mode,
            "ld_alpha": self.ld_alpha,
            "trl_reference": self._pairwise_only,
            "prefix_sharing": getattr(self.data_collator, "share_prompt", False),
            "pack_rows": getattr(self.data_collator, "pack_rows", False),
            "width": self._max_num_rejected,
            "precision": (self.args.bf16, self.args.fp16),
        }
        self._precompute_model_hash = Hasher.hash((model_hash, settings))
        try:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        finally:
            self._precompute_model_hash = model_hash

    def _get_dataloader(self, dataset, *args, **kwargs):
        """Transformers' dataloader, prepared without accelerate's batch dispatching.

        accelerate dispatches the batches of an `IterableDataset` by default (and of any dataset with
        `dispatch_batches=True`): the main process collates them, concatenates them along dim 0 and gives each process
        a slice as long as the first tensor's dim 0. A batch here is not split that way: the B chosen sequences come
        before all the rejected ones, and packed rows (prefix sharing, `pack_rows`) hold several sequences each, so
        tensors of different first sizes describe one batch and a slice loses the rows it cuts. Without dispatching,
        each process reads its own share of the rows (accelerate's sampler or `IterableDatasetShard`) and collates
        them itself, so any layout stays whole.
        """
        config = self.accelerator.dataloader_config
        streamed = isinstance(dataset, torch.utils.data.IterableDataset)
        if not (config.dispatch_batches or (config.dispatch_batches is None and streamed)):
            return super()._get_dataloader(dataset, *args, **kwargs)
        if config.dispatch_batches:
            logger.warning(
                "dispatch_batches=True is not used: a DMPO batch (chosen sequences before rejected ones, packed rows) "
                "cannot be split along dim 0, so each process reads and collates its own rows instead."
            )
        dispatch_batches, config.dispatch_batches = config.dispatch_batches, False
        try:
            return super()._get_dataloader(dataset, *args, **kwargs)
        finally:
            config.dispatch_batches = dispatch_batches

    # ------------------------------------------------------------------ dataset
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Validate and tokenize rows into `prompt_ids`, `chosen_ids`, `rejected_ids` (K id lists) and `num_rejected`.

        Pre-tokenized rows (`prompt_ids`, `chosen_ids`, and `rejected_ids` as one id list or a list of K) are checked
        and subsampled the same way. The result's fingerprint (the cache key of `datasets`, and of TRL's precomputed
        reference log-probs) depends only on the input dataset, the tokenizer, and `max_negatives` with `seed`.
        """
        first = next(iter(dataset))
        pretokenized = "prompt_ids" in first
        map_kwargs = {"num_proc": args.dataset_num_proc} if isinstance(dataset, Dataset) else {}
        max_negatives = getattr(args, "max_negatives", None)
        seed = args.seed
        vocab_size = len(processing_class)
        # Plain values, not `self`, in the row functions: `map` with `num_proc` pickles them.
        pairwise_reason = self._pairwise_reason if self._pairwise_only else None

        def refuse_several(rejected: list, index: int) -> None:
            if pairwise_reason and len(rejected) > 1:
                raise ValueError(pairwise_refusal(index, dataset_name, len(rejected), pairwise_reason))

        def prepare_tokenized_row(row: dict[str, Any], index: int) -> dict[str, Any]:
            rejected = subsample(check_tokenized_row(row, index, vocab_size), max_negatives, seed, index)
            refuse_several(rejected, index)
            return {"rejected_ids": rejected, "num_rejected": len(rejected)}

        def tokenize_row(row: dict[str, Any], index: int) -> dict[str, Any]:
            is_chat, rejected = check_row(row, index)
            rejected = subsample(rejected, max_negatives, seed, index)
            refuse_several(rejected, index)
            if is_chat:
                tools = row.get("tools")
                kwargs = {
                    "tools": json.loads(tools) if isinstance(tools, str) else tools,
                    **(row.get("chat_template_kwargs") or {}),
                }
                prompt_ids = _tokenize(processing_class, row["prompt"], add_generation_prompt=True, **kwargs)
                full = [_tokenize(processing_class, row["prompt"] + c, **kwargs) for c in [row["chosen"], *rejected]]
            else:
                eos = processing_class.eos_token
                responses = [r if r.endswith(eos) else r + eos for r in [row["chosen"], *rejected]]
                prompt_ids = _tokenize(processing_class, row["prompt"])
                full = [_tokenize(processing_class, row["prompt"] + r) for r in responses]
            prompt_ids = prompt_ids["input_ids"]
            full = [ids["input_ids"] for ids in full]
            # The completion starts where the prompt and every prompt+response diverge, as in TRL's DPOTrainer.
            prompt_len = min(common_prefix_length(prompt_ids, ids) for ids in full)
            return {
                "prompt_ids": prompt_ids[:prompt_len],
                "chosen_ids": full[0][prompt_len:],
                "rejected_ids": [ids[prompt_len:] for ids in full[1:]],
                "num_rejected": len(rejected),
            }

        with global_then_local_main_first():
            if "prompt" not in first and not pretokenized:
                # The prompt is implicit in `chosen` and `rejected` (TRL's `extract_prompt`); `rejected` may be one
                # response (a string or a message list) or K of them.
                dataset = dataset.map(extract_implicit_prompt, with_indices=True, **map_kwargs)
            if isinstance(dataset, Dataset):
                map_kwargs["desc"] = f"{'Checking' if pretokenized else 'Tokenizing'} {dataset_name} dataset"
                # Only what changes the tokens: not the whole `args`, which the function's closure would bring in
                inputs = vocab_size if pretokenized else processing_class
                map_kwargs["new_fingerprint"] = Hasher.hash(
                    ("dmpo_trl.prepare", dataset._fingerprint, inputs, max_negatives, seed if max_negatives else None)
                )
            prepare = prepare_tokenized_row if pretokenized else tokenize_row
            dataset = dataset.map(prepare, with_indices=True, **map_kwargs)
            if isinstance(dataset, Dataset):
                dataset = self._check_lengths(dataset, args, dataset_name)
            elif args.max_length is not None:
                check = StreamedLengthCheck(args.max_length, args.truncation_mode, dataset_name)
                dataset = dataset.filter(check, with_indices=True)
        return dataset

    def _check_lengths(self, dataset: Dataset, args, dataset_name: str) -> Dataset:
        """Record the largest K, refuse K > 1 for pairwise-only losses, and drop/warn about rows over `max_length`."""
        num_rejected = dataset["num_rejected"]
        largest_k = max(num_rejected, default=1)
        self._max_num_rejected = max(self._max_num_rejected, largest_k)
        if self._pairwise_only and largest_k > 1:  # rows tokenized earlier, from the `datasets` cache
            row = next(i for i, k in enumerate(num_rejected) if k > 1)
            raise ValueError(pairwise_refusal(row, dataset_name, num_rejected[row], self._pairwise_reason))
        if args.max_length is None:
            return dataset
        statuses = [
            length_status(p, c, rs, args.max_length, args.truncation_mode)
            for p, c, rs in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
        ]
        truncated = statuses.count("truncated")
        if truncated:
            logger.warning(
                f"{truncated} of {len(dataset)} rows in the {dataset_name} dataset have a response that runs past "
                f"max_length={args.max_length}; those responses are truncated."
            )
        dropped = statuses.count("dropped")
        if dropped and dropped == len(dataset):
            raise ValueError(
                f"Every row of the {dataset_name} dataset has a prompt that alone fills max_length={args.max_length}, "
                "leaving no room for a response; raise max_length."
            )
        if dropped:
            logger.warning(
                f"Dropped {dropped} of {len(dataset)} rows from the {dataset_name} dataset: "
                f"their prompt alone fills max_length={args.max_length}, leaving no room for a response."
            )
            dataset = dataset.select([i for i, status in enumerate(statuses) if status != "dropped"])
        return dataset

    # ------------------------------------------------------------------ log-probs
    def _sequence_logps(self, model, inputs: dict[str, torch.Tensor], with_aux_loss: bool = False):
        """Summed completion log-probs of every sequence in the batch (B chosen, then sum(K) rejected).

        With `with_aux_loss` (MoE models), `outputs.aux_loss` is the router load-balancing loss as TRL gets it from the
        unshared batch, in either layout.

        Returns `(seq_logps, per_token_logps, owner, outputs)`: `owner` has the shape of the per-token outputs and
        holds the sequence index of each scored token (-1 elsewhere), in either layout: one row per sequence
        (unshared) or one packed row per prompt, possibly several per sequence (`dmpo_trl.sharing`).
        """
        if "block_ids" in inputs:
            unwrapped = self.accelerator.unwrap_model(model)
            record = recording_router_logits(unwrapped) if with_aux_loss else contextlib.nullcontext()
            with record as router_logits:
                outputs = model(
                    **packed_forward_kwargs(unwrapped, inputs), shift_labels=inputs["labels"], fused_lm_head=True
                )
            if with_aux_loss:
                num_sequences = inputs["num_rejected"] + 1
                outputs["aux_loss"] = packed_router_aux_loss(
                    unwrapped, router_logits, inputs["block_ids"], num_sequences, inputs.get("row_ids")
                )
            per_token_logps, owner = outputs.log_probs, inputs["owner"]
            num_sequences = inputs["sequence_rows"].size(0)
            scored = owner >= 0
            seq_logps = per_token_logps.new_zeros(num_sequences).index_add(
                0, owner.clamp(min=0).flatten(), per_token_logps.masked_fill(~scored, 0.0).flatten()
            )
            return seq_logps, per_token_logps, owner, outputs

        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels,
            use_cache=False,
            fused_lm_head=True,
            **({"output_router_logits": True} if with_aux_loss else {}),
        )
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens
        seq_len = completion_mask.size(1) - 1
        per_token_logps = outputs.log_probs[:, -seq_len:]
        rows = torch.arange(completion_mask.size(0), device=completion_mask.device).unsqueeze(1)
        owner = rows.expand(-1, seq_len).masked_fill(completion_mask[:, 1:] == 0, -1)
        return per_token_logps.sum(dim=1), per_token_logps, owner, outputs

    def _reference_context(self, model: torch.nn.Module | None = None):
        """No gradients, `model` (the one that runs as the reference) in eval mode, and the adapter off when the
        reference is the PEFT base model.

        The reference is a fixed policy: TRL 1.16 runs an explicit `ref_model` in whatever mode it comes in (train
        mode for a model built from a config), and the adapter-disabled pass in the policy's train mode, so dropout
        that `disable_dropout` cannot reach (a functional dropout such as OPT's) would change it from call to call.
        """
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(eval_mode(model))
        stack.enter_context(disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs))
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            adapter = "ref" if "ref" in unwrapped.peft_config else None
            stack.enter_context(use_adapter(unwrapped, adapter_name=adapter))
        return stack

    def compute_ref_log_probs(self, model, inputs):
        """Reference log-probs of one batch: chosen (B,) and rejected (B, K) padded to the datasets' largest K.

        Where TRL's own loss runs (`ld_alpha`, `use_weighting`, TRL loss types: pairwise rows), TRL computes them, so
        that the precomputed values are the ones its loss reads (with `ld_alpha`, the length-desensitized sums).
        """
        if self._pairwise_only:
            pairwise_inputs = {key: value for key, value in inputs.items() if key not in LAYOUT_KEYS}
            with eval_mode(model):
                chosen, rejected = super().compute_ref_log_probs(model, pairwise_inputs)
            return chosen, rejected.unsqueeze(1)
        with self._reference_context(model), self.accelerator.autocast():
            seq_logps = self._sequence_logps(model, inputs)[0]
        # A fixed width keeps shapes equal across processes for `gather` and across batches for the cached column.
        chosen, rejected, _ = split_by_row(seq_logps, inputs, width=self._max_num_rejected)
        return chosen, rejected

    # ------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs, return_outputs):
        if self._pairwise_only:
            if inputs["rejected_index"].size(1) != 1:
                raise ValueError(f"loss_type={self.loss_types} needs one rejected response per row.")
            pairwise_inputs = {key: value for key, value in inputs.items() if key not in LAYOUT_KEYS}
            if self.precompute_ref_logps:
                return super()._compute_loss(model, pairwise_inputs, return_outputs)
            # TRL runs the reference inside its loss, in the mode the model is in; run it here in eval mode, with
            # TRL's own `compute_ref_log_probs` (the values TRL's loss computes inline), and hand TRL the result.
            reference = self.model if self.ref_model is None else self.ref_model
            ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(reference, pairwise_inputs)
            pairwise_inputs["ref_chosen_logps"] = ref_chosen_logps
            pairwise_inputs["ref_rejected_logps"] = ref_rejected_logps.squeeze(1)
            self.precompute_ref_logps = True  # TRL's loss reads the reference values from the batch
            try:
                return super()._compute_loss(model, pairwise_inputs, return_outputs)
            finally:
                self.precompute_ref_logps = False

        mode = "train" if self.model.training else "eval"
        seq_logps, per_token_logps, owner, outputs = self._sequence_logps(model, inputs, self.aux_loss_enabled)
        if self.precompute_ref_logps:
            ref_seq_logps = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]]).to(seq_logps)
        else:
            reference = self.ref_model or model
            with self._reference_context(reference):
                ref_seq_logps = self._sequence_logps(reference, inputs)[0]

        chosen_logps, rejected_logps, mask = split_by_row(seq_logps, inputs)
        ref_chosen_logps, ref_rejected_logps, _ = split_by_row(ref_seq_logps, inputs)
        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = (rejected_logps - ref_rejected_logps).masked_fill(~mask, 0.0)
        if getattr(self.args, "length_normalize", False):  # mean per-token log-ratios
            scored = (owner >= 0).to(seq_logps.dtype).flatten()
            lengths = seq_logps.new_zeros(seq_logps.size(0)).index_add(0, owner.clamp(min=0).flatten(), scored)
            chosen_lengths, rejected_lengths, _ = split_by_row(lengths.clamp(min=1), inputs)
            chosen_logratios = chosen_logratios / chosen_lengths
            rejected_logratios = rejected_logratios / rejected_lengths.clamp(min=1)

        batch_size = mask.size(0)
        chosen_tokens, rejected_tokens = (owner >= 0) & (owner < batch_size), owner >= batch_size
        loss = 0.0
        for loss_type, loss_weight in zip(self.loss_types, self.loss_weights, strict=True):
            if loss_type == "sft":
                per_row_loss = -per_token_logps.masked_fill(~chosen_tokens, 0.0).sum() / chosen_tokens.sum()
            else:
                per_row_loss = PREFERENCE_LOSSES[loss_type](chosen_logratios, rejected_logratios, mask, self.beta)
            loss = loss + per_row_loss.mean() * loss_weight
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(outputs.aux_loss).mean().item())

        self._log_metrics(mode, inputs, outputs, chosen_tokens, rejected_tokens)
        self._log_rewards(mode, chosen_logps, rejected_logps, chosen_logratios, rejected_logratios, mask)
        if return_outputs:
            sequences = self._one_row_per_sequence(inputs)
            with torch.no_grad():
                outputs = model(
                    input_ids=sequences["input_ids"], attention_mask=sequences["attention_mask"], use_cache=False
                )
            return loss, outputs
        return loss

    def _one_row_per_sequence(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch in TRL's layout, one row per (prompt, response): B chosen, then every row's rejected."""
        if "block_ids" not in inputs:
            return inputs
        pad_token_id = getattr(self.data_collator, "pad_token_id", None) or 0
        batch = DataCollatorForMultiPreference(pad_token_id=pad_token_id)(unpack_rows(inputs))
        return {key: value.to(inputs["input_ids"].device) for key, value in batch.items()}

    def _save(self, output_dir: str | None = None, state_dict=None):
        """Transformers' save (`save_model`, checkpoints), with the weights readable as the umask allows: safetensors
        writes them private (0o600)."""
        super()._save(output_dir, state_dict)
        share_saved_weights(output_dir if output_dir is not None else self.args.output_dir)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """TRL's, with logits and labels (`input_ids`) one row per (prompt, response) in either layout."""
        if prediction_loss_only or self._pairwise_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        return loss.detach(), outputs.logits, self._one_row_per_sequence(inputs)["input_ids"]

    # ------------------------------------------------------------------ metrics
    def _gather_mean(self, values: torch.Tensor) -> float:
        return self.accelerator.gather(values.detach().float()).mean().item()

    def _gather_ratio(self, numerator: torch.Tensor, denominator: torch.Tensor) -> float:
        numerator = self.accelerator.gather_for_metrics(numerator.detach().float()).sum()
        denominator = self.accelerator.gather_for_metrics(denominator.detach().float()).sum()
        return (numerator / denominator.clamp(min=1)).item()  # 0 when nothing was counted, with one host copy

    def _log_metrics(self, mode, inputs, outputs, chosen_tokens, rejected_tokens):
        """TRL's token-level metrics: entropy, num_tokens, logits/*, mean_token_accuracy."""
        seq_len = chosen_tokens.size(1)
        metrics = self._metrics[mode]
        scored = chosen_tokens | rejected_tokens
        entropy = outputs.entropy[:, -seq_len:].detach()
        metrics["entropy"].append(self._gather_ratio(masked_sum(entropy, scored), scored.sum()))
        if mode == "train":
            # TRL's count, tokens of the one-sequence-per-response layout, also where the batch is packed
            tokens = inputs["row_tokens"] if "row_tokens" in inputs else inputs["attention_mask"]
            num_tokens = self.accelerator.gather_for_metrics(tokens.sum()).sum().item()
            self._total_train_tokens += num_tokens // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        mean_logits = outputs.mean_logits[:, -seq_len:].detach()
        metrics["logits/chosen"].append(
            self._gather_ratio(masked_sum(mean_logits, chosen_tokens), chosen_tokens.sum())
        )
        metrics["logits/rejected"].append(
            self._gather_ratio(masked_sum(mean_logits, rejected_tokens), rejected_tokens.sum())
        )
        is_top1 = outputs.is_top1[:, -seq_len:]
        metrics["mean_token_accuracy"].append(
            self._gather_ratio(masked_sum(is_top1.float(), chosen_tokens), chosen_tokens.sum())
        )

    def _log_rewards(self, mode, chosen_logps, rejected_logps, chosen_logratios, rejected_logratios, mask):
        """Per-row reward metrics in TRL's names, extended for K (only per-row tensors go through `gather`)."""
        count = mask.sum(dim=1)
        chosen_rewards = self.beta * chosen_logratios.detach()
        rejected_rewards = self.beta * rejected_logratios.detach()
        mean_rejected = (rejected_rewards * mask).sum(dim=1) / count
        max_rejected = rejected_rewards.masked_fill(~mask, float("-inf")).max(dim=1).values
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(self._gather_mean(chosen_rewards))
        metrics["rewards/rejected"].append(self._gather_mean(mean_rejected))
        metrics["rewards/rejected_max"].append(self._gather_mean(max_rejected))
        metrics["rewards/margins"].append(self._gather_mean(chosen_rewards - mean_rejected))
        metrics["rewards/accuracies"].append(self._gather_mean(chosen_rewards > max_rejected))
        metrics["logps/chosen"].append(self._gather_mean(chosen_logps))
        metrics["logps/rejected"].append(self._gather_mean((rejected_logps.detach() * mask).sum(dim=1) / count))
        metrics["num_negatives"].append(self._gather_mean(count))
