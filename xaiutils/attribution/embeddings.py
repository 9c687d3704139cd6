r"""Integrated gradients on token embeddings (chapter 16).

Token ids cannot move continuously from a baseline to the input, so the straight path runs in
embedding space. With :math:`E \in \mathbb{R}^{T \times D}` the output of the model's embedding
layer for the input ids and :math:`E'` the baseline's,

.. math:: \mathrm{IG}_{t,d} = (E_{t,d} - E'_{t,d}) \sum_{k=1}^{n} w_k \,
          \frac{\partial f_c\big(E' + \alpha_k (E - E')\big)}{\partial E_{t,d}},
          \qquad \phi_t = \sum_d \mathrm{IG}_{t,d},

with the nodes :math:`\alpha_k` and weights :math:`w_k` of :func:`~.paths.integration_rule`
(chapter 4's quadrature). It is complete: :math:`\sum_t \phi_t = f_c(E) - f_c(E')`.

**What is interpolated.** Only the output of ``embedding``: a forward hook replaces it by the
path point :math:`E' + \alpha_k (E - E')`, while the model runs on the *input's* ids. Everything
else the model reads from the ids (positions added after the layer, a padding mask, the ``<cls>``
position it pools) is the input's at every point of the path. This is Captum's
``LayerIntegratedGradients(model, embedding)`` (``attribute_to_layer_input=False``). So
:math:`f_c(E')` here is the model on the input's ids with the embedding output :math:`E'`, the
path's start; it differs from ``model(baseline_ids)`` when the model reads more than the
embedding from the ids (Captum's convergence delta uses the latter).

**Token baselines.** ``"pad"`` and ``"mask"`` replace every token by ``<pad>`` / ``<mask>``, and
``"zero"`` every token's embedding by the zero vector, *except* the tokens in ``keep`` (by
default the model's ``special_ids``, e.g. ``<cls>`` and ``<pad>``): they keep their own
embedding, so they do not move along the path and their attribution is exactly 0, as the
reference ids ``[CLS] [PAD] ... [PAD]`` of Captum's BERT tutorial. A tensor of ids is used as it
is (:func:`baseline_ids` builds one).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from ..core.batching import map_batched
from ..core.checks import check_choice, check_int, describe
from ..core.layers import resolve_layer
from ..core.model_state import explaining
from ..core.targets import Target, check_target, repeat, rows_of, select
from .paths import _along, integration_rule

TOKEN_BASELINES = ("pad", "mask", "zero")


# ---------------------------------------------------------------------------- the hook
class _Swap:
    """A forward hook on the embedding layer: records its output, and replaces it by ``value`` if set."""

    def __init__(self):
        self.value: torch.Tensor | None = None
        self.outputs: list[torch.Tensor] = []

    def __call__(self, module, args, output):
        if not isinstance(output, torch.Tensor) or not output.is_floating_point():
            raise TypeError(f"embedding must output a floating-point tensor (B, T, D, ...); got {describe(output)}.")
        self.outputs.append(output)
        if self.value is None:
            return None
        if self.value.shape != output.shape:
            raise ValueError(f"embedding gave an output of shape {tuple(output.shape)} where the path point has "
                             f"shape {tuple(self.value.shape)}; its output's shape must depend on the ids only.")
        return self.value.clone()  # a clone: an in-place change downstream cannot touch the leaf


@contextmanager
def swapped_output(embedding: nn.Module) -> Iterator[_Swap]:
    """Within the block, ``embedding``'s output is recorded in ``swap.outputs`` and, while
    ``swap.value`` is set, replaced by it. The hook is removed on exit, also on error."""
    swap = _Swap()
    handle = embedding.register_forward_hook(swap)
    try:
        yield swap
    finally:
        handle.remove()


def _forward(model: nn.Module, swap: _Swap, ids: torch.Tensor, value: torch.Tensor | None) -> torch.Tensor:
    """``model(ids)`` with the embedding's output replaced by ``value`` (``None``: kept, and recorded)."""
    swap.value, swap.outputs = value, []
    try:
        output = model(ids)
    finally:
        swap.value = None
    if len(swap.outputs) != 1:
        raise ValueError(f"embedding ran {len(swap.outputs)} times in one forward pass of the model; pass the "
                         "layer that embeds input_ids, which runs exactly once.")
    return output


