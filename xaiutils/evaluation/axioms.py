r"""Axioms an attribution method may satisfy, checked numerically (chapter 9).

* :func:`completeness` -- the map sums to :math:`f(x) - f(x')` (Sundararajan et al. 2017).
* :func:`sensitivity_a` and :func:`dummy` -- a feature that changes the output gets
  non-zero attribution; a feature the model ignores gets zero (Sundararajan et al. 2017).
* :func:`implementation_invariance` -- two functionally equal networks get the same map; build
  one with :func:`rescaled_copy`.
* :func:`input_invariance` -- a constant shift of the input, compensated by the first layer's
  bias, leaves the map unchanged (Kindermans et al. 2019); build the model with
  :func:`shifted_copy`.

Functions that build models work on deep copies; the caller's model is never changed.
"""
from __future__ import annotations

import copy
import inspect
from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..core.layers import resolve_layer
from ..core.checks import check_input, check_number, check_positive
from ..core.model_state import explaining
from ..core.targets import Target
from ..core.baselines import resolve_baseline
from ._utils import check_map_for_input, scores_of_rows

_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _scores(model: nn.Module, x: torch.Tensor, target: Target, batch_size: int | None) -> torch.Tensor:
    return scores_of_rows(model, lambda s: x[s], len(x), target, 1, len(x), batch_size=batch_size)[0]


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r""":math:`\max_i |a_i - b_i| / \max_i |a_i|` per example (0 when both maps are zero)."""
    gap = (a - b).flatten(1).abs().amax(1)
    scale = a.flatten(1).abs().amax(1)
    return gap / torch.where(scale == 0, torch.ones_like(scale), scale)


def completeness(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *, baseline="zeros",
                 batch_size: int | None = None) -> torch.Tensor:
    r"""The completeness gap :math:`\sum_i \phi_i - (f_c(x) - f_c(x'))`, per example.

    0 for a complete method (integrated gradients up to its quadrature error, DeepLIFT, exact
    Shapley values); gradient x input is complete, with the zero baseline, only on positively
    homogeneous models such as linear maps and bias-free ReLU networks (chapters 2 and 6).
    ``baseline`` is the :math:`x'` the method explained against (a tensor, a number, or a name of
    :func:`xaiutils.core.baselines.resolve_baseline`). ``f_c`` is the raw output of ``target``.

    Returns ``(B,)``. Reference: ``sundararajan2017axiomatic``. Chapter 9.
    """
    attr = check_map_for_input(attr, x)
    if attr.shape != x.shape:
        raise ValueError("completeness needs a map of the input's shape (one value per input feature).")
    with explaining(model, x, target):
        reference = resolve_baseline(x, baseline)
        gain = _scores(model, x, target, batch_size) - _scores(model, reference, target, batch_size)
    return attr.flatten(1).sum(1) - gain


class SensitivityCheck(NamedTuple):
    """Per example: the output change when one feature moves, that feature's attribution, and a violation flag."""

    output_change: torch.Tensor
    attribution: torch.Tensor
    violated: torch.Tensor


def _takes_baseline(method: Callable) -> bool:
    try:
        return "baseline" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def sensitivity_a(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, target: Target, *,
                  feature: tuple[int, ...], baseline: float = 0.0, atol: float = 1e-8,
                  **options) -> SensitivityCheck:
    r"""Sensitivity(a): if :math:`x` and :math:`x'` differ in one feature and the outputs differ, that feature must get non-zero attribution.

    :math:`x'` is ``x`` with the entry ``feature`` (an index into one example, e.g. ``(0, 3, 4)``)
    set to ``baseline``. A method with a ``baseline`` argument explains :math:`x` against
    :math:`x'`; others just explain :math:`x`. ``violated`` is true where
    :math:`|f(x) - f(x')| > \text{atol}` but :math:`|\phi_{\text{feature}}| \le \text{atol}`.
    The gradient violates it where the model saturates, e.g. :math:`f(x) = 1 - \mathrm{ReLU}(1 - x)`
    at :math:`x = 2` (the example of Sundararajan et al.); integrated gradients does not.

    Returns a :class:`SensitivityCheck` of ``(B,)`` tensors. Reference: ``sundararajan2017axiomatic``.
    Chapter 9.
    """
    check_input(x)
    entry = (feature,) if isinstance(feature, int) and not isinstance(feature, bool) else feature
    if not isinstance(entry, (tuple, list)) or len(entry) != x.dim() - 1 or not all(
            isinstance(i, int) and not isinstance(i, bool) and -n <= i < n for i, n in zip(entry, x.shape[1:])):
        raise ValueError(f"feature must index one entry of an example of shape {tuple(x.shape[1:])}, a tuple of "
                         f"{x.dim() - 1} integers such as {tuple(0 for _ in x.shape[1:])}; got {feature!r}.")
    index = (slice(None), *entry)
    check_number(baseline, "baseline")
    reference = x.detach().clone()
    reference[index] = baseline
    if _takes_baseline(method):
        options = {"baseline": reference, **options}
    attr = method(model, x, target, **options).detach()
    with explaining(model, x, target):
        change = _scores(model, x, target, None) - _scores(model, reference, target, None)
    attribution = attr[index].reshape(len(x))
    return SensitivityCheck(change, attribution, (change.abs() > atol) & (attribution.abs() <= atol))


