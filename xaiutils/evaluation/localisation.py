r"""Does the map point at the object? Localisation against ground-truth masks (chapter 11).

On the ``shapes`` data set (:func:`xaiutils.data.shapes`) we know which pixels decide the class:
``mask`` marks the object. Each metric compares a map with that mask and returns one value per
example, a ``(B,)`` tensor; higher is better for all of them.

Inputs: ``attr`` is ``(B, C, H, W)``, ``(B, 1, H, W)`` or ``(B, H, W)``, reduced to one value per
pixel by summing channels (signed); ``mask`` is ``(B, 1, H, W)`` or ``(B, H, W)`` (any non-zero
value is "inside"). The maps are used as they are: to score magnitudes rather than positive
evidence, pass ``attr.abs()``. Every mask must have at least one pixel inside (and, for
:func:`auc`, one outside): the metrics are undefined otherwise and raise ``ValueError``.

Sequences work the same way (chapter 16): a token map ``(B, T)`` against a rationale ``(B, T)``.
``valid`` (``(B, T)``, or any mask of the map's shape) limits every metric to the positions that
count, e.g. the words of a review without ``<cls>`` and ``<pad>``; positions outside it are neither
object nor background.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from ._utils import check_map, pixel_map, to_numpy


def _as_mask(mask, name: str, like: torch.Tensor) -> torch.Tensor:
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}.")
    m = mask.detach().to(like.device)
    return (m.any(1) if m.dim() == 4 else m) != 0


def _map_and_mask(attr, mask, *, need_outside: bool = False, valid=None) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """``(map, mask, valid)``, each ``(B, H, W)`` or ``(B, T)``; ``valid`` all True unless given."""
    attr = check_map(attr)
    a = pixel_map(attr) if attr.dim() == 4 else attr
    m = _as_mask(mask, "mask", a)
    if a.dim() not in (2, 3) or m.shape != a.shape:
        raise ValueError(f"attr {tuple(attr.shape)} and mask {tuple(mask.shape)} must be image batches of the same "
                         "height and width: attr (B, C, H, W) or (B, H, W), mask (B, 1, H, W) or (B, H, W); or "
                         "sequences of the same length: attr (B, T), mask (B, T).")
    v = torch.ones_like(m) if valid is None else _as_mask(valid, "valid", a)
    if v.shape != m.shape:
        raise ValueError(f"valid {tuple(valid.shape)} must have the mask's shape {tuple(m.shape)}.")
    m = m & v
    inside = m.flatten(1).sum(1)
    if (inside == 0).any():
        raise ValueError(f"mask of example {int((inside == 0).nonzero()[0])} is empty (within valid); the "
                         "localisation metrics are undefined without ground-truth pixels.")
    if need_outside and (inside == v.flatten(1).sum(1)).any():
        raise ValueError(f"mask of example {int((inside == v.flatten(1).sum(1)).nonzero()[0])} covers the whole "
                         "image (or every valid position); the AUC needs pixels outside the object too.")
    return a, m, v


def _dilate(mask: torch.Tensor, radius: float) -> torch.Tensor:
    """Pixels within Euclidean distance ``radius`` of the mask."""
    r = int(math.floor(radius))
    offsets = torch.arange(-r, r + 1, dtype=torch.float64)
    disk = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).to(torch.float32)
    hits = F.conv2d(mask[:, None].float(), disk[None, None].to(mask.device), padding=r)
    return hits[:, 0] > 0


def pointing_game(attr, mask, *, tolerance: float = 0.0, valid=None) -> torch.Tensor:
    r"""1 if the map's maximum falls on the object, else 0.

    A *hit* when the pixel of largest relevance lies inside the mask, or within ``tolerance``
    pixels (Euclidean) of it; Zhang et al. use 15 pixels on 224-pixel images to forgive
    imprecise masks, we default to 0 (exact masks). If several pixels share the maximum, one of
    them inside is enough (as in Quantus' ``PointingGame``).

    Returns a ``(B,)`` float tensor of 0s and 1s. References: ``zhang2018top``,
    ``arras2022clevr``. Chapter 11.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}.")
    a, m, v = _map_and_mask(attr, mask, valid=valid)
    if tolerance > 0:
        if a.dim() != 3:
            raise ValueError("tolerance is a distance in pixels, for image maps; use tolerance=0 for sequences.")
        m = _dilate(m, tolerance) & v
    a = a.masked_fill(~v, -torch.inf).flatten(1)
    top = a == a.amax(1, keepdim=True)
    return (top & m.flatten(1)).any(1).double()


