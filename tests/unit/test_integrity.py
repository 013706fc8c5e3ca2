"""Integrity of what the library writes and reads: safetensors checkpoints, no pickles loaded unsafely, no remote code
unless asked, and a GGUF conversion cache keyed by the file's content."""

import ast
import json
import os
import threading
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from recipe_helpers import tiny_flags, write_tiny_log
from safetensors.torch import load_file
from tiny_models import build_model, save_tiny

import dmpo_trl
from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl.cli import main
from dmpo_trl.models import (
    RecModelConfig,
    _is_converted,
    conversion_lock,
    file_sha256,
    gguf_source,
    load_adapter_model,
    load_model_and_tokenizer,
    resolve_model_path,
)


PACKAGE = Path(dmpo_trl.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
ROWS = [
    {"prompt": "The user watched Heat. Next:", "chosen": " Casino", "rejected": [" Babe", " Fargo"]},
    {"prompt": "The user watched Fargo. Next:", "chosen": " Heat", "rejected": [" Titanic"]},
]
PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def calls(name: str):
    """(file, line, call) for every call of `<something>.<name>(...)` or `<name>(...)` in the package's source."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    yield path.relative_to(PACKAGE.parent), node.lineno, node


def keyword(call: ast.Call, name: str):
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


# --- pickles ------------------------------------------------------------------------------------------------------


def test_no_unsafe_unpickling_in_the_library():
    """`torch.load` only with weights_only=True, and no pickle/dill/joblib loads at all."""
    for where, line, call in calls("load"):
        func = call.func
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        assert owner not in {"pickle", "dill", "joblib", "cloudpickle"}, f"{where}:{line} unpickles"
        if owner == "torch":
            value = keyword(call, "weights_only")
            safe = isinstance(value, ast.Constant) and value.value is True
            assert safe, f"{where}:{line} torch.load without weights_only=True"


@pytest.fixture(scope="module")
def spy_torch_load():
    """Records every `torch.load` call (and still makes it), so a test can assert that none happened."""
    seen = []
    original = torch.load

    def recording(*args, **kwargs):
        seen.append((args[:1], kwargs.get("weights_only")))
        return original(*args, **kwargs)

    torch.load = recording
    yield seen
    torch.load = original


def trained(tokenizer, output_dir):
    """A tiny model after one DMPO step, saved by the trainer to `output_dir`."""
    args = DMPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=2, report_to=[], max_steps=1, learning_rate=1e-2,
        save_strategy="no",
    )  # fmt: skip
    trainer = DMPOTrainer(
        build_model(tokenizer),
        ref_model=build_model(tokenizer, seed=1),
        args=args,
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(output_dir))
    return trainer


def weight_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix in (".safetensors", *PICKLED_WEIGHTS))


def test_trainer_saves_safetensors_and_the_library_reloads_without_torch_load(tokenizer, tmp_path, spy_torch_load):
    trainer = trained(tokenizer, tmp_path)
    # Trainer also writes training_args.bin (its arguments, not weights), which the library never loads
    assert weight_files(tmp_path) == ["model.safetensors", "training_args.bin"]
    saved = load_file(tmp_path / "model.safetensors")
    spy_torch_load.clear()
    model, _ = load_model_and_tokenizer(tmp_path)
    assert spy_torch_load == []
    for name, value in model.state_dict().items():
        if name in saved:
            torch.testing.assert_close(value, saved[name], rtol=0, atol=0)
    torch.testing.assert_close(model.lm_head.weight, trainer.model.lm_head.weight.detach(), rtol=0, atol=0)


def test_adapter_is_saved_as_safetensors_and_reloads_without_torch_load(tokenizer, tmp_path, spy_torch_load):
    base = save_tiny(tmp_path / "base")
    output = tmp_path / "out"
    trainer = DMPOTrainer(
        load_model_and_tokenizer(base)[0],
        args=DMPOConfig(
            output_dir=str(output),
            per_device_train_batch_size=2,
            report_to=[],
            max_steps=1,
            learning_rate=1e-2,
            save_strategy="no",
        ),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.train()
    trainer.save_model(str(output))
    assert weight_files(output) == ["adapter_model.safetensors", "training_args.bin"]
    spy_torch_load.clear()
    model, _ = load_adapter_model(output, RecModelConfig(model_name_or_path=str(base), use_peft=True), merge=True)
    assert spy_torch_load == []
    inputs = tokenizer("The user watched Heat.", return_tensors="pt")
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, trainer.model(**inputs).logits, rtol=1e-5, atol=1e-5)


def test_train_command_saves_safetensors(tiny_model_dir, tmp_path):
    log_files = write_tiny_log(tmp_path)
    flags = tiny_flags(log_files, tiny_model_dir, tmp_path / "out", "--use_peft", "--no_evaluate_before")
    assert main(["train", *flags, "--num_test_users", "2"]) == 0
    assert weight_files(tmp_path / "out") == ["adapter_model.safetensors", "training_args.bin"]


# --- remote code --------------------------------------------------------------------------------------------------


def test_every_from_pretrained_in_the_library_passes_trust_remote_code():
    """Each tokenizer/model/processor load states `trust_remote_code` (PEFT's adapter loads read no code)."""
    checked = 0
    for where, line, call in calls("from_pretrained"):
        owner = call.func.value.id if isinstance(call.func.value, ast.Name) else ""
        if owner in {"PeftConfig", "PeftModel"}:
            continue
        assert keyword(call, "trust_remote_code") is not None, f"{where}:{line} {owner}.from_pretrained"
        checked += 1
    assert checked >= 6


def custom_code_model(directory: Path, sentinel: Path) -> Path:
    """A tiny Llama whose config maps AutoModelForCausalLM to code in the folder; importing it writes `sentinel`."""
    save_tiny(directory)
    (directory / "custom_llama.py").write_text(
        "from pathlib import Path\n"
        "from transformers import LlamaForCausalLM\n"
        f"Path({str(sentinel)!r}).write_text('the model folder ran code')\n"
        "class CustomLlama(LlamaForCausalLM):\n"
        "    pass\n"
    )
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "custom_llama.CustomLlama"}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_model_code_runs_only_when_asked(tmp_path, monkeypatch, fresh_remote_code_modules):
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # keep the user's cache clean
    sentinel = tmp_path / "ran"
    directory = custom_code_model(tmp_path / "model", sentinel)
    model, _ = load_model_and_tokenizer(directory)
    assert type(model).__name__ == "LlamaForCausalLM" and not sentinel.exists()
    model, _ = load_model_and_tokenizer(directory, trust_remote_code=True)  # the same folder, now trusted
    assert type(model).__name__ == "CustomLlama" and sentinel.exists()


# --- GGUF conversion cache ----------------------------------------------------------------------------------------


def fake_conversion(gguf: Path, cache_dir: Path) -> Path:
    """A cache entry as `convert_gguf` leaves it (the source record beside the checkpoint), without converting."""
    target = cache_dir / gguf.stem
    target.mkdir(parents=True)
    (target / "dmpo_trl_source.json").write_text(json.dumps(gguf_source(gguf)))
    return target


def test_gguf_cache_is_keyed_by_content_not_size(tmp_path):
    first, second = tmp_path / "a" / "model.gguf", tmp_path / "b" / "model.gguf"
    for path, byte in ((first, b"\x01"), (second, b"\x02")):
        path.parent.mkdir()
        path.write_bytes(b"GGUF" + byte * (3 << 20))  # 3 MiB and a bit: several 1 MiB blocks, the same size
    assert first.stat().st_size == second.stat().st_size and file_sha256(first) != file_sha256(second)
    cache = tmp_path / "cache"
    target = fake_conversion(first, cache)
    assert json.loads((target / "dmpo_trl_source.json").read_text())["sha256"] == file_sha256(first)
    assert _is_converted(target, first)
    assert not _is_converted(target, second)  # a re-quantised or re-downloaded file of the same size
    assert resolve_model_path(first, cache_dir=cache) == str(target)  # found in the cache: no conversion
    os.replace(second, first)  # the same path, now other bytes of the same size
    assert not _is_converted(target, first)


def test_gguf_cache_records_without_a_hash_are_converted_anew(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" * 1000)
    target = tmp_path / "cache" / "model"
    target.mkdir(parents=True)
    marker = target / "dmpo_trl_source.json"
    marker.write_text(json.dumps({"gguf_file": str(gguf), "size": gguf.stat().st_size}))  # an older cache
    assert not _is_converted(target, gguf)
    marker.write_text("{not json")
    assert not _is_converted(target, gguf)


def test_a_conversion_under_way_elsewhere_is_waited_for_not_repeated(tmp_path):
    """A second process starting while the first converts waits for it and reads its result (before the lock, it
    converted again and deleted the first one's cache while that one was loading it)."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" * 1000)  # not a real GGUF: a conversion attempt would raise
    cache = tmp_path / "cache"
    found: list[object] = []
    with conversion_lock(cache / gguf.stem):  # the other process, converting
        waiting = threading.Thread(target=lambda: found.append(resolve_model_path(gguf, cache_dir=cache)))
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive() and not found  # it waits on the lock
        target = fake_conversion(gguf, cache)  # the other process finishes
    waiting.join(timeout=30)
    assert found == [str(target)]
