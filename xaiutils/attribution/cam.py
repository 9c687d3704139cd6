"""The class activation map (CAM) family: CAM, Grad-CAM and its variants, FullGrad (chapter 7).

A CAM method looks at the activations :math:`A \\in \\mathbb{R}^{C \\times h \\times w}` of one
convolutional ``layer`` and the gradient :math:`G = \\partial y_c / \\partial A` of the target
score :math:`y_c` with respect to them. A variant only says how to weigh the activations:

.. math:: M_c = \\operatorname{ReLU}\\Big(\\sum_k W^{kc} \\odot A^k\\Big),

where :math:`W^{kc}` is one number per channel (CAM, Grad-CAM, Grad-CAM++, XGrad-CAM) or one
per pixel (Layer-CAM): a variant is a weights function (``grad_cam_weights``, ...) on one core,
:func:`cam_core`. FullGrad, which is not a layer method, is in :mod:`.fullgrad`. The map :math:`M_c` has the layer's resolution :math:`h \\times w`; it is
upsampled bilinearly (``align_corners=False``) to the input's :math:`H \\times W` unless
``upsample=False``. All methods return ``(B, 1, H, W)`` (Guided Grad-CAM: ``x``'s shape).

Conventions that differ between libraries:

* The ReLU of the Grad-CAM paper is applied (Captum's ``LayerGradCam`` skips it unless
  ``relu_attributions=True``); CAM itself stays signed, as in its paper.
* Maps are raw: no min-max normalisation. pytorch-grad-cam rescales every map to ``[0, 1]``
  (and resizes with OpenCV); normalise when plotting, or to compare with it.
* The gradient is taken with respect to the layer's output only: the hook makes the captured
  activations a leaf of a fresh graph, so the forward pass below the layer builds no graph and
  the backward pass stops at the layer. A layer must run exactly once per forward pass
  (torchvision's ResNet reuses one ``ReLU`` per block: use the block, e.g. ``"layer4"``).
* A vision transformer's layer gives tokens ``(B, T, D)`` (batch first): the class token is
  dropped and the patch tokens are laid out on their ``h x w`` grid as a ``(B, D, h, w)`` map
  (:func:`._tokens.tokens_to_grid`; pytorch-grad-cam's ``reshape_transform`` for a ViT), e.g.
  ``layer="encoder.layers.encoder_layer_1.ln_1"`` (chapter 15). The last
  block's output is a poor choice: only its class token reaches the head, so the patch tokens'
  gradients are zero there.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..core.batching import map_batched
from ..core.checks import check_input, check_model_input
from ..core.layers import last_conv_layer, resolve_layer
from ..core.model_state import explaining
from ..core.targets import Target, as_index, rows_of, select
from ._tokens import tokens_to_grid
from .backprop import guided_backprop

# (activations, gradients or None, the chunk's target) -> weights broadcastable to activations
Weigh = Callable[[torch.Tensor, "torch.Tensor | None", Target], torch.Tensor]

_GRAD_CAM_PP_EPS = 1e-6  # as pytorch-grad-cam
_XGRAD_CAM_EPS = 1e-7    # as pytorch-grad-cam


# ---------------------------------------------------------------------------- the shared core
def _watch(layer: nn.Module, hooks: list, *, on_input: bool = False) -> list[torch.Tensor]:
    """Hook ``layer`` so that its output (or first input) becomes a leaf tensor; return the list of leaves.

    Downstream layers get a clone, so an in-place operation after the layer (torchvision's
    ``out += identity``) cannot change the captured activations.
    """
    seen: list[torch.Tensor] = []

    def swap(value):
        if not isinstance(value, torch.Tensor) or value.dim() not in (3, 4):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"a CAM layer must produce a (B, C, h, w) feature map or (B, T, D) tokens, got {shape}; "
                             "pick a convolutional layer or a vision transformer's token layer.")
        leaf = value.detach().requires_grad_(torch.is_grad_enabled())
        seen.append(leaf)
        return leaf.clone()

    if on_input:
        hooks.append(layer.register_forward_pre_hook(lambda module, args: (swap(args[0]), *args[1:])))
    else:
        hooks.append(layer.register_forward_hook(lambda module, args, output: swap(output)))
    return seen


def default_layer(model: nn.Module) -> tuple[nn.Module, bool]:
    """The activations that feed the last global average pooling, else the last ``nn.Conv2d``'s output.

    In module order the last convolution can be a side branch (a ResNet's 1x1 shortcut), while
    the input of the global pooling is always the final feature map the classifier sees.
    """
    try:
        return _gap_input(model)
    except ValueError:
        return last_conv_layer(model), False


def cam_core(model: nn.Module, x: torch.Tensor, target: Target, layer, weigh: Weigh, *,
             find_layer=None, relu: bool = True, upsample: bool = True, gradients: bool = True,
             batch_size: int | None = None) -> torch.Tensor:
    """Run the model once per chunk, weigh the layer's activations and sum over channels.

    ``layer``: a module, a dotted name, or ``None`` for ``find_layer(model)`` (default
    :func:`default_layer`), which returns
    ``(module, on_input)``: watch that module's output, or its input. Returns ``(B, 1, h, w)``, or
    ``(B, 1, H, W)`` when ``upsample``.
    """
    with explaining(model, x, target, min_dim=4) as hooks:
        layer, on_input = (find_layer or default_layer)(model) if layer is None else (resolve_layer(model, layer), False)
        seen = _watch(layer, hooks, on_input=on_input)

        def one(rows: torch.Tensor, s: slice) -> torch.Tensor:
            seen.clear()
            chunk_target = rows_of(target, s)
            with torch.set_grad_enabled(gradients):
                output = model(rows)
                if len(seen) != 1:
                    raise ValueError(
                        f"the CAM layer ran {len(seen)} times in one forward pass; it must run exactly once "
                        "(a module reused in several places, like torchvision ResNet's ReLU, is ambiguous: "
                        "pick its block or a layer that runs once).")
                a = seen[0]
                g = None
                if gradients:
                    (g,) = torch.autograd.grad(select(output, chunk_target).sum(), a, allow_unused=True)
                    g = torch.zeros_like(a) if g is None else g
            a = a.detach()
            if a.dim() == 3:
                a, g = _token_maps(a, g, rows)
            return (weigh(a, g, chunk_target) * a).sum(1, keepdim=True)

        maps = map_batched(one, x, batch_size, x.shape[0])
    if relu:
        maps = maps.clamp(min=0)
    if upsample:
        maps = F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return maps


def _token_maps(a: torch.Tensor, g: torch.Tensor | None, rows: torch.Tensor):
    """A transformer layer's ``(B, T, D)`` tokens and gradients as ``(B, D, h, w)`` maps of the patch tokens."""
    if a.shape[0] != rows.shape[0] or rows.dim() != 4:
        raise ValueError(f"a token layer must produce batch-first tokens (B, T, D) of an image batch; got shape "
                         f"{tuple(a.shape)} for x of shape {tuple(rows.shape)}.")
    size = rows.shape[-2:]
    return tokens_to_grid(a, size), None if g is None else tokens_to_grid(g, size)


# ---------------------------------------------------------------------------- CAM
def _gap_input(model: nn.Module) -> tuple[nn.Module, bool]:
    """The last global average pooling, whose input CAM watches by default."""
    pools = [m for m in model.modules()
             if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))]
    if not pools:
        raise ValueError("CAM needs a global average pooling (nn.AdaptiveAvgPool2d(1)) before the linear head; "
                         "the model has none: pass layer= (the activations that feed the pooling).")
    return pools[-1], True


