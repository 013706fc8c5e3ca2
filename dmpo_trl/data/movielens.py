"""MovieLens-100K / -1M from GroupLens files, RecBole atomic files, the copy inside `recbole`, or a download.

All ratings are kept as implicit-feedback interactions unless `min_rating` is given. Titles keep the year as the
source writes it ("Toy Story (1995)"); RecBole's separate `release_year` is appended the same way.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..cache import dataset_cache_dir
from .columnar import NeedsPandasPath, log_from_arrow
from .download import DEFAULT_TIMEOUT, DownloadError, fetch_and_extract
from .log import InteractionLog
from .tables import LogColumns, Table, _log_from_tables, read_table


@dataclass(frozen=True)
class MovieLensRelease:
    dirname: str  # folder inside the zip, and the RecBole dataset name
    url: str
    checksum: str  # "<algorithm>:<hex>", as published by GroupLens next to the zip
    ratings_file: str
    items_file: str
    ratings_sep: str
    items_sep: str


MOVIELENS = {
    "movielens-100k": MovieLensRelease(
        "ml-100k",
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "md5:0e33842e24a9c977be4e0107933c0723",
        "u.data",
        "u.item",
        "\t",
        "|",
    ),
    "movielens-1m": MovieLensRelease(
        "ml-1m",
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "md5:c4d9eecfca2ab87c1945afe126590906",
        "ratings.dat",
        "movies.dat",
        "::",
        "::",
    ),
}
# MovieLens-20M/25M (and the "latest" releases): ratings.csv + movies.csv with a header. Read from a folder only:
# no download is registered for them.
_CSV_LAYOUT = MovieLensRelease("ml-25m", "", "", "ratings.csv", "movies.csv", ",", ",")
ENGINES = ("arrow", "pandas")
_RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
_TITLE_FIELDS = ("movie_title", "title", "name", "item_name")
_YEAR_FIELDS = ("release_year", "year")


def _renamed(table: Table, names: list[str]) -> Table:
    columns = [c for c in table.frame.columns if c != "_line"]
    if len(columns) < len(names):
        raise ValueError(f"{table.source}: expected at least {len(names)} fields per line, found {len(columns)}")
    table.frame = table.frame.rename(columns=dict(zip(columns, names)))
    return table


def load_grouplens(
    data_dir: str | Path, min_rating: float | None = None, name: str | None = None, *, engine: str = "arrow"
) -> InteractionLog:
    """Load a directory in GroupLens layout: `u.data` + `u.item` (100K), `ratings.dat` + `movies.dat` (1M) or
    `ratings.csv` + `movies.csv` with a header (`userId,movieId,rating,timestamp`; 20M, 25M).

    `engine="arrow"` (the default) reads the ratings with pyarrow and builds the log with vectorised numpy (a
    synthetic log shaped like MovieLens-25M in 17 s on 2 cores, `benchmarks/large_log.py`); `engine="pandas"` is
    the plain path through `log_from_tables`. Both give the same log, warnings and errors; files the arrow reader
    cannot take as they are (see `dmpo_trl.data.columnar`) go through the pandas path.

    Example:
    ```python
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "u.data").write_text("1\\t2\\t5\\t20\\n1\\t1\\t3\\t10\\n")
    >>> _ = (d / "u.item").write_text("1|Toy Story (1995)|01-Jan-1995\\n2|GoldenEye (1995)|01-Jan-1995\\n")
    >>> load_grouplens(d).sequences
    {'1': ['1', '2']}
    ```
    """
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}; choose from {ENGINES}")
    data_dir = Path(data_dir)
    layouts = [*MOVIELENS.values(), _CSV_LAYOUT]
    release = next((r for r in layouts if (data_dir / r.ratings_file).is_file()), None)
    if release is None:
        wanted = " or ".join(f"{r.ratings_file} + {r.items_file}" for r in layouts)
        raise FileNotFoundError(f"{data_dir} is not in GroupLens layout: it has no {wanted}")
    name = name or f"movielens-{release.dirname[3:]}"
    ratings_path, items_path = data_dir / release.ratings_file, data_dir / release.items_file
    if release is _CSV_LAYOUT:  # UTF-8 with a header; titles holding a comma are quoted
        columns = LogColumns(user="userId", item="movieId", rating="rating")
        layout = dict(sep=",", header=True)

        def read_ratings() -> Table:
            return read_table(ratings_path, ",")

        def read_items() -> Table:
            return read_table(items_path, ",")
    else:
        read = dict(encoding="latin-1", quoting=csv.QUOTE_NONE, header=False)
        columns = LogColumns(rating="rating")
        layout = dict(sep=release.ratings_sep, header=False, names=_RATING_COLUMNS, quoting=False, encoding="latin-1")

        def read_ratings() -> Table:
            return _renamed(read_table(ratings_path, release.ratings_sep, **read), _RATING_COLUMNS)

        def read_items() -> Table:
            return _renamed(read_table(items_path, release.items_sep, **read), ["item_id", "title"])

    if engine == "arrow":
        try:
            return log_from_arrow(ratings_path, read_items, columns, **layout, min_rating=min_rating, name=name)
        except NeedsPandasPath:
            pass
    return _log_from_tables(read_ratings(), read_items(), columns, min_rating, name)


def load_recbole_atomic(
    data_dir: str | Path, dataset: str | None = None, min_rating: float | None = None, name: str | None = None
) -> InteractionLog:
    """Load RecBole atomic files `<dataset>.inter` + `<dataset>.item` (header fields written `name:type`).

    `dataset=None` uses the only `*.inter` file in `data_dir`. The item title is the first of
    `movie_title`/`title`/`name`/`item_name`; a four-digit `release_year`/`year` is appended as " (1995)".
    A missing `timestamp` field keeps file order.

    Example:
    ```python
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "x.inter").write_text("user_id:token\\titem_id:token\\ttimestamp:float\\n7\\t1\\t5\\n")
    >>> _ = (d / "x.item").write_text("item_id:token\\tmovie_title:token_seq\\trelease_year:token\\n1\\tHeat\\t1995")
    >>> load_recbole_atomic(d).titles
    {'1': 'Heat (1995)'}
    ```
    """
    data_dir = Path(data_dir)
    if dataset is None:
        found = sorted(data_dir.glob("*.inter"))
        if len(found) != 1:
            names = [p.name for p in found]
            raise FileNotFoundError(f"Expected exactly one *.inter file in {data_dir}, found {names}")
        dataset = found[0].stem
    tables = []
    for suffix in (".inter", ".item"):
        table = read_table(data_dir / f"{dataset}{suffix}", "\t", quoting=csv.QUOTE_NONE)
        table.frame.columns = [c.split(":", 1)[0] for c in table.frame.columns]
        tables.append(table)
    interactions, items = tables
    title_field = next((f for f in _TITLE_FIELDS if f in items.frame.columns), _TITLE_FIELDS[0])
    items.require("item_id", title_field)
    year_field = next((f for f in _YEAR_FIELDS if f in items.frame.columns), None)
    titles = items.frame[title_field].str.strip()
    if year_field is not None:
        years = items.frame[year_field].str.strip()
        titles = titles.combine(years, _with_year)
    items.frame = items.frame.assign(title=titles)
    has_time = "timestamp" in interactions.frame.columns
    columns = LogColumns(time="timestamp" if has_time else None, rating="rating")
    return _log_from_tables(interactions, items, columns, min_rating, name or dataset)


def _with_year(title: str, year: str) -> str:
    year = year.strip()
    if len(year) == 4 and year.isdigit() and not title.endswith(f"({year})"):
        return f"{title} ({year})"
    return title


def recbole_example_dir(dataset: str = "ml-100k") -> Path | None:
    """The atomic files shipped inside the installed `recbole` package, or None. Does not import recbole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "dataset_example" / dataset
        if (folder / f"{dataset}.inter").is_file() and (folder / f"{dataset}.item").is_file():
            return folder
    return None


