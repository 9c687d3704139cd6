r"""Path methods: integrated gradients and its descendants (chapter 4).

Integrated gradients explains :math:`f_c` at :math:`x` relative to a baseline :math:`x'` by
integrating the gradient along the straight line between them and approximating the integral
by a quadrature rule with nodes :math:`\alpha_k` and weights :math:`w_k`:

.. math:: \mathrm{IG}_i(x) = (x_i - x'_i) \int_0^1
          \frac{\partial f_c(x' + \alpha (x - x'))}{\partial x_i} \, d\alpha
          \approx (x_i - x'_i) \sum_{k=1}^{n} w_k \,
          \frac{\partial f_c(x' + \alpha_k (x - x'))}{\partial x_i}.

It is *complete*: :math:`\sum_i \mathrm{IG}_i(x) = f_c(x) - f_c(x')`. The variants below keep the
path integral and change what it runs over: a distribution of baselines (expected gradients),
a path through decreasing blur (blur IG), or a path that adapts to the gradient (guided IG).

Every method evaluates the gradient at many points; they are stacked into one tensor of rows,
block ``k`` holding point ``k`` of every example, and run through the model ``batch_size``
rows at a time (default: one input batch per pass).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..core.baselines import BASELINES, blur_radius, blurred, gaussian_blur, resolve_baseline  # noqa: F401
from ..core.batching import map_batched
from ..core.checks import check_choice, check_finite, check_int, check_number
from ..core.model_state import explaining
from ..core.targets import Target, repeat, rows_of, select
from .gradients import input_gradient

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


# ---------------------------------------------------------------------------- quadrature
def integration_rule(rule: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Nodes :math:`\alpha_k \in [0, 1]` and weights :math:`w_k` of a quadrature rule, in float64.

    * ``riemann_left``, ``riemann_right``, ``riemann_middle``: :math:`\alpha_k = k/n`,
      :math:`(k+1)/n`, :math:`(k+\frac12)/n` for :math:`k = 0..n-1`, all :math:`w_k = 1/n`.
    * ``riemann_trapezoid``: :math:`\alpha_k = k/(n-1)`, :math:`w_k = 1/(n-1)` except
      :math:`w_0 = w_{n-1} = 1/(2(n-1))`; needs :math:`n \ge 2`.
    * ``gausslegendre``: the Gauss-Legendre nodes and weights of :math:`[-1, 1]` mapped to
      :math:`[0, 1]`; exact for polynomials of degree :math:`2n-1` in :math:`\alpha`.

    Every rule's weights sum to exactly 1, so integrated gradients is exactly complete on a
    linear model. Captum's ``riemann_trapezoid`` (checked on 0.9) places its nodes at
    :math:`k/(n-1)` but weighs them :math:`1/n` (halved at the ends): its weights sum to
    :math:`1 - 1/n`, so its attributions miss :math:`1/n` of :math:`f_c(x) - f_c(x')`, 10% at
    :math:`n = 10`.
    """
    n = check_int(steps, "steps")
    k = torch.arange(n, dtype=torch.float64)
    weights = torch.full((n,), 1.0 / n, dtype=torch.float64)
    if rule == "riemann_left":
        alphas = k / n
    elif rule == "riemann_right":
        alphas = (k + 1) / n
    elif rule == "riemann_middle":
        alphas = (k + 0.5) / n
    elif rule == "riemann_trapezoid":
        if n < 2:
            raise ValueError(f"steps must be >= 2 for the trapezoid rule (both end points); got {n}.")
        alphas = k / (n - 1)
        weights = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
    elif rule == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        alphas, weights = torch.from_numpy((nodes + 1) / 2), torch.from_numpy(w / 2)
    else:
        check_choice(rule, "rule", RULES)
    return alphas, weights


# ---------------------------------------------------------------------------- shared plumbing
def _gradients(model: nn.Module, rows: torch.Tensor, target: Target, times: int,
               batch_size: int | None) -> torch.Tensor:
    """Input gradients of ``times`` blocks of B rows, ``batch_size`` rows per pass: ``(times, B, ...)``."""
    batch = rows.shape[0] // times
    targets = repeat(target, times)
    grads = map_batched(lambda r, s: input_gradient(model, r, rows_of(targets, s))[0], rows, batch_size, batch)
    return grads.view(times, batch, *rows.shape[1:])


