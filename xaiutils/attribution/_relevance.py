"""The mechanism behind LRP (chapter 6): rule and composite types, the layer-wise redistribution
shared by every rule, and the autograd nodes and hooks that carry relevance through the backward pass.

:mod:`.lrp` declares the rules and composites and is the public entry point; this module runs them.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ._canonize import BATCHNORM, batchnorm_scale, explicit_additions, merge_batchnorm
from ._targets import Target, select

STABILISER = 1e-6  # added to the denominators of all rules but epsilon, as Zennit does


def _same(t):
    return t


def _pos(t):
    return t.clamp(min=0)


def _neg(t):
    return t.clamp(max=0)


# ---------------------------------------------------------------------------- rules
class Term(NamedTuple):
    """One forward pass of a rule: modifiers for the layer's input, weight and bias."""
    input: Callable[[torch.Tensor], torch.Tensor] = _same
    weight: Callable[[torch.Tensor], torch.Tensor] = _same
    bias: Callable[[torch.Tensor], torch.Tensor] = _same


class Part(NamedTuple):
    """Terms that share one denominator; ``scale`` weighs the part's relevance, ``where`` restricts it
    to the outputs with a positive or negative original value."""
    terms: tuple[Term, ...]
    scale: float = 1.0
    where: str | None = None


class Rule(NamedTuple):
    """An LRP rule: its parts, and the stabiliser added (with the denominator's sign) to denominators."""
    parts: tuple[Part, ...]
    stabiliser: float = STABILISER


class Composite(NamedTuple):
    """Which rule each Linear/Conv layer gets: ``first`` for the first layer (the first module in
    ``model.modules()`` order of the kind ``first_on``, "conv" or "any"), ``conv`` for convolutions,
    ``dense`` for ``nn.Linear``."""
    dense: Rule
    conv: Rule
    first: Rule | None = None
    first_on: str = "any"


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LAYERS = (nn.Linear,) + _CONV
_AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d)
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ReLU6, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid)


class _Layer(NamedTuple):
    """A layer as ``fn(input, weight, bias)``, so that rules can run it with modified parameters;
    ``dim``: the input dimension along which the terms of a rule can be stacked into one pass."""
    fn: Callable
    weight: torch.Tensor
    bias: torch.Tensor | None
    dim: int | None

    def __call__(self, x):
        return self.fn(x, self.weight, self.bias)


def _layer(module: nn.Module) -> _Layer:
    if isinstance(module, nn.Linear):
        return _Layer(F.linear, module.weight, module.bias, -1)
    return _Layer(module._conv_forward, module.weight, module.bias, 1 if module.groups == 1 else None)


def _stabilise(z: torch.Tensor, stabiliser: float) -> torch.Tensor:
    """``z + stabiliser * sign(z)``, with sign(0) = +1, as a new tensor (copysign is faster than where)."""
    step = z + 0.0  # -0.0 becomes +0.0, whose sign is +
    torch.copysign(z.new_tensor(stabiliser), step, out=step)
    return step.add_(z)


def is_plain(rule: Rule) -> bool:
    """The epsilon rule (one term, nothing modified): :math:`R_x = x \\odot W^\\top (R_z / \\operatorname{stab}(z))`
    needs no forward pass of its own, the layer's backward supplies :math:`W^\\top` (:class:`_Input`)."""
    return rule.parts == (Part((Term(),)),)


def _input(modifier: Callable, x: torch.Tensor, low: float, high: float) -> torch.Tensor | None:
    """``modifier(x)``, or ``None`` if it is zero; :math:`x^\\pm` of an ``x`` of one sign (``low``, ``high``:
    its extremes) without computing them."""
    if modifier in (_pos, _neg) and (low >= 0 or high <= 0):
        return x if (modifier is _pos) == (low >= 0) else None
    inp = modifier(x)
    return inp if any(v.item() != 0 for v in torch.aminmax(inp)) else None  # aminmax is faster than any


