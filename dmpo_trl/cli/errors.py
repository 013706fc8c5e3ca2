"""A user's mistake on the command line: `UsageError`, and `user_inputs`, the block where library errors are one.

`dmpo-trl` prints a `UsageError` (or any `dmpo_trl.inputs.InputError` the library raises) as one line,
`dmpo-trl COMMAND: error: ...`, and exits with status 2; other exceptions keep their traceback.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from ..inputs import InputError, reading_inputs


__all__ = ["UsageError", "user_inputs"]


class UsageError(InputError):
    """A mistake in what the user asked for; the command line prints its message alone and exits with status 2."""


def user_inputs(*also: type[BaseException]) -> AbstractContextManager[None]:
    """Inside this block, `ValueError`, `FileNotFoundError` (and the exception types in `also`) are the user's
    mistakes: they are raised again as `UsageError` with the same message.

    Example:
    ```python
    >>> try:
    ...     with user_inputs():
    ...         int("twelve")
    ... except UsageError as exc:
    ...     print(exc)
    invalid literal for int() with base 10: 'twelve'
    ```
    """
    return reading_inputs(*also, error=UsageError)
