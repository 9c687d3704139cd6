"""The self-checks of "The running examples": right answers pass, typical mistakes get a pointer."""
import pytest
import torch

from xaiutils import data, models, zoo
from xaiutils.exercises import evaluate


@pytest.fixture(scope="module")
def confusion():
    mnist = data.mnist()
    with torch.no_grad():
        predicted = zoo.load("mnist-standard")(mnist.x_test).argmax(1)
    return torch.bincount(10 * mnist.y_test + predicted, minlength=100).view(10, 10)


@pytest.fixture(scope="module")
def most_confused(confusion):
    mistakes = confusion.clone()
    mistakes.fill_diagonal_(0)
    return divmod(mistakes.argmax().item(), 10)


def test_confusion_right(confusion, most_confused):
    assert evaluate("running_examples.1", confusion, most_confused).correct is True
    assert evaluate("running_examples.1", confusion.numpy(), list(most_confused)).correct is True


@pytest.mark.parametrize("mistake, words", [
    (lambda m: m.T, "swapped"),
    (lambda m: m / m.sum(1, keepdim=True), "fractions"),
    (lambda m: m * 4, "4,000"),
    (lambda m: m[:9], "10×10"),
])
def test_confusion_mistakes(confusion, most_confused, mistake, words):
    feedback = evaluate("running_examples.1", mistake(confusion.clone()), most_confused)
    assert feedback.correct is False and words in feedback.message


def test_most_confused_mistakes(confusion, most_confused):
    true, guess = most_confused
    reversed_pair = evaluate("running_examples.1", confusion, (guess, true))
    assert reversed_pair.correct is False and "reversed" in reversed_pair.message
    diagonal = evaluate("running_examples.1", confusion, (true, true))
    assert diagonal.correct is False and "diagonal" in diagonal.message


@pytest.fixture(scope="module")
def shapes():
    return data.shapes("test"), zoo.load("shapes-standard")


def recolour(test, colour):
    out = test.x.clone()
    mask = test.mask.expand_as(out)
    return torch.where(mask, torch.tensor(colour).view(1, 3, 1, 1), out)


def test_recolour_right_and_mistakes(shapes):
    test, model = shapes
    recoloured = recolour(test, [0.9, 0.55, 0.7])
    before, after = models.accuracy(model, test.x, test.y), models.accuracy(model, recoloured, test.y)
    assert evaluate("running_examples.2", recoloured, before, after).correct is True
    percent = evaluate("running_examples.2", recoloured, 100 * before, 100 * after)
    assert percent.correct is False and "percent" in percent.message
    swapped = evaluate("running_examples.2", recoloured, before, before) if before != after else None
    if swapped is not None:
        assert swapped.correct is False
    background = recoloured.clone()
    background[:, :, :4, :4] = 0.5  # some background pixels repainted too
    outside = evaluate("running_examples.2", background, before, after)
    assert outside.correct is False and "outside the objects" in outside.message
    unchanged = evaluate("running_examples.2", test.x.clone(), before, before)
    assert unchanged.correct is False and "new colour" in unchanged.message
