r"""Training for robust attributions: robust attribution regularisation (Chen et al. 2019; chapter 13).

Adversarial training (:func:`~xaiutils.adversarial.training.adversarial_loss`) asks that the
*prediction* not change in an :math:`\epsilon`-ball around each training input. Chen et al. ask the
same of the *attribution*: the integrated gradients of the loss from the clean input :math:`x` to a
nearby :math:`x'`, which by completeness add up to the change of the loss,

.. math:: \mathrm{IG}^{\ell_y}_i(x, x') = (x'_i - x_i) \int_0^1
          \frac{\partial \ell_y\big(x + \alpha (x' - x)\big)}{\partial x_i}\, d\alpha, \qquad
          \sum_i \mathrm{IG}^{\ell_y}_i(x, x') = \ell_y(x') - \ell_y(x),

with :math:`\ell_y(z)` the cross-entropy of class :math:`y` at input :math:`z`, must stay small for
every :math:`x'` in the ball. Their two objectives are

.. math:: \text{IG-NORM:}\quad \min_\theta \mathbb{E}_{(x, y)} \Big[\ell_y(x)
          + \lambda \max_{\|x' - x\|_\infty \le \epsilon} \big\|\mathrm{IG}^{\ell_y}(x, x')\big\|_1\Big],

.. math:: \text{IG-SUM-NORM:}\quad \min_\theta \mathbb{E}_{(x, y)} \max_{\|x' - x\|_\infty \le \epsilon}
          \Big[\ell_y(x') + \lambda \big\|\mathrm{IG}^{\ell_y}(x, x')\big\|_1\Big].

IG-SUM-NORM with :math:`\lambda = 0` is adversarial training. As in the authors' code, the integral
is the right Riemann sum over :math:`\alpha = k/m`, :math:`k = 1..m`, and the inner maximum is
found by signed gradient steps projected on the ball (PGD) from a random start, with a coarser sum
(fewer :math:`\alpha`) inside the attack. The attack differentiates the attribution with respect to
:math:`x'` and the training loss differentiates it with respect to the parameters, so both need
second derivatives (``create_graph=True``), as double backpropagation does.

Reference: ``chen2019robust``. Chapter 13.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..core.checks import check_choice, check_input, check_int, check_number, check_same_batch
from ..core.model_state import explaining
from .attacks import _bound, _check, project, random_start_point
from .training import LossFn, eval_mode

OBJECTIVES = ("ig-norm", "ig-sum-norm")


def loss_integrated_gradients(model: nn.Module, x: torch.Tensor, x_prime: torch.Tensor, y: torch.Tensor, *,
                              steps: int = 10, create_graph: bool = False) -> torch.Tensor:
    r""":math:`\mathrm{IG}^{\ell_y}(x, x')`: integrated gradients of the cross-entropy from ``x`` to ``x_prime``.

    The right Riemann sum :math:`(x' - x) \odot \frac1m \sum_{k=1}^m \nabla \ell_y(x + \tfrac km (x' - x))`,
    all :math:`m` = ``steps`` path points of the batch in one pass. The clean input ``x`` is the
    baseline, so the sum of the map approaches :math:`\ell_y(x') - \ell_y(x)` as ``steps`` grows.
    With ``create_graph=True`` the result can be differentiated again, with respect to
    ``x_prime`` (the attack) or the parameters (the training loss). It does not change the
    model's mode; call it inside :func:`~xaiutils.core.model_state.explaining` to explain.

    Returns the map, ``x``'s shape. Reference: ``chen2019robust`` (``sundararajan2017axiomatic``). Chapter 13.
    """
    steps = check_int(steps, "steps")
    difference = x_prime - x.detach()
    alphas = torch.arange(1, steps + 1, dtype=x.dtype, device=x.device).div(steps)
    shape = (steps,) + (1,) * x.dim()
    with torch.enable_grad():
        points = (x.detach() + alphas.view(shape) * difference).flatten(0, 1)
        if not points.requires_grad:
            points.requires_grad_(True)
        losses = F.cross_entropy(model(points), y.repeat(steps), reduction="sum")
        (grads,) = torch.autograd.grad(losses, points, create_graph=create_graph)
    return difference * grads.view(steps, *x.shape).mean(0)


def _ig_norm(model, x, x_prime, y, steps, create_graph) -> torch.Tensor:
    """``(B,)``: the L1 norm of each example's :func:`loss_integrated_gradients`."""
    attribution = loss_integrated_gradients(model, x, x_prime, y, steps=steps, create_graph=create_graph)
    return attribution.abs().flatten(1).sum(1)


