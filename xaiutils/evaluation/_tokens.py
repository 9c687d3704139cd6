"""Removing tokens: what the perturbation metrics do when ``x`` holds token ids (chapter 16).

An image loses a pixel by taking a baseline value; a sentence loses a word by having it replaced
by a token that carries no content: ``<pad>`` (for a model that masks padding as attention keys,
this deletes the word, as ERASER's comprehensiveness does, ``deyoung2020eraser``) or ``<mask>``
(the word is replaced by a placeholder the model has seen). Structural tokens are never removed:
the model's ``special_ids`` (``<cls>`` and ``<pad>`` for :class:`xaiutils.text.TextClassifier`),
so that every perturbed sequence keeps its ``<cls>`` and its length.

A map of token ids is ``(B, T)``, one relevance per token (what :func:`~xaiutils.attribution.lrp`
and :func:`~xaiutils.attribution.embeddings.embedding_integrated_gradients` return for ids).
"""
from __future__ import annotations

import torch
from torch import nn

from ..attribution.embeddings import _check_keep, _kept, check_token_ids
from ..core.checks import check_int, describe
from ..core.model_state import explaining
from ..core.targets import Target, check_target

TOKEN_REMOVALS = ("pad", "mask")


def is_token_ids(x) -> bool:
    """True for an integer tensor: a batch of token ids rather than a continuous input."""
    return isinstance(x, torch.Tensor) and not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)


def token_removal(model: nn.Module, x: torch.Tensor, removal, *, name: str = "removal"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fill, removable)``: ``x`` with every removable token replaced ``(B, T)``, and where a token may be removed.

    ``removal``: ``"pad"`` or ``"mask"`` (the model's ``pad_id`` or ``mask_id``) or a token id.
    ``removable`` is False at the model's ``special_ids`` (none if it has no such attribute).
    """
    check_token_ids(x, "x")
    if isinstance(removal, str) and removal in TOKEN_REMOVALS:
        token = getattr(model, f"{removal}_id", None)
        if token is None:
            raise ValueError(f"{name}={removal!r} needs the model's {removal}_id, and the model has no attribute "
                             f"{removal}_id; give {name} as a token id.")
    elif isinstance(removal, (int, torch.Tensor)) and not isinstance(removal, bool) and \
            torch.as_tensor(removal).numel() == 1 and not torch.as_tensor(removal).is_floating_point():
        token = int(removal)
    else:
        raise ValueError(f"x holds token ids, so {name} must be 'pad', 'mask' or a token id (what a removed token "
                         f"becomes); got {describe(removal)}. Values such as 'zeros' or 'blur' are for continuous "
                         "inputs.")
    check_int(token, f"the token id of {name}", minimum=0)
    keep = _check_keep(getattr(model, "special_ids", ()))
    removable = ~_kept(x, keep)
    if not removable.any(1).all():
        row = int((~removable.any(1)).nonzero()[0])
        raise ValueError(f"x[{row}] has no token to remove: all its tokens are the model's special ids {keep}.")
    return torch.where(removable, token, x), removable


def explaining_ids(model: nn.Module, x: torch.Tensor, target: Target):
    """:func:`~xaiutils.core.model_state.explaining` for token ids: ``x`` is checked as ids, not as a continuous input."""
    check_token_ids(x, "x")
    if target is not None:
        check_target(target, len(x))
    return explaining(model)


def check_token_map(attr, x: torch.Tensor, name: str = "attr") -> torch.Tensor:
    """A ``(B, T)`` floating-point map of the token ids ``x``."""
    from ._utils import check_map

    attr = check_map(attr, name)
    if attr.shape != x.shape:
        raise ValueError(f"{name} of shape {tuple(attr.shape)} does not fit the token ids x of shape "
                         f"{tuple(x.shape)}: give one relevance per token (B, T); sum an embedding-space map over "
                         "its last dim.")
    return attr.to(x.device)
