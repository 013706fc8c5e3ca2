"""What every results file records about how it was made: library versions, the git commit, the model's origin.

Example:
```python
>>> from dmpo_trl.provenance import provenance
>>> record = provenance("HuggingFaceTB/SmolLM2-135M-Instruct")
>>> sorted(record)
['dmpo_trl', 'git', 'libraries', 'model_origin', 'python']
>>> record["model_origin"]["hub_id"]
'HuggingFaceTB/SmolLM2-135M-Instruct'
```
"""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .models import model_origin
from .version import __version__


__all__ = ["LIBRARIES", "git_state", "library_versions", "provenance"]

LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers")
"""The installed packages whose versions a results file records."""


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions of `names` (`None` for one that is not installed).

    Example:
    ```python
    >>> library_versions(("trl", "no-such-package"))["no-such-package"] is None
    True
    ```
    """
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=8)
def git_state(directory: str | Path | None = None) -> dict[str, Any] | None:
    """`{"commit": HEAD, "dirty": uncommitted changes}` of the git checkout holding `directory` (default: this
    package's source, when it is installed from a checkout), or `None` outside a checkout or without git.

    Example:
    ```python
    >>> state = git_state()  # doctest: +SKIP
    >>> len(state["commit"]), state["dirty"]  # doctest: +SKIP
    (40, False)
    ```
    """
    package = Path(__file__).resolve().parent
    cwd = Path(directory) if directory is not None else package
    if directory is None:  # this package's own checkout, not a repository that merely holds an environment
        top = _git("rev-parse", "--show-toplevel", cwd=cwd)
        if top is None or (Path(top) / package.name).resolve() != package:
            return None
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if not commit:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def provenance(model: Any = None, gguf_file: str | None = None) -> dict[str, Any]:
    """How a result was made: dmpo-trl, Python and library versions, the git commit, and where the model comes from.

    `model` is what `dmpo_trl.models.model_origin` takes (a hub id, a folder, a `.gguf` path, `DEFAULT_MODEL`, a
    loaded model) or an origin dict it returned; `None` records no model (e.g. a baseline). Every writer of a results
    JSON in this project stores this under the key "provenance".

    Example:
    ```python
    >>> provenance()["model_origin"] is None, provenance()["libraries"]["trl"] is not None
    (True, True)
    ```
    """
    origin = None
    if isinstance(model, dict):
        origin = model
    elif model is not None or gguf_file is not None:
        origin = model_origin(model, gguf_file)
    return {
        "dmpo_trl": __version__,
        "python": platform.python_version(),
        "libraries": library_versions(),
        "git": git_state(),
        "model_origin": origin,
    }