def _attack_objective(model, x, x_prime, y, objective, lam, steps) -> torch.Tensor:
    """The ``(B,)`` inner objective that the attack climbs, differentiable in ``x_prime``."""
    norm = _ig_norm(model, x, x_prime, y, steps, create_graph=True)
    if objective == "ig-norm":
        return norm
    return F.cross_entropy(model(x_prime), y, reduction="none") + lam * norm


def _check_options(objective, lam, epsilon, steps, step_size, ig_steps) -> float:
    check_choice(objective, "objective", OBJECTIVES)
    check_number(lam, "lam", minimum=0)
    if not math.isfinite(lam):
        raise ValueError(f"lam must be a finite number >= 0; got {lam!r}.")
    check_number(epsilon, "epsilon", minimum=0)
    if not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be a finite number >= 0 (the radius of the ball); got {epsilon!r}.")
    check_int(steps, "steps")
    check_int(ig_steps, "ig_steps")
    alpha = 2.5 * epsilon / steps if step_size is None else check_number(step_size, "step_size", minimum=0)
    if not math.isfinite(alpha):
        raise ValueError(f"step_size must be a finite number >= 0; got {step_size!r}.")
    return alpha


def attribution_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, steps: int = 5,
                       step_size: float | None = None, ig_steps: int = 5, objective: str = "ig-norm",
                       lam: float = 1.0, random_start: bool = True, clamp: tuple[float, float] | None = (0.0, 1.0),
                       seed: int = 0) -> torch.Tensor:
    r"""The inner maximisation of :func:`attribution_regularised_loss`: an :math:`x'` whose loss attribution is large.

    PGD in the :math:`L_\infty` ball, :math:`x'^{t+1} = \operatorname{clip}\big(x + \Pi_\epsilon(x'^t +
    \alpha \operatorname{sign} \nabla_{x'} J(x'^t) - x)\big)`, up :math:`J = \|\mathrm{IG}^{\ell_y}(x,
    x')\|_1` (``objective="ig-norm"``) or :math:`J = \ell_y(x') + \lambda \|\mathrm{IG}^{\ell_y}(x,
    x')\|_1` (``"ig-sum-norm"``), from a uniformly random start seeded with ``seed``; it returns the
    last iterate, as the authors' code. The model runs in eval mode with its parameters frozen and
    is restored afterwards.

    Args:
        model: a classifier; x: inputs ``(B, ...)`` in ``clamp``; y: labels ``(B,)``.
        epsilon: the :math:`L_\infty` radius; steps: the PGD steps; step_size: :math:`\alpha`
            (default :math:`2.5\,\epsilon / T`).
        ig_steps: the Riemann points of the attribution inside the attack.
        objective, lam: which :math:`J`, and its :math:`\lambda`.
        random_start, clamp, seed: as in :func:`~xaiutils.adversarial.pgd`.

    Returns:
        :math:`x'`, ``x``'s shape, detached. Reference: ``chen2019robust``. Chapter 13.
    """
    alpha = _check_options(objective, lam, epsilon, steps, step_size, ig_steps)
    check_input(x, min_dim=2)
    _check(x, epsilon, "linf", clamp)
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32) or y.shape != x.shape[:1]:
        raise ValueError(f"y must be a tensor of class indices, shape ({x.shape[0]},); got "
                         f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}"
                         f"{' of dtype ' + str(y.dtype) if isinstance(y, torch.Tensor) else ''}.")
    check_same_batch(y, "y", x)
    x = x.detach()
    y = y.long()
    start = random_start_point(x, epsilon, "linf", seed) if random_start else torch.zeros_like(x)
    with explaining(model, x):
        x_prime = _bound(x + start, clamp)
        for _ in range(steps):
            x_req = x_prime.detach().requires_grad_(True)
            with torch.enable_grad():
                value = _attack_objective(model, x, x_req, y, objective, lam, ig_steps)
                (grad,) = torch.autograd.grad(value.sum(), x_req)
            x_prime = _bound(x + project(x_prime + alpha * grad.sign() - x, epsilon, "linf"), clamp)
    return x_prime.detach()


