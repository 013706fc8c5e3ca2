"""Property tests of interaction files and prompt templates: every valid one is accepted, every broken one refused.

Broken inputs are valid ones with one named mutation applied, so each test knows what the error must name: the file,
the line (CSV/TSV, 1-based, the header is line 1) or row (parquet, 1-based) and the column. Any exception other than
`ValueError` fails. Run with `-s` to see how many logs and templates were generated, accepted and refused.
"""

import csv
import io
import re
import string
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from dmpo_trl.data import InteractionLog, builtin_template, load_interactions, render_prompt, resolve_template
from dmpo_trl.data.prompts import item_nouns
from dmpo_trl.data.tables import natural_key


SETTINGS = settings(
    max_examples=120, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
BROKEN_SETTINGS = settings(SETTINGS, max_examples=240)
TEMPLATE_SETTINGS = settings(SETTINGS, max_examples=400)
COUNTS = Counter()
MISSING_WORDS = {"nan", "none", "null", "<na>", "nat"}

# --- valid logs: a spec of two tables, written as CSV, TSV or parquet --------------------------------------------

id_text = st.text(string.ascii_letters + string.digits + "-_.:", min_size=1, max_size=6).filter(
    lambda s: s.lower() not in MISSING_WORDS
)
title_text = st.text(
    st.characters(categories=["L", "N", "P", "S"], exclude_characters="\ufeff") | st.just(" "), min_size=1, max_size=14
).filter(lambda s: s.strip())
FORMATS = ["csv", "tsv", "parquet"]


@st.composite
def valid_logs(draw):
    """Two tables (columns, rows of raw values) plus the names and kinds the loader is called with."""
    item_kind, user_kind = draw(st.sampled_from(["int", "str"])), draw(st.sampled_from(["int", "str"]))
    ids = st.integers(0, 10**6) if item_kind == "int" else id_text
    item_ids = draw(st.lists(ids, min_size=1, max_size=5, unique_by=lambda i: str(i)))
    user_ids = draw(
        st.lists(st.integers(0, 999) if user_kind == "int" else id_text, min_size=1, max_size=3, unique=True)
    )
    time_kind = draw(st.sampled_from(["int", "float", "date", "datetime", "none"]))
    names = {
        "user": draw(st.sampled_from(["user_id", "uid", "User"])),
        "item": draw(st.sampled_from(["item_id", "movie", "Item ID"])),
        "time": None if time_kind == "none" else draw(st.sampled_from(["timestamp", "when"])),
        "title": draw(st.sampled_from(["title", "name"])),
    }
    events = draw(
        st.lists(
            st.tuples(st.sampled_from(user_ids), st.sampled_from(item_ids), st.integers(0, 30)),
            min_size=1,
            max_size=8,
            unique=time_kind != "none",  # exact repeats are dropped with a warning: a mutation of their own
        )
    )
    inter_columns = [names["user"], names["item"]] + ([names["time"]] if names["time"] else [])
    extra = draw(st.booleans())
    if extra:
        inter_columns.append("rating")
    inter_rows = []
    for user, item, t in events:
        row = {names["user"]: user, names["item"]: item, "rating": draw(st.integers(1, 5))}
        if names["time"]:
            row[names["time"]] = time_value(time_kind, t)
        inter_rows.append(row)
    titles = draw(st.lists(title_text, min_size=len(item_ids), max_size=len(item_ids)))
    item_columns = [names["item"], names["title"]] + (["genre"] if draw(st.booleans()) else [])
    item_rows = [{names["item"]: i, names["title"]: t, "genre": "Drama"} for i, t in zip(item_ids, titles)]
    return {
        "ids": item_kind,
        "names": names,
        "time_kind": time_kind,
        "interactions": {"columns": draw(st.permutations(inter_columns)), "rows": inter_rows},
        "items": {"columns": draw(st.permutations(item_columns)), "rows": item_rows},
        "formats": {"interactions": draw(st.sampled_from(FORMATS)), "items": draw(st.sampled_from(FORMATS))},
        "bom": draw(st.booleans()),
        "edits": {},  # file -> (line, how) for mutations made on the written text
        "expected": expected_log(events, item_ids, titles, time_kind),
    }


def time_value(kind, t):
    stamp = pd.Timestamp(1_600_000_000 + t * 86_400, unit="s")  # one day apart: dates keep the order
    return {"int": 1_600_000_000 + t, "float": t / 7, "date": stamp.date().isoformat(), "datetime": stamp.isoformat()}[
        kind
    ]


def expected_log(events, item_ids, titles, time_kind):
    """What the loader must give, computed here independently: stable sort by time, users in natural order."""
    order = sorted(range(len(events)), key=lambda k: events[k][2] if time_kind != "none" else 0)
    sequences = {}
    for k in order:
        sequences.setdefault(str(events[k][0]), []).append(str(events[k][1]))
    return {
        "sequences": {u: sequences[u] for u in sorted(sequences, key=natural_key)},
        "titles": {str(i): t.strip() for i, t in zip(item_ids, titles)},
    }


BAD_BYTES = "QQBADQQ"  # replaced by a latin-1 byte once the file is encoded


def write_table(folder, key, spec):
    table, fmt = spec[key], spec["formats"][key]
    path = Path(folder) / f"{key}.{fmt}"
    columns = table["columns"]
    if fmt == "parquet":
        frame = pd.DataFrame([[row.get(c) for c in columns] for row in table["rows"]], columns=columns)
        for column in columns:  # a column of numbers with one text value is written as text, as a user would
            values = [row.get(column) for row in table["rows"]]
            if any(isinstance(v, str) for v in values) and not all(
                isinstance(v, str) for v in values if v is not None
            ):
                frame[column] = [None if v is None else str(v) for v in values]
        frame.to_parquet(path)
        return path
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
    writer.writerow(columns)
    for row in table["rows"]:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    lines = buffer.getvalue().split("\n")
    for line, how in spec["edits"].get(key, []):
        if how == "extra field":
            lines[line - 1] += ("," if fmt == "csv" else "\t") + "surplus"
    data = "\n".join(lines).encode("utf-8-sig" if spec["bom"] else "utf-8")
    path.write_bytes(data.replace(BAD_BYTES.encode(), b"\xe9"))
    return path


def load(spec, folder):
    names = spec["names"]
    paths = write_table(folder, "interactions", spec), write_table(folder, "items", spec)
    return load_interactions(*paths, names["user"], names["item"], names["time"], names["title"])


# --- broken logs: a valid spec and one mutation -------------------------------------------------------------------
# Each returns (file, position of the bad record in its table or None, column or None, text the error must contain);
# "accept" instead of a file means the log is still accepted (with a warning that says how many were dropped).


def rows(spec, key):
    return spec[key]["rows"]


def missing_column(spec, data):
    key = data.draw(st.sampled_from(["interactions", "items"]))
    names = spec["names"]
    required = (
        [names["user"], names["item"], names["time"]] if key == "interactions" else [names["item"], names["title"]]
    )
    column = data.draw(st.sampled_from([c for c in required if c]))
    spec[key]["columns"] = [c for c in spec[key]["columns"] if c != column]
    return key, None, column, "missing column"


def bad_timestamp(spec, data):
    k = data.draw(st.integers(0, len(rows(spec, "interactions")) - 1))
    column = spec["names"]["time"]
    rows(spec, "interactions")[k][column] = data.draw(st.sampled_from(["yesterday", "", "2020-13-45", "12:99", "nan"]))
    return "interactions", k, column, "timestamp"


def repeated_event(spec, data):
    table = rows(spec, "interactions")
    k = data.draw(st.integers(0, len(table) - 1))
    table.insert(data.draw(st.integers(k + 1, len(table))), dict(table[k]))
    return "accept", None, None, "dropped 1 of"


def empty_title(spec, data):
    k = data.draw(st.integers(0, len(rows(spec, "items")) - 1))
    column = spec["names"]["title"]
    rows(spec, "items")[k][column] = data.draw(st.sampled_from(["", "   ", None]))
    return "items", k, column, "empty"


def not_utf8(spec, data):
    key = data.draw(st.sampled_from([k for k in ("interactions", "items") if spec["formats"][k] != "parquet"]))
    k = data.draw(st.integers(0, len(rows(spec, key)) - 1))
    column = spec["names"]["title"] if key == "items" else spec["names"]["user"]
    rows(spec, key)[k][column] = BAD_BYTES + str(rows(spec, key)[k][column])
    return key, k, column, "are not UTF-8 text"


def ids_written_differently(spec, data):
    item = spec["names"]["item"]
    pad = data.draw(st.sampled_from(["00{}", "a{}", "{}.0"]))
    for row in rows(spec, "items"):
        row[item] = pad.format(row[item])
    return "interactions", 0, item, "is not in the item file"


def item_without_title(spec, data):
    item = spec["names"]["item"]
    k = data.draw(st.integers(0, len(rows(spec, "interactions")) - 1))
    gone = rows(spec, "interactions")[k][item]
    spec["items"]["rows"] = [row for row in rows(spec, "items") if row[item] != gone]
    first = next(j for j, row in enumerate(rows(spec, "interactions")) if row[item] == gone)
    return "interactions", first, item, "is not in the item file"


def missing_id(spec, data):
    key = data.draw(st.sampled_from(["interactions", "items"]))
    names = spec["names"]
    column = data.draw(st.sampled_from([names["user"], names["item"]] if key == "interactions" else [names["item"]]))
    k = data.draw(st.integers(0, len(rows(spec, key)) - 1))
    rows(spec, key)[k][column] = data.draw(st.sampled_from(["", " ", "NaN", "None", "null", None]))
    return key, k, column, "id"


def repeated_item_id(spec, data):
    table, item = rows(spec, "items"), spec["names"]["item"]
    i, j = sorted(data.draw(st.lists(st.integers(0, len(table) - 1), min_size=2, max_size=2, unique=True)))
    table[j][item] = table[i][item]
    return "items", j, item, "appears more than once"


def extra_field(spec, data):
    key = data.draw(st.sampled_from([k for k in ("interactions", "items") if spec["formats"][k] != "parquet"]))
    k = data.draw(st.integers(0, len(rows(spec, key)) - 1))
    spec["edits"].setdefault(key, []).append((k + 2, "extra field"))
    return key, k, None, "fields, but the first line has"


def no_interactions(spec, data):
    spec["interactions"]["rows"] = []
    return "interactions", None, None, "no interactions"


MUTATIONS = {  # name -> (mutation, whether it applies to a spec)
    "item ids as numbers in one file, text in the other": (ids_written_differently, lambda spec: spec["ids"] == "int"),
    "missing column": (missing_column, lambda spec: True),
    "unparseable timestamp": (bad_timestamp, lambda spec: spec["names"]["time"] is not None),
    "duplicate event (dropped with a warning)": (repeated_event, lambda spec: spec["names"]["time"] is not None),
    "empty title": (empty_title, lambda spec: True),
    "bytes that are not UTF-8": (not_utf8, lambda spec: set(spec["formats"].values()) != {"parquet"}),
    "interaction with an item that has no title": (item_without_title, lambda spec: True),
    "NaN/None/empty id": (missing_id, lambda spec: True),
    "item id twice in the item file": (repeated_item_id, lambda spec: len(rows(spec, "items")) > 1),
    "line with an extra field": (extra_field, lambda spec: set(spec["formats"].values()) != {"parquet"}),
    "no interactions": (no_interactions, lambda spec: True),
}


def position(spec, key, k):
    """How the error names record `k` of a table: "line N" (header is line 1) or "row N" for parquet."""
    return f"row {k + 1}" if spec["formats"][key] == "parquet" else f"line {k + 2}"


# --- the properties ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@SETTINGS
@given(spec=valid_logs())
def test_valid_logs_are_accepted(spec):
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log = load(spec, folder)
    assert not caught, [str(w.message) for w in caught]  # nothing dropped, nothing guessed
    assert log.sequences == spec["expected"]["sequences"]
    assert list(log.sequences) == list(spec["expected"]["sequences"])  # users in natural order
    assert log.titles == spec["expected"]["titles"]
    COUNTS["logs generated"] += 1
    COUNTS["logs accepted"] += 1


@pytest.mark.slow
@BROKEN_SETTINGS
@given(spec=valid_logs(), data=st.data())
def test_broken_logs_are_refused_naming_file_line_and_column(spec, data):
    rng = data.draw(st.randoms(use_true_random=False))  # picks mutations evenly, unlike sampled_from
    name = rng.choice([n for n, (_, applies) in MUTATIONS.items() if applies(spec)])
    note(f"mutation: {name}")
    key, k, column, needle = MUTATIONS[name][0](spec, data)
    with tempfile.TemporaryDirectory() as folder:
        if key == "accept":
            with pytest.warns(UserWarning, match=needle):
                log = load(spec, folder)
            assert log.sequences == spec["expected"]["sequences"] and log.titles == spec["expected"]["titles"]
            COUNTS["logs accepted"] += 1
        else:
            with pytest.raises(ValueError) as caught:  # any other exception type fails the test
                load(spec, folder)
            message = str(caught.value)
            assert f"{key}.{spec['formats'][key]}" in message, message  # the file
            if k is not None:
                assert re.search(rf"\.{spec['formats'][key]}, {position(spec, key, k)}: ", message), message
            if column is not None:
                assert repr(column) in message, message
            assert needle in message, message
            COUNTS["logs refused"] += 1
    COUNTS["logs generated"] += 1
    COUNTS[f"log mutation: {name}"] += 1


# --- InteractionLog built in Python ------------------------------------------------------------------------------

LOG_MUTATIONS = {
    "int item id": lambda seqs, titles: (seqs["u"].append(1), "sequences['u'][2]"),
    "item without title": lambda seqs, titles: (seqs["u"].append("zz"), "sequences['u'][2]"),
    "empty user id": lambda seqs, titles: (seqs.update({" ": ["a"]}), "sequences: key ' '"),
    "None user id": lambda seqs, titles: (seqs.update({None: ["a"]}), "sequences: key None"),
    "empty title": lambda seqs, titles: (titles.update(a=" "), "titles['a']"),
    "title not a string": lambda seqs, titles: (titles.update(b=float("nan")), "titles['b']"),
    "sequence not a list": lambda seqs, titles: (seqs.update(u="ab"), "sequences['u']"),
}


@pytest.mark.parametrize("name", sorted(LOG_MUTATIONS))
def test_interaction_log_refuses_what_loaders_never_give(name):
    sequences, titles = {"u": ["a", "b"], "v": []}, {"a": "Heat", "b": "Babe"}
    assert InteractionLog(dict(sequences), dict(titles)).num_users == 2
    expected = LOG_MUTATIONS[name](sequences, titles)[1]
    with pytest.raises(ValueError, match=re.escape(f"InteractionLog: {expected}")):
        InteractionLog(sequences, titles)
    COUNTS[f"InteractionLog mutation: {name}"] += 1


# --- prompt templates --------------------------------------------------------------------------------------------

literal = st.text(st.characters(categories=["L", "N", "P", "Zs"]) | st.sampled_from("{}\n"), max_size=12).map(
    lambda s: s.replace("{", "{{").replace("}", "}}")
)
FIELD_FORMS = {
    "history": ["{history}", "{history!s}", "{history:>3}", "{history!r}"],
    "candidates": ["{candidates}", "{candidates:<2}"],
    "num_candidates": ["{num_candidates}", "{num_candidates:d}", "{num_candidates:03}", "{num_candidates!s}"],
}


@st.composite
def valid_templates(draw):
    """A template as a list of parts (literal text with braces escaped, and fields), joined by the tests."""
    fields = ["history"] + [f for f in ("candidates", "num_candidates") if draw(st.booleans())]
    fields += draw(st.lists(st.sampled_from(sorted(FIELD_FORMS)), max_size=2))
    fields = draw(st.permutations(fields))
    parts = [draw(literal)]
    for field in fields:
        parts += [draw(st.sampled_from(FIELD_FORMS[field])), draw(literal)]
    return parts


def insert(text):
    """A mutation that puts `text` (or what it draws) between two parts of the template."""

    def mutate(parts, data):
        value = data.draw(st.sampled_from(text)) if isinstance(text, list) else text
        spot = data.draw(st.integers(0, len(parts)))
        return "".join(parts[:spot] + [value] + parts[spot:])

    return mutate


def without_history(parts, data):
    return "".join("(history)" if part.startswith("{history") else part for part in parts)  # not the style "history"


TEMPLATE_MUTATIONS = {  # name -> (mutation, text the error must contain besides the template itself)
    "unknown field": (insert(["{user}", "{items}", "{0}", "{History}", "{ history }"]), "unknown field"),
    "empty field {}": (insert("{}"), "an empty field {}"),
    "no {history}": (without_history, "no {history} field"),
    "lone brace": (insert(["{", "}"]), ""),
    "format spec that crashes": (
        insert(["{history:d}", "{candidates:.2f}", "{num_candidates:s}", "{history:=5}"]),
        "cannot be rendered",
    ),
    "bad conversion": (insert(["{history!x}", "{candidates!}"]), ""),
    "index or attribute": (insert(["{history[0]}", "{history.upper}", "{candidates[9]}"]), "unknown field"),
    "field inside a format spec": (insert("{history:{num_candidates}}"), "inside its format spec"),
}


@pytest.mark.slow
@TEMPLATE_SETTINGS
@given(parts=valid_templates(), history=st.lists(title_text, min_size=1, max_size=3), candidates=st.lists(title_text))
def test_valid_templates_are_accepted(parts, history, candidates):
    template = "".join(parts)
    assert resolve_template(template) == template
    text = render_prompt(template, history, candidates)
    assert all(title in text for title in history) or "!r" in template  # repr may escape characters
    COUNTS["templates generated"] += 1
    COUNTS["templates accepted"] += 1


@pytest.mark.slow
@TEMPLATE_SETTINGS
@given(parts=valid_templates(), data=st.data())
def test_broken_templates_are_refused_saying_what_is_wrong(parts, data):
    name = data.draw(st.randoms(use_true_random=False)).choice(sorted(TEMPLATE_MUTATIONS))
    mutate, needle = TEMPLATE_MUTATIONS[name]
    broken = mutate(parts, data)
    for call in (lambda: resolve_template(broken), lambda: render_prompt(broken, ["Heat"], ["Babe"])):
        with pytest.raises(ValueError) as caught:  # not KeyError/IndexError/AttributeError from str.format
            call()
        message = str(caught.value)
        assert repr(broken) in message and needle in message, (name, message)
    COUNTS["templates generated"] += 1
    COUNTS["templates refused"] += 1
    COUNTS[f"template mutation: {name}"] += 1


@pytest.mark.parametrize("template", [None, 3, b"{history}", ["{history}"]])
def test_template_that_is_not_a_string(template):
    if template is not None:
        with pytest.raises(ValueError, match="format string"):
            resolve_template(template)
    with pytest.raises(ValueError, match="a prompt template is a string"):
        render_prompt(template, ["Heat"])


# --- item nouns --------------------------------------------------------------------------------------------------

word = st.text(st.characters(categories=["L"]), min_size=1, max_size=8)
valid_nouns = word | st.builds(lambda a, b: f"{a} {b}", word, word) | st.builds(lambda a, b: f"{a}/{b}", word, word)


@TEMPLATE_SETTINGS
@given(noun=valid_nouns, style=st.sampled_from(["history", "candidates", None]))
def test_valid_item_nouns_are_accepted(noun, style):
    singular, plural = item_nouns(noun)
    template = builtin_template(style, noun)
    assert resolve_template(template) == template and plural in template
    assert singular in render_prompt(template, ["Heat"], ["Babe", "Casino"])
    COUNTS["item nouns generated"] += 1
    COUNTS["item nouns accepted"] += 1


def noun_broken(noun, data):
    """One named mutation of a valid noun: (name, the broken noun)."""
    spot = data.draw(st.integers(0, len(noun)))
    name, value = data.draw(
        st.sampled_from(
            [
                ("empty", data.draw(st.sampled_from(["", "   "]))),
                ("brace", noun[:spot] + data.draw(st.sampled_from(["{", "}", "{items}"])) + noun[spot:]),
                ("empty side of '/'", data.draw(st.sampled_from([f"{noun}/", f"/{noun}", " / "]))),
                ("two '/'", f"{noun}/{noun}/{noun}"),
                (
                    "control character inside",
                    noun[:1] + data.draw(st.sampled_from(["\n", "\t", "\x00"])) + noun[1:] + "s",
                ),
                ("not a string", data.draw(st.sampled_from([None, 3, noun.encode(), [noun]]))),
            ]
        )
    )
    return name, value


@pytest.mark.slow
@TEMPLATE_SETTINGS
@given(noun=valid_nouns, data=st.data())
def test_broken_item_nouns_are_refused(noun, data):
    name, broken = noun_broken(noun, data)
    for call in (item_nouns, lambda n: builtin_template("history", n), lambda n: builtin_template("{history}", n)):
        with pytest.raises(ValueError, match=re.escape("item_noun must be a plural noun such as 'books'")):
            call(broken)
    COUNTS["item nouns generated"] += 1
    COUNTS["item nouns refused"] += 1
    COUNTS[f"item noun mutation: {name}"] += 1


def test_counts():
    """Runs after the properties (file order): prints what they generated, so `-s` shows it."""
    for what in ("logs", "templates", "item nouns"):
        got = [COUNTS[f"{what} {k}"] for k in ("generated", "accepted", "refused")]
        print(f"\n{what}: generated {got[0]}, accepted {got[1]}, refused {got[2]}", end="")
        if got[0]:
            assert got[1] + got[2] == got[0]
    print()
    for name, count in sorted(COUNTS.items()):
        if "mutation" in name:
            print(f"  {name}: {count}")
    if COUNTS["logs generated"] and COUNTS["templates generated"] and COUNTS["item nouns generated"]:  # whole file
        assert all(COUNTS[f"log mutation: {name}"] > 0 for name in MUTATIONS)
        assert COUNTS["item nouns accepted"] and COUNTS["item nouns refused"]
        assert all(COUNTS[f"template mutation: {name}"] > 0 for name in TEMPLATE_MUTATIONS)
