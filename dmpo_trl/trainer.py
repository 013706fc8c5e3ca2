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
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer
from trl.data_utils import _tokenize, common_prefix_length, extract_prompt
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id, global_then_local_main_first, use_adapter

from .collator import DataCollatorForMultiPreference
from .config import MULTI_NEGATIVE_LOSSES, DMPOConfig
from .losses import PREFERENCE_LOSSES
from .rows import check_row, subsample
from .sharing import attention_mask_for, unsupported_reason


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


def split_by_row(seq_logps: torch.Tensor, num_rejected: torch.Tensor, width: int | None = None):
    """Split per-sequence values laid out as [B chosen, sum(K) rejected] into chosen (B,) and rejected (B, Kmax).

    Returns `(chosen, rejected, mask)`; padded entries of `rejected` are 0 and False in `mask`. `width` pads the K
    dimension to a fixed size (it must be at least the largest K).
    """
    batch_size = num_rejected.numel()
    chosen, rejected_flat = seq_logps[:batch_size], seq_logps[batch_size:]
    width = width or int(num_rejected.max())
    rejected = torch.nn.utils.rnn.pad_sequence(list(rejected_flat.split(num_rejected.tolist())), batch_first=True)
    rejected = torch.nn.functional.pad(rejected, (0, width - rejected.size(1)))
    mask = torch.arange(width, device=num_rejected.device) < num_rejected.unsqueeze(1)
    return chosen, rejected, mask


