r"""SmoothGrad and its kin: average any attribution method over noisy copies of the input (chapter 5).

For an attribution method :math:`\phi` and noise :math:`\varepsilon_j \sim N(0, \sigma_x^2 I)`,
:math:`j = 1..n`,

.. math:: \text{SmoothGrad: } \frac1n \sum_j \phi(x + \varepsilon_j), \qquad
          \text{SmoothGrad}^2\text{: } \frac1n \sum_j \phi(x + \varepsilon_j)^2, \qquad
          \text{VarGrad: } \frac1n \sum_j \big(\phi(x + \varepsilon_j) - \bar\phi\big)^2,

with :math:`\bar\phi` the SmoothGrad mean (VarGrad is the population variance).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..core.batching import map_batched
from ..core.checks import check_choice, check_int, check_number
from ..core.model_state import explaining
from ..core.targets import Target, repeat, rows_of

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def noisy_copies(x: torch.Tensor, samples: int, sigma: float, seed: int = 0) -> torch.Tensor:
    r"""``samples`` noisy copies of the batch, ``(samples * B, ...)``; rows ``[j*B:(j+1)*B]`` are copy ``j``.

    The noise of example :math:`b` has std :math:`\sigma_x = \sigma\,(\max x_b - \min x_b)`,
    relative to the example's value range (an example of constant value gets no noise), drawn
    from a ``torch.Generator`` seeded with ``seed``.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((samples, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
    flat = x.flatten(1)
    scale = sigma * (flat.amax(1) - flat.amin(1))
    return (x + noise * scale.view(-1, *([1] * (x.dim() - 1)))).flatten(0, 1)


def smoothgrad(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, target: Target, *,
               samples: int = 50, sigma: float = 0.15, kind: str = "smoothgrad", seed: int = 0,
               batch_size: int | None = None, **method_options) -> torch.Tensor:
    r"""Smooth any attribution ``method`` by averaging it over noisy copies of ``x``.

    ``method(model, rows, target, **method_options)`` is called on chunks of the
    ``samples * B`` noisy rows (see :func:`noisy_copies`), each chunk with the matching targets,
    so any method of :mod:`xaiutils.attribution` can be wrapped, integrated gradients included.

    Args:
        method: an attribution method with the common signature, e.g. ``gradient``.
        samples: the number :math:`n` of noisy copies per example.
        sigma: the noise level *relative to each example's range* ``x.max() - x.min()``, as in
            Smilkov et al. (2017), who recommend 0.1--0.2. Captum's ``NoiseTunnel(stdevs=...)``
            takes an absolute std instead: ours equals ``stdevs = sigma * (x.max() - x.min())``.
        kind: ``"smoothgrad"`` (mean), ``"smoothgrad_sq"`` (mean of squares) or ``"vargrad"``
            (variance).
        seed: seeds the noise.
        batch_size: rows per call of ``method`` (and so, for one-pass methods, per model pass);
            default ``B``.
        method_options: keyword options passed on to ``method``.

    Returns:
        The smoothed attributions, with the shape ``method`` returns for ``x``.

    References: ``smilkov2017smoothgrad``, ``hooker2019benchmark`` (SmoothGrad-squared),
    ``adebayo2018local`` (VarGrad). Chapter 5.
    """
    check_choice(kind, "kind", KINDS)
    check_int(samples, "samples")
    check_number(sigma, "sigma", minimum=0, maximum=1e6)
    if not callable(method):
        raise TypeError(f"method must be an attribution function; got {type(method).__name__}.")

    def attribute(rows: torch.Tensor, chunk: slice) -> torch.Tensor:
        result = method(model, rows, rows_of(targets, chunk), **method_options)
        if not isinstance(result, torch.Tensor) or result.shape[:1] != rows.shape[:1]:
            raise TypeError(f"{getattr(method, '__name__', 'method')} must return one attribution tensor per row; "
                            "do not ask it for extra outputs such as return_delta.")
        return result

    with explaining(model, x, target):
        targets = repeat(target, samples)
        maps = map_batched(attribute, noisy_copies(x, samples, sigma, seed), batch_size, len(x))
        maps = maps.view(samples, len(x), *maps.shape[1:])
        if kind == "smoothgrad":
            return maps.mean(0)
        if kind == "smoothgrad_sq":
            return (maps**2).mean(0)
        return maps.var(0, correction=0)