def _embed(model: nn.Module, swap: _Swap, ids: torch.Tensor) -> torch.Tensor:
    """The embedding layer's output for ``ids``: ``(B, T, ...)``."""
    with torch.no_grad():
        _forward(model, swap, ids, None)
    embedded = swap.outputs[0].detach()
    if embedded.dim() < 3 or embedded.shape[:2] != ids.shape:
        raise ValueError(f"embedding must output one vector per token, shape (B, T, D, ...) with (B, T) = "
                         f"{tuple(ids.shape)}; got shape {tuple(embedded.shape)}.")
    return embedded


def _gradient(model: nn.Module, swap: _Swap, ids: torch.Tensor, points: torch.Tensor,
              target: Target) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d f_c / d E, f_c)`` at the embedding outputs ``points`` for the token ids ``ids``."""
    leaf = points.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = select(_forward(model, swap, ids, leaf), target)
        (grad,) = torch.autograd.grad(scores.sum(), leaf, allow_unused=True, materialize_grads=True)
    return grad, scores.detach()


# ---------------------------------------------------------------------------- arguments
def is_token_ids(x) -> bool:
    """True for an integer tensor: a batch of token ids rather than a continuous input."""
    return isinstance(x, torch.Tensor) and not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)


def check_token_ids(ids, name: str = "input_ids", vocab_size: int | None = None) -> torch.Tensor:
    """``ids`` if it is a non-empty ``(B, T)`` integer tensor with values in ``[0, vocab_size)``."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of integer token ids (B, T); got {describe(ids)}.")
    if not is_token_ids(ids):
        raise TypeError(f"{name} must hold integer token ids; got dtype {ids.dtype}. Use {name}.long().")
    if ids.dim() != 2:
        hint = f" For a single sequence use {name}.unsqueeze(0)." if ids.dim() == 1 else ""
        raise ValueError(f"{name} must be a batch of token ids (B, T); got shape {tuple(ids.shape)}.{hint}")
    if ids.numel() == 0:
        raise ValueError(f"{name} must hold at least one sequence of at least one token; got shape {tuple(ids.shape)}.")
    high = "" if vocab_size is None else f" and < {vocab_size}"
    bad = (ids < 0) | (ids >= vocab_size) if vocab_size is not None else ids < 0
    if bad.any():
        where = tuple(bad.nonzero()[0].tolist())
        raise ValueError(f"{name} must be token ids >= 0{high} (the embedding's rows); got {ids[where].item()} "
                         f"at position {where}.")
    return ids


def _embedding_layer(model: nn.Module, embedding) -> nn.Module:
    """``embedding`` resolved (a module or dotted name); ``None``: ``model.embedding``."""
    if embedding is None:
        embedding = getattr(model, "embedding", None)
        if not isinstance(embedding, nn.Module):
            found = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
            names = f"; its nn.Embedding modules: {', '.join(found)}." if found else "."
            raise ValueError("embedding must be given: the model has no module model.embedding. Pass embedding= "
                             "the layer that maps input_ids to vectors" + names)
    return resolve_layer(model, embedding)


def _vocab_size(embedding: nn.Module) -> int | None:
    """The number of rows of the first ``nn.Embedding`` in ``embedding`` (itself included), if any."""
    return next((m.num_embeddings for m in embedding.modules() if isinstance(m, nn.Embedding)), None)


