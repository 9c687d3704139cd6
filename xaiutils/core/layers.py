"""Resolve ``layer=`` (a module or its dotted name) to a module of the model."""
from __future__ import annotations

from torch import nn


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """The submodule ``layer`` of ``model``; a clear error lists the valid names."""
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("layer is a module that is not part of the model.")
        return layer
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer in modules and layer != "":
            return modules[layer]
        names = [n for n in modules if n]
        shown = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
        raise ValueError(f"the model has no layer named {layer!r}. Valid names: {shown}")
    raise TypeError(f"layer must be an nn.Module or a dotted module name, got {type(layer).__name__}.")


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` of the model, the usual default layer of the CAM family."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no nn.Conv2d; pass layer= explicitly.")
    return convs[-1]
