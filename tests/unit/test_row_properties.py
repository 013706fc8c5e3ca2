"""Property tests of row checking: every valid row is accepted, every broken one refused naming its row and field.

Broken rows are valid rows with one named mutation applied, so each test knows which field the error must name. Run
with `-s` to see how many rows were generated, accepted and refused.
"""

import copy
import json
import re
from collections import Counter

import pytest
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import build_model
from trl import extract_prompt

from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl.rows import ROLES, check_row, check_tokenized_row, extract_implicit_prompt, is_response_list


SETTINGS = settings(
    max_examples=800, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
TOKENIZED_SETTINGS = settings(SETTINGS, max_examples=400)
VOCAB_SIZE = 100
COUNTS = Counter()

# --- valid rows ---------------------------------------------------------------------------------------------------

texts = st.text(min_size=1, max_size=12)
indices = st.integers(min_value=0, max_value=10**6)
TOOL = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}


@st.composite
def message(draw, role=None, content=texts):
    role = role or draw(st.sampled_from(ROLES))
    result = {"role": role, "content": draw(content | st.just(""))}
    if role == "assistant" and draw(st.booleans()) and draw(st.booleans()):  # a tool call, with or without text
        result["tool_calls"] = [{"type": "function", "function": {"name": "search", "arguments": {}}}]
        result["content"] = draw(st.sampled_from([None, result["content"]]))
    elif draw(st.booleans()):  # what Arrow adds to messages that lack a key other messages have
        result.update(tool_calls=None, name=None)
    return result


@st.composite
def valid_rows(draw):
    """A row TRL's DPOTrainer takes: text or conversational, one rejected response or a list of K, optional extras."""
    conversational = draw(st.booleans())
    num_rejected = draw(st.integers(1, 6))
    responses = draw(st.lists(texts, min_size=num_rejected + 1, max_size=num_rejected + 1, unique=True))
    if conversational:
        prompt = draw(st.lists(message(), min_size=1, max_size=3))
        responses = [[{"role": "assistant", "content": text}] for text in responses]
    else:
        prompt = draw(texts)
    chosen, *rejected = responses
    single = num_rejected == 1 and draw(st.booleans())
    row = {"prompt": prompt, "chosen": chosen, "rejected": rejected[0] if single else rejected}
    tools = [None, []] + ([[TOOL], json.dumps([TOOL]), "null"] if conversational else [])
    if draw(st.booleans()):
        row["tools"] = draw(st.sampled_from(tools))
    if draw(st.booleans()):
        row["chat_template_kwargs"] = draw(st.sampled_from([None, {}, {"enable_thinking": False}]))
    return row


# --- broken rows: a valid row and one mutation -------------------------------------------------------------------


def response_fields(row):
    rejected = row["rejected"]
    if isinstance(rejected, list) and not isinstance(rejected[0], dict):
        return ["prompt", "chosen"] + [f"rejected[{k}]" for k in range(len(rejected))]
    return ["prompt", "chosen", "rejected"]


def get(row, field):
    name, _, k = field.partition("[")
    return row[name][int(k[:-1])] if k else row[name]


def put(row, field, value):
    name, _, k = field.partition("[")
    if k:
        row[name][int(k[:-1])] = value
    else:
        row[name] = value


def is_chat(row):
    return isinstance(row["prompt"], list)


def message_paths(row):
    """(field of a message, the message) for every message of a conversational row."""
    return [(f"{field}[{m}]", msg) for field in response_fields(row) for m, msg in enumerate(get(row, field))]


def pick_message(row, data, plain=False):
    paths = message_paths(row)
    if plain:  # one that cannot go without content (no tool call)
        paths = [(path, msg) for path, msg in paths if not msg.get("tool_calls")]
    return data.draw(st.sampled_from(paths))


def set_message_key(row, path, key, value):
    field, _, m = path.rpartition("[")
    message_ = get(row, field)[int(m[:-1])]
    if value is DELETE:
        message_.pop(key, None)
    else:
        message_[key] = value


DELETE = object()
NOT_TEXT = st.sampled_from([None, 0, 1.5, True, {"text": "x"}, b"bytes"])


def role_broken(row, data, value):
    path, _ = pick_message(row, data)
    set_message_key(row, path, "role", value)
    return f"{path}.role"


def content_broken(row, data, value):
    path, _ = pick_message(row, data, plain=True)
    set_message_key(row, path, "content", value)
    return f"{path}.content"


