"""Large logs: an interaction file read by pyarrow and turned into an `InteractionLog` with numpy, no per-event Python.

The same checks, messages and result as the pandas path of `log_from_tables`: ids are stripped text, a missing id,
an unknown item, a bad rating or timestamp raises `ValueError` naming the file, the line and the column; exact
repeats are dropped with a warning; sequences are sorted by time with ties in file order (one stable sort by
(user, time)); users come in natural order. Files this reader cannot take as they are (a line with a wrong number of
fields, text that is not UTF-8, a byte order mark, quoted separators in GroupLens files, dates rather than numbers
as timestamps) go through the pandas path instead, which gives the same log or the same error, only slower.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .log import InteractionLog
from .tables import (
    _MISSING_WORDS,
    LogColumns,
    Table,
    _no_interactions,
    _parse_times,
    _repeats_message,
    _unknown_item_message,
    natural_key,
    titles_from_table,
)


class NeedsPandasPath(Exception):
    """The file needs the pandas path (it will give the same result or a precise error)."""


def read_arrow(path: Path, sep: str, *, header: bool, quoting: bool, encoding: str) -> tuple[list[str], pa.Table]:
    """(column names, the file as a table of string columns), one row per physical line, blank lines as "" rows.

    `sep="::"` (MovieLens-1M) is read as ":" with an empty field between each pair; raises `NeedsPandasPath` when the
    file is not plain enough for that (see the module docstring).
    """
    with open(path, "rb") as handle:
        first = handle.readline()
    if not first.strip() or first.startswith(b"\xef\xbb\xbf") and encoding.lower() != "utf-8-sig":
        raise NeedsPandasPath
    try:
        names_line = first.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise NeedsPandasPath from None
    doubled = sep == "::"
    if len(sep) != 1 and not doubled:
        raise NeedsPandasPath
    fields = names_line.split(sep)
    names = [f.strip() for f in fields] if header else [str(k) for k in range(len(fields))]
    if header and len(set(names)) < len(names):
        raise NeedsPandasPath
    width = 2 * len(fields) - 1 if doubled else len(fields)
    raw_names = [f"c{k}" for k in range(width)]
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=raw_names, skip_rows=int(header), block_size=1 << 26),
            parse_options=pacsv.ParseOptions(
                delimiter=":" if doubled else sep, quote_char='"' if quoting else False, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(raw_names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError):
        raise NeedsPandasPath from None
    if doubled:  # every second column is the empty field inside "::"
        for gap in raw_names[1::2]:
            if pc.any(pc.not_equal(pc.binary_length(table[gap]), 0)).as_py():
                raise NeedsPandasPath
        table = table.select(raw_names[::2])
    return names, table.rename_columns(names)


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """(each row's index into the distinct values, the distinct values), in one pass over the column."""
    encoded = column.combine_chunks().dictionary_encode()
    return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist()


class _Rows:
    """Errors in the format of `Table.first_error`, for rows that came from the listed 1-based lines."""

    def __init__(self, source: str, lines: np.ndarray):
        self.source, self.lines = source, lines

    def line(self, row: int) -> int:
        return int(self.lines[row])

    def first_error(self, mask: np.ndarray, message: str, values: dict[int, object] | None = None) -> None:
        """Raise `ValueError("<file>, line N: <message>")` for the first row where `mask` holds."""
        if mask.any():
            row = int(np.argmax(mask))
            if values is not None:
                message = message.replace("{value}", repr(values[row]))
            count = int(mask.sum())
            more = f" ({count} such records in the file)" if count > 1 else ""
            raise ValueError(f"{self.source}, line {self.line(row)}: {message}{more}")


def _ids(rows: _Rows, column: pa.ChunkedArray, name: str, what: str) -> tuple[np.ndarray, list[str]]:
    """(each row's index into the distinct stripped ids, those ids); empty or missing ids raise like `_check_ids`."""
    codes, distinct = _codes(column)
    stripped = [value.strip() for value in distinct]
    empty = np.array([s == "" for s in stripped], dtype=bool)
    missing = empty | np.array([s.lower() in _MISSING_WORDS for s in stripped], dtype=bool)
    if missing.any():
        rows.first_error(empty[codes], f"empty {what} id in column {name!r}")
        bad = missing[codes]
        rows.first_error(bad, f"missing {what} id ({{value}}) in column {name!r}", _lookup(distinct, codes, bad))
    unique = {}
    merged = np.array([unique.setdefault(s, len(unique)) for s in stripped], dtype=np.int64)
    return merged[codes] if len(unique) < len(stripped) else codes.astype(np.int64), list(unique)


def _lookup(distinct: list[str], codes: np.ndarray, mask: np.ndarray) -> dict[int, str]:
    """Row -> value for the first row where `mask` holds (all `first_error` reads)."""
    row = int(np.argmax(mask))
    return {row: distinct[codes[row]]}


def _numbers(column: pa.ChunkedArray) -> np.ndarray | None:
    """The column as int64 or float64 when every value is a plain number, else None."""
    for kind in (pa.int64(), pa.float64()):
        try:
            values = pc.cast(column, kind).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if kind == pa.int64() or not np.isnan(values).any():
            return values
    return None


def _as_table(rows: _Rows, column: pa.ChunkedArray, name: str) -> Table:
    """One column as the pandas path sees it (for parsing values plain casts cannot)."""
    frame = pd.DataFrame({name: column.to_numpy(zero_copy_only=False)})
    frame["_line"] = rows.lines
    return Table(frame, rows.source)


def log_from_arrow(
    path: str | Path,
    read_items: Callable[[], Table],
    columns: LogColumns,
    *,
    sep: str,
    header: bool,
    names: list[str] | None = None,
    quoting: bool = True,
    encoding: str = "utf-8",
    min_rating: float | None = None,
    name: str = "custom",
) -> InteractionLog:
    """The log `log_from_tables` builds from `read_table(path)` and `read_items()` with these `columns`, in numpy.

    `names` renames the first columns of a file without a header. Raises `NeedsPandasPath` when the file needs the
    pandas path.
    """
    path = Path(path)
    user_col, item_col, time_col, rating_col = columns.user, columns.item, columns.time, columns.rating
    found, table = read_arrow(path, sep, header=header, quoting=quoting, encoding=encoding)
    if names is not None:
        if len(found) < len(names):
            raise NeedsPandasPath
        found = [*names, *found[len(names) :]]
        table = table.rename_columns(found)
    kind = encoding.lower().replace("_", "-")
    if table.num_rows == 0 or not kind.startswith(("utf-8", "utf8", "latin-1")):
        raise NeedsPandasPath
    if kind.startswith("latin") and not all(pc.all(pc.string_is_ascii(c)).as_py() is not False for c in table.columns):
        raise NeedsPandasPath  # read as UTF-8 here; the pandas path decodes latin-1
    item_table = read_items()
    item_table.require(item_col, columns.title)
    for column in columns.required(min_rating):
        if column not in found:
            listed = ", ".join(repr(c) for c in found)
            raise ValueError(f"{path}: missing column {column!r} (found columns: {listed})")
    titles = titles_from_table(item_table, item_col, columns.title)
    blank = np.ones(table.num_rows, dtype=bool)
    for column in table.columns:
        blank &= pc.equal(pc.binary_length(column), 0).to_numpy(zero_copy_only=False)
    rows = _Rows(str(path), np.flatnonzero(~blank) + 1 + int(header))  # blank lines are skipped, as pandas does
    if blank.any():
        table = table.filter(pa.array(~blank))
    if table.num_rows == 0:
        raise NeedsPandasPath

    user_codes, users = _ids(rows, table[user_col], user_col, "user")
    item_codes, items = _ids(rows, table[item_col], item_col, "item")
    catalog = {item: index for index, item in enumerate(titles)}
    position = np.array([catalog.get(item, -1) for item in items], dtype=np.int64)
    item_index = position[item_codes]
    unknown = item_index < 0
    if unknown.any():
        message = _unknown_item_message(item_table.source, item_col, titles)
        rows.first_error(unknown, message, _lookup(items, item_codes, unknown))
    ratings = None
    if min_rating is not None:
        ratings = _numbers(table[rating_col])
        if ratings is None:
            ratings = pd.to_numeric(table[rating_col].to_numpy(zero_copy_only=False), errors="coerce")
        ratings = np.asarray(ratings, dtype=np.float64)
        bad = np.isnan(ratings)
        if bad.any():
            raw = table[rating_col]
            row = int(np.argmax(bad))
            rows.first_error(bad, f"cannot parse rating {{value}} in column {rating_col!r}", {row: raw[row].as_py()})
    times = None
    if time_col is not None:
        times = _numbers(table[time_col])
        if times is None:  # dates, or values that need the pandas rules (" 17 ", "nan", ...)
            parsed = _parse_times(_as_table(rows, table[time_col], time_col), time_col)
            times = pd.factorize(parsed, sort=True)[0]  # ranks: dates, with or without a zone, sort as numbers
    del table

    keep = np.ones(len(user_codes), dtype=bool)
    order = _user_time_order(user_codes, users, times)
    if times is not None:
        repeated = _repeats(order, user_codes, item_index, times, ratings)
        if repeated.any():
            first = rows.line(int(np.argmax(repeated)))
            same = columns.repeat_key(ratings is not None)
            warnings.warn(
                _repeats_message(str(path), int(repeated.sum()), len(repeated), same, f"line {first}"), stacklevel=3
            )
            keep &= ~repeated
    if ratings is not None:
        keep &= ratings >= min_rating
    if not keep.any():
        raise _no_interactions(str(path), rating_col, min_rating)
    order = order[keep[order]]
    ranks = _natural_ranks(users)
    by_user = ranks[user_codes[order]]  # sorted: the order sorts by user rank first
    ids = np.array(list(titles), dtype=object)[item_index[order]]
    sizes = np.bincount(by_user, minlength=len(users))
    ends = np.cumsum(sizes)
    ordered_users = sorted(users, key=natural_key)
    sequences = {ordered_users[u]: ids[ends[u] - sizes[u] : ends[u]].tolist() for u in np.flatnonzero(sizes).tolist()}
    return InteractionLog(sequences=sequences, titles=titles, name=name)


def _natural_ranks(users: list[str]) -> np.ndarray:
    """Each user's position in natural order ("2" before "10")."""
    ranks = np.empty(len(users), dtype=np.int64)
    ranks[sorted(range(len(users)), key=lambda k: natural_key(users[k]))] = np.arange(len(users))
    return ranks


def _user_time_order(user_codes: np.ndarray, users: list[str], times: np.ndarray | None) -> np.ndarray:
    """Row order sorted by (user in natural order, time), ties in file order: one stable sort."""
    ranks = _natural_ranks(users)[user_codes]
    if times is None:
        return np.argsort(ranks, kind="stable")
    if times.dtype.kind in "iu":
        span = int(times.max()) - int(times.min()) + 1
        if span * len(users) < 2**62:  # (user, time) packed in one integer
            return np.argsort(ranks * span + (times - times.min()), kind="stable")
    return np.lexsort((times, ranks))


def _repeats(
    order: np.ndarray, users: np.ndarray, items: np.ndarray, times: np.ndarray, ratings: np.ndarray | None
) -> np.ndarray:
    """Rows that repeat an earlier row's (user, item, time[, rating]); only runs of equal (user, time) can."""
    user_sorted, time_sorted = users[order], times[order]
    same = (user_sorted[1:] == user_sorted[:-1]) & (time_sorted[1:] == time_sorted[:-1])
    repeated = np.zeros(len(order), dtype=bool)
    if not same.any():
        return repeated
    in_run = np.zeros(len(order), dtype=bool)
    in_run[1:] |= same
    in_run[:-1] |= same
    rows = order[in_run]  # still sorted by (user, time), ties in file order
    key = pd.DataFrame({"user": users[rows], "item": items[rows], "time": times[rows]})
    if ratings is not None:
        key["rating"] = ratings[rows]
    repeated[rows[key.duplicated().to_numpy()]] = True
    return repeated
