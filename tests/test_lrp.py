"""Tests of xaiutils.attribution.lrp: closed forms, a matrix-form re-implementation, Zennit, conservation."""
import contextlib
import types
from unittest import mock

import pytest
import torch
from helpers import assert_unchanged, mnist_cnn, randomised_bn, resnet18, shapes_resnet, snapshot, vgg_like
from torch import nn
from torch.nn import functional as F

from xaiutils.attribution.gradients import gradient_x_input
from xaiutils.attribution import _relevance
from xaiutils.attribution.lrp import (
    COMPOSITES, RESIDUALS, Composite, Part, Rule, Term, alpha_beta_rule, epsilon_rule, flat_rule, gamma_rule, lrp,
    named_composite, zbox_rule, zplus_rule)
from xaiutils.models import BasicBlock

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import (  # noqa: E402
    EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat, LayerMapComposite, layer_map_base)
from zennit.layer import Sum  # noqa: E402
from zennit.rules import Epsilon  # noqa: E402
from zennit.torchvision import ResNetCanonizer  # noqa: E402
from zennit.types import Linear as ZennitLinear  # noqa: E402


def mlp(bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5, bias=bias), nn.ReLU(), nn.Linear(5, 4, bias=bias), nn.ReLU(),
                         nn.Linear(4, 3, bias=bias)).double().eval()


def bias_free_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, bias=False), nn.ReLU(), nn.Flatten(),
                         nn.Linear(24, 3, bias=False)).double().eval()


def score(model, x, target):
    return model(x).gather(1, target[:, None])[:, 0]


# ---------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("make, shape", [(lambda: mlp(bias=False), (4, 6)), (bias_free_cnn, (3, 2, 8, 8)),
                                         (lambda: mlp(bias=True), (4, 6))])
def test_epsilon_to_zero_is_gradient_times_input_on_relu_nets(make, shape):
    """Biases break conservation, not this equivalence (ancona2018towards; chapter 6)."""
    model, x = make(), torch.randn(*shape, dtype=torch.float64)
    target = model(x).argmax(1)
    expected = gradient_x_input(model, x, target)
    assert torch.allclose(lrp(model, x, target, composite="epsilon", epsilon=1e-12), expected, rtol=1e-9, atol=1e-12)


def test_epsilon_conserves_relevance_on_bias_free_nets():
    model, x = bias_free_cnn(), torch.randn(3, 2, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 1, 2])
    attr = lrp(model, x, target, composite="epsilon", epsilon=1e-12)
    assert torch.allclose(attr.flatten(1).sum(1), score(model, x, target), rtol=1e-9)
    difference = lrp(model, x, lambda out: out[:, 0] - out[:, 1], composite="epsilon", epsilon=1e-12)
    out = model(x)
    assert torch.allclose(difference.flatten(1).sum(1), out[:, 0] - out[:, 1], rtol=1e-9)


def bias_free_shapes_resnet() -> nn.Module:
    """ShapesResNet (float64) whose BatchNorms have zero mean and shift and whose head has no bias."""
    model = shapes_resnet().double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.zero_()
            m.bias.data.zero_()
    model.fc.bias.data.zero_()
    return model


def test_residual_sums_and_merged_batchnorm_conserve_relevance():
    """ShapesResNet with bias-free BatchNorms (zero mean and shift) has no bias anywhere but the last
    layer, which we zero too: LRP-epsilon then conserves relevance through the merged BatchNorms, the
    residual sums and the average pooling (up to the stabilisers). With the plain gradient of ``+`` the
    sum would not be conserved."""
    model = bias_free_shapes_resnet()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    target = model(x).argmax(1)
    attr = lrp(model, x, target, composite="epsilon", epsilon=1e-12)
    assert torch.allclose(attr.flatten(1).sum(1), score(model, x, target), rtol=1e-4)


