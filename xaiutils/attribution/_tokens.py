"""Patch tokens back on the image: the grid of a vision transformer's tokens (chapter 15).

A vision transformer cuts an ``H x W`` image into an ``h x w`` grid of patches and reads them as
tokens, row by row, usually after a class token: a layer's output is ``(B, T, D)`` with
``T = 1 + h w`` (or ``T = h w`` for a model without a class token). :func:`token_grid` finds
``h, w`` from ``T`` and the image's shape alone, so any patch embedding works (a convolution, a
linear layer on unfolded patches, ...); :func:`tokens_to_grid` reshapes tokens into the
``(B, D, h, w)`` feature map that the CAM family expects, as pytorch-grad-cam's ``reshape_transform``
does for a ViT.
"""
from __future__ import annotations

import math

import torch


def token_grid(tokens: int, image_size: tuple[int, int]) -> tuple[bool, int, int]:
    """``(has_class_token, h, w)`` for ``tokens`` tokens of an image of ``image_size = (H, W)``.

    The patch tokens form an ``h x w`` grid with the image's aspect ratio (``h W = w H``). A
    class token is assumed when ``tokens - 1`` makes such a grid; otherwise all ``tokens`` must.
    (Both cannot hold for more than one token: two consecutive numbers are not both ``h w`` with
    the same aspect ratio, since then ``k^2 (H W / g^2)`` would take two consecutive values.)
    """
    height, width = (int(s) for s in image_size)
    for has_class_token, patches in ((True, tokens - 1), (False, tokens)):
        grid = _grid(patches, height, width)
        if grid is not None:
            return has_class_token, *grid
    raise ValueError(f"the layer has {tokens} tokens, which are not a grid of patches (with or without a class "
                     f"token) of the {height}x{width} input: expected h*w or 1 + h*w tokens with h/w = "
                     f"{height}/{width}.")


def _grid(patches: int, height: int, width: int) -> tuple[int, int] | None:
    if patches < 1:
        return None
    g = math.gcd(height, width)
    unit = (height // g) * (width // g)  # the patches of the smallest grid with the image's aspect ratio
    if patches % unit:
        return None
    k = math.isqrt(patches // unit)
    if k * k * unit != patches:
        return None
    return k * height // g, k * width // g


def tokens_to_grid(tokens: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """``(B, T, D)`` tokens (batch first) as a ``(B, D, h, w)`` map of the patch tokens, the class token dropped."""
    if tokens.dim() != 3:
        raise ValueError(f"tokens must be (B, T, D); got shape {tuple(tokens.shape)}.")
    has_class_token, h, w = token_grid(tokens.shape[1], image_size)
    patches = tokens[:, 1:] if has_class_token else tokens
    return patches.reshape(tokens.shape[0], h, w, tokens.shape[2]).permute(0, 3, 1, 2)


def scores_to_grid(scores: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """``(B, T)`` scores per token as a ``(B, 1, h, w)`` map of the patch tokens, the class token dropped."""
    return tokens_to_grid(scores.unsqueeze(-1), image_size)
