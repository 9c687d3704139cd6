"""Modified backward passes through ReLU: deconvnet and guided backpropagation (chapter 3).

For :math:`y = \\max(0, z)` with upstream gradient :math:`g`, the three backward rules are

.. math:: \\text{gradient: } g \\cdot [z > 0], \\quad
          \\text{deconvnet: } \\max(g, 0), \\quad
          \\text{guided backprop: } \\max(g, 0) \\cdot [z > 0].

Every ReLU of the forward pass gets the rule: ``nn.ReLU`` modules (in-place ones and modules reused
several times, as in torchvision's ResNet, included) and functional ``F.relu`` / ``torch.relu``
calls alike (:class:`._activations.Activations`). The rules are defined for ReLU networks only: a
model that applies another activation (GELU, SiLU, sigmoid, ...), alone or beside ReLUs, is
refused with the activation and its modules named (a vision transformer's GELU, for example),
because its gradient would pass unchanged and the result would be neither method.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.batching import map_batched
from ..core.model_state import explaining
from ..core.targets import Target, rows_of
from ._activations import Activations
from .gradients import input_gradient


class DeconvReLU(torch.autograd.Function):
    """ReLU forward; deconvnet's backward: only the positive part of the gradient passes."""

    method = "deconvnet"

    @staticmethod
    def forward(ctx, z):
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


class GuidedReLU(torch.autograd.Function):
    """ReLU forward; guided backprop's backward: the positive gradient, where the input was positive."""

    method = "guided backprop"

    @staticmethod
    def forward(ctx, z):
        y = torch.relu(z)
        ctx.save_for_backward(y)  # y > 0 exactly where z > 0
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        # max(g, 0) * [z > 0]: ReLU's own fused backward, then the clamp in place (one pass fewer)
        return torch.ops.aten.threshold_backward(grad, y, 0).clamp_(min=0)


def relu_backward_rule(model: nn.Module, x: torch.Tensor, target: Target, rule, *,
                       batch_size: int | None = None) -> torch.Tensor:
    """The input gradient with every ReLU of the forward pass computed by ``rule`` (chapter 3)."""
    with explaining(model, x, target) as hooks:
        with Activations(model, hooks, relu=rule.apply) as activations:
            grad = map_batched(lambda rows, s: input_gradient(model, rows, rows_of(target, s))[0], x, batch_size,
                               len(x))
        if activations.others():
            raise ValueError(f"{rule.method} changes the backward rule of ReLU, but this model also "
                             f"applies {activations.others()}{_where(model, activations.counts)}; the method is "
                             f"defined for ReLU networks only (on other activations it would return their plain "
                             f"gradient).")
        return grad


def _where(model: nn.Module, counts) -> str:
    """`` (modules 'mlp.1', ...)``: the activation modules that are not ReLU, to name them in the refusal."""
    names = [name for name, m in model.named_modules() if type(m).__name__ in counts and type(m).__name__ != "ReLU"]
    if not names:
        return " (as functions)"
    return f" (module{'s' * (len(names) > 1)} {', '.join(repr(n) for n in names[:3])}{', ...' * (len(names) > 3)})"


def deconvnet(model: nn.Module, x: torch.Tensor, target: Target, *, batch_size: int | None = None) -> torch.Tensor:
    """Deconvnet attribution: ReLUs pass only positive gradient, whatever their input.

    ``batch_size``: rows per pass (default: the whole batch). Reference: ``zeiler2014visualizing``. Chapter 3.
    """
    return relu_backward_rule(model, x, target, DeconvReLU, batch_size=batch_size)


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target, *,
                    batch_size: int | None = None) -> torch.Tensor:
    """Guided backpropagation: ReLUs pass positive gradient where their input was positive.

    ``batch_size``: rows per pass (default: the whole batch). Reference: ``springenberg2015striving``. Chapter 3.
    """
    return relu_backward_rule(model, x, target, GuidedReLU, batch_size=batch_size)
