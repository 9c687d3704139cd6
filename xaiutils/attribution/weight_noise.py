r"""NoiseGrad and FusionGrad: average any attribution method over copies of the model with noisy weights.

SmoothGrad (:mod:`.noise`) perturbs the input; NoiseGrad perturbs the model (Bykov et al., 2022,
``bykov2022noisegrad``). For an attribution method :math:`\phi` and a model :math:`f(\cdot\,; W)`, draw
:math:`n` copies whose every parameter is multiplied, entry by entry, by its own Gaussian noise of mean 1:

.. math:: W_j = W \odot \eta_j, \quad \eta_j \sim N(1, \sigma^2 I), \qquad
          \text{NoiseGrad: } \frac1n \sum_{j=1}^n \phi\big(x; f(\cdot\,; W_j)\big), \qquad
          \text{FusionGrad: } \frac1{nm} \sum_{j=1}^n \sum_{k=1}^m \phi\big(x + \varepsilon_k; f(\cdot\,; W_j)\big),

with :math:`\varepsilon_k` the input noise of SmoothGrad (:func:`.noise.noisy_copies`). Multiplicative
noise makes :math:`\sigma` relative: a weight :math:`w` gets noise of std :math:`\sigma |w|`, so one
:math:`\sigma` fits every layer whatever its scale, and :math:`E[W_j] = W`.

*What is perturbed.* Every tensor of ``model.parameters()``: weights, biases, and the affine
weight and bias of normalisation layers, as in the authors' code (which multiplies every
``model.parameters()`` tensor in place). Buffers are not parameters and are left as they are
(BatchNorm's running mean and variance). The user's model is never written: the noise goes into
one deep copy (one extra copy of the parameters and buffers in memory, under 0.4 MB for the zoo's
models), refilled from the original for every sample, and each perturbed copy is explained inside
:func:`~xaiutils.core.model_state.explaining` like any model.

*Choosing sigma.* The paper picks :math:`\sigma` so that the perturbed models lose about 5% of
the original's accuracy (relative); the authors' code defaults to 0.2, as we do. Chapter 5
teaches SmoothGrad; this module is its weight-space twin.
"""
from __future__ import annotations

import copy
import inspect
from functools import partial
from typing import Callable

import torch
from torch import nn

from ..core.batching import map_batched
from ..core.checks import check_int, check_number, describe
from ..core.model_state import explaining
from ..core.targets import Target, rows_of
from .noise import smoothgrad


def _check(method, samples, sigma, seed, prefix: str = "") -> None:
    if not callable(method):
        raise TypeError(f"method must be an attribution function such as gradient; got {describe(method)}.")
    check_int(samples, f"{prefix}samples")
    check_number(sigma, f"{prefix}sigma", minimum=0, maximum=1e6)
    check_number(seed, "seed", minimum=0, maximum=2**63 - 1, integer=True)


