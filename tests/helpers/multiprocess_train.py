"""Trains DMPO on a tiny model in however many processes torchrun starts; rank 0 writes what happened as JSON.

Run by tests/distributed/test_multiprocess.py as
`torchrun --nproc_per_node 2 tests/helpers/multiprocess_train.py OUT.json [MODE]` (MODE: none for DDP, `2`/`3` for
DeepSpeed ZeRO at that stage, `fsdp` for FSDP2), and as `python tests/helpers/multiprocess_train.py OUT.json` for the
single-process run it is compared with: the global batch is 4 rows either way (4 // processes per process), so both
runs see the same rows in the same steps.

FSDP on CPU: `TrainingArguments(fsdp=...)` builds accelerate's FSDP plugin, but accelerate switches a launch to FSDP
only for GPU-type backends (CUDA, XPU, NPU...); a gloo CPU launch stays DDP. `seed_fsdp_state` initialises
accelerate's shared state the way a GPU launch would (distributed type FSDP, the Trainer's own plugin), so the
Trainer then runs accelerate's FSDP2 path unchanged (`fully_shard` over gloo).
"""

import json
import os
import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, TorchDynamoPlugin
from datasets import Dataset
from tiny_models import build_model, build_tokenizer
from torch.distributed.tensor import DTensor

from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl.distributed import end_process_group


ROWS = [
    {"prompt": "The user watched Heat. Next:", "chosen": " Casino", "rejected": [" Babe", " Jumanji", " Fargo"]},
    {"prompt": "The user watched Fargo. Next:", "chosen": " Heat", "rejected": [" Titanic"]},
    {"prompt": "The user watched Toy Story. Next:", "chosen": " Jumanji", "rejected": [" Star Wars", " Clueless"]},
] * 6


def seed_fsdp_state(args: DMPOConfig) -> None:
    """Set accelerate's shared state to FSDP with the plugin the Trainer builds from `args` (module docstring)."""
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    state = AcceleratorState(cpu=True, fsdp_plugin=plugin, dynamo_plugin=TorchDynamoPlugin(), _from_accelerator=True)
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def main(output_path: str, mode: str | None = None) -> None:
    tokenizer = build_tokenizer()
    deepspeed, zero_stage, fsdp = None, None, mode in ("fsdp", "fsdp-as-launched")
    if mode is not None and not fsdp:
        zero_stage = int(mode)
        deepspeed = {
            "zero_optimization": {"stage": zero_stage},
            **dict.fromkeys(
                ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"), "auto"
            ),
        }
    per_device = 4 // int(os.environ.get("WORLD_SIZE", "1"))
    args = DMPOConfig(
        output_dir=os.path.dirname(output_path) or ".",
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device,
        max_steps=4,
        bf16=False,
        use_cpu=True,  # on CPU, torchrun's processes form one gloo group only with use_cpu (or ACCELERATE_USE_CPU=1)
        gradient_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        learning_rate=1e-2,
        prefix_sharing=True,
        deepspeed=deepspeed,
        fsdp=fsdp or None,
        fsdp_config={"version": 2, "reshard_after_forward": True} if fsdp else None,
    )
    if mode == "fsdp":  # "fsdp-as-launched": what a CPU user gets, accelerate's state as torchrun left it
        seed_fsdp_state(args)
    trainer = DMPOTrainer(
        build_model(tokenizer),
        ref_model=build_model(tokenizer, seed=1),
        args=args,
        train_dataset=Dataset.from_list(ROWS),
        eval_dataset=Dataset.from_list(ROWS[:4]),
        processing_class=tokenizer,
    )
    shared = trainer.data_collator.share_prompt
    trainer.train()
    metrics = trainer.evaluate()
    if trainer.accelerator.is_main_process:
        record = {
            "world_size": trainer.accelerator.num_processes,
            "deepspeed": trainer.is_deepspeed_enabled,
            "fsdp": trainer.is_fsdp_enabled,
            # under FSDP each process holds a shard of the weights (DTensors), not a full copy
            "sharded": [n for n, p in trainer.model_wrapped.named_parameters() if isinstance(p, DTensor)],
            "parameters": [n for n, _ in trainer.model_wrapped.named_parameters()],
            "prefix_sharing": shared,
            "log": trainer.state.log_history,
            "eval": metrics,
        }
        with open(output_path, "w") as f:
            json.dump(record, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    end_process_group()
