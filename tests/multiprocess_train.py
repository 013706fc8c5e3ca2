"""Trains DMPO on a tiny model in however many processes torchrun starts; rank 0 writes what happened as JSON.

Run by tests/test_multiprocess.py as `torchrun --nproc_per_node 2 tests/multiprocess_train.py OUT.json`.
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


def main(output_path: str) -> None:
    tokenizer = build_tokenizer()
    args = DMPOConfig(
        output_dir=os.path.dirname(output_path) or ".",
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        max_steps=4,
        bf16=False,
        use_cpu=True,  # on CPU, torchrun's processes form one gloo group only with use_cpu (or ACCELERATE_USE_CPU=1)
        gradient_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        learning_rate=1e-3,
    )
    trainer = DMPOTrainer(
        build_model(tokenizer),
        ref_model=build_model(tokenizer, seed=1),
        args=args,
        train_dataset=Dataset.from_list(ROWS),
        eval_dataset=Dataset.from_list(ROWS[:5]),
        processing_class=tokenizer,
    )
    trainer.train()
    metrics = trainer.evaluate()
    if trainer.accelerator.is_main_process:
        with open(output_path, "w") as f:
            json.dump(
                {"world_size": trainer.accelerator.num_processes, "log": trainer.state.log_history, "eval": metrics}, f
            )


if __name__ == "__main__":
    main(sys.argv[1])
