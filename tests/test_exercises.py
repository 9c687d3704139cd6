"""The self-check mechanism of the exercises (xaiutils.exercises); each chapter's checks have
their own tests/test_exercises_chNN.py."""
import pytest

from xaiutils import exercises
from xaiutils.exercises import EXERCISES, Exercise, exercise, not_yet, right


@pytest.fixture
def toy():
    """A registered exercise 99.1 whose answer is 42, removed again after the test."""
    @exercise("ch99.1", "The answer", "Think of a famous number.")
    def check_answer(answer):
        if answer == 42:
            return right("It is the answer.")
        if answer == -42:
            return not_yet("Look at the sign.")
        return not_yet("Count again.")

    yield "ch99.1"
    EXERCISES.pop("ch99.1")


def test_right_and_not_yet_are_printed_as_one_line(toy, capsys):
    exercises.check(toy, 42)
    exercises.check(toy, -42)
    assert capsys.readouterr().out.splitlines() == [
        "✓ Exercise 99.1 (The answer): right. It is the answer.",
        "✗ Exercise 99.1 (The answer): not yet. Look at the sign."]


def test_an_answer_that_raises_is_not_yet_and_names_the_error(toy):
    feedback = exercises.evaluate(toy)  # the answer is missing
    assert not feedback.correct and "TypeError" in feedback.message


def test_hint_is_printed_without_the_answer(toy, capsys):
    exercises.hint(toy)
    out = capsys.readouterr().out
    assert out.startswith("Hint for Exercise 99.1 (The answer):") and "42" not in out


def test_unknown_key_names_the_argument_and_the_known_keys(toy):
    with pytest.raises(KeyError, match=r"key must name an exercise.*'ch99\.9'.*ch99\.1"):
        exercises.check("ch99.9", 1)


def test_keys_are_checked_and_registered_once(toy):
    with pytest.raises(ValueError, match="key must look like"):
        exercise("ninety-nine", "t", "h")
    with pytest.raises(ValueError, match="registered twice"):
        exercise(toy, "again", "h")(lambda answer: right())


def test_not_yet_needs_a_pointer():
    with pytest.raises(ValueError, match="what to look at"):
        not_yet("")


def test_a_checker_must_return_feedback(toy):
    EXERCISES["ch99.2"] = Exercise("ch99.2", "Broken", lambda answer: True, "h")
    try:
        with pytest.raises(TypeError, match="returned bool, expected Feedback"):
            exercises.evaluate("ch99.2", 1)
    finally:
        EXERCISES.pop("ch99.2")


def test_labels_of_chapters_and_of_the_running_examples():
    assert Exercise("ch09.2", "T", lambda: right(), "h").label == "Exercise 9.2 (T)"
    assert Exercise("running_examples.1", "T", lambda: right(), "h").label == "Running examples, exercise 1 (T)"


def test_every_registered_exercise_has_a_title_and_a_hint():
    for key, item in exercises.catalogue().items():
        assert item.title.strip() and len(item.hint.split()) >= 4, f"{key}: a title and a real hint are needed"
