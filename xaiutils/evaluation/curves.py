r"""Perturbation curves: remove (or insert, or add noise to) features in the order of a map and
follow the model's score (chapter 10).

* :func:`deletion`, :func:`insertion`, :func:`pixel_flipping` / :func:`aopc` -- remove (or
  insert) features in the order of relevance (:func:`perturbation_curve`);
* :func:`evalattai` -- Gaussian noise weighted by the map, added in increasing steps.

Conventions as in :mod:`.faithfulness`: a *feature* is a pixel (all channels together) for
images, or with ``patch > 1`` a ``patch x patch`` square, and one entry otherwise; what a removed
feature becomes is a baseline of :mod:`xaiutils.core.baselines`. All perturbed copies are stacked
in block layout (rows ``[k*B:(k+1)*B]`` are step ``k``) and run ``batch_size`` rows at a time
(default: ``B``). Every function returns per-example values.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..core.baselines import resolve_baseline
from ..core.checks import check_choice, check_int, check_number
from ..core.model_state import explaining
from ..core.targets import Target
from ._tokens import explaining_for, is_token_ids, token_removal
from ._utils import check_map_for_input, expand_features, feature_relevance, scores_of_rows

ORDERS = ("most", "least", "random")


class Curve(NamedTuple):
    """A perturbation curve per example.

    ``fractions``: ``(S+1,)`` the x-axis in ``[0, 1]`` (fraction of features perturbed, or of the
    noise schedule); ``scores``: ``(B, S+1)`` the tracked score; ``area``: ``(B,)`` the area under
    ``scores`` (trapezoidal rule over ``fractions``); ``slope``: ``(B,)`` the least-squares slope
    of ``scores`` against ``fractions``.
    """

    fractions: torch.Tensor
    scores: torch.Tensor
    area: torch.Tensor
    slope: torch.Tensor


def _curve(fractions: torch.Tensor, scores: torch.Tensor) -> Curve:
    fx = fractions.to(scores) - fractions.to(scores).mean()
    slope = ((scores - scores.mean(1, keepdim=True)) * fx).sum(1) / (fx**2).sum()
    return Curve(fractions, scores, torch.trapezoid(scores, fractions.to(scores), dim=1), slope)


# ---------------------------------------------------------------------------- ranks
def feature_ranks(attr: torch.Tensor, x: torch.Tensor, order: str = "most", *, patch: int = 1,
                  seed: int = 0, removable: torch.Tensor | None = None) -> torch.Tensor:
    """The removal rank of every feature, ``(B, P)``: rank 0 is removed first.

    ``order``: ``"most"`` relevant first, ``"least"`` relevant first, or ``"random"``. With
    ``patch > 1`` (images only) the features are ``patch x patch`` squares (Samek et al. use 9x9
    regions), ranked by their summed relevance; every pixel of a square gets the square's rank.
    Ties are broken by position. ``removable`` (``(B, P)`` booleans, for token ids: see
    :func:`._tokens.token_removal`) ranks the features that may not be removed after all others.
    """
    check_choice(order, "order", ORDERS)
    check_int(patch, "patch")
    relevance = feature_relevance(attr, x)
    if patch > 1:
        if x.dim() != 4:
            raise ValueError(f"patch > 1 needs image inputs (B, C, H, W); got x of shape {tuple(x.shape)}.")
        h, w = x.shape[2:]
        grid = F.avg_pool2d(relevance.view(-1, 1, h, w), patch, ceil_mode=True, divisor_override=1)  # sums
        relevance = grid.flatten(1)
    if order == "random":
        generator = torch.Generator().manual_seed(seed)
        keys = torch.rand(relevance.shape, generator=generator, dtype=torch.float64).to(relevance.device)
    else:
        keys = -relevance if order == "most" else relevance
    if removable is not None:
        keys = torch.where(removable.to(keys.device), keys, torch.inf)
    ranks = torch.empty_like(relevance, dtype=torch.long)
    ranks.scatter_(1, torch.sort(keys, dim=1, stable=True).indices,
                   torch.arange(relevance.shape[1], device=relevance.device).expand_as(ranks).contiguous())
    if patch > 1:
        h, w = x.shape[2:]
        gh, gw = grid.shape[2:]
        ranks = ranks.view(-1, gh, gw).repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, :h, :w]
        ranks = ranks.flatten(1)
    return ranks


# ---------------------------------------------------------------------------- curves
def perturbation_curve(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *,
                       order: str = "most", insert: bool = False, steps: int = 20, removal="zeros",
                       score_kind: str = "probability", patch: int = 1, blur_sigma: float = 5.0, seed: int = 0,
                       batch_size: int | None = None, progress: bool = False) -> Curve:
    r"""Remove (or insert) features in the order of ``attr`` and follow the model's score.

    The features (pixels, or ``patch x patch`` squares) are ranked by :func:`feature_ranks`. At
    step :math:`k = 0..S` the first :math:`n_k = \mathrm{round}(kP/S)` of the :math:`P` features
    are *removed* (replaced by the baseline ``removal``, see
    :func:`~xaiutils.core.baselines.resolve_baseline`), or with ``insert=True`` *inserted* into the removed image
    (all others stay removed). The score of the target (``score_kind``: ``"probability"``, the
    softmax, or ``"logit"``) is recorded for all :math:`S + 1` copies, run ``batch_size`` rows
    at a time. Returns a :class:`Curve` over the fractions :math:`n_k / P`.

    For token ids ``x`` ``(B, T)`` and a map ``(B, T)``, a feature is a token, ``removal`` is
    ``"pad"``, ``"mask"`` or a token id, and the model's special tokens stay
    (:mod:`._tokens`); each sequence removes the fraction :math:`k / S` of its own removable
    tokens, which is the x-axis.

    References: ``petsiuk2018rise`` (deletion, insertion), ``samek2017evaluating`` (pixel
    flipping). Chapter 10.
    """
    check_int(steps, "steps")
    tokens = is_token_ids(x)
    attr = check_map_for_input(attr, x)
    with explaining_for(model, x, target):
        fraction = torch.arange(steps + 1, dtype=torch.float64) / steps
        if tokens:  # each sequence removes a fraction of its own content tokens
            fill, removable = token_removal(model, x, removal)
            ranks = feature_ranks(attr, x, order, seed=seed, removable=removable)
            words = removable.sum(1).cpu().double()
            counts = torch.round(torch.arange(steps + 1, dtype=torch.float64)[:, None] * words / steps).long()
            counts = counts.to(x.device)
        else:
            ranks = feature_ranks(attr, x, order, patch=patch, seed=seed)
            fill = resolve_baseline(x, removal, seed=seed, blur_sigma=blur_sigma, name="removal")
            features = int(ranks.max()) + 1  # pixels, or squares when patch > 1 (each pixel has its square's rank)
            counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * features / steps).long().to(x.device)
            fraction = counts.double().cpu() / features
            counts = counts[:, None].expand(-1, len(x))
        batch = len(x)

        def rows(s: slice) -> torch.Tensor:
            index = torch.arange(s.start, s.stop, device=x.device)
            step, example = index // batch, index % batch  # block layout: step-major
            chosen = expand_features(ranks[example] < counts[step, example][:, None], x)
            return torch.where(chosen, x[example], fill[example]) if insert else \
                torch.where(chosen, fill[example], x[example])

        scores = scores_of_rows(model, rows, (steps + 1) * batch, target, steps + 1, batch, kind=score_kind,
                                batch_size=batch_size, progress=progress, desc="perturbation curve")
    return _curve(fraction, scores.T.contiguous())


def deletion(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *, steps: int = 20,
             removal="zeros", score_kind: str = "probability", **options) -> Curve:
    """Deletion: remove the most relevant pixels first; a faithful map makes the probability fall fast.

    :func:`perturbation_curve` with ``order="most"``; the ``area`` under the curve is **lower is
    better**. Reference: ``petsiuk2018rise``. Chapter 10.
    """
    return perturbation_curve(model, x, attr, target, order="most", steps=steps, removal=removal,
                              score_kind=score_kind, **options)


def insertion(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *, steps: int = 20,
              removal="blur", score_kind: str = "probability", **options) -> Curve:
    """Insertion: start from the removed (by default blurred) image and insert the most relevant pixels first.

    The ``area`` is **higher is better**. Reference: ``petsiuk2018rise``. Chapter 10.
    """
    return perturbation_curve(model, x, attr, target, order="most", insert=True, steps=steps, removal=removal,
                              score_kind=score_kind, **options)


def pixel_flipping(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *, order: str = "most",
                   steps: int = 20, removal="uniform", score_kind: str = "logit", **options) -> Curve:
    """Pixel flipping (Samek et al.): replace features by uniform noise, most (MoRF) or least (LeRF) relevant first.

    :func:`perturbation_curve` with Samek et al.'s choices: uniform noise in the example's range,
    the raw class score; ``patch=9`` gives their 9x9 regions. Reference: ``samek2017evaluating``.
    Chapter 10.
    """
    return perturbation_curve(model, x, attr, target, order=order, steps=steps, removal=removal,
                              score_kind=score_kind, **options)


def aopc(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *, order: str = "most",
         **options) -> torch.Tensor:
    r"""Area over the perturbation curve of :func:`pixel_flipping`, per example.

    .. math:: \mathrm{AOPC} = \frac{1}{S+1} \sum_{k=0}^{S} \big(f(x^{(0)}) - f(x^{(k)})\big)

    Most relevant first (``order="most"``, MoRF): **higher is better** (the score drops early);
    least relevant first (``"least"``, LeRF): **lower is better**. Returns ``(B,)``.
    Reference: ``samek2017evaluating``. Chapter 10.
    """
    curve = pixel_flipping(model, x, attr, target, order=order, **options)
    return (curve.scores[:, :1] - curve.scores).mean(1)


# ---------------------------------------------------------------------------- EvalAttAI
def evalattai(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *, steps: int = 10,
              epsilon: float = 0.1, normalise: str = "max", clip: tuple[float, float] | None = None,
              score_kind: str = "probability", seed: int = 0, batch_size: int | None = None,
              progress: bool = False) -> Curve:
    r"""EvalAttAI: add Gaussian noise weighted by the map, in increasing steps, and follow the model.

    The map's magnitudes :math:`|R|` (per pixel, shared by the channels), normalised per
    example, weigh fresh Gaussian noise added at every step:

    .. math:: x^{(k)} = x^{(k-1)} + \epsilon \, w \odot z_k, \qquad z_k \sim N(0, I), \quad k = 1..S,

    optionally clipped to ``clip`` (e.g. ``(0, 1)``). ``normalise`` chooses :math:`w`:

    * ``"max"`` (default, our reading of the paper): :math:`w = |R| / \max |R|`, so no pixel
      gets noise of more than :math:`\epsilon`. A dense map then lets in more noise *in total*
      than a sparse one, and the curve measures partly how spread the map is (chapter 10
      shows the confound);
    * ``"total"``: :math:`w = |R| / \operatorname{mean} |R|`, so every map spends the same
      total weight :math:`\sum w = d` (that of uniform noise, :math:`w = 1`) and maps differ only
      in *where* they put it: a fixed noise budget.

    A faithful map puts the noise where it
    matters, so the score of the target falls faster than for an unfaithful one: a **lower
    area** (or a more negative slope) of the returned :class:`Curve` is better. ``score_kind``:
    ``"probability"`` (confidence), ``"logit"``, or ``"correct"`` (1 while the prediction is
    still the target class; its mean over examples is the accuracy curve that Nielsen et al.
    plot). The x-axis is :math:`k / S`.

    Our reading of Nielsen et al. (2023): their exact normalisation of the map and their
    summary of the curve may differ in details; the choices above are stated so they can be
    changed. Model passes: ``(S + 1) * B`` forwards.

    Reference: ``nielsen2023evalattai``. Chapter 10.
    """
    check_int(steps, "steps")
    check_number(epsilon, "epsilon", minimum=0)
    attr = check_map_for_input(attr, x)
    check_choice(normalise, "normalise", ("max", "total"))
    weight = feature_relevance(attr, x).abs()
    scale = weight.amax(1, keepdim=True) if normalise == "max" else weight.mean(1, keepdim=True)
    weight = expand_features(weight / scale.clamp_min(torch.finfo(weight.dtype).tiny), x)
    with explaining(model, x, target):
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((steps, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
        path = torch.cat([x[None], x + epsilon * weight * noise.cumsum(0)])
        if clip is not None:
            path = path.clamp(*clip)
        flat = path.flatten(0, 1)
        scores = scores_of_rows(model, lambda s: flat[s], (steps + 1) * len(x), target, steps + 1, len(x),
                                kind=score_kind, batch_size=batch_size, progress=progress, desc="EvalAttAI")
    return _curve(torch.arange(steps + 1, dtype=torch.float64) / steps, scores.T.contiguous())
