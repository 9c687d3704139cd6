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

The implementation runs **one** forward pass over the batch ``[x; x']`` (``2B`` rows). Forward
hooks on the nonlinearity modules swap their output for a custom autograd function whose backward
uses the multiplier computed from the paired rows of that very call (so a ReLU module used twice, as
in torchvision's ResNet, is handled per call). Reference ``shrikumar2017learning``; Captum's
``DeepLift`` is the reference implementation of Rescale (``kokhlikyan2020captum``). Chapter 6.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._batching import map_batched
from ._canonize import BATCHNORM, batchnorm_scale
from ._model_state import explaining
from ._targets import Target, select

EPS = 1e-10  # below this |Δz| the multiplier is the derivative, as in Captum
RULES = ("rescale", "reveal_cancel")
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                nn.Softplus)
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The input rows and the reference rows of a ``[x; x']`` batch."""
    return t[: len(t) // 2], t[len(t) // 2:]


def _derivative(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """:math:`f'(z)` of an elementwise module, the fallback multiplier where the difference vanishes."""
    if isinstance(module, nn.ReLU):
        return (z > 0).to(z)
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        return torch.autograd.grad(module.forward(z).sum(), z)[0]


def _ratio(dy: torch.Tensor, dz: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """``dy / dz``, and ``slope`` where ``|dz| < EPS``."""
    return torch.where(dz.abs() < EPS, slope, dy / dz)  # dy / dz is not used (and may be nan) there


def _with_zero_reference(grad: torch.Tensor) -> torch.Tensor:
    """Gradient rows for ``[x; x']``: only the input rows carry the multipliers."""
    return torch.cat([grad, torch.zeros_like(grad)])


class _Rescale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, y, module):
        (z1, z0), (y1, y0) = _halves(z), _halves(y)
        ctx.save_for_backward(_with_zero_reference(_ratio(y1 - y0, z1 - z0, _derivative(module, z1))))
        return y.clone()  # a new tensor: the model may change it in place

    @staticmethod
    def backward(ctx, grad):
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None, None


class _MaxPool(torch.autograd.Function):
    """Max-pooling as in Captum: the difference :math:`\\max(y, y') - y'` goes to the maximum of the
    input window, :math:`y - \\max(y, y')` to the maximum of the reference window (and overlapping
    windows add up, which keeps summation to delta). The routing to the maxima is the gradient of
    the module's own output, ``graph[0]``, so nothing is recomputed."""

    @staticmethod
    def forward(ctx, z, y, graph):
        ctx.save_for_backward(z, y)
        ctx.graph = graph
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        z, y = ctx.saved_tensors
        (z1, z0), (y1, y0), g = _halves(z), _halves(y), _halves(grad)[0]
        out, z_in_graph = ctx.graph
        top = torch.maximum(y1, y0)
        (routed,) = torch.autograd.grad(out, z_in_graph, torch.cat([g * (top - y0), g * (y1 - top)]),
                                        retain_graph=True)
        slope = torch.zeros_like(z1)
        if ((z1 - z0).abs() < EPS).any():  # the plain gradient is needed only there
            slope = _halves(torch.autograd.grad(out, z_in_graph, _with_zero_reference(g), retain_graph=True)[0])[0]
        contribution = routed[: len(g)] + routed[len(g):]
        return _with_zero_reference(_ratio(contribution, z1 - z0, slope)), None, None


class _RevealCancel(torch.autograd.Function):
    """Forward: the module's output. Backward: multipliers :math:`m^+, m^-` for the two parts."""

    @staticmethod
    def forward(ctx, pos, neg, z, y, module):
        (z1, z0), f = _halves(z), module.forward
        dy_pos = 0.5 * ((f(z0 + pos) - f(z0)) + (f(z0 + neg + pos) - f(z0 + neg)))
        dy_neg = 0.5 * ((f(z0 + neg) - f(z0)) + (f(z0 + pos + neg) - f(z0 + pos)))
        slope = _derivative(module, z1)
        ctx.save_for_backward(_ratio(dy_pos, pos, slope), _ratio(dy_neg, neg, slope))
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        m_pos, m_neg = ctx.saved_tensors
        g = _halves(grad)[0]
        return g * m_pos, g * m_neg, None, None, None


def _parts(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`(\\Delta^+, \\Delta^-)`, written so that each has derivative 1/2 at 0 (DeepLIFT's choice)."""
    return 0.5 * (delta + delta.abs()), 0.5 * (delta - delta.abs())


def _linear_split(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`\\Delta z^\\pm`: the sums of the positive and of the negative terms :math:`w_{ij}\\Delta x_j`."""
    x1, x0 = _halves(x)
    pos, neg = _parts(x1 - x0.detach())
    w_pos, w_neg = module.weight.clamp(min=0), module.weight.clamp(max=0)

    def layer(inp, weight):
        return F.linear(inp, weight) if isinstance(module, nn.Linear) else module._conv_forward(inp, weight, None)

    return layer(pos, w_pos) + layer(neg, w_neg), layer(pos, w_neg) + layer(neg, w_pos)


def _scaled_split(bn: nn.Module, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The parts after an eval-mode BatchNorm, which scales each channel by s (and swaps them if s < 0)."""
    scale = batchnorm_scale(bn).view(-1, *[1] * (pos.dim() - 2))
    return torch.where(scale >= 0, scale * pos, scale * neg), torch.where(scale >= 0, scale * neg, scale * pos)


def _register(model: nn.Module, hooks: list, rule: str, splits: dict) -> None:
    def find(t):
        entry = splits.get(id(t))  # the version check rejects tensors changed in place since (``out += x``)
        return entry[2] if entry is not None and entry[0] is t and entry[1] == t._version else None

    def record(out, make):
        splits[id(out)] = (out, out._version, make)

    def linear_hook(module, args, out):
        record(out, lambda: _linear_split(module, args[0]))

    def batchnorm_hook(module, args, out):
        make = find(args[0])
        if make is not None:
            record(out, lambda: _scaled_split(module, *make()))

    def reveal_cancel_hook(module, args, out):
        z, make = args[0], find(args[0])
        pos, neg = make() if make is not None else _parts(_halves(z)[0] - _halves(z)[1].detach())
        return _RevealCancel.apply(pos, neg, z.detach(), out.detach(), module)

    for module in model.modules():
        if isinstance(module, _ELEMENTWISE):
            hook = reveal_cancel_hook if rule == "reveal_cancel" else (
                lambda m, args, out: _Rescale.apply(args[0], out.detach(), m))
            hooks.append(module.register_forward_hook(hook))
        elif isinstance(module, _MAXPOOL):
            hooks.append(module.register_forward_hook(
                lambda m, args, out: _MaxPool.apply(args[0], out.detach(), [out, args[0]])))
        elif rule == "reveal_cancel" and isinstance(module, (nn.Linear,) + _CONV):
            hooks.append(module.register_forward_hook(linear_hook))
        elif rule == "reveal_cancel" and isinstance(module, BATCHNORM):
            hooks.append(module.register_forward_hook(batchnorm_hook))


def _reference(baseline, x: torch.Tensor) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline != "zeros":
            raise ValueError(f"baseline must be 'zeros', a number or a tensor, got {baseline!r}.")
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if not isinstance(baseline, torch.Tensor):
        raise TypeError(f"baseline must be 'zeros', a number or a tensor, got {type(baseline).__name__}.")
    if not baseline.is_floating_point() or not torch.isfinite(baseline).all():
        raise ValueError("baseline must be a finite floating-point tensor.")
    try:
        return torch.broadcast_to(baseline.detach().to(x), x.shape).contiguous()
    except RuntimeError as error:
        raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to x's shape "
                         f"{tuple(x.shape)}.") from error


def deeplift(model: nn.Module, x: torch.Tensor, target: Target, *, baseline="zeros", rule: str = "rescale",
             batch_size: int | None = None) -> torch.Tensor:
    """DeepLIFT attribution of :math:`f_c(x) - f_c(x')` to the input differences :math:`x - x'`.

    Summation to delta, :math:`\\sum_i \\phi_i = f_c(x) - f_c(x')`, holds for networks of linear
    layers (Linear, Conv, BatchNorm in eval mode, average pooling, residual additions) and the
    nonlinearity *modules* ReLU, LeakyReLU, ELU, SELU, CELU, GELU, SiLU, Sigmoid, Tanh, Softplus and
    max-pooling. A nonlinearity called as a function (``F.relu``) keeps its gradient, which breaks
    summation to delta; a callable ``target`` that is not linear in the output is differentiated at
    :math:`f(x)` (the last step then is a gradient, not a DeepLIFT multiplier).

    Args:
        model: the network.
        x: input batch ``(B, ...)``.
        target: int, ``(B,)`` tensor of class indices, or a callable ``output -> (B,)``.
        baseline: the reference :math:`x'`: ``"zeros"``, a number, or a tensor broadcastable to
            ``x`` (one reference for all examples, or one per example).
        rule: ``"rescale"`` or ``"reveal_cancel"``. RevealCancel separates the positive and
            negative parts where a nonlinearity's input comes from a Linear/Conv layer (possibly
            through a BatchNorm); elsewhere, e.g. after a residual addition, the parts are those
            of the total difference and the rule coincides with Rescale.
        batch_size: at most this many rows per pass; a pass of ``k`` examples has ``2k`` rows (input
            and reference), and at least one example is passed at a time. Default: the whole batch.

    Returns:
        :math:`(x - x') \\odot m`, shape of ``x``; raw and signed.

    Reference ``shrikumar2017learning``. Chapter 6.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid rules: {', '.join(RULES)}.")
    with explaining(model, x) as hooks:
        reference = _reference(baseline, x)
        splits: dict = {}
        _register(model, hooks, rule, splits)

        def explain(rows: torch.Tensor, chunk: slice) -> torch.Tensor:
            splits.clear()
            chunk_target = target[chunk] if isinstance(target, torch.Tensor) and target.dim() == 1 else target
            both = torch.cat([rows, reference[chunk]]).detach().requires_grad_(True)
            with torch.enable_grad():
                scores = select(model(both)[: len(rows)], chunk_target)
                (grad,) = torch.autograd.grad(scores.sum(), both)
            return (rows - reference[chunk]) * grad[: len(rows)]

        per_pass = batch_size if batch_size is None or batch_size < 2 else batch_size // 2
        return map_batched(explain, x, per_pass, default=len(x))
