"""Figures: images, attribution heatmaps, overlays and grids of examples x methods.

Conventions used throughout the book:

* a **signed** map is drawn with a diverging colour map centred at zero and a symmetric range
  ``[-m, m]`` (red: evidence for the target, blue: against it);
* an **absolute** map (``signed=False``) shows ``|attr|`` with a sequential colour map from 0;
* a multi-channel attribution is reduced to one value per pixel by summing over channels
  (the total contribution of the pixel), before taking ``abs`` for absolute maps;
* images are shown as they are (values in [0, 1]); only the heatmaps are scaled for display.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

SIGNED_CMAP = "RdBu_r"
ABSOLUTE_CMAP = "inferno"


def to_pixels(attr: torch.Tensor | np.ndarray) -> np.ndarray:
    """One value per pixel: sum a ``(C, H, W)`` map over channels; ``(H, W)`` is returned as is."""
    a = attr.detach().cpu().double().numpy() if isinstance(attr, torch.Tensor) else np.asarray(attr, dtype=float)
    if a.ndim == 3:
        a = a.sum(0)
    if a.ndim != 2:
        raise ValueError(f"expected an attribution of shape (C, H, W) or (H, W), got {a.shape}.")
    return a


def image_array(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A ``(C, H, W)`` image in [0, 1] as an array matplotlib can show (grey for one channel)."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    return np.clip(a, 0.0, 1.0)


def show_image(x, ax=None, title: str | None = None):
    """Draw an image ``(C, H, W)`` in [0, 1] without axes; return the axes."""
    ax = ax or plt.gca()
    a = image_array(x)
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def heatmap(attr, ax=None, *, signed: bool = True, vmax: float | None = None, title: str | None = None,
            colorbar: bool = False):
    """Draw an attribution map; ``vmax`` fixes the colour range (shared scales), else the map's own maximum."""
    ax = ax or plt.gca()
    a = to_pixels(attr)
    if not signed:
        a = np.abs(a)
    m = vmax if vmax is not None else float(np.abs(a).max()) or 1.0
    im = ax.imshow(a, cmap=SIGNED_CMAP if signed else ABSOLUTE_CMAP, vmin=-m if signed else 0.0, vmax=m)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def overlay(x, attr, ax=None, *, alpha: float = 0.6, signed: bool = False, title: str | None = None):
    """An attribution map drawn transparently over its input image (in grey)."""
    ax = ax or plt.gca()
    img = image_array(x)
    grey = img if img.ndim == 2 else img.mean(-1)
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
    a = to_pixels(attr)
    if a.shape != grey.shape:
        raise ValueError(f"attribution {a.shape} and image {grey.shape} differ in size; upsample the map first.")
    a = a if signed else np.abs(a)
    m = float(np.abs(a).max()) or 1.0
    ax.imshow(a, cmap=SIGNED_CMAP if signed else ABSOLUTE_CMAP, vmin=-m if signed else 0.0, vmax=m, alpha=alpha)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def grid(x: torch.Tensor, attrs: Mapping[str, torch.Tensor], *, signed: bool = True, shared_scale: bool = False,
         row_titles: Sequence[str] | None = None, size: float = 1.6):
    """A figure with one row per example: the input, then one column per method in ``attrs``.

    ``attrs`` maps a method name to a batch of maps with ``x``'s batch size. With
    ``shared_scale=True`` each column (method) uses one colour range over all its rows, so that
    magnitudes can be compared between examples; by default every map uses its own range.
    """
    names = list(attrs)
    rows, cols = x.shape[0], len(names) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for i in range(rows):
        show_image(x[i], axes[i, 0], title="input" if i == 0 else None)
        if row_titles is not None:
            axes[i, 0].text(-0.08, 0.5, row_titles[i], transform=axes[i, 0].transAxes, rotation=90,
                            ha="right", va="center", fontsize=9)
        for j, name in enumerate(names, start=1):
            batch = attrs[name]
            if batch.shape[0] != rows:
                raise ValueError(f"attrs[{name!r}] has {batch.shape[0]} maps for {rows} examples.")
            vmax = None
            if shared_scale:
                column = [to_pixels(batch[k]) for k in range(rows)]
                vmax = max(float(np.abs(c).max()) for c in column) or 1.0
            heatmap(batch[i], axes[i, j], signed=signed, vmax=vmax, title=name if i == 0 else None)
    fig.tight_layout()
    return fig


def image_row(x: torch.Tensor, titles: Sequence[str] | None = None, size: float = 1.6):
    """A figure showing a batch of images side by side, with optional titles."""
    fig, axes = plt.subplots(1, x.shape[0], figsize=(size * x.shape[0], size), squeeze=False)
    for i in range(x.shape[0]):
        show_image(x[i], axes[0, i], title=titles[i] if titles is not None else None)
    fig.tight_layout()
    return fig
