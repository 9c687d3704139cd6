r"""Does the map reflect what the model does? Perturbation tests of faithfulness (chapter 10).

Every test here is a *perturbation schedule plus a score*: change the input where the map says
(remove the most relevant pixels, add noise weighted by the map, perturb random subsets), run
the model on all perturbed copies, and score how the output moved.

* :func:`deletion`, :func:`insertion`, :func:`pixel_flipping` / :func:`aopc` -- remove (or
  insert) pixels in the order of relevance and follow the output (:func:`perturbation_curve`).
* :func:`infidelity` -- the expected squared error of predicting output changes from the map.
* :func:`sensitivity_n`, :func:`faithfulness_correlation` -- correlation between the relevance
  of random pixel subsets and the output drop when they are removed.
* :func:`evalattai` -- Gaussian noise weighted by the map, added in increasing steps.
* :func:`~xaiutils.evaluation.retraining.roar` -- remove and retrain (its own module).

Conventions: a *feature* is a pixel (all channels together) for images, one entry otherwise;
its relevance is the channel sum of the map, which may have ``x``'s shape or ``(B, 1, H, W)``.
All perturbed copies are stacked in block layout (rows ``[k*B:(k+1)*B]`` are step or sample
``k``) and run through the model ``batch_size`` rows at a time (default: ``B``), inside
:func:`~xaiutils.attribution._model_state.explaining`. Random draws come from a
``torch.Generator`` seeded with ``seed``. Every function returns per-example values.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..attribution._model_state import explaining
from ..attribution._targets import Target
from ..attribution.paths import gaussian_blur
from ._utils import check_map_for_input, check_positive, expand_features, feature_relevance, scores_of_rows

REMOVALS = ("zero", "mean", "blur", "uniform")
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


# ---------------------------------------------------------------------------- removal
def removed(x: torch.Tensor, removal="zero", *, blur_sigma: float = 5.0, seed: int = 0) -> torch.Tensor:
    """What a removed feature is replaced with: a tensor of ``x``'s shape.

    * ``"zero"``: 0 (black for images in ``[0, 1]``);
    * ``"mean"``: each example's per-channel mean (over pixels);
    * ``"blur"``: ``x`` blurred by a Gaussian of ``blur_sigma`` pixels (the insertion start of
      Petsiuk et al.), :func:`xaiutils.attribution.paths.gaussian_blur`;
    * ``"uniform"``: uniform noise in each example's ``[min, max]`` range (Samek et al.);
    * a number or a tensor broadcastable to ``x``.
    """
    if isinstance(removal, str):
        if removal == "zero":
            return torch.zeros_like(x)
        if removal == "mean":
            return x.mean(tuple(range(2, x.dim())) or 1, keepdim=True).expand_as(x)
        if removal == "blur":
            check_positive("blur_sigma", blur_sigma)
            return gaussian_blur(x, blur_sigma)
        if removal == "uniform":
            flat = x.flatten(1)
            low = flat.amin(1).view(-1, *([1] * (x.dim() - 1)))
            high = flat.amax(1).view(-1, *([1] * (x.dim() - 1)))
            u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype).to(x.device)
            return low + (high - low) * u
        raise ValueError(f"unknown removal {removal!r}; use a number, a tensor or one of {', '.join(REMOVALS)}.")
    value = torch.as_tensor(removal, dtype=x.dtype, device=x.device)
    try:
        return value.expand_as(x)
    except RuntimeError:
        raise ValueError(f"removal of shape {tuple(value.shape)} does not broadcast to x's shape {tuple(x.shape)}.")


def feature_ranks(attr: torch.Tensor, x: torch.Tensor, order: str = "most", *, patch: int = 1,
                  seed: int = 0) -> torch.Tensor:
    """The removal rank of every feature, ``(B, P)``: rank 0 is removed first.

    ``order``: ``"most"`` relevant first, ``"least"`` relevant first, or ``"random"``. With
    ``patch > 1`` (images only) the features are ``patch x patch`` squares (Samek et al. use 9x9
    regions), ranked by their summed relevance; every pixel of a square gets the square's rank.
    Ties are broken by position.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}.")
    check_positive("patch", patch, integer=True)
    relevance = feature_relevance(attr, x)
    if patch > 1:
        if x.dim() != 4:
            raise ValueError("patch > 1 needs image inputs (B, C, H, W).")
        h, w = x.shape[2:]
        grid = F.avg_pool2d(relevance.view(-1, 1, h, w), patch, ceil_mode=True, divisor_override=1)  # sums
        relevance = grid.flatten(1)
    if order == "random":
        generator = torch.Generator().manual_seed(seed)
        keys = torch.rand(relevance.shape, generator=generator, dtype=torch.float64).to(relevance.device)
    else:
        keys = -relevance if order == "most" else relevance
    ranks = torch.empty_like(relevance, dtype=torch.long)
    ranks.scatter_(1, torch.sort(keys, dim=1, stable=True).indices,
                   torch.arange(relevance.shape[1], device=relevance.device).expand_as(ranks).contiguous())
    if patch > 1:
        h, w = x.shape[2:]
        gh, gw = grid.shape[2:]
        ranks = ranks.view(-1, gh, gw).repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, :h, :w]
        ranks = ranks.flatten(1)
    return ranks