def _along(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A ``(S,)`` or ``(S, B)`` tensor shaped to broadcast against ``(S, *x.shape)``."""
    return values.to(x).view(*values.shape, *([1] * (x.dim() + 1 - values.dim())))


# ---------------------------------------------------------------------------- methods
def integrated_gradients(model: nn.Module, x: torch.Tensor, target: Target, *, baseline="zeros",
                         steps: int = 50, rule: str = "gausslegendre", return_delta: bool = False,
                         seed: int = 0, batch_size: int | None = None):
    r"""Integrated gradients: the gradient averaged along the line from :math:`x'` to :math:`x`.

    .. math:: \mathrm{IG}_i(x) = (x_i - x'_i) \sum_{k=1}^{n} w_k \,
              \partial_i f_c\big(x' + \alpha_k (x - x')\big)

    Args:
        baseline: :math:`x'`; a tensor, a number or ``"zeros"``, ``"blur"``, ``"uniform"``,
            ``"gaussian"`` (see :func:`resolve_baseline`; ``seed`` seeds the random ones).
        steps: the number :math:`n` of gradient evaluations per example.
        rule: the quadrature rule, one of :data:`RULES` (see :func:`integration_rule`).
            Gauss-Legendre is the most accurate for smooth models at equal ``steps``.
        return_delta: also return the completeness error per example,
            :math:`\delta = \sum_i \mathrm{IG}_i(x) - (f_c(x) - f_c(x'))`, shape ``(B,)``.
        batch_size: rows per model pass (of the ``steps * B`` rows); default ``B``.

    Returns:
        The attributions, ``x``'s shape, or ``(attributions, delta)``.

    Reference: ``sundararajan2017axiomatic``. Chapter 4.
    """
    alphas, weights = integration_rule(rule, steps)
    with explaining(model, x, target):
        reference = resolve_baseline(x, baseline, seed=seed)
        difference = x - reference
        path = reference + _along(alphas, x) * difference
        grads = _gradients(model, path.flatten(0, 1), target, steps, batch_size)
        attributions = difference * (_along(weights, x) * grads).sum(0)
        if not return_delta:
            return attributions
        targets = repeat(target, 2)
        with torch.no_grad():
            scores = map_batched(lambda r, s: select(model(r), rows_of(targets, s)), torch.cat([x, reference]),
                                 batch_size, len(x))
        gain = scores[: len(x)] - scores[len(x):]
        return attributions, attributions.flatten(1).sum(1) - gain


def _expected_gradients_draws(x: torch.Tensor, references: int, samples: int, noise: float, seed: int):
    """The random draws of :func:`expected_gradients`: reference index and alpha ``(samples, B)``, noise."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(references, (samples, len(x)), generator=generator)
    alpha = torch.rand((samples, len(x)), generator=generator, dtype=torch.float64)
    eps = noise * torch.randn((samples, *x.shape), generator=generator, dtype=torch.float64)
    return index.to(x.device), alpha.to(x), eps.to(x)


def expected_gradients(model: nn.Module, x: torch.Tensor, target: Target, *, references: torch.Tensor | None = None,
                       samples: int = 50, noise: float = 0.0, seed: int = 0,
                       batch_size: int | None = None) -> torch.Tensor:
    r"""Expected gradients (GradientSHAP): integrated gradients averaged over baselines from data.

    .. math:: \mathrm{EG}_i(x) = \mathbb{E}_{x' \sim D,\ \alpha \sim U(0, 1)}
              \big[(x_i - x'_i)\, \partial_i f_c\big(x' + \alpha (x - x')\big)\big],

    estimated with ``samples`` draws per example of a reference :math:`x'` (uniformly, with
    replacement, from ``references``) and of :math:`\alpha`. With ``noise > 0``, each draw also
    replaces :math:`x` by :math:`x + \varepsilon`, :math:`\varepsilon \sim N(0, \mathrm{noise}^2)`
    (absolute std, as Captum's ``GradientShap(stdevs=...)``). Complete in expectation:
    :math:`\sum_i \mathrm{EG}_i(x) \approx f_c(x) - \mathbb{E}_{x'} f_c(x')`.

    Args:
        references: ``(R, ...)``, a sample of the data distribution :math:`D` (training data, as
            Erion et al.); default ``None``: the batch ``x`` itself, its empirical distribution.
        samples: draws per example. seed: seeds a ``torch.Generator`` for all draws.
        batch_size: rows per model pass (of the ``samples * B`` rows); default ``B``.

    References: ``erion2021improving``, ``lundberg2017unified``. Chapter 4.
    """
    check_int(samples, "samples")
    check_number(noise, "noise", minimum=0)
    with explaining(model, x, target):
        references = x if references is None else references
        if not isinstance(references, torch.Tensor) or references.shape[1:] != x.shape[1:] or len(references) == 0:
            got = tuple(references.shape) if isinstance(references, torch.Tensor) else type(references).__name__
            raise ValueError(f"references must be a non-empty tensor of shape (R, *x.shape[1:]) = "
                             f"(R, {', '.join(map(str, x.shape[1:]))}); got {got}.")
        check_finite(references, "references")
        index, alpha, eps = _expected_gradients_draws(x, len(references), samples, noise, seed)
        reference = references.to(x)[index]
        difference = x + eps - reference
        path = reference + _along(alpha, x) * difference
        grads = _gradients(model, path.flatten(0, 1), target, samples, batch_size)
        return (difference * grads).mean(0)


def blur_ig(model: nn.Module, x: torch.Tensor, target: Target, *, max_sigma: float = 10.0,
            steps: int = 100, rule: str = "riemann_left", batch_size: int | None = None) -> torch.Tensor:
    r"""Blur integrated gradients: integrate along the path from a heavily blurred image to ``x``.

    With :math:`x_\sigma` the image blurred by a Gaussian of std :math:`\sigma` (:func:`gaussian_blur`),

    .. math:: \mathrm{BlurIG}_i(x) = \int_{\sigma_{\max}}^{0}
              \partial_i f_c(x_\sigma) \, \frac{\partial x_{\sigma,i}}{\partial \sigma} \, d\sigma
              \approx -\sigma_{\max} \sum_k w_k \, \partial_i f_c(x_{\sigma_k})
              \frac{\partial x_{\sigma_k,i}}{\partial \sigma}, \quad \sigma_k = \sigma_{\max}\alpha_k,

    which sums to :math:`f_c(x) - f_c(x_{\sigma_{\max}})`: no baseline to choose, the "missing"
    information is detail at fine scales. The default ``riemann_left`` grid,
    :math:`\sigma_k = k \sigma_{\max} / n`, is the one of the paper's code (PAIR ``saliency``);
    we differentiate the blur in :math:`\sigma` exactly instead of by a finite difference (along
    the path the kernel is truncated at :math:`4\sigma_{\max}`, so it is smooth in :math:`\sigma`).

    Args:
        max_sigma: blur of the path's start, in pixels (PAIR uses 50 for 224-pixel images).
        steps, rule: the quadrature in :math:`\sigma` (see :func:`integration_rule`).
        batch_size: rows per model pass (of the ``steps * B`` rows); default ``B``.

    Reference: ``xu2020attribution``. Chapter 4.
    """
    check_number(max_sigma, "max_sigma", minimum=0, exclusive_minimum=True)
    alphas, weights = integration_rule(rule, steps)
    with explaining(model, x, target, min_dim=3):
        path, velocity = blurred(x, max_sigma * alphas, blur_radius(max_sigma))
        grads = _gradients(model, path.flatten(0, 1), target, steps, batch_size)
        return -max_sigma * (_along(weights, x) * grads * velocity).sum(0)


def guided_ig(model: nn.Module, x: torch.Tensor, target: Target, *, baseline="zeros", steps: int = 200,
              fraction: float = 0.25, max_dist: float = 0.02, seed: int = 0,
              batch_size: int | None = None) -> torch.Tensor:
    r"""Guided integrated gradients: an adaptive path that first moves the features that matter least.

    The path starts at :math:`x'` and, at step :math:`k = 1..n`, must reduce the L1 distance to
    :math:`x` to :math:`(1 - k/n)\,\lVert x - x' \rVert_1`. It does so by repeatedly moving the
    ``fraction`` of features with the smallest :math:`|\partial_i f_c|` (gradient taken at the
    start of the step) towards :math:`x`, while every feature stays within ``max_dist`` of the
    straight line (:math:`\alpha_i \in [k/n - \text{max\_dist},\ k/n + \text{max\_dist}]`).
    Attributions accumulate :math:`\partial_i f_c \cdot \Delta x_i` along the path, a left
    Riemann sum. ``max_dist = 0`` is the straight line: IG with ``rule="riemann_left"``;
    ``max_dist = 1`` is the unbounded method.

    Completeness holds only approximately, and more steps do not fix it: in one step a feature
    can jump by up to ``2 * max_dist`` of its range, valued at the gradient of the step's start,
    and the selection prefers features whose gradient there is small. How large the error is
    depends on the model: on a random MNIST CNN it stayed near 20% even at 1,600 steps (see the
    tests); chapter 4 measures it on the trained models for several ``max_dist``. Check it on
    your model by comparing ``attr.sum()`` with ``f_c(x) - f_c(x')``.

    Follows the paper's algorithm and its reference implementation in PAIR ``saliency``
    (defaults too), computed for the whole batch at once. The steps are sequential, so this
    costs ``steps`` passes of ``B`` rows.

    Args:
        baseline: :math:`x'`, as for :func:`integrated_gradients`.
        steps: the number of steps (gradient evaluations per example).
        fraction: share of the features selected per move. max_dist: see above.
        batch_size: rows per model pass (of the ``B`` rows); default ``B``.

    Reference: ``kapishnikov2021guided``. Chapter 4.
    """
    check_int(steps, "steps")
    check_number(fraction, "fraction", minimum=0, maximum=1, exclusive_minimum=True)
    check_number(max_dist, "max_dist", minimum=0, maximum=1)
    with explaining(model, x, target):
        start = resolve_baseline(x, baseline, seed=seed).flatten(1).double()
        end = x.flatten(1).double()
        difference = end - start
        l1_total = difference.abs().sum(1)
        kth = int(fraction * (end.shape[1] - 1)) + 1  # numpy's quantile(..., method="lower")
        point, attributions = start.clone(), torch.zeros_like(end)
        for step in range(1, steps + 1):
            grad = map_batched(lambda r, s: input_gradient(model, r, rows_of(target, s))[0],
                               point.to(x.dtype).view(x.shape), batch_size, len(x)).flatten(1).double()
            alpha = step / steps
            alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
            low, high = start + alpha_min * difference, start + alpha_max * difference
            l1_target = l1_total * (1 - alpha)
            moving = l1_total > 0
            # each pass moves at least the selected features to the band's edge, so the loop ends
            # within features / kth + 2 passes; the bound only guards against a bug becoming a hang
            for _ in range(end.shape[1] // kth + 3):
                if not moving.any():
                    break
                old = point.clone()
                # features that fell behind the band around the straight line catch up with it
                position = torch.where(difference != 0, (point - start) / difference, alpha_max)
                point = torch.where(moving[:, None] & (position < alpha_min), low, point)
                l1 = (point - end).abs().sum(1)
                close = (l1 - l1_target).abs() <= 1e-9 * torch.maximum(l1, l1_target).clamp_min(1)
                moving &= ~(close | (l1 < l1_target))  # "<" only guards against an endless loop
                # of the features that can still move, those with the smallest |gradient| move
                magnitude = torch.where(point == high, math.inf, grad.abs())
                threshold = magnitude.kthvalue(kth, dim=1, keepdim=True).values
                selected = moving[:, None] & (magnitude <= threshold) & torch.isfinite(magnitude)
                room = ((high - point).abs() * selected).sum(1)
                gamma = torch.where(room > 0, (l1 - l1_target) / room, math.inf)  # share of the room needed
                share = gamma.clamp(max=1.0)[:, None]
                point = torch.where(selected, torch.where(share >= 1, high, point + (high - point) * share), point)
                attributions += (point - old) * grad
                moving &= (gamma > 1) & selected.any(1)
            if moving.any():
                raise RuntimeError(f"guided_ig did not reach step {step}'s distance; please report this input.")
        return attributions.to(x.dtype).view(x.shape)
