r"""Attacks on explanations and the beta-smoothing defence (chapter 12).

Three ways to change an explanation while the prediction stays:

* :func:`top_k_attack` and :func:`centre_of_mass_attack` (Ghorbani et al.): an imperceptible input
  perturbation that moves the saliency map away from where it was;
* :func:`manipulate_explanation` (Dombrowski et al.): an input perturbation that makes the map
  look like any chosen target map;
* :func:`~xaiutils.adversarial.manipulation.manipulate_model` (Heo et al.): fine-tune the *model*
  so that Grad-CAM points to a chosen region on every input, with the accuracy kept.

The input attacks need the gradient of a gradient map with respect to the input. For a ReLU
network that second derivative is zero almost everywhere, so the attack direction is computed on
the same network with every ``nn.ReLU`` replaced by :math:`\operatorname{softplus}_\beta(z) =
\frac1\beta\log(1 + e^{\beta z})` (:func:`beta_smoothed`), while the success of each iterate is
judged on the real (ReLU) network. Explaining with the smoothed network is also Dombrowski et
al.'s defence: it bounds the curvature that the attacks exploit.

Maps here are *saliency distributions*: the absolute attribution summed over channels and
normalised to sum to one per example, ``(B, 1, H, W)`` (:func:`saliency_map`).
"""
from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from ..core.checks import check_finite, check_input, check_int
from ..core.model_state import explaining
from ..core.targets import as_index, select
from .attacks import _bound, _check, project

METHODS = ("gradient", "gradient_x_input")


