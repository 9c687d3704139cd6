"""Explanations read from a transformer's attention: raw attention, rollout, gradient-weighted relevance.

Chapters 15 (transformers) and 16 (text). Every self-attention call of a
forward pass gives, per head :math:`h`, a row-stochastic matrix
:math:`A_h = \\operatorname{softmax}(Q_h K_h^\\top / \\sqrt{d})` over the :math:`T` tokens (recorded
by :mod:`._attention_maps`, which works on any ``nn.MultiheadAttention``: torchvision's
``VisionTransformer``, ``nn.TransformerEncoderLayer``, :class:`xaiutils.text.TextClassifier`).
The three methods differ in how they combine the layers into one :math:`T \\times T` matrix
:math:`R`, whose *query* row says how much each token contributes:

* :func:`raw_attention` -- one layer's heads, fused: :math:`R = \\operatorname{fuse}_h A_h`;
* :func:`attention_rollout` -- the residual connection as an identity, multiplied through the
  layers (Abnar & Zuidema): :math:`R = \\hat A_L \\cdots \\hat A_1`,
  :math:`\\hat A = \\operatorname{rows\\,normalised}(\\tfrac12 \\operatorname{fuse}_h A_h + \\tfrac12 I)`;
* :func:`attention_relevance` -- heads weighted by the gradient of the target score (Chefer, Gur
  & Wolf's generic rule for self-attention): :math:`R \\leftarrow R + \\bar A R` from
  :math:`R = I`, with :math:`\\bar A = \\operatorname{mean}_h (\\nabla_{A_h} y_c \\odot A_h)^+`.

The query row is the class token's (``query="cls"``, position 0), the mean of the rows of the
non-padding tokens (``"mean"``, for a model that pools by averaging), or a position (an int).
By default it is ``"mean"`` for a model whose ``config.pooling`` is ``"mean"``
(:class:`~xaiutils.text.TextClassifier`) and ``"cls"`` otherwise.

Returned maps, raw and non-negative (a probability-like weight, not a signed contribution):

* image input ``(B, C, H, W)``: the patch tokens, class token dropped, on their ``h x w`` grid
  (:func:`._tokens.token_grid`), upsampled to ``(B, 1, H, W)`` by ``upsample="nearest"`` (each
  patch one constant block: what the method knows), ``"bilinear"``, or ``None`` for ``(B, 1, h, w)``;
* token ids ``(B, T)`` (or embeddings ``(B, T, D)``): ``(B, T)``, one value per input position so
  that it lines up with the ids; the query token's own entry (the class token) is set to 0.

``target`` is ignored by raw attention and rollout (attention does not depend on the class; it is
accepted for the common signature and checked).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..core.batching import map_batched
from ..core.checks import check_choice, check_input, check_model_input, check_number, describe
from ..core.model_state import explaining
from ..core.targets import Target, check_target, rows_of, select
from ._attention_maps import AttentionCall, recording
from ._tokens import scores_to_grid
from .embeddings import check_token_ids

HEAD_FUSIONS = ("mean", "max", "min")
UPSAMPLING = ("nearest", "bilinear")


# ---------------------------------------------------------------------------- the matrix forms
def fuse_heads(probabilities: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """``(B, heads, T, T)`` -> ``(B, T, T)``: the mean, max or min over heads."""
    check_choice(head_fusion, "head_fusion", HEAD_FUSIONS)
    if head_fusion == "mean":
        return probabilities.mean(1)
    return probabilities.amax(1) if head_fusion == "max" else probabilities.amin(1)


def rollout(attentions: list[torch.Tensor], discard_ratio: float = 0.0) -> torch.Tensor:
    """Attention rollout of fused ``(B, T, T)`` matrices, first layer first: :math:`\\hat A_L \\cdots \\hat A_1`.

    Each layer: the smallest ``discard_ratio`` of the matrix's entries set to 0 (as in vit-explain;
    0 in the paper), then :math:`\\hat A = (\\tfrac12 A + \\tfrac12 I)` with rows renormalised to sum to 1.
    """
    result = None
    for a in attentions:
        a = _discard(a, discard_ratio)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    return result


def _discard(a: torch.Tensor, ratio: float) -> torch.Tensor:
    count = int(a[0].numel() * ratio)
    if count == 0:
        return a
    flat = a.reshape(len(a), -1)
    lowest = flat.topk(count, dim=-1, largest=False).indices
    return flat.scatter(-1, lowest, 0.0).reshape(a.shape)


def relevance(attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
    """Chefer, Gur & Wolf's self-attention rule on ``(B, heads, T, T)`` probabilities and their gradients.

    :math:`R = I`; for each layer, first to last, :math:`R \\leftarrow R + \\bar A R` with
    :math:`\\bar A = \\operatorname{mean}_h \\big((\\partial y_c/\\partial A_h) \\odot A_h\\big)^+`.
    """
    batch, _, tokens, _ = attentions[0].shape
    r = torch.eye(tokens, dtype=attentions[0].dtype, device=attentions[0].device).expand(batch, tokens, tokens)
    for a, g in zip(attentions, gradients):
        r = r + (g * a).clamp(min=0).mean(1) @ r
    return r


# ---------------------------------------------------------------------------- the three methods
def raw_attention(model: nn.Module, x: torch.Tensor, target: Target | None = None, *, layer: int = -1,
                  head_fusion: str = "mean", query: str | int | None = None, upsample: str | None = "nearest",
                  batch_size: int | None = None) -> torch.Tensor:
    """The attention that the query token (the class token) pays to every token in one layer, heads fused.

    .. math:: m = \\big[\\operatorname{fuse}_h A^{(\\ell)}_h\\big]_{q,\\,\\cdot}

    Args:
        model: a model with ``nn.MultiheadAttention`` self-attention.
        x: images ``(B, C, H, W)`` or token ids ``(B, T)``.
        target: ignored (checked if given).
        layer: which attention call of the forward pass, in the order they run (``-1``: the last).
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        query: ``"cls"``, ``"mean"`` or a token position (default: see the module).
        upsample: ``"nearest"``, ``"bilinear"`` or ``None`` (images only).
        batch_size: at most this many examples per forward pass (default: the whole batch).

    Returns:
        ``(B, 1, H, W)`` for images, ``(B, T)`` for tokens (see the module).

    Reference: ``jain2019attention`` discusses what it can and cannot show. Chapter 15.
    """
    check_choice(head_fusion, "head_fusion", HEAD_FUSIONS)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, the index of an attention layer in the order they run "
                        f"(-1: the last); got {describe(layer)}.")

    def combine(calls, output, chunk_target):
        if not -len(calls) <= layer < len(calls):
            raise ValueError(f"layer must be an integer in [{-len(calls)}, {len(calls) - 1}] (the model ran "
                             f"{len(calls)} attention layers); got {layer}.")
        return fuse_heads(calls[layer].probabilities, head_fusion)

    return _explain(model, x, target, combine, query=query, upsample=upsample, batch_size=batch_size)


def attention_rollout(model: nn.Module, x: torch.Tensor, target: Target | None = None, *,
                      head_fusion: str = "mean", discard_ratio: float = 0.0, query: str | int | None = None,
                      upsample: str | None = "nearest", batch_size: int | None = None) -> torch.Tensor:
    """Attention rollout: the attention of every layer, with the residual as an identity, multiplied through.

    .. math:: \\hat A^{(\\ell)} = \\operatorname{norm}\\big(\\tfrac12 \\operatorname{fuse}_h A^{(\\ell)}_h
              + \\tfrac12 I\\big), \\qquad m = \\big[\\hat A^{(L)} \\cdots \\hat A^{(1)}\\big]_{q,\\,\\cdot}

    where norm makes every row sum to 1. ``discard_ratio``: the smallest fraction of each fused
    matrix's entries is set to 0 first (a variant from jacobgil's vit-explain; the paper uses 0).
    Other arguments and the return value as in :func:`raw_attention`.

    Reference: ``abnar2020quantifying``. Chapter 15.
    """
    check_choice(head_fusion, "head_fusion", HEAD_FUSIONS)
    discard_ratio = check_number(discard_ratio, "discard_ratio", minimum=0, maximum=1, exclusive_maximum=True)

    def combine(calls, output, chunk_target):
        return rollout([fuse_heads(c.probabilities, head_fusion) for c in calls], discard_ratio)

    return _explain(model, x, target, combine, query=query, upsample=upsample, batch_size=batch_size)


def attention_relevance(model: nn.Module, x: torch.Tensor, target: Target, *, query: str | int | None = None,
                        upsample: str | None = "nearest", batch_size: int | None = None) -> torch.Tensor:
    """Gradient-weighted attention relevance (Chefer, Gur & Wolf, ICCV 2021), the class-specific relative of rollout.

    From :math:`R = I`, for every self-attention layer in the order they run,

    .. math:: \\bar A = \\operatorname{mean}_h \\big(\\nabla_{A_h} y_c \\odot A_h\\big)^+, \\qquad
              R \\leftarrow R + \\bar A R, \\qquad m = R_{q,\\,\\cdot}

    (their eqs. 5-6 for self-attention; :math:`y_c` the target score). This is the "generic"
    rule of their ICCV paper, with the attention probabilities weighted by their gradients. It is
    not their CVPR 2021 method, which weighs LRP relevances of the attention instead of :math:`A`
    and needs LRP rules for every layer. Arguments as in :func:`raw_attention`, with ``target``:
    an int, a ``(B,)`` tensor of class indices or a callable ``output -> (B,)``.

    Reference: ``chefer2021generic`` (``chefer2021transformer`` for the LRP variant). Chapter 15.
    """
    if target is None:
        raise TypeError("target must be an int, a (B,) tensor of class indices or a callable: attention_relevance "
                        "explains one score; got None.")

    def combine(calls, output, chunk_target):
        gradients = torch.autograd.grad(select(output, chunk_target).sum(), [c.probabilities for c in calls],
                                        allow_unused=True, materialize_grads=True)
        return relevance([c.probabilities.detach() for c in calls], gradients)

    return _explain(model, x, target, combine, query=query, upsample=upsample, batch_size=batch_size,
                    gradients=True)


# ---------------------------------------------------------------------------- the shared core
def _check_x(model: nn.Module, x) -> None:
    if isinstance(x, torch.Tensor) and not x.is_floating_point():
        check_token_ids(x, "x")
        parameter = next(model.parameters(), None) if isinstance(model, nn.Module) else None
        if parameter is not None and parameter.device != x.device:
            raise ValueError(f"x is on {x.device} but the model is on {parameter.device}; "
                             f"use x.to({str(parameter.device)!r}).")
    else:
        check_input(x, min_dim=2)
        check_model_input(model, x)


def _explain(model, x, target, combine, *, query, upsample, batch_size, gradients: bool = False) -> torch.Tensor:
    """Run the model chunk by chunk with the attention recorded; ``combine`` makes ``R``; read the query row."""
    _check_x(model, x)
    if target is not None:
        check_target(target, len(x))
    query = _default_query(model) if query is None else query
    if not (isinstance(query, int) and not isinstance(query, bool)):
        check_choice(query, "query", ("cls", "mean"))
    if upsample is not None:
        check_choice(upsample, "upsample", UPSAMPLING)

    with explaining(model) as hooks, recording(model, hooks) as calls:
        def one(rows: torch.Tensor, s: slice) -> torch.Tensor:
            calls.clear()
            with torch.set_grad_enabled(gradients):
                output = model(rows)
            if not calls:
                raise ValueError("no attention layer ran in the forward pass; the model's nn.MultiheadAttention "
                                 "modules are not used.")
            _check_self_attention(calls)
            if target is not None and not gradients:  # unused by the map, but a wrong target is still an error
                select(output.detach(), rows_of(target, s))
            r = combine(calls, output, rows_of(target, s)).detach()
            return _read_query(r, calls[0].padding, query)

        scores = map_batched(one, x, batch_size, len(x))
    return _as_map(scores, x, query, upsample)


def _default_query(model: nn.Module) -> str:
    return "mean" if getattr(getattr(model, "config", None), "pooling", None) == "mean" else "cls"


def _check_self_attention(calls: list[AttentionCall]) -> None:
    tokens = calls[0].probabilities.shape[-1]
    for i, c in enumerate(calls):
        if c.probabilities.shape[-2:] != (tokens, tokens):
            raise ValueError(f"attention layer {i} maps {c.probabilities.shape[-2]} queries to "
                             f"{c.probabilities.shape[-1]} keys; these methods need self-attention over the same "
                             f"{tokens} tokens in every layer.")


def _read_query(r: torch.Tensor, padding: torch.Tensor | None, query) -> torch.Tensor:
    """The query row of ``(B, T, T)`` ``r``: ``(B, T)``."""
    tokens = r.shape[-1]
    if query == "mean":
        keep = torch.ones(r.shape[:2], dtype=r.dtype, device=r.device) if padding is None else (~padding).to(r.dtype)
        return (r * keep[:, :, None]).sum(1) / keep.sum(1, keepdim=True)
    position = 0 if query == "cls" else query
    if not -tokens <= position < tokens:
        raise ValueError(f"query must be 'cls', 'mean' or a token position in [{-tokens}, {tokens - 1}]; "
                         f"got {query}.")
    return r[:, position]


def _as_map(scores: torch.Tensor, x: torch.Tensor, query, upsample) -> torch.Tensor:
    """Token scores ``(B, T)`` as the method's output: an image map, or one value per input position."""
    if x.is_floating_point() and x.dim() == 4:
        grid = scores_to_grid(scores, x.shape[-2:])
        return grid if upsample is None else F.interpolate(grid, size=x.shape[-2:], mode=upsample,
                                                           **({} if upsample == "nearest" else {"align_corners": False}))
    if scores.shape[1] != x.shape[1]:
        raise ValueError(f"the attention runs over {scores.shape[1]} tokens but x has {x.shape[1]} positions; "
                         f"a token map needs one token per position of x (B, T).")
    if query != "mean":
        scores = scores.clone()
        scores[:, 0 if query == "cls" else query] = 0
    return scores
