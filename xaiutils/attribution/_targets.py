"""What to explain: turn ``target`` into one scalar per example.

``target`` is an int (the same class for every example), a ``(B,)`` tensor of class indices,
or a callable mapping the model output ``(B, K)`` to the ``(B,)`` scalars to explain
(for example a log-probability or a difference of logits).
"""
from __future__ import annotations

from typing import Callable, Union

import torch

Target = Union[int, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


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
    if isinstance(target, bool):
        raise TypeError("target must be an int, a (B,) tensor of class indices or a callable, got a bool.")
    index = torch.as_tensor(target, device=device)
    if index.is_floating_point():
        raise TypeError(f"target must hold integer class indices, got dtype {index.dtype}.")
    index = index.long()
    if index.dim() == 0:
        index = index.expand(batch)
    if index.shape != (batch,):
        raise ValueError(f"target must be an int or have shape ({batch},), got shape {tuple(index.shape)}.")
    if (index < 0).any() or (index >= classes).any():
        bad = index[(index < 0) | (index >= classes)][0].item()
        raise ValueError(f"target {bad} is out of range for a model with {classes} outputs (valid: 0..{classes - 1}).")
    return index


def repeat(target: Target, times: int) -> Target:
    """The target for a batch that repeats each example's block ``times`` times (``x.repeat``)."""
    if isinstance(target, torch.Tensor) and target.dim() == 1:
        return target.repeat(times)
    return target


def take(target: Target, rows: slice) -> Target:
    """The target of the rows ``rows`` of a batch, e.g. one chunk of :func:`repeat`'s batch."""
    if isinstance(target, torch.Tensor) and target.dim() == 1:
        return target[rows]
    return target