# ---------------------------------------------------------------------------- the smoothed network
@contextmanager
def beta_smoothed(model: nn.Module, beta: float) -> Iterator[nn.Module]:
    r"""Swap every ``nn.ReLU`` of ``model`` for ``nn.Softplus(beta)`` inside the block; put them back after.

    :math:`\operatorname{softplus}_\beta(z) = \frac1\beta \log(1 + e^{\beta z}) \to \operatorname{ReLU}(z)`
    as :math:`\beta \to \infty`, and unlike ReLU it has a non-zero second derivative. A ReLU
    module used in several places is replaced by one shared Softplus. On exit, also on error,
    the very same ReLU objects are back in place (their hooks and flags untouched). Activations
    called as functions (``F.relu``) cannot be swapped: the model must use ``nn.ReLU`` modules.

    Use it for the second-order gradients of the attacks below, or as the defence of Dombrowski
    et al.: ``with beta_smoothed(model, 3.0): gradient(model, x, c)`` explains the smoothed
    network, whose gradient is close to an average of gradients around ``x`` (SmoothGrad) and
    much harder to manipulate.

    Reference: ``dombrowski2019explanations``. Chapter 12.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}.")
    # ``_modules``, not ``named_children()``: the latter skips a module's second appearance
    swaps = [(parent, name, child) for parent in model.modules()
             for name, child in parent._modules.items() if isinstance(child, nn.ReLU)]
    if not swaps:
        raise ValueError("the model has no nn.ReLU module to smooth (a top-level ReLU or F.relu in forward "
                         "cannot be swapped).")
    softplus = {}
    for _, _, relu in swaps:
        softplus.setdefault(relu, nn.Softplus(beta=beta).train(relu.training))
    try:
        for parent, name, relu in swaps:
            setattr(parent, name, softplus[relu])
        yield model
    finally:
        for parent, name, relu in swaps:
            setattr(parent, name, relu)


# ---------------------------------------------------------------------------- saliency distributions
def _saliency(model: nn.Module, x: torch.Tensor, target, method: str,
              create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(saliency_map, model output)`` of one pass; see :func:`saliency_map`."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        output = model(x)
        (grad,) = torch.autograd.grad(select(output, target).sum(), x, create_graph=create_graph)
    phi = grad if method == "gradient" else grad * x
    s = phi.abs().sum(1, keepdim=True)
    return s / s.flatten(1).sum(1).clamp_min(torch.finfo(s.dtype).tiny).view(-1, 1, 1, 1), output


def saliency_map(model: nn.Module, x: torch.Tensor, target, *, method: str = "gradient",
                 create_graph: bool = False) -> torch.Tensor:
    r"""The normalised saliency :math:`s = |\phi|_{\text{summed over channels}} / \sum |\phi|`, ``(B, 1, H, W)``.

    :math:`\phi` is the gradient of the target score (``method="gradient"``) or gradient times
    input (``"gradient_x_input"``). With ``create_graph=True`` the map can be differentiated
    again, with respect to ``x`` or the parameters. Call it inside
    :func:`~xaiutils.core.model_state.explaining` (it does not touch the model's state).
    """
    return _saliency(model, x, target, method, create_graph)[0]


def _top_k_mask(s: torch.Tensor, k: int) -> torch.Tensor:
    """A 0/1 map (``s``'s shape) marking each example's ``k`` largest entries."""
    flat = s.flatten(1)
    mask = torch.zeros_like(flat)
    mask.scatter_(1, flat.topk(k, dim=1).indices, 1.0)
    return mask.view_as(s)


def _top_k_intersection(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Per example, the fraction of the top-``k`` features of ``a`` that are among the top-``k`` of ``b``, ``(B,)``."""
    return (_top_k_mask(a, k) * _top_k_mask(b, k)).flatten(1).sum(1) / k


def centre_of_mass(s: torch.Tensor) -> torch.Tensor:
    """The centre of mass ``(row, column)`` in pixels of each normalised map ``(B, 1, H, W)``, ``(B, 2)``."""
    h, w = s.shape[-2:]
    rows = torch.arange(h, dtype=s.dtype, device=s.device)
    cols = torch.arange(w, dtype=s.dtype, device=s.device)
    s = s.sum(1)
    return torch.stack([(s.sum(2) * rows).sum(1), (s.sum(1) * cols).sum(1)], dim=1)


def _check_beta(beta) -> None:
    if beta is None:
        return
    values = beta if isinstance(beta, tuple) else (beta,)
    if not values or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and b > 0
                             for b in values):
        raise ValueError(f"beta must be a number > 0, a (start, end) pair of them, or None, got {beta!r}.")


def _surrogate(model: nn.Module, beta, step: int, steps: int):
    """The network whose second derivatives give the attack direction: ``model`` smoothed, or as is for ``None``."""
    if beta is None:
        return nullcontext(model)
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        raise ValueError("the model has no nn.ReLU to smooth; pass beta=None to use its own second derivatives "
                         "(e.g. for a model already inside beta_smoothed).")
    return beta_smoothed(model, _beta_at(beta, step, steps))


def _beta_at(beta, step: int, steps: int) -> float:
    """``beta`` or, for a pair ``(start, end)``, its geometric growth from ``start`` to ``end`` over the steps."""
    if isinstance(beta, tuple):
        start, end = beta
        return start * (end / start) ** (step / max(steps - 1, 1))
    return beta


# ---------------------------------------------------------------------------- Ghorbani et al.
def _iterative_attack(model, x, target, objectives, *, epsilon, steps, step_size, method, beta, clamp):
    """Signed steps up a dissimilarity on the smoothed net; keep each example's best same-class iterate.

    ``objectives(s0)`` receives the real network's map of ``x`` and returns
    ``(direction_objective, score)``: ``direction_objective(s) -> (B,)`` is differentiated on the
    smoothed network, ``score(s) -> (B,)`` (higher = more dissimilar) judges iterates on the real
    one. Returns the best iterate per example (``x`` itself where no iterate kept the predicted
    class and improved the score).
    """
    check_input(x, min_dim=4)
    _check(x, epsilon, "linf", clamp)
    _check_beta(beta)
    check_int(steps, "steps")
    alpha = epsilon / 8 if step_size is None else step_size
    x = x.detach()
    with explaining(model, x):
        with torch.no_grad():
            output = model(x)
        label = output.argmax(1)
        target = label if target is None else as_index(target, x.shape[0], output.shape[1], x.device)
        s0 = saliency_map(model, x, target, method=method)
        direction_objective, score = objectives(s0)
        best, best_score = x.clone(), score(s0)
        x_adv = x
        for step in range(steps):
            with _surrogate(model, beta, step, steps), torch.enable_grad():
                x_req = x_adv.detach().requires_grad_(True)
                s = saliency_map(model, x_req, target, method=method, create_graph=True)
                (grad,) = torch.autograd.grad(direction_objective(s).sum(), x_req)
            x_adv = _bound(x + project(x_adv + alpha * grad.sign() - x, epsilon, "linf"), clamp)
            s_real, output = _saliency(model, x_adv, target, method)
            current = score(s_real)
            better = (output.argmax(1) == label) & (current > best_score)
            best[better], best_score[better] = x_adv[better], current[better]
    return best


def top_k_attack(model: nn.Module, x: torch.Tensor, target=None, *, epsilon: float, k: int = 100, steps: int = 50,
                 step_size: float | None = None, method: str = "gradient", beta: float | tuple | None = 10.0,
                 clamp: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    r"""Ghorbani et al.'s top-k attack: push the saliency out of the originally most salient features.

    With :math:`B` the ``k`` most salient features of :math:`s(x)`, the attack takes signed steps
    that lower their saliency mass on the smoothed network,

    .. math:: x^{t+1} = \operatorname{clip}_{[a,b]}\Big(x + \Pi_\epsilon\big(x^t - \alpha\,
              \operatorname{sign}\nabla_x \textstyle\sum_{i \in B} s_i(x^t)\big) - x\Big),

    and returns, per example, the iterate with the smallest top-k intersection with :math:`s(x)`
    (on the real network) among those whose predicted class is unchanged.

    Args:
        model: a ReLU classifier (its ``nn.ReLU`` modules are smoothed for the attack direction).
        x: input batch ``(B, C, H, W)`` in ``clamp``.
        target: the class whose map is attacked: an int, a ``(B,)`` tensor, or ``None`` for the
            predicted class.
        epsilon: the L-inf budget (>= 0).
        k: the number of top features (pixels of the map), at most ``H * W``.
        steps: the number of iterations.
        step_size: :math:`\alpha`; default :math:`\epsilon / 8` (the authors' code takes steps of
            1 for :math:`\epsilon = 8` on the 0-255 scale).
        method: ``"gradient"`` or ``"gradient_x_input"`` (see :func:`saliency_map`).
        beta: the softplus :math:`\beta` of the attack direction, ``(start, end)`` to grow it
            geometrically over the steps, or ``None`` to differentiate the model as it is (a model
            without ReLUs, or one already inside :func:`beta_smoothed`: an attack on the defence).
        clamp: the valid input range, or ``None``.

    Returns:
        The adversarial batch, ``x``'s shape (``x`` itself for examples the attack could not move).

    Reference: ``ghorbani2019interpretation``. Chapter 12.
    """
    check_input(x, min_dim=4)
    if not isinstance(k, int) or not 1 <= k <= x.shape[-2] * x.shape[-1]:
        raise ValueError(f"k must be an integer in 1..{x.shape[-2] * x.shape[-1]} (the pixels of the map), got {k!r}.")

    def objectives(s0):
        top = _top_k_mask(s0, k)
        return (lambda s: -(s * top).flatten(1).sum(1)), (lambda s: 1.0 - _top_k_intersection(s, s0, k))

    return _iterative_attack(model, x, target, objectives, epsilon=epsilon, steps=steps, step_size=step_size,
                             method=method, beta=beta, clamp=clamp)


def centre_of_mass_attack(model: nn.Module, x: torch.Tensor, target=None, *, epsilon: float, steps: int = 50,
                          step_size: float | None = None, method: str = "gradient", beta: float | tuple | None = 10.0,
                          clamp: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    r"""Ghorbani et al.'s centre-of-mass attack: move the saliency map's centre of mass as far as possible.

    The same iteration as :func:`top_k_attack`, up the squared shift
    :math:`\|C(s(x^t)) - C(s(x))\|_2^2` of the centre of mass :math:`C` (:func:`centre_of_mass`);
    it returns, per example, the same-class iterate with the largest shift on the real network.
    Arguments as in :func:`top_k_attack`.

    Reference: ``ghorbani2019interpretation``. Chapter 12.
    """
    def objectives(s0):
        centre = centre_of_mass(s0)
        shift = lambda s: centre_of_mass(s) - centre  # noqa: E731
        return (lambda s: shift(s).pow(2).sum(1)), (lambda s: shift(s).norm(dim=1))

    return _iterative_attack(model, x, target, objectives, epsilon=epsilon, steps=steps, step_size=step_size,
                             method=method, beta=beta, clamp=clamp)


# ---------------------------------------------------------------------------- Dombrowski et al.
def _as_distribution(target_map: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``target_map`` (``(1 or B, C', H, W)``) as a normalised saliency ``(B, 1, H, W)``."""
    if not isinstance(target_map, torch.Tensor) or target_map.dim() != 4 or target_map.shape[-2:] != x.shape[-2:] \
            or target_map.shape[0] not in (1, x.shape[0]):
        shape = tuple(target_map.shape) if isinstance(target_map, torch.Tensor) else type(target_map).__name__
        raise ValueError(f"target_map must be a tensor of shape (1 or {x.shape[0]}, C, {x.shape[-2]}, {x.shape[-1]}), "
                         f"got {shape}.")
    check_finite(target_map, "target_map")
    s = target_map.detach().abs().sum(1, keepdim=True).to(x)
    total = s.flatten(1).sum(1)
    if (total <= 0).any():
        raise ValueError("target_map is zero everywhere (for some example): there is no map to move towards.")
    return (s / total.view(-1, 1, 1, 1)).expand(x.shape[0], -1, -1, -1)


def manipulate_explanation(model: nn.Module, x: torch.Tensor, target_map: torch.Tensor, target=None, *,
                           steps: int = 200, lr: float = 1e-3, gamma: float = 10.0,
                           beta: float | tuple | None = (10.0, 100.0), method: str = "gradient",
                           epsilon: float | None = None,
                           clamp: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    r"""Dombrowski et al.'s targeted manipulation: make the saliency map look like ``target_map``, same output.

    Minimises, with Adam on the input and the ReLUs replaced by :math:`\operatorname{softplus}_\beta`,

    .. math:: L(x') = \frac{\|s(x') - s_t\|_2^2}{\|s_t\|_2^2} + \gamma\, \|p(x') - p(x)\|_2^2,

    where :math:`s` is the normalised saliency (:func:`saliency_map`), :math:`s_t` the normalised
    ``target_map`` and :math:`p` the softmax output (the paper's :math:`\|g(x') - g(x)\|^2` term,
    which keeps the prediction). After each step :math:`x'` is clipped to the input range (and to
    the L-inf ``epsilon``-ball if given). Per example, the iterate with the smallest relative map
    error on the real network among those with the original predicted class is returned.

    Args:
        model: a ReLU classifier.
        x: input batch ``(B, C, H, W)`` in ``clamp``.
        target_map: the map to imitate, ``(1 or B, C', H, W)``: e.g. the explanation of another
            image; it is made a saliency distribution (absolute value, channel sum, sum one).
        target: the class whose map is manipulated (int, ``(B,)`` tensor, or ``None``: predicted).
        steps: Adam iterations.
        lr: Adam's learning rate (in input units).
        gamma: the weight :math:`\gamma` of the output term.
        beta: the softplus :math:`\beta`, or ``(start, end)``: grown geometrically over the steps,
            as in the authors' code (from 10 to 100 by default), or ``None`` (see :func:`top_k_attack`).
        method: ``"gradient"`` or ``"gradient_x_input"``.
        epsilon: an optional L-inf budget (the paper has none; it relies on the output term).
        clamp: the valid input range, or ``None``.

    Returns:
        The manipulated batch, ``x``'s shape.

    Reference: ``dombrowski2019explanations``. Chapter 12.
    """
    check_input(x, min_dim=4)
    if epsilon is not None:
        _check(x, epsilon, "linf", clamp)
    else:
        _check(x, 0.0, "linf", clamp)
    _check_beta(beta)
    check_int(steps, "steps")
    s_target = _as_distribution(target_map, x)
    scale = s_target.flatten(1).pow(2).sum(1)

    def map_error(s):
        return (s - s_target).flatten(1).pow(2).sum(1) / scale

    x = x.detach()
    with explaining(model, x):
        with torch.no_grad():
            p0 = F.softmax(model(x), dim=1)
        label = p0.argmax(1)
        target = label if target is None else as_index(target, x.shape[0], p0.shape[1], x.device)
        best, best_error = x.clone(), map_error(saliency_map(model, x, target, method=method))
        x_adv = x.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([x_adv], lr=lr)
        for step in range(steps):
            with _surrogate(model, beta, step, steps), torch.enable_grad():
                s, output = _saliency(model, x_adv, target, method, create_graph=True)
                loss = map_error(s) + gamma * (F.softmax(output, dim=1) - p0).pow(2).sum(1)
                (x_adv.grad,) = torch.autograd.grad(loss.sum(), x_adv)
            optimiser.step()
            with torch.no_grad():
                moved = x_adv - x if epsilon is None else project(x_adv - x, epsilon, "linf")
                x_adv.copy_(_bound(x + moved, clamp))
            s_real, output = _saliency(model, x_adv.detach(), target, method)
            error = map_error(s_real)
            better = (output.argmax(1) == label) & (error < best_error)
            best[better], best_error[better] = x_adv.detach()[better], error[better]
    return best
