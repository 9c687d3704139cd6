"""DeepLIFT: attribution of the difference from a reference, with the Rescale and RevealCancel rules (chapter 6).

DeepLIFT explains :math:`f_c(x) - f_c(x')` for a reference input :math:`x'` (the baseline). Each
neuron carries its difference from reference :math:`\\Delta z = z - z'`, and a *multiplier*
:math:`m = \\partial f_c / \\partial \\Delta z` is propagated backwards by the chain rule. Linear
layers keep their gradient; only the nonlinearities change. The attribution is

.. math:: \\phi_i = (x_i - x'_i)\\, m_i , \\qquad \\sum_i \\phi_i = f_c(x) - f_c(x')
          \\quad \\text{(summation to delta)}.

* **Rescale**: a nonlinearity :math:`y = f(z)` gets the secant slope
  :math:`m = \\Delta y / \\Delta z = (f(z) - f(z')) / (z - z')` instead of its derivative (the
  derivative where :math:`|\\Delta z| < 10^{-10}`).
* **RevealCancel**: the input difference of a nonlinearity is split into the sums of the positive
  and of the negative terms :math:`w_{ij} \\Delta x_j` that the layer below contributes,
  :math:`\\Delta z = \\Delta z^+ + \\Delta z^-`, and each part gets its own multiplier,
  :math:`m^\\pm = \\Delta y^\\pm / \\Delta z^\\pm` with

  .. math:: \\Delta y^+ = \\tfrac12\\big(f(z' + \\Delta z^+) - f(z')\\big)
                        + \\tfrac12\\big(f(z' + \\Delta z^- + \\Delta z^+) - f(z' + \\Delta z^-)\\big),

  and :math:`\\Delta y^-` the same with + and - swapped. The layer below passes
  :math:`m^+ w_{ij}` to inputs whose term :math:`w_{ij} \\Delta x_j` is positive and
  :math:`m^- w_{ij}` to those whose term is negative (half of each where :math:`\\Delta x_j = 0`).
* **Max-pooling** as in Captum: the window's difference goes to its maximum in :math:`x` or in
  :math:`x'` (:class:`_MaxPool`); unlike Captum, overlapping windows add up, so summation to delta holds.

The implementation runs two forward passes per batch. The *reference pass* records the input and
output of every hooked module call; the *input pass* swaps each nonlinearity's output for a custom
autograd function whose backward uses the multiplier computed from that very call and its recorded
reference (so a ReLU module used twice, as in torchvision's ResNet, is handled per call), and the
backward pass then runs over the ``B`` input rows only. A reference shared by all examples (the
default) is passed through the model once, as a single row.

Reference ``shrikumar2017learning``; Captum's ``DeepLift`` is the reference implementation of Rescale
(``kokhlikyan2020captum``). Chapter 6.
"""
from __future__ import annotations

from collections import deque

import torch
from torch import nn
from torch.nn import functional as F

from ..core.baselines import resolve_baseline
from ..core.batching import map_batched
from ..core.checks import check_choice, check_finite
from ..core.model_state import explaining
from ..core.targets import Target, rows_of, select
from ._activations import Activations
from ._canonize import BATCHNORM, batchnorm_scale

EPS = 1e-10  # below this |Δz| the multiplier is the derivative, as in Captum
RULES = ("rescale", "reveal_cancel")
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                nn.Softplus)
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _Changed(RuntimeError):
    """The model changed the input of a hooked module in place after the call."""


