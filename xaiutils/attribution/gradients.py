"""Gradient-only attribution: saliency and gradient x input (chapter 2).

.. math:: \\phi_i(x) = \\frac{\\partial f_c(x)}{\\partial x_i}, \\qquad
          \\phi_i^{\\times}(x) = x_i \\frac{\\partial f_c(x)}{\\partial x_i}
"""
from __future__ import annotations

import torch
from torch import nn

from ._model_state import explaining
from ._targets import Target, select


def input_gradient(model: nn.Module, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d f_c / d x, f_c(x))`` for a batch, with the model already prepared by :func:`explaining`.

    The building block of every gradient-based method; it does not touch the model's state.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = select(model(x), target)
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad, scores.detach()


def gradient(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Vanilla gradient ("saliency"), signed: :math:`\\partial f_c(x) / \\partial x`.

    Simonyan et al. (2014) show the absolute value; we return the raw signed gradient and leave
    taking ``abs`` to the plot. Reference: ``simonyan2014deep``. Chapter 2.
    """
    with explaining(model, x):
        return input_gradient(model, x, target)[0]


def gradient_x_input(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Gradient times input, :math:`x \\odot \\partial f_c(x) / \\partial x`.

    Equals integrated gradients with a zero baseline on a linear model, and epsilon-LRP (epsilon
    -> 0) on a ReLU network, biases included (``ancona2018towards``; chapter 6). It is complete,
    summing to :math:`f_c(x) - f_c(0)`, on a bias-free ReLU network, which is positively
    homogeneous. Reference: ``shrikumar2016not``. Chapter 2.
    """
    with explaining(model, x):
        return x * input_gradient(model, x, target)[0]