def _examples(s: slice, batch: int, device) -> torch.Tensor:
    """The example index of each row of a block-layout chunk."""
    return torch.arange(s.start, s.stop, device=device) % batch


# ---------------------------------------------------------------------------- curves
def perturbation_curve(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *,
                       order: str = "most", insert: bool = False, steps: int = 20, removal="zero",
                       score_kind: str = "probability", patch: int = 1, blur_sigma: float = 5.0, seed: int = 0,
                       batch_size: int | None = None, progress: bool = False) -> Curve:
    r"""Remove (or insert) features in the order of ``attr`` and follow the model's score.

    The features are ranked by :func:`feature_ranks`. At step :math:`k = 0..S` the first
    :math:`n_k = \mathrm{round}(kP/S)` of the :math:`P` features are *removed* (replaced by
    :func:`removed` ``(x, removal)``), or with ``insert=True`` *inserted* into the removed image
    (all others stay removed). The score of the target (``score_kind``: ``"probability"``, the
    softmax, or ``"logit"``) is recorded for all :math:`S + 1` copies, run ``batch_size`` rows
    at a time. Returns a :class:`Curve` over the fractions :math:`n_k / P`.

    References: ``petsiuk2018rise`` (deletion, insertion), ``samek2017evaluating`` (pixel
    flipping). Chapter 10.
    """
    check_positive("steps", steps, integer=True)
    attr = check_map_for_input(attr, x)
    with explaining(model, x):
        ranks = feature_ranks(attr, x, order, patch=patch, seed=seed)
        fill = removed(x, removal, blur_sigma=blur_sigma, seed=seed)
        features = ranks.shape[1]
        counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * features / steps).long().to(x.device)
        batch = len(x)

        def rows(s: slice) -> torch.Tensor:
            index = torch.arange(s.start, s.stop, device=x.device)
            step, example = index // batch, index % batch  # block layout: step-major
            chosen = expand_features(ranks[example] < counts[step][:, None], x)
            return torch.where(chosen, x[example], fill[example]) if insert else \
                torch.where(chosen, fill[example], x[example])

        scores = scores_of_rows(model, rows, (steps + 1) * batch, target, steps + 1, batch, kind=score_kind,
                                batch_size=batch_size, progress=progress, desc="perturbation curve")
    return _curve(counts.double().cpu() / features, scores.T.contiguous())


def deletion(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *, steps: int = 20,
             removal="zero", score_kind: str = "probability", **options) -> Curve:
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


