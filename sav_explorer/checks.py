"""Checks of user-chosen values, each in one place with one message that quotes what was received.

    classes = check_classes(labels)            # sorted; refuses fewer than 2
    check_k(k, layout.n_heads)
    check_choice(tie_break, TieBreak, "tie break")

Each check raises `DataError`, which the CLI and the app show as one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from .errors import DataError

MAX_QUESTION_CHARS = 4_000  # a question longer than this is no question about an image; the model's own context decides below it


def check_question(question: object, where: str = "the question") -> None:
    """Refuses a question too long to ask, wherever it enters (the box, a data row, a manifest), before
    any tokenizer or model spends time on it: a 200,000-word question held the shared queue 13 minutes."""
    if isinstance(question, str) and len(question) > MAX_QUESTION_CHARS:
        raise DataError(f"{where} is {len(question):,} characters long; questions are limited to {MAX_QUESTION_CHARS:,}")


def check_k(k: object, n_heads: int) -> int:
    """k is a whole number of heads between 1 and the model's head count."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_heads:
        raise DataError(f"k must be between 1 and the number of heads ({n_heads}); got {k!r}")
    return k


def check_choice(value: object, allowed, what: str) -> str:
    """`allowed` is a `Literal[...]` type; the message lists its values."""
    choices = get_args(allowed)
    if value not in choices:
        raise DataError(f"unknown {what} {value!r}; expected one of {', '.join(repr(c) for c in choices)}")
    return value  # type: ignore[return-value]


def clean_label(label: object, where: str) -> str:
    """Labels are trimmed of stray spaces; an empty label is an error that says where it is."""
    text = "" if label is None else str(label).strip()
    if not text:
        raise DataError(f"empty label in {where}")
    return text


def check_classes(labels: Iterable[str]) -> list[str]:
    """The sorted classes of a support set, which needs at least two."""
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"need at least 2 classes; got {len(classes)}: {', '.join(repr(c) for c in classes) or 'none'}")
    return classes