def attribution_regularised_loss(lam: float, epsilon: float, *, objective: str = "ig-norm", steps: int = 5,
                                 step_size: float | None = None, ig_steps: int = 10, attack_ig_steps: int = 5,
                                 random_start: bool = True, clamp: tuple[float, float] | None = (0.0, 1.0),
                                 seed: int = 0) -> LossFn:
    r"""Robust attribution regularisation: IG-NORM or IG-SUM-NORM of Chen et al., as a ``loss_fn``.

    Each call finds :math:`x'` with :func:`attribution_attack` (``steps`` PGD steps,
    ``attack_ig_steps`` Riemann points, random start seeded with ``seed + i`` on call ``i``), then
    returns the batch mean of

    .. math:: \ell_y(x) + \lambda \|\mathrm{IG}^{\ell_y}(x, x')\|_1 \quad \text{(IG-NORM)}, \qquad
              \ell_y(x') + \lambda \|\mathrm{IG}^{\ell_y}(x, x')\|_1 \quad \text{(IG-SUM-NORM)},

    with ``ig_steps`` Riemann points, differentiable in the parameters. The attack runs in eval
    mode with the parameters frozen; the loss is computed in the model's own (training) mode, whose
    modes are left as they were. ``lam=0`` with IG-NORM is the plain cross-entropy (no attack is run).

    The authors train on MNIST with :math:`\epsilon = 0.3`, 40 attack steps of 0.01, 50 Riemann
    points (10 in the attack), :math:`\lambda = 1` (IG-NORM) or 0.1 (IG-SUM-NORM), for 100,000
    batches of 50 from scratch. The zoo's ``mnist-attrreg`` reduces the steps and fine-tunes
    instead, to fit a 2-core CPU (its recipe says how).

    Args:
        lam: :math:`\lambda \ge 0`; epsilon: the :math:`L_\infty` radius of the ball.
        objective: ``"ig-norm"`` or ``"ig-sum-norm"``.
        steps, step_size, attack_ig_steps, random_start, clamp: the attack (:func:`attribution_attack`).
        ig_steps: the Riemann points of the regulariser in the loss.
        seed: the seed of the first random start.

    Returns:
        ``loss_fn(model, x, y)`` for :func:`xaiutils.models.train`.

    Reference: ``chen2019robust``. Chapter 13.
    """
    _check_options(objective, lam, epsilon, steps, step_size, ig_steps)
    check_int(attack_ig_steps, "attack_ig_steps")
    if clamp is not None and not clamp[0] < clamp[1]:
        raise ValueError(f"clamp must be (low, high) with low < high, got {clamp!r}.")
    calls = 0

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        if lam == 0 and objective == "ig-norm":
            return F.cross_entropy(model(x), y)
        with eval_mode(model):
            x_prime = attribution_attack(model, x, y, epsilon=epsilon, steps=steps, step_size=step_size,
                                         ig_steps=attack_ig_steps, objective=objective, lam=lam,
                                         random_start=random_start, clamp=clamp, seed=seed + calls)
        calls += 1
        penalty = _ig_norm(model, x, x_prime, y, ig_steps, create_graph=True).mean()
        return F.cross_entropy(model(x if objective == "ig-norm" else x_prime), y) + lam * penalty

    return loss_fn


def attribution_penalty(model: nn.Module, x: torch.Tensor, x_prime: torch.Tensor, y: torch.Tensor, *,
                        ig_steps: int = 10) -> torch.Tensor:
    r"""The batch mean of :math:`\|\mathrm{IG}^{\ell_y}(x, x')\|_1`, differentiable in the parameters.

    The regulariser of :func:`attribution_regularised_loss` at a given :math:`x'`, for tests and
    for measuring a trained model. Reference: ``chen2019robust``. Chapter 13.
    """
    check_same_batch(x_prime, "x_prime", x)
    return _ig_norm(model, x, x_prime, y, check_int(ig_steps, "ig_steps"), create_graph=True).mean()
