r"""Perturbation: explain by occluding parts of the input and watching the score drop.

Occlusion slides a window :math:`W_p` over the input, replaces its content by a baseline
:math:`b`, and gives every feature the average score drop of the windows that cover it:

.. math:: \phi_i(x) = \frac{1}{|\{p : i \in W_p\}|} \sum_{p\,:\,i \in W_p}
          \big(f_c(x) - f_c(x_{W_p \leftarrow b})\big).

No gradient is needed: the method treats the model as a black box.
"""
from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from ..core.baselines import resolve_baseline
from ..core.batching import map_batched
from ..core.model_state import explaining
from ..core.targets import Target, repeat, rows_of, select


def _as_tuple(value, dims: int, name: str) -> tuple[int, ...]:
    expected = f"{name} must be a positive int or a tuple of at most {dims} positive ints; got {value!r}."
    if isinstance(value, int) and not isinstance(value, bool):
        values = (value,) * dims
    elif isinstance(value, (tuple, list)):
        values = tuple(value)
    else:
        raise TypeError(expected)
    if not values or len(values) > dims or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                   for v in values):
        raise ValueError(expected)
    return values


def _windows(shape: tuple[int, ...], window, stride) -> torch.Tensor:
    """``(P, *shape)`` boolean masks of every window position; windows align to the trailing dims.

    Leading dims without a window size are covered whole (``window=(5, 5)`` on ``(C, H, W)``
    occludes all channels). Positions are ``0, s, 2s, ...`` until the window reaches the end;
    the last window is cut at the border, as in Captum.
    """
    window = _as_tuple(window, len(shape), "window")
    stride = _as_tuple(stride, len(window), "stride")
    if len(stride) != len(window):
        raise ValueError(f"stride {stride} needs one entry per window dim {window}, or be an int.")
    window = shape[: len(shape) - len(window)] + window
    stride = (1,) * (len(shape) - len(stride)) + stride
    if any(w > d for w, d in zip(window, shape)):
        raise ValueError(f"window {window} is larger than the input {shape}.")
    if any(s > w for s, w, d in zip(stride, window, shape) if w < d):
        raise ValueError(f"stride {stride} must not exceed the window {window}: features would be left uncovered.")
    starts = [range(0, s * math.ceil((d - w) / s) + 1, s) for d, w, s in zip(shape, window, stride)]
    masks = torch.zeros((math.prod(len(r) for r in starts), *shape), dtype=torch.bool)
    for p, corner in enumerate(itertools.product(*starts)):
        masks[(p, *(slice(c, c + w) for c, w in zip(corner, window)))] = True
    return masks


def occlusion(model: nn.Module, x: torch.Tensor, target: Target, *, window=(8, 8), stride=4,
              baseline=0.0, batch_size: int | None = None) -> torch.Tensor:
    r"""Occlusion: the average score drop when a window around each feature is replaced by ``baseline``.

    Args:
        window: the window size over the trailing dims of an example (``(h, w)`` for images,
            covering all channels), or a full ``(c, h, w)``.
        stride: the shift between windows, an int or one per window dim; at most the window.
        baseline: what the window is filled with: a number, a tensor broadcastable to ``x``, or a
            name of :data:`xaiutils.core.baselines.BASELINES` (``"zeros"``, ``"mean"``, ``"blur"``, ...).
        batch_size: occluded inputs per model pass (of ``positions * B``); default ``B``.

    Returns:
        Attributions of ``x``'s shape. Matches ``captum.attr.Occlusion`` with
        ``sliding_window_shapes`` = the full window, ``strides`` = the full stride.

    Reference: ``zeiler2014visualizing``. Chapter 3.
    """
    with explaining(model, x, target):
        masks = _windows(tuple(x.shape[1:]), window, stride).to(x.device)
        fill = resolve_baseline(x, baseline)
        batch, positions = len(x), len(masks)
        targets = repeat(target, positions)

        def occluded_scores(rows: torch.Tensor, chunk: slice) -> torch.Tensor:
            window, example = rows // batch, rows % batch  # row p * B + b: example b under window p
            inputs = torch.where(masks[window], fill[example], x[example])
            return select(model(inputs), rows_of(targets, chunk))

        with torch.no_grad():
            scores = select(model(x), target)
            occluded = map_batched(occluded_scores, torch.arange(positions * batch, device=x.device), batch_size, batch)
        drops = scores - occluded.view(positions, batch)
        weights = masks.to(x.dtype)
        return torch.einsum("pb,p...->b...", drops, weights) / weights.sum(0)