def test_conservation_with_biases_is_only_approximate():
    """With BatchNorm shifts and biases (random weights), part of the relevance is absorbed by the
    biases: the sum of relevance differs from f_c(x), by how much the test records."""
    model, x = shapes_resnet().double(), torch.randn(2, 3, 64, 64, dtype=torch.float64)
    target = model(x).argmax(1)
    total = lrp(model, x, target, composite="epsilon").flatten(1).sum(1)
    gap = (total - score(model, x, target)).abs() / score(model, x, target).abs()
    assert torch.isfinite(gap).all() and (gap > 1e-3).all()


# ---------------------------------------------------------------------------- matrix-form reference
def _stab(z, s):
    return z + s * torch.where(z >= 0, 1.0, -1.0).to(z)


def reference_step(rule, a, w, b, relevance, bounds=None):
    """One layer of LRP in matrix form: contributions z[b, j, i] of input i to output j."""
    ap, an, wp, wn = a.clamp(min=0)[:, None], a.clamp(max=0)[:, None], w.clamp(min=0), w.clamp(max=0)
    name, param = rule

    def share(z, bias, stabiliser=1e-6, mask=1.0):
        return (z / _stab(z.sum(-1) + bias, stabiliser)[..., None] * (mask * relevance)[..., None]).sum(1)

    if name == "epsilon":
        return share(a[:, None] * w, b, param)
    if name == "zplus":
        return share(ap * wp + an * wn, b.clamp(min=0))
    if name == "alpha_beta":
        alpha, beta = param, param - 1
        return alpha * share(ap * wp + an * wn, b.clamp(min=0)) - beta * share(ap * wn + an * wp, b.clamp(max=0))
    if name == "gamma":
        z = a @ w.T + b
        up, down = w + param * wp, w + param * wn
        return (share(ap * up + an * down, b + param * b.clamp(min=0), mask=(z > 0).double())
                + share(ap * down + an * up, b + param * b.clamp(max=0), mask=(z < 0).double()))
    if name == "flat":
        return share(torch.ones_like(a[:, None] * w), torch.zeros_like(b))
    if name == "zbox":
        low, high = bounds
        return share(a[:, None] * w - low[:, None] * wp - high[:, None] * wn, torch.zeros_like(b))
    raise ValueError(name)


def reference_lrp(model, x, target, rules, bounds=None):
    linears = [m for m in model if isinstance(m, nn.Linear)]
    activations = [x]
    for layer in linears[:-1]:
        activations.append(torch.relu(layer(activations[-1])))
    out = linears[-1](activations[-1])
    relevance = F.one_hot(target, out.shape[1]).double() * out
    for layer, a, rule in reversed(list(zip(linears, activations, rules))):
        relevance = reference_step(rule, a, layer.weight, layer.bias, relevance, bounds if a is x else None)
    return relevance


RULES = {
    "epsilon": (epsilon_rule(0.1), ("epsilon", 0.1)),
    "zplus": (zplus_rule(), ("zplus", None)),
    "alpha2_beta1": (alpha_beta_rule(2, 1), ("alpha_beta", 2.0)),
    "alpha3_beta2": (alpha_beta_rule(3, 2), ("alpha_beta", 3.0)),
    "gamma": (gamma_rule(0.5), ("gamma", 0.5)),
}


