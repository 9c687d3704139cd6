"""The self-checks of chapter 9 (xaiutils.exercises.ch09): a right answer passes, typical mistakes do not.

The right answers are built here as a learner would, on a few of the chapter's test digits (the checks
of exercises 2 and 3 take the digits they are given)."""
import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.stats import spearmanr

import xaiutils.evaluation as E
from xaiutils import data, exercises, zoo
from xaiutils.attribution import grad_cam, gradient, gradient_x_input, integrated_gradients, lrp


@pytest.fixture(scope="module")
def digits():
    mnist = data.mnist()
    return mnist.x_test[:12], mnist.y_test[:12]


def sobel(model, x, target):
    out = torch.zeros_like(x)
    for i in range(len(x)):
        image = x[i, 0].numpy()
        out[i, 0] = torch.from_numpy(np.sqrt(ndimage.sobel(image, 0) ** 2 + ndimage.sobel(image, 1) ** 2))
    return out


def test_edge_detector():
    assert exercises.evaluate("ch09.1", sobel, "stays at 1").correct
    feedback = exercises.evaluate("ch09.1", sobel, "falls to 0")
    assert not feedback.correct and "weights" in feedback.message

    def whole_batch(model, x, target):  # scipy's sobel also smooths along the batch axis
        images = x[:, 0].numpy()
        return torch.from_numpy(np.hypot(ndimage.sobel(images, axis=1), ndimage.sobel(images, axis=2)))[:, None]

    feedback = exercises.evaluate("ch09.1", whole_batch, "stays at 1")
    assert not feedback.correct and "batch" in feedback.message

    def one_direction(model, x, target):
        return torch.stack([torch.from_numpy(ndimage.sobel(image[0].numpy())) for image in x])[:, None]

    feedback = exercises.evaluate("ch09.1", one_direction, "stays at 1")
    assert not feedback.correct and "both image axes" in feedback.message
    feedback = exercises.evaluate("ch09.1", lambda model, x, target: sobel(model, x, target)[:, 0], "stays at 1")
    assert not feedback.correct and "shape" in feedback.message
    feedback = exercises.evaluate("ch09.1", gradient, "stays at 1")
    assert not feedback.correct and "Sobel edge magnitude" in feedback.message


def test_implementation_invariance(digits):
    x, y = digits
    model = zoo.load("mnist-standard")
    rescaled = E.rescaled_copy(model, "block1.conv", scale=10.0)
    methods = {"gradient": gradient, "gradient_x_input": gradient_x_input,
               "integrated_gradients": lambda m, x, y: integrated_gradients(m, x, y, steps=16), "lrp": lrp,
               "grad_cam": grad_cam}
    noticed = set()
    for name, method in methods.items():
        a, b = method(model, x[:8], y[:8]).detach(), method(rescaled, x[:8], y[:8]).detach()
        if ((a - b).flatten(1).abs().amax(1) / a.flatten(1).abs().amax(1)).max() > 1e-4:
            noticed.add(name)
    assert exercises.evaluate("ch09.2", noticed, x=x, y=y).correct
    wrong = noticed ^ {"lrp"}
    feedback = exercises.evaluate("ch09.2", wrong, x=x, y=y)
    assert not feedback.correct and "lrp" in feedback.message
    feedback = exercises.evaluate("ch09.2", {"LRP"}, x=x, y=y)
    assert not feedback.correct and "unknown" in feedback.message


def test_only_the_digit(digits):
    x, y = digits
    model, random_model = zoo.load("mnist-standard"), zoo.load("mnist-random-labels")
    methods = {"gradient_x_input": gradient_x_input,
               "integrated_gradients": lambda m, x, y: integrated_gradients(m, x, y, steps=16)}
    on_digit, whole, signed = {}, {}, {}
    for name, method in methods.items():
        a, b = method(model, x, y).detach(), method(random_model, x, y).detach()
        on_digit[name] = np.nanmean([spearmanr(a[i][x[i] > 0].abs(), b[i][x[i] > 0].abs())[0] for i in range(len(x))])
        whole[name] = np.nanmean([spearmanr(a[i].abs().flatten(), b[i].abs().flatten())[0] for i in range(len(x))])
        signed[name] = np.nanmean([spearmanr(a[i][x[i] > 0], b[i][x[i] > 0])[0] for i in range(len(x))])
    still_insensitive = all(on_digit[n] >= 0.5 * whole[n] for n in methods)
    assert exercises.evaluate("ch09.3", on_digit, still_insensitive, x=x, y=y).correct
    feedback = exercises.evaluate("ch09.3", on_digit, not still_insensitive, x=x, y=y)
    assert not feedback.correct and "verdict" in feedback.message
    feedback = exercises.evaluate("ch09.3", whole, still_insensitive, x=x, y=y)
    assert not feedback.correct and "whole-image" in feedback.message
    if abs(signed["gradient_x_input"] - on_digit["gradient_x_input"]) > 0.02:
        feedback = exercises.evaluate("ch09.3", signed, still_insensitive, x=x, y=y)
        assert not feedback.correct and "signed" in feedback.message
    feedback = exercises.evaluate("ch09.3", {"gradient_x_input": float("nan"), "integrated_gradients": 0.3},
                                  still_insensitive, x=x, y=y)
    assert not feedback.correct and "nanmean" in feedback.message
