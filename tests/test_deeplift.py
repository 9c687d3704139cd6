"""Tests of xaiutils.attribution.deeplift: closed forms, summation to delta, Captum, RevealCancel by hand."""
import types
import warnings

import pytest
import torch
from helpers import assert_unchanged, mnist_cnn, resnet18, shapes_resnet, snapshot, vgg_like
from torch import nn

from xaiutils.attribution.deeplift import deeplift
from xaiutils.attribution.gradients import gradient_x_input

captum = pytest.importorskip("captum")
from captum.attr import DeepLift  # noqa: E402


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()


def delta(model, x, reference, target):
    target = torch.as_tensor(target).expand(len(x))
    return (model(x) - model(reference)).gather(1, target[:, None])[:, 0]


def captum_deeplift(model, x, reference, target):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DeepLift(model).attribute(x, baselines=reference, target=target)


class Copy(nn.Module):
    """An identity that returns a new tensor (see test_agrees_with_captum_on_mnist_cnn)."""

    def forward(self, x):
        return x.clone()


# ---------------------------------------------------------------------------- closed forms
def test_linear_model_is_gradient_times_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3)).double().eval()
    x = torch.randn(4, 5, dtype=torch.float64)
    for rule in ("rescale", "reveal_cancel"):
        assert torch.allclose(deeplift(model, x, 2, rule=rule), gradient_x_input(model, x, 2), rtol=1e-12)
    reference = torch.randn(5, dtype=torch.float64)
    assert torch.allclose(deeplift(model, x, 2, baseline=reference), (x - reference) * model[0].weight[2],
                          rtol=1e-12)


def test_single_relu_is_the_secant_slope():
    """y = ReLU(w.x + b) with x' = 0: the multiplier is (y - y') / (z - z'), times w."""
    model = nn.Sequential(nn.Linear(2, 1), nn.ReLU()).double().eval()
    model[0].weight.data = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    model[0].bias.data = torch.tensor([-1.0], dtype=torch.float64)
    x = torch.tensor([[1.0, 1.5]], dtype=torch.float64)  # z = 3, z' = -1, y = 3, y' = 0: slope 3/4
    expected = torch.tensor([[0.75 * 1.0, 0.75 * 3.0]], dtype=torch.float64)
    for rule in ("rescale", "reveal_cancel"):  # one-signed contributions: the two rules agree
        assert torch.allclose(deeplift(model, x, 0, rule=rule), expected, rtol=1e-12)


def test_reveal_cancel_equals_rescale_when_contributions_have_one_sign():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 1), nn.ReLU(), nn.Linear(1, 1)).double().eval()
    model[0].weight.data = model[0].weight.data.abs()
    x = torch.rand(3, 4, dtype=torch.float64) + 0.1  # every term w_j (x_j - 0) > 0
    model[0].bias.data = torch.tensor([-0.5], dtype=torch.float64)
    rescale, reveal_cancel = deeplift(model, x, 0), deeplift(model, x, 0, rule="reveal_cancel")
    assert torch.allclose(rescale, reveal_cancel, rtol=1e-12)


class MinNet(nn.Module):
    """o = i1 - ReLU(i1 - i2) = min(i1, i2), the example of Shrikumar et al. (2017), Section 3.5.3."""

    def __init__(self):
        super().__init__()
        self.diff = nn.Linear(2, 1, bias=False)
        self.diff.weight.data = torch.tensor([[1.0, -1.0]])
        self.relu = nn.ReLU()

    def forward(self, x):
        return x[:, :1] - self.relu(self.diff(x))


