"""Gradient-only attribution: saliency and gradient x input (chapter 2).

.. math:: \\phi_i(x) = \\frac{\\partial f_c(x)}{\\partial x_i}, \\qquad
          \\phi_i^{\\times}(x) = x_i \\frac{\\partial f_c(x)}{\\partial x_i}
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.batching import map_batched
from ..core.model_state import explaining
from ..core.targets import Target, rows_of, select


def input_gradient(model: nn.Module, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d f_c / d x, f_c(x))`` for a batch, with the model already prepared by :func:`explaining`.

    The building block of every gradient-based method; it does not touch the model's state.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = select(model(x), target)
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad, scores.detach()


def _input_gradients(model: nn.Module, x: torch.Tensor, target: Target, batch_size: int | None) -> torch.Tensor:
    """:func:`input_gradient` of ``x``, ``batch_size`` rows per pass (default: the whole batch)."""
    return map_batched(lambda rows, s: input_gradient(model, rows, rows_of(target, s))[0], x, batch_size, len(x))


def gradient(model: nn.Module, x: torch.Tensor, target: Target, *, batch_size: int | None = None) -> torch.Tensor:
    """Vanilla gradient ("saliency"), signed: :math:`\\partial f_c(x) / \\partial x`.

    Simonyan et al. (2014) show the absolute value; we return the raw signed gradient and leave
    taking ``abs`` to the plot. ``batch_size``: rows per pass (default: the whole batch).
    Reference: ``simonyan2014deep``. Chapter 2.
    """
    with explaining(model, x, target):
        return _input_gradients(model, x, target, batch_size)


def gradient_x_input(model: nn.Module, x: torch.Tensor, target: Target, *,
                     batch_size: int | None = None) -> torch.Tensor:
    """Gradient times input, :math:`x \\odot \\partial f_c(x) / \\partial x`.

    Equals integrated gradients with a zero baseline on a linear model, and epsilon-LRP (epsilon
    -> 0) on a ReLU network, biases included (``ancona2018towards``; chapter 6). It is complete,
    summing to :math:`f_c(x) - f_c(0)`, on a bias-free ReLU network, which is positively
    homogeneous. ``batch_size``: rows per pass. Reference: ``shrikumar2016not``. Chapter 2.
    """
    with explaining(model, x, target):
        return x * _input_gradients(model, x, target, batch_size)
