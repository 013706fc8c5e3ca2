"""The large-log path end to end on a small synthetic MovieLens-shaped log: load_grouplens -> split -> rows."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from dmpo_trl.data import build_preference_dataset, leave_last_out, load_grouplens
from dmpo_trl.data.synthetic import synthetic_log, write_grouplens


SHAPE = dict(num_users=60, num_items=300, num_events=3000)


@pytest.fixture(scope="module")
def ml1m(tmp_path_factory):
    return write_grouplens(tmp_path_factory.mktemp("ml-1m"), **SHAPE, layout="1m", seed=3)


def expected_sequences(layout: str) -> dict[str, list[str]]:
    """Each user's items sorted by time, ties in file order, straight from the generator's arrays."""
    raw = synthetic_log(**SHAPE, half_stars=layout == "25m", seed=3)
    frame = pd.DataFrame({"user": raw.users, "item": raw.items, "time": raw.times})
    frame = frame.sort_values(["user", "time"], kind="stable")
    return {str(u): [str(i) for i in g["item"]] for u, g in frame.groupby("user", sort=True)}


def test_counts_order_and_both_engines_agree(ml1m, tmp_path):
    log = load_grouplens(ml1m)
    lengths = [len(s) for s in log.sequences.values()]
    assert log.name == "movielens-1m" and log.num_users == 60 and log.num_items == 300
    assert sum(lengths) == 3000 and min(lengths) >= 20
    assert log.sequences == expected_sequences("1m")
    assert list(log.sequences) == [str(u) for u in range(1, 61)]  # natural order, "2" before "10"
    # the file lists a user's events by item id, not by time: the loader really sorted them
    file_order = pd.read_csv(ml1m / "ratings.dat", sep="::", engine="python", header=None, dtype=str)
    first_user = file_order[file_order[0] == "1"][1].tolist()
    assert sorted(first_user) == sorted(log.sequences["1"]) and first_user != log.sequences["1"]
    plain = load_grouplens(ml1m, engine="pandas")
    assert plain.sequences == log.sequences and plain.titles == log.titles
    assert list(plain.sequences) == list(log.sequences)
    for min_rating in (3, 5):
        fast, slow = load_grouplens(ml1m, min_rating=min_rating), load_grouplens(ml1m, min_rating, engine="pandas")
        assert fast.sequences == slow.sequences and sum(map(len, fast.sequences.values())) < 3000


def test_25m_csv_layout(tmp_path):
    folder = write_grouplens(tmp_path, **SHAPE, layout="25m", seed=3)
    log = load_grouplens(folder)
    assert log.name == "movielens-25m" and log.sequences == expected_sequences("25m")
    raw = synthetic_log(**SHAPE, half_stars=True, seed=3)
    assert log.titles == dict(zip(map(str, raw.item_ids), raw.titles))
    assert any(", The (" in title for title in log.titles.values())  # quoted in movies.csv: the comma is kept
    plain = load_grouplens(folder, engine="pandas")
    assert plain.sequences == log.sequences and plain.titles == log.titles
    with pytest.raises(ValueError, match="Unknown engine"):
        load_grouplens(folder, engine="polars")


def test_rows_end_to_end_and_equal_to_the_plain_path(ml1m):
    log = load_grouplens(ml1m)
    splits = leave_last_out(log)
    rows = build_preference_dataset(log, splits["train"], num_negatives=4)
    assert len(rows) == 60
    for row, example in zip(rows, splits["train"]):
        touched = {log.titles[i] for i in log.sequences[row["user"]]}
        rejected = [c[1:] for c in row["rejected"]]
        assert len(set(rejected)) == 4 and not set(rejected) & touched
        assert row["chosen"] == f" {log.titles[example.target]}" and example.target == log.sequences[row["user"]][-3]
        assert row["prompt"].count("\n") >= len(example.history) and len(example.history) == 10
    plain = load_grouplens(ml1m, engine="pandas")
    assert build_preference_dataset(plain, leave_last_out(plain)["train"]).to_dict() == rows.to_dict()


def corrupt(folder, tmp_path, line: int, text: str):
    """A copy of `folder` whose ratings.dat has `text` at `line` (1-based)."""
    out = tmp_path / f"bad{line}"
    out.mkdir()
    (out / "movies.dat").write_bytes((folder / "movies.dat").read_bytes())
    lines = (folder / "ratings.dat").read_text().splitlines()
    lines[line - 1] = text
    (out / "ratings.dat").write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.parametrize(
    "line, text, needle",
    [
        (1234, "5::999999::3::978300000", "ratings.dat, line 1234: item id '999999' is not in the item file"),
        (77, "::ITEM::3::978300000", "ratings.dat, line 77: empty user id in column 'user_id'"),
        (2000, "5::nan::3::978300000", "ratings.dat, line 2000: missing item id ('nan') in column 'item_id'"),
        (900, "5::ITEM::3::yesterday", "ratings.dat, line 900: cannot parse timestamp 'yesterday'"),
        (12, "5::ITEM::3::978300000::extra", "ratings.dat, line 12: 5 fields, but the first line has 4"),
    ],
)
def test_a_bad_row_is_named_the_same_by_both_engines(ml1m, tmp_path, line, text, needle):
    known = (ml1m / "movies.dat").read_text(encoding="latin-1").split("::", 1)[0]
    folder = corrupt(ml1m, tmp_path, line, text.replace("ITEM", known))
    messages = []
    for engine in ("arrow", "pandas"):
        with pytest.raises(ValueError) as info:
            load_grouplens(folder, engine=engine)
        messages.append(str(info.value))
    assert needle in messages[0] and messages[0] == messages[1]


def test_blank_lines_and_repeats_keep_line_numbers_and_warnings(ml1m, tmp_path):
    lines = (ml1m / "ratings.dat").read_text().splitlines()
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "movies.dat").write_bytes((ml1m / "movies.dat").read_bytes())
    text = [*lines[:10], "", lines[3], *lines[10:20], "", "1::999999::3::1"]
    (folder / "ratings.dat").write_text("\n".join(text) + "\n")
    messages = []
    for engine in ("arrow", "pandas"):
        with pytest.raises(ValueError, match=r"ratings\.dat, line 24: item id '999999'") as info:
            load_grouplens(folder, engine=engine)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    (folder / "ratings.dat").write_text("\n".join(text[:-1]) + "\n")
    logs, caught = [], []
    for engine in ("arrow", "pandas"):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            logs.append(load_grouplens(folder, engine=engine))
        caught.append([str(w.message) for w in seen])
    assert logs[0].sequences == logs[1].sequences and sum(map(len, logs[0].sequences.values())) == 20
    assert caught[0] == caught[1] and "dropped 1 of 21 interactions" in caught[0][0] and "line 12" in caught[0][0]


def test_generator_is_seeded_and_shaped():
    a, b = synthetic_log(**SHAPE, seed=1), synthetic_log(**SHAPE, seed=1)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("users", "items", "times", "ratings"))
    counts = np.bincount(a.users)[1:]
    assert counts.sum() == 3000 and counts.min() >= 20 and counts.max() > 3 * np.median(counts)  # long tail
    pairs = a.users * 10**7 + a.items
    assert len(np.unique(pairs)) == len(pairs)  # no (user, item) twice
    popularity = np.sort(np.bincount(np.searchsorted(a.item_ids, a.items)))[::-1]
    assert popularity[:30].sum() > 5 * popularity[-30:].sum()  # a few items take many events


def test_csv_layout_with_dates_quotes_and_stray_spaces_matches_the_plain_path(tmp_path):
    ratings = "userId,movieId,rating,timestamp\n1,1,4,2020-01-01 10:00\n 1 ,2,4,2019-01-01\n2,1,3,2021-05-05\n"
    (tmp_path / "ratings.csv").write_text(ratings)
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n1,"Heat, The (1995)",Drama\n2,Fargo (1996),Crime\n')
    log = load_grouplens(tmp_path)
    assert log.sequences == {"1": ["2", "1"], "2": ["1"]} and log.titles["1"] == "Heat, The (1995)"
    plain = load_grouplens(tmp_path, engine="pandas")
    assert plain.sequences == log.sequences and plain.titles == log.titles
