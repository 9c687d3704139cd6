"""The self-checks of chapter 11 (xaiutils.exercises.ch11): a right answer passes, typical mistakes do not.

Exercises 1 and 3 take the chapter's magnitude maps; the tests hand them a few cheap ones (integrated
gradients with 4 steps) and build the right answers here."""
from functools import partial

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import xaiutils.evaluation as E
from xaiutils import data, exercises, zoo
from xaiutils.attribution import grad_cam, gradient, guided_backprop, integrated_gradients


@pytest.fixture(scope="module")
def shapes():
    test = data.shapes("test")
    model = zoo.load("shapes-standard")
    x, y, mask = test.x[:100], test.y[:100], test.mask[:100]
    methods = {"gradient": gradient, "guided_backprop": guided_backprop, "grad_cam": grad_cam,
               "integrated_gradients": partial(integrated_gradients, steps=4)}
    signed = {name: method(model, x, y).detach().sum(1, keepdim=True) for name, method in methods.items()}
    magnitude = {name: attr.abs() for name, attr in signed.items()}
    magnitude["random (control)"] = torch.rand((100, 1, 64, 64), generator=torch.Generator().manual_seed(0))
    return model, x, y, mask, magnitude, signed


def test_tolerant_pointing_game(shapes):
    model, x, y, mask, magnitude, signed = shapes
    gain = {name: (E.pointing_game(m, mask, tolerance=3) - E.pointing_game(m, mask)).mean().item()
            for name, m in magnitude.items()}
    methods = [name for name in magnitude if "control" not in name]
    top3 = set(sorted(methods, key=gain.get, reverse=True)[:3])
    assert exercises.evaluate("ch11.1", gain, top3, magnitude=magnitude).correct
    feedback = exercises.evaluate("ch11.1", {k: -v for k, v in gain.items()}, top3, magnitude=magnitude)
    assert not feedback.correct and "sign" in feedback.message
    feedback = exercises.evaluate("ch11.1", gain, top3 - {min(top3, key=gain.get)} | {"random (control)"},
                                  magnitude=magnitude)
    assert not feedback.correct and "controls" in feedback.message
    bottom = set(sorted(methods, key=gain.get)[:3])
    if bottom != top3:
        assert not exercises.evaluate("ch11.1", gain, bottom, magnitude=magnitude).correct
    feedback = exercises.evaluate("ch11.1", gain, top3, magnitude=signed)
    assert not feedback.correct and "negative values" in feedback.message


def test_grad_cam_layers(shapes):
    model, x, y, mask, *_ = shapes
    layer_rma = {}
    for layer in ["layer3", "layer2", "layer1"]:
        rma = E.relevance_mass_accuracy(grad_cam(model, x, y, layer=layer).detach(), mask).numpy()
        layer_rma[layer] = float(np.nanmean(rma))
    assert exercises.evaluate("ch11.2", layer_rma).correct
    feedback = exercises.evaluate("ch11.2", {k: 100 * v for k, v in layer_rma.items()})
    assert not feedback.correct and "percent" in feedback.message
    feedback = exercises.evaluate("ch11.2", dict.fromkeys(layer_rma, layer_rma["layer3"]))
    assert not feedback.correct and "layer=" in feedback.message
    feedback = exercises.evaluate("ch11.2", {"layer2": 0.4, "layer1": 0.5})
    assert not feedback.correct and "keys" in feedback.message


def test_grad_cam_layers_without_nanmean(shapes):
    """At layer1 one map is zero everywhere on the chapter's images: a plain mean is NaN."""
    model, x, y, mask, *_ = shapes
    rma = E.relevance_mass_accuracy(grad_cam(model, x, y, layer="layer1").detach(), mask)
    if not torch.isnan(rma).any():
        pytest.skip("no all-zero Grad-CAM map at layer1 on this machine")
    feedback = exercises.evaluate("ch11.2", {"layer3": 0.4, "layer2": 0.4, "layer1": rma.mean().item()})
    assert not feedback.correct and "nanmean" in feedback.message


def test_small_objects(shapes):
    model, x, y, mask, magnitude, signed = shapes
    area = mask.flatten(1).sum(1).numpy()  # in pixels: a rank correlation does not care
    with_area = {name: spearmanr(area, E.relevance_rank_accuracy(magnitude[name], mask).numpy())[0]
                 for name in ["integrated_gradients", "grad_cam"]}
    assert exercises.evaluate("ch11.3", with_area, magnitude=magnitude).correct
    feedback = exercises.evaluate("ch11.3", {k: -v for k, v in with_area.items()}, magnitude=magnitude)
    assert not feedback.correct and "sign" in feedback.message
    mass = {name: spearmanr(area, E.relevance_mass_accuracy(magnitude[name], mask).numpy())[0]
            for name in with_area}
    feedback = exercises.evaluate("ch11.3", mass, magnitude=magnitude)
    assert not feedback.correct and "mass accuracy" in feedback.message