def cam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: nn.Module | str | None = None,
        fc: nn.Module | str | None = None, upsample: bool = True, batch_size: int | None = None) -> torch.Tensor:
    """Class activation map (CAM): the linear head's weights applied to every pixel.

    For a network that ends in global average pooling and a linear layer,
    :math:`y_c = \\sum_k w_{ck} \\frac{1}{hw} \\sum_{ij} A^k_{ij} + b_c`, CAM moves the average
    outside the sum:

    .. math:: M_c(i, j) = \\sum_k w_{ck} A^k_{ij}, \\qquad y_c = \\frac{1}{hw}\\sum_{ij} M_c(i, j) + b_c.

    As in the paper the map is signed (no ReLU) and without the bias :math:`b_c`, which is the
    same at every pixel; so the mean of the layer-resolution map plus :math:`b_c` is the logit.

    Args:
        model: a classifier ending in ``AdaptiveAvgPool2d(1)`` (and flatten) and a linear head.
        x: input batch ``(B, C, H, W)``.
        target: an int or a ``(B,)`` tensor of class indices (a callable has no CAM: CAM weights
            are rows of the linear head).
        layer: the activations that feed the global average pooling. Default: the input of the
            model's last ``nn.AdaptiveAvgPool2d(1)``. A module or its dotted name.
        fc: the linear head. Default: the model's last ``nn.Linear``; its ``in_features`` must
            equal the layer's channels.
        upsample: bilinearly upsample to ``H, W`` (else the layer's resolution).
        batch_size: at most this many examples per forward pass (default: the whole batch).

    Returns:
        ``(B, 1, H, W)`` (or ``(B, 1, h, w)``).

    Reference: ``zhou2016learning``. Chapter 7.
    """
    check_input(x, min_dim=4)
    check_model_input(model, x)
    if callable(target) and not isinstance(target, torch.Tensor):
        raise TypeError("CAM explains a class: target must be an int or a (B,) tensor of class indices, "
                        "because its weights are the rows of the linear head; use grad_cam for a callable target.")
    if fc is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("CAM needs a linear head; the model has no nn.Linear.")
        fc = linears[-1]
    else:
        fc = resolve_layer(model, fc)
        if not isinstance(fc, nn.Linear):
            raise TypeError(f"fc must be an nn.Linear, got {type(fc).__name__}.")
    index = as_index(target, x.shape[0], fc.out_features, x.device)

    def weigh(a, g, chunk_index):
        if a.shape[1] != fc.in_features:
            raise ValueError(
                f"CAM does not apply here: the layer has {a.shape[1]} channels but the linear head expects "
                f"{fc.in_features} features; pass the layer whose activations feed the global average pooling.")
        return fc.weight[chunk_index][:, :, None, None]

    return cam_core(model, x, index, layer, weigh, find_layer=_gap_input, relu=False, upsample=upsample,
                     gradients=False, batch_size=batch_size)


