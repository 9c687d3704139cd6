"""Self-checks for the book's exercises: ``check(key, answer)`` says right, not yet, or where to look.

A learner in Colab writes an answer (a number, a set of method names, a function) and asks::

    from xaiutils import exercises
    exercises.check("ch09.1", sobel)

which prints one line, ``✓ Exercise 9.1 (An edge detector): right. ...`` or ``✗ Exercise 9.1
(An edge detector): not yet. <what to look at>``. ``exercises.hint("ch09.1")`` prints a hint that
stops short of the solution. The checks compute what they compare with from the library on a small
fixed case where they can, so they see the same model the chapter uses; they never print the
solution. The student edition of the book (``make book-student``) keeps the check cells and drops
the solutions, so an instructor can assign a chapter without grading by hand.

Each chapter's checks live in one module (``xaiutils.exercises.ch09`` ...) and register themselves
with :func:`exercise`; :data:`EXERCISES` lists them all.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

__all__ = ["Feedback", "Exercise", "EXERCISES", "exercise", "right", "not_yet", "evaluate", "check", "hint",
           "catalogue", "number", "numbers"]


@dataclass(frozen=True)
class Feedback:
    """The verdict on one answer: ``correct`` and a sentence for the learner."""

    correct: bool
    message: str = ""


def right(message: str = "") -> Feedback:
    """A correct answer, with an optional sentence on why it is right or what it shows."""
    return Feedback(True, message)


def not_yet(message: str) -> Feedback:
    """An answer that is not right yet, with what to look at (never the solution itself)."""
    if not message:
        raise ValueError("not_yet needs a message that tells the learner what to look at")
    return Feedback(False, message)


def number(value, name: str) -> float:
    """A learner's answer as one float: a Python or numpy number, or a one-element tensor."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} should be one number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "__float__"):
        raise TypeError(f"{name} should be a number, got {type(value).__name__}")
    return float(value)


def numbers(answer, keys, name: str) -> dict[str, float] | str:
    """The answer as ``{key: float}``, or a sentence saying what is wrong with its keys."""
    if not hasattr(answer, "keys"):
        return f"`{name}` should be a dict (or a pandas Series) with the keys {sorted(keys)}."
    got = set(map(str, answer.keys()))
    if got != set(keys):
        return f"`{name}` should have exactly the keys {sorted(keys)}; it has {sorted(got)}."
    return {str(k): number(answer[k], f"{name}[{k!r}]") for k in answer.keys()}


@dataclass(frozen=True)
class Exercise:
    """One exercise of a chapter: its key (``"ch09.1"``), title, checker and hint."""

    key: str
    title: str
    checker: Callable[..., Feedback]
    hint: str

    @property
    def label(self) -> str:
        chapter, number = self.key.split(".")
        if chapter.startswith("ch") and chapter[2:].isdigit():
            return f"Exercise {int(chapter[2:])}.{number} ({self.title})"
        return f"{chapter.replace('_', ' ').capitalize()}, exercise {number} ({self.title})"


EXERCISES: dict[str, Exercise] = {}


def exercise(key: str, title: str, hint: str) -> Callable:
    """Register the decorated function as the checker of exercise ``key``.

    Keys are ``"ch09.1"`` (chapter 9, exercise 1) or, for a page outside the numbered parts,
    ``"running_examples.1"``.
    """
    if not (isinstance(key, str) and "." in key):
        raise ValueError(f"key must look like 'ch09.1' (chapter.number); got {key!r}")

    def register(checker: Callable[..., Feedback]) -> Callable[..., Feedback]:
        if key in EXERCISES:
            raise ValueError(f"exercise {key!r} is registered twice")
        EXERCISES[key] = Exercise(key, title, checker, hint)
        return checker

    return register


def _load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def catalogue() -> dict[str, Exercise]:
    """Every exercise of the book with a self-check, by key (all chapter modules loaded)."""
    _load_all()
    return dict(sorted(EXERCISES.items()))


def _find(key: str) -> Exercise:
    if key not in EXERCISES and isinstance(key, str):
        chapter = key.split(".")[0]
        if chapter.isidentifier() and chapter in {m.name for m in pkgutil.iter_modules(__path__)}:
            importlib.import_module(f"{__name__}.{chapter}")  # only this chapter's checks: one module per chapter
    if key not in EXERCISES:
        _load_all()
        known = ", ".join(sorted(EXERCISES)) or "none"
        raise KeyError(f"key must name an exercise of the book; got {key!r}, expected one of: {known}")
    return EXERCISES[key]


def evaluate(key: str, *answer, **answers) -> Feedback:
    """The :class:`Feedback` on an answer to exercise ``key``, without printing it.

    An answer that raises inside the check (a function with the wrong signature, a tensor of the
    wrong shape) is not right yet, and the feedback names the error.
    """
    item = _find(key)
    try:
        feedback = item.checker(*answer, **answers)
    except Exception as error:  # the learner's code failed inside the check: say so, do not crash
        return not_yet(f"checking your answer raised {type(error).__name__}: {error}")
    if not isinstance(feedback, Feedback):
        raise TypeError(f"the checker of {key!r} returned {type(feedback).__name__}, expected Feedback")
    return feedback


def check(key: str, *answer, **answers) -> None:
    """Check an answer to exercise ``key`` and print one line: right, or what to look at."""
    item = _find(key)
    feedback = evaluate(key, *answer, **answers)
    verdict = "✓" if feedback.correct else "✗"
    status = "right." if feedback.correct else "not yet."
    print(f"{verdict} {item.label}: {status}" + (f" {feedback.message}" if feedback.message else ""))


def hint(key: str) -> None:
    """Print the hint of exercise ``key``: where to look, not the answer."""
    item = _find(key)
    print(f"Hint for {item.label}: {item.hint}")
