"""`DMPOTrainer`: TRL's `DPOTrainer` where `rejected` may hold K responses, trained with DMPO, S-DPO or DPO losses."""

from __future__ import annotations

import contextlib
import logging
import textwrap

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset, IterableDataset
from datasets.fingerprint import Hasher
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id, use_adapter

from ._trl_compat import prepare_inputs
from .collator import DataCollatorForMultiPreference
from .config import MULTI_NEGATIVE_LOSSES, DMPOConfig, check_loss_types
from .journal import share_saved_weights
from .losses import PREFERENCE_LOSSES
from .preparation import prepare_rows, refuse_vision_inputs
from .sharing import (
    packed_forward_kwargs,
    packed_router_aux_loss,
    recording_router_logits,
    unpack_rows,
    unsupported_reason,
)
from .step_metrics import log_aux_loss, log_reward_metrics, log_token_metrics


logger = logging.getLogger(__name__)


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
        # The arguments as given, for TRL's constructor; `args`, `data_collator` and `processing_class` are filled in
        # below when left out.
        trl_arguments = {name: value for name, value in locals().items() if name not in ("self", "__class__")}
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
        trl_arguments.update(args=args, data_collator=data_collator, processing_class=processing_class)
        try:
            super().__init__(**trl_arguments)
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

    def precompute_settings(self) -> dict:
        """The settings that change the precomputed reference log-probs, beside the dataset and the reference model.

        TRL keys its cache of precomputed values on (dataset fingerprint, model hash); the tokenized fingerprint
        leaves out `args` (`dmpo_trl.preparation.prepare_rows`), so these join the model hash
        (`_precompute_model_hash`).
        """
        return {
            "max_length": self.args.max_length,
            "truncation_mode": self.args.truncation_mode,
            "ld_alpha": self.ld_alpha,
            "trl_reference": self._pairwise_only,
            "prefix_sharing": getattr(self.data_collator, "share_prompt", False),
            "pack_rows": getattr(self.data_collator, "pack_rows", False),
            "width": self._max_num_rejected,
            "precision": (self.args.bf16, self.args.fp16),
        }

    @property
    def _precompute_model_hash(self) -> str | None:
        """TRL's key of the reference model for its cache of precomputed log-probs (TRL 1.16 sets it to the hash of the
        reference model and reads it in `_precompute_ref_logps`), joined with `precompute_settings()`."""
        return Hasher.hash((self._reference_model_hash, self.precompute_settings()))

    @_precompute_model_hash.setter
    def _precompute_model_hash(self, value: str | None) -> None:
        self._reference_model_hash = value

    def _precompute_ref_logps(self, dataset, name, batch_size):
        """TRL's precompute, cached under the dataset's fingerprint, the reference model and what shapes its values."""
        self._resolve_prefix_sharing()  # runs inside DPOTrainer.__init__, before our own check after it
        return super()._precompute_ref_logps(dataset, name, batch_size)

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
    def prepare_dataset(self, dataset: Dataset | IterableDataset, name: str = "train") -> Dataset | IterableDataset:
        """A dataset ready for this trainer, as its constructor prepares `train_dataset` and `eval_dataset`: rows
        checked and tokenized (`dmpo_trl.preparation.prepare_rows`) and, with `precompute_ref_log_probs`, their
        reference log-probs added. `name` is the split's name in messages (`"train"` uses the train batch size for
        the reference pass, any other name the eval one).

        Example:
        ```python
        >>> trainer.train_dataset = trainer.prepare_dataset(new_rows)  # doctest: +SKIP
        ```
        """
        dataset = self._prepare_dataset(dataset, self.processing_class, self.args, name)
        if self.precompute_ref_logps:
            per_device = (
                self.args.per_device_train_batch_size if name == "train" else self.args.per_device_eval_batch_size
            )
            dataset = self._precompute_ref_logps(dataset, name, self.args.precompute_ref_batch_size or per_device)
        return dataset

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """TRL's hook: `prepare_rows`, and the largest K kept for the width of precomputed reference log-probs."""
        pairwise_reason = self._pairwise_reason if self._pairwise_only else None
        dataset, largest_k = prepare_rows(dataset, processing_class, args, dataset_name, pairwise_reason)
        self._max_num_rejected = max(self._max_num_rejected, largest_k)
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
            log_aux_loss(self, mode, outputs.aux_loss)

        log_token_metrics(self, mode, inputs, outputs, chosen_tokens, rejected_tokens)
        log_reward_metrics(
            self, mode, self.beta, chosen_logps, rejected_logps, chosen_logratios, rejected_logratios, mask
        )
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
        inputs = prepare_inputs(self, inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        return loss.detach(), outputs.logits, self._one_row_per_sequence(inputs)["input_ids"]
