"""Canonical forms that relevance methods need: merged BatchNorm and explicit residual sums (chapter 6).

Relevance rules are defined for a layer ``z = W x + b``. Two things in modern networks do not look
like that, and both are rewritten here *for the explanation only*; the model is never changed.

* A BatchNorm after a linear layer. In eval mode it is the affine map
  :math:`y = \\gamma (z - \\mu) / \\sqrt{\\sigma^2 + \\varepsilon} + \\beta`, so the pair is one linear
  layer with :math:`W' = s W` and :math:`b' = s (b - \\mu) + \\beta`, where
  :math:`s = \\gamma / \\sqrt{\\sigma^2 + \\varepsilon}` per output channel
  (:func:`merge_batchnorm`).
* A residual connection ``a + b`` written with ``+`` in a model's ``forward``. It is an operation of
  its own, through which relevance must be shared between the two branches instead of being copied
  to both, as the plain gradient of ``+`` does. :func:`explicit_additions` routes every such
  addition through a function of our choice; ``lrp(..., residual="gradient")`` leaves them to ``+``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def batchnorm_scale(bn: nn.Module) -> torch.Tensor:
    """The per-channel factor :math:`s = \\gamma / \\sqrt{\\sigma^2 + \\varepsilon}` of an eval-mode BatchNorm."""
    if bn.running_var is None:
        raise ValueError(
            f"{type(bn).__name__} without running statistics (track_running_stats=False) normalises with "
            "the statistics of the batch, so the explanation of an example would depend on the others.")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    return scale if bn.weight is None else bn.weight * scale


def merge_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None,
                    bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(layer(x))`` as one layer, for a Linear or Conv ``layer`` (new tensors)."""
    scale = batchnorm_scale(bn)
    shift = -bn.running_mean if bias is None else bias - bn.running_mean
    merged_bias = shift * scale if bn.bias is None else shift * scale + bn.bias
    return weight * scale.view(-1, *[1] * (weight.dim() - 1)), merged_bias


_ADDITIONS = (torch.add, torch.Tensor.add, torch.Tensor.add_)  # ``a + b`` and ``a += b`` arrive as these


def _residual(args, kwargs) -> bool:
    """An addition of two same-shaped tensors that both depend on the explained input."""
    return (not kwargs and len(args) == 2 and all(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
            and args[0].shape == args[1].shape)


class _ExplicitAdditions(TorchFunctionMode):
    def __init__(self, replace: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.replace = replace

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _ADDITIONS and _residual(args, kwargs):
            if func is torch.Tensor.add_:  # in place, as torchvision's ``out += identity``
                return args[0].copy_(self.replace(args[0].clone(), args[1]))
            return self.replace(*args)
        return func(*args, **(kwargs or {}))


@contextmanager
def explicit_additions(replace: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Inside the block, ``a + b`` (also ``torch.add``, ``a += b``) is computed as ``replace(a, b)``.

    Only additions of two tensors of the same shape that both require gradients are replaced: inside
    :func:`~xaiutils.core.model_state.explaining` parameters do not require gradients, so
    these are exactly the additions of two branches computed from the input, such as the residual
    connections of a ResNet. Adding a bias or a constant is left alone. ``a.add_(b)`` keeps its
    in-place meaning. Additions written as ``torch.sum(torch.stack(...))`` are not seen.
    """
    with _ExplicitAdditions(replace):
        yield
