"""The book's vision transformers: torchvision's ``VisionTransformer``, tiny, for MNIST and the shapes images.

Chapter 15 explains these two models side by side with the CNNs of Parts II and III.
They *are* :class:`torchvision.models.VisionTransformer` instances, changed in one place only: the
patch embedding ``conv_proj`` reads the data's channels (1 for MNIST; torchvision assumes 3). So
every tool written for torchvision's ViT applies as it is: the module names ``conv_proj``,
``class_token``, ``encoder.pos_embedding``, ``encoder.layers.encoder_layer_{i}`` (each with
``ln_1``, ``self_attention`` -- an ``nn.MultiheadAttention`` --, ``ln_2``, ``mlp``), ``encoder.ln``
and ``heads.head``; lxt's patch of torchvision's ViT; pytorch-grad-cam's reshape of the patch tokens.

* :class:`MnistViT` -- 28x28 digits, 4x4 patches (a 7x7 grid of 49 tokens plus the class token).
* :class:`ShapesViT` -- 3x64x64 images, 8x8 patches (an 8x8 grid of 64 tokens plus the class token).
* :func:`patch_grid` -- the (rows, columns) of a ViT's patch tokens, to reshape a token map into an image.

Reference: ``dosovitskiy2021image`` (the architecture).
"""
from __future__ import annotations

import math

from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from .core.checks import check_int, describe


def _tiny_vit(model: VisionTransformer, channels: int) -> None:
    """Replace ``model.conv_proj`` by a patch embedding that reads ``channels`` channels, initialised as torchvision does."""
    p = model.patch_size
    model.conv_proj = nn.Conv2d(channels, model.hidden_dim, kernel_size=p, stride=p)
    nn.init.trunc_normal_(model.conv_proj.weight, std=math.sqrt(1 / (channels * p * p)))
    nn.init.zeros_(model.conv_proj.bias)


class MnistViT(VisionTransformer):
    """A vision transformer for MNIST: ``(B, 1, 28, 28)`` -> ``(B, 10)`` logits.

    Patches of 4x4 pixels (49 tokens and the class token), ``layers`` pre-norm encoder blocks of
    ``heads`` attention heads over ``hidden`` features, an MLP of ``mlp`` features (GELU), and a
    linear head on the class token. The defaults are the shipped ``mnist-vit`` of :mod:`xaiutils.zoo`.
    Initialised from torch's global generator (seed it for a reproducible model).
    """

    def __init__(self, *, patch: int = 4, layers: int = 3, heads: int = 4, hidden: int = 64, mlp: int = 128,
                 classes: int = 10):
        _check_options(28, patch, layers, heads, hidden, mlp, classes)
        super().__init__(image_size=28, patch_size=patch, num_layers=layers, num_heads=heads, hidden_dim=hidden,
                         mlp_dim=mlp, num_classes=classes)
        _tiny_vit(self, channels=1)


class ShapesViT(VisionTransformer):
    """A vision transformer for the shapes images: ``(B, 3, 64, 64)`` -> ``(B, 4)`` logits.

    Patches of 8x8 pixels (64 tokens and the class token); otherwise as :class:`MnistViT`. The
    defaults are the shipped ``shapes-vit`` of :mod:`xaiutils.zoo`.
    """

    def __init__(self, *, patch: int = 8, layers: int = 3, heads: int = 4, hidden: int = 64, mlp: int = 128,
                 classes: int = 4):
        _check_options(64, patch, layers, heads, hidden, mlp, classes)
        super().__init__(image_size=64, patch_size=patch, num_layers=layers, num_heads=heads, hidden_dim=hidden,
                         mlp_dim=mlp, num_classes=classes)
        _tiny_vit(self, channels=3)


def _check_options(size, patch, layers, heads, hidden, mlp, classes) -> None:
    patch = check_int(patch, "patch")
    if size % patch:
        raise ValueError(f"patch must divide the image side {size}; got {patch}.")
    for value, name in ((layers, "layers"), (heads, "heads"), (hidden, "hidden"), (mlp, "mlp"), (classes, "classes")):
        check_int(value, name)
    if hidden % heads:
        raise ValueError(f"hidden must be divisible by heads; got hidden={hidden}, heads={heads}.")


def patch_grid(model: nn.Module) -> tuple[int, int]:
    """The patch tokens of ``model`` (a torchvision ``VisionTransformer``) as a (rows, columns) grid.

    Token ``1 + r * columns + c`` (after the class token) is the patch in row ``r`` and column ``c``;
    a map over the tokens, without the class token, is ``map[:, 1:].reshape(B, rows, columns)``.
    """
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"model must be a torchvision VisionTransformer (such as MnistViT or ShapesViT); "
                        f"got {describe(model)}.")
    side = model.image_size // model.patch_size
    return side, side
