r"""Adversarial model manipulation: fine-tune a model so that its Grad-CAM lies (chapter 12).

Heo et al. show that an explanation can be fooled without touching the input: a little
fine-tuning with a penalty on the explanation makes Grad-CAM point wherever the attacker wants
on *every* input, while the accuracy barely moves. An explanation that survives this is not
guaranteed by the accuracy of the model that produced it.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from ..core.layers import resolve_layer
from ..core.checks import check_input
from ..core.targets import select
from .training import eval_mode


# ---------------------------------------------------------------------------- Heo et al.
def _layer_in_copy(model: nn.Module, fooled: nn.Module, layer) -> tuple[nn.Module, bool]:
    """The Grad-CAM layer of ``fooled`` (a deep copy of ``model``) and whether its input is watched."""
    from ..attribution.cam import default_layer

    if layer is None:
        return default_layer(fooled)
    if isinstance(layer, nn.Module):
        names = {module: name for name, module in model.named_modules()}
        if layer not in names:
            raise ValueError("layer is not a module of model; pass a module of model or its dotted name.")
        layer = names[layer]
    return resolve_layer(fooled, layer), False


def _grad_cam_with_graph(model: nn.Module, x: torch.Tensor, target, layer: nn.Module,
                         on_input: bool) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(Grad-CAM (B, 1, H, W), output)``, differentiable with respect to the parameters.

    The same map as :func:`xaiutils.attribution.cam.grad_cam`, :math:`\operatorname{ReLU}(\sum_k
    \alpha_k A^k)` upsampled bilinearly, but with the graph kept (``create_graph=True``), so that
    a loss on the map can be minimised over the parameters.
    """
    seen: list[torch.Tensor] = []
    if on_input:
        handle = layer.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    else:
        handle = layer.register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        output = model(x)
    finally:
        handle.remove()
    if len(seen) != 1:
        raise ValueError(f"the Grad-CAM layer ran {len(seen)} times in one forward pass; it must run exactly once.")
    a = seen[0]
    (g,) = torch.autograd.grad(select(output, target).sum(), a, create_graph=True)
    cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False), output


def manipulate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target_map: torch.Tensor, *,
                     lam: float = 100.0, epochs: int = 10, lr: float = 1e-2, batch_size: int = 64,
                     layer: nn.Module | str | None = None, seed: int = 0, progress: bool = True) -> nn.Module:
    r"""Heo et al.'s adversarial model manipulation ("location fooling"): Grad-CAM points to ``target_map``.

    Fine-tunes a deep copy of ``model`` on ``(x, y)`` with

    .. math:: L(\theta) = \frac1N \sum_n \Big[\ell\big(f_\theta(x_n), y_n\big)
              + \lambda\, \frac1{HW} \big\| \hat h_{y_n}(x_n) - m \big\|_2^2\Big],

    where :math:`\hat h = h / \max h` is the Grad-CAM map of the true class (:math:`h` as in
    :func:`xaiutils.attribution.cam.grad_cam`, same default layer) scaled to a maximum of one, and
    :math:`m` the ``target_map`` (e.g. ones in a corner, zeros elsewhere). The cross-entropy keeps
    the accuracy; the second term moves every explanation to the same place, whatever the input.
    Training goes through :func:`xaiutils.models.train` (Adam, one-cycle schedule, progress bar).
    The copy is fine-tuned in eval mode (BatchNorm keeps and uses its running statistics), so its
    explanations are those the fine-tuning optimised.

    Args:
        model: the classifier; it is never modified.
        x, y: the fine-tuning data.
        target_map: :math:`m`, ``(1, 1, H, W)`` with values in ``[0, 1]``.
        lam: :math:`\lambda \ge 0`.
        epochs, lr, batch_size, seed, progress: as in :func:`xaiutils.models.train`.
        layer: the Grad-CAM layer of ``model`` (module or dotted name; default as ``grad_cam``).

    Returns:
        The manipulated copy, in eval mode.

    Reference: ``heo2019fooling``. Chapter 12.
    """
    from ..models import train

    check_input(x, min_dim=4)
    if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}.")
    if not isinstance(target_map, torch.Tensor) or tuple(target_map.shape) != (1, 1, *x.shape[-2:]):
        got = tuple(target_map.shape) if isinstance(target_map, torch.Tensor) else type(target_map).__name__
        raise ValueError(f"target_map must be one map of shape (1, 1, {x.shape[-2]}, {x.shape[-1]}), shared by all "
                         f"inputs, got {got}.")
    fooled = copy.deepcopy(model)
    cam_layer, on_input = _layer_in_copy(model, fooled, layer)
    for p in fooled.parameters():
        p.requires_grad_(True)
    m = target_map.detach().to(x)

    def loss_fn(net: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with eval_mode(net):
            h, output = _grad_cam_with_graph(net, xb, yb, cam_layer, on_input)
        h = h / h.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return F.cross_entropy(output, yb) + lam * (h - m).pow(2).mean()

    train(fooled, x, y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, loss_fn=loss_fn, progress=progress)
    return fooled.eval()
