"""Attacks on explanations: the smoothed network, the saliency helpers, Ghorbani's and Dombrowski's attacks."""
import pytest
import torch
from torch import nn

from helpers import assert_unchanged, mnist_cnn, shapes_resnet, snapshot, vgg_like
from xaiutils import data, models, zoo
from xaiutils.adversarial import (beta_smoothed, centre_of_mass_attack, manipulate_explanation, saliency_map,
                                  top_k_attack)
from xaiutils.adversarial.explanations import _top_k_intersection, centre_of_mass
from xaiutils.attribution import gradient, gradient_x_input
from xaiutils.core.model_state import explaining


@pytest.fixture(scope="module")
def mnist_batch():
    model = zoo.load("mnist-standard")
    d = data.mnist()
    x = d.x_test[:12]
    with torch.no_grad():
        label = model(x).argmax(1)
    return model, x, label


def maps(model, x, label, method="gradient"):
    with explaining(model, x):
        return saliency_map(model, x, label, method=method)


def random_sign(x, epsilon, seed=0):
    noise = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(seed)).to(x) * 2 - 1
    return (x + epsilon * noise).clamp(0, 1)


# ---------------------------------------------------------------------------- beta_smoothed
def test_beta_smoothed_swaps_every_relu_and_restores_the_same_objects():
    model = vgg_like()  # a ReLU reused twice and an inplace ReLU
    x = torch.rand(2, 3, 16, 16)
    relus = {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU)}
    before = snapshot(model)
    with torch.no_grad():
        relu_out = model(x)
    with beta_smoothed(model, 1e4) as smoothed:
        assert smoothed is model
        assert not any(isinstance(m, nn.ReLU) for m in model.modules())
        assert model.relu3 is model.relu4 and isinstance(model.relu3, nn.Softplus)  # sharing kept
        assert model.relu1.beta == 1e4
        with torch.no_grad():
            assert torch.allclose(model(x), relu_out, atol=1e-3)  # softplus -> ReLU as beta grows
    assert {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU)} == relus
    assert all(model.get_submodule(name) is m for name, m in relus.items())
    assert_unchanged(model, before)
    with torch.no_grad():
        assert torch.equal(model(x), relu_out)


def test_beta_smoothed_restores_on_error_and_keeps_hooks_on_the_relus():
    model = shapes_resnet()
    handle = model.layer1.relu1.register_forward_hook(lambda *args: None)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with beta_smoothed(model, 2.0):
            assert isinstance(model.layer1.relu1, nn.Softplus)
            raise RuntimeError("boom")
    assert isinstance(model.layer1.relu1, nn.ReLU) and len(model.layer1.relu1._forward_hooks) == 1
    assert_unchanged(model, before)
    handle.remove()


def test_beta_smoothed_gradient_is_the_softplus_networks_gradient():
    # f(x) = w2 . softplus_beta(W1 x): the gradient has the closed form W1^T (w2 * sigmoid(beta W1 x))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 1, bias=False)).double().eval()
    x = torch.randn(2, 3, dtype=torch.float64)
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()
    with beta_smoothed(model, 3.0):
        smooth = gradient(model, x, 0)
    assert torch.allclose(smooth, (w2 * torch.sigmoid(3.0 * x @ w1.T)) @ w1)


def test_beta_smoothed_bad_input():
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        with beta_smoothed(mnist_cnn(), 0.0):
            pass
    with pytest.raises(ValueError, match="no nn.ReLU"):
        with beta_smoothed(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), 1.0):
            pass


# ---------------------------------------------------------------------------- saliency helpers
def test_saliency_map_is_the_normalised_absolute_attribution():
    model, x = shapes_resnet(), torch.rand(2, 3, 64, 64)
    for method, reference in (("gradient", gradient), ("gradient_x_input", gradient_x_input)):
        s = maps(model, x, 1, method)
        phi = reference(model, x, 1).abs().sum(1, keepdim=True)
        assert s.shape == (2, 1, 64, 64)
        assert torch.allclose(s, phi / phi.sum((1, 2, 3), keepdim=True))
        assert torch.allclose(s.sum((1, 2, 3)), torch.ones(2))
    with pytest.raises(ValueError, match="method must be one of"):
        maps(model, x, 1, "lrp")


