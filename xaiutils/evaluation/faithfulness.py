r"""Does the map reflect what the model does? Perturbation tests of faithfulness (chapter 10).

Every test is a *perturbation schedule plus a score*: change the input where the map says
(remove the most relevant pixels, add noise weighted by the map, perturb random subsets), run
the model on all perturbed copies, and score how the output moved.

* :func:`infidelity` -- the expected squared error of predicting output changes from the map.
* :func:`sensitivity_n`, :func:`faithfulness_correlation` -- correlation between the relevance
  of random pixel subsets and the output drop when they are removed.
* :mod:`.curves` -- deletion, insertion, pixel flipping / AOPC and EvalAttAI: features removed
  in the order of relevance, or noise added where the map points, and the score followed.
* :func:`~xaiutils.evaluation.retraining.roar` -- remove and retrain (its own module).

Conventions: a *feature* is a pixel (all channels together) for images, one entry otherwise;
its relevance is the channel sum of the map, which may have ``x``'s shape or ``(B, 1, H, W)``.
All perturbed copies are stacked in block layout (rows ``[k*B:(k+1)*B]`` are step or sample
``k``) and run through the model ``batch_size`` rows at a time (default: ``B``), inside
:func:`~xaiutils.core.model_state.explaining`. Random draws come from a
``torch.Generator`` seeded with ``seed``. Every function returns per-example values.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.baselines import resolve_baseline
from ..core.checks import check_choice, check_int, check_number
from ..core.model_state import explaining
from ..core.targets import Target
from ._tokens import explaining_for, is_token_ids, token_removal
from ._utils import check_map_for_input, expand_features, feature_relevance, scores_of_rows


def _examples(s: slice, batch: int, device) -> torch.Tensor:
    """The example index of each row of a block-layout chunk."""
    return torch.arange(s.start, s.stop, device=device) % batch


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
    check_int(samples, "samples")
    generator = torch.Generator().manual_seed(seed)
    check_choice(kind, "perturbation", ("gaussian", "square"))
    if kind == "gaussian":
        check_number(sigma, "sigma", minimum=0)
        return sigma * torch.randn((samples, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
    if x.dim() != 4:
        raise ValueError(f"square perturbations need image inputs (B, C, H, W); got x of shape {tuple(x.shape)}.")
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
    return square * (x - resolve_baseline(x, baseline, seed=seed))


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

    For token ids ``x`` ``(B, T)`` and a map ``(B, T)`` the perturbations must be
    ``perturbation="subset"``: each removes ``size`` random tokens (default a quarter of the
    shortest sequence's removable tokens), replaced by ``baseline`` (``"pad"``, ``"mask"`` or a
    token id, the model's special tokens kept; :mod:`._tokens`), and :math:`I^\top \Phi` is the
    relevance of the removed tokens, a token map being global like gradient x input.

    Equals ``captum.metrics.infidelity`` (same names: ``multiply_by_inputs``, ``normalize``) given
    the same perturbations (the tests check it). Model passes: ``B + samples * B`` forwards.

    Returns ``(B,)``. Reference: ``yeh2019fidelity``. Chapter 10.
    """
    if is_token_ids(x):
        return _token_infidelity(model, x, attr, target, perturbation, samples, size, baseline, normalise, seed,
                                 batch_size, progress)
    attr = check_map_for_input(attr, x)
    if attr.shape != x.shape:
        attr = attr.expand_as(x)
    with explaining(model, x, target):
        generator = torch.Generator().manual_seed(seed)
        if callable(perturbation):
            check_int(samples, "samples")
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
            difference = x - resolve_baseline(x, baseline, seed=seed)
            weights = noise / torch.where(difference == 0, torch.ones_like(difference), difference)
        predicted = (weights * attr).flatten(2).sum(2)
    return _squared_error(predicted, f_x - f_perturbed, normalise)


def _squared_error(predicted: torch.Tensor, actual: torch.Tensor, normalise: bool) -> torch.Tensor:
    if normalise:
        beta = (predicted * actual).sum(0) / (predicted**2).sum(0)
        beta = torch.nan_to_num(beta, nan=0.0, posinf=0.0, neginf=0.0)
        predicted = beta * predicted
    return ((predicted - actual) ** 2).mean(0)


def _token_infidelity(model, x, attr, target, perturbation, samples, size, baseline, normalise, seed, batch_size,
                      progress):
    """Infidelity for token ids: the perturbations remove ``size`` random tokens (to ``baseline``) each."""
    if perturbation != "subset":
        raise ValueError("x holds token ids, which cannot take continuous perturbations: use perturbation='subset' "
                         f"(remove random tokens, replaced by baseline='pad', 'mask' or a token id); got "
                         f"perturbation={perturbation!r}.")
    check_int(samples, "samples")
    attr = check_map_for_input(attr, x)
    fill, removable = token_removal(model, x, baseline, name="baseline")
    size = _subset_size(size, attr, removable, "size", quarter_by_default=True)
    with explaining_for(model, x, target):
        subsets = _random_subsets(samples, attr, size, seed, removable)
        f_x, f_removed = _removal_drops(model, x, fill, subsets, target, batch_size, progress, "infidelity")
    return _squared_error((subsets * attr.to(f_x)).sum(2), f_x - f_removed, normalise)


