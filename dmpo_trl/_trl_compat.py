"""Every private TRL, transformers or `datasets` name dmpo-trl uses, in one place, each with what it is for.

Checked against TRL 1.16.0, transformers 5.25.0, peft 0.21.2 and datasets 5.2.0: when a release renames one of these,
change this file (and the hooks listed below).

Private names read or called here:

- `trl.data_utils._tokenize`: `tokenize`
- `Dataset._fingerprint` (datasets): `dataset_fingerprint`
- `DPOTrainer._metrics`, `_total_train_tokens`, `_tp_size` (TRL): `trainer_metrics`, `count_train_tokens`
- `Trainer._prepare_inputs` (transformers): `prepare_inputs`
- `PretrainedConfig._attn_implementation` (transformers): `attention_implementation`
- `PreTrainedModel._can_record_outputs["router_logits"]` (transformers): `router_logits_recorder`
- `load_balancing_loss_func` of an MoE modeling module (transformers): `load_balancing_loss`
- the modeling source of a model class (transformers): `takes_mask_per_layer_type`

TRL / transformers hooks `DMPOTrainer` (`dmpo_trl.trainer`) overrides by name, calling the parent's where it extends
it (subclassing, not reaching in):

- `DPOTrainer._prepare_dataset` (tokenize K-response rows), `DPOTrainer._precompute_ref_logps` (the reference pass,
  after settling prefix sharing), `DPOTrainer._compute_loss` (the K-response losses), `Trainer._get_dataloader`
  (no batch dispatching), `Trainer._save` (weights readable as the umask allows);
- `DPOTrainer._precompute_model_hash`, a property: TRL sets it to the hash of the reference model and keys the cache
  of precomputed reference log-probs on it; `DMPOTrainer` gives back that hash joined with the settings that change
  the stored values (`DMPOTrainer.precompute_settings`);
- the class attributes `_tag_names`, `_name` and `_paper` (the model card's tags, trainer name and citation).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

import torch
from trl.data_utils import _tokenize


def tokenize(processing_class: Any, value: Any, **kwargs: Any) -> dict[str, Any]:
    """Token ids of a text or message list as TRL's trainers make them (`trl.data_utils._tokenize`, TRL 1.16): plain
    text through the tokenizer, messages through the chat template (`add_generation_prompt`, `tools` and other chat
    template arguments as keywords)."""
    return _tokenize(processing_class, value, **kwargs)


def dataset_fingerprint(dataset: Any) -> str:
    """The `datasets` fingerprint of a map-style `Dataset` (`Dataset._fingerprint`, datasets 5.2): the cache key its
    transforms build on, which the trainer's tokenized fingerprint extends."""
    return dataset._fingerprint


def trainer_metrics(trainer: Any, mode: str) -> dict[str, list]:
    """The lists TRL's `DPOTrainer.log` averages and logs (`DPOTrainer._metrics[mode]`, TRL 1.16), for `"train"` or
    `"eval"`: the trainer appends its per-step values to them."""
    return trainer._metrics[mode]


def count_train_tokens(trainer: Any, num_tokens: int) -> int:
    """Add `num_tokens` (gathered over all processes) to TRL's running count of training tokens and return the total.

    TRL 1.16 keeps the count in `DPOTrainer._total_train_tokens` and divides by `DPOTrainer._tp_size` (tensor-parallel
    ranks see the same batch, so a gathered count repeats each token once per rank).
    """
    trainer._total_train_tokens += num_tokens // trainer._tp_size
    return trainer._total_train_tokens


def prepare_inputs(trainer: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """A batch moved to the trainer's device as `Trainer.training_step` moves it (`Trainer._prepare_inputs`,
    transformers 5.25), for `prediction_step`."""
    return trainer._prepare_inputs(inputs)


def attention_implementation(model: Any) -> str | None:
    """The attention implementation a model runs (`"eager"`, `"sdpa"`, `"flex_attention"`, ...): transformers 5.25
    keeps it in `config._attn_implementation` and has no public getter (only `set_attn_implementation`)."""
    return getattr(model.config, "_attn_implementation", None)


def router_logits_recorder(model: Any) -> tuple[type, int] | None:
    """The module class whose output is an MoE router's logits, and the index of the logits in that output: what
    transformers 5.25 records as `router_logits` (`PreTrainedModel._can_record_outputs["router_logits"]`, an
    `OutputRecorder` or a bare class). None for a model that records no router logits."""
    recorder = (getattr(model, "_can_record_outputs", None) or {}).get("router_logits")
    if recorder is None:
        return None
    if hasattr(recorder, "target_class"):
        return recorder.target_class, recorder.index
    return recorder, 0


def load_balancing_loss(model: Any) -> Callable[..., torch.Tensor]:
    """The MoE router load-balancing loss of `model`'s architecture: the `load_balancing_loss_func` of its modeling
    module (transformers 5.25 defines one per MoE architecture, not exported), which takes per-token weights where it
    takes the 2D attention mask."""
    return sys.modules[type(model).__module__].load_balancing_loss_func


@functools.cache
def _modeling_source(model_class: type) -> str:
    module = inspect.getmodule(model_class)
    try:
        return inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        return ""


def takes_mask_per_layer_type(model_class: type) -> bool:
    """Whether the architecture's forward accepts a dict of 4D masks keyed by layer type and uses each as given.

    Transformers 5.25 exposes no attribute or config field for this: the models that mix full and sliding-window
    layers (Gemma 2/3, Qwen2/3 with `layer_types`, ...) take the dict through `causal_mask_mapping := attention_mask`
    in their modeling code, so the source of the class's modeling module is the only place that says so.
    """
    return "causal_mask_mapping := attention_mask" in _modeling_source(model_class)