@pytest.mark.parametrize("name", list(RULES))
def test_each_rule_matches_a_matrix_form_reimplementation(name):
    """Each rule on every layer of an MLP with biases, inputs of both signs, float64."""
    model, x = mlp(), torch.randn(5, 6, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0, 1])
    ours, spec = RULES[name]
    attr = lrp(model, x, target, composite=Composite(dense=ours, conv=ours))
    expected = reference_lrp(model, x, target, [spec] * 3)
    assert torch.allclose(attr, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("first, spec", [(flat_rule(), ("flat", None)), (zbox_rule(-2.0, 3.0), ("zbox", None))])
def test_first_layer_rules_match_a_matrix_form_reimplementation(first, spec):
    model, x = mlp(), torch.randn(5, 6, dtype=torch.float64).clamp(-2, 3)
    target = torch.tensor([2, 1, 0, 0, 1])
    eps = epsilon_rule(1e-6)
    attr = lrp(model, x, target, composite=Composite(dense=eps, conv=eps, first=first))
    bounds = (torch.full_like(x, -2.0), torch.full_like(x, 3.0))
    expected = reference_lrp(model, x, target, [spec, ("epsilon", 1e-6), ("epsilon", 1e-6)], bounds)
    assert torch.allclose(attr, expected, rtol=1e-10, atol=1e-12)


def test_default_zbox_bounds_are_each_examples_min_and_max():
    model, x = mlp(), torch.randn(4, 6, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0])
    eps = epsilon_rule(1e-6)
    attr = lrp(model, x, target, composite=Composite(dense=eps, conv=eps, first=zbox_rule()))
    bounds = (x.amin(1, keepdim=True).expand_as(x), x.amax(1, keepdim=True).expand_as(x))
    expected = reference_lrp(model, x, target, [("zbox", None), ("epsilon", 1e-6), ("epsilon", 1e-6)], bounds)
    assert torch.allclose(attr, expected, rtol=1e-10, atol=1e-12)
    alone = lrp(model, x[:1], target[:1], composite=Composite(dense=eps, conv=eps, first=zbox_rule()))
    assert torch.allclose(alone, attr[:1], rtol=1e-12), "an example's bounds must not depend on the batch"


# ---------------------------------------------------------------------------- Zennit
def _shapes_block_forward(self, x):
    out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
    return self.relu2(self.canonizer_sum(torch.stack([self.shortcut(x), out], dim=-1)))


def shapes_canonizers():
    """Zennit's canonizers for ShapesResNet: BatchNorm merge and the residual sum as a ``Sum`` module."""
    def attributes(name, module):
        if isinstance(module, BasicBlock):
            return {"forward": types.MethodType(_shapes_block_forward, module), "canonizer_sum": Sum()}
        return None
    return [SequentialMergeBatchNorm(), AttributeCanonizer(attributes)]


def zennit_composite(name, canonizers, low, high):
    if name == "epsilon":
        return LayerMapComposite(layer_map_base() + [(ZennitLinear, Epsilon())], canonizers=canonizers)
    return {"epsilon_plus": lambda: EpsilonPlus(canonizers=canonizers),
            "epsilon_plus_flat": lambda: EpsilonPlusFlat(canonizers=canonizers),
            "epsilon_gamma_box": lambda: EpsilonGammaBox(low=low, high=high, canonizers=canonizers),
            "epsilon_alpha2_beta1": lambda: EpsilonAlpha2Beta1(canonizers=canonizers)}[name]()


def zennit_lrp(model, x, target, name, canonizers=None, low=None, high=None):
    with Gradient(model, zennit_composite(name, canonizers, low, high)) as attributor:
        out, relevance = attributor(x.clone(), lambda out: F.one_hot(target, out.shape[1]).to(out) * out)
    return out, relevance


