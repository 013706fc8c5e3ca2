"""Synthetic interaction logs shaped like MovieLens, written in GroupLens layout, for scale checks and tests.

Vectorised numpy throughout and fully determined by `seed`. Item popularity is Zipf-like, each user has at least
`min_per_user` distinct items (long-tailed counts, like MovieLens where every user rated at least 20 movies), and
timestamps increase within a user with occasional ties (same second), while the file lists each user's events
ordered by item id (as MovieLens-20M/25M's `ratings.csv` does), so loading has to sort by time.

Example:
```python
>>> import pathlib, tempfile
>>> from dmpo_trl.data import load_grouplens
>>> folder = write_grouplens(tempfile.mkdtemp(), num_users=30, num_items=80, num_events=900, layout="1m")
>>> log = load_grouplens(folder)
>>> log.num_users, sum(map(len, log.sequences.values())), min(map(len, log.sequences.values())) >= 20
(30, 900, True)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv


LAYOUTS = ("1m", "25m")  # ratings.dat + movies.dat with "::"  |  ratings.csv + movies.csv with a header


@dataclass(frozen=True)
class SyntheticLog:
    """Events in file order (`users`, `items` are ids, `times` unix seconds, `ratings` stars) and item titles."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    times: np.ndarray
    item_ids: np.ndarray
    titles: list[str]