def test_min_example_reveal_cancel_credits_both_inputs():
    """min(i1, i2) at i = (3, 1), reference (0, 0), output 1. Rescale gives all the credit to i2:
    (0, 1). RevealCancel splits the ReLU's input difference 2 into +3 (from i1) and -1 (from i2),
    finds dy+ = (3 + 2) / 2 and dy- = (0 - 1) / 2, and credits both inputs: (0.5, 0.5)."""
    model = MinNet().double().eval()
    x = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    rescale = deeplift(model, x, 0)
    reveal_cancel = deeplift(model, x, 0, rule="reveal_cancel")
    assert torch.allclose(rescale, torch.tensor([[0.0, 1.0]], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(reveal_cancel, torch.tensor([[0.5, 0.5]], dtype=torch.float64), atol=1e-12)


def reference_reveal_cancel(model, x, reference, target):
    """RevealCancel on a Linear-ReLU MLP in matrix form, as in the DeepLIFT paper's Section 3.5."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    a, a0, layers = x, reference, []
    for layer in linears[:-1]:
        d = a - a0
        dp, dn = d.clamp(min=0), d.clamp(max=0)
        wp, wn = layer.weight.clamp(min=0), layer.weight.clamp(max=0)
        pos, neg = dp @ wp.T + dn @ wn.T, dp @ wn.T + dn @ wp.T
        z0 = layer(a0)
        dy_pos = 0.5 * (torch.relu(z0 + pos) - torch.relu(z0) + torch.relu(z0 + neg + pos) - torch.relu(z0 + neg))
        dy_neg = 0.5 * (torch.relu(z0 + neg) - torch.relu(z0) + torch.relu(z0 + pos + neg) - torch.relu(z0 + pos))
        slope = (layer(a) > 0).double()
        m_pos = torch.where(pos.abs() < 1e-10, slope, dy_pos / pos)
        m_neg = torch.where(neg.abs() < 1e-10, slope, dy_neg / neg)
        layers.append((d, wp, wn, layer.weight, m_pos, m_neg))
        a, a0 = torch.relu(layer(a)), torch.relu(z0)
    m = torch.nn.functional.one_hot(target, linears[-1].out_features).double() @ linears[-1].weight
    for d, wp, wn, w, m_pos, m_neg in reversed(layers):
        up, down = m * m_pos, m * m_neg
        m = ((d > 0) * (up @ wp + down @ wn) + (d < 0) * (up @ wn + down @ wp)
             + (d == 0) * (0.5 * (up + down) @ w))
    return (x - reference) * m


def test_reveal_cancel_matches_a_matrix_form_reimplementation():
    model = mlp()
    x, reference = torch.randn(6, 6, dtype=torch.float64), torch.randn(6, 6, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    ours = deeplift(model, x, target, baseline=reference, rule="reveal_cancel")
    assert torch.allclose(ours, reference_reveal_cancel(model, x, reference, target), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(ours, deeplift(model, x, target, baseline=reference), atol=1e-3)


# ---------------------------------------------------------------------------- summation to delta
MODELS = {
    "mlp": (mlp, (4, 6)),
    "mnist_cnn": (lambda: mnist_cnn().double(), (2, 1, 28, 28)),
    "vgg_like": (lambda: vgg_like().double(), (2, 3, 16, 16)),
    "shapes_resnet": (lambda: shapes_resnet().double(), (2, 3, 64, 64)),
    "resnet18": (lambda: resnet18().double(), (2, 3, 64, 64)),  # reused ReLUs, overlapping max-pooling
}


@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
@pytest.mark.parametrize("name", list(MODELS))
def test_summation_to_delta(name, rule):
    make, shape = MODELS[name]
    model = make()
    torch.manual_seed(1)
    x, reference = torch.randn(*shape, dtype=torch.float64), 0.5 * torch.randn(*shape, dtype=torch.float64)
    target = model(x).argmax(1)
    attr = deeplift(model, x, target, baseline=reference, rule=rule)
    expected = delta(model, x, reference, target)
    assert torch.allclose(attr.flatten(1).sum(1), expected, rtol=1e-9, atol=1e-12)


def test_max_pool_assigns_the_difference_to_the_winners():
    """Input window max y, reference window max y': max(y, y') - y' goes to the input's winner and
    y - max(y, y') to the reference's winner, each divided by that position's difference."""
    model = nn.Sequential(nn.MaxPool1d(2), nn.Flatten()).double().eval()
    x = torch.tensor([[[1.0, 3.0, 1.0, 0.0]]], dtype=torch.float64)
    reference = torch.tensor([[[2.0, 0.0, 0.0, 3.0]]], dtype=torch.float64)
    first = deeplift(model, x, 0, baseline=reference)  # window 1: y=3 > y'=2, 1 to position 1
    second = deeplift(model, x, 1, baseline=reference)  # window 2: y=1 < y'=3, -2 to position 3
    assert torch.allclose(first, torch.tensor([[[0.0, 1.0, 0.0, 0.0]]], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(second, torch.tensor([[[0.0, 0.0, 0.0, -2.0]]], dtype=torch.float64), atol=1e-12)
    model_with_head = nn.Sequential(nn.MaxPool1d(2), nn.Flatten(), nn.Linear(2, 1)).double().eval()
    assert torch.allclose(deeplift(model_with_head, x, 0, baseline=reference),
                          captum_deeplift(model_with_head, x, reference, 0), atol=1e-12)


def test_overlapping_max_pool_windows_add_up_unlike_captum():
    """Position 2 wins both windows of MaxPool1d(3, stride=1). Captum routes the differences with
    max_unpool, which writes rather than adds, so one window's difference is lost and its attribution
    no longer sums to the delta. Ours adds both."""
    model = nn.Sequential(nn.MaxPool1d(3, stride=1), nn.Flatten(), nn.Linear(2, 1, bias=False)).double().eval()
    model[2].weight.data = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([[[0.0, 1.0, 5.0, 1.0]]], dtype=torch.float64)
    ours = deeplift(model, x, 0)
    assert torch.allclose(ours, torch.tensor([[[0.0, 0.0, 10.0, 0.0]]], dtype=torch.float64), atol=1e-12)
    theirs = captum_deeplift(model, x, torch.zeros_like(x), 0)
    assert not torch.allclose(theirs.sum(), delta(model, x, torch.zeros_like(x), 0).sum())


# ---------------------------------------------------------------------------- Captum
def test_agrees_with_captum_on_mlp():
    model = mlp()
    x, reference = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1, 0])
    theirs = captum_deeplift(model, x, reference, target)
    assert torch.allclose(deeplift(model, x, target, baseline=reference), theirs, rtol=1e-10, atol=1e-13)


def test_agrees_with_captum_on_mnist_cnn():
    """Captum 0.9 hooks each module's input and output tensors; where one hooked module feeds another
    (ReLU -> MaxPool in MnistCNN), the first reads its output gradient before the second has modified
    it, and summation to delta fails. A ``Copy`` between them (the same function) separates the tensors
    and Captum then agrees with us; our result needs no such change."""
    model = mnist_cnn().double()
    torch.manual_seed(1)
    x, reference = torch.randn(3, 1, 28, 28, dtype=torch.float64), 0.3 * torch.randn(3, 1, 28, 28, dtype=torch.float64)
    target = model(x).argmax(1)
    ours = deeplift(model, x, target, baseline=reference)
    stock = captum_deeplift(model, x, reference, target)
    assert not torch.allclose(stock.flatten(1).sum(1), delta(model, x, reference, target), atol=1e-6)
    for block in (model.block1, model.block2):
        block.relu = nn.Sequential(nn.ReLU(), Copy())
    theirs = captum_deeplift(model, x, reference, target)
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-12 * theirs.abs().max().item())


def _separate_relus(block):
    """torchvision's BasicBlock calls ``self.relu`` twice; give the second call its own module."""
    block.relu_out = nn.ReLU()

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu_out(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + identity)

    block.forward = types.MethodType(forward, block)


def test_agrees_with_captum_on_resnet18():
    """Captum fails on torchvision's resnet18 (a reused ReLU module) and drops differences in its
    overlapping 3x3/2 max-pooling. On an equivalent copy with one ReLU per call, a Copy after the stem
    ReLU and 2x2 max-pooling in both models, Captum and we agree."""
    from torchvision.models.resnet import BasicBlock

    model = resnet18().double()
    torch.manual_seed(1)
    x, reference = torch.randn(2, 3, 64, 64, dtype=torch.float64), 0.3 * torch.randn(2, 3, 64, 64, dtype=torch.float64)
    target = model(x).argmax(1)
    with pytest.raises(RuntimeError, match="more than once"):
        captum_deeplift(model, x, reference, target)
    model.maxpool = nn.MaxPool2d(2)
    ours = deeplift(model, x, target, baseline=reference)
    for block in model.modules():
        if isinstance(block, BasicBlock):
            _separate_relus(block)
    model.relu = nn.Sequential(nn.ReLU(), Copy())
    theirs = captum_deeplift(model, x, reference, target)
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-12 * theirs.abs().max().item())


