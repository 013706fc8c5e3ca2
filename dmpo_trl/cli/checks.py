"""Checks of what a command reads, made before anything loads: the files of a model path, an adapter's weights, and
whether a model's tokenizer decides the chat format."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from ..data import DATASETS
from ..models import resolve_model_path
from .errors import UsageError


__all__ = ["ADAPTER_WEIGHTS", "MODEL_JSON_FILES", "chat_template_decides", "check_adapter_weights", "model_files"]

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MODEL_JSON_FILES = (
    "config.json", "generation_config.json", "adapter_config.json", "preprocessor_config.json", "chat_template.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "ranker.json", "split.json",
)  # fmt: skip
"""The JSON files of a model folder that loading and ranking read; any other JSON file there is a result."""


def log_names() -> str:
    """The interaction logs a command reads, for its refusals."""
    return f"a registered log ({', '.join(sorted(DATASETS))}) or --interactions and --items files"


def chat_template_decides(model_name_or_path, gguf_file=None, trust_remote_code: bool = False) -> bool:
    """Whether the model's tokenizer has a chat template (what `conversational=None` means everywhere)."""
    path = resolve_model_path(model_name_or_path, gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    return getattr(tokenizer, "chat_template", None) is not None


def model_files(model: str | None, gguf_file: str | None = None) -> dict[str, str]:
    """The local files a model path loads, each named (for `check_output_path`): none for a Hub id or an embedded
    model. `UsageError` for a file that is not a .gguf."""
    if gguf_file and not model:
        return {gguf_file: "--gguf_file"}
    path = Path(model or "")
    if not model or not path.exists():
        return {}
    if not path.is_dir():
        if path.suffix.lower() != ".gguf":
            raise UsageError(f"--model_name_or_path {model}: a file; give a model folder, a .gguf file or a Hub id")
        return {model: "--model_name_or_path"}
    loaded = [f for f in path.iterdir() if f.is_file()]
    loaded = [f for f in loaded if f.suffix not in (".json", ".jsonl") or f.name in MODEL_JSON_FILES]
    return {str(f): f"the model's {f.name}" for f in sorted(loaded + list(path.glob("*.index.json")))}


def check_adapter_weights(model: str | None) -> None:
    """`UsageError` for an adapter folder without its weights, before the base model it names loads."""
    path = Path(model or "")
    if model and (path / "adapter_config.json").is_file() and not any((path / n).is_file() for n in ADAPTER_WEIGHTS):
        raise UsageError(f"{model}: adapter_config.json without the adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
