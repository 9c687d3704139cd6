"""AttnLRP and CP-LRP with every stabiliser at zero, as gradient x input of a modified forward pass (chapter 15).

:mod:`.lrp_transformer` carries relevance explicitly: each rule's backward divides the relevance of a
layer's output by that output and multiplies by the input. With the stabilisers at 0 every one of those
rules is the gradient of a slightly changed forward pass, times the input, because the relevance
:math:`R = z \\odot g` of an output :math:`z` makes :math:`R / z = g` (``achtibat2024attnlrp``, and the
"efficient" mode of their library lxt):

* the epsilon rule on a Linear/Conv layer, a constant added (a bias, a position embedding), a residual sum
  shared in proportion to its summands, the softmax rule: the **plain gradient**;
* LayerNorm with :math:`\\sigma` held constant: the gradient with :math:`\\sigma` **detached**;
* the uniform rule on a product of two tensors (:math:`QK^\\top`, :math:`AV`): **half the gradient** to each
  factor; CP-LRP: the attention weights detached;
* the identity rule on an element-wise activation :math:`y = \\phi(x)`: the gradient times
  :math:`\\phi(x) / x`.

The factors of the uniform rule are linear in the gradient, so they are folded into the weights that the
backward pass of the query, key and value projections multiplies by (:class:`_Projection`); in
self-attention the three projections run as one matrix product.

No step divides by a layer's output, so no stabiliser is needed and nothing is lost to one; the backward
pass is an ordinary gradient. ``lrp(model, x, target, composite="attn_lrp", epsilon=0)`` runs this form;
``tests/test_attnlrp.py`` checks it against the explicit rules with their stabilisers at 0 and against lxt.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from functools import partial
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from ..core.model_state import HookList
from ..core.targets import Target, select
from ._canonize import BATCHNORM
from ._relevance import ACTIVATIONS, _embedding_leaf
from .lrp_transformer import (_ADDITIONS, _DIVISIONS, _ELEMENTWISE, _NO_RULE, _PRODUCTS, NO_RULE_HINT,
                              _ReplacedForward, _attention_replacement, _linear_in_one, _projection_weights, _tracked,
                              check_attention, mha_blocked, sdpa_arguments)

# the functions that get a rule or a check; every other call (F.linear, reshapes, ...) passes straight through
_WATCHED = frozenset((*_ELEMENTWISE, F.layer_norm, *_ADDITIONS, *_PRODUCTS, *_DIVISIONS, *_NO_RULE,
                      F.scaled_dot_product_attention))


class _ScaledGradient(torch.autograd.Function):
    """The identity; its backward multiplies the gradient by ``factor``."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


class _Projection(torch.autograd.Function):
    """``F.linear(x, weight, bias)`` whose backward multiplies the gradient of the output columns from
    ``start`` on by ``backward_weight``: a rule's factors folded into the weight, and the columns whose
    gradient the rule discards skipped."""

    @staticmethod
    def forward(ctx, x, weight, bias, backward_weight, start):
        ctx.save_for_backward(backward_weight)
        ctx.start = start
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return (grad[..., ctx.start:] if ctx.start else grad) @ weight, None, None, None, None


