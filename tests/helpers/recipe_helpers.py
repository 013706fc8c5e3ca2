"""A synthetic interaction log with short titles and the flags that run the recipe on it with a tiny model."""

from __future__ import annotations

import random
from pathlib import Path


def write_tiny_log(folder: Path, num_users: int = 24, num_items: int = 30, per_user: int = 7) -> tuple[str, str]:
    """Write `interactions.csv` and `items.csv` (titles "Heat <k>") to `folder`; return their paths."""
    rng = random.Random(0)
    items = [f"m{k}" for k in range(num_items)]
    lines = ["user_id,item_id,timestamp"]
    for u in range(num_users):
        for t, item in enumerate(rng.sample(items, per_user)):
            lines.append(f"u{u},{item},{t}")
    (folder / "interactions.csv").write_text("\n".join(lines) + "\n")
    (folder / "items.csv").write_text("item_id,title\n" + "\n".join(f"{i},Heat {i[1:]}" for i in items) + "\n")
    return str(folder / "interactions.csv"), str(folder / "items.csv")


def tiny_flags(log_files: tuple[str, str], model_dir, output_dir, *extra: str) -> list[str]:
    """`dmpo-trl train` flags for a seconds-long run: 8 train users, 5 test users, 4 candidates, K=2, 2 steps."""
    interactions, items = log_files
    return [
        "--interactions", interactions, "--items", items, "--model_name_or_path", str(model_dir),
        "--num_train_users", "8", "--num_valid_users", "0", "--num_test_users", "5", "--num_candidates", "4",
        "--num_negatives", "2", "--max_history", "3", "--max_steps", "2", "--per_device_train_batch_size", "4",
        "--learning_rate", "1e-2", "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
        "--activation_checkpointing", "false", "--no_show_progress", "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip
