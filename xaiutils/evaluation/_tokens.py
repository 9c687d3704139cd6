"""Removing tokens: what the perturbation metrics do when ``x`` holds token ids (chapter 16).

An image loses a pixel by taking a baseline value; a sentence loses a word by having it replaced
by a token that carries no content: ``<pad>`` (for a model that masks padding as attention keys,
this deletes the word, as ERASER's comprehensiveness does, ``deyoung2020eraser``) or ``<mask>``
(the word is replaced by a placeholder the model has seen). Structural tokens are never removed:
the model's ``special_ids`` (``<cls>`` and ``<pad>`` for :class:`xaiutils.text.TextClassifier`),
so that every perturbed sequence keeps its ``<cls>`` and its length.

A map of token ids is ``(B, T)``, one relevance per token (what :func:`~xaiutils.attribution.lrp`
and :func:`~xaiutils.attribution.embeddings.embedding_integrated_gradients` return for ids;
:func:`._utils.check_map_for_input` checks it).
"""
from __future__ import annotations

import torch
from torch import nn

from ..attribution.embeddings import _check_keep, _kept, check_token_ids, is_token_ids
from ..core.checks import check_int, describe
from ..core.model_state import explaining
from ..core.targets import Target, check_target

TOKEN_REMOVALS = ("pad", "mask")

__all__ = ["TOKEN_REMOVALS", "explaining_for", "is_token_ids", "token_removal"]


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


def explaining_for(model: nn.Module, x: torch.Tensor, target: Target):
    """:func:`~xaiutils.core.model_state.explaining` with ``x`` checked as what it is: token ids are checked
    as ids (not refused as a non-float input), any other ``x`` as a continuous input."""
    if not is_token_ids(x):
        return explaining(model, x, target)
    check_token_ids(x, "x")
    if target is not None:
        check_target(target, len(x))
    return explaining(model)