def _project(x: torch.Tensor, weight: torch.Tensor, bias, factor: float) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` whose gradient is ``factor`` times the plain one (none for 0)."""
    if factor == 0:
        return F.linear(x.detach(), weight, bias)
    return _Projection.apply(x, weight, bias, weight * factor if factor != 1 else weight, 0)


class _IdentityRule(torch.autograd.Function):
    """``y = phi(x)`` (computed by the caller) whose gradient is ``phi(x) / x``: relevance passes unchanged
    (0 where ``x`` is 0). ``bounded`` says that ``phi(0) = 0`` and ``phi(x) / x`` stays bounded near 0 (GELU,
    SiLU, ReLU, tanh, ...), so that only an exact 0 needs care; otherwise (sigmoid, softplus) the ratio's
    infinities become 0 too. ``y`` comes in detached and is returned itself, without a copy."""

    @staticmethod
    def forward(ctx, x, y, bounded):
        ctx.save_for_backward(x, y)
        ctx.bounded = bounded
        ctx.mark_dirty(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        if not ctx.bounded:
            return grad * torch.nan_to_num(y / x, nan=0.0, posinf=0.0, neginf=0.0), None, None
        grad = (grad * y).div_(x)
        if not x.all():  # one reduction instead of nan_to_num's pass over the result
            grad.masked_fill_(x == 0, 0.0)
        return grad, None, None


# activations with phi(0) = 0 and phi(x) / x bounded near 0
_BOUNDED = frozenset((F.gelu, F.silu, F.relu, torch.relu, torch.tanh, torch.Tensor.tanh, F.elu, F.selu, F.celu,
                      F.leaky_relu, F.mish, F.hardswish, F.relu6, nn.GELU, nn.SiLU, nn.ReLU, nn.LeakyReLU, nn.PReLU,
                      nn.ReLU6, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Tanh, nn.Hardswish))


def _identity_rule(x: torch.Tensor, y: torch.Tensor, activation) -> torch.Tensor:
    return _IdentityRule.apply(x, y.detach(), activation in _BOUNDED)


class _LayerNormHeldSigma(torch.autograd.Function):
    """LayerNorm, computed by torch's fused kernel, whose backward holds the standard deviation constant:
    the gradient is the centred :math:`\gamma / \sigma \odot g` (centring is linear and self-adjoint)."""

    @staticmethod
    def forward(ctx, x, shape, weight, bias, eps):
        y, _, rstd = torch.native_layer_norm(x, shape, weight, bias, eps)
        ctx.save_for_backward(rstd, weight)
        ctx.dims = tuple(range(-len(shape), 0))
        return y

    @staticmethod
    def backward(ctx, grad):
        rstd, weight = ctx.saved_tensors
        h = grad * rstd if weight is None else grad * weight * rstd
        return h - h.mean(ctx.dims, keepdim=True), None, None, None, None


def _layer_norm(x, shape, weight, bias, eps) -> torch.Tensor:
    """LayerNorm with its standard deviation held constant in the backward pass (its mean is kept)."""
    return _LayerNormHeldSigma.apply(x, tuple(shape), weight, bias, eps)


def implicit_attention(module: nn.MultiheadAttention, query, key, value, key_padding_mask=None, attn_mask=None,
                       kind: str = "attn_lrp") -> torch.Tensor:
    """``module(query, key, value, ...)[0]`` computed so that its gradient x input is AttnLRP (``kind``
    "attn_lrp") or CP-LRP ("cp_lrp") without stabilisers."""
    constant = kind == "cp_lrp"
    # AttnLRP: half of AV's relevance to A, and half of that to each of Q and K; CP-LRP: all of it to V
    factors = (0.0, 0.0, 1.0) if constant else (0.25, 0.25, 0.5)
    packed = query is key is value and module._qkv_same_embed_dim
    if not module.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    (w_q, w_k, w_v), (b_q, b_k, b_v) = _projection_weights(module)
    batch, length, heads, width = query.shape[0], query.shape[1], module.num_heads, module.head_dim
    scale = width ** -0.5
    w_q, b_q = w_q * scale, None if b_q is None else b_q * scale
    if packed:  # self-attention: Q, K and V in one matrix product, each with its factor in the backward weight
        bias = None if b_q is None else torch.cat((b_q, b_k, b_v))
        start = 2 * module.embed_dim if constant else 0
        backward = w_v if constant else torch.cat([w * f for w, f in zip((w_q, w_k, w_v), factors)])
        qkv = _Projection.apply(query, torch.cat((w_q, w_k, w_v)), bias, backward, start)
        q, k, v = qkv.unflatten(-1, (3, heads, width)).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, d)
    else:
        q, k, v = (_project(t, w, b, f) for t, w, b, f in zip((query, key, value), (w_q, w_k, w_v),
                                                                (b_q, b_k, b_v), factors))
        q, k, v = (t.unflatten(-1, (heads, width)).transpose(1, 2) for t in (q, k, v))  # (B, H, T, d)
    if constant:
        q, k = q.detach(), k.detach()
    blocked = mha_blocked(attn_mask, key_padding_mask, heads)
    scores = q @ k.transpose(-2, -1)
    if blocked is not None:
        scores = scores.masked_fill(blocked, float("-inf"))
    weights = torch.softmax(scores, -1)
    context = (weights.detach() if constant else weights) @ v
    out = F.linear(context.transpose(1, 2).reshape(batch, length, heads * width), module.out_proj.weight,
                   module.out_proj.bias)
    return out if module.batch_first else out.transpose(0, 1)


def implicit_sdpa(args, kwargs, kind: str) -> torch.Tensor:
    """``F.scaled_dot_product_attention(*args, **kwargs)``, torch's fused kernel itself, with the gradient of
    AttnLRP (a quarter to the query and to the key, half to the value) or CP-LRP (the query and key detached,
    so only the value's path remains: the attention weights are constants)."""
    a = sdpa_arguments(args, kwargs)
    query, key, value = a["query"], a["key"], a["value"]
    if kind == "cp_lrp":
        query, key = query.detach(), key.detach()
    else:
        query, key, value = (_ScaledGradient.apply(query, 0.25), _ScaledGradient.apply(key, 0.25),
                             _ScaledGradient.apply(value, 0.5))
    mask = None if a["blocked"] is None else ~a["blocked"]
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=a["scale"])


def _layer_norm_forward(replaced: _ReplacedForward, x):
    m = replaced.module
    return _layer_norm(x, tuple(m.normalized_shape), m.weight, m.bias, m.eps)


def _activation_hook(module, args, out):
    return _identity_rule(args[0], out, type(module))


class _ImplicitFunctions(TorchFunctionMode):
    """The rules of functions called in the forward pass: the identity rule on GELU and its kind, LayerNorm
    with sigma detached; the plain gradient for what is linear in the input; a refusal, with the explicit
    rules' message, for what no rule covers."""

    def __init__(self, kind: str):
        super().__init__()
        self.inside_attention, self.kind = 0, kind

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _WATCHED or self.inside_attention or not torch.is_grad_enabled():
            return func(*args, **kwargs)
        if func in _ELEMENTWISE and args and _tracked(args[0]):
            return _identity_rule(args[0], func(*args, **kwargs), func)
        if func is F.layer_norm and args and _tracked(args[0]):
            bound = inspect.signature(F.layer_norm).bind(*args, **kwargs).arguments
            return _layer_norm(bound["input"], tuple(bound["normalized_shape"]), bound.get("weight"),
                               bound.get("bias"), bound.get("eps", 1e-5))
        position = _linear_in_one(func, args, kwargs)
        if position is not None:
            z = func(*args, **kwargs)
            if z.shape != args[position].shape:
                raise ValueError(f"lrp has no rule for {func.__name__} when a constant broadcasts the input from "
                                 f"{tuple(args[position].shape)} to {tuple(z.shape)}.")
            return z
        if func is F.scaled_dot_product_attention and any(map(_tracked, (*args, *kwargs.values()))):
            return implicit_sdpa(args, kwargs, self.kind)
        if func in _NO_RULE and sum(map(_tracked, args)) >= (2 if func in _PRODUCTS else 1):
            raise ValueError(f"lrp has no rule for {_NO_RULE[func]} called as a function in the model's forward: "
                             f"{NO_RULE_HINT}")
        return func(*args, **kwargs)


def supports(model: nn.Module) -> bool:
    """Whether :func:`relevance` applies: no BatchNorm (the explicit rules merge it into a layer first)."""
    return not any(isinstance(m, BATCHNORM) for m in model.modules())


@contextmanager
def _modified(model: nn.Module, kind: str, hooks: HookList) -> Iterator[None]:
    mode = _ImplicitFunctions(kind)

    def enter(module, args):
        mode.inside_attention += 1

    def leave(module, args, output):
        mode.inside_attention -= 1

    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            check_attention(module)
            hooks.append(_ReplacedForward(module, _attention_replacement(partial(implicit_attention, kind=kind))))
            hooks.append(module.register_forward_pre_hook(enter))
            hooks.append(module.register_forward_hook(leave, prepend=True))
        elif isinstance(module, nn.LayerNorm):
            hooks.append(_ReplacedForward(module, _layer_norm_forward))
        elif isinstance(module, ACTIVATIONS):
            hooks.append(module.register_forward_hook(_activation_hook))
    with mode:
        yield


def relevance(model: nn.Module, x: torch.Tensor, target: Target, kind: str, hooks: HookList,
              embedding: nn.Module | None = None) -> torch.Tensor:
    """The relevance of ``x`` (or, for token ids, of ``embedding``'s output summed per token) under AttnLRP or
    CP-LRP without stabilisers: gradient x input of the modified forward pass. The hooks are removed after."""
    try:
        leaves: list = []
        if embedding is None:
            x = x.detach().requires_grad_(True)
        else:
            hooks.append(embedding.register_forward_hook(_embedding_leaf(embedding, leaves)))
        with torch.enable_grad():
            with _modified(model, kind, hooks):
                out = model(x)
            if embedding is not None and len(leaves) != 1:
                raise ValueError(f"embedding ran {len(leaves)} times in one forward pass of the model; pass the "
                                 "layer that embeds the token ids, which runs exactly once.")
            source = x if embedding is None else leaves[0]
            (seed,) = torch.autograd.grad(select(out, target).sum(), out, retain_graph=True)
            (grad,) = torch.autograd.grad(out, source, grad_outputs=seed)
        attr = source.detach() * grad
        return attr if embedding is None else attr.flatten(2).sum(2)
    finally:
        hooks.remove_all()