class DMPOTrainer(DPOTrainer):
    """
    Trainer for Direct Multi-Preference Optimization (DMPO): a drop-in [`~trl.DPOTrainer`] whose datasets may give a
    list of K rejected responses per row (K may differ between rows), contrasted with the chosen one in one loss.

    Any TRL preference dataset (`prompt`/`chosen`/`rejected`, plain text or conversational) trains unchanged. The
    constructor is TRL's; `args` is a [`DMPOConfig`] (a plain `DPOConfig` also works and trains TRL's loss).

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
        "title": "Direct Multi-Preference Optimization for LLM-based Recommendation",
        "id": "2405.16127",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @inproceedings{bai2024dmpo,
                title     = {{Finetuning Large Language Model for Personalized Ranking}},
                author    = {Zhuoxi Bai and Ning Wu and Fengyu Cai and Xinyi Zhu and Yun Xiong},
                year      = 2024,
                eprint    = {arXiv:2405.16127},
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
        loss_types = [args.loss_type] if isinstance(args.loss_type, str) else list(args.loss_type)
        # TRL's own loss types, and its pairwise extras, run TRL's `_compute_loss` (pairwise rows only).
        self._pairwise_only = (
            not set(loss_types) <= set(MULTI_NEGATIVE_LOSSES)
            or args.ld_alpha is not None
            or args.use_weighting
            or args.f_divergence_type != "reverse_kl"
        )
        if self._pairwise_only and {"dmpo", "sdpo"} & set(loss_types):
            raise ValueError(
                f"loss_type={loss_types}: 'dmpo' and 'sdpo' combine only with {list(MULTI_NEGATIVE_LOSSES)}, "
                "the default f_divergence_type='reverse_kl', ld_alpha=None and use_weighting=False."
            )
        self._max_num_rejected = 1
        if processing_class is None:
            model_id = model if isinstance(model, str) else get_config_model_id(model.config)
            processing_class = AutoTokenizer.from_pretrained(model_id, trust_remote_code=args.trust_remote_code)
        if data_collator is None:
            if processing_class.pad_token is None:
                processing_class.pad_token = args.pad_token or processing_class.eos_token
            data_collator = DataCollatorForMultiPreference(
                pad_token_id=processing_class.pad_token_id,
                max_length=args.max_length,
                truncation_mode=args.truncation_mode,
                pad_to_multiple_of=args.pad_to_multiple_of,
                share_prompt=False if self._pairwise_only else getattr(args, "prefix_sharing", "auto"),
            )
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

        self._resolve_prefix_sharing()

    def _resolve_prefix_sharing(self) -> None:
        """Turn prefix sharing off, with a warning that says why, when a model cannot take the packed layout."""
        if not getattr(self.data_collator, "share_prompt", False):
            return
        for role, candidate in (("model", self.model), ("ref_model", self.ref_model)):
            reason = unsupported_reason(candidate) if candidate is not None else None
            if reason:
                logger.warning(f"Prefix sharing is off: the {role}'s {reason}. Falling back to the unshared forward.")
                self.data_collator.share_prompt = False
                return

    def _precompute_ref_logps(self, dataset, name, batch_size):
        self._resolve_prefix_sharing()  # runs inside DPOTrainer.__init__, before our own check after it
        return super()._precompute_ref_logps(dataset, name, batch_size)

    # ------------------------------------------------------------------ dataset
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Validate and tokenize rows into `prompt_ids`, `chosen_ids` and `rejected_ids` (a list of K id lists)."""
        first = next(iter(dataset))
        if "prompt_ids" in first:  # already prepared
            return dataset
        map_kwargs = {"num_proc": args.dataset_num_proc} if isinstance(dataset, Dataset) else {}
        max_negatives = getattr(args, "max_negatives", None)

        def tokenize_row(row: dict[str, Any], index: int) -> dict[str, Any]:
            is_chat, rejected = check_row(row, index)
            rejected = subsample(rejected, max_negatives, args.seed, index)
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
            if "prompt" not in first:
                if not isinstance(first.get("rejected"), str):
                    raise ValueError(
                        f"The {dataset_name} dataset has no `prompt` column; an implicit prompt can only be extracted "
                        "from pairwise rows (`rejected` a single string)."
                    )
                dataset = dataset.map(extract_prompt, **map_kwargs)
            if isinstance(dataset, Dataset):
                map_kwargs["desc"] = f"Tokenizing {dataset_name} dataset"
            dataset = dataset.map(tokenize_row, with_indices=True, **map_kwargs)
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
        if self._pairwise_only and largest_k > 1:
            row = next(i for i, k in enumerate(num_rejected) if k > 1)
            raise ValueError(
                f"Row {row} of the {dataset_name} dataset has {num_rejected[row]} rejected responses, but "
                f"loss_type={self.loss_types} (or ld_alpha / use_weighting / f_divergence_type) is pairwise. Use "
                "loss_type 'dmpo', 'sdpo' or 'sigmoid', or set max_negatives=1."
            )
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
        if dropped:
            logger.warning(
                f"Dropped {dropped} of {len(dataset)} rows from the {dataset_name} dataset: "
                f"their prompt alone fills max_length={args.max_length}, leaving no room for a response."
            )
            dataset = dataset.select([i for i, status in enumerate(statuses) if status != "dropped"])
        return dataset

    # ------------------------------------------------------------------ log-probs
    def _sequence_logps(self, model, inputs: dict[str, torch.Tensor]):
        """Summed completion log-probs of every sequence in the batch (B chosen, then sum(K) rejected).

        Returns `(seq_logps, per_token_logps, owner, outputs)`: `owner` has the shape of the per-token outputs and
        holds the sequence index of each scored token (-1 elsewhere), in either layout: one row per sequence
        (unshared) or one packed row per prompt (`dmpo_trl.sharing`).
        """
        if "block_ids" in inputs:
            outputs = model(
                input_ids=inputs["input_ids"],
                attention_mask=attention_mask_for(self.accelerator.unwrap_model(model), inputs["block_ids"]),
                position_ids=inputs["position_ids"],
                shift_labels=inputs["labels"],
                use_cache=False,
                fused_lm_head=True,
            )
            per_token_logps, owner = outputs.log_probs, inputs["owner"]
            num_sequences = inputs["num_rejected"].numel() + int(inputs["num_rejected"].sum())
            scored = owner >= 0
            seq_logps = per_token_logps.new_zeros(num_sequences).index_add(0, owner[scored], per_token_logps[scored])
            return seq_logps, per_token_logps, owner, outputs

        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels,
            use_cache=False,
            fused_lm_head=True,
        )
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens
        seq_len = completion_mask.size(1) - 1
        per_token_logps = outputs.log_probs[:, -seq_len:]
        rows = torch.arange(completion_mask.size(0), device=completion_mask.device).unsqueeze(1)
        owner = rows.expand(-1, seq_len).masked_fill(completion_mask[:, 1:] == 0, -1)
        return per_token_logps.sum(dim=1), per_token_logps, owner, outputs

    def _reference_context(self):
        """Disable gradients (and the adapter, when the reference is the PEFT base model)."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs))
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            adapter = "ref" if "ref" in unwrapped.peft_config else None
            stack.enter_context(use_adapter(unwrapped, adapter_name=adapter))
        return stack

    def compute_ref_log_probs(self, model, inputs):
        """Reference log-probs of one batch: chosen (B,) and rejected (B, K) padded to the datasets' largest K."""
        with self._reference_context(), self.accelerator.autocast():
            seq_logps = self._sequence_logps(model, inputs)[0]
        # A fixed width keeps shapes equal across processes for `gather` and across batches for the cached column.
        chosen, rejected, _ = split_by_row(seq_logps, inputs["num_rejected"], width=self._max_num_rejected)
        return chosen, rejected

    # ------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs, return_outputs):
        num_rejected = inputs["num_rejected"]
        if self._pairwise_only:
            if (num_rejected != 1).any():
                raise ValueError(f"loss_type={self.loss_types} needs one rejected response per row.")
            pairwise_inputs = {key: value for key, value in inputs.items() if key != "num_rejected"}
            return super()._compute_loss(model, pairwise_inputs, return_outputs)

        mode = "train" if self.model.training else "eval"
        seq_logps, per_token_logps, owner, outputs = self._sequence_logps(model, inputs)
        if self.precompute_ref_logps:
            ref_seq_logps = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]]).to(seq_logps)
        else:
            with self._reference_context():
                ref_seq_logps = self._sequence_logps(self.ref_model or model, inputs)[0]

        chosen_logps, rejected_logps, mask = split_by_row(seq_logps, num_rejected)
        chosen_logratios = chosen_logps - ref_seq_logps[: num_rejected.numel()]
        rejected_logratios = (rejected_logps - split_by_row(ref_seq_logps, num_rejected)[1]).masked_fill(~mask, 0.0)

        batch_size = num_rejected.numel()
        chosen_tokens, rejected_tokens = (owner >= 0) & (owner < batch_size), owner >= batch_size
        loss = 0.0
        for loss_type, loss_weight in zip(self.loss_types, self.loss_weights, strict=True):
            if loss_type == "sft":
                per_row_loss = -per_token_logps[chosen_tokens].mean()
            else:
                per_row_loss = PREFERENCE_LOSSES[loss_type](chosen_logratios, rejected_logratios, mask, self.beta)
            loss = loss + per_row_loss.mean() * loss_weight

        self._log_metrics(mode, inputs, outputs, chosen_tokens, rejected_tokens)
        self._log_rewards(mode, chosen_logps, rejected_logps, chosen_logratios, rejected_logratios, mask)
        if return_outputs:
            with torch.no_grad():
                outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            return loss, outputs
        return loss

    # ------------------------------------------------------------------ metrics
    def _gather_mean(self, values: torch.Tensor) -> float:
        return self.accelerator.gather(values.detach().float()).mean().item()

    def _gather_ratio(self, numerator: torch.Tensor, denominator: torch.Tensor) -> float:
        numerator = self.accelerator.gather_for_metrics(numerator.detach().float()).sum()
        denominator = self.accelerator.gather_for_metrics(denominator.detach().float()).sum()
        return (numerator / denominator).item() if denominator > 0 else 0.0

    def _log_metrics(self, mode, inputs, outputs, chosen_tokens, rejected_tokens):
        """TRL's token-level metrics: entropy, num_tokens, logits/*, mean_token_accuracy."""
        seq_len = chosen_tokens.size(1)
        metrics = self._metrics[mode]
        scored = chosen_tokens | rejected_tokens
        entropy = outputs.entropy[:, -seq_len:].detach()
        metrics["entropy"].append(self._gather_ratio(entropy[scored].sum(), scored.sum()))
        if mode == "train":
            num_tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += num_tokens // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        mean_logits = outputs.mean_logits[:, -seq_len:].detach()
        metrics["logits/chosen"].append(self._gather_ratio(mean_logits[chosen_tokens].sum(), chosen_tokens.sum()))
        metrics["logits/rejected"].append(
            self._gather_ratio(mean_logits[rejected_tokens].sum(), rejected_tokens.sum())
        )
        is_top1 = outputs.is_top1[:, -seq_len:]
        metrics["mean_token_accuracy"].append(self._gather_ratio(is_top1[chosen_tokens].sum(), chosen_tokens.sum()))

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