def _passes(part: Part, layer: _Layer, x: torch.Tensor) -> list[tuple]:
    """``(inputs, weight, bias)`` of the forward passes of a part: one per term, or one for all terms side
    by side (inputs and weights stacked) where the layer allows. A term whose input and bias are zero
    (:math:`x^-` after a ReLU) adds exactly 0 and is left out."""
    (low, high), terms = (v.item() for v in torch.aminmax(x)), []
    for term in part.terms:
        inp, bias = _input(term.input, x, low, high), None if layer.bias is None else term.bias(layer.bias)
        if inp is not None or bias is not None and bias.any():
            inp = torch.zeros_like(x) if inp is None else inp
            terms.append(([inp.detach().requires_grad_(True)], term.weight(layer.weight), bias))
    if len(terms) > 1 and layer.dim is not None:
        inputs, weights, biases = zip(*terms)
        terms = [([i for i, in inputs], torch.cat(weights, 1), None if biases[0] is None else sum(biases))]
    return terms


def redistribute(rule: Rule, layer: _Layer, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """The relevance of the layer's input ``x`` given the relevance of its output, by ``rule``."""
    result, z = torch.zeros_like(x), layer(x) if any(part.where for part in rule.parts) else None
    for part in rule.parts:
        passes = _passes(part, layer, x)
        if not passes:
            continue
        with torch.enable_grad():
            outputs = [layer.fn(torch.cat(inputs, layer.dim) if len(inputs) > 1 else inputs[0], weight, bias)
                       for inputs, weight, bias in passes]
        share = _stabilise(sum(outputs[1:], outputs[0]).detach(), rule.stabiliser)
        torch.div(relevance, share, out=share)
        if part.where is not None:
            share.mul_(z > 0 if part.where == "positive" else z < 0)
        inputs = [inp for inputs, _, _ in passes for inp in inputs]
        for inp, grad in zip(inputs, torch.autograd.grad(outputs, inputs, grad_outputs=[share] * len(outputs))):
            result.addcmul_(inp.detach(), grad, value=part.scale)
    return result


# The forward of each node below returns the module's own output ``out`` (passed as a detached alias and
# marked dirty, so it becomes the output without a copy); the backward carries relevance, not gradient.
class _Relevance(torch.autograd.Function):
    """Backward: the relevance of the layer's input by the layer's rule."""

    @staticmethod
    def forward(ctx, x, out, layer, rule):
        ctx.save_for_backward(x)
        ctx.layer, ctx.rule = layer, rule
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, relevance):
        return redistribute(ctx.rule, ctx.layer, ctx.saved_tensors[0], relevance), None, None, None


