"""Interaction and item tables (CSV, TSV, parquet) -> a validated `InteractionLog`.

Every error is a `ValueError` that names the file and the 1-based line (for parquet: the 1-based row) or the missing
column. Line numbers assume one record per physical line (no quoted fields spanning several lines).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .log import InteractionLog


_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")
_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".inter": "\t", ".item": "\t"}


@dataclass(frozen=True)
class LogColumns:
    """Where a log's fields are: the user, item, time and rating columns of the interaction file, the title column of
    the item file. `time=None` keeps file order; `rating` is read only with a `min_rating`."""

    user: str = "user_id"
    item: str = "item_id"
    time: str | None = "timestamp"
    title: str = "title"
    rating: str | None = None

    def required(self, min_rating: float | None) -> list[str]:
        """The interaction file's columns a log with this `min_rating` reads."""
        rating = self.rating if min_rating is not None else None
        return [column for column in (self.user, self.item, self.time, rating) if column is not None]

    def repeat_key(self, with_rating: bool) -> tuple[str, ...]:
        """The columns an interaction dropped as an exact repeat shares with an earlier one."""
        return (self.user, self.item, self.time, *([self.rating] if with_rating else []))


@dataclass
class Table:
    """A read file: string columns plus `_line`, the 1-based line (or row) each record came from."""

    frame: pd.DataFrame
    source: str
    unit: str = "line"

    def where(self, index) -> str:
        return f"{self.source}, {self.unit} {int(self.frame.at[index, '_line'])}"

    def require(self, *columns: str | None) -> None:
        for column in columns:
            if column is not None and column not in self.frame.columns:
                found = ", ".join(repr(c) for c in self.frame.columns if c != "_line")
                raise ValueError(f"{self.source}: missing column {column!r} (found columns: {found})")

    def first_error(self, mask: pd.Series, message: str, column: str | None = None) -> None:
        """Raise `ValueError("<file>, line N: <message>")` for the first record where `mask` is True.

        `{value}` in `message` becomes that record's value in `column`.
        """
        if mask.any():
            index = mask.idxmax()
            if column is not None:
                message = message.replace("{value}", repr(self.frame.at[index, column]))
            count = int(mask.sum())
            more = f" ({count} such records in the file)" if count > 1 else ""
            raise ValueError(f"{self.where(index)}: {message}{more}")


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return next((sep for suffix, sep in _SEPARATORS.items() if name.endswith(suffix)), "sniff")


