"""Layer-wise relevance propagation (LRP): rules, composites and the one mechanism behind them (chapter 6).

LRP explains the score :math:`f_c(x)` by sending it back through the network layer by layer. The
relevance :math:`R_j` of each output neuron of a layer is shared among the layer's inputs in
proportion to their contributions :math:`z_{ij}`:

.. math:: R_i = \\sum_j \\frac{z_{ij}}{\\sum_{i'} z_{i'j}} R_j .

The rules differ only in the contributions. Every rule here has the "gradient times input" form

.. math:: s_j = \\frac{R_j}{\\operatorname{stab}(\\sum_k z^{(k)}_j)}, \\qquad
          c^{(k)} = \\rho_k(W)^{\\top} s, \\qquad R_i = \\sum_k \\iota_k(x)_i \\, c^{(k)}_i ,

where each term :math:`k` feeds a modified input :math:`\\iota_k(x)` through the layer with modified
weights and bias, :math:`z^{(k)} = \\rho_k(W) \\iota_k(x) + \\rho_k(b)`, and :math:`c^{(k)}` is the
gradient of :math:`z^{(k)}` with respect to its input, weighted by :math:`s`. So a rule is a
declaration: modifier functions (:class:`Term`) grouped into parts that share a denominator
(:class:`Part`), and a stabiliser (:class:`Rule`); one mechanism (:func:`_redistribute`) runs them all.
The epsilon rule needs no forward pass of its own: :math:`c = W^\\top s` is the layer's own gradient,
so its relevance flows through the model's backward pass (:func:`_is_plain`).

A composite (:class:`Composite`) says which rule each layer gets. Everywhere, as in Zennit:
activations pass relevance unchanged, max-pooling sends it to the maximum (its gradient),
average pooling and residual additions share it in proportion to their inputs, and a BatchNorm that
follows a linear layer is merged into it (:mod:`._canonize`). References: ``bach2015pixel``
(LRP, epsilon, alpha-beta), ``montavon2017explaining`` (z+, z^B), ``montavon2019layer`` (gamma,
composites), ``lapuschkin2019unmasking`` (flat), ``anders2021software`` (Zennit), ``ancona2018towards``
(epsilon-LRP with epsilon -> 0 is gradient x input on ReLU networks without biases).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.weak import WeakIdKeyDictionary

from ._batching import map_batched
from ._canonize import BATCHNORM, batchnorm_scale, explicit_additions, merge_batchnorm
from ._model_state import explaining
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


def epsilon_rule(epsilon: float = 1e-6) -> Rule:
    """LRP-epsilon (``bach2015pixel``): :math:`z_{ij} = x_i w_{ij}`, denominator
    :math:`z_j + \\epsilon\\,\\mathrm{sign}(z_j)` (bias included). ``epsilon=0`` is LRP-0."""
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}.")
    return Rule((Part((Term(),)),), epsilon)


def zplus_rule() -> Rule:
    """LRP-z+ (``montavon2017explaining``): only positive contributions,
    :math:`z_{ij} = x_i^+ w_{ij}^+ + x_i^- w_{ij}^-` (positive bias included); alpha=1, beta=0."""
    return Rule((Part((Term(_pos, _pos, _pos), Term(_neg, _neg, torch.zeros_like))),))


def alpha_beta_rule(alpha: float = 2.0, beta: float = 1.0) -> Rule:
    """LRP-alpha-beta (``bach2015pixel``): positive contributions weighted by alpha, negative ones by
    beta, each normalised on its own; ``alpha - beta = 1`` keeps relevance conserved."""
    if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-12:
        raise ValueError(f"alpha-beta needs alpha, beta >= 0 and alpha - beta = 1, got alpha={alpha}, beta={beta}.")
    positive = (Term(_pos, _pos, _pos), Term(_neg, _neg, torch.zeros_like))
    negative = (Term(_pos, _neg, _neg), Term(_neg, _pos, torch.zeros_like))
    return Rule((Part(positive, alpha), Part(negative, -beta)))


def gamma_rule(gamma: float = 0.25) -> Rule:
    """LRP-gamma (``montavon2019layer``), in Zennit's form for inputs of either sign: positive weights
    boosted to :math:`w + \\gamma w^+` for outputs :math:`z_j > 0`, negative ones for :math:`z_j < 0`."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}.")

    def up(t):
        return t + gamma * t.clamp(min=0)

    def down(t):
        return t + gamma * t.clamp(max=0)

    return Rule((Part((Term(_pos, up, up), Term(_neg, down, torch.zeros_like)), where="positive"),
                 Part((Term(_pos, down, down), Term(_neg, up, torch.zeros_like)), where="negative")))


