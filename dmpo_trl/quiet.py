"""Keep a command's output to what its user can act on: hide third-party notices they cannot, keep ours.

`dmpo-trl` commands call `quiet_third_party_output()` before they import torch. It hides:

- deprecation notices (`DeprecationWarning`, `PendingDeprecationWarning`, `FutureWarning`) raised from other
  packages' code, e.g. transformers' "`is_gradient_checkpointing` is deprecated" when TRL calls it: they are for
  those packages' maintainers. The same warnings raised from `dmpo_trl` still show;
- torch's "'pin_memory' argument is set as true but no accelerator is found" (pinning is a no-op on such a machine)
  and tqdm's "IProgress not found" (plain progress bars work);
- DeepSpeed's "Setting accelerator to CPU" line, logged when a library imports DeepSpeed on a machine without a GPU;
- bitsandbytes' notice that an optional CPU kernel package is missing (it falls back by itself), and the `kernels`
  package's notice, when bitsandbytes looks that kernel up offline, that it skips the publisher check.

Warnings from `dmpo_trl` itself, and every error, are untouched.

Example:
```python
>>> import warnings
>>> with warnings.catch_warnings(record=True) as caught:
...     quiet_third_party_output()
...     warnings.warn_explicit("old API", FutureWarning, "x.py", 1, module="transformers.modeling_utils")
...     warnings.warn_explicit("ours", FutureWarning, "y.py", 1, module="dmpo_trl.recipe")
>>> [str(w.message) for w in caught]
['ours']
```
"""

from __future__ import annotations

import logging
import warnings


__all__ = ["quiet_third_party_output"]

_HIDDEN_MESSAGES = (
    (UserWarning, r".*'pin_memory' argument is set as true but no accelerator is found"),
    (Warning, r"IProgress not found"),
)
"""(category, message pattern) of third-party warnings hidden wherever they come from."""

_HIDDEN_LOG_LINES = {
    "DeepSpeed": "Setting accelerator to CPU",
}
"""Logger name -> the start of a line it logs that is hidden."""

_QUIET_LOGGERS = ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub")
"""Loggers whose notices below ERROR are hidden."""


class _DropLines(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefix)


def quiet_third_party_output() -> None:
    """Hide the third-party warnings and log lines listed in this module's docstring; ours keep showing.

    Safe to call more than once. Call it before the libraries are imported: some log at import time.
    """
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("default", category=category, module=r"dmpo_trl(\.|$)")  # inserted first: wins
    for category, message in _HIDDEN_MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, prefix in _HIDDEN_LOG_LINES.items():
        logger = logging.getLogger(name)  # the same object the library configures when it is imported later
        if not any(isinstance(f, _DropLines) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropLines(prefix))
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