def dummy(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, target: Target, *,
          mask: torch.Tensor, checks: int = 4, seed: int = 0, **options) -> torch.Tensor:
    r"""Sensitivity(b), the dummy axiom: a feature the model ignores gets zero attribution.

    ``mask`` (boolean, broadcastable to ``x``) marks features the model does not depend on.
    The claim is checked first: with ``checks`` random replacements of the masked features the
    output must not change (else ``ValueError``). Returns the largest :math:`|\phi_i|` over the
    masked features, per example: 0 for a method that satisfies the axiom.

    Returns ``(B,)``. Reference: ``sundararajan2017axiomatic``. Chapter 9.
    """
    check_input(x)
    mask = torch.as_tensor(mask, device=x.device).bool()
    try:
        mask = mask.expand_as(x)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to x's shape {tuple(x.shape)}.")
    if not mask.any():
        raise ValueError("mask selects no feature.")
    generator = torch.Generator().manual_seed(seed)
    with explaining(model, x), torch.no_grad():
        output = model(x)
        for _ in range(checks):
            other = torch.where(mask, torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device), x)
            if not torch.allclose(model(other), output, rtol=1e-5, atol=1e-6 * output.abs().max().item()):
                raise ValueError("the model's output changes when the masked features change: they are not dummies.")
    attr = check_map_for_input(method(model, x, target, **options), x)
    return torch.where(mask, attr.abs(), torch.zeros_like(attr)).flatten(1).amax(1)


# ---------------------------------------------------------------------------- functionally equal models
def rescaled_copy(model: nn.Module, layer: nn.Module | str, scale: float = 2.0) -> nn.Module:
    r"""A copy of ``model`` that computes the same function with different weights.

    ``layer`` (a Linear/Conv layer, or a BatchNorm) has its weight and bias multiplied by
    ``scale`` :math:`a > 0`, and the next Linear/Conv layer in module order has its weight divided
    by :math:`a`. Because :math:`\mathrm{ReLU}(a z) = a\,\mathrm{ReLU}(z)` (and max- or
    average-pooling commute with positive scaling), the function is unchanged whenever only such
    operations lie between the two layers; :func:`implementation_invariance` checks the outputs.
    Gradients, and so every gradient-based method, are unchanged too; rules that add constants
    (LRP's :math:`\epsilon`) are not. Chapter 9.
    """
    check_positive(scale, "scale")
    copied = copy.deepcopy(model)
    first = resolve_layer(copied, layer) if isinstance(layer, str) else \
        dict(copied.named_modules())[next(n for n, m in model.named_modules() if m is layer)]
    if not isinstance(first, (*_LINEAR, nn.modules.batchnorm._BatchNorm)):
        raise ValueError(f"layer must be a Linear, Conv or BatchNorm layer, got {type(first).__name__}.")
    modules = list(copied.modules())
    following = [m for m in modules[modules.index(first) + 1:] if isinstance(m, _LINEAR)]
    if not following:
        raise ValueError("no Linear or Conv layer follows the layer to rescale.")
    with torch.no_grad():
        first.weight.mul_(scale)
        if first.bias is not None:
            first.bias.mul_(scale)
        following[0].weight.div_(scale)
    return copied


def implementation_invariance(method: Callable[..., torch.Tensor], model: nn.Module, other: nn.Module,
                              x: torch.Tensor, target: Target, *, rtol: float = 1e-5, **options) -> torch.Tensor:
    r"""How much the maps of two functionally equal models differ: :math:`\max|\phi - \phi'| / \max|\phi|` per example.

    ``other`` must compute the same outputs as ``model`` on ``x`` (checked, relative tolerance
    ``rtol``; build it with :func:`rescaled_copy`). 0 (to rounding) for an implementation
    invariant method. Returns ``(B,)``. Reference: ``sundararajan2017axiomatic``. Chapter 9.
    """
    check_input(x)
    with torch.no_grad(), explaining(model, x), explaining(other, x):
        out, out_other = model(x), other(x)
    if not torch.allclose(out, out_other, rtol=rtol, atol=rtol * out.abs().max().item()):
        raise ValueError("the two models are not functionally equal on x: their outputs differ.")
    return _relative_difference(method(model, x, target, **options).detach(),
                                method(other, x, target, **options).detach())