# ---------------------------------------------------------------------------- random subsets
def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along dim 0, NaN where either side is constant."""
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / ((a**2).sum(0) * (b**2).sum(0)).sqrt()


def _random_subsets(samples: int, relevance: torch.Tensor, n: int, seed: int,
                    removable: torch.Tensor | None) -> torch.Tensor:
    """``(samples, B, P)`` booleans: ``samples`` random subsets of exactly ``n`` (removable) features per example."""
    generator = torch.Generator().manual_seed(seed)
    keys = torch.rand((samples, *relevance.shape), generator=generator, dtype=torch.float64).to(relevance.device)
    if removable is not None:
        keys = torch.where(removable, keys, -1.0)
    subsets = torch.zeros(keys.shape, dtype=torch.bool, device=relevance.device)
    return subsets.scatter_(2, keys.topk(n, dim=2).indices, True)


def _subset_size(n, relevance: torch.Tensor, removable: torch.Tensor | None, name: str, *,
                 quarter_by_default: bool = False) -> int:
    """``n`` checked against the features (or removable tokens) of every example; with
    ``quarter_by_default``, ``None`` is a quarter of them."""
    features = relevance.shape[1] if removable is None else int(removable.sum(1).min())
    if n is None and quarter_by_default:
        return max(1, features // 4)
    what = "the number of features" if removable is None else "the removable tokens of the shortest sequence"
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= features:
        raise ValueError(f"{name} must be an integer between 1 and {what} ({features}), got {n!r}.")
    return n


def _removal_drops(model, x, fill, subsets, target, batch_size, progress, desc):
    """``(f(x), f(x with each subset set to fill))``: ``(B,)`` and ``(samples, B)``; call inside explaining."""
    samples, batch = subsets.shape[:2]
    flat = subsets.flatten(0, 1)

    def rows(s: slice) -> torch.Tensor:
        example = _examples(s, batch, x.device)
        return torch.where(expand_features(flat[s], x), fill[example], x[example])

    f_x = scores_of_rows(model, lambda s: x[s], batch, target, 1, batch, batch_size=batch_size)[0]
    f_removed = scores_of_rows(model, rows, samples * batch, target, samples, batch, batch_size=batch_size,
                               progress=progress, desc=desc)
    return f_x, f_removed


def _subset_correlation(model, x, attr, target, n, samples, baseline, seed, batch_size, progress, desc, *,
                        quarter_by_default: bool = False):
    check_int(samples, "samples", minimum=2)  # a correlation needs two points
    tokens = is_token_ids(x)
    attr = check_map_for_input(attr, x)
    relevance = feature_relevance(attr, x)
    fill, removable = token_removal(model, x, baseline, name="baseline") if tokens else (None, None)
    n = _subset_size(n, relevance, removable, "the subset size", quarter_by_default=quarter_by_default)
    with explaining_for(model, x, target):
        if not tokens:
            fill = resolve_baseline(x, baseline, seed=seed)
        subsets = _random_subsets(samples, relevance, n, seed, removable)
        f_x, f_removed = _removal_drops(model, x, fill, subsets, target, batch_size, progress, desc)
    relevance_sums = (subsets * relevance.to(f_x)).sum(2)
    return _pearson(relevance_sums, f_x - f_removed)


def sensitivity_n(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *, n: int,
                  samples: int = 100, baseline="zeros", seed: int = 0, batch_size: int | None = None,
                  progress: bool = False) -> torch.Tensor:
    r"""Sensitivity-n: does the relevance of ``n`` features predict the output drop when they are removed?

    For ``samples`` random subsets :math:`S` of exactly ``n`` features (pixels),
    the Pearson correlation, per example, between :math:`\sum_{i \in S} R_i` and
    :math:`f(x) - f(x_{[x_S = x'_S]})`, with the features of :math:`S` set to ``baseline``
    (see :func:`~xaiutils.core.baselines.resolve_baseline`) and :math:`f` the target's raw output. A map satisfies sensitivity-n when
    the correlation is 1; Ancona et al. plot it against ``n``. Higher is better.

    Returns ``(B,)`` (NaN where the relevance sums or output drops are constant).
    Reference: ``ancona2018towards``. Chapter 10.
    """
    return _subset_correlation(model, x, attr, target, n, samples, baseline, seed, batch_size, progress,
                               "sensitivity-n")


def faithfulness_correlation(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: Target, *,
                             subset_size: int | None = None, samples: int = 100, baseline="zeros", seed: int = 0,
                             batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
    r"""Faithfulness correlation of Bhatt et al.

    .. math:: \mu_F = \operatorname{corr}_{S \subset [d],\,|S| = s}\Big(\sum_{i \in S} R_i,\;
              f(x) - f(x_{[x_S = \bar x_S]})\Big),

    the same estimator as :func:`sensitivity_n` with ``n = subset_size`` (default: a quarter of
    the features; Quantus uses 224 pixels of a 224x224 image). Higher is better. Returns ``(B,)``.

    Reference: ``bhatt2020evaluating``. Chapter 10.
    """
    return _subset_correlation(model, x, attr, target, subset_size, samples, baseline, seed, batch_size, progress,
                               "faithfulness correlation", quarter_by_default=True)


