"""Prompt templates: Python format strings with the fields {history}, {candidates} and {num_candidates}.

The built-in templates ("candidates", "history") speak of movies; `builtin_template(style, item_noun)` gives them for
any catalogue ("books", "songs", "person/people"), and the recipe's `--item_noun` passes it on.

The built-in templates end with the instruction; in plain-text datasets the builder appends `ANSWER_PREFIX`
("\\nAnswer:") and writes completions as " <title>" (leading space), so prompt + completion reads
"...Answer: Toy Story (1995)" and the title starts on a word boundary for the tokenizer.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from functools import lru_cache


_GENERIC_TEMPLATES = {
    "candidates": (
        "The user has watched the following {items} in order:\n{history}\n\n"
        "Choose the {item} the user will watch next from the following {num_candidates} candidates:\n{candidates}\n\n"
        "Answer with the title only."
    ),
    "history": (
        "The user has watched the following {items} in order:\n{history}\n\n"
        "Which {item} will the user watch next? Answer with the title only."
    ),
}
DEFAULT_ITEM_NOUN = "movies"


def item_nouns(item_noun: str = DEFAULT_ITEM_NOUN) -> tuple[str, str]:
    """(singular, plural) of an item noun: "books" -> ("book", "books"); "series/series" gives both explicitly.

    Example:
    ```python
    >>> item_nouns("movies"), item_nouns("songs"), item_nouns("person/people")
    (('movie', 'movies'), ('song', 'songs'), ('person', 'people'))
    ```
    """
    problem = _noun_problem(item_noun)
    if problem:
        raise ValueError(
            f"item_noun must be a plural noun such as 'books' (or 'singular/plural'), got {item_noun!r}: {problem}"
        )
    if "/" in item_noun:
        singular, _, plural = item_noun.partition("/")
    else:
        plural = item_noun
        singular = plural[:-1] if plural.endswith("s") and len(plural) > 1 else plural
    singular, plural = singular.strip(), plural.strip()
    return singular, plural


def _noun_problem(item_noun) -> str | None:
    """What makes `item_noun` unusable in a built-in template, or None."""
    if not isinstance(item_noun, str):
        return f"it is {type(item_noun).__name__}, not a string"
    if item_noun.count("/") > 1:
        return "more than one '/'"
    if any(not part.strip() for part in item_noun.split("/")):
        return "empty noun" if "/" not in item_noun else "empty noun on one side of '/'"
    if "{" in item_noun or "}" in item_noun:
        return "braces would be read as template fields"
    if any(not (char.isprintable() or char == " ") for char in item_noun.strip()):
        return "it contains a line break or another control character"
    return None


def builtin_template(prompt_style: str | None, item_noun: str = DEFAULT_ITEM_NOUN) -> str:
    """The built-in template "candidates" or "history" for a catalogue of `item_noun` (plural, e.g. "books");
    any other `prompt_style` (your own template) is returned unchanged.

    Example:
    ```python
    >>> print(builtin_template("history", "books"))
    The user has watched the following books in order:
    {history}
    <BLANKLINE>
    Which book will the user watch next? Answer with the title only.
    >>> builtin_template("history") == HISTORY_TEMPLATE
    True
    ```
    """
    singular, plural = item_nouns(item_noun)
    prompt_style = "history" if prompt_style in (None, "") else prompt_style
    if not isinstance(prompt_style, str) or prompt_style not in _GENERIC_TEMPLATES:
        return prompt_style  # your own template: resolve_template checks it
    return _GENERIC_TEMPLATES[prompt_style].replace("{items}", plural).replace("{item}", singular)


CANDIDATES_TEMPLATE = builtin_template("candidates")
HISTORY_TEMPLATE = builtin_template("history")
TEMPLATES = {"candidates": CANDIDATES_TEMPLATE, "history": HISTORY_TEMPLATE}
ANSWER_PREFIX = "\nAnswer:"
FIELDS = frozenset({"history", "candidates", "num_candidates"})
LIST_STYLES = ("numbered", "comma")


def resolve_template(prompt_style: str | None) -> str:
    """The built-in template for "candidates" or "history" (also for `None`, the default); any other string is
    checked and used as a template. A bad template raises `ValueError` saying what is wrong.

    Example:
    ```python
    >>> resolve_template("Seen: {history}. Pick one of: {candidates}.")
    'Seen: {history}. Pick one of: {candidates}.'
    >>> try:
    ...     resolve_template("Seen: {history}. Pick {k}.")
    ... except ValueError as error:
    ...     print(str(error).split("; ")[-1])
    got 'Seen: {history}. Pick {k}.': unknown field {k} (fields ['history', 'k'])
    ```
    """
    if prompt_style is not None and not isinstance(prompt_style, str):
        raise ValueError(
            f"prompt_style must be one of {sorted(TEMPLATES)} or a format string, got {type(prompt_style).__name__} "
            f"{prompt_style!r}"
        )
    template = TEMPLATES.get(prompt_style or "history", prompt_style)
    template_fields(template)
    return template


_SAMPLE_VALUES = {"history": "1. Heat (1995)", "candidates": "1. Fargo (1996)", "num_candidates": 10}


def template_fields(template: str) -> frozenset[str]:
    """The fields a template uses, after checking that it renders: {history} is required, {candidates} and
    {num_candidates} are optional, literal braces are written {{ }}. A format spec or conversion is allowed when
    it formats ("{num_candidates:d}"); indexing, attributes and fields nested in a spec are not."""
    if not isinstance(template, str):
        raise ValueError(f"a prompt template is a string, got {type(template).__name__} {template!r}")
    return _checked_fields(template)


@lru_cache(maxsize=64)
def _checked_fields(template: str) -> frozenset[str]:

    def refuse(problem: str):
        return ValueError(
            f"prompt_style must be one of {sorted(TEMPLATES)} or a format string using {{history}} and optionally "
            f"{{candidates}} / {{num_candidates}} (literal braces as {{{{ }}}}); got {template!r}: {problem}"
        )

    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:  # unbalanced braces
        raise refuse(f"not a valid format string ({exc})") from None
    fields = set()
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in FIELDS:
            used = sorted({part[1] for part in parts if part[1] is not None})
            raise refuse(f"{'an empty field {}' if not name else f'unknown field {{{name}}}'} (fields {used})")
        if "{" in spec or "}" in spec:
            raise refuse(f"field {{{name}}} has a field inside its format spec {spec!r}")
        try:
            value = _SAMPLE_VALUES[name]
            value = {"s": str, "r": repr, "a": ascii, None: lambda v: v}[conversion](value)
            format(value, spec)
        except (KeyError, ValueError, TypeError) as exc:
            shown = f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
            reason = f"unknown conversion !{conversion}" if conversion not in ("s", "r", "a", None) else str(exc)
            raise refuse(f"field {shown} cannot be rendered ({reason})") from None
        fields.add(name)
    if "history" not in fields:
        raise refuse("no {history} field")
    return frozenset(fields)


def uses_candidates(template: str) -> bool:
    """Whether the template shows a candidate list."""
    return "candidates" in template_fields(template)


def render_titles(titles: Sequence[str], style: str = "numbered") -> str:
    """Titles as a numbered list, one per line ("1. Heat (1995)"), or comma-separated.

    Example:
    ```python
    >>> print(render_titles(["Heat (1995)", "Fargo (1996)"]))
    1. Heat (1995)
    2. Fargo (1996)
    >>> render_titles(["Heat (1995)", "Fargo (1996)"], "comma")
    'Heat (1995), Fargo (1996)'
    ```
    """
    if style == "numbered":
        return "\n".join(f"{k}. {title}" for k, title in enumerate(titles, 1))
    if style == "comma":
        return ", ".join(titles)
    raise ValueError(f"Unknown list style {style!r}; choose from {LIST_STYLES}")


def render_prompt(
    template: str, history: Sequence[str], candidates: Sequence[str] = (), list_style: str = "numbered"
) -> str:
    """Fill a template with history titles (oldest first) and candidate titles.

    Example:
    ```python
    >>> render_prompt("Seen: {history}. Options: {candidates}.", ["Heat (1995)"], ["Fargo (1996)", "Babe (1995)"],
    ...               list_style="comma")
    'Seen: Heat (1995). Options: Fargo (1996), Babe (1995).'
    ```
    """
    template_fields(template)  # a bad template raises ValueError saying what is wrong, not KeyError/IndexError
    return template.format(
        history=render_titles(history, list_style),
        candidates=render_titles(candidates, list_style),
        num_candidates=len(candidates),
    )


def prompt_and_completions(prompt: str, titles: Sequence[str], conversational: bool, answer_prefix: str):
    """A rendered prompt and one completion per title, as a preference row holds them (training and ranking alike).

    Plain text: the prompt ends with `answer_prefix` and each completion is `" " + title`. Conversational: one user
    message, and one assistant message per title.

    Example:
    ```python
    >>> prompt_and_completions("Seen: Heat (1995).", ["Fargo (1996)"], False, "\\nAnswer:")
    ('Seen: Heat (1995).\\nAnswer:', [' Fargo (1996)'])
    >>> prompt_and_completions("Seen: Heat (1995).", ["Fargo (1996)"], True, "\\nAnswer:")[1]
    [[{'role': 'assistant', 'content': 'Fargo (1996)'}]]
    ```
    """
    if conversational:
        return [{"role": "user", "content": prompt}], [[{"role": "assistant", "content": t}] for t in titles]
    return prompt + answer_prefix, [f" {t}" for t in titles]