def _token_id(value, name: str, model: nn.Module, vocab_size: int | None) -> int:
    if value is None:
        value = getattr(model, name, None)
        if value is None:
            raise ValueError(f"this baseline needs {name}: the model has no attribute {name}; pass {name}=.")
    value = check_int(value, name, minimum=0)
    if vocab_size is not None and value >= vocab_size:
        raise ValueError(f"{name} must be < {vocab_size} (the embedding's rows); got {value}.")
    return value


def _kept(ids: torch.Tensor, keep: Sequence[int]) -> torch.Tensor:
    """``(B, T)``: True where the token is one of ``keep``."""
    return torch.isin(ids, torch.as_tensor(list(keep), dtype=ids.dtype, device=ids.device))


def baseline_ids(input_ids: torch.Tensor, token_id: int, keep: Sequence[int] = ()) -> torch.Tensor:
    """``input_ids`` with every token that is not in ``keep`` replaced by ``token_id``.

    The reference ids of the ``"pad"`` and ``"mask"`` baselines, in the form Captum's
    ``LayerIntegratedGradients`` takes (``baselines=``): ``[CLS] w1 w2 [PAD]`` with
    ``keep=(cls, pad)`` becomes ``[CLS] [MASK] [MASK] [PAD]``.
    """
    check_token_ids(input_ids)
    check_int(token_id, "token_id", minimum=0)
    return torch.where(_kept(input_ids, _check_keep(keep)), input_ids, token_id)


def _check_keep(keep) -> tuple[int, ...]:
    if isinstance(keep, torch.Tensor):
        keep = keep.flatten().tolist()
    if isinstance(keep, (str, bytes)) or not hasattr(keep, "__iter__"):
        raise TypeError(f"keep must be a sequence of token ids; got {describe(keep)}.")
    return tuple(check_int(k, "each id in keep", minimum=0) for k in keep)


def _reference(model, ids, baseline, keep, pad_id, mask_id, vocab_size):
    """``(reference ids or None, zeroed positions or None)`` of ``baseline``."""
    for value, name in ((pad_id, "pad_id"), (mask_id, "mask_id")):
        if value is not None:
            _token_id(value, name, model, vocab_size)
    if isinstance(baseline, str):
        check_choice(baseline, "baseline", TOKEN_BASELINES)
        keep = _check_keep(getattr(model, "special_ids", ()) if keep is None else keep)
        if baseline == "zero":
            return None, ~_kept(ids, keep)
        token = _token_id(pad_id if baseline == "pad" else mask_id, f"{baseline}_id", model, vocab_size)
        return baseline_ids(ids, token, keep), None
    if not isinstance(baseline, torch.Tensor):
        raise TypeError(f"baseline must be one of {', '.join(map(repr, TOKEN_BASELINES))} or a tensor of token ids "
                        f"(T,) or (B, T); got {describe(baseline)}.")
    if baseline.dim() not in (1, 2) or baseline.shape[-1] != ids.shape[1] or baseline.dim() == 2 and \
            baseline.shape[0] not in (1, len(ids)):
        raise ValueError(f"baseline ids must have shape (T,) or (B, T) = {tuple(ids.shape)}; got {describe(baseline)}.")
    reference = baseline.to(ids.device).expand_as(ids) if not baseline.is_floating_point() else baseline
    return check_token_ids(reference, "baseline", vocab_size), None