def relevance_mass_accuracy(attr, mask, *, positive: bool = True, valid=None) -> torch.Tensor:
    r"""The share of the relevance that falls on the object.

    .. math:: \mathrm{RMA} = \frac{R_{\text{within}}}{R_{\text{total}}}
              = \frac{\sum_{i \in \text{mask}} R_i}{\sum_i R_i}, \qquad R_i = \max(a_i, 0),

    Arras et al. count only positive relevance (``positive=True``), so the score lies in
    :math:`[0, 1]`; a map with no positive relevance scores NaN. ``positive=False`` uses the
    signed values, as Quantus' ``RelevanceMassAccuracy`` does (its docstring says "positive"
    but its code sums signed values): the tests show both agree on non-negative maps and differ
    on signed ones.

    Returns a ``(B,)`` tensor. Reference: ``arras2022clevr``. Chapter 11.
    """
    a, m, v = _map_and_mask(attr, mask, valid=valid)
    r = (a.clamp_min(0) if positive else a) * v
    return (r * m).flatten(1).sum(1) / r.flatten(1).sum(1)


def relevance_rank_accuracy(attr, mask, *, valid=None) -> torch.Tensor:
    r"""The share of the :math:`K` most relevant pixels that lie on the object, with :math:`K = |\text{mask}|`.

    .. math:: \mathrm{RRA} = \frac{|P_{\text{top-}K} \cap \text{mask}|}{K}

    1 when the :math:`K` highest relevances are exactly the object's pixels. Ties at the
    :math:`K`-th value are broken by position (a stable sort).

    Returns a ``(B,)`` tensor in :math:`[0, 1]`. Reference: ``arras2022clevr``. Chapter 11.
    """
    a, m, v = _map_and_mask(attr, mask, valid=valid)
    a, m = a.masked_fill(~v, -torch.inf).flatten(1), m.flatten(1)  # invalid positions rank last
    k = m.sum(1)
    order = torch.sort(a, dim=1, descending=True, stable=True).indices
    ranked_inside = m.gather(1, order)
    top = torch.arange(a.shape[1], device=a.device)[None, :] < k[:, None]
    return (ranked_inside & top).sum(1).double() / k.double()


def auc(attr, mask, *, valid=None) -> torch.Tensor:
    r"""The ROC AUC of the map as a pixel classifier of the mask.

    The probability that a random object pixel has higher relevance than a random background
    pixel (ties count one half): 1 for perfect separation, 0.5 for chance. Computed for the whole
    batch at once as the Mann-Whitney statistic,
    :math:`(\sum_{i \in \text{mask}} \operatorname{rank}_i - n_+(n_+ + 1)/2) / (n_+ n_-)` with average
    ranks for ties, which equals :func:`sklearn.metrics.roc_auc_score` per example (the tests check
    it). Needs object and background pixels in every mask.

    Returns a ``(B,)`` float64 tensor. Reference: ``fawcett2006introduction`` (ROC analysis), as
    used for attribution maps by Quantus (``hedstrom2023quantus``). Chapter 11.
    """
    from scipy.stats import rankdata

    a, m, v = _map_and_mask(attr, mask, need_outside=True, valid=valid)
    a, m, v = a.flatten(1), m.flatten(1), v.flatten(1)
    if valid is None:
        ranks = torch.from_numpy(rankdata(to_numpy(a), axis=1)).to(a.device)
    else:  # rank the valid positions of each example among themselves
        ranks = torch.zeros(a.shape, dtype=torch.float64, device=a.device)
        for row in range(len(a)):
            ranks[row, v[row]] = torch.from_numpy(rankdata(to_numpy(a[row, v[row]]))).to(a.device)
    positives = m.sum(1).double()
    negatives = v.sum(1).double() - positives
    return ((ranks * m).sum(1) - positives * (positives + 1) / 2) / (positives * negatives)
