"""Axioms: completeness, sensitivity and dummy, implementation invariance, input invariance."""
import functools

import pytest
import torch
from torch import nn

from helpers import assert_unchanged, mnist_cnn, snapshot
from xaiutils.attribution.backprop import guided_backprop
from xaiutils.attribution.cam import grad_cam
from xaiutils.attribution.gradients import gradient, gradient_x_input
from xaiutils.attribution.paths import integrated_gradients
from xaiutils.evaluation import axioms as A


class Saturating(nn.Module):
    """f(x) = 1 - ReLU(1 - x_0): the example of Sundararajan et al.; flat for x_0 > 1."""

    def forward(self, x):
        return (1 - torch.relu(1 - x[:, :1])).expand(-1, 2)


@pytest.fixture
def cnn():
    return mnist_cnn().double(), torch.rand(3, 1, 28, 28, dtype=torch.float64,
                                             generator=torch.Generator().manual_seed(0)), torch.tensor([1, 4, 7])


def test_completeness_equals_the_delta_of_integrated_gradients(cnn):
    model, x, y = cnn
    attr, delta = integrated_gradients(model, x, y, steps=16, return_delta=True)
    gap = A.completeness(model, x, attr, y)
    torch.testing.assert_close(gap, delta)
    assert gap.abs().max() < 0.05 * model(x).abs().max()
    # with a non-zero baseline
    attr, delta = integrated_gradients(model, x, y, steps=16, baseline=0.5, return_delta=True)
    torch.testing.assert_close(A.completeness(model, x, attr, y, baseline=0.5), delta)


def test_completeness_of_gradient_x_input_on_a_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3, bias=False)).double().eval()
    x = torch.rand(4, 3, 2, 2, dtype=torch.float64)
    assert A.completeness(model, x, gradient_x_input(model, x, 2), 2).abs().max() < 1e-12
    assert A.completeness(model, x, gradient(model, x, 2), 2).abs().min() > 1e-3


def test_sensitivity_a_gradient_fails_where_the_model_saturates_and_ig_passes():
    model = Saturating().double().eval()
    x = torch.tensor([[2.0, 1.0], [0.5, 1.0]], dtype=torch.float64)
    grad = A.sensitivity_a(gradient, model, x, 0, feature=0)
    torch.testing.assert_close(grad.output_change, torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert grad.violated.tolist() == [True, False]
    ig = A.sensitivity_a(integrated_gradients, model, x, 0, feature=0, steps=64)
    assert not ig.violated.any()
    torch.testing.assert_close(ig.attribution, ig.output_change, atol=1e-2, rtol=0)


def test_dummy_features_get_zero_attribution():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
    with torch.no_grad():
        model[1].weight[:, :4] = 0.0  # the first 4 features are ignored
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, :4] = True
    mask = mask.view(1, 1, 4, 4)
    for method in (gradient, gradient_x_input, integrated_gradients, guided_backprop):
        assert A.dummy(method, model, x, 1, mask=mask).max() == 0.0
    constant = lambda m, xx, t: torch.ones_like(xx)
    assert (A.dummy(constant, model, x, 1, mask=mask) == 1.0).all()
    with pytest.raises(ValueError, match="not dummies"):
        A.dummy(gradient, model, x, 1, mask=~mask)
    with pytest.raises(ValueError, match="no feature"):
        A.dummy(gradient, model, x, 1, mask=torch.zeros_like(mask))


def test_rescaled_copy_is_functionally_equal_and_gradient_methods_are_invariant(cnn):
    model, x, y = cnn
    before = snapshot(model)
    other = A.rescaled_copy(model, "block2.conv", scale=7.0)
    torch.testing.assert_close(other(x), model(x))
    assert not torch.equal(other.block2.conv.weight, model.block2.conv.weight)
    methods = {"gradient": gradient, "gradient_x_input": gradient_x_input, "guided_backprop": guided_backprop,
               "integrated_gradients": functools.partial(integrated_gradients, steps=8),
               "grad_cam": functools.partial(grad_cam, layer="block2.conv")}
    for name, method in methods.items():
        assert A.implementation_invariance(method, model, other, x, y).max() < 1e-10, name
    assert_unchanged(model, before)


def test_lrp_epsilon_is_not_implementation_invariant(cnn):
    lrp = pytest.importorskip("xaiutils.attribution.lrp").lrp
    model, x, y = cnn
    other = A.rescaled_copy(model, "block1.conv", scale=0.01)
    eps = functools.partial(lrp, composite="epsilon", epsilon=0.1)
    assert A.implementation_invariance(eps, model, other, x, y).min() > 1e-3
    assert A.implementation_invariance(gradient, model, other, x, y).max() < 1e-10


def test_implementation_invariance_rejects_different_functions(cnn):
    model, x, y = cnn
    with pytest.raises(ValueError, match="not functionally equal"):
        A.implementation_invariance(gradient, model, mnist_cnn(seed=1).double(), x, y)
    with pytest.raises(ValueError, match="scale"):
        A.rescaled_copy(model, "block1.conv", scale=-1.0)
    with pytest.raises(ValueError, match="Linear, Conv or BatchNorm"):
        A.rescaled_copy(model, "block1.relu")


def test_input_invariance_after_kindermans(cnn):
    model, x, y = cnn
    before = snapshot(model)
    shift = -0.5
    shifted = A.shifted_copy(model, shift)
    torch.testing.assert_close(shifted(x + shift), model(x))  # exact despite the convolution's zero padding
    assert A.input_invariance(gradient, model, x, y, shift=shift).max() < 1e-10
    assert A.input_invariance(guided_backprop, model, x, y, shift=shift).max() < 1e-10
    assert A.input_invariance(gradient_x_input, model, x, y, shift=shift).min() > 0.1
    ig = functools.partial(integrated_gradients, steps=8)
    assert A.input_invariance(ig, model, x, y, shift=shift).min() > 0.1  # zero baseline: not invariant
    assert A.input_invariance(ig, model, x, y, shift=shift, shifted_options=dict(baseline=shift)).max() < 1e-10
    assert_unchanged(model, before)


def test_input_invariance_with_a_per_channel_shift_and_a_linear_first_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2)).double().eval()
    x = torch.rand(3, 3, 2, 2, dtype=torch.float64)
    shift = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64).view(3, 1, 1)
    torch.testing.assert_close(A.shifted_copy(model, shift)(x + shift), model(x))
    with pytest.raises(ValueError, match="first layer"):
        A.input_invariance(gradient, model, x, 0, shift=shift, layer="3")


def test_bad_input(cnn):
    model, x, y = cnn
    with pytest.raises(ValueError, match="does not fit"):
        A.completeness(model, x, torch.zeros(3, 1, 28, 27, dtype=torch.float64), y)
    rgb = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="input's shape"):
        A.completeness(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)), rgb, torch.zeros(2, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="feature must index one entry of an example"):
        A.sensitivity_a(gradient, model, x, y, feature=(0, 30, 0))