def read_table(
    path: str | Path,
    sep: str | None = None,
    *,
    header: bool = True,
    encoding: str = "utf-8-sig",
    quoting: int = csv.QUOTE_MINIMAL,
) -> Table:
    """Read a delimited or parquet file as strings, keeping each record's line number.

    `sep=None` picks the separator from the extension (`.csv` -> ",", `.tsv`/`.tab` -> tab, `.parquet`) and
    sniffs it otherwise. With `header=False` the columns are named "0", "1", ... Blank lines are skipped. A line with
    more fields than the header, bytes that are not `encoding` text, an empty file or a header naming a column twice
    raise `ValueError` naming the file (and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {path}")
    kind = "parquet" if sep is None and _file_kind(path) == "parquet" else (sep or _file_kind(path))
    if kind == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises its own types for files that are not parquet
            raise ValueError(f"{path}: cannot read the file as parquet: {exc}") from exc
        frame.columns = [str(c).strip() for c in frame.columns]
        _refuse_repeated_columns(list(frame.columns), str(path))
        frame.insert(len(frame.columns), "_line", range(1, len(frame) + 1))
        return Table(frame, str(path), unit="row")
    # header=None: the header line is read as data, so a longer line is an error rather than a silent index column
    options = dict(dtype=str, keep_default_na=False, skip_blank_lines=False, encoding=encoding, quoting=quoting)
    options.update(header=None)
    if kind == "sniff":
        options.update(sep=None, engine="python")
    elif len(kind) > 1:  # multi-character separators such as "::" need pandas' python engine
        options.update(sep=kind, engine="python")
    else:
        options.update(sep=kind)
    source = path
    if len(kind) > 1 and kind != "sniff":  # e.g. MovieLens-1M's "::": the C parser is much faster on tabs
        text = _decoded(path, encoding, kind)
        if "\t" not in text:
            source, options["sep"] = io.StringIO(text.replace(kind, "\t")), "\t"
            del options["engine"], options["encoding"]
    try:
        frame = pd.read_csv(source, **options)
    except UnicodeDecodeError:
        _decoded(path, encoding, kind)  # raises, naming the line
        raise
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty (no header line)") from None
    except (pd.errors.ParserError, csv.Error) as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if found:
            expected, line, saw = found.groups()
            raise ValueError(f"{path}, line {line}: {saw} fields, but the first line has {expected}") from None
        raise ValueError(f"{path}: cannot parse the file: {exc}") from exc
    frame = frame.fillna("")  # fields missing at the end of a short line (the python engine gives NaN)
    frame["_line"] = range(1, len(frame) + 1)
    blank = (frame.drop(columns="_line") == "").all(axis=1)
    frame = frame[~blank]
    if header:
        if frame.empty:
            raise ValueError(f"{path}: the file is empty (no header line)")
        names = [str(c).strip() for c in frame.iloc[0].drop("_line")]
        _refuse_repeated_columns(names, str(path))
        frame = frame.iloc[1:].set_axis([*names, "_line"], axis=1)
    else:
        frame.columns = [*(str(c) for c in range(len(frame.columns) - 1)), "_line"]
    return Table(frame.reset_index(drop=True), str(path))


def _refuse_repeated_columns(names: list[str], source: str) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{source}: the header names column {repeated[0]!r} more than once")


def _decoded(path: Path, encoding: str, sep: str) -> str:
    """The file's text; bytes that are not `encoding` raise `ValueError` naming the line and the column."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        # utf-8-sig counts positions after the byte order mark
        skip = 3 if data.startswith(codecs.BOM_UTF8) and codecs.lookup(encoding).name == "utf-8-sig" else 0
        start, end = exc.start + skip, exc.end + skip
        line = data.count(b"\n", 0, start) + 1
        lines = data.split(b"\n")
        bad = data[start:end]
        shown = "UTF-8" if encoding.lower().replace("_", "-").startswith("utf-8") else encoding
        where = ""
        if len(sep) >= 1 and sep != "sniff":
            line_start = sum(len(raw) + 1 for raw in lines[: line - 1])
            field = data[line_start:start].count(sep.encode())
            names = lines[0].decode(encoding, errors="replace").strip("\r").split(sep)
            if line > 1 and field < len(names):
                where = f" in column {names[field].strip()!r}"
        raise ValueError(
            f"{path}, line {line}: bytes {bad!r}{where} are not {shown} text; save the file as UTF-8"
        ) from None


def _as_text(series: pd.Series) -> pd.Series:
    """Stripped strings (object dtype); missing values (None, NaN, NA) become "", never the text "nan"."""
    missing = series.isna()
    return series.astype("string").where(~missing, "").fillna("").str.strip().astype(object)


def _as_ids(series: pd.Series) -> pd.Series:
    """Ids as stripped strings; missing values become "" (also "nan", "None", "null", "<NA>" written as text)."""
    if pd.api.types.is_float_dtype(series) and series.dropna().mod(1).eq(0).all():
        series = series.astype("Int64")
    text = _as_text(series)
    return text.where(~text.str.lower().isin(_MISSING_WORDS), "")


_MISSING_WORDS = {"nan", "none", "null", "<na>", "nat"}


def _check_ids(table: Table, column: str, what: str) -> pd.Series:
    """The column as ids; a missing one raises `ValueError` naming the file, line and column."""
    raw = table.frame[column]
    ids = _as_ids(raw)
    missing = ids == ""
    if missing.any():
        shown = _as_text(raw)
        empty = missing & (shown.str.strip() == "")
        table.first_error(empty, f"empty {what} id in column {column!r}")
        table.first_error(missing, f"missing {what} id ({{value}}) in column {column!r}", column)
    return ids