class _Calls:
    """The reference pass records ``(z', y')``, the input and output of each hooked module call, in
    order; the input pass recalls them in the same order, so that each call meets its own reference.
    ``copy``: record copies of the inputs, for models that change them in place later."""

    def __init__(self):
        self.recording, self.copy, self.calls = True, False, deque()

    def record(self, module: nn.Module, z: torch.Tensor, y: torch.Tensor) -> None:
        self.calls.append((module, z, y, z._version, y._version))

    def recall(self, module: nn.Module, output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`(z', y')` of this call; :math:`y'` recomputed if the model has since changed it in place."""
        if not self.calls or self.calls[0][0] is not module:
            raise RuntimeError("the model calls its modules in a different order for the input and for the "
                               "reference; deeplift needs a forward pass whose order does not depend on the data.")
        _, z, y, z_version, y_version = self.calls.popleft()
        if z._version != z_version:
            raise _Changed()
        return z, module.forward(z) if output and y._version != y_version else y


def _derivative(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """:math:`f'(z)` of an elementwise module, the fallback multiplier where the difference vanishes."""
    if isinstance(module, nn.ReLU):
        return (z > 0).to(z)
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        return torch.autograd.grad(module.forward(z).sum(), z)[0]


def _ratio(dy: torch.Tensor, dz: torch.Tensor, slope) -> torch.Tensor:
    """``dy / dz``, and ``slope()`` where ``|dz| < EPS``; overwrites ``dy`` and ``dz``."""
    ratio, size = dy.div_(dz), dz.abs_()
    if size.numel() and size.amin() < EPS:  # dy / dz is not used (and may be nan) there
        torch.where(size < EPS, slope(), ratio, out=ratio)
    return ratio


class Rescale(torch.autograd.Function):
    """Forward: the module's output ``y`` (``out``, a detached alias marked dirty, becomes the output
    without a copy). Backward: the gradient times the Rescale multiplier :math:`(y - y') / (z - z')`."""

    @staticmethod
    def forward(ctx, z, out, module, z0, y0):
        ctx.multiplier = _ratio(out - y0, z - z0, lambda: _derivative(module, z))
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return torch.mul(grad, ctx.multiplier, out=ctx.multiplier), None, None, None, None  # runs once


class _MaxPool(torch.autograd.Function):
    """Max-pooling as in Captum: the difference :math:`\\max(y, y') - y'` goes to the maximum of the
    input window, :math:`y - \\max(y, y')` to the maximum of the reference window (and overlapping
    windows add up, which keeps summation to delta). The routing to the maxima is the gradient of
    max-pooling, of the input pass and of the reference pass: ``graph = (y, z, y', z')``."""

    @staticmethod
    def forward(ctx, z, out, graph):
        top = torch.maximum(out, graph[2])
        ctx.to_input, ctx.to_reference, ctx.graph = top - graph[2], out - top, graph
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        y, z, y0, z0 = ctx.graph
        (routed,) = torch.autograd.grad(y, z, grad * ctx.to_input, retain_graph=True)
        to_reference = grad * ctx.to_reference
        if len(y0) == len(grad):
            routed += torch.autograd.grad(y0, z0, to_reference)[0]
        else:  # one reference row for all examples: each example's share goes to the same maxima
            routed += torch.autograd.grad(y0, z0, to_reference[:, None], is_grads_batched=True)[0][:, 0]
        return _ratio(routed, z.detach() - z0.detach(), lambda: torch.autograd.grad(y, z, grad)[0]), None, None


class _RevealCancel(torch.autograd.Function):
    """Forward: the module's output. Backward: multipliers :math:`m^+, m^-` for the two parts."""

    @staticmethod
    def forward(ctx, pos, neg, z, z0, out, module):
        f = module.forward
        dy_pos = 0.5 * ((f(z0 + pos) - f(z0)) + (f(z0 + neg + pos) - f(z0 + neg)))
        dy_neg = 0.5 * ((f(z0 + neg) - f(z0)) + (f(z0 + pos + neg) - f(z0 + pos)))
        ctx.m_pos = _ratio(dy_pos, pos.clone(), lambda: _derivative(module, z))
        ctx.m_neg = _ratio(dy_neg, neg.clone(), lambda: _derivative(module, z))
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.m_pos, grad * ctx.m_neg, None, None, None, None


