"""Gradient, gradient x input, deconvnet and guided backprop: closed forms and Captum."""
import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop, InputXGradient, Saliency
from torch import nn
from torch.nn import functional as F

from helpers import assert_unchanged, mnist_cnn, resnet18, shapes_resnet, snapshot, vgg_like
from xaiutils.attribution import deconvnet, gradient, gradient_x_input, guided_backprop


def linear_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double().eval()


def test_gradient_of_a_linear_model_is_its_weight():
    model, x = linear_model(), torch.randn(4, 3, 2, 2, dtype=torch.float64)
    w = model[1].weight
    target = torch.tensor([0, 2, 1, 2])
    assert torch.allclose(gradient(model, x, target), w[target].reshape(4, 3, 2, 2))
    assert torch.allclose(gradient_x_input(model, x, target), x * w[target].reshape(4, 3, 2, 2))


def test_gradient_is_signed_and_matches_autograd_on_a_saturating_toy():
    model = nn.Sequential(nn.Flatten(), nn.Tanh(), nn.Linear(2, 1)).double().eval()
    model[2].weight.data = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    x = torch.tensor([[[0.1, 5.0]]], dtype=torch.float64)
    g = gradient(model, x, 0)
    t = torch.tanh(x)
    assert torch.allclose(g, torch.stack([1 - t[..., 0] ** 2, -(1 - t[..., 1] ** 2)], -1))
    assert g[0, 0, 1] < 0 and abs(g[0, 0, 1]) < 1e-3  # saturated: a feature that matters gets ~0


def test_relu_rules_differ_on_a_single_relu():
    # f(x) = w2 . relu(W1 x): the three backward rules of chapter 3 on one hidden layer
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False)).double().eval()
    model[0].weight.data = torch.eye(2, dtype=torch.float64)
    model[2].weight.data = torch.tensor([[-1.0, 2.0]], dtype=torch.float64)
    x = torch.tensor([[-0.5, 0.5]], dtype=torch.float64)  # first hidden unit inactive
    assert gradient(model, x, 0).tolist() == [[0.0, 2.0]]
    assert deconvnet(model, x, 0).tolist() == [[0.0, 2.0]]  # negative signal (-1) blocked
    x2 = torch.tensor([[0.5, -0.5]], dtype=torch.float64)  # second unit inactive, positive weight
    assert gradient(model, x2, 0).tolist() == [[-1.0, 0.0]]
    assert guided_backprop(model, x2, 0).tolist() == [[0.0, 0.0]]
    assert deconvnet(model, x2, 0).tolist() == [[0.0, 2.0]]  # ignores that the unit was off


MODELS = {"mnist_cnn": (mnist_cnn, (3, 1, 28, 28)), "vgg_like": (vgg_like, (3, 3, 16, 16)),
          "shapes_resnet": (shapes_resnet, (2, 3, 64, 64)), "resnet18": (resnet18, (2, 3, 64, 64))}
PAIRS = {"gradient": (gradient, lambda m: Saliency(m), {"abs": False}),
         "gradient_x_input": (gradient_x_input, InputXGradient, {}),
         "guided_backprop": (guided_backprop, GuidedBackprop, {}),
         "deconvnet": (deconvnet, Deconvolution, {})}


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("method", PAIRS)
def test_agrees_with_captum_in_float64(model_name, method):
    make, shape = MODELS[model_name]
    model = make().double()
    x = torch.rand(*shape, dtype=torch.float64)
    target = torch.arange(shape[0]) % 3
    ours_fn, captum_cls, kwargs = PAIRS[method]
    ours = ours_fn(model, x, target)
    theirs = captum_cls(model).attribute(x.clone().requires_grad_(), target=target, **kwargs).detach()
    assert ours.shape == x.shape
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-12 * theirs.abs().max())


def test_guided_backprop_handles_inplace_and_reused_relus():
    model = resnet18()  # one inplace ReLU module reused twice in every block
    x = torch.rand(1, 3, 64, 64)
    before = snapshot(model)
    attr = guided_backprop(model, x, 0)
    assert_unchanged(model, before)
    assert (attr != 0).any() and torch.isfinite(attr).all()
    assert model.relu.inplace is True