# ---------------------------------------------------------------------------- the method
def embedding_integrated_gradients(model: nn.Module, input_ids: torch.Tensor, target: Target, *,
                                   embedding: nn.Module | str | None = None, baseline="pad",
                                   keep: Sequence[int] | None = None, pad_id: int | None = None,
                                   mask_id: int | None = None, steps: int = 50, rule: str = "gausslegendre",
                                   reduce: bool = True, return_delta: bool = False, batch_size: int | None = None):
    r"""Integrated gradients along the straight line in embedding space, per token.

    .. math:: \phi_t = \sum_d (E_{t,d} - E'_{t,d}) \sum_{k=1}^{n} w_k \,
              \partial_{t,d} f_c\big(E' + \alpha_k (E - E')\big)

    Args:
        input_ids: ``(B, T)`` integer token ids.
        embedding: the layer whose output :math:`E` is interpolated (a module of ``model`` or its
            dotted name); default ``model.embedding``. It must run once per forward pass and
            output one vector per token, ``(B, T, ...)``. Only its output moves (see the module).
        baseline: ``"pad"``, ``"mask"`` (every token not in ``keep`` replaced by that token),
            ``"zero"`` (their embeddings replaced by zeros), or reference ids ``(T,)`` or ``(B, T)``
            used as given.
        keep: token ids that the named baselines leave in place (zero attribution); default the
            model's ``special_ids`` if it has them (:class:`~xaiutils.text.TextClassifier`:
            ``<cls>`` and ``<pad>``), else none.
        pad_id, mask_id: the ids of ``<pad>`` and ``<mask>``; default ``model.pad_id``, ``model.mask_id``.
        steps, rule: the quadrature, as :func:`~.paths.integrated_gradients` (:func:`~.paths.integration_rule`).
        reduce: sum over the embedding dims, giving ``(B, T)``; ``False`` returns the full ``(B, T, D)``.
        return_delta: also return the completeness error per example,
            :math:`\delta = \sum_{t,d} \mathrm{IG}_{t,d} - (f_c(E) - f_c(E'))`, shape ``(B,)``.
        batch_size: rows per model pass (of the ``steps * B`` rows); default ``B``.

    Returns:
        The attributions, ``(B, T)`` (or ``(B, T, D)``), or ``(attributions, delta)``.

    Reference: ``sundararajan2017axiomatic`` (section 6.3 runs it on word embeddings). Chapter 16.
    """
    alphas, weights = integration_rule(rule, steps)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {describe(model)}.")
    for flag, name in ((reduce, "reduce"), (return_delta, "return_delta")):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False; got {describe(flag)}.")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("xaiutils cannot explain inside torch.inference_mode(): attributions need autograd.")
    check_token_ids(input_ids, "input_ids")  # ids at all, before asking the model for its embedding
    layer = _embedding_layer(model, embedding)
    vocab_size = _vocab_size(layer)
    ids = check_token_ids(input_ids, "input_ids", vocab_size)
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.device != ids.device:
        raise ValueError(f"input_ids is on {ids.device} but the model is on {parameter.device}; "
                         f"use input_ids.to({str(parameter.device)!r}).")
    check_target(target, len(ids))
    reference, zeroed = _reference(model, ids, baseline, keep, pad_id, mask_id, vocab_size)
    with explaining(model), swapped_output(layer) as swap:
        embedded = map_batched(lambda r, s: _embed(model, swap, r), ids, batch_size, len(ids))
        if zeroed is None:
            start = map_batched(lambda r, s: _embed(model, swap, r), reference, batch_size, len(ids))
        else:
            start = embedded * ~zeroed.view(*zeroed.shape, *[1] * (embedded.dim() - 2))
        difference = embedded - start
        path = start + _along(alphas, embedded) * difference
        rows, targets = ids.repeat(steps, 1), repeat(target, steps)
        grads = map_batched(lambda r, s: _gradient(model, swap, rows[s], r, rows_of(targets, s))[0],
                            path.flatten(0, 1), batch_size, len(ids)).view(path.shape)
        attributions = difference * (_along(weights, embedded) * grads).sum(0)
        if return_delta:
            rows, targets = ids.repeat(2, 1), repeat(target, 2)
            scores = map_batched(lambda r, s: _gradient(model, swap, rows[s], r, rows_of(targets, s))[1],
                                 torch.cat([embedded, start]), batch_size, len(ids))
            delta = attributions.flatten(1).sum(1) - (scores[: len(ids)] - scores[len(ids):])
        if reduce:
            attributions = attributions.flatten(2).sum(2)
        return (attributions, delta) if return_delta else attributions
