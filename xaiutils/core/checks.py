"""Argument checks with one message style: the argument, what was given, what is expected.

Every public function of ``xaiutils`` checks its arguments with these helpers before it touches a
model, so a bad input is answered with, for example, ::

    ValueError: steps must be an integer >= 1; got 0.
    ValueError: x must be a batch (B, 1, ...); got shape (1, 28, 28), which looks like one example
                for the model's first layer Conv2d(1, 32, ...). Use x.unsqueeze(0).

and never with an error from deep inside torch, a hang, or a silently wrong result.
"""
from __future__ import annotations

import difflib
import math
from numbers import Integral, Real
from typing import Iterable

import torch
from torch import nn


def describe(value) -> str:
    """A short description of a given value, for error messages."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (bool, Integral, Real, str)) or value is None:
        return repr(value)
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 60 else text[:57] + '...'}"


def check_number(value, name: str, *, minimum: float | None = None, maximum: float | None = None,
                 exclusive_minimum: bool = False, exclusive_maximum: bool = False, integer: bool = False):
    """``value`` as a Python number within ``[minimum, maximum]``, or a ``ValueError``/``TypeError``."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
        value = value.item()
    elif hasattr(value, "item") and getattr(value, "shape", None) == () and not isinstance(value, bool):
        value = value.item()  # numpy scalars
    if isinstance(value, bool) or not isinstance(value, Integral if integer else Real):
        raise TypeError(f"{name} must be {kind}{_range_text(minimum, maximum, exclusive_minimum, exclusive_maximum)}; "
                        f"got {describe(value)}.")
    value = int(value) if integer else float(value) if not isinstance(value, Integral) else value
    too_low = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    too_high = maximum is not None and (value >= maximum if exclusive_maximum else value > maximum)
    if math.isnan(value) or too_low or too_high:
        raise ValueError(f"{name} must be {kind}{_range_text(minimum, maximum, exclusive_minimum, exclusive_maximum)}; "
                         f"got {value!r}.")
    return value


def _range_text(minimum, maximum, exclusive_minimum, exclusive_maximum) -> str:
    low = None if minimum is None else f"{'>' if exclusive_minimum else '>='} {minimum:g}"
    high = None if maximum is None else f"{'<' if exclusive_maximum else '<='} {maximum:g}"
    if low and high:
        return f" in {'(' if exclusive_minimum else '['}{minimum:g}, {maximum:g}{')' if exclusive_maximum else ']'}"
    return f" {low or high}" if (low or high) else ""


def check_int(value, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum`` (bools refused)."""
    return check_number(value, name, minimum=minimum, integer=True)


def check_positive(value, name: str) -> float:
    """``value`` as a finite number ``> 0``."""
    value = check_number(value, name, minimum=0, exclusive_minimum=True)
    if math.isinf(value):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")
    return value


def check_choice(value, name: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``; otherwise an error that lists them (and a near miss)."""
    choices = tuple(choices)
    if isinstance(value, str) and value in choices:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {describe(value)}{hint}.")


def check_finite(value: torch.Tensor, name: str) -> torch.Tensor:
    """``value`` if it holds no NaN or inf."""
    if not torch.isfinite(value).all():
        bad = "NaN" if torch.isnan(value).any() else "inf"
        raise ValueError(f"{name} must be finite; got {describe(value)} holding {bad} values.")
    return value


def check_input(x, *, min_dim: int = 2, name: str = "x") -> torch.Tensor:
    """``x`` as a non-empty, finite, floating-point batch ``(B, ...)`` of at least ``min_dim`` dims."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor batch (B, ...); got {describe(x)}.")
    if x.dim() < min_dim:
        kind = "a batch (B, ...)" if min_dim <= 2 else "a batch of images (B, ..., H, W)"
        hint = f" For a single example use {name}.unsqueeze(0)." if x.dim() == min_dim - 1 and x.dim() != 2 \
            or min_dim == 2 else ""
        raise ValueError(f"{name} must be {kind} with at least {min_dim} dims; got shape {tuple(x.shape)}.{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one example; got an empty batch of shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        hint = (f" If {name} holds token ids, this function needs a continuous input it can perturb: pass the "
                "embeddings, or use a method that takes ids (lrp, embedding_integrated_gradients)."
                if x.dim() == 2 and not x.is_complex() and x.dtype != torch.bool else f" Use {name}.float().")
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}.{hint}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values; attributions of such inputs are meaningless.")
    return x


def first_layer(model: nn.Module) -> nn.Module | None:
    """The first module with weights, in registration order (a guess of the layer that reads ``x``)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module
    return None


def check_model_input(model: nn.Module, x: torch.Tensor, name: str = "x") -> None:
    """Refuse what would fail deep inside torch: a dtype or device that differs from the model's,
    an example without its batch dimension, or autograd switched off by ``torch.inference_mode``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {describe(model)}.")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("xaiutils cannot explain inside torch.inference_mode(): attributions need autograd. "
                           "Call it outside the inference_mode block (torch.no_grad() around it is fine).")
    parameter = next((p for p in model.parameters() if p.is_floating_point()), None)
    if parameter is not None:
        if parameter.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but the model's parameters are {parameter.dtype}; "
                            f"use {name}.to({parameter.dtype}) or convert the model.")
        if parameter.device != x.device:
            raise ValueError(f"{name} is on {x.device} but the model is on {parameter.device}; "
                             f"use {name}.to({str(parameter.device)!r}).")
    layer = first_layer(model)
    dims = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}
    if layer is not None and type(layer) in dims and x.dim() == dims[type(layer)] - 1 \
            and x.shape[0] == layer.in_channels:
        raise ValueError(f"{name} must be a batch (B, {layer.in_channels}, ...); got shape {tuple(x.shape)}, which "
                         f"looks like one example for the model's first layer {layer}. Use {name}.unsqueeze(0).")


def check_same_batch(value: torch.Tensor, name: str, x: torch.Tensor) -> None:
    """A per-example tensor must have ``x``'s batch size."""
    if value.dim() == 0 or value.shape[0] != x.shape[0]:
        raise ValueError(f"{name} must have one entry per example of x, shape ({x.shape[0]}, ...); "
                         f"got shape {tuple(value.shape)}.")
