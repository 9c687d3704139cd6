"""FullGrad: the input-gradient and every bias-gradient of the network, each shown as a saliency map (chapter 7).

Not a layer method: FullGrad splits the score of a piecewise-linear network exactly into an input
part and one part per bias, and sums their (normalised) magnitudes. It is taught with the CAM
family because it returns a map of the same kind, ``(B, 1, H, W)``, non-negative.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..core.batching import map_batched
from ..core.model_state import explaining
from ..core.targets import Target, rows_of, select

_FULLGRAD_EPS = 1e-7  # as pytorch-grad-cam's min-max scaling


_BIASED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _effective_bias(module: nn.Module) -> torch.Tensor | None:
    """The bias of a layer; for BatchNorm in eval mode, :math:`\\beta - \\gamma\\mu/\\sqrt{\\sigma^2+\\epsilon}`."""
    if isinstance(module, _BATCHNORM):
        if module.running_mean is None:
            raise ValueError("FullGrad needs BatchNorm layers with running statistics (track_running_stats=True).")
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        bias = -module.running_mean * scale
        return bias if module.bias is None else bias + module.bias
    return module.bias if isinstance(module, _BIASED) else None


def full_gradient_terms(model: nn.Module, x: torch.Tensor, target: Target, hooks: list):
    """FullGrad's decomposition, with the model already prepared by :func:`explaining`.

    Returns ``(input_term, bias_terms, scores)``: :math:`x \\odot \\nabla_x y_c`, and for every call
    of a layer with a bias :math:`b` (Linear, Conv, BatchNorm) the bias-gradient
    :math:`b \\odot \\partial y_c / \\partial z` (``z`` the layer's output, ``b`` broadcast over
    its positions). For a piecewise-linear network (ReLU, max/average pooling, BatchNorm in
    eval mode) everything adds up to the score: completeness.
    """
    calls: list[tuple[tuple[torch.Tensor, bool], torch.Tensor]] = []
    for module in model.modules():
        if isinstance(module, _BIASED + _BATCHNORM) and _effective_bias(module) is not None:
            hooks.append(module.register_forward_hook(
                lambda m, args, out: calls.append(((_effective_bias(m), isinstance(m, nn.Linear)), out))))
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = select(model(x), target)
        grads = torch.autograd.grad(scores.sum(), [x] + [out for _, out in calls], allow_unused=True)
    bias_terms = [_broadcast_bias(module_bias, g) * g for (module_bias, _), g in zip(calls, grads[1:]) if g is not None]
    return x.detach() * grads[0], bias_terms, scores.detach()


def _broadcast_bias(bias_of_layer: tuple[torch.Tensor, bool], grad: torch.Tensor) -> torch.Tensor:
    """A layer's bias shaped against its output: on the last dim for a Linear layer (which may run on
    ``(B, tokens, features)`` as in a transformer), on the channel dim for convolutions and BatchNorm."""
    bias, on_last_dim = bias_of_layer
    if on_last_dim:
        return bias.view(*[1] * (grad.dim() - 1), -1)
    return bias.view(1, -1, *[1] * (grad.dim() - 2))


_UNCOUNTED = (nn.MultiheadAttention, nn.LayerNorm, nn.GroupNorm)


def _refuse_transformers(model: nn.Module) -> None:
    """FullGrad's decomposition needs every bias counted and an image grid for every bias term."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, _UNCOUNTED):
            found.setdefault(type(module).__name__, name)
    if found:
        listed = ", ".join(f"{kind} ({name!r})" for kind, name in found.items())
        raise ValueError(
            f"fullgrad is defined for convolutional networks whose biases are those of Linear, Conv and BatchNorm "
            f"layers; this model has {listed}. Softmax attention and layer or group normalisation carry biases and "
            f"non-linearities FullGrad does not count, and a transformer's biases act on tokens (B, T, D) rather "
            f"than an image grid, so its input and bias maps would not add up to the score. For a vision "
            f"transformer use attention_relevance or attention_rollout (xaiutils.attribution.attention), or "
            f"grad_cam on a token layer.")


def _fullgrad_psi(term: torch.Tensor, size) -> torch.Tensor:
    """pytorch-grad-cam's post-processing: abs, each channel min-max scaled to [0, 1], summed, upsampled."""
    term = term.abs()
    term = term - term.amin((2, 3), keepdim=True)
    term = term / (term.amax((2, 3), keepdim=True) + _FULLGRAD_EPS)
    return F.interpolate(term.sum(1, keepdim=True), size=size, mode="bilinear", align_corners=False)


def fullgrad(model: nn.Module, x: torch.Tensor, target: Target, *, batch_size: int | None = None) -> torch.Tensor:
    """FullGrad: the input-gradient and every convolutional bias-gradient, each as a saliency map.

    FullGrad splits the score of a piecewise-linear network exactly into input and bias parts,

    .. math:: y_c = \\sum_i x_i \\frac{\\partial y_c}{\\partial x_i}
              + \\sum_{\\text{layers } l} \\sum_{\\text{positions}} b_l \\odot
              \\frac{\\partial y_c}{\\partial z_l},

    (:math:`z_l` the layer's output, :math:`b_l` its bias; BatchNorm's is
    :math:`\\beta - \\gamma\\mu/\\sqrt{\\sigma^2+\\epsilon}`), and shows both:

    .. math:: S_c = \\sum_{k} \\psi\\big(x \\odot \\nabla_x y_c\\big)_k
              + \\sum_{l \\text{ spatial}} \\sum_k \\psi\\big(b_l \\odot \\partial y_c/\\partial z_l\\big)_k,

    where :math:`\\psi` takes the absolute value of one channel :math:`k`, rescales it to
    :math:`[0, 1]` (min-max, :math:`\\epsilon = 10^{-7}`) and upsamples it bilinearly to
    ``H, W``. Only layers with a spatial output (Conv2d, BatchNorm2d) enter the map. This is
    pytorch-grad-cam's ``FullGrad`` without its final min-max rescaling of the sum (the
    official implementation instead rescales each layer as a whole and upsamples with
    ``align_corners=True``).

    Args:
        model: the classifier.
        x: input batch ``(B, C, H, W)``.
        target: an int, a ``(B,)`` tensor of class indices, or a callable ``output -> (B,)``.
        batch_size: at most this many examples per pass (default: the whole batch).

    Returns:
        ``(B, 1, H, W)``, non-negative, not normalised.

    A model with attention, LayerNorm or GroupNorm (a vision transformer) is refused: their
    biases are not counted, and a transformer's bias terms have no image grid.

    Reference: ``srinivas2019full``. Chapter 7.
    """
    size = x.shape[-2:]
    with explaining(model, x, target, min_dim=4) as hooks:
        _refuse_transformers(model)
        def one(rows: torch.Tensor, s: slice) -> torch.Tensor:
            hooks.remove_all()
            input_term, bias_terms, _ = full_gradient_terms(model, rows, rows_of(target, s), hooks)
            saliency = _fullgrad_psi(input_term, size)
            for term in bias_terms:
                if term.dim() == 4:
                    saliency = saliency + _fullgrad_psi(term, size)
            return saliency

        return map_batched(one, x, batch_size, x.shape[0])