def message_not_a_dict(row, data):
    # Not the message of a one-message rejected response: a non-message first in `rejected` makes it a list of K.
    path = data.draw(st.sampled_from([path for path, _ in message_paths(row) if path != "rejected[0]"]))
    field, _, m = path.rpartition("[")
    get(row, field)[int(m[:-1])] = data.draw(st.sampled_from(["text", None, 3, ["role", "user"]]))
    return path


def tool_calls_off_assistant(row, data):
    paths = [(path, msg) for path, msg in message_paths(row) if msg["role"] != "assistant"]
    path, _ = data.draw(st.sampled_from(paths))
    set_message_key(row, path, "tool_calls", [{"type": "function", "function": {"name": "f", "arguments": {}}}])
    return f"{path}.tool_calls"


def response_broken(row, data, value):
    field = data.draw(st.sampled_from(response_fields(row)))
    if field.startswith("rejected[") and isinstance(value, dict):
        value = None  # a dict first in the rejected list would read as a message of one conversational response
    put(row, field, value)
    return field


def response_missing(row, data):
    field = data.draw(st.sampled_from(["prompt", "chosen", "rejected"]))
    del row[field]
    return field


def response_empty(row, data):
    field = data.draw(st.sampled_from(response_fields(row)))
    put(row, field, [] if is_chat(row) else "")
    return field


def rejected_empty(row, data):
    row["rejected"] = []
    return "rejected"


def form_mixed(row, data):
    field, to_text = data.draw(st.sampled_from(response_fields(row))), is_chat(row)
    put(row, field, " x" if to_text else [{"role": "assistant", "content": get(row, field)}])
    return ("mixed", field, to_text)


def chosen_repeated(row, data):
    field = data.draw(st.sampled_from([f for f in response_fields(row) if f.startswith("rejected")]))
    put(row, field, copy.deepcopy(row["chosen"]))
    return field


def tools_broken(row, data):
    value = data.draw(st.sampled_from([3, "not json", '{"name": "f"}', {"name": "f"}, [1], [TOOL, "f"]]))
    row["tools"] = value
    return f"tools[{len(value) - 1}]" if isinstance(value, list) else "tools"


def tools_on_text(row, data):
    row["tools"] = data.draw(st.sampled_from([[TOOL], json.dumps([TOOL])]))
    return "tools"


def template_kwargs_broken(row, data):
    row["chat_template_kwargs"] = data.draw(st.sampled_from(["enable_thinking", 1, ["x"]]))
    return "chat_template_kwargs"


MUTATIONS = {  # name -> (mutation, applies to conversational rows, applies to plain-text rows)
    "role missing": (lambda row, data: role_broken(row, data, DELETE), True, False),
    "role None": (lambda row, data: role_broken(row, data, None), True, False),
    "role unknown": (lambda row, data: role_broken(row, data, data.draw(st.sampled_from(["bot", "", "User"]))), 1, 0),
    "content missing": (lambda row, data: content_broken(row, data, DELETE), True, False),
    "content None": (lambda row, data: content_broken(row, data, None), True, False),
    "content not a string": (lambda row, data: content_broken(row, data, data.draw(NOT_TEXT.filter(bool))), 1, 0),
    "message not a dict": (message_not_a_dict, True, False),
    "tool_calls off an assistant message": (tool_calls_off_assistant, True, False),
    "response not text": (lambda row, data: response_broken(row, data, data.draw(NOT_TEXT)), True, True),
    "response missing": (response_missing, True, True),
    "response empty": (response_empty, True, True),
    "rejected empty list": (rejected_empty, True, True),
    "text mixed with conversational": (form_mixed, True, True),
    "chosen repeated in rejected": (chosen_repeated, True, True),
    "tools malformed": (tools_broken, True, True),
    "tools on a plain-text row": (tools_on_text, False, True),
    "chat_template_kwargs not a dict": (template_kwargs_broken, True, True),
}


def applicable(row):
    chat = is_chat(row)
    names = [name for name, (_, on_chat, on_text) in MUTATIONS.items() if (on_chat if chat else on_text)]
    if chat and not any(msg["role"] != "assistant" for _, msg in message_paths(row)):
        names.remove("tool_calls off an assistant message")
    return names


MIXED = re.compile(r"^Row (\d+): plain text \(([^)]*)\) mixed with conversational \(([^)]*)\); ")
NAMED = re.compile(r"^Row (\d+): `([^`]+)` ")


