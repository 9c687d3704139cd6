r"""Coalitions of features: exact Shapley values, KernelSHAP and LIME.

A *feature* is a group of input elements (``features``, an integer mask numbering them
:math:`0..M-1`); a *coalition* :math:`S \subseteq \{0..M-1\}` keeps its features and sets every
other feature to the baseline :math:`b`. Its value is the score of that input,

.. math:: v(S) = f_c\big(x_S,\, b_{\bar S}\big),

so :math:`v(\{0..M-1\}) = f_c(x)` and :math:`v(\emptyset) = f_c(b)`. The three methods differ only in
which coalitions they evaluate and how they turn the values into one number per feature:

* :func:`shapley_values`: all :math:`2^M` coalitions and the Shapley weights (Shapley, 1953),
  :math:`\phi_i = \sum_{S \not\ni i} \frac{|S|!\,(M-|S|-1)!}{M!}\,\big(v(S \cup \{i\}) - v(S)\big)`;
* :func:`kernel_shap`: coalitions drawn from the Shapley kernel and a least-squares fit of
  :math:`v(S) \approx v(\emptyset) + \sum_{i \in S} \phi_i` with
  :math:`\sum_i \phi_i = v(\text{all}) - v(\emptyset)` enforced exactly (``lundberg2017unified``);
* :func:`lime`: coalitions drawn uniformly, weighted by their closeness to :math:`x`, and a ridge
  fit of a linear surrogate (``ribeiro2016why``).

A feature's value is divided equally among its elements, so the map sums over an example to the
sum of the feature values (for the Shapley methods: :math:`f_c(x) - f_c(b)`, efficiency). Captum's
``ShapleyValues``, ``KernelShap`` and ``Lime`` give every element its feature's full value instead:
theirs is ours times the feature's size. :func:`evaluations` says how many model evaluations each
method makes. Chapter 17, "Tables, Shapley values and gradients".
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..core.baselines import resolve_baseline
from ..core.batching import map_batched
from ..core.checks import check_int, check_number, check_positive, describe
from ..core.model_state import explaining
from ..core.targets import Target, repeat, rows_of, select

MAX_EXACT_FEATURES = 16  # shapley_values evaluates 2**M coalitions per example
DEFAULT_SAMPLES = {"kernel_shap": 2048, "lime": 1000}


# ---------------------------------------------------------------------------- features and coalitions
def feature_mask(features, shape: tuple[int, ...], device=None) -> tuple[torch.Tensor, int]:
    """``(mask, M)``: the feature number of every element of an example of ``shape``, and the number of features.

    ``features`` is ``None`` (every element its own feature); a tuple of ints ``(h, w)``: squares of
    ``h x w`` over the trailing dims, all leading dims (channels) together, numbered row by row, the
    last ones cut at the border (as :func:`~xaiutils.attribution.perturbation.occlusion`'s window);
    or an integer tensor that broadcasts to ``shape`` (or has a leading batch dim of 1, as Captum's
    ``feature_mask``), numbering the features ``0..M-1``, each at least once: ``(1, H, W)`` for an
    image of ``C`` channels groups the channels.
    """
    if features is None:
        return torch.arange(math.prod(shape), device=device).view(shape), math.prod(shape)
    if isinstance(features, tuple) and 0 < len(features) <= len(shape) and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in features):
        lengths = shape[-len(features):]
        cells = torch.meshgrid(*[torch.arange(n) // s for n, s in zip(lengths, features)], indexing="ij")
        mask = torch.zeros(lengths, dtype=torch.long)
        for cell, length, size in zip(cells, lengths, features):
            mask = mask * math.ceil(length / size) + cell
        return mask.expand(shape).to(device), int(mask.max()) + 1
    expected = f"an integer tensor numbering the elements of an example of shape {shape} with features 0..M-1"
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be None, a tuple of at most {len(shape)} square sizes (ints >= 1) or "
                        f"{expected}; got {describe(features)}.")
    if features.is_floating_point() or features.is_complex() or features.dtype == torch.bool:
        raise TypeError(f"features must be {expected}; got dtype {features.dtype}.")
    if features.dim() == len(shape) + 1 and features.shape[0] == 1:
        features = features[0]
    try:
        fits = torch.broadcast_shapes(features.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits or features.numel() == 0:
        raise ValueError(f"features of shape {tuple(features.shape)} does not broadcast to an example's shape "
                         f"{shape}; expected {expected}, for example of shape {shape}.")
    values = features.unique()
    count = len(values)
    if values[0] != 0 or values[-1] != count - 1:
        shown = values.tolist()[:8]
        raise ValueError(f"features must number the features 0..M-1, each at least once; got the values "
                         f"{shown}{' ...' if count > 8 else ''} ({count} distinct, from {values[0].item()} to "
                         f"{values[-1].item()}).")
    return features.expand(shape).long().to(device), count


def all_coalitions(count: int) -> torch.Tensor:
    """``(2^M, M)`` booleans: row ``s`` keeps feature ``i`` when bit ``i`` of ``s`` is set."""
    return (torch.arange(2**count)[:, None] >> torch.arange(count) & 1).bool()


def coalition_values(model: nn.Module, x: torch.Tensor, target: Target, fill: torch.Tensor, mask: torch.Tensor,
                     coalitions: torch.Tensor, batch_size: int | None) -> torch.Tensor:
    """``(B, N)`` scores :math:`v(S)`: example ``b`` with the features outside coalition ``n`` set to ``fill``.

    Rows ``n * B + b`` go through the model at most ``batch_size`` (default ``B``) at a time.
    """
    batch, count = len(x), len(coalitions)
    coalitions = coalitions.to(x.device)
    targets = repeat(target, count)

    def scores(rows: torch.Tensor, chunk: slice) -> torch.Tensor:
        coalition, example = rows // batch, rows % batch
        keep = coalitions[coalition][:, mask]  # (rows, *example shape)
        return select(model(torch.where(keep, x[example], fill[example])), rows_of(targets, chunk))

    with torch.no_grad():
        rows = torch.arange(count * batch, device=x.device)
        return map_batched(scores, rows, batch_size, batch).view(count, batch).T.to(torch.float64)


def _spread(phi: torch.Tensor, mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Feature values ``(B, M)`` as a map of ``like``'s shape, each divided equally among its elements."""
    sizes = torch.bincount(mask.flatten(), minlength=phi.shape[1]).to(phi)
    return (phi.to(like.device) / sizes.to(like.device))[:, mask].to(like.dtype)


def _solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The least-squares (minimum-norm where rank-deficient) solution of ``a @ s = b``, in float64 on the CPU."""
    return torch.linalg.lstsq(a.cpu().double(), b.cpu().double(), driver="gelsd").solution


def _seed(seed) -> int:
    seed = check_int(seed, "seed", minimum=0)
    if seed >= 2**32:  # numpy.random.RandomState's range
        raise ValueError(f"seed must be an integer in [0, 2**32 - 1]; got {seed}.")
    return seed


def _samples(samples) -> int:
    return check_int(samples, "samples")


# ---------------------------------------------------------------------------- exact Shapley values
def shapley_values(model: nn.Module, x: torch.Tensor, target: Target, *, baseline="zeros", features=None,
                   batch_size: int | None = None) -> torch.Tensor:
    r"""Exact Shapley values of the features, from all :math:`2^M` coalitions.

    .. math:: \phi_i = \sum_{S \subseteq \{0..M-1\} \setminus \{i\}}
              \frac{|S|!\,(M-|S|-1)!}{M!}\,\big(v(S \cup \{i\}) - v(S)\big),

    where :math:`v(S)` is the score with the features outside :math:`S` set to the baseline. The
    values satisfy efficiency (:math:`\sum_i \phi_i = f_c(x) - f_c(b)`), symmetry, dummy and
    linearity; on a linear model :math:`\phi_i = \sum_{j \in i} w_j (x_j - b_j)`.

    Args:
        baseline: what an absent feature is set to: a number, a tensor broadcastable to ``x``, or a
            name of :data:`xaiutils.core.baselines.BASELINES`.
        features: ``None`` (every element its own feature), square sizes ``(h, w)`` or an integer
            mask numbering the features ``0..M-1`` (see :func:`feature_mask`). At most
            :data:`MAX_EXACT_FEATURES` (16) features.
        batch_size: inputs per model pass (of ``2^M * B``); default ``B``. Raise it for small models.

    Returns:
        Attributions of ``x``'s shape: each element holds its feature's Shapley value divided by the
        feature's size, so that every example's map sums to :math:`f_c(x) - f_c(b)`. (Captum's
        ``ShapleyValues`` gives each element the full value: ours times the feature's size.)

    Reference: ``lundberg2017unified`` (Shapley values as attributions; Shapley, 1953). Chapter 17,
    "Tables, Shapley values and gradients".
    """
    with explaining(model, x, target):
        mask, count = feature_mask(features, tuple(x.shape[1:]), x.device)
        if count > MAX_EXACT_FEATURES:
            default = " (by default every element of an example is a feature)" if features is None else ""
            raise ValueError(f"features: exact Shapley values evaluate all 2^M coalitions, so M must be at most "
                             f"{MAX_EXACT_FEATURES}; got M = {count} features{default} for an example of shape "
                             f"{tuple(x.shape[1:])}. Group the elements with features=(h, w) squares or a mask, "
                             "or use kernel_shap.")
        coalitions = all_coalitions(count)
        values = coalition_values(model, x, target, resolve_baseline(x, baseline), mask, coalitions, batch_size).cpu()
        sizes = coalitions.sum(1)
        weights = torch.tensor([math.factorial(s) * math.factorial(count - s - 1) / math.factorial(count)
                                for s in range(count)], dtype=torch.float64)
        phi = torch.empty(len(x), count, dtype=torch.float64)
        index = torch.arange(2**count)
        for i in range(count):
            without = index[~coalitions[:, i]]  # the coalitions S that leave feature i out
            gains = values[:, without | 1 << i] - values[:, without]
            phi[:, i] = (gains * weights[sizes[without]]).sum(1)
        return _spread(phi, mask, x)


# ---------------------------------------------------------------------------- KernelSHAP
def shapley_kernel_coalitions(count: int, samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(coalitions (N, M), weights (N,))``: the coalitions KernelSHAP fits, neither empty nor full.

    If ``samples >= 2^M - 2``, every such coalition once, weighted by the Shapley kernel
    :math:`\pi(S) = \frac{M-1}{\binom{M}{|S|}\,|S|\,(M-|S|)}` (the fit then gives the exact Shapley
    values, as ``shap``'s ``KernelExplainer`` does). Otherwise ``samples`` coalitions drawn from the
    kernel, with weight 1: a size :math:`s` with probability :math:`\propto (M-1)/(s(M-s))`, then a
    uniformly random subset of that size, from a ``torch.Generator`` seeded with ``seed``.
    """
    if samples >= 2**count - 2:
        coalitions = all_coalitions(count)[1:-1]
        sizes = coalitions.sum(1).double()
        binomials = torch.tensor([math.comb(count, s) for s in range(count + 1)], dtype=torch.float64)
        return coalitions, (count - 1) / (binomials[sizes.long()] * sizes * (count - sizes))
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.arange(1, count, dtype=torch.float64)
    sizes = torch.multinomial((count - 1) / (sizes * (count - sizes)), samples, True, generator=generator) + 1
    ranks = torch.rand(samples, count, generator=generator, dtype=torch.float64).argsort(1).argsort(1)
    return ranks < sizes[:, None], torch.ones(samples, dtype=torch.float64)


def kernel_shap(model: nn.Module, x: torch.Tensor, target: Target, *, baseline="zeros", features=None,
                samples: int = DEFAULT_SAMPLES["kernel_shap"], seed: int = 0,
                batch_size: int | None = None) -> torch.Tensor:
    r"""KernelSHAP: Shapley values estimated by a weighted linear fit on coalitions.

    With coalitions :math:`z \in \{0,1\}^M` and Shapley-kernel weights :math:`\pi(z)`
    (:func:`shapley_kernel_coalitions`), solve

    .. math:: \min_\phi \sum_z \pi(z)\,\big(v(z) - v(\emptyset) - z^\top \phi\big)^2
              \quad\text{subject to}\quad \textstyle\sum_i \phi_i = f_c(x) - f_c(b),

    the constraint enforced exactly by eliminating :math:`\phi_M` (Captum instead gives the empty
    and the full coalition a weight of :math:`10^6`). With ``samples >= 2^M - 2`` every coalition is
    evaluated and the result is the exact Shapley value; fewer samples give a seeded estimate that
    converges to it. The same coalitions serve every example of the batch.

    Args:
        baseline: what an absent feature is set to (as in :func:`shapley_values`).
        features: ``None`` (every element), square sizes ``(h, w)`` or an integer mask (:func:`feature_mask`).
        samples: coalitions drawn from the kernel, besides the empty and the full one (all the
            :math:`2^M - 2` others, once each, when that is no more).
        seed: seeds the draw.
        batch_size: inputs per model pass; default ``B``.

    Returns:
        Attributions of ``x``'s shape, a feature's value divided among its elements (each example's
        map sums to :math:`f_c(x) - f_c(b)`; Captum's ``KernelShap`` is ours times the feature's size).

    Reference: ``lundberg2017unified``. Chapter 17, "Tables, Shapley values and gradients".
    """
    with explaining(model, x, target):
        mask, count = feature_mask(features, tuple(x.shape[1:]), x.device)
        samples, seed = _samples(samples), _seed(seed)
        coalitions, weights = shapley_kernel_coalitions(count, samples, seed)
        ends = torch.stack([torch.ones(count, dtype=torch.bool), torch.zeros(count, dtype=torch.bool)])
        values = coalition_values(model, x, target, resolve_baseline(x, baseline), mask,
                                  torch.cat([ends, coalitions]), batch_size).cpu()
        total = values[:, 0] - values[:, 1]  # f(x) - f(b), shared out exactly
        if count == 1:
            return _spread(total[:, None], mask, x)
        z = coalitions.double()
        design = z[:, :-1] - z[:, -1:]  # phi_M = total - sum(phi_1..M-1)
        response = (values[:, 2:] - values[:, 1:2]).T - z[:, -1:] * total
        root = weights.sqrt()[:, None]
        phi = _solve(root * design, root * response).T  # (B, M - 1)
        return _spread(torch.cat([phi, total[:, None] - phi.sum(1, keepdim=True)], 1), mask, x)


# ---------------------------------------------------------------------------- LIME
def lime_coalitions(count: int, samples: int, seed: int = 0, kernel_width: float = 0.25
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(coalitions (N, M), weights (N,))``: LIME's random coalitions and their closeness to ``x``.

    As ``lime.lime_image.LimeImageExplainer(random_state=seed)`` draws them: each feature kept with
    probability 1/2 by ``numpy.random.RandomState(seed).randint(0, 2, (samples, M))``, the first
    coalition keeping every feature (``x`` itself); weight :math:`\sqrt{\exp(-d^2/w^2)}` of the cosine
    distance to the full coalition, :math:`d = 1 - \sqrt{|z|/M}` (1 for the empty one), width
    :math:`w` = ``kernel_width``.
    """
    draws = np.random.RandomState(seed).randint(0, 2, samples * count).reshape(samples, count)
    draws[0, :] = 1
    coalitions = torch.from_numpy(draws).bool()
    distance = 1 - (coalitions.sum(1).double() / count).sqrt()
    return coalitions, torch.exp(-distance**2 / kernel_width**2).sqrt()


def lime(model: nn.Module, x: torch.Tensor, target: Target, *, baseline="zeros", features=None,
         samples: int = DEFAULT_SAMPLES["lime"], kernel_width: float = 0.25, alpha: float = 1.0, seed: int = 0,
         batch_size: int | None = None) -> torch.Tensor:
    r"""LIME: the coefficients of a weighted linear surrogate fitted on random coalitions.

    With coalitions :math:`z` and weights :math:`\pi_x(z)` from :func:`lime_coalitions`, fit
    :math:`v(z) \approx \beta_0 + z^\top \beta` by ridge regression,

    .. math:: \min_{\beta_0, \beta} \sum_z \pi_x(z)\,\big(v(z) - \beta_0 - z^\top\beta\big)^2
              + \alpha \lVert \beta \rVert^2,

    (the intercept is not penalised), and return :math:`\beta`. These are the settings of the
    ``lime`` package's image explainer (``LimeImageExplainer``: cosine distance, kernel width 0.25,
    ``Ridge(alpha=1)``), which gives the same numbers for the same seed with
    ``feature_selection="none"``, ``hide_color`` = the baseline and ``segmentation_fn`` returning
    ``features``. (Its tabular explainer samples continuous values around training statistics and
    uses a Euclidean distance with width :math:`0.75\sqrt{M}`: another method.) Unlike the Shapley
    methods, the coefficients need not sum to :math:`f_c(x) - f_c(b)`.

    Args:
        baseline: what an absent feature is set to (as in :func:`shapley_values`).
        features: ``None`` (every element), square sizes ``(h, w)`` or an integer mask (:func:`feature_mask`).
        samples: coalitions, the first one being ``x`` itself.
        kernel_width: the width :math:`w` of the exponential kernel on the cosine distance.
        alpha: the ridge penalty (0: weighted least squares, minimum-norm if underdetermined).
        seed: seeds the draw (``numpy.random.RandomState``, as ``lime`` does).
        batch_size: inputs per model pass; default ``B``.

    Returns:
        Attributions of ``x``'s shape: each element holds its feature's coefficient divided by the
        feature's size (Captum's ``Lime`` and ``lime`` give the full coefficient: ours times the size).

    Reference: ``ribeiro2016why``. Chapter 17, "Tables, Shapley values and gradients".
    """
    with explaining(model, x, target):
        mask, count = feature_mask(features, tuple(x.shape[1:]), x.device)
        samples, seed = _samples(samples), _seed(seed)
        kernel_width = check_positive(kernel_width, "kernel_width")
        alpha = check_number(alpha, "alpha", minimum=0)
        if math.isinf(alpha):
            raise ValueError(f"alpha must be a finite number >= 0; got {alpha!r}.")
        coalitions, weights = lime_coalitions(count, samples, seed, kernel_width)
        values = coalition_values(model, x, target, resolve_baseline(x, baseline), mask, coalitions,
                                  batch_size).cpu()
        z, share = coalitions.double(), weights / weights.sum()
        design, response = z - share @ z, (values - values @ share[:, None]).T  # weighted centring: the intercept
        root = weights.sqrt()[:, None]
        ridge = math.sqrt(alpha) * torch.eye(count, dtype=torch.float64)
        beta = _solve(torch.cat([root * design, ridge]), torch.cat([root * response, torch.zeros(count, len(x))]))
        return _spread(beta.T, mask, x)


# ---------------------------------------------------------------------------- cost
def evaluations(method, features: int, samples: int | None = None) -> int:
    r"""The model evaluations per example that ``method`` makes with ``features`` features (M).

    * :func:`shapley_values`: :math:`2^M` (every coalition once);
    * :func:`kernel_shap`: :math:`\min(\text{samples}, 2^M - 2) + 2` (the full and the empty
      coalition, then the sampled or, when cheaper, all the others);
    * :func:`lime`: ``samples`` (the first is ``x`` itself).

    ``method`` is one of these functions or its name; ``samples`` defaults to the method's default.
    A batch of ``B`` examples costs ``B`` times as much, in passes of ``batch_size`` inputs.
    """
    name = getattr(method, "__name__", method)
    if name not in ("shapley_values", "kernel_shap", "lime"):
        raise ValueError(f"method must be shapley_values, kernel_shap or lime (a function or its name); "
                         f"got {describe(method)}.")
    count = check_int(features, "features")
    samples = _samples(DEFAULT_SAMPLES.get(name, 1) if samples is None else samples)
    if name == "shapley_values":
        return 2**count
    if name == "kernel_shap":
        return min(samples, 2**count - 2) + 2
    return samples