def exact_batchnorm(model):
    """BatchNorm with eps=0: Zennit's merged BatchNorm then computes the identity exactly."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0
    return model


MODELS = {
    "mnist_cnn": (lambda: mnist_cnn().double(), (2, 1, 28, 28), lambda: None),
    "vgg_like": (lambda: vgg_like().double(), (2, 3, 16, 16), lambda: None),
    "shapes_resnet": (lambda: exact_batchnorm(shapes_resnet().double()), (2, 3, 64, 64), shapes_canonizers),
    "resnet18": (lambda: exact_batchnorm(resnet18().double()), (1, 3, 64, 64), lambda: [ResNetCanonizer()]),
}


@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_agrees_with_zennit(model_name, composite):
    make, shape, canonizers = MODELS[model_name]
    model = make()
    torch.manual_seed(1)
    x = torch.randn(*shape, dtype=torch.float64)
    target = model(x).argmax(1)
    low, high = -2.0 * torch.ones_like(x), 2.5 * torch.ones_like(x)
    ours = lrp(model, x, target, composite=composite, low=low, high=high)
    _, theirs = zennit_lrp(model, x, target, composite, canonizers(), low, high)
    assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-10 * theirs.abs().max().item())


def test_zennit_merged_batchnorm_is_the_identity_only_up_to_eps():
    """Zennit's merge leaves the BatchNorm computing x / sqrt(1 + eps), not x: with the default eps=1e-5
    its forward pass (and so its relevance) is off by about eps per BatchNorm. Ours uses the model's
    own activations, and agrees with Zennit once eps = 0 (test above)."""
    model = shapes_resnet().double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    target = model(x).argmax(1)
    out, theirs = zennit_lrp(model, x, target, "epsilon_plus", shapes_canonizers())
    assert not torch.allclose(out, model(x), rtol=1e-7)
    assert torch.allclose(out, model(x), rtol=1e-3)
    ours = lrp(model, x, target, composite="epsilon_plus")
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-2 * theirs.abs().max().item())


# ---------------------------------------------------------------------------- targets and batching
def test_targets_and_batching_agree():
    model, x = mnist_cnn().double(), torch.randn(5, 1, 28, 28, dtype=torch.float64)
    target = torch.tensor([3, 1, 4, 1, 5])
    low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    whole = lrp(model, x, target, composite="epsilon_gamma_box", low=low, high=high)
    assert torch.allclose(lrp(model, x, target, composite="epsilon_gamma_box", low=low, high=high, batch_size=2),
                          whole, rtol=1e-12, atol=1e-15)
    assert torch.allclose(lrp(model, x, target, composite="epsilon_gamma_box"), whole, rtol=1e-12, atol=1e-15)
    callable_target = lrp(model, x, lambda out: out.gather(1, target[:, None])[:, 0], composite="epsilon_gamma_box")
    assert torch.allclose(callable_target, whole, rtol=1e-12, atol=1e-15)
    single = lrp(model, x[:1], 3, composite="epsilon_gamma_box")
    assert torch.allclose(single, whole[:1], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------- side effects and bad input
@pytest.mark.parametrize("make", [lambda: resnet18(), lambda: shapes_resnet(), lambda: vgg_like()])
def test_model_is_restored(make):
    model = make()
    x = torch.randn(1, 3, 32, 32)
    x_before = x.clone()
    before = snapshot(model)
    for composite in COMPOSITES:
        lrp(model, x, 0, composite=composite)
        assert_unchanged(model, before)
    assert torch.equal(x, x_before)
    with pytest.raises(ValueError, match="out of range"):
        lrp(model, x, 99)
    assert_unchanged(model, before)


def test_training_model_is_explained_in_eval_mode_and_restored():
    model = shapes_resnet().train()
    before = snapshot(model)
    x = torch.randn(1, 3, 32, 32)
    with pytest.warns(UserWarning, match="training mode"):
        attr = lrp(model, x, 0)
    assert_unchanged(model, before)
    assert torch.allclose(attr, lrp(model.eval(), x, 0), rtol=1e-5, atol=1e-7)


def test_bad_input():
    model, x = mlp(), torch.randn(2, 6, dtype=torch.float64)
    before = snapshot(model)
    with pytest.raises(ValueError, match="epsilon_plus_flat"):
        lrp(model, x, 0, composite="zplus")
    with pytest.raises(TypeError, match="composite"):
        lrp(model, x, 0, composite=42)
    with pytest.raises(ValueError, match="low"):
        lrp(model, x, 0, composite="epsilon_gamma_box", low=torch.zeros(3))
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        alpha_beta_rule(2, 2)
    with pytest.raises(ValueError, match="first_on"):
        lrp(model, x, 0, composite=Composite(dense=zplus_rule(), conv=zplus_rule(), first=flat_rule(), first_on="x"))
    with pytest.raises(ValueError, match="gamma"):
        lrp(model, x, 0, composite="epsilon_gamma_box", gamma=-1.0)
    with pytest.raises(ValueError, match="LayerNorm"):
        lrp(nn.Sequential(nn.Linear(6, 4), nn.LayerNorm(4)).eval(), x.float(), 0)
    with pytest.raises(ValueError, match="NaN"):
        lrp(model, torch.full((1, 6), float("nan"), dtype=torch.float64), 0)
    assert_unchanged(model, before)


def test_reused_and_inplace_relu_and_float32():
    """vgg_like reuses one ReLU module and has an in-place ReLU; float32 gives the float64 result."""
    model = vgg_like()
    x = torch.randn(2, 3, 16, 16)
    attr = lrp(model, x, 1, composite="epsilon_plus")
    expected = lrp(model.double(), x.double(), 1, composite="epsilon_plus")
    assert attr.dtype == torch.float32
    assert torch.allclose(attr.double(), expected, rtol=1e-3, atol=1e-5 * expected.abs().max().item())


class InplaceResidual(nn.Module):
    """``h = relu(W x); h += x``: an in-place residual addition after an activation module."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner, self.relu, self.head = nn.Linear(4, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False)

    def forward(self, x):
        h = self.relu(self.inner(x))
        h += x
        return self.head(h)


