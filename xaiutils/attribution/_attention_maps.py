"""Recording the attention probabilities of every ``nn.MultiheadAttention`` call (chapter 15).

torchvision's ``VisionTransformer`` and ``nn.TransformerEncoderLayer`` call their attention with
``need_weights=False``, and in eval mode ``nn.TransformerEncoderLayer`` may run a fused kernel
that never calls its attention module at all; even with ``need_weights=True`` the weights
returned are a copy that the output does not depend on, so no gradient reaches them.
:func:`recording` therefore

* keeps PyTorch's fused fast paths out for the duration, so that every attention module is called:
  inside a (pass-through) ``TorchFunctionMode`` torch takes the unfused path, as it does with
  ``torch.backends.mha.set_fastpath_enabled(False)``, but only in this thread and without touching
  that global switch; and
* hooks every ``nn.MultiheadAttention``: from the module's own input and projection weights it
  recomputes :math:`A = \\operatorname{softmax}(Q K^\\top / \\sqrt{d} + \\text{mask})` per head,
  checks that :math:`A V W_o + b_o` reproduces the module's output (to rounding), and returns
  the module's output *value* with the gradient of the recomputation attached. So
  :math:`\\partial y / \\partial A` is available and the model's output is what the model
  computes without the fused kernels, to the last bit (and equal to the fused result to rounding).

Each call is recorded as an :class:`AttentionCall`: ``probabilities`` ``(B, heads, T, S)`` and the
keys that padding hid, ``(B, S)`` or ``None``.
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

_FORWARD = inspect.signature(nn.MultiheadAttention.forward)


@dataclass
class AttentionCall:
    """One call of an attention module: its probabilities ``(B, heads, T, S)`` and padded keys ``(B, S)``."""

    module: nn.Module
    probabilities: torch.Tensor
    padding: torch.Tensor | None


def attention_modules(model: nn.Module) -> list[nn.MultiheadAttention]:
    """The model's ``nn.MultiheadAttention`` modules; refuse a model that has none."""
    modules = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    if not modules:
        raise ValueError(f"model must contain attention layers (torch.nn.MultiheadAttention, as in torchvision's "
                         f"VisionTransformer or nn.TransformerEncoderLayer); got a {type(model).__name__} with none.")
    for m in modules:
        if m.bias_k is not None or m.add_zero_attn:
            raise ValueError(f"attention with add_bias_kv=True or add_zero_attn=True is not supported (it adds keys "
                             f"that are no token); got {m}.")
    return modules


@contextmanager
def recording(model: nn.Module, hooks: list) -> Iterator[list[AttentionCall]]:
    """Inside the block, every attention call of a forward pass appends an :class:`AttentionCall` to the list yielded.

    ``hooks``: the hook list of :func:`~xaiutils.core.model_state.explaining`, which removes them.
    """
    calls: list[AttentionCall] = []
    for module in attention_modules(model):
        hooks.append(module.register_forward_hook(lambda m, args, kwargs, out: _recompute(m, args, kwargs, out, calls),
                                                  with_kwargs=True))
    with _Unfused():
        yield calls


class _Unfused(TorchFunctionMode):
    """Passes every call through; while it is active, ``nn.TransformerEncoderLayer`` and
    ``nn.MultiheadAttention`` skip their fused kernels (they take those only when no argument has a
    ``__torch_function__``, and an active mode counts as one)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _recompute(module: nn.MultiheadAttention, args, kwargs, output, calls: list[AttentionCall]):
    bound = _FORWARD.bind(module, *args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    query, key, value = a["query"], a["key"], a["value"]
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
    elif module.batch_first:
        query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
    # from here on as in the paper's notation, but sequence first: (T, B, E)
    length, batch, embed = query.shape
    heads, head_dim = module.num_heads, module.head_dim
    if module._qkv_same_embed_dim:
        w_q, w_k, w_v = module.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
    b_q, b_k, b_v = (None, None, None) if module.in_proj_bias is None else module.in_proj_bias.chunk(3)

    def split(t, w, b):  # (L, B, E) -> (B, heads, L, head_dim)
        return F.linear(t, w, b).reshape(t.shape[0], batch, heads, head_dim).permute(1, 2, 0, 3)

    q, k, v = split(query, w_q, b_q), split(key, w_k, b_k), split(value, w_v, b_v)
    scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
    padding = _key_padding(a["key_padding_mask"], unbatched)
    scores = scores + _additive_mask(a["attn_mask"], a["is_causal"], padding, batch, heads, length, k.shape[2],
                                     scores.dtype, scores.device)
    probabilities = scores.softmax(-1)
    if torch.is_grad_enabled() and not probabilities.requires_grad:
        # the first layer's attention depends on nothing that requires a gradient: make it the leaf
        probabilities = probabilities.detach().requires_grad_()
    mixed = (probabilities @ v).permute(2, 0, 1, 3).reshape(length, batch, embed)
    recomputed = F.linear(mixed, module.out_proj.weight, module.out_proj.bias)
    if unbatched:
        recomputed = recomputed.squeeze(1)
    elif module.batch_first:
        recomputed = recomputed.transpose(0, 1)

    given = output[0]
    tolerance = math.sqrt(torch.finfo(given.dtype).eps)
    if not torch.allclose(recomputed.detach(), given.detach(), rtol=tolerance, atol=tolerance, equal_nan=True):
        error = (recomputed.detach() - given.detach()).abs().nan_to_num().max().item()
        raise RuntimeError(f"the attention probabilities of {module} could not be recomputed from its input "
                           f"(the output differs by {error:.3g}); this attention module is not supported.")
    calls.append(AttentionCall(module, probabilities, None if padding is None else padding.bool()))
    # the module's value, the recomputation's gradient: the model's output does not move
    return (given.detach() + (recomputed - recomputed.detach()), *output[1:])


def _key_padding(mask: torch.Tensor | None, unbatched: bool) -> torch.Tensor | None:
    """``(B, S)``: True where a key is hidden (a boolean mask) or pushed by an additive mask."""
    if mask is None:
        return None
    return mask.unsqueeze(0) if unbatched else mask


def _additive_mask(attn_mask, is_causal, padding, batch, heads, length, keys, dtype, device) -> torch.Tensor:
    """``attn_mask`` and ``key_padding_mask`` as one additive mask broadcastable to ``(B, heads, T, S)``."""
    total = torch.zeros((), dtype=dtype, device=device)
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(length, keys, dtype=torch.bool, device=device).triu(1)
    if attn_mask is not None:
        mask = _as_additive(attn_mask, dtype)
        total = total + (mask.reshape(batch, heads, length, keys) if mask.dim() == 3 else mask)
    if padding is not None:
        total = total + _as_additive(padding, dtype)[:, None, None, :]
    return total


def _as_additive(mask: torch.Tensor, dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)
