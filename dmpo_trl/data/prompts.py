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
    if "/" in item_noun:
        singular, _, plural = item_noun.partition("/")
    else:
        plural = item_noun
        singular = plural[:-1] if plural.endswith("s") and len(plural) > 1 else plural
    singular, plural = singular.strip(), plural.strip()
    if not singular or not plural or "{" in item_noun or "}" in item_noun:
        raise ValueError(f"item_noun must be a plural noun such as 'books' (or 'singular/plural'), got {item_noun!r}")
    return singular, plural


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
    prompt_style = prompt_style or "history"
    if prompt_style not in _GENERIC_TEMPLATES:
        return prompt_style
    singular, plural = item_nouns(item_noun)
    return _GENERIC_TEMPLATES[prompt_style].replace("{items}", plural).replace("{item}", singular)


CANDIDATES_TEMPLATE = builtin_template("candidates")
HISTORY_TEMPLATE = builtin_template("history")
TEMPLATES = {"candidates": CANDIDATES_TEMPLATE, "history": HISTORY_TEMPLATE}
ANSWER_PREFIX = "\nAnswer:"
FIELDS = frozenset({"history", "candidates", "num_candidates"})
LIST_STYLES = ("numbered", "comma")


def resolve_template(prompt_style: str | None) -> str:
    """The built-in template for "candidates" or "history" (also for `None`, the default); any other string is
    checked and used as a template.

    Example:
    ```python
    >>> resolve_template("Seen: {history}. Pick one of: {candidates}.")
    'Seen: {history}. Pick one of: {candidates}.'
    ```
    """
    template = TEMPLATES.get(prompt_style or "history", prompt_style)
    fields = template_fields(template)
    if "history" not in fields or not fields <= FIELDS:
        raise ValueError(
            f"prompt_style must be one of {sorted(TEMPLATES)} or a format string using {{history}} and optionally "
            f"{{candidates}} / {{num_candidates}}; got {prompt_style!r} with fields {sorted(fields)}"
        )
    return template


def template_fields(template: str) -> set[str]:
    """The field names a format string uses."""
    try:
        return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as exc:
        raise ValueError(f"Not a valid format string: {template!r} ({exc})") from exc


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
    return template.format(
        history=render_titles(history, list_style),
        candidates=render_titles(candidates, list_style),
        num_candidates=len(candidates),
    )
