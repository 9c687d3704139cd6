r"""Does the map point at the object? Localisation against ground-truth masks (chapter 11).

On the ``shapes`` data set (:func:`xaiutils.data.shapes`) we know which pixels decide the class:
``mask`` marks the object. Each metric compares a map with that mask and returns one value per
example, a ``(B,)`` tensor; higher is better for all of them.

Inputs: ``attr`` is ``(B, C, H, W)``, ``(B, 1, H, W)`` or ``(B, H, W)``, reduced to one value per
pixel by summing channels (signed); ``mask`` is ``(B, 1, H, W)`` or ``(B, H, W)`` (any non-zero
value is "inside"). The maps are used as they are: to score magnitudes rather than positive
evidence, pass ``attr.abs()``. Every mask must have at least one pixel inside (and, for
:func:`auc`, one outside): the metrics are undefined otherwise and raise ``ValueError``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from ._utils import check_map, pixel_map, to_numpy


def _map_and_mask(attr, mask, *, need_outside: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    attr = check_map(attr)
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}.")
    a = pixel_map(attr) if attr.dim() == 4 else attr
    m = mask.detach().to(a.device)
    m = (m.any(1) if m.dim() == 4 else m) != 0
    if a.dim() != 3 or m.shape != a.shape:
        raise ValueError(f"attr {tuple(attr.shape)} and mask {tuple(mask.shape)} must be image batches of the same "
                         "height and width: attr (B, C, H, W) or (B, H, W), mask (B, 1, H, W) or (B, H, W).")
    inside = m.flatten(1).sum(1)
    if (inside == 0).any():
        raise ValueError(f"mask of example {int((inside == 0).nonzero()[0])} is empty; the localisation metrics "
                         "are undefined without ground-truth pixels.")
    if need_outside and (inside == m[0].numel()).any():
        raise ValueError(f"mask of example {int((inside == m[0].numel()).nonzero()[0])} covers the whole image; "
                         "the AUC needs pixels outside the object too.")
    return a, m


def _dilate(mask: torch.Tensor, radius: float) -> torch.Tensor:
    """Pixels within Euclidean distance ``radius`` of the mask."""
    r = int(math.floor(radius))
    offsets = torch.arange(-r, r + 1, dtype=torch.float64)
    disk = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).to(torch.float32)
    hits = F.conv2d(mask[:, None].float(), disk[None, None].to(mask.device), padding=r)
    return hits[:, 0] > 0


def pointing_game(attr, mask, *, tolerance: float = 0.0) -> torch.Tensor:
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
    a, m = _map_and_mask(attr, mask)
    if tolerance > 0:
        m = _dilate(m, tolerance)
    top = a.flatten(1) == a.flatten(1).amax(1, keepdim=True)
    return (top & m.flatten(1)).any(1).double()


def relevance_mass_accuracy(attr, mask, *, positive: bool = True) -> torch.Tensor:
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
    a, m = _map_and_mask(attr, mask)
    r = a.flatten(1).clamp_min(0) if positive else a.flatten(1)
    return (r * m.flatten(1)).sum(1) / r.sum(1)


def relevance_rank_accuracy(attr, mask) -> torch.Tensor:
    r"""The share of the :math:`K` most relevant pixels that lie on the object, with :math:`K = |\text{mask}|`.

    .. math:: \mathrm{RRA} = \frac{|P_{\text{top-}K} \cap \text{mask}|}{K}

    1 when the :math:`K` highest relevances are exactly the object's pixels. Ties at the
    :math:`K`-th value are broken by position (a stable sort).

    Returns a ``(B,)`` tensor in :math:`[0, 1]`. Reference: ``arras2022clevr``. Chapter 11.
    """
    a, m = _map_and_mask(attr, mask)
    a, m = a.flatten(1), m.flatten(1)
    k = m.sum(1)
    order = torch.sort(a, dim=1, descending=True, stable=True).indices
    ranked_inside = m.gather(1, order)
    top = torch.arange(a.shape[1], device=a.device)[None, :] < k[:, None]
    return (ranked_inside & top).sum(1).double() / k.double()


def auc(attr, mask) -> torch.Tensor:
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

    a, m = _map_and_mask(attr, mask, need_outside=True)
    ranks = torch.from_numpy(rankdata(to_numpy(a.flatten(1)), axis=1)).to(a.device)
    m = m.flatten(1).to(a.device)
    positives = m.sum(1).double()
    negatives = m.shape[1] - positives
    return ((ranks * m).sum(1) - positives * (positives + 1) / 2) / (positives * negatives)
