r"""Are explanations stable under small input changes? (chapter 12)

Chapter 12 shows that an imperceptible change of the input can change a map completely. These
metrics estimate, by random sampling around each example, how much a method's map moves when the
input moves a little:

* :func:`max_sensitivity` and :func:`avg_sensitivity` (Yeh et al. 2019): the largest / average
  change of the map within a ball of radius :math:`r`;
* :func:`local_lipschitz` (Alvarez-Melis and Jaakkola 2018): the largest ratio of map change to
  input change;
* :func:`relative_input_stability` (Agarwal et al. 2022): the same with *relative* changes of
  map and input, among perturbations that keep the prediction.

One measure here asks the opposite question, how a *model*'s robustness shows in its gradient
(chapter 13): :func:`alignment` (Etmann et al. 2019), the cosine between an input and the
gradient of its class score. Higher means better aligned.

Every metric takes the attribution ``method`` itself (it must be re-run on the perturbed
inputs), with the common signature ``method(model, x, target, **options)``. The ``samples``
perturbed copies of the batch are stacked in block layout (rows ``[k*B:(k+1)*B]`` are sample
``k``) and explained ``batch_size`` rows per call (default ``B``). Lower is better for all four.
Noise comes from a ``torch.Generator`` seeded with ``seed``: :func:`noise` gives the exact draws.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..core.batching import chunks
from ..core.checks import check_input, check_int, check_number, check_positive
from ..core.model_state import explaining
from ..core.targets import Target
from ..attribution.gradients import gradient
from ..attribution.embeddings import is_token_ids
from ._utils import attributions_of_rows

NOISES = ("uniform", "gaussian")


def noise(x: torch.Tensor, samples: int, kind: str = "uniform", scale: float = 0.02, seed: int = 0) -> torch.Tensor:
    r"""The input perturbations :math:`\delta`, ``(samples, *x.shape)``: the perturbed inputs are :math:`x + \delta`.

    ``"uniform"``: :math:`\delta_i \sim U(-r, r)` with :math:`r` = ``scale`` (the :math:`L_\infty`
    ball of radius :math:`r`, as Captum's and Quantus' default); ``"gaussian"``:
    :math:`\delta_i \sim N(0, \sigma^2)` with :math:`\sigma` = ``scale``.
    """
    check_int(samples, "samples")
    check_number(scale, "scale (radius or sigma)", minimum=0)
    generator = torch.Generator().manual_seed(seed)
    shape = (samples, *x.shape)
    if kind == "uniform":
        draws = scale * (2 * torch.rand(shape, generator=generator, dtype=x.dtype) - 1)
    elif kind == "gaussian":
        draws = scale * torch.randn(shape, generator=generator, dtype=x.dtype)
    else:
        raise ValueError(f"unknown noise {kind!r}; choose one of {', '.join(NOISES)}.")
    return draws.to(x.device)


def _maps(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, target: Target,
          delta: torch.Tensor, batch_size: int | None, progress: bool, options: dict):
    """The map at ``x`` ``(B, ...)`` and at every ``x + delta`` ``(S, B, ...)``."""
    check_input(x)
    if not callable(method):
        raise TypeError(f"method must be an attribution function, got {type(method).__name__}.")
    original = method(model, x, target, **options).detach()
    rows = (x + delta).flatten(0, 1)
    perturbed = attributions_of_rows(method, model, rows, target, len(delta), batch_size=batch_size,
                                     progress=progress, desc="explaining perturbed inputs", **options)
    if perturbed.shape[1:] != original.shape:
        raise ValueError("the method returned maps of different shapes for the original and perturbed inputs.")
    return original, perturbed


def _feature_norm(t: torch.Tensor, p: float, batch_dims: int) -> torch.Tensor:
    """The ``p``-norm over all dims after the first ``batch_dims``."""
    return torch.linalg.vector_norm(t.flatten(batch_dims), ord=p, dim=-1)


def _refuse_token_ids(x, scale: float) -> None:
    if is_token_ids(x):
        raise TypeError(f"the robustness metrics add noise of scale {scale} around x; x holds token ids (dtype "
                        f"{x.dtype}), which have no such neighbourhood. They are not defined for token ids here; the "
                        "faithfulness metrics (deletion, insertion, infidelity with perturbation='subset') remove "
                        "tokens instead.")


def _sensitivities(method, model, x, target, radius, samples, p, relative, seed, batch_size, progress, options):
    _refuse_token_ids(x, radius)
    check_number(radius, "radius", minimum=0)
    delta = noise(x, samples, "uniform", radius, seed)
    original, perturbed = _maps(method, model, x, target, delta, batch_size, progress, options)
    change = _feature_norm(perturbed - original, p, 2)
    if relative:
        size = _feature_norm(original, p, 1)
        change = change / torch.where(size == 0, torch.ones_like(size), size)
    return change


def max_sensitivity(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, target: Target, *,
                    radius: float = 0.02, samples: int = 10, p: float = 2, relative: bool = True, seed: int = 0,
                    batch_size: int | None = None, progress: bool = False, **options) -> torch.Tensor:
    r"""Max-sensitivity: the largest change of the map within the :math:`L_\infty` ball of radius ``radius``.

    .. math:: \mathrm{SENS}_{\max}(\Phi, x) = \max_{\|\delta\|_\infty \le r}
              \frac{\|\Phi(x + \delta) - \Phi(x)\|_p}{\|\Phi(x)\|_p},

    estimated with ``samples`` uniform draws of :math:`\delta` (:func:`noise`). Yeh et al. define
    it without the denominator (``relative=False``); Captum's ``sensitivity_max`` and Quantus'
    ``MaxSensitivity`` divide by :math:`\|\Phi(x)\|` (``relative=True``, the default; a zero map
    divides by 1, as Captum). With ``p=2`` (Frobenius norm) it equals
    ``captum.metrics.sensitivity_max`` given the same perturbations (checked in the tests).

    ``options`` are passed to ``method``. Model passes: ``B + samples * B`` explanations.
    Returns ``(B,)``. Reference: ``yeh2019fidelity``. Chapter 12.
    """
    return _sensitivities(method, model, x, target, radius, samples, p, relative, seed, batch_size, progress,
                          options).amax(0)


def avg_sensitivity(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, target: Target, *,
                    radius: float = 0.02, samples: int = 10, p: float = 2, relative: bool = True, seed: int = 0,
                    batch_size: int | None = None, progress: bool = False, **options) -> torch.Tensor:
    r"""Average sensitivity: as :func:`max_sensitivity` with the mean over the draws instead of the maximum.

    .. math:: \mathrm{SENS}_{\mathrm{avg}}(\Phi, x) = \mathbb{E}_{\delta \sim U(-r, r)}
              \frac{\|\Phi(x + \delta) - \Phi(x)\|_p}{\|\Phi(x)\|_p}

    Returns ``(B,)``. Reference: ``yeh2019fidelity``. Chapter 12.
    """
    return _sensitivities(method, model, x, target, radius, samples, p, relative, seed, batch_size, progress,
                          options).mean(0)


def local_lipschitz(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, target: Target, *,
                    sigma: float = 0.1, samples: int = 10, noise_kind: str = "gaussian", p_map: float = 2,
                    p_input: float = 2, seed: int = 0, batch_size: int | None = None, progress: bool = False,
                    **options) -> torch.Tensor:
    r"""Local Lipschitz estimate: the largest ratio of map change to input change near :math:`x`.

    .. math:: \hat L(x) = \max_{x' \in N(x)} \frac{\|\Phi(x) - \Phi(x')\|_{p_{\text{map}}}}
              {\|x - x'\|_{p_{\text{input}}}},

    over ``samples`` neighbours :math:`x' = x + \delta` (:func:`noise` of kind ``noise_kind``,
    scale ``sigma``). Alvarez-Melis and Jaakkola define the maximum over a neighbourhood with
    :math:`L_2` norms; we estimate it by random sampling, as Quantus' ``LocalLipschitzEstimate``,
    whose defaults (Gaussian noise of std 0.1, :math:`L_2` norms) are ours; it adds
    :math:`10^{-10}` to the denominator.
    Returns ``(B,)``. Reference: ``alvarezmelis2018robustness``. Chapter 12.
    """
    _refuse_token_ids(x, sigma)
    delta = noise(x, samples, noise_kind, sigma, seed)
    original, perturbed = _maps(method, model, x, target, delta, batch_size, progress, options)
    ratio = _feature_norm(perturbed - original, p_map, 2) / _feature_norm(delta, p_input, 2)
    return ratio.amax(0)


def relative_input_stability(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor,
                             target: Target, *, sigma: float = 0.05, samples: int = 10,
                             noise_kind: str = "gaussian", p: float = 2, eps_min: float = 1e-6,
                             same_prediction: bool = True, seed: int = 0, batch_size: int | None = None,
                             progress: bool = False, **options) -> torch.Tensor:
    r"""Relative input stability (RIS): relative change of the map per relative change of the input.

    .. math:: \mathrm{RIS}(x) = \max_{x'} \frac{\big\| (\Phi(x) - \Phi(x')) / \Phi(x) \big\|_p}
              {\max\big(\| (x - x') / x \|_p,\ \epsilon_{\min}\big)},

    with element-wise divisions (a zero in :math:`\Phi(x)` or :math:`x` is replaced by
    :math:`\epsilon_{\min}`, as Quantus does), over ``samples`` neighbours :math:`x' = x +
    \delta` (:func:`noise`) that keep the predicted class (``same_prediction=True``, as Agarwal
    et al. require). Neighbours that change the prediction are ignored; if all do, the value is
    NaN. (Quantus' ``RelativeInputStability`` returns NaN as soon as *one* neighbour changes the
    prediction, and adds :math:`\epsilon_{\min}` only to a zero denominator.) On images with
    many exact zeros (the MNIST background) the relative input change :math:`\delta / x` is huge
    there, so RIS comes out small; compare methods on the same data only.

    Returns ``(B,)``. Reference: ``agarwal2022rethinking``. Chapter 12.
    """
    check_positive(eps_min, "eps_min")
    _refuse_token_ids(x, sigma)
    delta = noise(x, samples, noise_kind, sigma, seed)
    original, perturbed = _maps(method, model, x, target, delta, batch_size, progress, options)

    def safe(t: torch.Tensor) -> torch.Tensor:
        return torch.where(t == 0, torch.full_like(t, eps_min), t)

    map_change = _feature_norm((original - perturbed) / safe(original), p, 2)
    input_change = _feature_norm(delta / safe(x), p, 2).clamp_min(eps_min)
    ris = map_change / input_change
    if same_prediction:
        with explaining(model, x):
            rows = torch.cat([x[None], x + delta]).flatten(0, 1)
            with torch.no_grad():
                predicted = torch.cat([model(rows[s]).argmax(1) for s in chunks(len(rows), batch_size, len(x))])
        predicted = predicted.view(samples + 1, len(x))
        ris = torch.where(predicted[1:] == predicted[0], ris, torch.full_like(ris, float("nan")))
    best = torch.where(torch.isnan(ris), torch.full_like(ris, -float("inf")), ris).amax(0)
    return torch.where(torch.isnan(ris).all(0), torch.full_like(best, float("nan")), best)


def alignment(model: nn.Module, x: torch.Tensor, target: Target, *, batch_size: int | None = None) -> torch.Tensor:
    r"""Etmann et al.'s alignment of each input with the gradient of its class score.

    .. math:: \alpha(x) = \frac{\big|\langle x, \nabla_x \Psi(x) \rangle\big|}{\|x\|_2\, \|\nabla_x \Psi(x)\|_2}
              \in [0, 1],

    the absolute cosine of the angle between the input :math:`x` and the gradient of the score
    :math:`\Psi` of class ``target`` (its logit: :func:`~xaiutils.attribution.gradients.gradient`). A map equal
    to the input, or to a positive or negative multiple of it, has alignment 1; a gradient
    orthogonal to the input has 0. For a ReLU network without biases :math:`\langle x, \nabla_x
    \Psi\rangle = \Psi(x)`, so :math:`\alpha(x)` is :math:`|\Psi(x)|` over :math:`\|x\|\,\|\nabla_x
    \Psi\|`, which for a linear binary classifier is the distance to the decision boundary
    divided by :math:`\|x\|`: Etmann et al. show that alignment grows with robustness. An input or
    a gradient that is zero gives ``nan`` (the angle is undefined).

    Args:
        model: a classifier; x: inputs ``(B, ...)``; target: the class of each row (a ``Target``).
        batch_size: rows per gradient pass (default: the whole batch).

    Returns:
        ``(B,)``, detached. Reference: ``etmann2019connection``. Chapter 13.
    """
    g = gradient(model, x, target, batch_size=batch_size).detach().flatten(1)
    flat = x.detach().flatten(1)
    return (flat * g).sum(1).abs() / (flat.norm(dim=1) * g.norm(dim=1))
