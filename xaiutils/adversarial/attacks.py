r"""Attacks on predictions: the fast gradient sign method and projected gradient descent (chapter 13).

Both maximise the loss :math:`\ell(f(x'), y)` of the true class ``y`` (or, ``targeted=True``,
minimise the loss of a chosen class ``y``) over the :math:`\epsilon`-ball around ``x``,

.. math:: \max_{\|x' - x\|_p \le \epsilon,\; x' \in [a, b]^d} \ell(f(x'), y), \qquad p \in \{\infty, 2\},

where :math:`[a, b]` is the valid input range (``clamp``; the book's images live in ``[0, 1]``).
The loss is the cross-entropy of the logits by default; ``loss_fn(output, y) -> (B,)`` may replace
it. Every example is attacked on its own: the gradient of example ``b`` is that of its own loss
(the per-example losses are summed, never averaged over the batch).

The model is attacked in eval mode with its parameters frozen, and restored afterwards, by the
same context manager that the attribution methods use
(:func:`xaiutils.core.model_state.explaining`).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..core.batching import map_batched
from ..core.checks import check_int
from ..core.model_state import explaining
from ..core.targets import as_index, rows_of

NORMS = ("linf", "l2")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _cross_entropy(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, y, reduction="none")


def _check(x: torch.Tensor, epsilon: float, norm: str, clamp: tuple[float, float] | None) -> None:
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0 (the radius of the ball), got {epsilon!r}.")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}.")
    if clamp is not None:
        low, high = clamp
        if not low < high:
            raise ValueError(f"clamp must be (low, high) with low < high, got {clamp!r}.")
        if isinstance(x, torch.Tensor) and x.numel() and (x.min() < low or x.max() > high):
            raise ValueError(
                f"x has values in [{x.min().item():.4g}, {x.max().item():.4g}], outside clamp={clamp}: the attack "
                "could not stay both in the epsilon-ball and in the input range. Pass the valid range as clamp "
                "(or clamp=None).")


def _per_example_norm(t: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each example, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *[1] * (t.dim() - 1))


def _direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    r"""The steepest-ascent step of unit size: :math:`\operatorname{sign}(g)` (L-inf) or :math:`g / \|g\|_2` (L2)."""
    if norm == "linf":
        return grad.sign()
    return grad / _per_example_norm(grad).clamp_min(torch.finfo(grad.dtype).tiny)


def project(delta: torch.Tensor, epsilon: float, norm: str) -> torch.Tensor:
    """The closest perturbation to ``delta`` (per example) with norm at most ``epsilon``."""
    if norm == "linf":
        return delta.clamp(-epsilon, epsilon)
    scale = (epsilon / _per_example_norm(delta).clamp_min(torch.finfo(delta.dtype).tiny)).clamp(max=1.0)
    return delta * scale


def _bound(x: torch.Tensor, clamp: tuple[float, float] | None) -> torch.Tensor:
    return x if clamp is None else x.clamp(*clamp)


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  loss_fn: LossFn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(d/dx sum_b loss_b, loss)``: the gradient of each example's loss and the ``(B,)`` losses.

    Call it inside :func:`~xaiutils.core.model_state.explaining` (it does not touch the
    model's state). ``y`` may be an int or a ``(B,)`` tensor of class indices.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        output = model(x)
        y = as_index(y, x.shape[0], output.shape[-1], x.device)
        loss = (loss_fn or _cross_entropy)(output, y)
        if loss.shape != x.shape[:1]:
            raise ValueError(f"loss_fn must return one loss per example, shape {tuple(x.shape[:1])}, "
                             f"got {tuple(loss.shape)}.")
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return grad, loss.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y, *, epsilon: float, norm: str = "linf", targeted: bool = False,
         clamp: tuple[float, float] | None = (0.0, 1.0), loss_fn: LossFn | None = None,
         batch_size: int | None = None) -> torch.Tensor:
    r"""The fast gradient sign method: one step of size :math:`\epsilon` up the loss.

    .. math:: x' = \operatorname{clip}_{[a, b]}\big(x + s\,\epsilon\,\operatorname{sign}(\nabla_x \ell(f(x), y))\big),

    with :math:`s = +1` (untargeted: ``y`` is the true class) or :math:`s = -1` (``targeted``:
    ``y`` is the class to reach). With ``norm="l2"`` the step is
    :math:`\epsilon\, \nabla_x\ell / \|\nabla_x\ell\|_2` (the "fast gradient method").

    Args:
        model: the classifier (attacked in eval mode, restored afterwards).
        x: input batch, values inside ``clamp``.
        y: an int or a ``(B,)`` tensor: the true classes, or the target classes if ``targeted``.
        epsilon: the size of the step, >= 0.
        norm: ``"linf"`` or ``"l2"``.
        targeted: move towards class ``y`` instead of away from it.
        clamp: the valid input range ``(low, high)``, or ``None``.
        loss_fn: ``(output, y) -> (B,)`` losses; default: cross-entropy of the logits.
        batch_size: at most this many examples per pass (default: the whole batch).

    Returns:
        The adversarial batch, ``x``'s shape, detached.

    Captum's ``FGSM`` skips gradient entries with :math:`|g_i| \le 10^{-6}`; this function steps
    wherever :math:`g_i \ne 0`. Reference: ``goodfellow2015explaining``. Chapter 13.
    """
    _check(x, epsilon, norm, clamp)
    sign = -1.0 if targeted else 1.0
    with explaining(model, x, y):
        def one(rows: torch.Tensor, s: slice) -> torch.Tensor:
            grad, _ = loss_gradient(model, rows, rows_of(y, s), loss_fn)
            return _bound(rows + sign * epsilon * _direction(grad, norm), clamp)

        return map_batched(one, x.detach(), batch_size, x.shape[0])


def random_start_point(x: torch.Tensor, epsilon: float, norm: str, seed: int = 0) -> torch.Tensor:
    r"""A uniformly random perturbation in the :math:`\epsilon`-ball, one per example, seeded.

    L-inf: uniform on :math:`[-\epsilon, \epsilon]^d`. L2: uniform in the ball (a Gaussian direction
    scaled to radius :math:`\epsilon u^{1/d}`, :math:`u \sim U(0, 1)`).
    """
    generator = torch.Generator().manual_seed(seed)
    if norm == "linf":
        delta = (2 * torch.rand(x.shape, generator=generator, dtype=x.dtype) - 1) * epsilon
    else:
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        direction = direction / _per_example_norm(direction)
        d = x[0].numel()
        radius = epsilon * torch.rand(x.shape[0], generator=generator, dtype=x.dtype) ** (1.0 / d)
        delta = direction * radius.view(-1, *[1] * (x.dim() - 1))
    return delta.to(x.device)


def pgd(model: nn.Module, x: torch.Tensor, y, *, epsilon: float, steps: int = 40, step_size: float | None = None,
        norm: str = "linf", random_start: bool = True, targeted: bool = False,
        clamp: tuple[float, float] | None = (0.0, 1.0), seed: int = 0, loss_fn: LossFn | None = None,
        batch_size: int | None = None) -> torch.Tensor:
    r"""Projected gradient descent (Madry et al.): many small steps, each projected back into the ball.

    Starting from :math:`x^0 = x` (or a uniformly random point of the ball, ``random_start``),

    .. math:: x^{t+1} = \operatorname{clip}_{[a, b]}\Big(x + \Pi_\epsilon\big(x^t + s\,\alpha\, d(\nabla_x
              \ell(f(x^t), y)) - x\big)\Big),

    where :math:`d(g) = \operatorname{sign}(g)` (L-inf) or :math:`g / \|g\|_2` (L2),
    :math:`\Pi_\epsilon` projects onto the :math:`\epsilon`-ball (clipping for L-inf, rescaling for
    L2), :math:`\alpha` is ``step_size`` and :math:`s = \pm 1` as in :func:`fgsm`. Clipping to the
    input range after the projection keeps :math:`x^{t+1}` in the ball, because ``x`` itself
    lies in the range. The last iterate :math:`x^{T}` is returned (as in the paper).

    Args:
        model, x, y, norm, targeted, clamp, loss_fn, batch_size: as in :func:`fgsm`.
        epsilon: the radius of the ball, >= 0.
        steps: the number of gradient steps :math:`T`.
        step_size: :math:`\alpha`; default :math:`2.5\,\epsilon / T`, so that the iterates can cross
            the ball and back (the rule of thumb of Madry et al.).
        random_start: start from a uniformly random point of the ball (:func:`random_start_point`).
        seed: the seed of the random start.

    Returns:
        The adversarial batch, ``x``'s shape, detached.

    Captum's ``PGD`` takes signed steps also for its L2 ball; here an L2 step follows the
    normalised gradient, as in Madry et al. Reference: ``madry2018towards``. Chapter 13.
    """
    _check(x, epsilon, norm, clamp)
    check_int(steps, "steps")
    alpha = 2.5 * epsilon / steps if step_size is None else step_size
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"step_size must be a finite number >= 0, got {step_size!r}.")
    sign = -1.0 if targeted else 1.0
    x = x.detach()
    start = random_start_point(x, epsilon, norm, seed) if random_start else torch.zeros_like(x)
    with explaining(model, x, y):
        def one(rows: torch.Tensor, s: slice) -> torch.Tensor:
            y_rows = rows_of(y, s)
            x_adv = _bound(rows + start[s], clamp)
            for _ in range(steps):
                grad, _ = loss_gradient(model, x_adv, y_rows, loss_fn)
                x_adv = _bound(rows + project(x_adv + sign * alpha * _direction(grad, norm) - rows, epsilon, norm),
                               clamp)
            return x_adv

        return map_batched(one, x, batch_size, x.shape[0])


def robust_accuracy(model: nn.Module, x: torch.Tensor, y, *, epsilon: float, steps: int = 40,
                    batch_size: int | None = 200, **options) -> float:
    """The fraction of ``x`` that ``model`` still classifies as ``y`` after an untargeted :func:`pgd` attack.

    ``options`` go to :func:`pgd` (``norm``, ``step_size``, ``random_start``, ``seed``, ``clamp``).
    With ``epsilon=0`` (and no random start) it is the clean accuracy.
    """
    x_adv = pgd(model, x, y, epsilon=epsilon, steps=steps, batch_size=batch_size, **options)
    with explaining(model, x_adv, y), torch.no_grad():
        predictions = map_batched(lambda rows, s: model(rows).argmax(1), x_adv, batch_size, x.shape[0])
    classes = torch.as_tensor(y, device=predictions.device).long().expand(len(x))  # checked by pgd
    return (predictions == classes).double().mean().item()
