"""Trains DMPO on a tiny model in however many processes torchrun starts; rank 0 writes what happened as JSON.

Run by tests/test_multiprocess.py as `torchrun --nproc_per_node 2 tests/multiprocess_train.py OUT.json [ZERO_STAGE]`
(DDP, or DeepSpeed ZeRO at that stage), and as `python tests/multiprocess_train.py OUT.json` for the single-process
run it is compared with: the global batch is 4 rows either way (4 // processes per process), so both runs see the
same rows in the same steps.
"""

import json
import os
import sys

from datasets import Dataset
from tiny_models import build_model, build_tokenizer

from dmpo_trl import DMPOConfig, DMPOTrainer


ROWS = [
    {"prompt": "The user watched Heat. Next:", "chosen": " Casino", "rejected": [" Babe", " Jumanji", " Fargo"]},
    {"prompt": "The user watched Fargo. Next:", "chosen": " Heat", "rejected": [" Titanic"]},
    {"prompt": "The user watched Toy Story. Next:", "chosen": " Jumanji", "rejected": [" Star Wars", " Clueless"]},
] * 6


def main(output_path: str, zero_stage: int | None = None) -> None:
    tokenizer = build_tokenizer()
    deepspeed = None
    if zero_stage is not None:
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
    )
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
            "prefix_sharing": shared,
            "log": trainer.state.log_history,
            "eval": metrics,
        }
        with open(output_path, "w") as f:
            json.dump(record, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
