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

from ._batching import map_batched
from ._model_state import explaining
from ._targets import Target, repeat, select, take
from .gradients import input_gradient

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
BASELINES = ("zeros", "blur", "uniform", "gaussian")
BLUR_BASELINE_SIGMA = 5.0  # pixels: the "blur" baseline of integrated_gradients and guided_ig
NOISE_BASELINE_SIGMA = 0.15  # relative to each example's value range: the "gaussian" baseline


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
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    n = steps
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
            raise ValueError("the trapezoid rule needs steps >= 2 (both end points).")
        alphas = k / (n - 1)
        weights = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
    elif rule == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        alphas, weights = torch.from_numpy((nodes + 1) / 2), torch.from_numpy(w / 2)
    else:
        raise ValueError(f"unknown integration rule {rule!r}; choose one of {', '.join(RULES)}.")
    return alphas, weights


# ---------------------------------------------------------------------------- baselines
def _blur_matrices(size: int, sigmas: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(K, dK/dsigma)``, each ``(len(sigmas), size, size)``: 1-D Gaussian blur with zero padding as a matrix.

    The kernel :math:`k(a) = e^{-a^2/2\sigma^2} / \sum_{|b| \le r} e^{-b^2/2\sigma^2}` lives on
    :math:`|a| \le r`; its derivative is :math:`k(a) (a^2 - \sum_b k(b) b^2) / \sigma^3`.
    """
    a = torch.arange(-radius, radius + 1, dtype=torch.float64)
    s = sigmas.to(torch.float64).clamp_min(1e-6)[:, None]  # at sigma -> 0 the kernel is a delta
    k = torch.exp(-a**2 / (2 * s**2))
    k = k / k.sum(1, keepdim=True)
    dk = k * (a**2 - (k * a**2).sum(1, keepdim=True)) / s**3
    offset = torch.arange(size)[:, None] - torch.arange(size)[None, :]
    inside = offset.abs() <= radius
    column = (offset + radius).clamp(0, 2 * radius)
    return k[:, column] * inside, dk[:, column] * inside


def _blurred(x: torch.Tensor, sigmas: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` blurred over its last two dims with each sigma, and the derivative in sigma: ``(S, *x.shape)`` each."""
    kh, dkh = (m.to(x) for m in _blur_matrices(x.shape[-2], sigmas, radius))
    kw, dkw = (m.to(x) for m in _blur_matrices(x.shape[-1], sigmas, radius))
    blur = "sih,b...hw,sjw->sb...ij"
    return (torch.einsum(blur, kh, x, kw),
            torch.einsum(blur, dkh, x, kw) + torch.einsum(blur, kh, x, dkw))


def _radius(sigma: float) -> int:
    return int(4 * sigma + 0.5)  # scipy.ndimage's truncate=4.0


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x`` blurred over its last two dims by a Gaussian of std ``sigma`` pixels.

    Equals ``scipy.ndimage.gaussian_filter(x, (0, .., sigma, sigma), mode="constant")``, the blur
    of the blur IG paper's code: zero padding and a kernel truncated at 4 sigma, so a heavy blur
    also darkens the image towards 0 from its borders.
    """
    if x.dim() < 3:
        raise ValueError(f"blurring needs a batch of images (B, ..., H, W), got shape {tuple(x.shape)}.")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}.")
    sigmas = torch.tensor([float(sigma)], dtype=torch.float64)
    return _blurred(x, sigmas, _radius(sigma))[0][0]


def _per_example(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (x.dim() - 1)))


def resolve_baseline(x: torch.Tensor, baseline, seed: int = 0) -> torch.Tensor:
    """The baseline :math:`x'` as a tensor of ``x``'s shape.

    ``baseline`` is a number, a tensor that broadcasts to ``x`` (``(C, H, W)`` for all examples,
    ``(B, C, H, W)`` for one each), or a name:

    * ``"zeros"``: all zeros;
    * ``"blur"``: :func:`gaussian_blur` of ``x`` with ``BLUR_BASELINE_SIGMA`` (5) pixels;
    * ``"uniform"``: uniform noise in each example's ``[min, max]`` range;
    * ``"gaussian"``: ``x`` plus Gaussian noise of std ``NOISE_BASELINE_SIGMA`` (0.15) times each
      example's ``max - min``, clipped to that ``[min, max]`` range so it stays in the data range.

    The random baselines are drawn from a ``torch.Generator`` seeded with ``seed``. Chapter 4
    compares them (after ``sturmfels2020visualizing``).
    """
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; use a tensor, a number or one of {', '.join(BASELINES)}.")
        if baseline == "zeros":
            return torch.zeros_like(x)
        if baseline == "blur":
            return gaussian_blur(x, BLUR_BASELINE_SIGMA)
        generator = torch.Generator().manual_seed(seed)
        low = _per_example(x.flatten(1).amin(1), x)
        high = _per_example(x.flatten(1).amax(1), x)
        if baseline == "uniform":
            u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            return low + (high - low) * u
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return torch.minimum(torch.maximum(x + NOISE_BASELINE_SIGMA * (high - low) * z, low), high)
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float, torch.Tensor)):
        raise TypeError(f"baseline must be a tensor, a number or a name, got {type(baseline).__name__}.")
    reference = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        shape = torch.broadcast_shapes(reference.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise ValueError(
            f"baseline of shape {tuple(reference.shape)} does not broadcast to x's shape {tuple(x.shape)}; "
            "give one baseline per example (B, ...) or one for all (...) without the batch dim.")
    return reference.expand_as(x)


# ---------------------------------------------------------------------------- shared plumbing
def _gradients(model: nn.Module, rows: torch.Tensor, target: Target, times: int,
               batch_size: int | None) -> torch.Tensor:
    """Input gradients of ``times`` blocks of B rows, ``batch_size`` rows per pass: ``(times, B, ...)``."""
    batch = rows.shape[0] // times
    targets = repeat(target, times)
    grads = map_batched(lambda r, s: input_gradient(model, r, take(targets, s))[0], rows, batch_size, batch)
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
    with explaining(model, x):
        reference = resolve_baseline(x, baseline, seed)
        difference = x - reference
        path = reference + _along(alphas, x) * difference
        grads = _gradients(model, path.flatten(0, 1), target, steps, batch_size)
        attributions = difference * (_along(weights, x) * grads).sum(0)
        if not return_delta:
            return attributions
        targets = repeat(target, 2)
        with torch.no_grad():
            scores = map_batched(lambda r, s: select(model(r), take(targets, s)), torch.cat([x, reference]),
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


def expected_gradients(model: nn.Module, x: torch.Tensor, target: Target, *, references: torch.Tensor,
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
        references: ``(R, ...)``, a sample of the data distribution :math:`D`.
        samples: draws per example. seed: seeds a ``torch.Generator`` for all draws.
        batch_size: rows per model pass (of the ``samples * B`` rows); default ``B``.

    References: ``erion2021improving``, ``lundberg2017unified``. Chapter 4.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}.")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}.")
    with explaining(model, x):
        if not isinstance(references, torch.Tensor) or references.shape[1:] != x.shape[1:] or len(references) == 0:
            got = tuple(references.shape) if isinstance(references, torch.Tensor) else type(references).__name__
            raise ValueError(f"references must be a non-empty tensor of shape (R, *x.shape[1:]) = "
                             f"(R, {', '.join(map(str, x.shape[1:]))}), got {got}.")
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
    if max_sigma <= 0:
        raise ValueError(f"max_sigma must be > 0, got {max_sigma}.")
    alphas, weights = integration_rule(rule, steps)
    with explaining(model, x):
        if x.dim() < 3:
            raise ValueError(f"blur_ig needs a batch of images (B, ..., H, W), got shape {tuple(x.shape)}.")
        path, velocity = _blurred(x, max_sigma * alphas, _radius(max_sigma))
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
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    if not 0 < fraction <= 1 or not 0 <= max_dist <= 1:
        raise ValueError(f"need 0 < fraction <= 1 and 0 <= max_dist <= 1, got {fraction} and {max_dist}.")
    with explaining(model, x):
        start = resolve_baseline(x, baseline, seed).flatten(1).double()
        end = x.flatten(1).double()
        difference = end - start
        l1_total = difference.abs().sum(1)
        kth = int(fraction * (end.shape[1] - 1)) + 1  # numpy's quantile(..., method="lower")
        point, attributions = start.clone(), torch.zeros_like(end)
        for step in range(1, steps + 1):
            grad = map_batched(lambda r, s: input_gradient(model, r, take(target, s))[0],
                               point.to(x.dtype).view(x.shape), batch_size, len(x)).flatten(1).double()
            alpha = step / steps
            alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
            low, high = start + alpha_min * difference, start + alpha_max * difference
            l1_target = l1_total * (1 - alpha)
            moving = l1_total > 0
            while moving.any():
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
        return attributions.to(x.dtype).view(x.shape)
