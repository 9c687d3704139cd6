"""The self-checks of chapter 2: right answers pass, typical mistakes get a pointer."""
import copy

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from xaiutils import data, zoo
from xaiutils.exercises import evaluate


@pytest.fixture(scope="module")
def digits():
    mnist = data.mnist()
    return mnist.x_test[:50], mnist.y_test[:50], zoo.load("mnist-standard")


def input_gradient(model, x, output):
    x = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(output(model(x)).sum(), x)
    return grad


def without_biases(model):
    copied = copy.deepcopy(model)
    for name, parameter in copied.named_parameters():
        if name.endswith("bias"):
            parameter.data.zero_()
    return copied


def test_euler_right_and_mistakes(digits):
    x, y, model = digits
    bias_free = without_biases(model)
    with torch.no_grad():
        score = bias_free(x)[torch.arange(50), y]
    total = (x * input_gradient(bias_free, x, lambda out: out[torch.arange(50), y])).flatten(1).sum(1)
    relative = ((total - score).abs().max() / score.abs().max()).item()
    assert evaluate("ch02.1", bias_free, relative, model=model).correct is True

    in_place = evaluate("ch02.1", model, relative, model=model)
    assert in_place.correct is False and "copy" in in_place.message
    partly = copy.deepcopy(model)
    partly.fc.bias.data.zero_()
    kept = evaluate("ch02.1", partly, relative)
    assert kept.correct is False and "block1.conv" in kept.message
    with torch.no_grad():
        original_score = model(x)[torch.arange(50), y]
    wrong_gap = ((total - original_score).abs().max() / original_score.abs().max()).item()
    compared = evaluate("ch02.1", bias_free, wrong_gap, model=model)
    assert compared.correct is False and "scores of `bias_free`" in compared.message


def probability(y):
    return lambda out: torch.softmax(out, dim=1)[torch.arange(len(y)), y]


def deletion(model, x, y, ranking, fractions=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)):
    curve = []
    for fraction in fractions:
        k = int(round(fraction * 784))
        top = ranking.flatten(1).topk(k, dim=1).indices if k else torch.empty(len(x), 0, dtype=torch.long)
        removed = x.flatten(1).scatter(1, top, 0.0).view_as(x)
        with torch.no_grad():
            curve.append(probability(y)(model(removed)).mean().item())
    return curve


def test_probability_deletion(digits):
    x, y, model = digits
    grad_p = input_gradient(model, x, probability(y))
    curve = deletion(model, x, y, grad_p.abs())
    assert evaluate("ch02.2", grad_p, curve).correct is True

    logit = evaluate("ch02.2", input_gradient(model, x, lambda out: out[torch.arange(50), y]), curve)
    assert logit.correct is False and "logit" in logit.message
    order = evaluate("ch02.2", grad_p, deletion(model, x, y, x * grad_p))
    assert order.correct is False and "gradient × input" in order.message
    short = evaluate("ch02.2", grad_p, curve[:5])
    assert short.correct is False and "one value per fraction" in short.message


def median_correlations(model, x, y, sigma, seed):
    def saliency(inputs):
        return input_gradient(model, inputs, lambda out: out[torch.arange(len(y)), y]).sum(1).abs().flatten(1)

    noisy = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    a, b = saliency(x), saliency(noisy)
    return float(np.median([spearmanr(a[i], b[i]).statistic for i in range(len(x))]))


def test_noise_levels():
    shapes, model = data.shapes("test"), zoo.load("shapes-standard")
    x, y = shapes.x[:50], shapes.y[:50]
    values = [median_correlations(model, x, y, sigma, seed=7) for sigma in [0.005, 0.01, 0.02, 0.05]]  # another seed
    assert evaluate("ch02.3", values).correct is True
    reversed_order = evaluate("ch02.3", values[::-1])
    assert reversed_order.correct is False and "by noise level" in reversed_order.message
    too_few = evaluate("ch02.3", values[:3])
    assert too_few.correct is False and "one median" in too_few.message
    shifted = evaluate("ch02.3", [values[0], values[0], values[1], values[2]])
    assert shifted.correct is False
