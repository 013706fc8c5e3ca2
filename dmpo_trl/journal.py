"""Files that survive a killed job: atomic writes, and a journal of finished work items that a rerun continues.

- `atomic_write_text(path, text)`: the text goes to a temporary file in the same folder, then replaces `path` in one
  rename, so a reader (or a job killed mid-write) never sees a half-written file.
- `Journal(path, settings)`: one JSON line per finished item, appended and flushed to disk as each finishes; a rerun
  with the same path and settings reads them back and skips that work. The first line holds the settings: a journal
  written with other settings is refused (never mixed into new results), and a last line cut short by a kill is
  ignored.

Example:
```python
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "scores.progress.jsonl"
>>> with Journal(path, {"model": "m"}) as journal:
...     journal.append(0, {"user": "u1", "scores": [0.5, -1.0]})
>>> Journal(path, {"model": "m"}).done
{0: {'user': 'u1', 'scores': [0.5, -1.0]}}
```
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process's file-mode creation mask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file and one rename (creating parent folders); returns the path.

    The file gets the mode an ordinary `open(path, "w")` gives it (0o666 less the umask), not the temporary file's
    private 0o600, so that others can read what a command writes.

    Example:
    ```python
    >>> import tempfile, pathlib
    >>> atomic_write_text(pathlib.Path(tempfile.mkdtemp()) / "a" / "r.json", "{}\\n").read_text()
    '{}\\n'
    ```
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~current_umask())
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def share_saved_weights(folder: str | Path) -> list[Path]:
    """Give the `.safetensors` files in `folder` the mode an ordinary write would (0o666 less the umask).

    safetensors writes its files private (0o600) whatever the umask, so a model saved for others to use could not be
    read by them. Returns the files whose mode changed.

    Example:
    ```python
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> path = folder / "model.safetensors"
    >>> path.touch(mode=0o600)
    >>> _ = share_saved_weights(folder)
    >>> oct(path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    True
    ```
    """
    mode = 0o666 & ~current_umask()
    changed = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        if path.is_file() and (path.stat().st_mode & 0o777) != mode:
            path.chmod(mode)
            changed.append(path)
    return changed


class Journal:
    """Finished work items, one JSON line each, read back by a rerun with the same `settings` (see the module)."""

    def __init__(self, path: str | Path, settings: dict[str, Any]):
        self.path, self.settings = Path(path), json.loads(json.dumps(settings, default=str))
        self.done: dict[int, Any] = {}
        if self.path.is_file():
            self._read()
        self._file = None

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").split("\n")
        try:
            header = json.loads(lines[0])["settings"]
        except (json.JSONDecodeError, KeyError, TypeError):
            header = None
        if header is None:  # killed before its first line was whole: nothing to keep
            self.path.unlink()
            return
        if header != self.settings:
            changed = sorted(key for key in {**header, **self.settings} if header.get(key) != self.settings.get(key))
            raise ValueError(
                f"{self.path} holds the progress of a run with other settings ({', '.join(changed)}); "
                "remove it to start over, or rerun with the settings it was written with."
            )
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the last line, cut short by a kill
                continue
            self.done[entry["index"]] = entry["result"]

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def append(self, index: int, result: Any) -> None:
        """Record that item `index` finished with `result` (JSON-serialisable), on disk before returning."""
        if self._file is None:
            fresh = not self.path.is_file()
            if fresh:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open for the journal's lifetime)
            if fresh:
                self._write({"settings": self.settings})
        self._write({"index": index, "result": result})
        self.done[index] = result

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        """The work is saved elsewhere: drop the journal."""
        self.close()
        self.path.unlink(missing_ok=True)