# ---------------------------------------------------------------------------- Grad-CAM and variants
def grad_cam_weights(a, g, target):
    return g.mean((2, 3), keepdim=True)


def grad_cam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: nn.Module | str | None = None,
             upsample: bool = True, batch_size: int | None = None) -> torch.Tensor:
    """Grad-CAM: channels weighted by their spatially averaged gradient.

    .. math:: \\alpha_k^c = \\frac{1}{hw}\\sum_{ij}\\frac{\\partial y_c}{\\partial A^k_{ij}}, \\qquad
              M_c = \\operatorname{ReLU}\\Big(\\sum_k \\alpha_k^c A^k\\Big).

    On a network ending in global average pooling and a linear layer, with ``layer`` the
    pooling's input, :math:`\\alpha_k^c = w_{ck}/(hw)` and Grad-CAM is ``ReLU(CAM) / (h w)``.

    Args:
        model: the classifier.
        x: input batch ``(B, C, H, W)``.
        target: an int, a ``(B,)`` tensor of class indices, or a callable ``output -> (B,)``.
        layer: a module or dotted name (default: the last ``nn.Conv2d``); it must run once.
        upsample: bilinearly upsample to ``H, W`` (else the layer's resolution).
        batch_size: at most this many examples per pass (default: the whole batch).

    Returns:
        ``(B, 1, H, W)`` (or ``(B, 1, h, w)``), non-negative, not normalised.

    Reference: ``selvaraju2017grad``. Chapter 7.
    """
    return cam_core(model, x, target, layer, grad_cam_weights, upsample=upsample, batch_size=batch_size)


def grad_cam_pp_weights(a, g, target):
    g2 = g * g
    alpha = g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g + _GRAD_CAM_PP_EPS)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    return (alpha * g.clamp(min=0)).sum((2, 3), keepdim=True)