def assert_names(error: ValueError, index: int, expected):
    """The message starts with the row and names the field; for a mixed row, the mutated field alone has its form."""
    text = str(error)
    if isinstance(expected, tuple):
        _, field, to_text = expected
        match = MIXED.match(text)
        assert match, text
        row, text_fields, chat_fields = match.groups()
        assert (text_fields if to_text else chat_fields) == field, text
    else:
        match = NAMED.match(text)
        assert match, text
        row, field = match.groups()
        assert field == expected, (field, expected, text)
    assert int(row) == index, text


# --- the properties ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@SETTINGS
@given(row=valid_rows(), index=indices)
def test_valid_rows_are_accepted(row, index):
    snapshot = copy.deepcopy(row)
    chat, rejected = check_row(row, index)
    assert row == snapshot  # checking never changes the row
    assert chat == isinstance(row["prompt"], list)
    one = isinstance(row["rejected"], str) or isinstance(row["rejected"][0], dict)
    assert rejected == ([row["rejected"]] if one else row["rejected"])
    COUNTS["generated"] += 1
    COUNTS["accepted"] += 1


@pytest.mark.slow
@SETTINGS
@given(row=valid_rows(), index=indices, data=st.data())
def test_broken_rows_are_refused_naming_row_and_field(row, index, data):
    name = data.draw(st.sampled_from(applicable(row)))
    expected = MUTATIONS[name][0](row, data)
    with pytest.raises(ValueError) as caught:  # any other exception type fails the test
        check_row(row, index)
    assert_names(caught.value, index, expected)
    COUNTS["generated"] += 1
    COUNTS["refused"] += 1
    COUNTS[f"mutation: {name}"] += 1


# --- pre-tokenized rows ------------------------------------------------------------------------------------------

ids = st.lists(st.integers(0, VOCAB_SIZE - 1), min_size=1, max_size=8)


@st.composite
def valid_tokenized_rows(draw):
    num_rejected = draw(st.integers(1, 6))
    chosen, *rejected = draw(st.lists(ids, min_size=num_rejected + 1, max_size=num_rejected + 1, unique_by=tuple))
    single = num_rejected == 1 and draw(st.booleans())
    return {"prompt_ids": draw(ids), "chosen_ids": chosen, "rejected_ids": rejected[0] if single else rejected}


def tokenized_fields(row):
    rejected = row["rejected_ids"]
    if isinstance(rejected[0], list):
        return ["prompt_ids", "chosen_ids"] + [f"rejected_ids[{k}]" for k in range(len(rejected))]
    return ["prompt_ids", "chosen_ids", "rejected_ids"]


def token_broken(row, data, value):
    field = data.draw(st.sampled_from(tokenized_fields(row)))
    tokens = get(row, field)
    tokens[data.draw(st.integers(0, len(tokens) - 1))] = value
    return field


def tokenized_empty(row, data):
    field = data.draw(st.sampled_from(tokenized_fields(row)))
    put(row, field, [])
    return field


def tokenized_not_a_list(row, data):
    field = data.draw(st.sampled_from(tokenized_fields(row)))
    put(row, field, data.draw(st.sampled_from([None, 3, "1 2 3", (1, 2)])))
    if field == "rejected_ids[0]" and not isinstance(row["rejected_ids"][0], list):
        return "rejected_ids"  # without a list first, the whole field reads as one (malformed) id list
    return field


def tokenized_missing(row, data):
    field = data.draw(st.sampled_from(["prompt_ids", "chosen_ids", "rejected_ids"]))
    del row[field]
    return field


def tokenized_repeated(row, data):
    field = data.draw(st.sampled_from([f for f in tokenized_fields(row) if f.startswith("rejected_ids")]))
    put(row, field, list(row["chosen_ids"]))
    return field


TOKENIZED_MUTATIONS = {
    "id not an int": lambda row, data: token_broken(row, data, data.draw(st.sampled_from(["a", 1.0, None, True]))),
    "id outside the vocabulary": lambda row, data: token_broken(
        row, data, data.draw(st.sampled_from([-1, VOCAB_SIZE, 10**9]))
    ),
    "field empty": tokenized_empty,
    "field not a list": tokenized_not_a_list,
    "field missing": tokenized_missing,
    "rejected_ids empty list": lambda row, data: (row.update(rejected_ids=[]), "rejected_ids")[1],
    "chosen repeated in rejected": tokenized_repeated,
}


@pytest.mark.slow
@TOKENIZED_SETTINGS
@given(row=valid_tokenized_rows(), index=indices)
def test_valid_tokenized_rows_are_accepted(row, index):
    rejected = check_tokenized_row(row, index, VOCAB_SIZE)
    assert rejected == (row["rejected_ids"] if isinstance(row["rejected_ids"][0], list) else [row["rejected_ids"]])
    COUNTS["generated"] += 1
    COUNTS["accepted"] += 1


