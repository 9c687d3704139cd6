r"""How similar are two attribution maps? (chapters 9, 12 and 19)

The sanity checks of chapter 9 ask whether a map *changes* when the model is randomised; the
attacks of chapter 12 ask whether a map changes when the input barely does. Both need a number
for "how similar are maps :math:`a` and :math:`b`". Every function here takes two batches of
maps of the same shape and returns one value per example, a ``(B,)`` tensor.

Channels: an image map ``(B, C, H, W)`` is first reduced to one value per pixel by **summing
its channels** (signed), so that, e.g., a 3-channel gradient and a 1-channel Grad-CAM map are
compared pixel by pixel; ``(B, H, W)`` and ``(B, D)`` maps are used as they are.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata

from ..core.checks import check_positive
from ._utils import check_map, check_pair, pixel_map, to_numpy


def _flat_pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = check_pair(a, b)
    return pixel_map(a).flatten(1), pixel_map(b).flatten(1)


def spearman(a, b, *, absolute: bool = False) -> torch.Tensor:
    r"""Spearman rank correlation between the pixels of two maps, per example.

    .. math:: \rho(a, b) = \operatorname{corr}\big(\operatorname{rank}(a), \operatorname{rank}(b)\big)

    with tied values given their average rank, as :func:`scipy.stats.spearmanr` (the tests check
    equality with it); here the ranks of a whole batch are computed at once. ``absolute=True``
    ranks :math:`|a|` and :math:`|b|` instead: Adebayo et al. report both, because the sign of a
    gradient map often flips while its magnitudes stay put. A constant map has no ranking: its
    correlation is NaN (as in scipy).

    Returns a ``(B,)`` float64 tensor in :math:`[-1, 1]`.

    Reference: ``adebayo2018sanity``. Chapter 9.
    """
    a, b = _flat_pair(a, b)
    if absolute:
        a, b = a.abs(), b.abs()
    ra, rb = (rankdata(to_numpy(t), axis=1) for t in (a, b))
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(1) / np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    return torch.from_numpy(rho).to(a.device)


def ssim(a, b, *, data_range: float | None = None) -> torch.Tensor:
    r"""Structural similarity (SSIM) of two maps, per example, with :func:`skimage.metrics.structural_similarity`.

    SSIM compares local means, variances and covariance in a 7x7 window. For float images it
    needs the *data range* ``L`` (its constants are :math:`(0.01 L)^2` and :math:`(0.03 L)^2`).
    Our default, ``data_range=None``, is the joint range of the pair,
    :math:`\max(a, b) - \min(a, b)` per example: it does not depend on the order of the two maps,
    and it is invariant to rescaling both maps by the same factor (so raw, unnormalised maps of
    any scale can be compared). Pass a number to fix ``L`` instead, e.g. ``data_range=1`` for maps
    already normalised to :math:`[0, 1]` as in Adebayo et al. A pair of constant, equal maps has
    SSIM 1.

    Needs spatial maps ``(B, [C,] H, W)`` with ``H, W >= 7``. Returns a ``(B,)`` float64 tensor.

    Reference: ``adebayo2018sanity``. Chapter 9.
    """
    from skimage.metrics import structural_similarity

    a, b = check_pair(a, b)
    if a.dim() not in (3, 4):
        raise ValueError(f"SSIM needs image maps (B, H, W) or (B, C, H, W), got shape {tuple(a.shape)}.")
    device = a.device
    a, b = to_numpy(pixel_map(a)), to_numpy(pixel_map(b))
    if min(a.shape[1:]) < 7:
        raise ValueError(f"SSIM uses a 7x7 window; the maps are only {a.shape[1]}x{a.shape[2]} pixels.")
    if data_range is not None:
        check_positive(data_range, "data_range")
    values = []
    for ai, bi in zip(a, b):
        low, high = min(ai.min(), bi.min()), max(ai.max(), bi.max())
        if data_range is None and high == low:
            values.append(1.0)  # two equal constant maps
            continue
        values.append(structural_similarity(ai, bi, data_range=data_range or high - low))
    return torch.tensor(values, dtype=torch.float64, device=device)


def _top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    index = values.topk(k, dim=1).indices
    return torch.zeros_like(values, dtype=torch.bool).scatter_(1, index, True)


def _check_k(k, n: int, unit: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer between 1 and the number of {unit} ({n}), got {k!r}.")


def top_k_intersection(a, b, k: int, *, absolute: bool = True) -> torch.Tensor:
    r"""Fraction of the ``k`` most relevant pixels of ``a`` that are also among the ``k`` most relevant of ``b``.

    .. math:: \frac{|\operatorname{top}_k(a) \cap \operatorname{top}_k(b)|}{k}

    Ghorbani et al. rank by magnitude (``absolute=True``, the default); ``absolute=False`` ranks
    the signed values. Ties at the k-th value are broken by position (``torch.topk``).

    Returns a ``(B,)`` tensor in :math:`[0, 1]`. Reference: ``ghorbani2019interpretation``. Chapter 12.
    """
    a, b = _flat_pair(a, b)
    _check_k(k, a.shape[1], "pixels")
    if absolute:
        a, b = a.abs(), b.abs()
    return (_top_k_mask(a, k) & _top_k_mask(b, k)).sum(1).double() / k


AGREEMENTS = ("feature", "rank", "sign", "signed_rank")


def top_k_agreement(a, b, k: int, *, measure: str = "feature") -> torch.Tensor:
    r"""How far two maps agree on their ``k`` most important features: the measures of Krishna et al.

    Features are ordered by magnitude :math:`|a_i|` (channels summed first); :math:`T_k(a)` is the
    set of the first ``k`` and :math:`r_a(i)` the position of feature :math:`i` in that order (ties
    are broken by position in the map). With :math:`T = T_k(a) \cap T_k(b)`, ``measure`` is

    * ``"feature"``: :math:`|T| / k`, the share of top features that both maps name (as
      :func:`top_k_intersection`);
    * ``"rank"``: :math:`|\{i \in T : r_a(i) = r_b(i)\}| / k`, the same features at the same positions;
    * ``"sign"``: :math:`|\{i \in T : \operatorname{sign} a_i = \operatorname{sign} b_i\}| / k`;
    * ``"signed_rank"``: the same feature at the same position with the same sign.

    All four are 1 for two equal maps, and ``signed_rank <= rank <= feature``,
    ``signed_rank <= sign <= feature``. Two independent random orders of :math:`d` features give
    ``"feature"`` :math:`k/d` on average and ``"rank"`` :math:`1/d`. Krishna et al. add the
    Spearman correlation (:func:`spearman`) as their *rank correlation*.

    Returns a ``(B,)`` float64 tensor in :math:`[0, 1]`. Reference: ``krishna2022disagreement``. Chapter 19.
    """
    if measure not in AGREEMENTS:
        raise ValueError(f"unknown measure {measure!r}; choose one of {', '.join(AGREEMENTS)}.")
    a, b = _flat_pair(a, b)
    _check_k(k, a.shape[1], "features")
    top_a = a.abs().sort(dim=1, descending=True, stable=True).indices[:, :k]
    top_b = b.abs().sort(dim=1, descending=True, stable=True).indices[:, :k]
    if measure in ("rank", "signed_rank"):
        agree = top_a == top_b  # position j holds the same feature in both orders
    else:
        agree = (top_a[:, :, None] == top_b[:, None, :]).any(2)  # a's j-th feature is in b's top k
    if measure in ("sign", "signed_rank"):
        agree &= a.gather(1, top_a).sign() == b.gather(1, top_a).sign()
    return agree.sum(1).double() / k


def center_of_mass(attr) -> torch.Tensor:
    r"""The centre of mass of :math:`|\mathrm{attr}|` in pixel coordinates ``(row, column)``, shape ``(B, 2)``.

    Channels are summed first, then the absolute value is taken. An all-zero map has no centre:
    NaN. Reference: ``ghorbani2019interpretation``. Chapter 12.
    """
    attr = check_map(attr)
    if attr.dim() not in (3, 4):
        raise ValueError(f"a centre of mass needs image maps (B, H, W) or (B, C, H, W), got {tuple(attr.shape)}.")
    m = pixel_map(attr).abs()
    rows = torch.arange(m.shape[1], dtype=m.dtype, device=m.device)
    cols = torch.arange(m.shape[2], dtype=m.dtype, device=m.device)
    total = m.sum((1, 2))
    return torch.stack([(m.sum(2) * rows).sum(1), (m.sum(1) * cols).sum(1)], 1) / total[:, None]


def center_of_mass_shift(a, b) -> torch.Tensor:
    r"""Euclidean distance in pixels between the centres of mass of two maps (:func:`center_of_mass`).

    The centre-of-mass attack of Ghorbani et al. maximises it. Returns a ``(B,)`` tensor (NaN
    where a map is all zero). Reference: ``ghorbani2019interpretation``. Chapter 12.
    """
    a, b = check_pair(a, b)
    return (center_of_mass(a) - center_of_mass(b)).norm(dim=1)


def cosine_similarity(a, b) -> torch.Tensor:
    r"""Cosine of the angle between the two maps as vectors, :math:`\langle a, b\rangle / (\|a\|\,\|b\|)`, per example.

    Channels are summed first (as everywhere in this module). NaN where a map is all zero.
    Returns a ``(B,)`` tensor in :math:`[-1, 1]`. Chapter 9.
    """
    a, b = _flat_pair(a, b)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


SIMILARITIES = {
    "spearman": spearman,
    "spearman_abs": lambda a, b: spearman(a, b, absolute=True),
    "ssim": ssim,
    "cosine": cosine_similarity,
}
"""Similarity measures by name (higher = more similar), as used by :mod:`~xaiutils.evaluation.sanity`."""
