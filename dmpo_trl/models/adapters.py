"""LoRA/QLoRA adapters on their base model: reloading a trained adapter (`load_adapter_model`), the base model a
run's `ranker.json` records (`base_model_args`), and naming an embedded base model by its Hub id in the saved adapter
config (`name_base_model_by_hub_id`).

Example:
```python
>>> name_base_model_by_hub_id(torch.nn.Linear(2, 2), None)  # no adapter: nothing to name
```
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from trl import ModelConfig

from ..ranker_file import LOAD_FIELDS, read_ranker_config
from .embedded import embedded_model, ensure_pad_token, resolve_model_path, strip_quantization
from .loading import RecModelConfig, load_model_for_training


def name_base_model_by_hub_id(model: torch.nn.Module, model_name_or_path=None, gguf_file=None) -> None:
    """Make the adapter config that peft saves (`adapter_config.json`) name an embedded base model by its Hub id.

    Left alone, peft records the folder the embedded GGUF was converted into on the training machine, which neither
    PEFT nor the Hub can find elsewhere. A model that is not embedded, or has no adapter, is left as it is.

    Example:
    ```python
    >>> name_base_model_by_hub_id(peft_model, None)  # doctest: +SKIP
    >>> peft_model.peft_config["default"].base_model_name_or_path  # doctest: +SKIP
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    ```
    """
    embedded = embedded_model(model_name_or_path) if gguf_file is None else None
    if embedded is None:
        return
    for config in (getattr(model, "peft_config", None) or {}).values():
        config.base_model_name_or_path = embedded.hub_id


def base_model_args(config: dict[str, Any], cache_dir: str | Path | None = None, **overrides: Any):
    """The `RecModelConfig` that loads the base model a run's adapter was trained on, from its checked `ranker.json`
    (`read_ranker_config`): the exact weights (an embedded model's GGUF, converted into `cache_dir`), not the Hub id
    the adapter config names. `overrides` replace saved fields (e.g. `dtype`).

    Example:
    ```python
    >>> base_model_args({"base_model": {"model_name_or_path": "org/model", "load_in_4bit": True}}).load_in_4bit
    True
    ```
    """
    load = {k: v for k, v in config["base_model"].items() if k in LOAD_FIELDS and v is not None}
    load.update({k: v for k, v in overrides.items() if v is not None})
    load["model_name_or_path"] = resolve_model_path(
        load.pop("model_name_or_path", None), load.pop("gguf_file", None), cache_dir
    )
    return RecModelConfig(**load, use_peft=True)


def load_adapter_model(
    adapter_dir: str | Path,
    model_args: ModelConfig | None = None,
    merge: bool = False,
    trust_remote_code: bool = False,
    **model_kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Reload a trained LoRA/QLoRA adapter on its base model; `merge=True` folds it into the weights.

    The base model is loaded as `model_args` says (default: the base model a run folder's `ranker.json` records, the
    exact weights it trained on, else the adapter's `base_model_name_or_path`; unquantized, in the device's default
    dtype). Load it in 4-bit (`load_in_4bit=True`) to get back exactly the QLoRA model that
    was trained. Merging needs plain weights: with `merge=True` a 4-bit base is dequantized first and the adapter is
    folded into those weights, so the merged model computes what the QLoRA model computed (up to rounding) and saves
    as an ordinary checkpoint; an unquantized base merges into its original weights. The tokenizer comes from
    `adapter_dir` when it was saved there (`trainer.save_model` does), else from the base model.

    Example:
    ```python
    >>> trainer.save_model("out")  # doctest: +SKIP
    >>> merged, tokenizer = load_adapter_model("out", merge=True)  # doctest: +SKIP
    >>> merged.save_pretrained("out-merged")  # doctest: +SKIP
    ```
    """
    from peft import PeftConfig, PeftModel  # peft takes seconds to import: loaded on use

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir} holds no adapter_config.json (save it with trainer.save_model)")
    named = model_args is not None and (model_args.model_name_or_path or getattr(model_args, "gguf_file", None))
    if not named:
        if (adapter_dir / "ranker.json").is_file():  # a run folder: the exact base it trained on, not the Hub id
            base = base_model_args(read_ranker_config(adapter_dir)).model_name_or_path
        else:
            base = PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path
        model_args = replace(model_args or RecModelConfig(use_peft=True), model_name_or_path=base)
    model, tokenizer, _ = load_model_for_training(model_args, trust_remote_code=trust_remote_code, **model_kwargs)
    if merge and getattr(model, "is_quantized", False):
        model = strip_quantization(model.dequantize())
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    if (adapter_dir / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir), trust_remote_code=trust_remote_code)
        ensure_pad_token(tokenizer)
    if merge:
        model = model.merge_and_unload()
    model.eval()
    return model, tokenizer