class _ShiftCompensated(nn.Module):
    """``layer(x) - layer_without_bias(shift)``: the layer's bias compensates a constant input shift."""

    def __init__(self, layer: nn.Module, shift: torch.Tensor):
        super().__init__()
        self.layer = layer
        self.register_buffer("shift", shift)

    def _shift_like(self, x: torch.Tensor) -> torch.Tensor:
        shift = self.shift.to(x)
        if isinstance(self.layer, nn.Linear) and shift.numel() > 1 and shift.dim() > 1:
            # a flattened image: one value per feature, or per channel (C, 1, 1) in channel-major order
            if x.shape[-1] % shift.numel() or shift.flatten(1).shape[1] not in (1, x.shape[-1] // shift.shape[0]):
                raise ValueError(f"cannot match the shift {tuple(shift.shape)} to the first layer's input "
                                 f"{tuple(x.shape[1:])}.")
            shift = shift.reshape(-1).repeat_interleave(x.shape[-1] // shift.numel())
        try:
            return shift.expand_as(x[:1])
        except RuntimeError:
            raise ValueError(f"the shift {tuple(shift.shape)} does not broadcast to the first layer's input "
                             f"{tuple(x.shape[1:])}.")

    def compensation(self, x: torch.Tensor) -> torch.Tensor:
        shift = self._shift_like(x)
        if isinstance(self.layer, nn.Linear):
            return F.linear(shift, self.layer.weight)
        conv = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}[type(self.layer)]
        if self.layer.padding_mode != "zeros":
            raise ValueError("shift compensation supports zero padding only.")
        return conv(shift, self.layer.weight, None, self.layer.stride, self.layer.padding, self.layer.dilation,
                    self.layer.groups)

    def forward(self, x):
        return self.layer(x) - self.compensation(x)


def shifted_copy(model: nn.Module, shift, *, layer: nn.Module | str | None = None) -> nn.Module:
    r"""A copy :math:`f_2` of ``model`` :math:`f_1` with :math:`f_2(x + m) = f_1(x)` for the constant shift :math:`m`.

    As Kindermans et al.: the first layer :math:`W x + b` gets the bias :math:`b - W m`, so it sees
    the same pre-activations. With zero padding a convolution's :math:`W m` differs at the
    borders, so the compensation is a per-position bias map (exact everywhere). ``layer`` is the
    first layer the input meets (default: the first Linear/Conv in module order); ``shift`` is a
    number, a tensor of one example's shape, or one value per channel ``(C, 1, 1)``. Chapter 9.
    """
    copied = copy.deepcopy(model)
    if layer is None:
        name = next((n for n, m in copied.named_modules() if isinstance(m, _LINEAR)), None)
        if name is None:
            raise ValueError("the model has no Linear or Conv layer to compensate the shift.")
    else:
        name = layer if isinstance(layer, str) else next(n for n, m in model.named_modules() if m is layer)
    module = resolve_layer(copied, name)
    if not isinstance(module, _LINEAR):
        raise ValueError(f"the first layer must be Linear or Conv, got {type(module).__name__}.")
    parent_name, _, child = name.rpartition(".")
    parent = copied.get_submodule(parent_name) if parent_name else copied
    shift = torch.as_tensor(shift, dtype=module.weight.dtype).detach().clone()
    setattr(parent, child, _ShiftCompensated(module, shift))
    return copied


def input_invariance(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, target: Target, *,
                     shift, layer: nn.Module | str | None = None, shifted_options: dict | None = None,
                     rtol: float = 1e-5, **options) -> torch.Tensor:
    r"""Input invariance: compare the map of :math:`f_1` at :math:`x` with that of :func:`shifted_copy` :math:`f_2` at :math:`x + m`.

    Both networks compute the same output and the same gradients, so the gradient and guided
    backprop are invariant, while gradient x input, and IG or DeepLIFT with a zero baseline, are
    not (their maps scale with :math:`x` itself). IG with the baseline shifted along
    (``shifted_options=dict(baseline=m)``) is invariant again. ``options`` go to both calls,
    ``shifted_options`` (if given) replace them for :math:`f_2`.

    Returns :math:`\max|\phi_1 - \phi_2| / \max|\phi_1|` per example, ``(B,)``.
    Reference: ``kindermans2019reliability``. Chapter 9.
    """
    check_input(x)
    shifted = shifted_copy(model, shift, layer=layer)
    moved = x + torch.as_tensor(shift, dtype=x.dtype, device=x.device)
    with torch.no_grad(), explaining(model, x), explaining(shifted, x):
        out, out_shifted = model(x), shifted(moved)
    if not torch.allclose(out, out_shifted, rtol=rtol, atol=rtol * out.abs().max().item()):
        raise ValueError("the shifted model does not reproduce the outputs: is `layer` the first layer of the model?")
    return _relative_difference(method(model, x, target, **options).detach(),
                                method(shifted, moved, target, **(options if shifted_options is None
                                                                  else shifted_options)).detach())
