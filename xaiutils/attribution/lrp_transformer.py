"""AttnLRP and CP-LRP: relevance through the parts of a transformer (chapter 15).

:mod:`._relevance` carries relevance backwards through Linear/Conv layers, activations and residual
sums. A transformer adds four operations, each with a rule of AttnLRP (``achtibat2024attnlrp``):

* **LayerNorm** :math:`y = \\gamma \\odot (x - \\mu(x)) / \\sigma(x) + \\beta`, with :math:`\\sigma`
  held constant, is a linear map of :math:`x`; it gets the epsilon rule,
  :math:`R_x = x \\odot C\\big(\\tfrac{\\gamma}{\\sigma} \\odot \\tfrac{R_y}{\\operatorname{stab}(y)}\\big)`
  with :math:`C` the centring :math:`h \\mapsto h - \\operatorname{mean}(h)` (:func:`layer_norm_rule`).
* **Softmax** :math:`s = \\operatorname{softmax}(x)`: :math:`R_x = x \\odot (R_s - s \\sum_j R_{s,j})`,
  the paper's Taylor expansion at :math:`x` (:func:`softmax_rule`).
* **A product of two matrices** :math:`c = a b` (:math:`Q K^{\\top}` and :math:`A V`): the sum over
  the inner index gets the epsilon rule and each product :math:`a_{ij} b_{jk}` is split uniformly
  between its two factors,
  :math:`R_{a,ij} = \\tfrac12 a_{ij} \\sum_k b_{jk} R_{c,ik} / \\operatorname{stab}(c_{ik})` and the
  same for :math:`b` (:func:`matmul_rule`).
* **An element-wise non-linearity** (GELU) passes relevance unchanged (the identity rule). A function
  linear in one input plus a constant (adding a position embedding, also in place; scaling; a sum or a
  mean) gets the epsilon rule, :math:`R_x = x \\odot J^{\\top} (R / \\operatorname{stab}(z))` with the
  Jacobian :math:`J` from autograd: a constant it adds is a bias that absorbs its share of the relevance.

CP-LRP (``ali2022xai``) treats the attention weights :math:`A` as constants: no relevance flows
through :math:`Q K^{\\top}` and the softmax, and :math:`A V` is a linear map of :math:`V` (epsilon rule).

Every rule is an autograd function whose backward carries relevance (the mechanism of
:mod:`._relevance`). ``nn.MultiheadAttention`` computes inside one functional call, so while explaining, its forward is
replaced by a computation from its parameters with these rules (:func:`attention_forward`; its
projections get the epsilon rule) that gives the same output. Attention written as a call of
``F.scaled_dot_product_attention`` (timm-style blocks) gets the same rules on that call (:func:`sdpa_rule`). The rules of functions (GELU, ``+`` of a constant) act
inside :func:`transformer_functions` (``F.layer_norm`` too); there, a softmax, a product of two tensors
outside ``nn.MultiheadAttention``, and other non-linear functions (``exp``, ``sqrt``, ``pow``, ``var``, ...)
are refused, since no rule would apply to them.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from functools import partial
from typing import Iterator, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from ..core.model_state import HookList
from ._relevance import LAYERS, STABILISER, _DivideByOutput, _Pass, _TimesInput, stabilise

__all__ = ["ATTENTION_RULES", "AttentionRules", "layer_norm_rule", "softmax_rule", "matmul_rule", "epsilon_linear",
           "attention_forward", "sdpa_rule", "check_attention", "attach_attention", "transformer_functions"]

ATTENTION_RULES = ("attn_lrp", "cp_lrp")


class AttentionRules(NamedTuple):
    """How relevance passes through attention: ``kind`` one of :data:`ATTENTION_RULES`, and the
    stabiliser of every epsilon step inside attention, LayerNorm and constant additions."""
    kind: str = "attn_lrp"
    epsilon: float = STABILISER


# ---------------------------------------------------------------------------- the rules
class _LayerNormRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, shape, weight, bias, eps, stabiliser):
        y, _, rstd = torch.native_layer_norm(x, shape, weight, bias, eps)  # rstd = 1 / sigma, in the same pass
        ctx.save_for_backward(x, y, rstd, weight)
        ctx.dims, ctx.stabiliser = tuple(range(-len(shape), 0)), stabiliser
        return y

    @staticmethod
    def backward(ctx, relevance):
        x, y, rstd, weight = ctx.saved_tensors
        h = relevance / stabilise(y, ctx.stabiliser) * rstd
        if weight is not None:
            h = h * weight
        return x * (h - h.mean(ctx.dims, keepdim=True)), None, None, None, None, None


class _SoftmaxRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, masked):
        s = torch.softmax(x, dim)
        if masked:  # a masked score (-inf) has weight 0 and gets relevance 0
            x = x.masked_fill(~torch.isfinite(x), 0.0)
        ctx.save_for_backward(x, s)
        ctx.dim = dim
        return s

    @staticmethod
    def backward(ctx, relevance):
        x, s = ctx.saved_tensors
        return x * (relevance - s * relevance.sum(ctx.dim, keepdim=True)), None, None


class _MatmulRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, share, stabiliser):
        c = a @ b
        ctx.save_for_backward(a, b, c)
        ctx.share, ctx.stabiliser = share, stabiliser
        return c

    @staticmethod
    def backward(ctx, relevance):
        a, b, c = ctx.saved_tensors
        s = relevance / stabilise(c, ctx.stabiliser)
        to_a = ctx.share * a * (s @ b.transpose(-2, -1)) if ctx.needs_input_grad[0] else None
        to_b = (1 - ctx.share) * b * (a.transpose(-2, -1) @ s) if ctx.needs_input_grad[1] else None
        return to_a, to_b, None, None


def layer_norm_rule(x: torch.Tensor, module: nn.LayerNorm, epsilon: float = STABILISER) -> torch.Tensor:
    """``module(x)``, whose backward is the LayerNorm rule with :math:`\\sigma` held constant (epsilon rule)."""
    return _LayerNormRule.apply(x, tuple(module.normalized_shape), module.weight, module.bias, module.eps, epsilon)


def softmax_rule(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``softmax(x, dim)``, whose backward is AttnLRP's softmax rule :math:`R_x = x \\odot (R - s \\sum R)`."""
    return _SoftmaxRule.apply(x, dim, True)


