"""What every `dmpo-trl` command sets up in its process before torch loads (`prepare_process`), and the quiet
import of a command's module (`quiet_import`)."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
from types import ModuleType

from ..quiet import quiet_third_party_output


__all__ = ["prepare_process", "quiet_import"]


def prepare_process() -> None:
    """Process settings for a command, applied before torch loads.

    - `OMP_WAIT_POLICY=PASSIVE` (unless set): OpenMP threads sleep instead of spinning at each barrier. On a
      machine where other processes also use the cores, spinning threads wait for a descheduled sibling and a
      2-thread forward pass runs several times slower than with one thread; sleeping threads cost next to nothing
      when the machine is idle.
    - Third-party notices a user cannot act on are hidden (`dmpo_trl.quiet`); ours stay.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    quiet_third_party_output()


def quiet_import(name: str) -> ModuleType:
    """Import the module `name` (a command's, which imports torch, transformers and TRL) without letting a library
    print to stdout while it loads: transformers prints "[INFO] Running in WANDB offline mode" when its integrations
    load under `WANDB_MODE=offline`, a notice of the user's own setting that would come before a refusal's one line.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        return importlib.import_module(name)