def test_centre_of_mass_and_top_k_intersection_known_answers():
    s = torch.zeros(2, 1, 5, 6)
    s[0, 0, 1, 4] = 1.0
    s[1, 0, 0, 0] = s[1, 0, 4, 2] = 0.5
    assert centre_of_mass(s).tolist() == [[1.0, 4.0], [2.0, 1.0]]
    a = torch.arange(10.0).view(1, 1, 2, 5)
    b = a.flip(-1)  # per row reversed: top 3 of a = {9, 8, 7}, of b = {9 -> index 5, ...}
    assert _top_k_intersection(a, a, 3).item() == 1.0
    assert _top_k_intersection(a, b, 3).item() == pytest.approx(1 / 3)
    assert _top_k_intersection(a, -a, 3).item() == 0.0


# ---------------------------------------------------------------------------- Ghorbani et al.
def test_top_k_attack_keeps_the_class_and_lowers_the_top_k_intersection(mnist_batch):
    model, x, label = mnist_batch
    before = snapshot(model)
    x_adv = top_k_attack(model, x, epsilon=0.1, k=50, steps=15)
    assert_unchanged(model, before)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1), label)
    s0 = maps(model, x, label)
    attacked = _top_k_intersection(s0, maps(model, x_adv, label), 50)
    random = _top_k_intersection(s0, maps(model, random_sign(x, 0.1), label), 50)
    assert attacked.mean() < 0.5 * random.mean()
    assert attacked.mean() < 0.4
    # the defence: the beta-smoothed explanations of the same two inputs agree much more
    with beta_smoothed(model, 2.0):
        smoothed = _top_k_intersection(maps(model, x, label), maps(model, x_adv, label), 50)
        # an attack on the smoothed network itself differentiates it as it is (beta=None)
        adaptive = top_k_attack(model, x, epsilon=0.1, k=50, steps=2, beta=None)
        assert (adaptive - x).abs().max() <= 0.1 + 1e-6
        with pytest.raises(ValueError, match="beta=None"):
            top_k_attack(model, x, epsilon=0.1, steps=1)
    assert smoothed.mean() > attacked.mean() + 0.2


def test_centre_of_mass_attack_moves_the_centre_further_than_noise(mnist_batch):
    model, x, label = mnist_batch
    x_adv = centre_of_mass_attack(model, x, epsilon=0.1, steps=15, beta=(5.0, 50.0))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1), label)
    c0 = centre_of_mass(maps(model, x, label))
    moved = (centre_of_mass(maps(model, x_adv, label)) - c0).norm(dim=1)
    noise = (centre_of_mass(maps(model, random_sign(x, 0.1), label)) - c0).norm(dim=1)
    assert moved.mean() > 2 * noise.mean() and moved.mean() > 1.5  # pixels


def test_ghorbani_attacks_bad_input(mnist_batch):
    model, x, _ = mnist_batch
    with pytest.raises(ValueError, match="k must be an integer in 1..784"):
        top_k_attack(model, x, epsilon=0.1, k=785)
    with pytest.raises(ValueError, match="epsilon must be a finite number >= 0"):
        centre_of_mass_attack(model, x, epsilon=-1.0)
    with pytest.raises(ValueError, match="beta must be"):
        top_k_attack(model, x, epsilon=0.1, beta=(0.0, 1.0))
    with pytest.raises(ValueError, match="method must be one of"):
        top_k_attack(model, x, epsilon=0.1, method="lrp")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        centre_of_mass_attack(model, x, epsilon=0.1, steps=0)


# ---------------------------------------------------------------------------- Dombrowski et al.
def relative_error(s, target):
    return (s - target).flatten(1).pow(2).sum(1) / target.flatten(1).pow(2).sum(1)


def test_manipulate_explanation_moves_the_map_towards_the_target_and_keeps_the_class():
    model = zoo.load("mnist-standard")
    d = data.mnist()
    x, other = d.x_test[:6], d.x_test[6:12]
    with torch.no_grad():
        label, other_label = model(x).argmax(1), model(other).argmax(1)
    target = maps(model, other, other_label)
    before = snapshot(model)
    x_adv = manipulate_explanation(model, x, target, steps=60, lr=1e-2, epsilon=0.1)
    assert_unchanged(model, before)
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1), label)
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv - x).abs().max() <= 0.1 + 1e-6
    start, end = relative_error(maps(model, x, label), target), relative_error(maps(model, x_adv, label), target)
    assert (end < start).all() and end.mean() < 0.7 * start.mean()


def test_manipulate_explanation_bad_input():
    model, x = mnist_cnn(), torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match="target_map must be a tensor of shape"):
        manipulate_explanation(model, x, torch.rand(2, 1, 14, 14))
    with pytest.raises(ValueError, match="zero everywhere"):
        manipulate_explanation(model, x, torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="epsilon"):
        manipulate_explanation(model, x, torch.rand(1, 1, 28, 28), epsilon=-0.1)
