"""The self-checks of chapter 8 (xaiutils.exercises.ch08): a right answer passes, typical mistakes do not.

The checks of exercises 1 and 2 take the chapter's maps of every method; the chapter computes them in
a minute, so the tests hand them cheaper maps of the same ten shapes images (fewer steps and samples;
the gradient, which the check uses to recognise the chapter's maps, exact) and, for MNIST, maps of
synthetic digits. The right answers are built here with numpy and torch, independently of the checks."""
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from xaiutils import METHODS, data, exercises, zoo

CHEAP = {"integrated_gradients": dict(steps=4), "expected_gradients": dict(samples=4), "blur_ig": dict(steps=4),
         "guided_ig": dict(steps=4), "smoothgrad": dict(samples=4), "smoothgrad_sq": dict(samples=4),
         "vargrad": dict(samples=4), "occlusion": dict(stride=8), "shapley_values": dict(features=(32, 32)),
         "kernel_shap": dict(samples=16), "lime": dict(samples=16), "noisegrad": dict(samples=2),
         "fusiongrad": dict(samples=2, input_samples=2)}
PAIRS = [("integrated_gradients", "deeplift"), ("integrated_gradients", "grad_cam"), ("gradient", "occlusion")]


@pytest.fixture(scope="module")
def maps():
    shapes = data.shapes("test")
    digits = (torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.8).float()
    inputs = {"mnist": (zoo.load("mnist-standard"), digits, torch.arange(10)),
              "shapes": (zoo.load("shapes-standard"), shapes.x[:10], shapes.y[:10])}
    return {(d, name): method(model, x, y, **CHEAP.get(name, {})).detach()
            for d, (model, x, y) in inputs.items() for name, method in METHODS.items()}


def spearman_matrix(columns):
    """Spearman correlation matrix of the columns (average ranks), NaN for a constant column."""
    ranks = rankdata(columns, axis=0)
    ranks = ranks - ranks.mean(0)
    norms = np.sqrt((ranks ** 2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ranks.T @ ranks) / np.outer(norms, norms)


def agreement(maps, data_name, absolute):
    names = list(METHODS)
    per_image = []
    for i in range(10):
        columns = np.stack([maps[data_name, n][i].sum(0).flatten().double().numpy() for n in names], axis=1)
        per_image.append(spearman_matrix(np.abs(columns) if absolute else columns))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a pair that is NaN on every image stays NaN
        return np.nanmean(per_image, axis=0)


def test_signs(maps):
    names = list(METHODS)
    signed, plain, most_changed = {}, {}, {}
    for d in ["mnist", "shapes"]:
        signed[d], plain[d] = agreement(maps, d, absolute=False), agreement(maps, d, absolute=True)
        change = np.abs(np.triu(signed[d] - plain[d], k=1))
        i, j = np.unravel_index(np.nanargmax(change), change.shape)
        most_changed[d] = (names[i], names[j])
    assert exercises.evaluate("ch08.1", signed, most_changed, maps=maps).correct
    feedback = exercises.evaluate("ch08.1", plain, most_changed, maps=maps)
    assert not feedback.correct and "absolute value" in feedback.message
    same = dict(most_changed, shapes=("smoothgrad_sq", "vargrad"))  # two non-negative maps: no change at all
    feedback = exercises.evaluate("ch08.1", signed, same, maps=maps)
    assert not feedback.correct and "does not change at all" in feedback.message
    feedback = exercises.evaluate("ch08.1", signed, most_changed, maps={k: v for k, v in maps.items() if k[0] == "shapes"})
    assert not feedback.correct and "chapter's maps" in feedback.message


def top_share(a, b):
    a, b = a.sum(1).abs().flatten(1), b.sum(1).abs().flatten(1)
    k = int(0.1 * a.shape[1])
    shared = [len(set(a[i].topk(k).indices.tolist()) & set(b[i].topk(k).indices.tolist())) / k for i in range(len(a))]
    return float(np.mean(shared))


def test_top_pixels(maps):
    overlap = {pair: top_share(maps["shapes", pair[0]], maps["shapes", pair[1]]) for pair in PAIRS}
    rho = agreement(maps, "shapes", absolute=True)
    names = list(METHODS)
    spearman = {pair: rho[names.index(pair[0]), names.index(pair[1])] for pair in PAIRS}
    same_order = sorted(PAIRS, key=overlap.get) == sorted(PAIRS, key=spearman.get)
    assert exercises.evaluate("ch08.2", overlap, same_order, maps=maps).correct
    feedback = exercises.evaluate("ch08.2", overlap, not same_order, maps=maps)
    assert not feedback.correct and "same_order" in feedback.message
    percent = {pair: 100 * value for pair, value in overlap.items()}
    feedback = exercises.evaluate("ch08.2", percent, same_order, maps=maps)
    assert not feedback.correct and "percentage" in feedback.message
    signed = {pair: overlap[pair] for pair in PAIRS}
    a, b = (maps["shapes", n].sum(1).flatten(1) for n in PAIRS[0])
    k = int(0.1 * a.shape[1])
    signed[PAIRS[0]] = float(np.mean([len(set(a[i].topk(k).indices.tolist()) & set(b[i].topk(k).indices.tolist())) / k
                                      for i in range(10)]))
    if abs(signed[PAIRS[0]] - overlap[PAIRS[0]]) > 0.02:
        feedback = exercises.evaluate("ch08.2", signed, same_order, maps=maps)
        assert not feedback.correct and "absolute value" in feedback.message


def test_batches():
    per_image = {("gradient", 1): 2.5, ("gradient", 8): 1.1, ("gradient", 64): 0.6,
                 ("integrated_gradients", 1): 53.0, ("integrated_gradients", 8): 30.0,
                 ("integrated_gradients", 64): 27.0}
    assert exercises.evaluate("ch08.3", per_image, "shared fixed costs").correct
    for reason in ["fewer operations", "cached gradients"]:
        feedback = exercises.evaluate("ch08.3", per_image, reason)
        assert not feedback.correct and "whatever its size" in feedback.message
    per_call = {(name, batch): value * batch for (name, batch), value in per_image.items()}
    feedback = exercises.evaluate("ch08.3", per_call, "shared fixed costs")
    assert not feedback.correct and "divide it by the batch size" in feedback.message
    feedback = exercises.evaluate("ch08.3", {("gradient", 1): 2.5}, "shared fixed costs")
    assert not feedback.correct and "six" in feedback.message
    feedback = exercises.evaluate("ch08.3", per_image, "because")
    assert not feedback.correct and "one of" in feedback.message