def _parts(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`(\\Delta^+, \\Delta^-)`, written so that each has derivative 1/2 at 0 (DeepLIFT's choice)."""
    return 0.5 * (delta + delta.abs()), 0.5 * (delta - delta.abs())


def _linear_split(module: nn.Module, x: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`\\Delta z^\\pm`: the sums of the positive and of the negative terms :math:`w_{ij}\\Delta x_j`."""
    pos, neg = _parts(x - x0)
    w_pos, w_neg = module.weight.clamp(min=0), module.weight.clamp(max=0)

    def layer(inp, weight):
        return F.linear(inp, weight) if isinstance(module, nn.Linear) else module._conv_forward(inp, weight, None)

    return layer(pos, w_pos) + layer(neg, w_neg), layer(pos, w_neg) + layer(neg, w_pos)


def _scaled_split(bn: nn.Module, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The parts after an eval-mode BatchNorm, which scales each channel by s (and swaps them if s < 0)."""
    scale = batchnorm_scale(bn).view(-1, *[1] * (pos.dim() - 2))
    return torch.where(scale >= 0, scale * pos, scale * neg), torch.where(scale >= 0, scale * neg, scale * pos)


def _register(model: nn.Module, hooks: list, rule: str, calls: _Calls, splits: dict) -> None:
    def find(t):
        entry = splits.get(id(t))  # the version check rejects tensors changed in place since (``out += x``)
        return entry[2] if entry is not None and entry[0] is t and entry[1] == t._version else None

    def record(out, make):
        splits[id(out)] = (out, out._version, make)

    def reference_input_hook(module, args):  # max-pooling keeps its graph in the reference pass
        if calls.recording and (calls.copy or isinstance(module, _MAXPOOL)):
            z = args[0].detach().clone() if calls.copy else args[0].detach()
            return (z.requires_grad_(isinstance(module, _MAXPOOL)),) + args[1:]

    def rescale_hook(module, args, out):
        if calls.recording:
            return calls.record(module, args[0], out)
        return Rescale.apply(args[0], out.detach(), module, *calls.recall(module))

    def maxpool_hook(module, args, out):
        if calls.recording:
            calls.record(module, args[0], out)
            return out.detach()
        return _MaxPool.apply(args[0], out.detach(), (out, args[0], *calls.recall(module)[::-1]))

    def linear_hook(module, args, out):
        if calls.recording:
            return calls.record(module, args[0], out)
        x0 = calls.recall(module, output=False)[0]
        record(out, lambda: _linear_split(module, args[0], x0))

    def batchnorm_hook(module, args, out):
        make = None if calls.recording else find(args[0])
        if make is not None:
            record(out, lambda: _scaled_split(module, *make()))

    def reveal_cancel_hook(module, args, out):
        if calls.recording:
            return calls.record(module, args[0], out)
        z0, make = calls.recall(module, output=False)[0], find(args[0])
        pos, neg = make() if make is not None else _parts(args[0] - z0)
        return _RevealCancel.apply(pos, neg, args[0].detach(), z0, out.detach(), module)

    linear = (nn.Linear,) + _CONV if rule == "reveal_cancel" else ()
    for module in model.modules():
        if isinstance(module, _ELEMENTWISE + _MAXPOOL + linear):
            hooks.append(module.register_forward_pre_hook(reference_input_hook))
        if isinstance(module, _ELEMENTWISE):
            hooks.append(module.register_forward_hook(reveal_cancel_hook if rule == "reveal_cancel" else rescale_hook))
        elif isinstance(module, _MAXPOOL):
            hooks.append(module.register_forward_hook(maxpool_hook))
        elif isinstance(module, linear):
            hooks.append(module.register_forward_hook(linear_hook))
        elif rule == "reveal_cancel" and isinstance(module, BATCHNORM):
            hooks.append(module.register_forward_hook(batchnorm_hook))


def _reference(baseline, x: torch.Tensor) -> torch.Tensor:
    """The reference as a tensor of ``x``'s shape, or of one row when it is the same for all examples."""
    if isinstance(baseline, str):
        if baseline == "zeros":
            return torch.zeros_like(x[:1])
        return resolve_baseline(x, baseline)  # one per example: "mean", "blur", "uniform", "gaussian"
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return check_finite(torch.full_like(x[:1], float(baseline)), "baseline")
    if not isinstance(baseline, torch.Tensor):
        raise TypeError(f"baseline must be a name, a number or a tensor; got {type(baseline).__name__}.")
    if not baseline.is_floating_point():
        raise TypeError(f"baseline must be a floating-point tensor; got dtype {baseline.dtype}.")
    check_finite(baseline, "baseline")
    shared = baseline.dim() < x.dim() or len(baseline) == 1
    try:
        return torch.broadcast_to(baseline.detach().to(x), x[:1].shape if shared else x.shape).contiguous()
    except RuntimeError as error:
        raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to x's shape "
                         f"{tuple(x.shape)}.") from error


def deeplift(model: nn.Module, x: torch.Tensor, target: Target, *, baseline="zeros", rule: str = "rescale",
             batch_size: int | None = None) -> torch.Tensor:
    """DeepLIFT attribution of :math:`f_c(x) - f_c(x')` to the input differences :math:`x - x'`.

    Summation to delta, :math:`\\sum_i \\phi_i = f_c(x) - f_c(x')`, holds for networks of linear
    layers (Linear, Conv, BatchNorm in eval mode, average pooling, residual additions) and the
    nonlinearity *modules* ReLU, LeakyReLU, ELU, SELU, CELU, GELU, SiLU, Sigmoid, Tanh, Softplus and
    max-pooling. A model that calls a nonlinearity as a function (``F.relu``) is refused: it would
    keep its gradient and break summation to delta. A callable ``target`` that is not linear in the output is differentiated at
    :math:`f(x)` (the last step then is a gradient, not a DeepLIFT multiplier).

    Args:
        model: the network.
        x: input batch ``(B, ...)``.
        target: int, ``(B,)`` tensor of class indices, or a callable ``output -> (B,)``.
        baseline: the reference :math:`x'`: a number, a tensor broadcastable to ``x`` (one
            reference for all examples, or one per example), or a name of
            :data:`xaiutils.core.baselines.BASELINES` (``"zeros"``, ``"blur"``, ...).
        rule: ``"rescale"`` or ``"reveal_cancel"``. RevealCancel separates the positive and
            negative parts where a nonlinearity's input comes from a Linear/Conv layer (possibly
            through a BatchNorm); elsewhere, e.g. after a residual addition, the parts are those
            of the total difference and the rule coincides with Rescale.
        batch_size: at most this many rows per pass (of the input, and of a reference per example).
            Default: the whole batch.

    Returns:
        :math:`(x - x') \\odot m`, shape of ``x``; raw and signed.

    Reference ``shrikumar2017learning``. Chapter 6.
    """
    check_choice(rule, "rule", RULES)
    with explaining(model, x, target) as hooks:
        reference = _reference(baseline, x)
        calls, splits = _Calls(), {}
        _register(model, hooks, rule, calls, splits)
        unhooked = Activations(model, hooks, outside=_ELEMENTWISE)  # functional activations, refused

        def attribute(rows: torch.Tensor, chunk: slice) -> torch.Tensor:
            reference_rows = reference if len(reference) == 1 else reference[chunk]
            calls.recording = True
            calls.calls.clear()
            with torch.enable_grad():  # nothing requires a gradient but max-pooling's input
                model(reference_rows)
            calls.recording = False
            splits.clear()
            rows = rows.detach().requires_grad_(True)
            with torch.enable_grad():
                with unhooked:
                    scores = select(model(rows), rows_of(target, chunk))
                if unhooked.counts:
                    raise ValueError(f"deeplift gives its multipliers to activation modules, but this model also "
                                     f"applies {unhooked.others(allowed='')} as functions, whose gradients would "
                                     "break summation to delta; use modules (nn.ReLU, nn.GELU, ...) instead.")
                if calls.calls:
                    raise RuntimeError("the model calls fewer modules for the input than for the reference; "
                                       "deeplift needs a forward pass whose order does not depend on the data.")
                (grad,) = torch.autograd.grad(scores.sum(), rows)
            return (rows.detach() - reference_rows) * grad

        def explain(rows: torch.Tensor, chunk: slice) -> torch.Tensor:
            try:
                return attribute(rows, chunk)
            except _Changed:  # the model changes an input of a hooked module in place: record copies
                calls.copy = True
                return attribute(rows, chunk)

        return map_batched(explain, x, batch_size, default=len(x))