def _parse_times(table: Table, column: str) -> pd.Series:
    """Numbers (e.g. unix seconds) or date strings, whichever most records are; a value of the other kind, or of
    neither, raises `ValueError` naming the line. Dates with and without a time zone may not be mixed."""
    raw = table.frame[column]
    if pd.api.types.is_bool_dtype(raw):
        table.first_error(raw.notna(), f"timestamp {{value}} in column {column!r} is a boolean", column)
    if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_datetime64_any_dtype(raw):
        table.first_error(raw.isna(), f"missing timestamp in column {column!r}")
        return raw
    text = _as_text(raw)
    numbers = pd.to_numeric(text.where(text.str.lower() != "nan", ""), errors="coerce")
    is_number = numbers.notna()
    if is_number.sum() * 2 >= len(text):
        table.first_error(
            ~is_number, f"cannot parse timestamp {{value}} in column {column!r}: the column holds numbers", column
        )
        return numbers
    table.first_error(
        is_number, f"timestamp {{value}} in column {column!r} is a number, but the column holds dates", column
    )
    try:
        parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    except ValueError:  # "Mixed timezones detected": different offsets are fine, with and without a zone are not
        parsed = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
        zoned = text.map(_has_zone)
        first = zoned.dropna().iloc[0] if zoned.notna().any() else None
        table.first_error(
            zoned.notna() & (zoned != first),
            f"timestamp {{value}} in column {column!r} mixes dates with and without a time zone",
            column,
        )
    table.first_error(parsed.isna(), f"cannot parse timestamp {{value}} in column {column!r}", column)
    return parsed


def _has_zone(value: str) -> bool | None:
    try:
        return pd.Timestamp(value).tzinfo is not None
    except (ValueError, TypeError):
        return None


def titles_from_table(items: Table, item_col: str = "item_id", title_col: str = "title") -> dict[str, str]:
    """Item id -> title; an empty or repeated id, or an empty title, raises `ValueError` naming the line."""
    items.require(item_col, title_col)
    items.frame = items.frame.assign(**{item_col: _check_ids(items, item_col, "item")})
    item_frame = items.frame
    duplicated = item_frame[item_col].duplicated()
    items.first_error(duplicated, f"item id {{value}} appears more than once in column {item_col!r}", item_col)
    titles_text = _as_text(item_frame[title_col])
    items.first_error(titles_text == "", f"item {{value}} has an empty {title_col!r}", item_col)
    return dict(zip(item_frame[item_col], titles_text.astype(object)))


def log_from_tables(
    interactions: Table,
    items: Table,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    title_col: str = "title",
    rating_col: str | None = None,
    min_rating: float | None = None,
    name: str = "custom",
) -> InteractionLog:
    """Validate two tables and build the log. Sequences are sorted by time; ties keep file order.

    Interactions repeated exactly (same user, item, time and rating, on several lines) are dropped with a warning
    that says how many; without a time column a repeat is a new interaction and is kept.
    """
    columns = LogColumns(user=user_col, item=item_col, time=time_col, title=title_col, rating=rating_col)
    return _log_from_tables(interactions, items, columns, min_rating, name)


def _log_from_tables(
    interactions: Table, items: Table, columns: LogColumns, min_rating: float | None, name: str
) -> InteractionLog:
    """`log_from_tables` with the column names in one `LogColumns` (what the loaders call)."""
    user_col, item_col, time_col, rating_col = columns.user, columns.item, columns.time, columns.rating
    items.require(item_col, columns.title)
    interactions.require(*columns.required(min_rating))
    titles = titles_from_table(items, item_col, columns.title)

    users = _check_ids(interactions, user_col, "user")
    interactions.frame = interactions.frame.assign(
        **{user_col: users, item_col: _check_ids(interactions, item_col, "item")}
    )
    frame = interactions.frame
    unknown = ~frame[item_col].isin(titles.keys())
    if unknown.any():
        interactions.first_error(unknown, _unknown_item_message(items.source, item_col, titles), item_col)
    ratings = None
    if min_rating is not None:
        ratings = pd.to_numeric(frame[rating_col], errors="coerce")
        interactions.first_error(ratings.isna(), f"cannot parse rating {{value}} in column {rating_col!r}", rating_col)
    times = _parse_times(interactions, time_col) if time_col is not None and not frame.empty else None
    if times is not None:
        key = pd.DataFrame({"user": frame[user_col], "item": frame[item_col], "time": times})
        if ratings is not None:
            key["rating"] = ratings
        repeated = key.duplicated()
        if repeated.any():
            first = int(interactions.frame.at[repeated.idxmax(), "_line"])
            same = columns.repeat_key(ratings is not None)
            where = f"{interactions.unit} {first}"
            warnings.warn(
                _repeats_message(interactions.source, int(repeated.sum()), len(frame), same, where), stacklevel=3
            )
            frame, times = frame[~repeated], times[~repeated]
            ratings = ratings[~repeated] if ratings is not None else None
    if ratings is not None:
        frame = frame[ratings >= min_rating]
    if frame.empty:
        raise _no_interactions(interactions.source, rating_col, min_rating)
    if times is not None:
        frame = frame.loc[times.loc[frame.index].sort_values(kind="stable").index]
    grouped = frame.groupby(user_col, sort=False)[item_col].agg(list)
    users = sorted(grouped.index, key=natural_key)
    return InteractionLog(sequences={u: grouped[u] for u in users}, titles=titles, name=name)


