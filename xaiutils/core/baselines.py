r"""One vocabulary for baselines and removals, for attribution and evaluation alike.

A *baseline* :math:`x'` is what an input is compared with (integrated gradients, DeepLIFT,
occlusion, completeness); a *removal* is what a removed feature is replaced with (deletion,
insertion, ROAR, sensitivity-n, infidelity). They are the same thing and take the same values:

* ``"zeros"``: all zeros (black, for images in ``[0, 1]``);
* ``"mean"``: each example's per-channel mean over its pixels (its mean over all entries for
  non-image inputs);
* ``"blur"``: the example blurred by a Gaussian of ``blur_sigma`` pixels (:func:`gaussian_blur`;
  the insertion start of Petsiuk et al., the blur baseline of Sturmfels et al.);
* ``"uniform"``: uniform noise in each example's ``[min, max]`` range (Samek et al.);
* ``"gaussian"``: the example plus Gaussian noise of std ``NOISE_BASELINE_SIGMA`` (0.15) times
  its ``max - min``, clipped to that range;
* a finite number, or a finite tensor that broadcasts to ``x`` (``(C, H, W)`` for every example,
  ``(B, C, H, W)`` for one each).

The random ones are drawn from a ``torch.Generator`` seeded with ``seed``. Chapter 4 compares
them as baselines (after ``sturmfels2020visualizing``), chapter 10 as removals.
"""
from __future__ import annotations

from numbers import Real

import torch

from .checks import check_choice, check_finite, check_number

BASELINES = ("zeros", "mean", "blur", "uniform", "gaussian")
BLUR_BASELINE_SIGMA = 5.0  # pixels: the default of "blur"
NOISE_BASELINE_SIGMA = 0.15  # relative to each example's value range: the "gaussian" baseline


# ---------------------------------------------------------------------------- Gaussian blur
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


def blurred(x: torch.Tensor, sigmas: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` blurred over its last two dims with each sigma, and the derivative in sigma: ``(S, *x.shape)`` each.

    The path of blur integrated gradients (:func:`xaiutils.attribution.paths.blur_ig`).
    """
    kh, dkh = (m.to(x) for m in _blur_matrices(x.shape[-2], sigmas, radius))
    kw, dkw = (m.to(x) for m in _blur_matrices(x.shape[-1], sigmas, radius))
    blur = "sih,b...hw,sjw->sb...ij"
    return (torch.einsum(blur, kh, x, kw),
            torch.einsum(blur, dkh, x, kw) + torch.einsum(blur, kh, x, dkw))


def blur_radius(sigma: float) -> int:
    """The kernel's half-width for a blur of std ``sigma``: scipy.ndimage's ``truncate=4.0``."""
    return int(4 * sigma + 0.5)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x`` blurred over its last two dims by a Gaussian of std ``sigma`` pixels.

    Equals ``scipy.ndimage.gaussian_filter(x, (0, .., sigma, sigma), mode="constant")``, the blur
    of the blur IG paper's code: zero padding and a kernel truncated at 4 sigma, so a heavy blur
    also darkens the image towards 0 from its borders.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a batch of images (B, ..., H, W) to blur; got {shape}.")
    sigma = check_number(sigma, "sigma", minimum=0)
    sigmas = torch.tensor([float(sigma)], dtype=torch.float64)
    return blurred(x, sigmas, blur_radius(sigma))[0][0]


# ---------------------------------------------------------------------------- baselines
def _per_example(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (x.dim() - 1)))


def resolve_baseline(x: torch.Tensor, baseline, *, seed: int = 0, blur_sigma: float = BLUR_BASELINE_SIGMA,
                     name: str = "baseline") -> torch.Tensor:
    """The baseline (or removal) ``baseline`` as a tensor of ``x``'s shape; see the module's vocabulary.

    Args:
        x: the batch ``(B, ...)``.
        baseline: a name of :data:`BASELINES`, a finite number or a finite tensor broadcastable to ``x``.
        seed: seeds the random baselines.
        blur_sigma: the std of ``"blur"``, in pixels.
        name: the argument's name in error messages (``"removal"``, ``"reference"``, ...).
    """
    if isinstance(baseline, str):
        check_choice(baseline, name, BASELINES)
        if baseline == "zeros":
            return torch.zeros_like(x)
        if baseline == "mean":
            return x.mean(tuple(range(2, x.dim())) or 1, keepdim=True).expand_as(x).clone()
        if baseline == "blur":
            check_number(blur_sigma, "blur_sigma", minimum=0, exclusive_minimum=True)
            return gaussian_blur(x, blur_sigma)
        generator = torch.Generator().manual_seed(seed)
        low = _per_example(x.flatten(1).amin(1), x)
        high = _per_example(x.flatten(1).amax(1), x)
        if baseline == "uniform":
            u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            return low + (high - low) * u
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return torch.minimum(torch.maximum(x + NOISE_BASELINE_SIGMA * (high - low) * z, low), high)
    if isinstance(baseline, bool) or not isinstance(baseline, (Real, torch.Tensor)):
        raise TypeError(f"{name} must be a tensor, a number or one of {', '.join(map(repr, BASELINES))}; "
                        f"got {type(baseline).__name__}.")
    reference = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    check_finite(reference, name)
    try:
        shape = torch.broadcast_shapes(reference.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise ValueError(
            f"{name} of shape {tuple(reference.shape)} does not broadcast to x's shape {tuple(x.shape)}; "
            "give one per example (B, ...) or one for all (...) without the batch dim.")
    return reference.expand_as(x)
