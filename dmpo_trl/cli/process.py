"""What every `dmpo-trl` command sets up in its process before torch loads (`prepare_process`)."""

from __future__ import annotations

import os
import sys

from ..quiet import quiet_third_party_output


__all__ = ["prepare_process"]


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
