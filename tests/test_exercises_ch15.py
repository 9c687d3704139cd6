"""The self-checks of chapter 15 (xaiutils.exercises.ch15): a right answer passes, typical mistakes do not.

The right answers are built here with the library on the chapter's images, independently of the checks'
own helpers where that is short (the patch sums)."""
import pytest
import torch

import xaiutils.evaluation as E
from xaiutils import data, exercises, zoo
from xaiutils.attribution import grad_cam, lrp, occlusion
from xaiutils.attribution.attention import attention_relevance, attention_rollout, raw_attention

LAYERS = [f"encoder.layers.encoder_layer_{i}.ln_1" for i in range(3)]


@pytest.fixture(scope="module")
def shapes_setting():
    test = data.shapes("test")
    return zoo.load("shapes-vit"), test.x[:64], test.y[:64], test.mask[:64]


def patch_sum(attr, patch):
    b, _, h, w = attr.shape
    return attr.sum(1).reshape(b, h // patch, patch, w // patch, patch).sum((2, 4))[:, None]


def agreement(model, x, y, attr, patch):
    occluded = occlusion(model, x, y, window=(patch, patch), stride=patch).detach()
    return E.spearman(patch_sum(attr, patch), patch_sum(occluded, patch)).nanmean().item()


def test_rollout_discarding(shapes_setting):
    vit, x, y, _ = shapes_setting
    rho = agreement(vit, x, y, attention_rollout(vit, x, discard_ratio=0.9), 8)
    plain = agreement(vit, x, y, attention_rollout(vit, x), 8)
    assert exercises.evaluate("ch15.1", rho, rho > plain).correct
    feedback = exercises.evaluate("ch15.1", rho, not rho > plain)
    assert not feedback.correct and "closer" in feedback.message
    feedback = exercises.evaluate("ch15.1", plain, True)
    assert not feedback.correct and "discard_ratio=0.9" in feedback.message
    feedback = exercises.evaluate("ch15.1", rho, "yes")
    assert not feedback.correct and "True or False" in feedback.message


def test_grad_cam_layers(shapes_setting):
    vit, x, y, mask = shapes_setting
    mass = {name: E.relevance_mass_accuracy(grad_cam(vit, x, y, layer=name).detach(), mask).nanmean().item()
            for name in LAYERS}
    last = grad_cam(vit, x, y, layer="encoder.layers.encoder_layer_2").detach()
    zero_share = (last.flatten(1).amax(1) == 0).float().mean().item()
    assert zero_share == 1.0  # only the class token of the last block reaches the head
    assert exercises.evaluate("ch15.2", mass, zero_share).correct
    feedback = exercises.evaluate("ch15.2", mass, 64 * zero_share)
    assert not feedback.correct and "count" in feedback.message
    swapped = dict(zip(LAYERS, [mass[LAYERS[1]], mass[LAYERS[0]], mass[LAYERS[2]]]))
    feedback = exercises.evaluate("ch15.2", swapped, zero_share)
    assert not feedback.correct and "another layer" in feedback.message
    feedback = exercises.evaluate("ch15.2", {LAYERS[0]: 0.5}, zero_share)
    assert not feedback.correct and "exactly the keys" in feedback.message


def test_mnist_agreement():
    vit, mnist = zoo.load("mnist-vit"), data.mnist()
    x, y = mnist.x_test[:64], mnist.y_test[:64]
    methods = {"raw attention": raw_attention, "rollout": attention_rollout, "Chefer": attention_relevance,
               "AttnLRP": lrp}
    rho = {name: agreement(vit, x, y, method(vit, x, y).detach(), 4) for name, method in methods.items()}
    order = min(rho["Chefer"], rho["AttnLRP"]) > max(rho["raw attention"], rho["rollout"])
    assert exercises.evaluate("ch15.3", rho, order).correct
    feedback = exercises.evaluate("ch15.3", rho, not order)
    assert not feedback.correct and "same_order" in feedback.message
    coarse = {name: agreement(vit, x, y, method(vit, x, y).detach(), 7) for name, method in methods.items()}
    feedback = exercises.evaluate("ch15.3", coarse, order)
    assert not feedback.correct and "4x4" in feedback.message
    feedback = exercises.evaluate("ch15.3", {**rho, "rollout": rho["rollout"] + 0.05}, order)
    assert not feedback.correct and "rollout" in feedback.message