def user_counts(num_users: int, num_events: int, num_items: int, min_per_user: int, rng) -> np.ndarray:
    """Long-tailed events per user (Pareto), each in [min_per_user, num_items // 2], summing to `num_events`."""
    cap = max(min_per_user, num_items // 2)
    if not num_users * min_per_user <= num_events <= num_users * cap:
        raise ValueError(f"{num_events} events do not fit {num_users} users with {min_per_user}..{cap} items each")
    weights = rng.pareto(1.3, num_users) + 0.05
    counts = np.full(num_users, min_per_user, dtype=np.int64)
    left = num_events - counts.sum()
    while left > 0:
        room = cap - counts
        share = np.where(room > 0, weights, 0.0)
        extra = np.minimum(np.floor(share / share.sum() * left).astype(np.int64), room)
        if extra.sum() == 0:  # the last few: one each to random users with room
            open_users = np.flatnonzero(room > 0)
            extra[rng.choice(open_users, size=min(left, len(open_users)), replace=False)] = 1
        counts += extra
        left = num_events - counts.sum()
    return counts


def synthetic_log(
    num_users: int = 162_541,
    num_items: int = 59_047,
    num_events: int = 25_000_095,
    *,
    min_per_user: int = 20,
    zipf_exponent: float = 1.0,
    half_stars: bool = True,
    seed: int = 0,
) -> SyntheticLog:
    """A log of exactly `num_events` events: `num_users` users, `num_items` items, no (user, item) pair twice."""
    rng = np.random.default_rng(seed)
    counts = user_counts(num_users, num_events, num_items, min_per_user, rng)
    popularity = 1.0 / np.arange(1, num_items + 1) ** zipf_exponent
    popularity = popularity[rng.permutation(num_items)]  # popular items scattered over the id range
    cumulative = np.cumsum(popularity / popularity.sum())
    users = np.repeat(np.arange(num_users, dtype=np.int64), counts)
    # draw with replacement, keep each (user, item) once, redraw what is missing; late rounds draw uniformly
    keys = np.empty(0, dtype=np.int64)
    need = counts.copy()
    for round_ in range(64):
        wanted = np.repeat(np.arange(num_users, dtype=np.int64), need)
        if round_ < 2:
            drawn = np.minimum(np.searchsorted(cumulative, rng.random(len(wanted))), num_items - 1)
        else:
            drawn = rng.integers(0, num_items, len(wanted))
        fresh = np.sort(wanted * num_items + drawn)
        fresh = fresh[np.r_[True, fresh[1:] != fresh[:-1]]]
        if len(keys):
            spot = np.minimum(np.searchsorted(keys, fresh), len(keys) - 1)
            fresh = fresh[keys[spot] != fresh]
        keys = np.sort(np.concatenate([keys, fresh]), kind="stable")  # two sorted runs: a linear merge
        need = counts - np.bincount(keys // num_items, minlength=num_users)
        if not need.any():
            break
    else:
        raise RuntimeError("could not draw distinct items; lower num_events")
    users, items = keys // num_items, keys % num_items  # sorted by user, then item: the file order
    # time: each user starts somewhere in 1996..2019 and rates in bursts; about 1 in 12 steps repeats the second
    start = rng.integers(820_454_400, 1_546_300_800, num_users)
    steps = rng.geometric(1 / 4000, len(users)) * (rng.random(len(users)) > 1 / 12)
    positions = np.argsort(rng.random(len(users)) + users, kind="stable")  # a random time rank within each user
    elapsed = np.cumsum(steps)
    elapsed -= np.repeat(elapsed[np.cumsum(counts) - counts], counts)
    times = np.empty(len(users), dtype=np.int64)
    times[positions] = np.repeat(start, counts) + elapsed
    stars = rng.integers(1, 11 if half_stars else 6, len(users))
    ratings = stars / 2 if half_stars else stars.astype(np.float64)
    item_ids = np.sort(rng.choice(np.arange(1, 4 * num_items + 1), num_items, replace=False))
    years = rng.integers(1920, 2020, num_items)
    titles = [f"Movie {i}, The ({y})" if i % 7 == 0 else f"Movie {i} ({y})" for i, y in zip(item_ids, years)]
    for i in range(1000, num_items, 1000):  # MovieLens lists a few titles under two ids
        titles[i] = titles[i - 1]
    return SyntheticLog(users + 1, item_ids[items], ratings, times, item_ids, titles)


def write_grouplens(
    folder: str | Path,
    num_users: int = 162_541,
    num_items: int = 59_047,
    num_events: int = 25_000_095,
    *,
    layout: str = "25m",
    seed: int = 0,
) -> Path:
    """Write a synthetic log to `folder` in GroupLens layout and return the folder.

    `layout="1m"`: `ratings.dat` (`user::item::stars::time`) + `movies.dat` (`item::title::genres`), latin-1, like
    MovieLens-1M. `layout="25m"`: `ratings.csv` (`userId,movieId,rating,timestamp`, half stars) + `movies.csv`
    (`movieId,title,genres`, titles quoted where they hold a comma), like MovieLens-20M/25M.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; choose from {LAYOUTS}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    log = synthetic_log(num_users, num_items, num_events, half_stars=layout == "25m", seed=seed)
    genres = np.array(["Drama", "Comedy", "Action|Thriller", "Children|Animation", "Horror"])[
        np.arange(len(log.item_ids)) % 5
    ]
    if layout == "25m":
        half = pa.array([f"{k / 2:.1f}" for k in range(11)])  # "0.5" ... "5.0", as MovieLens writes them
        stars = half.take(pa.array((log.ratings * 2).astype(np.int64)))
        table = pa.table({"userId": log.users, "movieId": log.items, "rating": stars, "timestamp": log.times})
        with open(folder / "ratings.csv", "wb") as out:
            out.write(b"userId,movieId,rating,timestamp\n")
            pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, quoting_style="none"))
        movies = pd.DataFrame({"movieId": log.item_ids, "title": log.titles, "genres": genres})
        movies.to_csv(folder / "movies.csv", index=False)  # quotes only the titles holding a comma
    else:
        blank = pa.nulls(len(log.users), pa.string()).fill_null("")
        columns = {"u": log.users, "a": blank, "i": log.items, "b": blank, "r": log.ratings.astype(np.int64)}
        table = pa.table({**columns, "c": blank, "t": log.times})
        options = pacsv.WriteOptions(include_header=False, delimiter=":", quoting_style="none")
        pacsv.write_csv(table, folder / "ratings.dat", options)  # "1::20::5::978300760": "::" as two ":"
        lines = [f"{i}::{t}::{g}\n" for i, t, g in zip(log.item_ids, log.titles, genres)]
        (folder / "movies.dat").write_text("".join(lines), encoding="latin-1")
    return folder