def _unknown_item_message(items_source: str, item_col: str, titles: dict[str, str]) -> str:
    """The error for an interaction whose item the item file lacks (`{value}`: the id), with ids it does hold."""
    examples = ", ".join(repr(i) for i in list(titles)[:3])
    return (
        f"item id {{value}} is not in the item file {items_source} (column {item_col!r}; that file writes ids "
        f"like {examples})"
    )


def _repeats_message(source: str, dropped: int, total: int, columns: tuple[str, ...], where: str) -> str:
    """The warning for interactions dropped because they repeat an earlier line in every one of `columns`."""
    return (
        f"{source}: dropped {dropped} of {total} interactions that repeat an earlier line exactly (same "
        f"{', '.join(columns)}); the first is at {where}"
    )


def _no_interactions(source: str, rating_col: str | None, min_rating: float | None) -> ValueError:
    """The error for a log left without interactions (none, or none rated `min_rating` or more)."""
    kept = f" with {rating_col} >= {min_rating}" if min_rating is not None else ""
    return ValueError(f"{source}: no interactions{kept}, so no user has a sequence")


def natural_key(value: str) -> tuple[int, int | str]:
    """Sort numeric ids numerically ("2" < "10"), then everything else as text."""
    value = str(value)
    return (0, int(value), "") if value.isdecimal() else (1, 0, value)


def load_interactions(
    interactions_path: str | Path,
    items_path: str | Path,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    title_col: str = "title",
    sep: str | None = None,
    *,
    rating_col: str | None = None,
    min_rating: float | None = None,
    name: str | None = None,
) -> InteractionLog:
    """Load any interaction file plus item file (CSV, TSV or parquet) with a header line.

    Every interaction must name a known item; a `time_col` value is a number (e.g. unix seconds) or a date
    string (`time_col=None` keeps file order). Sequences are sorted by time, ties in file order. Users appear only
    through their interactions, so every user in the log has at least one. With `min_rating`, interactions rated
    below it are dropped. Ids are compared as text (1 and "001" differ); an interaction repeated exactly (same user,
    item, time and rating) is dropped with a warning that says how many. Bad input (a missing column, an empty,
    NaN or None id, an unparseable time, an item without a title, bytes that are not UTF-8, a line with more fields
    than the header) raises `ValueError` naming the file, the line (parquet: row) and the column.

    Example:
    ```python
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "inter.csv").write_text("user_id,item_id,timestamp\\nu1,b,2\\nu1,a,1\\n")
    >>> _ = (d / "items.csv").write_text("item_id,title\\na,Heat (1995)\\nb,Fargo (1996)\\n")
    >>> load_interactions(d / "inter.csv", d / "items.csv").sequences
    {'u1': ['a', 'b']}
    ```
    """
    interactions = read_table(interactions_path, sep)
    items = read_table(items_path, sep)
    columns = LogColumns(user=user_col, item=item_col, time=time_col, title=title_col, rating=rating_col)
    return _log_from_tables(interactions, items, columns, min_rating, name or Path(interactions_path).stem)