def matmul_rule(a: torch.Tensor, b: torch.Tensor, share: float = 0.5, epsilon: float = STABILISER) -> torch.Tensor:
    """``a @ b``, whose backward gives ``a`` the fraction ``share`` of each product's relevance and ``b``
    the rest: 0.5 is AttnLRP's uniform rule, 0 (``a`` constant) CP-LRP's value path."""
    return _MatmulRule.apply(a, b, share, epsilon)


def epsilon_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   epsilon: float = STABILISER) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` with the epsilon rule, as :class:`._relevance.RelevanceHook` runs it."""
    z = F.linear(_TimesInput.apply(x), weight, bias)
    return _DivideByOutput.apply(z, z.detach(), epsilon)


# ---------------------------------------------------------------------------- nn.MultiheadAttention
_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


def _blocked(mask: torch.Tensor | None, name: str) -> torch.Tensor | None:
    """True where a boolean mask, or a float mask of 0 and -inf, forbids attending."""
    if mask is None or mask.dtype == torch.bool:
        return mask
    if not (torch.isfinite(mask).logical_not() == (mask == float("-inf"))).all() or (mask[mask.isfinite()] != 0).any():
        raise ValueError(f"lrp's attention rules take {name} as a boolean mask or a float mask of 0 and -inf; got "
                         "a float mask with other values, an additive bias on the scores that no rule covers.")
    return mask == float("-inf")


def mha_blocked(attn_mask, key_padding_mask, heads: int) -> torch.Tensor | None:
    """True where ``nn.MultiheadAttention``'s two masks forbid a query to attend, as one mask broadcastable to
    the scores ``(B, heads, L, S)``; None for no mask."""
    blocked = _blocked(attn_mask, "attn_mask")
    if blocked is not None and blocked.dim() == 3:
        blocked = blocked.reshape(-1, heads, *blocked.shape[-2:])
    padding = _blocked(key_padding_mask, "key_padding_mask")
    if padding is not None:
        padding = padding[:, None, None, :]
        blocked = padding if blocked is None else blocked | padding
    return blocked


def _attend(q, k, v, blocked, rules: AttentionRules) -> torch.Tensor:
    """``softmax(q k^T + mask) v`` with the rules: the matmul rule on both products and the softmax rule
    (AttnLRP), or the weights held constant (CP-LRP). ``q`` comes scaled."""
    constant = rules.kind == "cp_lrp"
    scores = matmul_rule(q, k.transpose(-2, -1), 0.5, rules.epsilon)
    if blocked is not None:
        scores = scores.masked_fill(blocked, float("-inf"))
    weights = torch.softmax(scores, -1).detach() if constant else _SoftmaxRule.apply(scores, -1, blocked is not None)
    return matmul_rule(weights, v, 0.0 if constant else 0.5, rules.epsilon)


def _projection_weights(module: nn.MultiheadAttention):
    if module._qkv_same_embed_dim:
        weights = module.in_proj_weight.chunk(3)
    else:
        weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
    biases = (None,) * 3 if module.in_proj_bias is None else module.in_proj_bias.chunk(3)
    return weights, biases


def attention_forward(module: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      key_padding_mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                      rules: AttentionRules = AttentionRules()) -> torch.Tensor:
    """The output of ``module(query, key, value, ...)`` (without the weights), recomputed with the rules:
    epsilon on the projections, the matmul rule on :math:`QK^\\top/\\sqrt{d}` and :math:`AV`, the softmax
    rule; for ``"cp_lrp"``, :math:`Q` and :math:`K` constant and all of :math:`AV`'s relevance to :math:`V`."""
    if not module.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    (w_q, w_k, w_v), (b_q, b_k, b_v) = _projection_weights(module)
    batch, length, heads, width = query.shape[0], query.shape[1], module.num_heads, module.head_dim
    scale = width ** -0.5
    constant = rules.kind == "cp_lrp"
    if constant:
        query, key = query.detach(), key.detach()
    q = epsilon_linear(query, w_q * scale, None if b_q is None else b_q * scale, rules.epsilon)
    k = epsilon_linear(key, w_k, b_k, rules.epsilon)
    v = epsilon_linear(value, w_v, b_v, rules.epsilon)
    q, k, v = (t.reshape(batch, t.shape[1], heads, width).transpose(1, 2) for t in (q, k, v))  # (B, H, T, d)
    context = _attend(q, k, v, mha_blocked(attn_mask, key_padding_mask, heads), rules)  # (B, H, L, d)
    context = context.transpose(1, 2).reshape(batch, length, heads * width)
    out = epsilon_linear(context, module.out_proj.weight, module.out_proj.bias, rules.epsilon)
    return out if module.batch_first else out.transpose(0, 1)


def check_attention(module: nn.MultiheadAttention) -> None:
    """Refuse what :func:`attention_forward` does not recompute."""
    if type(module).forward is not nn.MultiheadAttention.forward:
        raise ValueError(f"lrp's attention rules recompute nn.MultiheadAttention's own forward; "
                         f"{type(module).__name__} overrides forward, so its output could differ.")
    if module.bias_k is not None or module.add_zero_attn:
        raise ValueError("lrp's attention rules do not cover nn.MultiheadAttention with add_bias_kv=True or "
                         "add_zero_attn=True; got a module with "
                         f"add_bias_kv={module.bias_k is not None}, add_zero_attn={module.add_zero_attn}.")


class _ReplacedForward:
    """While explaining, ``module.forward`` is ``forward(self, ...)`` (an instance attribute that shadows the
    class's method); ``remove()`` puts the module's own back. Used by the explicit rules here and by the
    gradient x input form of :mod:`._implicit`."""

    def __init__(self, module: nn.Module, forward):
        self.module, self.forward = module, forward
        self.shadowed = module.__dict__.get("forward")
        self.own_forward = module.forward
        module.forward = self

    def __call__(self, *args, **kwargs):
        return self.forward(self, *args, **kwargs)

    def remove(self) -> None:
        if self.module.__dict__.get("forward") is self:
            del self.module.forward
        if self.shadowed is not None:
            self.module.forward = self.shadowed


def _attention_replacement(compute):
    """A forward for :class:`_ReplacedForward` on an ``nn.MultiheadAttention``: the output from
    ``compute(module, query, key, value, key_padding_mask, attn_mask)``, so the attention runs once; when the
    caller asks for the weights, the module's own forward runs as well, for them."""
    def forward(replaced: _ReplacedForward, *args, **kwargs):
        bound = _SIGNATURE.bind(replaced.module, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        out = compute(replaced.module, a["query"], a["key"], a["value"], a["key_padding_mask"], a["attn_mask"])
        return out, (replaced.own_forward(*args, **kwargs)[1] if a["need_weights"] else None)
    return forward


def _rules_attention(module, query, key, value, key_padding_mask, attn_mask, *, rules):
    return attention_forward(module, query, key, value, key_padding_mask, attn_mask, rules)


def sdpa_arguments(args, kwargs) -> dict:
    """The arguments of a ``F.scaled_dot_product_attention`` call, checked for what the rules cover, with
    ``blocked`` (True where a query may not attend; None for none) and ``scale`` resolved."""
    a = dict(zip(("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"), args))
    a = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False, **a, **kwargs}
    if a["dropout_p"] or a["enable_gqa"]:
        raise ValueError("lrp's attention rules cover scaled_dot_product_attention without dropout and without "
                         f"grouped-query attention; got dropout_p={a['dropout_p']}, enable_gqa={a['enable_gqa']} "
                         "(call model.eval(), and repeat the key and value heads).")
    mask = a["attn_mask"]  # here True means *may attend*, the opposite of nn.MultiheadAttention's masks
    blocked = ~mask if mask is not None and mask.dtype == torch.bool else _blocked(mask, "attn_mask")
    if a["is_causal"]:
        length, source = a["query"].shape[-2], a["key"].shape[-2]
        causal = ~torch.ones(length, source, dtype=torch.bool, device=a["query"].device).tril()
        blocked = causal if blocked is None else blocked | causal
    a["blocked"] = blocked
    a["scale"] = a["query"].shape[-1] ** -0.5 if a["scale"] is None else a["scale"]
    return a


def sdpa_rule(args, kwargs, rules: AttentionRules) -> torch.Tensor:
    """``F.scaled_dot_product_attention(*args, **kwargs)`` recomputed with the rules of
    :func:`attention_forward`, for attention written with torch's fused function (timm-style blocks).
    The scaling of the query by ``scale`` passes relevance on unchanged."""
    a = sdpa_arguments(args, kwargs)
    query, key = a["query"], a["key"]
    if rules.kind == "cp_lrp":
        q, key = query.detach() * a["scale"], key.detach()
    else:  # a scaling passes each entry's relevance on unchanged (the epsilon rule without a stabiliser)
        q = _Pass.apply(query, (query * a["scale"]).detach())
    return _attend(q, key, a["value"], a["blocked"], rules)


def _layer_norm_hook(rules: AttentionRules, module, args, output):
    return layer_norm_rule(args[0], module, rules.epsilon)


def attach_attention(model: nn.Module, rules: AttentionRules, hooks: HookList) -> None:
    """Give every ``nn.MultiheadAttention`` (its forward, replaced) and ``nn.LayerNorm`` (a forward hook) of
    ``model`` its rule; the handles in ``hooks`` undo both."""
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            check_attention(module)
            hooks.append(_ReplacedForward(module, _attention_replacement(partial(_rules_attention, rules=rules))))
        elif isinstance(module, nn.LayerNorm):
            hooks.append(module.register_forward_hook(partial(_layer_norm_hook, rules)))


# ---------------------------------------------------------------------------- functions inside forward
_ELEMENTWISE = (F.gelu, F.silu, F.relu, torch.relu, torch.tanh, torch.sigmoid, torch.Tensor.tanh, torch.Tensor.sigmoid,
                F.elu, F.selu, F.celu, F.leaky_relu, F.mish, F.softplus, F.hardswish, F.hardtanh, F.relu6)
# linear (or affine) in one input x when the other operand is a constant
_ADDITIONS = (torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.sub, torch.Tensor.sub,
              torch.Tensor.__sub__, torch.Tensor.__rsub__)
_PRODUCTS = (torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__)
_DIVISIONS = (torch.div, torch.Tensor.div, torch.Tensor.__truediv__)
_IN_PLACE = {torch.Tensor.add_: torch.add, torch.Tensor.__iadd__: torch.add, torch.Tensor.sub_: torch.sub,
             torch.Tensor.__isub__: torch.sub, torch.Tensor.mul_: torch.mul, torch.Tensor.__imul__: torch.mul,
             torch.Tensor.div_: torch.div, torch.Tensor.__itruediv__: torch.div}
_LAYER_FUNCTIONS = (F.linear, F.conv1d, F.conv2d, F.conv3d)
_REDUCTIONS = (torch.sum, torch.Tensor.sum, torch.mean, torch.Tensor.mean, torch.neg, torch.Tensor.__neg__)
_NO_RULE = {torch.softmax: "softmax", torch.Tensor.softmax: "softmax", F.softmax: "softmax",
            torch.matmul: "matmul", torch.Tensor.__matmul__: "matmul", torch.bmm: "bmm", torch.einsum: "einsum"}
_NO_RULE.update({f: "a product of two tensors that both depend on the input" for f in _PRODUCTS})
_NONLINEAR = (torch.exp, torch.Tensor.exp, torch.log, torch.Tensor.log, torch.sqrt, torch.Tensor.sqrt, torch.rsqrt,
              torch.Tensor.rsqrt, torch.pow, torch.Tensor.pow, torch.Tensor.__pow__, torch.erf, torch.Tensor.erf,
              torch.var, torch.Tensor.var, torch.std, torch.Tensor.std, F.normalize, F.rms_norm)
_NO_RULE.update({f: f.__name__ for f in _NONLINEAR})


def _tracked(t) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad


def _constant(t) -> bool:
    if isinstance(t, torch.Tensor):
        return not t.requires_grad
    return isinstance(t, (int, float)) and not isinstance(t, bool)


def _linear_in_one(func, args, kwargs) -> int | None:
    """The position of the one input ``x`` in which the call is linear (plus a constant), or None."""
    if func in _REDUCTIONS and args and _tracked(args[0]) and not any(map(_tracked, args[1:])):
        return 0
    if len(args) != 2 or kwargs and func not in _REDUCTIONS:
        return None
    tracked = [_tracked(a) for a in args]
    if sum(tracked) != 1 or not _constant(args[tracked.index(False)]):
        return None
    if func in _ADDITIONS + _PRODUCTS or func in _DIVISIONS and tracked[0]:
        return tracked.index(True)
    return None


class _TransformerFunctions(TorchFunctionMode):
    def __init__(self, rules: AttentionRules):
        super().__init__()
        self.rules, self.inside_attention, self.inside_layer = rules, 0, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_grad_enabled() or self.inside_attention:  # inside an autograd function or a hooked module
            return func(*args, **kwargs)
        if func in _ELEMENTWISE and args and _tracked(args[0]):
            return _Pass.apply(args[0], func(*args, **kwargs).detach())  # identity rule
        if func is F.layer_norm and args and _tracked(args[0]):
            bound = inspect.signature(F.layer_norm).bind(*args, **kwargs).arguments
            return _LayerNormRule.apply(bound["input"], tuple(bound["normalized_shape"]), bound.get("weight"),
                                        bound.get("bias"), bound.get("eps", 1e-5), self.rules.epsilon)
        if func in _LAYER_FUNCTIONS and not self.inside_layer and args and _tracked(args[0]):
            if any(map(_tracked, (*args[1:], *kwargs.values()))):
                raise ValueError(f"lrp has no rule for {func.__name__} with a weight that depends on the input.")
            z = func(_TimesInput.apply(args[0]), *args[1:], **kwargs)  # the epsilon rule of a Linear/Conv module
            return _DivideByOutput.apply(z, z.detach(), self.rules.epsilon)
        if func in _IN_PLACE and len(args) == 2 and not kwargs and _tracked(args[0]) and _constant(args[1]):
            # x += c: the rule of x + c, written back into x (its old value is kept by the clone)
            return args[0].copy_(self.__torch_function__(_IN_PLACE[func], types, (args[0].clone(), args[1])))
        position = _linear_in_one(func, args, kwargs)
        if position is not None:
            # the epsilon rule of a linear map z = J x + c: R_x = x * J^T (R / stab(z)), J^T from autograd
            args = list(args)
            args[position] = _TimesInput.apply(args[position])
            z = func(*args, **kwargs)
            if z.shape == args[position].shape or func in _REDUCTIONS:
                return _DivideByOutput.apply(z, z.detach(), self.rules.epsilon)
            raise ValueError(f"lrp has no rule for {func.__name__} when a constant broadcasts the input from "
                             f"{tuple(args[position].shape)} to {tuple(z.shape)}.")
        if func is F.scaled_dot_product_attention and any(map(_tracked, (*args, *kwargs.values()))):
            return sdpa_rule(args, kwargs, self.rules)
        if func in _NO_RULE and sum(map(_tracked, args)) >= (2 if func in _PRODUCTS else 1):
            raise ValueError(f"lrp has no rule for {_NO_RULE[func]} called as a function in the model's forward: "
                             f"{NO_RULE_HINT}")
        return func(*args, **kwargs)


NO_RULE_HINT = ("AttnLRP covers attention computed by nn.MultiheadAttention or by F.scaled_dot_product_attention "
                "only.")


@contextmanager
def transformer_functions(model: nn.Module, rules: AttentionRules, hooks: HookList) -> Iterator[None]:
    """Inside the block, the functions of a transformer's forward get their rules (module docstring); the
    functional calls inside an ``nn.MultiheadAttention`` are left alone, since its hook recomputes it."""
    mode = _TransformerFunctions(rules)

    def enter(module, args):
        mode.inside_attention += 1

    def leave(module, args, output):
        mode.inside_attention -= 1

    def enter_layer(module, args):
        mode.inside_layer += 1

    def leave_layer(module, args, output):
        mode.inside_layer -= 1

    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            hooks.append(module.register_forward_pre_hook(enter))
            hooks.append(module.register_forward_hook(leave, prepend=True))
        elif isinstance(module, LAYERS):  # their own hooks carry the rule; F.linear called elsewhere gets it here
            hooks.append(module.register_forward_pre_hook(enter_layer))
            hooks.append(module.register_forward_hook(leave_layer, prepend=True))
    with mode:
        yield
