"""The self-checks of chapter 10 (xaiutils.exercises.ch10): a right answer passes, typical mistakes do not.

The checks recompute their reference from the maps they are given, so the tests hand them cheap maps
(one-pass methods, and few steps for the others) and build the right answers here with the library."""
from functools import partial

import pytest
import torch
from scipy.stats import kendalltau

import xaiutils.evaluation as E
from xaiutils import data, exercises, zoo
from xaiutils.attribution import (deeplift, grad_cam, gradient, gradient_x_input, guided_backprop,
                                  integrated_gradients, lrp, occlusion, smoothgrad)

CHEAP = {"gradient": gradient, "gradient_x_input": gradient_x_input, "guided_backprop": guided_backprop,
         "integrated_gradients": partial(integrated_gradients, steps=4),
         "smoothgrad": partial(smoothgrad, gradient, samples=4), "lrp": lrp, "deeplift": deeplift,
         "grad_cam": grad_cam, "occlusion": partial(occlusion, window=(7, 7), stride=7)}


@pytest.fixture(scope="module")
def setting():
    mnist = data.mnist()
    model = zoo.load("mnist-standard")
    x, y = mnist.x_test[:50], mnist.y_test[:50]
    maps = {name: method(model, x, y).detach() for name, method in CHEAP.items()}
    maps["random"] = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    return model, x, y, maps


def test_removal_value(setting):
    model, x, y, maps = setting
    names = list(CHEAP)
    areas = {r: [E.deletion(model, x, maps[n], y, steps=10, removal=r).area.mean().item() for n in names]
             for r in ["zeros", "mean", "blur"]}
    tau = {r: kendalltau(areas["zeros"], areas[r])[0] for r in ["mean", "blur"]}
    assert exercises.evaluate("ch10.1", tau, maps=maps).correct
    negated = {r: -v for r, v in tau.items()}
    feedback = exercises.evaluate("ch10.1", negated, maps=maps)
    assert not feedback.correct and "sign" in feedback.message
    feedback = exercises.evaluate("ch10.1", {"mean": tau["mean"]}, maps=maps)
    assert not feedback.correct and "keys" in feedback.message


def test_infidelity_with_squares(setting):
    model, x, y, maps = setting
    options = dict(perturbation="square", size=7, samples=10, normalise=True)
    square = {"gradient": E.infidelity(model, x, maps["gradient"], y, **options).mean().item()}
    for name in ["gradient_x_input", "integrated_gradients"]:
        square[name] = E.infidelity(model, x, maps[name], y, multiply_by_inputs=True, **options).mean().item()
    winner = min(square, key=square.get)
    assert exercises.evaluate("ch10.2", square, winner, maps=maps).correct
    loser = max(square, key=square.get)
    feedback = exercises.evaluate("ch10.2", square, loser, maps=maps)
    assert not feedback.correct and "lower infidelity is better" in feedback.message
    forgot = dict(square, integrated_gradients=E.infidelity(model, x, maps["integrated_gradients"], y,
                                                            **options).mean().item())
    feedback = exercises.evaluate("ch10.2", forgot, winner, maps=maps)
    assert not feedback.correct and "multiply_by_inputs=True" in feedback.message


def test_least_relevant_first(setting):
    model, x, y, maps = setting
    names = ["gradient", "integrated_gradients", "random"]
    morf = {n: E.aopc(model, x, maps[n], y, steps=10).mean().item() for n in names}
    lerf = {n: E.aopc(model, x, maps[n], y, steps=10, order="least").mean().item() for n in names}
    # MoRF: higher is better; LeRF: lower is better
    same = sorted(names, key=lambda n: -morf[n]) == sorted(names, key=lambda n: lerf[n])
    assert exercises.evaluate("ch10.3", lerf, same, maps=maps).correct
    feedback = exercises.evaluate("ch10.3", lerf, not same, maps=maps)
    assert not feedback.correct and "same_order" in feedback.message
    feedback = exercises.evaluate("ch10.3", morf, same, maps=maps)
    assert not feedback.correct and "order='least'" in feedback.message
    feedback = exercises.evaluate("ch10.3", lerf, "yes", maps=maps)
    assert not feedback.correct and "True or False" in feedback.message


def test_the_checks_need_the_chapters_maps():
    feedback = exercises.evaluate("ch10.2", {"gradient": 1.0, "gradient_x_input": 1.0, "integrated_gradients": 1.0},
                                  "gradient", maps={})
    assert not feedback.correct and "maps=maps" in feedback.message
