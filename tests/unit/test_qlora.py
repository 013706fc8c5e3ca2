"""Model setups for training: 4-bit QLoRA on CPU (bitsandbytes NF4), LoRA, full; adapters save, reload and merge."""

import importlib.util
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl import ModelConfig

from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl.models import (
    RecModelConfig,
    adapters_to_dtype,
    default_dtype,
    get_peft_config,
    get_quantization_config,
    load_adapter_model,
    load_model_for_training,
    resolve_dtype,
)


ROWS = [
    {"prompt": "The user watched Heat. Next:", "chosen": " Casino", "rejected": [" Babe", " Jumanji", " Fargo"]},
    {"prompt": "The user watched Fargo, Babe. Next:", "chosen": " Heat", "rejected": [" Titanic"]},
    {"prompt": "The user watched Toy Story. Next:", "chosen": " Jumanji", "rejected": [" Star Wars", " Clueless"]},
]
needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")


def train_args(tmp_path, **overrides):
    settings = dict(
        max_steps=2,
        per_device_train_batch_size=3,
        learning_rate=5e-2,
        bf16=False,
        activation_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    return DMPOConfig(str(tmp_path / "out"), **{**settings, **overrides})


def test_one_switch_turns_on_qlora():
    args = RecModelConfig(load_in_4bit=True)
    assert args.use_peft and args.use_bnb_nested_quant and args.lora_target_modules == "all-linear"
    assert RecModelConfig(load_in_4bit=True, lora_target_modules=["q_proj"]).lora_target_modules == "q_proj"


def test_dtype_for_the_device():
    assert default_dtype("cpu") == torch.float32
    assert resolve_dtype(RecModelConfig(), "cpu") == torch.float32
    assert resolve_dtype(RecModelConfig(dtype="bfloat16"), "cpu") == torch.bfloat16
    assert resolve_dtype(RecModelConfig(dtype="auto")) == "auto"
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        assert default_dtype("cuda") == expected
        assert default_dtype("cuda", trainable_weights=True) == torch.float32


@needs_bnb
def test_quantization_config_is_nf4_with_double_quant():
    config = get_quantization_config(RecModelConfig(load_in_4bit=True), device="cpu")
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.float32  # CPU
    assert get_quantization_config(RecModelConfig(load_in_4bit=True, dtype="bfloat16")).bnb_4bit_compute_dtype == (
        torch.bfloat16
    )
    assert get_quantization_config(RecModelConfig()) is None


def test_peft_config_from_model_config():
    config = get_peft_config(RecModelConfig(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0))
    assert (config.r, config.lora_alpha, config.lora_dropout, config.target_modules) == (4, 8, 0.0, "all-linear")
    assert config.task_type == "CAUSAL_LM"


def test_quantized_weights_need_adapters(tiny_model_dir):
    with pytest.raises(ValueError, match="use_peft"):
        load_model_for_training(ModelConfig(model_name_or_path=str(tiny_model_dir), load_in_4bit=True))


def test_missing_adapter_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter_model(tmp_path)


@needs_bnb
def test_qlora_trains_saves_reloads_and_merges(tiny_model_dir, tmp_path):
    model_args = RecModelConfig(model_name_or_path=str(tiny_model_dir), load_in_4bit=True, lora_r=4, lora_alpha=8)
    model, tokenizer, peft_config = load_model_for_training(model_args)
    assert model.is_loaded_in_4bit
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    assert model.config.quantization_config.bnb_4bit_use_double_quant
    assert model.model.embed_tokens.weight.dtype == torch.float32  # prepare_model_for_kbit_training
    trainer = DMPOTrainer(
        model,
        args=train_args(tmp_path),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    adapters_to_dtype(trainer.model)
    inputs = tokenizer("The user watched Heat. Next: Casino", return_tensors="pt")
    trainer.model.eval()
    with torch.no_grad():  # ranking before training runs inference like this (bitsandbytes must not repack on CPU)
        untrained = trainer.model(**inputs).logits
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert changed  # the adapters trained
    trainer.save_model(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()  # the adapter only

    trainer.model.eval()
    with torch.no_grad():
        trained = trainer.model(**inputs).logits
        with trainer.model.disable_adapter():
            torch.testing.assert_close(trainer.model(**inputs).logits, untrained, atol=1e-6, rtol=0)
    assert (trained - untrained).abs().max() > 1e-3  # the adapter matters, so the checks below mean something

    reloaded, reloaded_tokenizer = load_adapter_model(tmp_path / "adapter", model_args)
    assert reloaded_tokenizer.pad_token == tokenizer.pad_token
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, trained, atol=1e-5, rtol=0)

    merged, _ = load_adapter_model(tmp_path / "adapter", model_args, merge=True)
    assert not getattr(merged, "is_quantized", False) and not hasattr(merged, "peft_config")
    assert type(merged.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    with torch.no_grad():
        # the merged weights are the dequantized NF4 weights plus the adapter: what the QLoRA model computed, up
        # to the rounding of bitsandbytes' 4-bit matmul (the plain base model differs by the quantization error)
        torch.testing.assert_close(merged(**inputs).logits, trained, atol=2e-2, rtol=0)
    merged.save_pretrained(tmp_path / "merged")
    from transformers import AutoModelForCausalLM

    again = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert getattr(again.config, "quantization_config", None) is None
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs).logits, merged(**inputs).logits, atol=1e-6, rtol=0)


def test_lora_adapter_merges_into_the_original_weights(tiny_model_dir, tmp_path):
    model_args = RecModelConfig(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4, lora_alpha=8)
    model, tokenizer, peft_config = load_model_for_training(model_args)
    assert not getattr(model, "is_quantized", False) and model.dtype == torch.float32
    trainer = DMPOTrainer(
        model,
        args=train_args(tmp_path),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "adapter"))
    inputs = tokenizer("The user watched Fargo. Next: Heat", return_tensors="pt")
    trainer.model.eval()
    with torch.no_grad():
        trained = trainer.model(**inputs).logits
    merged, _ = load_adapter_model(tmp_path / "adapter", merge=True)  # the base named in the adapter's config
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, trained, atol=1e-5, rtol=0)


