"""Modified backward passes through ReLU: deconvnet and guided backpropagation (chapter 3).

For :math:`y = \\max(0, z)` with upstream gradient :math:`g`, the three backward rules are

.. math:: \\text{gradient: } g \\cdot [z > 0], \\quad
          \\text{deconvnet: } \\max(g, 0), \\quad
          \\text{guided backprop: } \\max(g, 0) \\cdot [z > 0].

Only ``nn.ReLU`` *modules* are changed (in-place ones and modules reused several times, as in
torchvision's ResNet, included). A functional ``F.relu`` / ``torch.relu`` in a model's
``forward`` cannot be hooked: it keeps the ordinary gradient rule, so on such a model these
methods silently fall back to the plain gradient at those places. Replace functional ReLUs by
``nn.ReLU`` modules to explain such a model.
"""
from __future__ import annotations

import torch
from torch import nn

from ._model_state import explaining
from ._targets import Target
from .gradients import input_gradient


class _DeconvReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad.clamp(min=0) * (z > 0)


def _relu_backward_rule(model: nn.Module, x: torch.Tensor, target: Target, rule) -> torch.Tensor:
    with explaining(model, x) as hooks:
        for module in model.modules():
            if isinstance(module, nn.ReLU):
                hooks.append(module.register_forward_hook(lambda m, inp, out: rule.apply(inp[0])))
        return input_gradient(model, x, target)[0]


def deconvnet(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Deconvnet attribution: ReLUs pass only positive gradient, whatever their input.

    Reference: ``zeiler2014visualizing``. Chapter 3.
    """
    return _relu_backward_rule(model, x, target, _DeconvReLU)


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Guided backpropagation: ReLUs pass positive gradient where their input was positive.

    Reference: ``springenberg2015striving``. Chapter 3.
    """
    return _relu_backward_rule(model, x, target, _GuidedReLU)