# ---------------------------------------------------------------------------- infidelity
def perturbations(x: torch.Tensor, samples: int, kind: str = "gaussian", *, sigma: float = 0.1,
                  size: int | None = None, baseline=0.0, seed: int = 0) -> torch.Tensor:
    r"""The random perturbations :math:`I` of :func:`infidelity`, ``(samples, *x.shape)``; the perturbed input is :math:`x - I`.

    * ``"gaussian"``: :math:`I \sim N(0, \sigma^2)` per entry (absolute std ``sigma``).
    * ``"square"``: removal of a random ``size x size`` square (default a quarter of the image
      side): :math:`I = \mathbb{1}_S \odot (x - x')` with ``baseline`` :math:`x'`, so that
      :math:`x - I` has the square replaced by the baseline.

    Reference: ``yeh2019fidelity``. Chapter 10.
    """
    check_positive("samples", samples, integer=True)
    generator = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        check_positive("sigma", sigma, allow_zero=True)
        return sigma * torch.randn((samples, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
    if kind != "square":
        raise ValueError(f"unknown perturbation {kind!r}; use 'gaussian', 'square' or a callable.")
    if x.dim() != 4:
        raise ValueError("square perturbations need image inputs (B, C, H, W).")
    h, w = x.shape[2:]
    size = max(1, min(h, w) // 4) if size is None else size
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= min(h, w):
        raise ValueError(f"size must be an integer between 1 and {min(h, w)} pixels, got {size!r}.")
    top = torch.randint(0, h - size + 1, (samples, len(x)), generator=generator).to(x.device)
    left = torch.randint(0, w - size + 1, (samples, len(x)), generator=generator).to(x.device)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    inside_r = (rows >= top[..., None]) & (rows < top[..., None] + size)
    inside_c = (cols >= left[..., None]) & (cols < left[..., None] + size)
    square = (inside_r[..., :, None] & inside_c[..., None, :])[:, :, None]
    reference = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    return square * (x - reference)


def infidelity(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *,
               perturbation="gaussian", samples: int = 10, sigma: float = 0.1, size: int | None = None,
               baseline=0.0, multiply_by_inputs: bool = False, normalise: bool = False, seed: int = 0,
               batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
    r"""Explanation infidelity: how badly :math:`I^\top \Phi(x)` predicts the output change :math:`f(x) - f(x - I)`.

    .. math:: \mathrm{INFD}(\Phi, f, x) = \mathbb{E}_{I}\Big[\big(I^\top \Phi(x) - (f(x) - f(x - I))\big)^2\Big],

    estimated with ``samples`` draws of :func:`perturbations` (``perturbation="gaussian"`` with
    std ``sigma``, or ``"square"`` removal of ``size x size`` squares to ``baseline``), or a
    callable ``perturbation(x, samples, generator) -> I`` of shape ``(samples, *x.shape)``.
    :math:`f` is the target's raw output. Lower is better; the exact gradient of a linear model
    has infidelity 0 for every perturbation, and so does gradient x input for square removal with
    ``multiply_by_inputs=True``.

    ``multiply_by_inputs=True`` is for *global* attributions that already contain the factor
    :math:`x - x'` (gradient x input, IG, DeepLIFT, LRP): the dot product uses
    :math:`I / (x - x')`, i.e. the indicator of the removed square (:math:`I` itself where
    :math:`x = x'`, as Captum's ``safe_div``).
    ``normalise=True`` rescales :math:`\Phi` by the optimal :math:`\beta = \mathbb{E}[I^\top\Phi\,
    \Delta f] / \mathbb{E}[(I^\top\Phi)^2]` first, so the value does not depend on the map's scale.

    Equals ``captum.metrics.infidelity`` (same names: ``multiply_by_inputs``, ``normalize``) given
    the same perturbations (the tests check it). Model passes: ``B + samples * B`` forwards.

    Returns ``(B,)``. Reference: ``yeh2019fidelity``. Chapter 10.
    """
    attr = check_map_for_input(attr, x)
    if attr.shape != x.shape:
        attr = attr.expand_as(x)
    with explaining(model, x):
        generator = torch.Generator().manual_seed(seed)
        if callable(perturbation):
            check_positive("samples", samples, integer=True)
            noise = perturbation(x, samples, generator)
            if not isinstance(noise, torch.Tensor) or noise.shape != (samples, *x.shape):
                raise ValueError(f"a perturbation callable must return a tensor of shape {(samples, *x.shape)}.")
            noise = noise.to(x)
        else:
            noise = perturbations(x, samples, perturbation, sigma=sigma, size=size, baseline=baseline, seed=seed)
        batch = len(x)
        f_x = scores_of_rows(model, lambda s: x[s], batch, target, 1, batch, batch_size=batch_size)[0]
        flat = noise.flatten(0, 1)
        f_perturbed = scores_of_rows(model, lambda s: x[_examples(s, batch, x.device)] - flat[s], samples * batch,
                                     target, samples, batch, batch_size=batch_size, progress=progress,
                                     desc="infidelity")
        weights = noise
        if multiply_by_inputs:
            difference = x - torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
            weights = noise / torch.where(difference == 0, torch.ones_like(difference), difference)
        predicted = (weights * attr).flatten(2).sum(2)
        actual = f_x - f_perturbed
        if normalise:
            beta = (predicted * actual).sum(0) / (predicted**2).sum(0)
            beta = torch.nan_to_num(beta, nan=0.0, posinf=0.0, neginf=0.0)
            predicted = beta * predicted
        return ((predicted - actual) ** 2).mean(0)


# ---------------------------------------------------------------------------- random subsets
def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along dim 0, NaN where either side is constant."""
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / ((a**2).sum(0) * (b**2).sum(0)).sqrt()


def _subset_correlation(model, x, attr, target, n, samples, baseline, seed, batch_size, progress, desc):
    check_positive("samples", samples, integer=True)
    if samples < 2:
        raise ValueError("a correlation needs samples >= 2.")
    attr = check_map_for_input(attr, x)
    relevance = feature_relevance(attr, x)
    features = relevance.shape[1]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= features:
        raise ValueError(f"the subset size must be an integer between 1 and the number of features ({features}), "
                         f"got {n!r}.")
    with explaining(model, x):
        fill = removed(x, baseline)
        generator = torch.Generator().manual_seed(seed)
        keys = torch.rand((samples, len(x), features), generator=generator, dtype=torch.float64).to(x.device)
        subsets = torch.zeros(keys.shape, dtype=torch.bool, device=x.device)
        subsets.scatter_(2, keys.topk(n, dim=2).indices, True)
        flat = subsets.flatten(0, 1)
        batch = len(x)

        def rows(s: slice) -> torch.Tensor:
            example = _examples(s, batch, x.device)
            return torch.where(expand_features(flat[s], x), fill[example], x[example])

        f_x = scores_of_rows(model, lambda s: x[s], batch, target, 1, batch, batch_size=batch_size)[0]
        f_removed = scores_of_rows(model, rows, samples * batch, target, samples, batch, batch_size=batch_size,
                                   progress=progress, desc=desc)
    relevance_sums = (subsets * relevance.to(f_x)).sum(2)
    return _pearson(relevance_sums, f_x - f_removed)


def sensitivity_n(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *, n: int,
                  samples: int = 100, baseline="zero", seed: int = 0, batch_size: int | None = None,
                  progress: bool = False) -> torch.Tensor:
    r"""Sensitivity-n: does the relevance of ``n`` features predict the output drop when they are removed?

    For ``samples`` random subsets :math:`S` of exactly ``n`` features (pixels),
    the Pearson correlation, per example, between :math:`\sum_{i \in S} R_i` and
    :math:`f(x) - f(x_{[x_S = x'_S]})`, with the features of :math:`S` set to ``baseline``
    (see :func:`removed`) and :math:`f` the target's raw output. A map satisfies sensitivity-n when
    the correlation is 1; Ancona et al. plot it against ``n``. Higher is better.

    Returns ``(B,)`` (NaN where the relevance sums or output drops are constant).
    Reference: ``ancona2018towards``. Chapter 10.
    """
    return _subset_correlation(model, x, attr, target, n, samples, baseline, seed, batch_size, progress,
                               "sensitivity-n")


def faithfulness_correlation(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *,
                             subset_size: int | None = None, samples: int = 100, baseline="zero", seed: int = 0,
                             batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
    r"""Faithfulness correlation of Bhatt et al.

    .. math:: \mu_F = \operatorname{corr}_{S \subset [d],\,|S| = s}\Big(\sum_{i \in S} R_i,\;
              f(x) - f(x_{[x_S = \bar x_S]})\Big),

    the same estimator as :func:`sensitivity_n` with ``n = subset_size`` (default: a quarter of
    the features; Quantus uses 224 pixels of a 224x224 image). Higher is better. Returns ``(B,)``.

    Reference: ``bhatt2020evaluating``. Chapter 10.
    """
    if subset_size is None:
        subset_size = max(1, feature_relevance(check_map_for_input(attr, x), x).shape[1] // 4)
    return _subset_correlation(model, x, attr, target, subset_size, samples, baseline, seed, batch_size, progress,
                               "faithfulness correlation")


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
    check_positive("steps", steps, integer=True)
    check_positive("epsilon", epsilon, allow_zero=True)
    attr = check_map_for_input(attr, x)
    if normalise not in ("max", "total"):
        raise ValueError(f"normalise must be 'max' or 'total', got {normalise!r}.")
    weight = feature_relevance(attr, x).abs()
    scale = weight.amax(1, keepdim=True) if normalise == "max" else weight.mean(1, keepdim=True)
    weight = expand_features(weight / scale.clamp_min(torch.finfo(weight.dtype).tiny), x)
    with explaining(model, x):
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((steps, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
        path = torch.cat([x[None], x + epsilon * weight * noise.cumsum(0)])
        if clip is not None:
            path = path.clamp(*clip)
        flat = path.flatten(0, 1)
        scores = scores_of_rows(model, lambda s: flat[s], (steps + 1) * len(x), target, steps + 1, len(x),
                                kind=score_kind, batch_size=batch_size, progress=progress, desc="EvalAttAI")
    return _curve(torch.arange(steps + 1, dtype=torch.float64) / steps, scores.T.contiguous())
