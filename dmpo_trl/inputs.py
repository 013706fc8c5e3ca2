"""Mistakes in what a caller asked for, told apart from program errors: `InputError` and `reading_inputs`.

The library raises `InputError` (a `ValueError`) for a setting it refuses or an input it cannot use: a data file, a
dataset name, a model path, a split file, the training rows. Its message says what to change. `dmpo-trl` prints such
a message as one line (`dmpo-trl COMMAND: error: ...`) and exits with status 2; any other exception is a program
error and keeps its traceback.

Only the standard library is imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


__all__ = ["InputError", "reading_inputs"]


class InputError(ValueError):
    """A mistake in what the caller asked for (a setting, a file, a model path); the message says what to change."""


@contextmanager
def reading_inputs(*also: type[BaseException], error: type[InputError] = InputError) -> Iterator[None]:
    """Inside this block, `ValueError`, `FileNotFoundError`, `NotADirectoryError`, `IsADirectoryError` (and the
    exception types in `also`) are the caller's mistakes: they are raised again as `error` (an `InputError`) with the
    same message. An `error` raised inside passes unchanged.

    Example:
    ```python
    >>> try:
    ...     with reading_inputs():
    ...         int("twelve")
    ... except InputError as exc:
    ...     print(exc)
    invalid literal for int() with base 10: 'twelve'
    ```
    """
    try:
        yield
    except error:
        raise
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, *also) as exc:
        raise error(str(exc)) from exc