class _Input(torch.autograd.Function):
    """At the input of an epsilon-rule layer. Backward: ``x`` times what arrives, the layer's own
    gradient :math:`W^\\top s`, which is the relevance :math:`R_x`."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.saved_tensors[0] * grad


class _Output(torch.autograd.Function):
    """At the output of an epsilon-rule layer. Backward: :math:`s = R_z / \\operatorname{stab}(z)`, for the
    layer's own backward to multiply by :math:`W^\\top`. After a merged ``batchnorm``, ``z`` is
    recomputed from its input, which its own backward keeps anyway."""

    @staticmethod
    def forward(ctx, z, out, stabiliser, batchnorm=None, bn_input=None):
        ctx.stabiliser, ctx.batchnorm = stabiliser, batchnorm
        if batchnorm is None:
            ctx.denominator = _stabilise(z, stabiliser)
        else:
            ctx.save_for_backward(bn_input)
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, relevance):
        denominator = ctx.denominator if ctx.batchnorm is None else _stabilise(
            ctx.batchnorm.forward(ctx.saved_tensors[0]), ctx.stabiliser)
        return torch.div(relevance, denominator, out=denominator), None, None, None, None  # runs once


class _Pass(torch.autograd.Function):
    """Backward: relevance passes to the input unchanged."""

    @staticmethod
    def forward(ctx, x, out):
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, relevance):
        return relevance, None


class _Sum(torch.autograd.Function):
    """``a + b``, sharing relevance in proportion to the summands (Zennit's rule for sums)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a + b

    @staticmethod
    def backward(ctx, relevance):
        a, b = ctx.saved_tensors
        share = _stabilise(a + b, STABILISER)
        torch.div(relevance, share, out=share)
        return a * share, b * share


def assign(model: nn.Module, composite: Composite) -> dict:
    """The rule of each Linear/Conv module of ``model``."""
    if composite.first_on not in ("any", "conv"):
        raise ValueError(f"Composite.first_on must be 'any' or 'conv', got {composite.first_on!r}.")
    rules, first = {}, composite.first
    for module in model.modules():
        if not isinstance(module, _LAYERS):
            continue
        if first is not None and (composite.first_on == "any" or isinstance(module, _CONV)):
            rules[module], first = first, None
        else:
            rules[module] = composite.conv if isinstance(module, _CONV) else composite.dense
    return rules


def register(model: nn.Module, hooks: list, state: dict) -> None:
    """Hooks that swap each module's output for one whose backward applies its LRP rule. An epsilon-rule
    layer (and average pooling) keeps its own backward between :class:`_Input` and :class:`_Output`; a
    BatchNorm right after it runs on its undivided output and is divided itself: the backward of the pair
    is that of the merged layer. ``state``: ``rules``, ``outputs`` (layer output -> module, and input or
    undivided output)."""
    def plain_input_hook(module, args):
        if module not in state["rules"] or is_plain(state["rules"][module]):
            return (_Input.apply(args[0]),) + args[1:]

    def layer_hook(module, args, out):
        rule = state["rules"][module]
        if is_plain(rule):
            result = _Output.apply(out, out.detach(), rule.stabiliser)
            state["outputs"][result] = (module, out)
        else:
            result = _Relevance.apply(args[0], out.detach(), _layer(module), rule)
            state["outputs"][result] = (module, args[0])
        return result

    def batchnorm_input_hook(module, args):
        layer, inner = state["outputs"].get(args[0], (None, None))
        if layer is not None and is_plain(state["rules"][layer]):
            batchnorm_scale(module)  # fails for a BatchNorm without running statistics
            state["merging"] = (inner, state["rules"][layer].stabiliser)
            return (inner,)

    def batchnorm_hook(module, args, out):
        (inner, stabiliser), state["merging"] = state.get("merging") or (None, None), None
        if args[0] is inner:
            return _Output.apply(out, out.detach(), stabiliser, module, args[0].detach())
        layer, x = state["outputs"].get(args[0], (None, None))
        if layer is None:
            return _Pass.apply(args[0], out.detach())
        weight, bias = merge_batchnorm(layer.weight, layer.bias, module)  # explain the pair as one layer
        merged = _layer(layer)._replace(weight=weight, bias=bias)
        return _Relevance.apply(x, out.detach(), merged, state["rules"][layer])

    for module in model.modules():
        if isinstance(module, _LAYERS + _AVGPOOL):
            hooks.append(module.register_forward_pre_hook(plain_input_hook))
        if isinstance(module, _LAYERS):
            hooks.append(module.register_forward_hook(layer_hook))
        elif isinstance(module, BATCHNORM):
            hooks.append(module.register_forward_pre_hook(batchnorm_input_hook))
            hooks.append(module.register_forward_hook(batchnorm_hook))
        elif isinstance(module, _AVGPOOL):  # the epsilon rule with the stabiliser of the other rules
            hooks.append(module.register_forward_hook(
                lambda m, args, out: _Output.apply(out, out.detach(), STABILISER)))
        elif isinstance(module, _ACTIVATIONS):
            hooks.append(module.register_forward_hook(lambda m, args, out: _Pass.apply(args[0], out.detach())))


def check_supported(model: nn.Module) -> None:
    unknown = sorted({type(m).__name__ for m in model.modules()
                      if next(m.parameters(recurse=False), None) is not None
                      and not isinstance(m, _LAYERS + BATCHNORM + _ACTIVATIONS)})
    if unknown:
        raise ValueError(f"lrp has rules for nn.Linear, nn.Conv1d/2d/3d and BatchNorm layers, but the model also "
                         f"has parameters in {', '.join(unknown)}; their relevance would be the plain gradient.")


def relevance(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """The relevance of ``x`` for ``target``, with the hooks of :func:`register` in place."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with explicit_additions(_Sum.apply):
            out = model(x)
        (seed,) = torch.autograd.grad(select(out, target).sum(), out, retain_graph=True)
        (relevance,) = torch.autograd.grad(out, x, grad_outputs=seed * out.detach())
    return relevance
