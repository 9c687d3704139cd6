"""Etmann et al.'s alignment of input and gradient (xaiutils.evaluation.alignment; chapter 13): known answers."""
import math

import pytest
import torch
from torch import nn

import xaiutils.evaluation as E
from helpers import assert_unchanged, mnist_cnn, snapshot
from xaiutils.experiments import attribution_robustness, seeds


def linear(weight) -> nn.Module:
    """A bias-free linear classifier in float64: the gradient of class c's logit is the row w_c."""
    model = nn.Linear(len(weight[0]), len(weight), bias=False).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weight, dtype=torch.float64))
    return model


def test_a_gradient_equal_to_the_input_or_its_negative_has_alignment_one():
    model = linear([[1.0, 2.0, 0.0, -2.0], [-1.0, -2.0, 0.0, 2.0]])
    x = torch.tensor([[1.0, 2.0, 0.0, -2.0], [3.0, 6.0, 0.0, -6.0]], dtype=torch.float64)
    assert torch.allclose(E.alignment(model, x, torch.tensor([0, 1])), torch.ones(2, dtype=torch.float64), atol=1e-12)


def test_a_gradient_orthogonal_to_the_input_has_alignment_zero():
    model = linear([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    x = torch.tensor([[0.0, 1.0, -1.0], [5.0, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(E.alignment(model, x, torch.tensor([0, 1])), torch.zeros(2, dtype=torch.float64), atol=1e-12)


def test_alignment_of_a_linear_model_is_the_absolute_cosine_with_its_weights():
    model = linear([[1.0, 2.0, 0.0, -2.0], [0.0, 1.0, 1.0, 1.0]])
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0], [-1.0, 1.0, 0.5, 0.0]], dtype=torch.float64)
    # cos with (1, 2, 0, -2) of norm 3: 1/3; with (0, 1, 1, 1): 1; |-1 + 2| / (1.5 * 3) = 2/9
    expected = torch.tensor([1 / 3, 1.0, 2 / 9], dtype=torch.float64)
    assert torch.allclose(E.alignment(model, x, torch.tensor([0, 1, 0])), expected, atol=1e-12)


def test_alignment_ignores_the_scale_of_input_and_model_and_lies_in_the_unit_interval():
    model = mnist_cnn()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 3])
    a = E.alignment(model, x, target)
    assert a.shape == (4,) and not a.requires_grad and bool(((a >= 0) & (a <= 1)).all())
    # a ReLU network without biases is positively homogeneous, so scaling the input leaves the angle alone
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
    before = snapshot(model)
    a = E.alignment(model, x, target)
    assert torch.allclose(E.alignment(model, 3 * x, target), a, atol=1e-5)
    assert torch.allclose(E.alignment(model, x, target, batch_size=2), a, atol=1e-6)
    assert_unchanged(model, before)


def test_a_zero_input_has_no_angle():
    model = linear([[1.0, 1.0]])
    assert math.isnan(E.alignment(model, torch.zeros(1, 2, dtype=torch.float64), torch.tensor([0])).item())


def test_both_experiments_measure_alignment_with_this_function():
    assert seeds.alignment is E.alignment and attribution_robustness.alignment is E.alignment
