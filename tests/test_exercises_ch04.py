"""The self-checks of chapter 4 (xaiutils.exercises.ch04): a right answer passes, typical mistakes do not."""
import numpy as np
import pytest
import torch

from xaiutils import data, zoo
from xaiutils.attribution import guided_ig, integrated_gradients
from xaiutils.exercises import evaluate


@pytest.fixture(scope="module")
def digits():
    mnist = data.mnist()
    return zoo.load("mnist-standard"), mnist.x_test[:10], mnist.y_test[:10]


def test_ig_by_hand():
    # f = 2 alpha until alpha = 1/2, then 1: each partial derivative is 1 on [0, 1/2)
    assert evaluate("ch04.1", [0.5, 0.5], 0.5).correct
    assert evaluate("ch04.1", torch.tensor([0.5, 0.5]), torch.tensor(0.5)).correct
    for wrong, pointer in [([0.0, 0.0], "gradient at x"), ([1.0, 1.0], "adds up to 2"), ([1.0, 0.0], "split")]:
        feedback = evaluate("ch04.1", wrong, 0.5)
        assert not feedback.correct and pointer in feedback.message
    feedback = evaluate("ch04.1", [0.5, 0.5], 1.0)
    assert not feedback.correct and "switch_alpha" in feedback.message
    assert not evaluate("ch04.1", [0.5], 0.5).correct


def test_black_and_white(digits):
    model, x, y = digits
    x, y = x[:2], y[:2]
    black = integrated_gradients(model, x, y, steps=32, rule="riemann_middle")
    white = integrated_gradients(model, x, y, baseline=torch.ones_like(x), steps=32, rule="riemann_middle")
    feedback = evaluate("ch04.2", (black + white) / 2)
    assert feedback.correct and "no pixel" in feedback.message
    other = torch.tensor([int(y[1]), int(y[0])])  # the classes of the other digit
    wrong_targets = (integrated_gradients(model, x, other, steps=32)
                     + integrated_gradients(model, x, other, baseline=torch.ones_like(x), steps=32)) / 2
    for wrong, pointer in [(black, "black pixels"), (white, "white pixels"), (black + white, "twice"),
                           (white[:1], "shape"), (wrong_targets, "targets")]:
        feedback = evaluate("ch04.2", wrong)
        assert not feedback.correct and pointer in feedback.message, feedback.message


def test_guided_completeness(digits):
    model, x, y = digits
    with torch.no_grad():
        f = model(x).numpy()[np.arange(10), y.numpy()]
        f0 = model(torch.zeros_like(x)).numpy()[np.arange(10), y.numpy()]
    median_error = {}
    for max_dist in [0, 0.02, 0.1, 1]:
        total = guided_ig(model, x, y, steps=64, max_dist=max_dist).sum(dim=(1, 2, 3)).numpy()
        median_error[max_dist] = float(np.median(np.abs(total - (f - f0)) / np.abs(f - f0)))
    feedback = evaluate("ch04.3", median_error, "riemann_left")
    assert feedback.correct, feedback.message
    percent = {k: 100 * v for k, v in median_error.items()}
    for answer, rule, pointer in [(percent, "riemann_left", "percentages"),
                                  (median_error, "gausslegendre", "not IG with that rule"),
                                  (median_error, "left", "one of"),
                                  ({0.0: median_error[0]}, "riemann_left", "missing")]:
        feedback = evaluate("ch04.3", answer, rule)
        assert not feedback.correct and pointer in feedback.message, feedback.message