# ---------------------------------------------------------------------------- targets, batching, baselines
def test_targets_batching_and_baselines_agree():
    model = mnist_cnn().double()
    torch.manual_seed(1)
    x, reference = torch.randn(5, 1, 28, 28, dtype=torch.float64), torch.randn(5, 1, 28, 28, dtype=torch.float64)
    target = torch.tensor([3, 1, 4, 1, 5])
    for rule in ("rescale", "reveal_cancel"):
        whole = deeplift(model, x, target, baseline=reference, rule=rule)
        chunked = deeplift(model, x, target, baseline=reference, rule=rule, batch_size=4)
        assert torch.allclose(chunked, whole, rtol=1e-12, atol=1e-15)
        by_callable = deeplift(model, x, lambda out: out.gather(1, target[:, None])[:, 0], baseline=reference,
                               rule=rule)
        assert torch.allclose(by_callable, whole, rtol=1e-12, atol=1e-15)
    assert torch.allclose(deeplift(model, x, 2), deeplift(model, x, 2, baseline=torch.zeros(1, 28, 28,
                                                                                             dtype=torch.float64)))
    assert torch.allclose(deeplift(model, x, 2, baseline=0.5), deeplift(model, x, 2, baseline=torch.full_like(x, 0.5)))


# ---------------------------------------------------------------------------- side effects and bad input
@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
@pytest.mark.parametrize("make", [lambda: resnet18(), lambda: shapes_resnet(), lambda: vgg_like()])
def test_model_is_restored(make, rule):
    model = make()
    x = torch.randn(1, 3, 32, 32)
    x_before = x.clone()
    before = snapshot(model)
    deeplift(model, x, 0, rule=rule)
    assert_unchanged(model, before)
    assert torch.equal(x, x_before)
    with pytest.raises(ValueError, match="out of range"):
        deeplift(model, x, 99, rule=rule)
    assert_unchanged(model, before)


