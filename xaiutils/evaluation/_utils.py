"""Shared plumbing of the evaluation metrics: input checks, pixel maps, batched model scores.

Conventions used by every metric:

* A *map* is a batch ``(B, ...)``. For images ``(B, C, H, W)`` a map has ``x``'s shape or one
  channel ``(B, 1, H, W)`` (the CAM family). Where a metric needs one value per pixel, channels
  are reduced by **summing** the signed values (:func:`pixel_map`), so a map of ``C`` channels
  and a one-channel map are compared on the same pixels.
* A *feature* that a perturbation removes is a pixel (all its channels together) for images and
  one entry otherwise; its relevance is the channel sum of the map.
* Model work runs inside :func:`xaiutils.core.model_state.explaining`, so the caller's
  model is left exactly as it was.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from ..attribution.embeddings import is_token_ids
from ..core.batching import chunks
from ..core.checks import check_input
from ..core.targets import Target, as_index, repeat, rows_of, select


def check_map(attr, name: str = "attr") -> torch.Tensor:
    """``attr`` as a floating-point tensor with a batch dim, or a clear error."""
    if isinstance(attr, np.ndarray):
        attr = torch.from_numpy(attr)
    if not isinstance(attr, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (or numpy array), got {type(attr).__name__}.")
    if attr.dim() < 2:
        raise ValueError(f"{name} must be a batch (B, ...) with at least 2 dims, got shape {tuple(attr.shape)}; "
                         f"for one example use {name}.unsqueeze(0).")
    if not attr.is_floating_point():
        attr = attr.double()
    if not torch.isfinite(attr).all():
        raise ValueError(f"{name} contains NaN or inf values.")
    return attr.detach()


def check_pair(a, b, names: tuple[str, str] = ("a", "b")) -> tuple[torch.Tensor, torch.Tensor]:
    """Two maps of the same shape (or a clear error)."""
    a, b = check_map(a, names[0]), check_map(b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}.")
    return a, b.to(a.dtype)


def check_map_for_input(attr, x: torch.Tensor, name: str = "attr") -> torch.Tensor:
    """A map that fits the input ``x``: ``x``'s shape, or ``(B, 1, H, W)`` for an image batch; for token
    ids ``(B, T)``, one relevance per token."""
    if is_token_ids(x):
        attr = check_map(attr, name)
        if attr.shape != x.shape:
            raise ValueError(f"{name} of shape {tuple(attr.shape)} does not fit the token ids x of shape "
                             f"{tuple(x.shape)}: give one relevance per token (B, T); sum an embedding-space map "
                             "over its last dim.")
        return attr.to(x.device)
    check_input(x)
    attr = check_map(attr, name)
    one_channel = x.dim() == 4 and attr.shape == (x.shape[0], 1, *x.shape[2:])
    if attr.shape != x.shape and not one_channel:
        raise ValueError(f"{name} of shape {tuple(attr.shape)} does not fit x of shape {tuple(x.shape)}: it must "
                         "have x's shape or, for images, one channel (B, 1, H, W).")
    return attr.to(device=x.device, dtype=x.dtype)


def pixel_map(attr: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, H, W)`` by summing channels; other shapes are returned as they are."""
    return attr.sum(1) if attr.dim() == 4 else attr


def feature_relevance(attr: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Relevance per removable feature, ``(B, P)``: per pixel (channel sum) for images, else per entry."""
    return pixel_map(attr).flatten(1) if x.dim() == 4 else attr.flatten(1)


def expand_features(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A ``(N, P)`` per-feature tensor broadcast against rows of ``x``'s example shape ``(N, ...)``."""
    if x.dim() == 4:
        return values.view(values.shape[0], 1, *x.shape[2:])
    return values.view(values.shape[0], *x.shape[1:])


def progress_bar(iterable, total: int, progress: bool, desc: str):
    """``tqdm.auto`` around ``iterable`` when ``progress`` is true."""
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def score(output: torch.Tensor, target: Target, kind: str) -> torch.Tensor:
    """The scalar per row that a metric tracks.

    ``"logit"``: the raw output of the target; ``"probability"``: its softmax probability;
    ``"correct"``: 1.0 where the predicted class is the target class (index targets only).
    """
    if kind == "probability":
        output = output.softmax(1)
    elif kind == "correct":
        if callable(target) and not isinstance(target, torch.Tensor):
            raise ValueError("score 'correct' needs class-index targets, not a callable.")
        index = as_index(target, output.shape[0], output.shape[1], output.device)
        return (output.argmax(1) == index).to(output.dtype)
    elif kind != "logit":
        raise ValueError(f"unknown score {kind!r}; use 'logit', 'probability' or 'correct'.")
    return select(output, target)


@torch.no_grad()
def scores_of_rows(model: nn.Module, make_rows: Callable[[slice], torch.Tensor], total: int, target: Target,
                   times: int, batch: int, *, kind: str = "logit", batch_size: int | None = None,
                   progress: bool = False, desc: str = "evaluating") -> torch.Tensor:
    """Scores of ``total = times * batch`` rows built chunk by chunk by ``make_rows(slice)``.

    Rows are in block layout (rows ``[k*B:(k+1)*B]`` are block ``k``), so the target of a chunk is
    ``rows_of(repeat(target, times), chunk)``. Call inside :func:`explaining`. Returns ``(times, B)``.
    """
    targets = repeat(target, times)
    parts = list(chunks(total, batch_size, batch))
    out = [score(model(make_rows(s)), rows_of(targets, s), kind)
           for s in progress_bar(parts, len(parts), progress, desc)]
    return torch.cat(out).view(times, batch)


def attributions_of_rows(method: Callable[..., torch.Tensor], model: nn.Module, rows: torch.Tensor, target: Target,
                         times: int, *, batch_size: int | None = None, progress: bool = False,
                         desc: str = "explaining", **options) -> torch.Tensor:
    """``method`` applied to ``times`` blocks of ``B`` rows, ``batch_size`` rows per call: ``(times, B, ...)``."""
    batch = rows.shape[0] // times
    targets = repeat(target, times)
    parts = list(chunks(rows.shape[0], batch_size, batch))
    out = []
    for s in progress_bar(parts, len(parts), progress, desc):
        result = method(model, rows[s], rows_of(targets, s), **options)
        if not isinstance(result, torch.Tensor) or result.shape[0] != s.stop - s.start:
            raise TypeError(f"{getattr(method, '__name__', 'method')} must return one attribution tensor per row.")
        out.append(result.detach())
    maps = torch.cat(out)
    return maps.view(times, batch, *maps.shape[1:])


def to_numpy(values: torch.Tensor) -> np.ndarray:
    return values.detach().cpu().double().numpy()
