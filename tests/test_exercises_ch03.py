"""The self-checks of chapter 3: right answers pass, typical mistakes get a pointer."""
import copy

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from torch import nn

from xaiutils import data, zoo
from xaiutils.attribution import deconvnet
from xaiutils.exercises import evaluate


def test_by_hand():
    # at x = (2, -1): z = W1 x = (2, -1, 1), so unit 2 is off, and it is the only unit with a negative signal
    right_answer = {"gradient": [3.0, 1.0], "deconvnet": (3, 1), "guided_backprop": np.array([3.0, 1.0])}
    assert evaluate("ch03.1", right_answer).correct is True
    old_x = evaluate("ch03.1", {**right_answer, "gradient": [1.0, 0.0]})
    assert old_x.correct is False and "old x" in old_x.message
    hidden = evaluate("ch03.1", {**right_answer, "deconvnet": [2.0, 0.0, 1.0]})
    assert hidden.correct is False and "hidden units" in hidden.message
    unclamped = evaluate("ch03.1", {**right_answer, "guided backprop": [3.0, 0.0]})
    assert unclamped.correct is False and "positive part" in unclamped.message
    missing = evaluate("ch03.1", {"gradient": [3.0, 1.0]})
    assert missing.correct is False and "lacks" in missing.message


@pytest.fixture(scope="module")
def digits():
    mnist = data.mnist()
    return mnist.x_test[:50], mnist.y_test[:50]


def saliency(model, x, y, guided=False):
    """The gradient, or guided backpropagation through nn.ReLU modules written out with hooks."""
    handles = []
    if guided:
        for module in model.modules():
            if isinstance(module, nn.ReLU):
                handles.append(module.register_full_backward_hook(
                    lambda module, grad_in, grad_out: (grad_in[0].clamp(min=0),)))
    x = x.clone().requires_grad_()
    try:
        (grad,) = torch.autograd.grad(model(x)[torch.arange(len(y)), y].sum(), x)
    finally:
        for handle in handles:
            handle.remove()
    return grad.flatten(1)


def mean_spearman(a, b):
    return float(np.mean([np.corrcoef(rankdata(p), rankdata(q))[0, 1] for p, q in zip(a, b)]))


def test_forgetful(digits):
    x, y = digits
    model = zoo.load("mnist-standard")
    forgetful = copy.deepcopy(model)
    forgetful.fc.weight.data = torch.randn(forgetful.fc.weight.shape, generator=torch.Generator().manual_seed(5))
    correlations = {kind: mean_spearman(saliency(model, x, y, kind == "guided backprop"),
                                        saliency(forgetful, x, y, kind == "guided backprop"))
                    for kind in ["gradient", "guided backprop"]}
    assert evaluate("ch03.2", forgetful, correlations, model=model).correct is True
    swapped = {"gradient": correlations["guided backprop"], "guided backprop": correlations["gradient"]}
    assert "swapped" in evaluate("ch03.2", forgetful, swapped).message
    untouched = evaluate("ch03.2", copy.deepcopy(model), correlations)
    assert untouched.correct is False and "fc" in untouched.message
    too_much = copy.deepcopy(forgetful)
    too_much.block3.conv.weight.data.mul_(-1)
    assert "block3.conv.weight" in evaluate("ch03.2", too_much, correlations).message
    in_place = evaluate("ch03.2", forgetful, correlations, model=forgetful)
    assert in_place.correct is False and "copy" in in_place.message


def test_switches(digits):
    x, _ = digits
    model = zoo.load("mnist-standard")
    average_pooled = copy.deepcopy(model)
    average_pooled.block1.pool = nn.AvgPool2d(2)
    average_pooled.block2.pool = nn.AvgPool2d(2)
    maps = deconvnet(average_pooled, x, 5)
    spread = (maps - maps[:1]).abs().max().item()
    assert evaluate("ch03.3", average_pooled, spread, model=model).correct is True

    half = copy.deepcopy(model)
    half.block1.pool = nn.AvgPool2d(2)
    one_left = evaluate("ch03.3", half, spread)
    assert one_left.correct is False and "block2.pool" in one_left.message
    max_maps = deconvnet(model, x, 5)
    with_max = evaluate("ch03.3", average_pooled, (max_maps - max_maps[:1]).abs().max().item())
    assert with_max.correct is False and "max-pooling model" in with_max.message