def test_float32_matches_float64():
    model = vgg_like()
    x = torch.randn(2, 3, 16, 16)
    attr = deeplift(model, x, 1, rule="reveal_cancel")
    expected = deeplift(model.double(), x.double(), 1, rule="reveal_cancel")
    assert attr.dtype == torch.float32
    assert torch.allclose(attr.double(), expected, rtol=1e-3, atol=1e-5 * expected.abs().max().item())


def test_bad_input():
    model, x = mlp(), torch.randn(2, 6, dtype=torch.float64)
    before = snapshot(model)
    with pytest.raises(ValueError, match="rule must be one of 'rescale', 'reveal_cancel'; got .*did you mean 'reveal_cancel'"):
        deeplift(model, x, 0, rule="revealcancel")
    with pytest.raises(ValueError, match="baseline must be one of 'zeros', .*; got 'black'"):
        deeplift(model, x, 0, baseline="black")
    with pytest.raises(ValueError, match="baseline must be finite"):
        deeplift(model, x, 0, baseline=float("nan"))
    with pytest.raises(ValueError, match="broadcast"):
        deeplift(model, x, 0, baseline=torch.zeros(5, dtype=torch.float64))
    with pytest.raises(TypeError, match="baseline"):
        deeplift(model, x, 0, baseline=[0.0] * 6)
    with pytest.raises(ValueError, match="finite"):
        deeplift(model, x, 0, baseline=torch.full((6,), float("inf"), dtype=torch.float64))
    with pytest.raises(ValueError, match="batch_size"):
        deeplift(model, x, 0, batch_size=0)
    assert_unchanged(model, before)


def test_inplace_change_of_an_activation_output():
    """``h = relu(W x); h += x`` changes the hooked ReLU's output in place: it must be a new tensor."""
    torch.manual_seed(0)

    class InplaceResidual(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.relu, self.head = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)

        def forward(self, x):
            h = self.relu(self.inner(x))
            h += x
            return self.head(h)

    model, x = InplaceResidual().double().eval(), torch.randn(3, 4, dtype=torch.float64)
    for rule in ("rescale", "reveal_cancel"):
        attr = deeplift(model, x, 1, rule=rule)
        assert torch.allclose(attr.sum(1), delta(model, x, torch.zeros_like(x), 1), rtol=1e-10)


