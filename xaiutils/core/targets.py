"""What to explain: turn ``target`` into one scalar per example.

``target`` is an int (the same class for every example), a ``(B,)`` tensor of class indices,
or a callable mapping the model output ``(B, K)`` to the ``(B,)`` scalars to explain
(for example a log-probability or a difference of logits).
"""
from __future__ import annotations

from typing import Callable, Union

import torch

Target = Union[int, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def check_target(target: Target, batch: int) -> None:
    """Refuse a target that does not name one output per example of a batch of ``batch``.

    An int (or a 0-dim integer tensor) names the same class for every example; a ``(B,)`` integer
    tensor (or list) one class each; a callable maps the output to one scalar per example (checked
    when it is called, by :func:`select`). Class ranges are checked against the model's output by
    :func:`as_index`.
    """
    if callable(target) and not isinstance(target, torch.Tensor):
        return
    if isinstance(target, bool) or target is None:
        raise TypeError(f"target must be an int, a ({batch},) tensor of class indices or a callable; got {target!r}.")
    try:
        index = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"target must be an int, a ({batch},) tensor of class indices or a callable; "
                        f"got {type(target).__name__}.") from None
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices; got dtype {index.dtype}.")
    if index.dim() > 1 or index.dim() == 1 and index.shape[0] != batch:
        raise ValueError(f"target must be an int or have one class per example, shape ({batch},); "
                         f"got shape {tuple(index.shape)}.")


def select(output: torch.Tensor, target: Target) -> torch.Tensor:
    """The ``(B,)`` scalars of ``output`` that ``target`` names."""
    if callable(target) and not isinstance(target, torch.Tensor):
        scores = target(output)
        if scores.shape != output.shape[:1]:
            raise ValueError(
                f"a callable target must return one scalar per example, shape {tuple(output.shape[:1])}, "
                f"got {tuple(scores.shape)}."
            )
        return scores
    if output.dim() != 2:
        raise ValueError(
            f"an index target needs a model output of shape (B, K), got {tuple(output.shape)}; "
            "pass a callable target that reduces the output to one scalar per example."
        )
    index = as_index(target, output.shape[0], output.shape[1], output.device)
    return output.gather(1, index[:, None])[:, 0]


def as_index(target, batch: int, classes: int, device=None) -> torch.Tensor:
    """``target`` as a ``(B,)`` long tensor, checked against the number of classes."""
    if callable(target) and not isinstance(target, torch.Tensor):
        raise TypeError("target must be class indices here (an int or a (B,) tensor), not a callable.")
    check_target(target, batch)
    index = torch.as_tensor(target, device=device).long()
    if index.dim() == 0:
        index = index.expand(batch)
    if (index < 0).any() or (index >= classes).any():
        bad = index[(index < 0) | (index >= classes)][0].item()
        raise ValueError(f"target {bad} is out of range for a model with {classes} outputs (valid: 0..{classes - 1}).")
    return index


def repeat(target: Target, times: int) -> Target:
    """The target for a batch that repeats each example's block ``times`` times (``x.repeat``)."""
    if isinstance(target, torch.Tensor) and target.dim() == 1:
        return target.repeat(times)
    return target


def rows_of(value, rows: slice):
    """The rows ``rows`` of a per-example argument: a target, a bound or a reference.

    A tensor with a batch dim (``(B,)`` class indices, ``(B, ...)`` per-example values) is sliced;
    a scalar, a 0-dim tensor, a callable or ``None`` applies to every row and is returned as it is.
    The one way to cut per-example arguments into the chunks of :func:`~xaiutils.core.batching.map_batched`.
    """
    if isinstance(value, torch.Tensor) and value.dim() >= 1:
        return value[rows]
    return value
