r"""How concentrated is an attribution map? Sparseness (Gini) and complexity (entropy) (chapter 10).

A map that spreads small relevance over every pixel is hard to read; a concise map puts most
of it on a few. Both measures look at the magnitudes :math:`|a_i|` of the pixel map (channels
summed first, see :mod:`xaiutils.evaluation._utils`) and return one value per example. Maps are
batches ``(B, C, H, W)`` or ``(B, features)``; a 3-D map is refused as ambiguous.
"""
from __future__ import annotations

import torch

from ._utils import check_map, pixel_map


def _magnitudes(attr) -> torch.Tensor:
    attr = check_map(attr)
    if attr.dim() == 3:
        raise ValueError(f"attr of shape {tuple(attr.shape)} is ambiguous: a batch of {attr.shape[0]} maps of "
                         f"{attr.shape[1]}x{attr.shape[2]} pixels, or one map with {attr.shape[0]} channels? Pass "
                         "(B, C, H, W): attr.unsqueeze(0) for one map, attr.unsqueeze(1) for a batch of 2-D maps; "
                         "or (B, features).")
    return pixel_map(attr).flatten(1).abs()


def sparseness(attr) -> torch.Tensor:
    r"""The Gini index of :math:`|a|`: 0 for a uniform map, :math:`1 - 1/n` when one pixel holds everything.

    With :math:`|a|_{(1)} \le \dots \le |a|_{(n)}` sorted in increasing order,

    .. math:: G(a) = \frac{\sum_{i=1}^n (2i - n - 1)\,|a|_{(i)}}{n \sum_{i=1}^n |a|_{(i)}},

    which equals the form :math:`1 - 2\sum_k \frac{|a|_{(k)}}{\|a\|_1}\frac{n - k + 1/2}{n}` of
    Hurley and Rickard (``hurley2009comparing``) that Chalasani et al. use. Higher is sparser
    (better). An all-zero map has no distribution: NaN.

    Quantus' ``Sparseness`` adds :math:`10^{-7}` to every value before sorting (to avoid 0/0); the
    tests show the two agree to that offset.

    Returns a ``(B,)`` tensor. Reference: ``chalasani2020concise``. Chapter 13.
    """
    a = _magnitudes(attr).sort(dim=1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=a.dtype, device=a.device)
    return ((2 * i - n - 1) * a).sum(1) / (n * a.sum(1))


def entropy(attr) -> torch.Tensor:
    r"""Complexity (Bhatt et al.): the entropy of the fractional contribution :math:`p_i = |a_i| / \sum_j |a_j|` of each pixel.

    .. math:: H(a) = -\sum_i p_i \log p_i \qquad (0 \log 0 = 0),

    between 0 (one pixel holds everything) and :math:`\log n` (uniform). Lower is simpler
    (better). An all-zero map: NaN. Quantus' ``Complexity`` computes :math:`\log(p_i + 10^{-12})`;
    the tests show the two agree to that offset.

    Returns a ``(B,)`` tensor. Reference: ``bhatt2020evaluating``. Chapter 20.
    """
    a = _magnitudes(attr)
    p = a / a.sum(1, keepdim=True)
    return -torch.special.xlogy(p, p).sum(1)
