r"""Robust training recipes: losses that plug into :func:`xaiutils.models.train` (chapters 13 and 18).

Each function returns a ``loss_fn(model, x, y) -> scalar`` for ``train(model, x, y, loss_fn=...)``:

* :func:`adversarial_loss` -- PGD adversarial training, :math:`\min_\theta \mathbb{E}
  \max_{\|\delta\| \le \epsilon} \ell(f_\theta(x + \delta), y)` (Madry et al.);
* :func:`gradient_regularised_loss` -- input-gradient regularisation ("double backpropagation",
  Ross and Doshi-Velez), and with a mask "right for the right reasons" (Ross et al.);
* :func:`noise_augmented_loss` -- the loss on Gaussian-noised inputs.

``train`` puts the model in training mode for the parameter update; these losses keep that
mode for the loss they return. The PGD attack inside :func:`adversarial_loss` runs in **eval
mode** (BatchNorm uses its running statistics and does not update them, dropout is off), as
in Madry et al.'s ``robustness`` library and most later work; the model's modes are restored
before the update. None of these functions saves anything: weights on disk change only
through :func:`xaiutils.zoo.build_weights`.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from .attacks import pgd

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode inside the block; restore every module's own mode afterwards."""
    modes = {m: m.training for m in model.modules()}
    try:
        yield model.eval()
    finally:
        for m, mode in modes.items():
            m.training = mode


def _check_non_negative(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")


def adversarial_loss(epsilon: float, steps: int = 7, step_size: float | None = None, *, norm: str = "linf",
                     random_start: bool = True, clamp: tuple[float, float] | None = (0.0, 1.0),
                     seed: int = 0) -> LossFn:
    r"""PGD adversarial training: the cross-entropy on a PGD adversarial example of each training input.

    .. math:: L(\theta) = \frac1B \sum_b \ell\big(f_\theta(x_b^{\mathrm{adv}}), y_b\big), \qquad
              x_b^{\mathrm{adv}} = \mathrm{PGD}_{\epsilon, T, \alpha}(f_\theta, x_b, y_b).

    The attack (:func:`~xaiutils.adversarial.pgd`, untargeted) runs in eval mode with the
    parameters frozen; the returned loss is computed in the model's own (training) mode. The
    random start of call ``i`` is seeded with ``seed + i``, so a training run is reproducible.

    Args:
        epsilon, steps, step_size, norm, random_start, clamp: as in :func:`~xaiutils.adversarial.pgd`
            (few steps, e.g. 7, are enough for training; the step size defaults to
            :math:`2.5\,\epsilon / T`).
        seed: the seed of the first random start.

    Returns:
        ``loss_fn(model, x, y)`` for :func:`xaiutils.models.train`.

    Reference: ``madry2018towards``. Chapter 13.
    """
    _check_non_negative("epsilon", epsilon)
    calls = 0

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        with eval_mode(model):
            x_adv = pgd(model, x, y, epsilon=epsilon, steps=steps, step_size=step_size, norm=norm,
                        random_start=random_start, clamp=clamp, seed=seed + calls)
        calls += 1
        return F.cross_entropy(model(x_adv), y)

    return loss_fn


def input_gradient_penalty(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, mask=None,
                           of: str = "loss") -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(cross-entropy, penalty)``, both batch means, the penalty differentiable in the parameters.

    ``penalty`` is :math:`\frac1B \sum_b \| m_b \odot \nabla_{x_b} s_b \|_2^2`, where :math:`s_b` is the
    example's cross-entropy (``of="loss"``) or the sum of its log-probabilities over all classes
    (``of="log_probs"``, as in "right for the right reasons"), and :math:`m` is ``mask`` (1 if
    ``None``). The input gradient is taken with ``create_graph=True`` so that the penalty can be
    backpropagated to the parameters: double backpropagation.
    """
    if of not in ("loss", "log_probs"):
        raise ValueError(f"of must be 'loss' or 'log_probs', got {of!r}.")
    x = x.detach().requires_grad_(True)
    output = model(x)
    ce = F.cross_entropy(output, y, reduction="none")
    explained = ce if of == "loss" else F.log_softmax(output, dim=1).sum(1)
    (grad,) = torch.autograd.grad(explained.sum(), x, create_graph=True)
    if mask is not None:
        grad = grad * (mask(x) if callable(mask) else mask).to(grad)
    return ce.mean(), grad.pow(2).flatten(1).sum(1).mean()


def gradient_regularised_loss(lam: float, *, mask: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
                              of: str = "loss") -> LossFn:
    r"""Input-gradient regularisation: cross-entropy plus :math:`\lambda` times the squared input gradient.

    .. math:: L(\theta) = \frac1B \sum_b \Big[\ell\big(f_\theta(x_b), y_b\big)
              + \lambda\, \big\| m_b \odot \nabla_{x_b} s_b \big\|_2^2\Big],

    with :math:`s_b` and :math:`m` as in :func:`input_gradient_penalty`. Without a mask and with
    ``of="loss"`` this is the double backpropagation of Ross and Doshi-Velez (2018): a flatter
    loss surface around the data, smaller and more interpretable input gradients, and some
    robustness. With a ``mask`` of forbidden input regions (1 = the model must not use these
    pixels) and ``of="log_probs"`` it is the "right for the right reasons" loss of Ross et al.
    (2017), which steers a model away from a known shortcut such as the patches of decoy MNIST.

    Args:
        lam: :math:`\lambda \ge 0`.
        mask: a tensor broadcastable to the batch (e.g. ``(1, 1, H, W)``), a callable
            ``x -> mask``, or ``None``.
        of: ``"loss"`` or ``"log_probs"``: whose input gradient is penalised.

    Returns:
        ``loss_fn(model, x, y)`` for :func:`xaiutils.models.train`.

    References: ``ross2018improving``, ``ross2017right``. Chapter 18.
    """
    _check_non_negative("lam", lam)
    if of not in ("loss", "log_probs"):
        raise ValueError(f"of must be 'loss' or 'log_probs', got {of!r}.")

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce, penalty = input_gradient_penalty(model, x, y, mask=mask, of=of)
        return ce + lam * penalty

    return loss_fn


def noise_augmented_loss(sigma: float, *, clamp: tuple[float, float] | None = None, seed: int = 0) -> LossFn:
    r"""Gaussian noise augmentation: train on :math:`x + \varepsilon`, :math:`\varepsilon \sim N(0, \sigma^2 I)`.

    The noise of call ``i`` is drawn from a generator seeded with ``seed + i``. By default the
    noisy input is not clipped (as in randomised smoothing); ``clamp=(0, 1)`` clips it to the
    image range.

    Reference: ``cohen2019certified`` (the training of randomised smoothing). Chapter 13.
    """
    _check_non_negative("sigma", sigma)
    calls = 0

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        generator = torch.Generator().manual_seed(seed + calls)
        calls += 1
        noisy = x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return F.cross_entropy(model(noisy if clamp is None else noisy.clamp(*clamp)), y)

    return loss_fn