@pytest.mark.slow
@TOKENIZED_SETTINGS
@given(row=valid_tokenized_rows(), index=indices, data=st.data())
def test_broken_tokenized_rows_are_refused_naming_row_and_field(row, index, data):
    name = data.draw(st.sampled_from(sorted(TOKENIZED_MUTATIONS)))
    expected = TOKENIZED_MUTATIONS[name](row, data)
    with pytest.raises(ValueError) as caught:
        check_tokenized_row(row, index, VOCAB_SIZE)
    assert_names(caught.value, index, expected)
    COUNTS["generated"] += 1
    COUNTS["refused"] += 1
    COUNTS[f"mutation (tokenized): {name}"] += 1


@pytest.mark.slow
@SETTINGS
@given(row=valid_rows())
def test_implicit_prompt_is_recovered(row):
    """Folding the prompt into `chosen` and every rejected response, then extracting it: TRL's `extract_prompt` for
    one rejected response; for K, a prompt each response starts with, as long as the shortest pairwise one."""
    prompt, single = row["prompt"], not is_response_list(row["rejected"])
    rejected = [row["rejected"]] if single else row["rejected"]
    implicit = {"chosen": prompt + row["chosen"], "rejected": prompt + rejected[0] if single else []}
    if not single:
        implicit["rejected"] = [prompt + response for response in rejected]
    extracted = extract_implicit_prompt(copy.deepcopy(implicit), index=0)
    pairwise = [extract_prompt({"chosen": implicit["chosen"], "rejected": prompt + r})["prompt"] for r in rejected]
    if single:
        assert extracted == extract_prompt(implicit)
    assert extracted["prompt"] == min(pairwise, key=len)
    assert extracted["prompt"] + extracted["chosen"] == implicit["chosen"]
    for whole, rest in zip(rejected, [extracted["rejected"]] if single else extracted["rejected"], strict=True):
        assert extracted["prompt"] + rest == prompt + whole


def test_implicit_prompt_refuses_what_is_not_a_response():
    with pytest.raises(ValueError, match=r"Row 4: `rejected\[1\]` must be a string or a list of messages"):
        extract_implicit_prompt({"chosen": "Q: a", "rejected": ["Q: b", None]}, index=4)


def test_counts():
    """Runs after the properties (file order): prints what they generated, so `-s` shows it."""
    print(f"\nrows generated {COUNTS['generated']}, accepted {COUNTS['accepted']}, refused {COUNTS['refused']}")
    for name, count in sorted(COUNTS.items()):
        if name.startswith("mutation"):
            print(f"  {name}: {count}")
    if COUNTS["generated"]:  # the whole file ran
        assert COUNTS["accepted"] + COUNTS["refused"] == COUNTS["generated"]
        assert all(COUNTS[f"mutation: {name}"] > 0 for name in MUTATIONS)


# --- what Arrow makes of conversational rows reaches the trainer -------------------------------------------------


def test_arrow_filled_conversational_rows_train(tokenizer, tmp_path):
    """Messages with keys other messages lack come back from Arrow with those keys set to None: still accepted."""
    rows = [
        {
            "prompt": [{"role": "system", "content": "Recommend."}, {"role": "user", "content": "Heat. Next:"}],
            "chosen": [{"role": "assistant", "content": "Casino"}],
            "rejected": [[{"role": "assistant", "content": "Babe"}], [{"role": "assistant", "content": "Fargo"}]],
            "tools": json.dumps([TOOL]),
        },
        {
            "prompt": [
                {"role": "user", "content": "Fargo. Next:"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"type": "function", "function": {"name": "s"}}],
                },
                {"role": "tool", "content": "Heat, Babe"},
            ],
            "chosen": [{"role": "assistant", "content": "Heat"}],
            "rejected": [[{"role": "assistant", "content": "Babe"}]],
            "tools": None,
        },
    ]
    dataset = Dataset.from_list(rows)
    assert dataset[0]["prompt"][0]["tool_calls"] is None  # Arrow filled the key in
    args = DMPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, report_to=[], max_steps=1)
    trainer = DMPOTrainer(
        build_model(tokenizer),
        ref_model=build_model(tokenizer, seed=1),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    assert trainer.train_dataset["num_rejected"] == [2, 1]
    assert tokenizer.decode(trainer.train_dataset[0]["chosen_ids"]) == "Casino<|end|>"
