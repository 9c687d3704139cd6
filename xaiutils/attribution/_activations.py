"""The nonlinearities a forward pass applies, whether written as modules or as functions.

Methods that change the backward rule of a nonlinearity (deconvnet, guided backprop, DeepLIFT)
must see every one of them. A hook on ``nn.ReLU`` modules misses ``F.relu`` in a model's
``forward``, and a model with GELU has no ReLU at all; both would silently give the plain
gradient. :class:`Activations` watches the forward pass through a ``TorchFunctionMode``: it
counts every activation call, and can route every ReLU, module or function, through a rule.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

RELU = "ReLU"
# function -> the activation it applies; modules call these too (nn.GELU calls F.gelu, ...)
ACTIVATIONS = {
    F.relu: RELU, torch.relu: RELU, torch.relu_: RELU, torch.Tensor.relu: RELU, torch.Tensor.relu_: RELU,
    F.gelu: "GELU", F.silu: "SiLU", F.elu: "ELU", F.selu: "SELU", F.celu: "CELU", F.leaky_relu: "LeakyReLU",
    F.softplus: "Softplus", F.mish: "Mish", F.hardswish: "Hardswish", F.hardtanh: "Hardtanh", F.prelu: "PReLU",
    torch.sigmoid: "Sigmoid", torch.Tensor.sigmoid: "Sigmoid", torch.tanh: "Tanh", torch.Tensor.tanh: "Tanh",
}
_IN_PLACE = {torch.relu_, torch.Tensor.relu_}


class Activations(TorchFunctionMode):
    """Inside the block, count the activation calls (``counts``: name -> calls) and, with ``relu``,
    compute every ReLU as ``relu(z)`` (an autograd function with the method's backward rule).

    ``outside``: module types whose own calls are not counted (the modules a method hooks itself,
    as DeepLIFT hooks ``nn.GELU``); only the calls made outside them are.
    """

    def __init__(self, model: nn.Module, hooks: list, *, relu: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 outside: tuple[type, ...] = ()):
        super().__init__()
        self.relu, self.counts, self.depth = relu, Counter(), 0
        for module in model.modules():
            if outside and isinstance(module, outside):
                hooks.append(module.register_forward_pre_hook(self._enter))
                hooks.append(module.register_forward_hook(self._leave))

    def _enter(self, module, args):
        self.depth += 1

    def _leave(self, module, args, output):
        self.depth -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = ACTIVATIONS.get(func)
        if name is not None and self.depth == 0:
            self.counts[name] += 1
            if name == RELU and self.relu is not None:
                if func in _IN_PLACE or kwargs.get("inplace"):
                    return args[0].copy_(self.relu(args[0].clone()))
                return self.relu(args[0])
        return func(*args, **kwargs)

    def others(self, allowed: str = RELU) -> str:
        """The activations other than ``allowed`` that were applied, as ``"GELU (12 calls)"``, or ``""``."""
        return ", ".join(f"{name} ({count} call{'s' * (count > 1)})"
                         for name, count in sorted(self.counts.items()) if name != allowed)