def flat_rule() -> Rule:
    """LRP-flat (``lapuschkin2019unmasking``): every input within a neuron's receptive field gets an
    equal share, :math:`z_{ij} = 1`."""
    return Rule((Part((Term(torch.ones_like, torch.ones_like, torch.zeros_like),)),))


def zbox_rule(low=None, high=None) -> Rule:
    """LRP-z^B for inputs bounded by ``low <= x <= high`` (``montavon2017explaining``):
    :math:`z_{ij} = x_i w_{ij} - l_i w_{ij}^+ - h_i w_{ij}^-`.

    ``low``/``high``: floats or tensors broadcastable to the layer's input; ``None`` uses each
    example's own smallest/largest value, which does not depend on the rest of the batch.
    """
    def bound(value, reduce):
        def modifier(x):
            if value is None:
                return reduce(x.flatten(1), 1).values.view(-1, *[1] * (x.dim() - 1)).expand_as(x)
            return torch.as_tensor(value).to(x).expand_as(x)
        return modifier

    def minus(clamp):
        return lambda t: -clamp(t)

    return Rule((Part((Term(), Term(bound(low, torch.min), minus(_pos), minus(_pos)),
                       Term(bound(high, torch.max), minus(_neg), minus(_neg)))),))


# ---------------------------------------------------------------------------- composites
class Composite(NamedTuple):
    """Which rule each Linear/Conv layer gets: ``first`` for the first layer (the first module in
    ``model.modules()`` order of the kind ``first_on``, "conv" or "any"), ``conv`` for convolutions,
    ``dense`` for ``nn.Linear``."""
    dense: Rule
    conv: Rule
    first: Rule | None = None
    first_on: str = "any"


def _named(name: str, epsilon: float, gamma: float, low, high) -> Composite:
    eps = epsilon_rule(epsilon)
    return {
        "epsilon": lambda: Composite(dense=eps, conv=eps),
        "epsilon_plus": lambda: Composite(dense=eps, conv=zplus_rule()),
        "epsilon_plus_flat": lambda: Composite(dense=eps, conv=zplus_rule(), first=flat_rule()),
        "epsilon_gamma_box": lambda: Composite(dense=eps, conv=gamma_rule(gamma), first=zbox_rule(low, high),
                                               first_on="conv"),
        "epsilon_alpha2_beta1": lambda: Composite(dense=eps, conv=alpha_beta_rule(2.0, 1.0)),
    }[name]()


COMPOSITES = ("epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1")

# ---------------------------------------------------------------------------- the mechanism
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


def _is_plain(rule: Rule) -> bool:
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