def perturb_weights(noisy: nn.Module, model: nn.Module, sigma: float, generator: torch.Generator) -> None:
    r"""Set every parameter of ``noisy`` (a deep copy of ``model``) to ``model``'s times :math:`1 + \sigma z`.

    :math:`z \sim N(0, 1)` is drawn per entry from ``generator`` in the parameter's dtype, on the
    CPU, parameter by parameter in ``model.parameters()`` order (shared parameters once). ``model``
    is only read; buffers are not touched.
    """
    with torch.no_grad():
        for p_noisy, p in zip(noisy.parameters(), model.parameters()):
            z = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
            p_noisy.copy_(p * (1 + sigma * z))


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` without its gradients, to perturb or sample (the original is only read).

    Public because the uncertainty samplers (:mod:`xaiutils.evaluation.uncertainty`) copy models the same way.
    """
    try:
        noisy = copy.deepcopy(model)
    except Exception as error:  # a model holding something that cannot be copied (a lock, a file)
        raise TypeError(f"model must be copyable with copy.deepcopy to perturb its weights; got "
                        f"{type(model).__name__}, whose copy failed with {type(error).__name__}: {error}") from error
    for p in noisy.parameters():
        p.grad = None  # the copy needs no gradients of the original's
    return noisy


def rebind_layers(options: dict, model: nn.Module, noisy: nn.Module) -> dict:
    """Options naming a module of ``model`` (``layer=model.block3``) name the same module of the copy."""
    names = {id(m): name for name, m in model.named_modules()}
    return {key: noisy.get_submodule(names[id(value)]) if isinstance(value, nn.Module) and id(value) in names
            else value for key, value in options.items()}


def _takes_batch_size(method: Callable) -> bool:
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "batch_size" or p.kind is p.VAR_KEYWORD for p in parameters)


def call_batched(method: Callable, model: nn.Module, x: torch.Tensor, target: Target, batch_size: int | None,
                 options: dict) -> torch.Tensor:
    """``method(model, x, target, **options)``; ``batch_size`` is passed on if ``method`` takes one,
    otherwise ``x`` is cut into blocks of ``batch_size`` rows here."""
    if batch_size is None:
        result = method(model, x, target, **options)
    elif _takes_batch_size(method):
        result = method(model, x, target, batch_size=batch_size, **options)
    else:
        result = map_batched(lambda rows, s: method(model, rows, rows_of(target, s), **options), x, batch_size, len(x))
    if not isinstance(result, torch.Tensor) or result.shape[:1] != x.shape[:1]:
        raise TypeError(f"{getattr(method, '__name__', 'method')} must return one attribution tensor per example; "
                        f"got {describe(result)} for x of shape {tuple(x.shape)}.")
    return result


def _maps(method, model, x, target, samples, sigma, seed, batch_size, options) -> torch.Tensor:
    """The maps of the perturbed models, ``(samples, ...)``; one map ``(1, ...)`` when ``sigma == 0``."""
    _check(method, samples, sigma, seed)
    with explaining(model, x, target):
        if sigma == 0:  # every copy would be the model itself: one map is the exact mean
            return call_batched(method, model, x, target, batch_size, options).unsqueeze(0)
        noisy = copy_model(model)  # made inside explaining: eval mode, no requires_grad, out-of-place activations
        options = rebind_layers(options, model, noisy)
        generator = torch.Generator().manual_seed(seed)
        maps = []
        for _ in range(samples):
            perturb_weights(noisy, model, sigma, generator)
            maps.append(call_batched(method, noisy, x, target, batch_size, options))
        return torch.stack(maps)


def weight_noise_samples(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, target: Target, *,
                         samples: int = 10, sigma: float = 0.2, seed: int = 0, batch_size: int | None = None,
                         **method_options) -> torch.Tensor:
    r"""The maps :math:`\phi(x; f(\cdot\,; W \odot \eta_j))`, :math:`j = 1..n`, one per perturbed model.

    The samples behind :func:`noisegrad` (their mean), kept so that their spread can be studied:
    ``maps.mean(0)`` is NoiseGrad, ``maps.std(0)`` the per-feature uncertainty of the explanation
    under weight noise. For FusionGrad's samples, wrap SmoothGrad:
    ``weight_noise_samples(partial(smoothgrad, gradient, samples=m, sigma=s), model, x, target)``.

    Args:
        method: an attribution method with the common signature, e.g. ``gradient``.
        samples: the number :math:`n` of perturbed models.
        sigma: the std of the multiplicative noise :math:`\eta \sim N(1, \sigma^2)`, relative to each
            parameter entry. At 0 every copy is the model itself.
        seed: seeds the weight noise (a ``torch.Generator`` of its own; torch's global state is untouched).
        batch_size: passed to ``method`` if it takes one (at most that many rows per model pass);
            otherwise ``x`` is split into blocks of that many rows. Default: ``method``'s own.
        method_options: keyword options passed on to ``method``; a module of ``model`` given as an
            option (``layer=model.block3``) is replaced by the same module of the perturbed copy.

    Returns:
        ``(samples, *shape)``, where ``shape`` is what ``method`` returns for ``x`` (``x``'s shape for
        input-space methods).

    References: ``bykov2022noisegrad``.
    """
    maps = _maps(method, model, x, target, samples, sigma, seed, batch_size, method_options)
    return maps.expand(samples, *maps.shape[1:]).clone()


def noisegrad(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, target: Target, *,
              samples: int = 10, sigma: float = 0.2, seed: int = 0, batch_size: int | None = None,
              **method_options) -> torch.Tensor:
    r"""NoiseGrad: the mean of ``method``'s maps over ``samples`` models with weights :math:`W \odot \eta_j`.

    :math:`\frac1n \sum_j \phi(x; f(\cdot\,; W \odot \eta_j))`, :math:`\eta_j \sim N(1, \sigma^2 I)` on
    every parameter (weights, biases, normalisation scales and shifts; not buffers). With
    ``sigma=0`` it is exactly ``method(model, x, target, **method_options)``. Arguments as in
    :func:`weight_noise_samples`, whose mean this is.

    Returns:
        The averaged map, with the shape ``method`` returns for ``x``.

    References: ``bykov2022noisegrad`` (NoiseGrad); its input-space twin is ``smilkov2017smoothgrad``.
    """
    return _maps(method, model, x, target, samples, sigma, seed, batch_size, method_options).mean(0)


def fusiongrad(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, target: Target, *,
               samples: int = 10, input_samples: int = 10, sigma: float = 0.2, input_sigma: float = 0.15,
               seed: int = 0, batch_size: int | None = None, **method_options) -> torch.Tensor:
    r"""FusionGrad: NoiseGrad of SmoothGrad, the mean over ``samples`` perturbed models x ``input_samples`` inputs.

    :math:`\frac1{nm} \sum_j \sum_k \phi(x + \varepsilon_k; f(\cdot\,; W \odot \eta_j))`: each
    perturbed model (as in :func:`noisegrad`, weight noise ``sigma`` seeded by ``seed``) is explained
    by :func:`~xaiutils.attribution.noise.smoothgrad` with ``input_samples`` copies of ``x`` whose
    noise std is ``input_sigma`` times each example's value range, also seeded by ``seed``.

    Every perturbed model sees the same ``input_samples`` noisy inputs (common random numbers).
    The authors' code draws fresh input noise for each model; the expectation is the same, but our
    input-noise average is over ``input_samples`` draws, not ``samples * input_samples``. In
    exchange the two noises separate exactly: with ``input_sigma=0`` FusionGrad is NoiseGrad of the
    same ``samples, sigma, seed``, and with ``sigma=0`` it is SmoothGrad of the same
    ``input_samples, input_sigma, seed``.

    Args:
        samples, sigma: the weight noise, as in :func:`noisegrad`.
        input_samples, input_sigma: the input noise, as ``samples, sigma`` of ``smoothgrad``.
        seed: seeds both noises.
        batch_size: as in ``smoothgrad``: rows per call of ``method`` (per model).
        method_options: keyword options passed on to ``method``.

    Returns:
        The averaged map, with the shape ``method`` returns for ``x``.

    References: ``bykov2022noisegrad`` (FusionGrad), ``smilkov2017smoothgrad``.
    """
    _check(method, input_samples, input_sigma, seed, prefix="input_")
    if input_sigma == 0:  # every noisy input would be x itself
        return noisegrad(method, model, x, target, samples=samples, sigma=sigma, seed=seed, batch_size=batch_size,
                         **method_options)
    smoothed = partial(smoothgrad, method, samples=input_samples, sigma=input_sigma, seed=seed)
    smoothed.__name__ = f"smoothgrad({getattr(method, '__name__', 'method')})"
    return noisegrad(smoothed, model, x, target, samples=samples, sigma=sigma, seed=seed, batch_size=batch_size,
                     **method_options)
