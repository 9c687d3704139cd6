"""Figures: images, attribution heatmaps, overlays and grids of examples x methods.

Conventions used throughout the book:

* a **signed** map is drawn with a diverging colour map centred at zero and a symmetric range
  ``[-m, m]`` (red: evidence for the target, blue: against it);
* an **absolute** map (``signed=False``) shows ``|attr|`` with a sequential colour map from 0;
* a multi-channel attribution is reduced to one value per pixel by summing over channels
  (the total contribution of the pixel), before taking ``abs`` for absolute maps;
* images are shown as they are (values in [0, 1]); only the heatmaps are scaled for display.
* every pixel is drawn as a square (``interpolation="nearest"``): no smoothing that a map does not
  have, and PNGs of noisy images stay small.
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
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
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
    im = ax.imshow(a, cmap=SIGNED_CMAP if signed else ABSOLUTE_CMAP, vmin=-m if signed else 0.0, vmax=m,
                   interpolation="nearest")
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
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    a = to_pixels(attr)
    if a.shape != grey.shape:
        raise ValueError(f"attribution {a.shape} and image {grey.shape} differ in size; upsample the map first.")
    a = a if signed else np.abs(a)
    m = float(np.abs(a).max()) or 1.0
    ax.imshow(a, cmap=SIGNED_CMAP if signed else ABSOLUTE_CMAP, vmin=-m if signed else 0.0, vmax=m, alpha=alpha,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def grid(x: torch.Tensor, attrs: Mapping[str, torch.Tensor], *, signed: bool = True, shared_scale: bool = False,
         row_titles: Sequence[str] | None = None, size: float = 1.6, transpose: bool = False,
         colorbar: bool = True):
    """A figure with one row per example: the input, then one column per method in ``attrs``.

    ``attrs`` maps a method name to a batch of maps with ``x``'s batch size. With
    ``shared_scale=True`` each method uses one colour range over all its examples, so that
    magnitudes can be compared between examples; by default every map uses its own range.
    ``row_titles`` label the examples. ``transpose=True`` swaps the layout for many methods: one
    column per example (the inputs in the first row, titled by ``row_titles``), one row per method,
    named at its left.

    ``colorbar=True`` (the default) draws the scale: with ``shared_scale`` a colour bar with the
    values of each method (under its column, or right of its row when transposed); otherwise one
    key under the figure, from the map's own ``-max`` (blue, against the target) through 0 to
    ``+max`` (red, for it), because each map then has its own range.
    """
    names = list(attrs)
    examples = x.shape[0]
    for name in names:
        if attrs[name].shape[0] != examples:
            raise ValueError(f"attrs[{name!r}] has {attrs[name].shape[0]} maps for {examples} examples.")
    rows, cols = (len(names) + 1, examples) if transpose else (examples, len(names) + 1)
    label_width = 1.5 if transpose else 0.0  # inches for the method names at the left
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + label_width, size * rows), squeeze=False)

    def cell(example: int, column: int):
        return axes[column, example] if transpose else axes[example, column]

    for i in range(examples):
        if transpose:
            show_image(x[i], cell(i, 0), title=row_titles[i] if row_titles is not None else None)
        else:
            show_image(x[i], cell(i, 0), title="input" if i == 0 else None)
            if row_titles is not None:
                cell(i, 0).text(-0.08, 0.5, row_titles[i], transform=cell(i, 0).transAxes, rotation=90,
                                ha="right", va="center", fontsize=9)
    for j, name in enumerate(names, start=1):
        batch = attrs[name]
        vmax = None
        if shared_scale:
            vmax = max(float(np.abs(to_pixels(batch[k])).max()) for k in range(examples)) or 1.0
        for i in range(examples):
            title = name if i == 0 and not transpose else None
            heatmap(batch[i], cell(i, j), signed=signed, vmax=vmax, title=title)
        if transpose:
            cell(0, j).text(-0.08, 0.5, name, transform=cell(0, j).transAxes, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    if colorbar and shared_scale:
        for j in range(1, len(names) + 1):
            _column_colorbar(cell(examples - 1, j), vertical=transpose, signed=signed)
    elif colorbar:
        colour_key(fig, signed=signed)
    return fig


def _column_colorbar(ax, *, vertical: bool, signed: bool):
    """A small colour bar with the values of the map drawn in ``ax`` (below it, or right of it)."""
    image = ax.get_images()[0]
    low, high = image.get_clim()
    box = [1.04, 0.1, 0.07, 0.8] if vertical else [0.1, -0.17, 0.8, 0.07]
    cax = ax.inset_axes(box)
    cax.set_label("colorbar")
    bar = ax.figure.colorbar(image, cax=cax, orientation="vertical" if vertical else "horizontal")
    bar.set_ticks([low, 0.0, high] if signed else [low, high])
    bar.set_ticklabels([f"{v:.2g}" for v in ([low, 0.0, high] if signed else [low, high])])
    bar.ax.tick_params(labelsize=7, length=2, pad=1)
    return bar


def colour_key(fig, *, signed: bool = True, width: float = 3.2):
    """A key under ``fig`` for maps that each use their own range: what the colours mean.

    Signed: blue is ``-max`` (against the target), white 0, red ``+max`` (for the target), with
    ``max`` each map's own largest ``|value|``; absolute: black 0 to bright ``max``.
    """
    fig_width, fig_height = fig.get_size_inches()
    share = min(width / fig_width, 0.9)
    cax = fig.add_axes([(1 - share) / 2, -0.42 / fig_height, share, 0.1 / fig_height])
    cax.set_label("colour key")
    norm = plt.Normalize(-1.0 if signed else 0.0, 1.0)
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=SIGNED_CMAP if signed else ABSOLUTE_CMAP)
    bar = fig.colorbar(mappable, cax=cax, orientation="horizontal")
    if signed:
        bar.set_ticks([-1.0, 0.0, 1.0], labels=["\u2212max", "0", "+max"])
        label = "blue: against the target, red: for it (max: each map's largest |value|)"
    else:
        bar.set_ticks([0.0, 1.0], labels=["0", "max"])
        label = "|attribution| (max: each map's largest value)"
    bar.ax.tick_params(labelsize=7, length=2, pad=1)
    bar.set_label(label, fontsize=8)
    return bar


def image_row(x: torch.Tensor, titles: Sequence[str] | None = None, size: float = 1.6):
    """A figure showing a batch of images side by side, with optional titles."""
    fig, axes = plt.subplots(1, x.shape[0], figsize=(size * x.shape[0], size), squeeze=False)
    for i in range(x.shape[0]):
        show_image(x[i], axes[0, i], title=titles[i] if titles is not None else None)
    fig.tight_layout()
    return fig
