"""The `ranker.json` a trained run saves beside its model: the catalogue, the prompt settings and how the base model
loads; writing it, reading it back checked, and checking a run folder before any model loads.

Example:
```python
>>> import tempfile
>>> folder = save_ranker_config(tempfile.mkdtemp(), {"1": "Heat (1995)"}, PromptSettings(max_history=5)).parent
>>> read_ranker_config(folder)["prompt"]["max_history"]
5
```
"""

from __future__ import annotations

import json
import typing
from dataclasses import asdict
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download

from .journal import atomic_write_text
from .rows import _show
from .settings import PromptSettings


RANKER_FILE = "ranker.json"
"""What `Ranker.from_pretrained` reads in a run's output folder."""
RANKER_FORMAT = 1
"""The version of `ranker.json` this library writes and reads (a file without `format` is version 1)."""

# The `RecModelConfig` fields that say how the base model was loaded for training, so it is loaded the same way.
LOAD_FIELDS = (
    "model_name_or_path",
    "gguf_file",
    "model_revision",
    "dtype",
    "load_in_4bit",
    "load_in_8bit",
    "bnb_4bit_quant_type",
    "use_bnb_nested_quant",
    "attn_implementation",
    "trust_remote_code",
)
_BOOLLOAD_FIELDS = {"load_in_4bit", "load_in_8bit", "use_bnb_nested_quant", "trust_remote_code"}
# What a saved model's weights are called: a full model (one file or a sharded index), a LoRA adapter.
_MODEL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


_PROMPT_TYPES = typing.get_type_hints(PromptSettings)
_OPTIONAL_PROMPT = {"popularity_prior"}  # added within format 1: a file without it ranks without the prior, as then


def _fits(value: Any, kind: Any) -> bool:
    """`isinstance` for JSON values: a bool is no number, an int is a float."""
    if isinstance(value, bool):
        return bool in (kind, *typing.get_args(kind))
    return isinstance(value, (int, float) if kind is float else kind)


def save_ranker_config(
    output_dir: str | Path,
    titles: dict[str, str],
    prompt: PromptSettings,
    model_args: Any = None,
    origin: dict[str, Any] | None = None,
    dataset: str | None = None,
    popularity: dict[str, int] | None = None,
) -> Path:
    """Write `ranker.json` to `output_dir`: the catalogue, the prompt settings and how the base model loads, and
    each item's interaction count when `prompt.popularity_prior` ranks with them.

    Example:
    ```python
    >>> import tempfile
    >>> path = save_ranker_config(tempfile.mkdtemp(), {"1": "Heat (1995)"}, PromptSettings(max_history=5))
    >>> json.loads(path.read_text())["prompt"]["max_history"]
    5
    ```
    """
    if prompt.popularity_prior and popularity is None:
        raise ValueError("A popularity prior ranks with interaction counts: pass `popularity`")
    base = {name: getattr(model_args, name, None) for name in LOAD_FIELDS} if model_args is not None else {}
    catalogue = {"dataset": dataset, "titles": {str(k): v for k, v in titles.items()}}
    if prompt.popularity_prior:
        catalogue["popularity"] = {str(k): int(v) for k, v in sorted(popularity.items())}
    config = {
        "format": RANKER_FORMAT,
        "base_model": {**base, "use_peft": bool(getattr(model_args, "use_peft", False)), "origin": origin},
        "prompt": asdict(prompt),
        "catalogue": catalogue,
    }
    return atomic_write_text(Path(output_dir) / RANKER_FILE, json.dumps(config, indent=1, ensure_ascii=False) + "\n")