def test_smooth_nonlinearities():
    """Tanh, Sigmoid, LeakyReLU and GELU modules: summation to delta, and Captum's Rescale (for the three
    it supports)."""
    torch.manual_seed(0)
    layers = [nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 6), nn.Sigmoid(), nn.Linear(6, 6), nn.LeakyReLU(0.1),
              nn.Linear(6, 6), nn.GELU(), nn.Linear(6, 2)]
    model = nn.Sequential(*layers).double().eval()
    x, reference = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    for rule in ("rescale", "reveal_cancel"):
        attr = deeplift(model, x, 1, baseline=reference, rule=rule)
        assert torch.allclose(attr.sum(1), delta(model, x, reference, 1), rtol=1e-9, atol=1e-12)
    model = nn.Sequential(*layers[:6], nn.Linear(6, 2)).double().eval()
    theirs = captum_deeplift(model, x, reference, 1)
    assert torch.allclose(deeplift(model, x, 1, baseline=reference), theirs, rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------------------- the two passes
@pytest.mark.parametrize("name, rule", [("mnist_cnn", "rescale"), ("mnist_cnn", "reveal_cancel"),
                                        ("resnet18", "rescale")])
def test_one_reference_row_for_all_examples_equals_one_per_example(name, rule):
    """A reference shared by all examples passes through the model once, as one row (max-pooling then
    routes every example's share through that row's maxima); repeated per example, the same result."""
    make, shape = MODELS[name][0], (3, 1, 28, 28) if name == "mnist_cnn" else (2, 3, 32, 32)
    model = make()
    torch.manual_seed(1)
    x, reference = torch.randn(*shape, dtype=torch.float64), 0.5 * torch.randn(*shape[1:], dtype=torch.float64)
    target = model(x).argmax(1)
    shared = deeplift(model, x, target, baseline=reference, rule=rule)
    per_example = deeplift(model, x, target, baseline=reference.expand(*shape).clone(), rule=rule)
    assert torch.allclose(shared, per_example, rtol=1e-10, atol=1e-12 * per_example.abs().max().item())
    assert torch.allclose(shared.flatten(1).sum(1), delta(model, x, reference.expand(*shape), target), rtol=1e-9)


class InputChangedAfterwards(nn.Module):
    """``a = tanh(h); h += a``: the model changes the input of a hooked module after calling it."""

    def __init__(self, in_place: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.inner, self.act, self.head, self.in_place = nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2), in_place

    def forward(self, x):
        h = self.inner(x)
        a = self.act(h)
        if self.in_place:  # (not named ``inplace``, which explaining() would switch off)
            h += a
        else:
            h = h + a
        return self.head(h)


class DataDependent(nn.Module):
    """A forward pass whose modules depend on the data: the passes of x and x' do not pair up."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner, self.relu, self.tanh = nn.Linear(4, 2), nn.ReLU(), nn.Tanh()

    def forward(self, x):
        h = self.inner(x)
        return self.relu(h) if h.sum() > 0 else self.tanh(h)


@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
def test_models_that_change_an_input_in_place_afterwards(rule):
    """The reference pass then records copies of the inputs (the input pass needs them as they were)."""
    x, reference = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    model = InputChangedAfterwards().double().eval()
    attr = deeplift(model, x, 1, baseline=reference, rule=rule)
    expected = deeplift(InputChangedAfterwards(in_place=False).double().eval(), x, 1, baseline=reference, rule=rule)
    assert torch.allclose(attr, expected, rtol=1e-12, atol=1e-15)
    assert torch.allclose(attr.sum(1), delta(model, x, reference, 1), rtol=1e-9)


def test_a_forward_pass_that_depends_on_the_data_is_refused():
    model = DataDependent().double().eval()
    nn.init.constant_(model.inner.bias, 0.0)
    before = snapshot(model)
    x = torch.ones(1, 4, dtype=torch.float64) * torch.sign(model.inner.weight.sum())
    with pytest.raises(RuntimeError, match="order does not depend on the data"):
        deeplift(model, x, 0, baseline=-x)
    assert_unchanged(model, before)