def test_inplace_residual_addition_conserves_relevance():
    model, x = InplaceResidual().double().eval(), torch.rand(3, 4, dtype=torch.float64)
    attr = lrp(model, x, 1, composite="epsilon", epsilon=1e-12)
    assert torch.allclose(attr.sum(1), model(x)[:, 1], rtol=1e-5)  # the sum's stabiliser is 1e-6


# ---------------------------------------------------------------------------- the epsilon shortcut and term passes
def _general_epsilon(epsilon):
    """The epsilon rule written with a modifier that is not ``_same``: it takes the general mechanism
    (a forward pass of its own per layer, merged BatchNorm weights) instead of the layer's own backward."""
    return Rule((Part((Term(input=lambda t: t),)),), epsilon)


class SharedConvOutput(nn.Module):
    """A convolution whose output feeds a BatchNorm and, besides it, a second branch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn, self.relu = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.side, self.gap, self.fc = nn.Conv2d(4, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)

    def forward(self, x):
        z = self.conv(x)
        return self.fc(self.gap(self.relu(self.bn(z)) + self.relu(self.side(z))).flatten(1))


@pytest.mark.parametrize("make, shape", [(lambda: randomised_bn(SharedConvOutput()).double(), (2, 3, 8, 8)),
                                         (lambda: shapes_resnet().double(), (2, 3, 32, 32)),
                                         (lambda: resnet18().double(), (1, 3, 64, 64))])
@pytest.mark.parametrize("epsilon", [1e-6, 0.25])
def test_epsilon_shortcut_equals_the_general_mechanism(make, shape, epsilon):
    """Epsilon-rule layers reuse their own backward pass (with a merged BatchNorm, the pair's backward);
    the general mechanism recomputes each layer with merged weights. Same relevance, up to rounding."""
    model = make().eval()
    torch.manual_seed(1)
    x = torch.randn(*shape, dtype=torch.float64)
    target = model(x).argmax(1)
    general = _general_epsilon(epsilon)
    expected = lrp(model, x, target, composite=Composite(dense=general, conv=general), epsilon=epsilon)
    attr = lrp(model, x, target, composite="epsilon", epsilon=epsilon)
    assert torch.allclose(attr, expected, rtol=1e-9, atol=1e-10 * expected.abs().max().item())


def test_grouped_convolution_and_inputs_of_both_signs_agree_with_zennit():
    """z+ on a grouped convolution (its terms take one pass each) and on one whose input has both
    signs (its two terms share one pass, inputs and weights stacked)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 6, 3, groups=2), nn.ReLU(),
                          nn.Conv2d(6, 4, 3, groups=2), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).double().eval()
    x = torch.randn(2, 4, 10, 10, dtype=torch.float64)
    target = model(x).argmax(1)
    _, theirs = zennit_lrp(model, x, target, "epsilon_plus")
    ours = lrp(model, x, target, composite="epsilon_plus")
    assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-10 * theirs.abs().max().item())


