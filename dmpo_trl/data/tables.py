"""Interaction and item tables (CSV, TSV, parquet) -> a validated `InteractionLog`.

Every error is a `ValueError` that names the file and the 1-based line (for parquet: the 1-based row) or the missing
column. Line numbers assume one record per physical line (no quoted fields spanning several lines).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .log import InteractionLog


_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")
_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".inter": "\t", ".item": "\t"}


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
    sniffs it otherwise. With `header=False` the columns are named "0", "1", ... Blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {path}")
    kind = "parquet" if sep is None and _file_kind(path) == "parquet" else (sep or _file_kind(path))
    if kind == "parquet":
        frame = pd.read_parquet(path)
        frame.insert(len(frame.columns), "_line", range(1, len(frame) + 1))
        return Table(frame, str(path), unit="row")
    options = dict(dtype=str, keep_default_na=False, skip_blank_lines=False, encoding=encoding, quoting=quoting)
    if kind == "sniff":
        options.update(sep=None, engine="python")
    elif len(kind) > 1:  # multi-character separators such as "::" need pandas' python engine
        options.update(sep=kind, engine="python")
    else:
        options.update(sep=kind)
    if not header:
        options.update(header=None)
    source = path
    if len(kind) > 1 and kind != "sniff":  # e.g. MovieLens-1M's "::": the C parser is much faster on tabs
        text = path.read_text(encoding=encoding)
        if "\t" not in text:
            source, options["sep"] = io.StringIO(text.replace(kind, "\t")), "\t"
            del options["engine"], options["encoding"]
    try:
        frame = pd.read_csv(source, **options)
    except (pd.errors.ParserError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot parse the file: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    first_line = 2 if header else 1
    frame["_line"] = range(first_line, len(frame) + first_line)
    blank = (frame.drop(columns="_line") == "").all(axis=1)
    return Table(frame[~blank], str(path))


def _as_ids(series: pd.Series) -> pd.Series:
    """Ids as stripped strings; missing values become ""."""
    if pd.api.types.is_float_dtype(series) and series.dropna().mod(1).eq(0).all():
        series = series.astype("Int64")
    return series.astype("string").fillna("").str.strip().astype(object)


def _parse_times(table: Table, column: str) -> pd.Series:
    """Numbers (e.g. unix seconds) or date strings; the kind is chosen by the first record."""
    raw = table.frame[column]
    if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw
    else:
        text = raw.astype("string").fillna("").str.strip()
        numbers = pd.to_numeric(text, errors="coerce")
        if len(text) and pd.notna(numbers.iloc[0]):
            parsed = numbers
        else:
            parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    table.first_error(parsed.isna(), f"cannot parse timestamp {{value}} in column {column!r}", column)
    return parsed


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
    """Validate two tables and build the log. Sequences are sorted by time; ties keep file order."""
    items.require(item_col, title_col)
    interactions.require(user_col, item_col, time_col, rating_col if min_rating is not None else None)

    item_frame = items.frame.assign(**{item_col: _as_ids(items.frame[item_col])})
    items.frame = item_frame
    items.first_error(item_frame[item_col] == "", f"empty item id in column {item_col!r}")
    duplicated = item_frame[item_col].duplicated()
    items.first_error(duplicated, "item id {value} appears more than once", item_col)
    titles_text = item_frame[title_col].astype("string").fillna("").str.strip()
    items.first_error(titles_text == "", f"item {{value}} has an empty {title_col!r}", item_col)
    titles = dict(zip(item_frame[item_col], titles_text.astype(object)))

    frame = interactions.frame.assign(
        **{user_col: _as_ids(interactions.frame[user_col]), item_col: _as_ids(interactions.frame[item_col])}
    )
    interactions.frame = frame
    interactions.first_error(frame[user_col] == "", f"empty user id in column {user_col!r}")
    interactions.first_error(frame[item_col] == "", f"empty item id in column {item_col!r}")
    unknown = ~frame[item_col].isin(titles.keys())
    interactions.first_error(unknown, f"item id {{value}} is not in the item file {items.source}", item_col)
    if min_rating is not None:
        ratings = pd.to_numeric(frame[rating_col], errors="coerce")
        interactions.first_error(ratings.isna(), f"cannot parse rating {{value}} in column {rating_col!r}", rating_col)
        frame = frame[ratings >= min_rating]
    if frame.empty:
        kept = f" with {rating_col} >= {min_rating}" if min_rating is not None else ""
        raise ValueError(f"{interactions.source}: no interactions{kept}, so no user has a sequence")
    if time_col is not None:
        order = _parse_times(interactions, time_col).loc[frame.index]
        frame = frame.loc[order.sort_values(kind="stable").index]
    grouped = frame.groupby(user_col, sort=False)[item_col].agg(list)
    users = sorted(grouped.index, key=natural_key)
    return InteractionLog(sequences={u: grouped[u] for u in users}, titles=titles, name=name)


def natural_key(value: str) -> tuple[int, int | str]:
    """Sort numeric ids numerically ("2" < "10"), then everything else as text."""
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


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
    below it are dropped. Bad input raises `ValueError` naming the file and line, or the missing column.

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
    return log_from_tables(
        interactions,
        items,
        user_col=user_col,
        item_col=item_col,
        time_col=time_col,
        title_col=title_col,
        rating_col=rating_col,
        min_rating=min_rating,
        name=name or Path(interactions_path).stem,
    )