def read_ranker_config(folder: str | Path) -> dict[str, Any]:
    """`folder`'s `ranker.json`, checked: a `ValueError` naming the file and the field refuses a file that is not
    JSON (e.g. cut short), of another `format`, or with a key missing or of the wrong type.

    Example:
    ```python
    >>> import tempfile
    >>> folder = save_ranker_config(tempfile.mkdtemp(), {"1": "Heat (1995)"}, PromptSettings()).parent
    >>> read_ranker_config(folder)["catalogue"]["titles"]
    {'1': 'Heat (1995)'}
    ```
    """
    path = Path(folder) / RANKER_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} holds no {RANKER_FILE}: rank with a folder saved by `dmpo-trl train` or `run_recipe`"
        )
    try:
        config = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({error}); is it cut short? Save the run again") from None

    def check(value: Any, name: str, kind: Any) -> Any:
        if not _fits(value, kind):
            what = "a JSON object" if kind is dict else getattr(kind, "__name__", str(kind)).replace("None", "null")
            raise ValueError(f"{path}: `{name}` must be {what}, got {_show(value)}")
        return value

    check(config, "(top level)", dict)
    version = config.get("format", RANKER_FORMAT)
    if version != RANKER_FORMAT:
        raise ValueError(f"{path}: `format` is {version!r}; this version of dmpo-trl reads format {RANKER_FORMAT}")
    for key in ("base_model", "prompt", "catalogue"):
        if key not in config:
            raise ValueError(f"{path}: `{key}` is missing")
        check(config[key], key, dict)
    base, prompt, catalogue = config["base_model"], config["prompt"], config["catalogue"]
    for name in LOAD_FIELDS:
        check(base.get(name), f"base_model.{name}", (bool if name in _BOOLLOAD_FIELDS else str) | None)
    unknown = sorted(prompt.keys() - _PROMPT_TYPES.keys())
    if unknown:
        raise ValueError(f"{path}: `prompt.{unknown[0]}` is not a prompt setting ({', '.join(_PROMPT_TYPES)})")
    for name, kind in _PROMPT_TYPES.items():
        if name not in prompt and name not in _OPTIONAL_PROMPT:
            raise ValueError(f"{path}: `prompt.{name}` is missing")
        check(prompt.get(name, 0.0), f"prompt.{name}", kind)
    if prompt["batch_size"] < 1:
        raise ValueError(f"{path}: `prompt.batch_size` must be at least 1, got {prompt['batch_size']}")
    if "titles" not in catalogue:
        raise ValueError(f"{path}: `catalogue.titles` is missing")
    for key, kind in (("titles", str), ("popularity", int)):
        for item, value in check(catalogue.get(key, {}), f"catalogue.{key}", dict).items():
            check(value, f"catalogue.{key}.{item}", kind)
    if prompt.get("popularity_prior", 0.0) and "popularity" not in catalogue:
        raise ValueError(f"{path}: `catalogue.popularity` is missing; `prompt.popularity_prior` ranks with it")
    return config


def _model_folder(path: str | Path, download: bool = False) -> Path:
    """`path` as a local folder (downloaded from the Hub when `download` and no such path exists); refuses a file."""
    if download and not Path(path).exists():  # a Hub repo id, or a mistake
        try:
            path = snapshot_download(str(path))
        except Exception as error:
            raise FileNotFoundError(
                f"{path}: no such folder, nor a Hub repo that could be downloaded ({type(error).__name__})"
            ) from error
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such folder")
    if not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder saved by `dmpo-trl train` (its model and {RANKER_FILE})")
    return path


def _check_weights(folder: Path) -> None:
    """Refuse a model folder whose adapter or model weights are missing, before any model is loaded."""

    def has(*names: str) -> bool:
        return any((folder / name).is_file() for name in names)

    if has("adapter_config.json"):  # its base is `base_model` (a null name: the embedded default model)
        if not has(*_ADAPTER_WEIGHTS):
            raise ValueError(
                f"{folder}: adapter_config.json without the adapter's weights ({' or '.join(_ADAPTER_WEIGHTS)})"
            )
    elif not has("config.json"):
        raise ValueError(f"{folder}: neither a model (config.json) nor a LoRA adapter (adapter_config.json)")
    elif not has(*_MODEL_WEIGHTS):
        raise ValueError(f"{folder}: config.json without the model's weights ({', '.join(_MODEL_WEIGHTS)})")


def check_ranker_folder(path: str | Path, download: bool = False) -> tuple[Path, dict[str, Any]]:
    """The folder of a trained run and its checked `ranker.json` (`read_ranker_config`), its weights checked too:
    what `Ranker.from_pretrained` checks before any model loads. `download`: a Hub id that is no local path is
    downloaded first. A `ValueError` or `FileNotFoundError` names the file and what is wrong.

    Example:
    ```python
    >>> try:
    ...     check_ranker_folder("no/such/folder")
    ... except FileNotFoundError as error:
    ...     print(error)
    no/such/folder: no such folder
    ```
    """
    folder = _model_folder(path, download)
    config = read_ranker_config(folder)
    _check_weights(folder)
    return folder, config