class Functional(nn.Module):
    """``fc2(activation(fc1(x)))`` with the activation called as a function."""

    def __init__(self, activation):
        super().__init__()
        self.fc1, self.fc2, self.activation = nn.Linear(4, 8), nn.Linear(8, 2), activation

    def forward(self, x):
        return self.fc2(self.activation(self.fc1(x)))


@pytest.mark.parametrize("relu", [torch.relu, F.relu, lambda t: t.relu(), lambda t: F.relu(t.clone(), inplace=True)],
                         ids=["torch.relu", "F.relu", "Tensor.relu", "F.relu inplace"])
@pytest.mark.parametrize("method", [guided_backprop, deconvnet])
def test_functional_relu_gets_the_rule_like_a_module(method, relu):
    torch.manual_seed(0)
    functional, x = Functional(relu).eval(), torch.randn(3, 4)
    modules = nn.Sequential(functional.fc1, nn.ReLU(), functional.fc2).eval()
    expected = method(modules, x, 1)
    assert torch.equal(method(functional, x, 1), expected)
    assert not torch.equal(expected, gradient(modules, x, 1))  # the rule did change something


@pytest.mark.parametrize("activation", [nn.GELU(), nn.SiLU(), F.gelu, torch.tanh], ids=["GELU", "SiLU", "F.gelu", "tanh"])
@pytest.mark.parametrize("method", [guided_backprop, deconvnet])
def test_models_without_relu_are_refused_not_explained_by_the_plain_gradient(method, activation):
    torch.manual_seed(0)
    model = Functional(activation).eval()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"changes the backward rule of ReLU, but this model also applies "
                                         r"(GELU|SiLU|Tanh) \(1 call\)[^;]*; .*ReLU networks only"):
        method(model, torch.randn(3, 4), 1)
    assert_unchanged(model, before)


@pytest.mark.parametrize("method", [gradient, gradient_x_input, guided_backprop, deconvnet])
def test_model_and_input_left_unchanged_also_on_error(method):
    model = shapes_resnet()
    model.layer1.train()  # a mixed-mode model must come back mixed
    model.fc.weight.requires_grad_(False)
    x = torch.rand(2, 3, 64, 64)
    x_copy = x.clone()
    before = snapshot(model)
    with pytest.warns(UserWarning, match="training mode"):
        model.train()
        before_train = snapshot(model)
        method(model, x, 1)
    assert_unchanged(model, before_train)
    model.eval()
    model.layer1.train()
    before = snapshot(model)
    with pytest.raises(ValueError, match="out of range"):
        method(model, x, 7)
    assert_unchanged(model, before)
    assert torch.equal(x, x_copy)


@pytest.mark.parametrize("method", [gradient, guided_backprop])
def test_bad_input_gets_a_clear_error(method):
    model = mnist_cnn()
    with pytest.raises(ValueError, match="unsqueeze"):
        method(model, torch.rand(28), 0)
    with pytest.raises(ValueError, match="NaN or inf"):
        method(model, torch.full((1, 1, 28, 28), float("nan")), 0)
    with pytest.raises(TypeError, match="floating-point"):
        method(model, torch.zeros(1, 1, 28, 28, dtype=torch.long), 0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        method(model, torch.rand(2, 1, 28, 28), torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="integer class"):
        method(model, torch.rand(2, 1, 28, 28), torch.tensor([1.0, 2.0]))


def test_callable_target_explains_any_scalar():
    model, x = mnist_cnn(), torch.rand(2, 1, 28, 28)
    diff = gradient(model, x, lambda out: out[:, 3] - out[:, 5])
    assert torch.allclose(diff, gradient(model, x, 3) - gradient(model, x, 5), atol=1e-6)
    with pytest.raises(ValueError, match="one scalar per example"):
        gradient(model, x, lambda out: out)
