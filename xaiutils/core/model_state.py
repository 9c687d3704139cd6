"""The one place where ``xaiutils`` touches a user's model.

Every attribution method, metric and attack runs inside :func:`explaining`. On exit, also when
the call raised, the model has its original training/eval mode, the original ``requires_grad``
flag on every parameter, no hook that the call registered, no ``.grad`` created by it, and
in-place activations switched back on.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .checks import check_input, check_model_input
from .targets import Target, check_target


class HookList(list):
    """The hooks a method registered; all removed when :func:`explaining` exits."""

    def remove_all(self) -> None:
        while self:
            self.pop().remove()


@contextmanager
def explaining(model: nn.Module, x: torch.Tensor | None = None, target: Target | None = None, *,
               min_dim: int = 2) -> Iterator[HookList]:
    """Prepare ``model`` for explanation and restore it afterwards.

    Inside the block the model is in eval mode, its parameters do not require gradients (so a
    backward pass computes input gradients only), and modules with an ``inplace`` flag
    (``nn.ReLU(inplace=True)`` as in torchvision) run out of place so that hooks see their
    inputs. Yields a list: append every hook handle to it and it is removed on exit.

    A model in training mode is explained in eval mode with a warning: dropout and batch
    statistics would otherwise make the explanation random.

    Before anything changes, ``x`` is checked (:func:`~xaiutils.core.checks.check_input`,
    :func:`~xaiutils.core.checks.check_model_input`) and so is ``target`` against ``x``'s batch
    (:func:`~xaiutils.core.targets.check_target`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    if x is not None:
        check_input(x, min_dim=min_dim)
        check_model_input(model, x)
        if target is not None:
            check_target(target, len(x))
    was_training = {m: m.training for m in model.modules()}
    if model.training:
        warnings.warn(
            "The model is in training mode; it is explained in eval mode and restored afterwards. "
            "Call model.eval() before explaining to silence this warning.",
            stacklevel=3,
        )
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    hooks = HookList()
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        for m in inplace:
            m.inplace = False
        yield hooks
    finally:
        hooks.remove_all()
        for m in inplace:
            m.inplace = True
        for p, flag, grad in zip(params, requires_grad, grads):
            p.requires_grad_(flag)
            p.grad = grad
        for m, mode in was_training.items():
            m.training = mode