@needs_bnb
def test_gpu_check_tiny_path(tmp_path, capsys):
    """benchmarks/gpu_check.py: random checkpoint in bf16 shards -> 4-bit load -> one DMPO step (CPU stand-in)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--tiny"):
            gpu_check.run_check(tiny=False)
    assert gpu_check.main(["--tiny", "--skip-throughput", "--workdir", str(tmp_path), "--json"]) == 0
    out = capsys.readouterr().out
    assert "one DMPOTrainer step: loss 0.6931" in out and "K=4" in out
    shards = sorted((tmp_path / "random-llama").glob("model-*.safetensors"))
    assert len(shards) == 3  # two layers + embeddings/head/norm, written one at a time
    result = gpu_check.preference_row(4, 512, 32, 32000)
    tokenizer = gpu_check.build_tokenizer(32000, tmp_path / "tok")
    assert len(tokenizer(result["prompt"])["input_ids"]) == 480
    assert [len(tokenizer(r)["input_ids"]) + 1 for r in [result["chosen"], *result["rejected"]]] == [32] * 5


@pytest.mark.slow
def test_gpu_check_throughput_table_tiny():
    """benchmarks/gpu_check.py's throughput table on tiny Llamas: the layouts train and compare side by side."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    results = gpu_check.run_throughput(tiny=True, layouts=("shared", "unshared", "trl_pairs"))
    by_layout = {r["layout"]: r for r in results}
    assert by_layout["shared"]["packed"] and not by_layout["unshared"]["packed"]
    # the same 4 rows per step: the packed layout feeds the fewest tokens, TRL's pairs the most
    assert by_layout["shared"]["tokens_per_step"] < by_layout["unshared"]["tokens_per_step"]
    assert by_layout["unshared"]["tokens_per_step"] < by_layout["trl_pairs"]["tokens_per_step"]
    table = gpu_check.throughput_table(results)
    assert "| shared | sdpa |" in table and "1.00x" in table and table.count("\n") == len(results) + 1
