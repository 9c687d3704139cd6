"""The self-checks of chapter 6 (xaiutils.exercises.ch06): a right answer passes, typical mistakes do not."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from xaiutils import data, zoo
from xaiutils.attribution import deeplift, lrp
from xaiutils.attribution.lrp import Composite, epsilon_rule, zbox_rule, zplus_rule
from xaiutils.exercises import evaluate


def lrp0_numpy(W, v, x):
    """LRP-0 of v.ReLU(Wx) written in numpy, one hidden unit at a time."""
    W, v, x = (np.asarray(t) for t in (W, v, x))
    relevance = np.zeros_like(x)
    for j in range(W.shape[0]):
        z = x @ W[j]
        on = z > 0
        relevance[on] += x[on] * W[j] * (v[j] * z[on] / z[on])[:, None]
    return relevance


def test_lrp0_by_hand():
    assert evaluate("ch06.1", lrp0_numpy, "conservation").correct
    for function, verdict, pointer in [
            (lrp0_numpy, "equivalence", "needs_zero_biases is not"),
            (lrp0_numpy, "maybe", "one of"),
            (lambda W, v, x: x * (v @ W), "conservation", "off"),
            (lambda W, v, x: ((x @ W.T > 0).double() * v) @ W, "conservation", "gradient"),
            (lambda W, v, x: -torch.as_tensor(lrp0_numpy(W, v, x)), "conservation", "sign"),
            (lambda W, v, x: x[:, :3], "conservation", "shape")]:
        feedback = evaluate("ch06.1", function, verdict)
        assert not feedback.correct and pointer in feedback.message, feedback.message


@pytest.fixture(scope="module")
def digits():
    mnist = data.mnist()
    return zoo.load("mnist-standard"), mnist.x_test[:8], mnist.y_test[:8], mnist.x_train


def test_gamma_knob(digits):
    model, x, y, _ = digits
    eps = epsilon_rule(1e-6)
    zplus_map = lrp(model, x, y, composite=Composite(dense=eps, conv=zplus_rule(), first=zbox_rule(0.0, 1.0),
                                                     first_on="conv"))
    negative, cosine = {}, {}
    for gamma in [0, 0.25, 1, 10, 1000]:
        relevance = lrp(model, x, y, composite="epsilon_gamma_box", gamma=gamma, low=0.0, high=1.0).flatten(1)
        negative[gamma] = float(np.mean([(-r[r < 0]).sum() / r.abs().sum() for r in relevance]))
        cosine[gamma] = float(np.mean([F.cosine_similarity(r, z, dim=0)
                                       for r, z in zip(relevance, zplus_map.flatten(1))]))
    limits = {0: "LRP-0", "infinity": "z+"}
    assert evaluate("ch06.2", negative, cosine, limits).correct
    named = {gamma: F.cosine_similarity(lrp(model, x, y, composite="epsilon_gamma_box", gamma=gamma, low=0.0, high=1.0)
                                        .flatten(1), lrp(model, x, y).flatten(1)).mean().item() for gamma in cosine}
    for answer, pointer in [((negative, named, limits), "named epsilon_plus"),
                            (({g: 100 * s for g, s in negative.items()}, cosine, limits), "percentages"),
                            ((negative, cosine, {0: "z+", "infinity": "z+"}), "gamma = 0"),
                            ((negative, cosine, {0: "epsilon", "infinity": "alpha_beta"}), "gamma -> infinity"),
                            ((negative, cosine, {0: "epsilon", "infinity": "magic"}), "rule of the chapter's table"),
                            (({0: 0.3}, cosine, limits), "missing")]:
        feedback = evaluate("ch06.2", *answer)
        assert not feedback.correct and pointer in feedback.message, feedback.message


def test_deeplift_reference(digits):
    model, x, y, x_train = digits
    black = (x == 0).flatten(1)
    on_black, gaps, signed = {}, {}, {}
    for name, reference in [("black image", torch.zeros(1, 1, 28, 28)), ("mean digit", x_train.mean(0, keepdim=True)),
                            ("mean of the eight", x.mean(0, keepdim=True))]:
        phi = deeplift(model, x, y, baseline=reference).flatten(1)
        with torch.no_grad():
            delta = model(x)[range(8), y] - model(reference.expand_as(x))[range(8), y]
        on_black[name] = (phi.abs() * black).sum(1).div(phi.abs().sum(1)).mean().item()
        signed[name] = (phi * black).sum(1).div(phi.sum(1)).mean().item()
        gaps[name] = ((phi.sum(1) - delta).abs() / delta.abs()).max().item()
    right = {name: on_black[name] for name in ("black image", "mean digit")}
    assert evaluate("ch06.3", right, gaps).correct
    for answer, gap, pointer in [({"black image": right["mean digit"], "mean digit": 0.0}, gaps, "swapped"),
                                 ({k: 100 * v for k, v in right.items()}, gaps, "percentages"),
                                 ({"black image": 0.0, "mean digit": on_black["mean of the eight"]}, gaps, "eight"),
                                 ({"black image": 0.0, "mean digit": signed["mean digit"]}, gaps, "signed"),
                                 (right, {"black image": 0.0, "mean digit": 0.2}, "same reference"),
                                 (right, {"black image": 0.0}, "missing")]:
        feedback = evaluate("ch06.3", answer, gap)
        assert not feedback.correct and pointer in feedback.message, feedback.message
