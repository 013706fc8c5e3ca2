"""Multi-process helpers: which process this is under a torchrun/accelerate launch, waiting, gathering, and leaving
the group.

Every other module reaches the process group through these functions.

Example:
```python
>>> process_rank()  # without a launch: one process
(0, 1)
```
"""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import gather_object


def process_rank() -> tuple[int, int]:
    """(rank, number of processes) under an accelerate/torchrun launch; (0, 1) otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    state = PartialState(cpu=not torch.cuda.is_available())  # on CPU the processes form a gloo group
    return state.process_index, state.num_processes


def wait_for_everyone() -> None:
    """Block until every process of the launch reaches this line (a no-op in one process)."""
    if process_rank()[1] > 1:
        PartialState().wait_for_everyone()


def local_process_index() -> int:
    """This process's index on its machine: the GPU it owns under a launch; 0 in one process."""
    return PartialState().local_process_index


def gather_objects(value: Any) -> list[Any]:
    """Every process's `value`, in process order: `[value]` in one process (accelerate's `gather_object` under a
    launch; every process gets the whole list).

    Example:
    ```python
    >>> gather_objects({"a": 1})
    [{'a': 1}]
    ```
    """
    if process_rank()[1] <= 1:
        return [value]
    return gather_object([value])


def end_process_group() -> None:
    """Leave the process group a torchrun/accelerate launch formed, if any (a no-op otherwise).

    A process that exits still in a gloo group can abort at interpreter shutdown ("terminate called without an
    active exception"), when gloo's worker threads are torn down after Python; the `dmpo-trl` commands call this
    before they return.

    Example:
    ```python
    >>> end_process_group()  # the last line of a script run under torchrun; without a launch nothing happens
    ```
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