def load_movielens_dir(data_dir: str | Path, name: str = "movielens-100k", min_rating: float | None = None):
    """Load `name` from `data_dir` (or its `ml-100k`/`ml-1m` subfolder), in GroupLens or RecBole layout."""
    release = _release(name)
    for folder in (Path(data_dir), Path(data_dir) / release.dirname):
        if (folder / release.ratings_file).is_file():
            return load_grouplens(folder, min_rating=min_rating, name=name)
        if (folder / f"{release.dirname}.inter").is_file():
            return load_recbole_atomic(folder, release.dirname, min_rating=min_rating, name=name)
    raise FileNotFoundError(
        f"No {name} files in {data_dir} or its {release.dirname}/ subfolder: expected {release.ratings_file} + "
        f"{release.items_file} (GroupLens layout) or {release.dirname}.inter + {release.dirname}.item (RecBole)"
    )


def _release(name: str) -> MovieLensRelease:
    if name not in MOVIELENS:
        raise ValueError(f"Unknown MovieLens release {name!r}; choose from {sorted(MOVIELENS)}")
    return MOVIELENS[name]


def load_movielens(
    name: str = "movielens-100k",
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
    *,
    min_rating: float | None = None,
    url: str | None = None,
    checksum: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> InteractionLog:
    """MovieLens-100K or -1M, from the first source that has it.

    Order: `data_dir` (GroupLens or RecBole layout; errors if the files are not there) -> the copy inside an
    installed `recbole` package (100K only) -> `cache_dir` (default `~/.cache/dmpo-trl`, or `$DMPO_TRL_CACHE`) ->
    a download from GroupLens into `cache_dir`, checked against the published md5 (`url`/`checksum` override the
    source, e.g. a `file://` mirror; `checksum` is `"md5:<hex>"` or `"sha256:<hex>"`). Offline, the download
    fails within about `timeout` seconds with a `DownloadError` that names the other ways.

    Example (uses the copy inside recbole when installed):
    ```python
    >>> log = load_movielens("movielens-100k")  # doctest: +SKIP
    >>> log.num_users, log.num_items  # doctest: +SKIP
    (943, 1682)
    ```
    """
    release = _release(name)
    if data_dir is not None:
        return load_movielens_dir(data_dir, name, min_rating=min_rating)
    bundled = recbole_example_dir(release.dirname)
    if bundled is not None:
        return load_recbole_atomic(bundled, release.dirname, min_rating=min_rating, name=name)
    cache_dir = Path(cache_dir) if cache_dir is not None else dataset_cache_dir()
    if (cache_dir / release.dirname / release.ratings_file).is_file():
        return load_grouplens(cache_dir / release.dirname, min_rating=min_rating, name=name)
    others = f"pass data_dir=... pointing at an unpacked {release.dirname} folder"
    if name == "movielens-100k":
        others += ", or `pip install --no-deps recbole` (its package ships MovieLens-100K)"
    if not download:
        raise FileNotFoundError(f"{name} is not in {cache_dir} and download=False: {others}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        fetch_and_extract(url or release.url, cache_dir, checksum or release.checksum, timeout=timeout)
    except DownloadError as exc:
        raise DownloadError(f"{exc}. Could not get {name}; instead {others}.") from exc
    folder = cache_dir / release.dirname
    if not (folder / release.ratings_file).is_file():
        raise FileNotFoundError(f"The downloaded archive has no {release.dirname}/{release.ratings_file}")
    return load_grouplens(folder, min_rating=min_rating, name=name)


GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_GENRE_FIELDS = ("class", "genre", "genres")


def load_movielens_genres(data_dir: str | Path | None = None) -> dict[str, frozenset[str]]:
    """Each MovieLens item's genres, from the folder `load_movielens_dir` reads (default: the copy inside `recbole`).

    Reads RecBole's `ml-100k.item` (`class` field, space-separated), GroupLens `u.item` (19 genre flags, named by
    `u.genre` when present) or `movies.dat` ("Action|Comedy").

    Example (uses the copy inside recbole when installed):
    ```python
    >>> sorted(load_movielens_genres()["1"])  # doctest: +SKIP
    ['Animation', "Children's", 'Comedy']
    ```
    """
    folder = Path(data_dir) if data_dir is not None else recbole_example_dir("ml-100k")
    if folder is None:
        raise FileNotFoundError("No MovieLens folder given and no recbole package with ml-100k: pass data_dir")
    for sub in (folder, *(folder / r.dirname for r in MOVIELENS.values())):
        atomic = [p for p in sorted(sub.glob("*.item")) if p.name != "u.item"] if sub.is_dir() else []
        if atomic:
            table = read_table(atomic[0], "\t", quoting=csv.QUOTE_NONE)
            table.frame.columns = [c.split(":", 1)[0] for c in table.frame.columns]
            field_ = next((f for f in _GENRE_FIELDS if f in table.frame.columns), _GENRE_FIELDS[0])
            table.require("item_id", field_)
            return {i.strip(): frozenset(g.split()) for i, g in zip(table.frame["item_id"], table.frame[field_])}
        read = dict(encoding="latin-1", quoting=csv.QUOTE_NONE, header=False)
        if (sub / "u.item").is_file():
            frame = read_table(sub / "u.item", "|", **read).frame.drop(columns="_line")
            names = list(GROUPLENS_GENRES)
            if (sub / "u.genre").is_file():
                names = [line.split("|")[0] for line in (sub / "u.genre").read_text("latin-1").splitlines() if line]
            flags = frame.iloc[:, -len(names) :].to_numpy()
            return {
                str(i).strip(): frozenset(n for n, f in zip(names, row) if str(f).strip() == "1")
                for i, row in zip(frame.iloc[:, 0], flags)
            }
        if (sub / "movies.dat").is_file():
            frame = read_table(sub / "movies.dat", "::", **read).frame
            return {str(i).strip(): frozenset(g.split("|")) for i, g in zip(frame["0"], frame["2"])}
    raise FileNotFoundError(f"No MovieLens item file with genres (*.item, u.item or movies.dat) in {folder}")