def _redistribute(rule: Rule, layer: _Layer, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
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
        return _redistribute(ctx.rule, ctx.layer, ctx.saved_tensors[0], relevance), None, None, None


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


def _assign(model: nn.Module, composite: Composite) -> dict:
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


def _register(model: nn.Module, hooks: list, state: dict) -> None:
    """Hooks that swap each module's output for one whose backward applies its LRP rule. An epsilon-rule
    layer (and average pooling) keeps its own backward between :class:`_Input` and :class:`_Output`; a
    BatchNorm right after it runs on its undivided output and is divided itself: the backward of the pair
    is that of the merged layer. ``state``: ``rules``, ``outputs`` (layer output -> module, and input or
    undivided output)."""
    def plain_input_hook(module, args):
        if module not in state["rules"] or _is_plain(state["rules"][module]):
            return (_Input.apply(args[0]),) + args[1:]

    def layer_hook(module, args, out):
        rule = state["rules"][module]
        if _is_plain(rule):
            result = _Output.apply(out, out.detach(), rule.stabiliser)
            state["outputs"][result] = (module, out)
        else:
            result = _Relevance.apply(args[0], out.detach(), _layer(module), rule)
            state["outputs"][result] = (module, args[0])
        return result

    def batchnorm_input_hook(module, args):
        layer, inner = state["outputs"].get(args[0], (None, None))
        if layer is not None and _is_plain(state["rules"][layer]):
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


def _check_supported(model: nn.Module) -> None:
    unknown = sorted({type(m).__name__ for m in model.modules()
                      if next(m.parameters(recurse=False), None) is not None
                      and not isinstance(m, _LAYERS + BATCHNORM + _ACTIVATIONS)})
    if unknown:
        raise ValueError(f"lrp has rules for nn.Linear, nn.Conv1d/2d/3d and BatchNorm layers, but the model also "
                         f"has parameters in {', '.join(unknown)}; their relevance would be the plain gradient.")


def _bounds(value, x: torch.Tensor, name: str):
    if value is None:
        return None
    try:
        return torch.broadcast_to(torch.as_tensor(value, dtype=x.dtype, device=x.device), x.shape)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a float or a tensor broadcastable to x's shape {tuple(x.shape)}.") from error


def _rows(value, rows: slice):
    """The chunk ``rows`` of a per-example (``(B, ...)`` tensor) argument; other values as they are."""
    return value[rows] if isinstance(value, torch.Tensor) and value.dim() >= 1 else value


def lrp(model: nn.Module, x: torch.Tensor, target: Target, *, composite: Union[str, Composite] = "epsilon_plus",
        epsilon: float = 1e-6, gamma: float = 0.25, low=None, high=None,
        batch_size: int | None = None) -> torch.Tensor:
    """Layer-wise relevance propagation of the score :math:`f_c(x)` to the input.

    The relevance entering the network is :math:`R = f(x) \\odot \\partial t / \\partial f(x)` for the
    target function :math:`t` of the output: for a class index, the one-hot vector times the logit
    :math:`f_c(x)`. LRP then conserves relevance layer by layer, so ``attr.sum()`` is close to
    :math:`f_c(x)`; biases (merged BatchNorm shifts included) and stabilisers absorb some of it.

    Args:
        model: a network of ``nn.Linear``/``nn.Conv*d`` layers, BatchNorm, pooling and activation
            modules; ``+`` of two branches (a residual connection) is treated as a sum layer. A ReLU
            may also be a function (its gradient passes relevance too); other activations must be
            modules, as functions they would scale relevance by their derivative.
        x: input batch ``(B, ...)``.
        target: int, ``(B,)`` tensor of class indices, or a callable ``output -> (B,)``.
        composite: one of :data:`COMPOSITES` (as Zennit's composites of the same names)

            * ``"epsilon"``: epsilon on every layer;
            * ``"epsilon_plus"``: z+ on convolutions, epsilon on dense layers;
            * ``"epsilon_plus_flat"``: as epsilon_plus, with flat on the first layer;
            * ``"epsilon_gamma_box"``: gamma on convolutions, epsilon on dense layers, z^B on the
              first convolution;
            * ``"epsilon_alpha2_beta1"``: alpha=2, beta=1 on convolutions, epsilon on dense layers;

            or a :class:`Composite` of rules built with :func:`epsilon_rule`, :func:`zplus_rule`,
            :func:`alpha_beta_rule`, :func:`gamma_rule`, :func:`flat_rule`, :func:`zbox_rule`.
        epsilon: the epsilon of the epsilon rule (the other rules use a fixed stabiliser of 1e-6).
        gamma: the gamma of the gamma rule.
        low, high: the bounds of the z^B rule, floats or tensors broadcastable to ``x`` (e.g.
            ``(1, C, 1, 1)`` for per-channel bounds of normalised images). Default: the smallest and
            largest value of each example.
        batch_size: at most this many rows per pass (default: the whole batch).

    Returns:
        The relevance of each input element, shape of ``x``; raw and signed.

    References ``bach2015pixel``, ``montavon2019layer``. Chapter 6.
    """
    if isinstance(composite, str) and composite not in COMPOSITES:
        raise ValueError(f"unknown composite {composite!r}; valid names: {', '.join(COMPOSITES)}.")
    if not isinstance(composite, (str, Composite)):
        raise TypeError(f"composite must be a name or a Composite, got {type(composite).__name__}.")
    with explaining(model, x) as hooks:
        _check_supported(model)
        low, high = _bounds(low, x, "low"), _bounds(high, x, "high")
        _assign(model, _named(composite, epsilon, gamma, low, high) if isinstance(composite, str) else composite)
        state = {}
        _register(model, hooks, state)

        def explain(rows: torch.Tensor, chunk: slice) -> torch.Tensor:
            rules = composite if isinstance(composite, Composite) else _named(
                composite, epsilon, gamma, _rows(low, chunk), _rows(high, chunk))
            state.update(rules=_assign(model, rules), outputs=WeakIdKeyDictionary())  # entries die with the outputs
            return _relevance(model, rows, _rows(target, chunk))

        return map_batched(explain, x, batch_size, default=len(x))


def _relevance(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with explicit_additions(_Sum.apply):
            out = model(x)
        (seed,) = torch.autograd.grad(select(out, target).sum(), out, retain_graph=True)
        (relevance,) = torch.autograd.grad(out, x, grad_outputs=seed * out.detach())
    return relevance
