"""The self-checks of chapter 19 (xaiutils.exercises.ch19): a right answer passes, typical wrong ones do not.

The right answers are built here as the chapter's solutions build them, not with the checker's helpers."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import xaiutils.evaluation as E
from xaiutils import METHODS, data, zoo
from xaiutils.attribution import expected_gradients, gradient, integrated_gradients, paths
from xaiutils.exercises import evaluate


@pytest.fixture(scope="module")
def mnist():
    return data.mnist()


@pytest.fixture(scope="module")
def model():
    return zoo.load("mnist-standard")


def test_averaging_baselines(mnist, model):
    x, y = mnist.x_test[:20], mnist.y_test[:20]
    baselines = {"black": torch.zeros_like(x), "white": torch.ones_like(x), "blur": paths.resolve_baseline(x, "blur"),
                 "uniform noise": paths.resolve_baseline(x, "uniform", seed=0),
                 "training mean": mnist.x_train.mean(0).expand_as(x)}
    ig = {name: integrated_gradients(model, x, y, baseline=b, steps=32) for name, b in baselines.items()}
    eg = expected_gradients(model, x, y, references=mnist.x_train[:100], samples=64)
    with_eg = pd.Series({name: E.spearman(eg, ig[name]).mean().item() for name in ig})
    two = np.mean([E.spearman(ig[a], ig[b]).mean().item() for a in ig for b in ig if a != b])
    answer = bool((with_eg > two).all())
    assert evaluate("ch19.1", with_eg, answer).correct
    assert not evaluate("ch19.1", with_eg, not answer).correct
    absolute = pd.Series({name: E.spearman(eg, ig[name], absolute=True).mean().item() for name in ig})
    feedback = evaluate("ch19.1", absolute, bool((absolute > two).all()))
    assert not feedback.correct and "absolute" in feedback.message
    assert not evaluate("ch19.1", with_eg.drop("white"), answer).correct


def test_how_many_features(mnist, model):
    x, y = mnist.x_test[:50], mnist.y_test[:50]
    settings = {"integrated_gradients": dict(steps=32), "smoothgrad": dict(samples=32)}
    pairs = [("integrated_gradients", "grad_cam"), ("gradient", "smoothgrad"), ("integrated_gradients", "deeplift")]
    base = {name: F.avg_pool2d(METHODS[name](model, x, y, **settings.get(name, {})).detach().sum(1, keepdim=True), 4)
            * 16 for name in {n for pair in pairs for n in pair}}
    rows = {}
    for a, b in pairs:
        for k in [2, 4, 8, 16, 32]:
            rows[f"{a} / {b}", k] = {m: E.top_k_agreement(base[a], base[b], k, measure=m).mean().item()
                                     for m in ["feature", "rank"]}
    by_k = pd.DataFrame(rows).T
    assert evaluate("ch19.2", by_k).correct
    feedback = evaluate("ch19.2", by_k.rename(columns={"feature": "rank", "rank": "feature"}))
    assert not feedback.correct and "swapped" in feedback.message
    wrong = by_k.copy()
    wrong.loc[("gradient / smoothgrad", 2), "feature"] += 0.1
    assert not evaluate("ch19.2", wrong).correct


class ConvNet(nn.Module):
    """The chapter's plain random network of depth `depth`."""

    def __init__(self, depth, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.layers = nn.ModuleList(nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
                                    for _ in range(depth))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x):
        h = self.stem(x)
        for layer in self.layers:
            h = layer(h)
        return self.head(h)


def c1_of(maps):
    g = maps.flatten(1).double()
    g = g - g.mean(1, keepdim=True)
    g = g / g.norm(dim=1, keepdim=True)
    return (g[1:] * g[:-1]).sum(1).mean().item()


def test_shattered_smoothgrad(mnist):
    torch.manual_seed(0)
    deep = ConvNet(32).eval()
    x, label = mnist.x_test[:1], int(mnist.y_test[0])
    u = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    short = (x + 0.1 * torch.linspace(0, 1, 65).view(-1, 1, 1, 1) * u)[:17]
    c1_gradient = c1_of(gradient(deep, short, label))
    # the 64-sample rows take half a minute; these are the chapter's executed solution, as printed
    c1 = {(16, 0.15): 0.589, (64, 0.15): 0.567, (16, 0.5): 0.620, (64, 0.5): 0.617}
    assert abs(c1_gradient - 0.610) < 0.002
    assert evaluate("ch19.3", c1, c1_gradient).correct
    trained = c1_of(gradient(zoo.load("mnist-standard"), short, label))  # the trained model, not the random net
    feedback = evaluate("ch19.3", c1, trained)
    assert not feedback.correct and "c1_gradient" in feedback.message
    swapped = {**c1, (16, 0.5): c1[16, 0.15] - 0.2}
    assert not evaluate("ch19.3", swapped, c1_gradient).correct
    assert not evaluate("ch19.3", {(16, 0.15): c1[16, 0.15]}, c1_gradient).correct
