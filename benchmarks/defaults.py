"""The environment defaults of the studies that train and rank on this machine's CPUs."""

import os


def set_quiet_offline_defaults() -> None:
    """Hub offline, no tqdm bars, passive OpenMP threads (spinning ones slow a shared machine several-fold).

    Only where the variable is unset; call it before numpy or torch is imported.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