# ---------------------------------------------------------------------------- residual sums, named composites, errors
def test_residual_gradient_copies_relevance_to_both_branches():
    """With ``residual="gradient"`` each residual sum copies its relevance to both branches: on the
    bias-free ShapesResNet, whose branches each conserve relevance, every block doubles the sum, so it
    is 2^3 f_c(x) after its three blocks instead of f_c(x) (chapter 6)."""
    model, x = bias_free_shapes_resnet(), torch.randn(2, 3, 64, 64, dtype=torch.float64)
    target = model(x).argmax(1)
    blocks = sum(isinstance(m, BasicBlock) for m in model.modules())
    assert blocks == 3
    shared = lrp(model, x, target, composite="epsilon", epsilon=1e-12, residual="proportional")
    copied = lrp(model, x, target, composite="epsilon", epsilon=1e-12, residual="gradient")
    assert torch.allclose(shared.flatten(1).sum(1), score(model, x, target), rtol=1e-4)
    assert torch.allclose(copied.flatten(1).sum(1), 2 ** blocks * score(model, x, target), rtol=1e-4)


@pytest.mark.parametrize("make, shape", [(lambda: shapes_resnet().double(), (2, 3, 32, 32)),
                                         (lambda: resnet18().double(), (1, 3, 64, 64))])
@pytest.mark.parametrize("composite", ["epsilon", "epsilon_plus"])
def test_residual_gradient_is_the_plain_backward_of_plus(make, shape, composite):
    """``residual="gradient"`` is LRP with the residual additions left to autograd (what chapter 6 once
    got by switching off ``explicit_additions``), and it differs from the default proportional sharing."""
    model = make()
    torch.manual_seed(1)
    x = torch.randn(*shape, dtype=torch.float64)
    target = model(x).argmax(1)
    before = snapshot(model)
    copied = lrp(model, x, target, composite=composite, residual="gradient")
    with mock.patch.object(_relevance, "explicit_additions", lambda replace: contextlib.nullcontext()):
        plain_plus = lrp(model, x, target, composite=composite)
    shared = lrp(model, x, target, composite=composite)
    assert torch.equal(copied, plain_plus)
    assert not torch.allclose(copied, shared, rtol=1e-3)
    assert torch.equal(shared, lrp(model, x, target, composite=composite, residual="proportional"))
    assert_unchanged(model, before)


def test_named_composite_is_what_a_name_means():
    model, x = mnist_cnn().double(), torch.randn(3, 1, 28, 28, dtype=torch.float64)
    target = torch.tensor([3, 1, 4])
    for name in COMPOSITES:
        composite = named_composite(name, epsilon=0.01, gamma=0.5, low=-1.0, high=2.0)
        assert isinstance(composite, Composite)
        expected = lrp(model, x, target, composite=name, epsilon=0.01, gamma=0.5, low=-1.0, high=2.0)
        assert torch.equal(lrp(model, x, target, composite=composite), expected)
    assert named_composite("epsilon_gamma_box").first_on == "conv"
    with pytest.raises(ValueError, match="did you mean 'epsilon_plus'"):
        named_composite("epsilon_plsu")


def test_bad_residual_and_no_hook_left_on_error():
    """A bad ``residual`` is refused before the model is touched; an error raised during the forward
    pass (a BatchNorm without running statistics cannot be merged) leaves no hook behind, for the
    epsilon rule's shortcut and for the general mechanism alike."""
    model, x = mlp(), torch.randn(2, 6, dtype=torch.float64)
    before = snapshot(model)
    with pytest.raises(ValueError, match="residual must be one of 'proportional', 'gradient'"):
        lrp(model, x, 0, residual="copy")
    assert RESIDUALS == ("proportional", "gradient")
    assert_unchanged(model, before)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 2)).eval()
    before = snapshot(model)
    for composite in ("epsilon", "epsilon_plus"):
        with pytest.raises(ValueError, match="running statistics"):
            lrp(model, torch.randn(2, 3, 8, 8), 0, composite=composite)
        assert_unchanged(model, before)