def grad_cam_pp(model: nn.Module, x: torch.Tensor, target: Target, *, layer: nn.Module | str | None = None,
                upsample: bool = True, batch_size: int | None = None) -> torch.Tensor:
    """Grad-CAM++: positive gradients weighted pixel by pixel before they are summed.

    With :math:`g = \\partial y_c / \\partial A^k_{ij}` and the closed form the paper derives for
    the exponential score :math:`\\exp(y_c)` (its eq. 19),

    .. math:: a^{kc}_{ij} = \\frac{g^2}{2 g^2 + \\sum_{ab} A^k_{ab}\\, g^3 + \\epsilon}, \\qquad
              \\alpha_k^c = \\sum_{ij} a^{kc}_{ij} \\operatorname{ReLU}(g), \\qquad
              M_c = \\operatorname{ReLU}\\Big(\\sum_k \\alpha_k^c A^k\\Big),

    where :math:`a = 0` where :math:`g = 0` and :math:`\\epsilon = 10^{-6}`. The common positive
    factor :math:`\\exp(y_c)` of the exponential score's gradient is dropped, as in
    pytorch-grad-cam, whose ``GradCAMPlusPlus`` this matches. Arguments and return value as in
    :func:`grad_cam`.

    Reference: ``chattopadhay2018grad``. Chapter 7.
    """
    return cam_core(model, x, target, layer, grad_cam_pp_weights, upsample=upsample, batch_size=batch_size)


def xgrad_cam_weights(a, g, target):
    return (a * g).sum((2, 3), keepdim=True) / (a.sum((2, 3), keepdim=True) + _XGRAD_CAM_EPS)


def xgrad_cam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: nn.Module | str | None = None,
              upsample: bool = True, batch_size: int | None = None) -> torch.Tensor:
    """XGrad-CAM: gradients averaged with the activations as weights.

    .. math:: \\alpha_k^c = \\frac{\\sum_{ij} A^k_{ij}\\, \\partial y_c / \\partial A^k_{ij}}
                                  {\\sum_{ij} A^k_{ij} + \\epsilon}, \\qquad
              M_c = \\operatorname{ReLU}\\Big(\\sum_k \\alpha_k^c A^k\\Big),

    with :math:`\\epsilon = 10^{-7}` as in pytorch-grad-cam's ``XGradCAM``. On a network ending in
    global average pooling and a linear layer (``layer`` the pooling's input) it equals Grad-CAM.
    Arguments and return value as in :func:`grad_cam`.

    Reference: ``fu2020axiom``. Chapter 7.
    """
    return cam_core(model, x, target, layer, xgrad_cam_weights, upsample=upsample, batch_size=batch_size)


def layer_cam_weights(a, g, target):
    return g.clamp(min=0)


def layer_cam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: nn.Module | str | None = None,
              upsample: bool = True, batch_size: int | None = None) -> torch.Tensor:
    """Layer-CAM: every activation weighted by its own positive gradient (a weight per pixel).

    .. math:: M_c(i, j) = \\operatorname{ReLU}\\Big(\\sum_k \\operatorname{ReLU}
              \\Big(\\frac{\\partial y_c}{\\partial A^k_{ij}}\\Big) A^k_{ij}\\Big).

    Pixel weights keep fine detail, so Layer-CAM also works on early layers. Arguments and
    return value as in :func:`grad_cam`.

    Reference: ``jiang2021layercam``. Chapter 7.
    """
    return cam_core(model, x, target, layer, layer_cam_weights, upsample=upsample, batch_size=batch_size)


def guided_grad_cam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: nn.Module | str | None = None,
                    batch_size: int | None = None) -> torch.Tensor:
    """Guided Grad-CAM: guided backpropagation masked by the upsampled Grad-CAM map.

    .. math:: \\phi(x) = \\operatorname{up}(M_c) \\odot \\phi^{\\text{guided}}(x),

    with :math:`\\operatorname{up}` bilinear (``align_corners=False``). Captum's
    ``GuidedGradCam`` upsamples with ``interpolate_mode="nearest"`` by default; with
    ``interpolate_mode="bilinear"`` it gives the same result as this function.

    Returns:
        A tensor of ``x``'s shape, signed.

    Reference: ``selvaraju2017grad``. Chapter 7.
    """
    with explaining(model, x, target, min_dim=4):
        return grad_cam(model, x, target, layer=layer, batch_size=batch_size) * guided_backprop(model, x, target, batch_size=batch_size)
