"""Plotting helpers return figures and do not rescale the data."""
import matplotlib

matplotlib.use("Agg")  # tests only; the book keeps matplotlib's inline backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from xaiutils import viz  # noqa: E402


def test_signed_heatmap_is_symmetric_around_zero():
    fig, ax = plt.subplots()
    attr = torch.tensor([[[-1.0, 3.0], [0.5, 0.0]]])
    viz.heatmap(attr, ax)
    image = ax.get_images()[0]
    assert image.get_clim() == (-3.0, 3.0) and image.get_cmap().name == viz.SIGNED_CMAP
    viz.heatmap(attr, ax, signed=False)
    assert ax.get_images()[1].get_clim() == (0.0, 3.0)
    plt.close(fig)


def test_channels_are_summed_per_pixel():
    attr = torch.ones(3, 4, 4)
    assert np.allclose(viz.to_pixels(attr), 3.0)
    with pytest.raises(ValueError, match="shape"):
        viz.to_pixels(torch.ones(2, 3, 4, 4))


def test_images_are_shown_unscaled():
    fig, ax = plt.subplots()
    viz.show_image(torch.full((1, 4, 4), 0.25), ax)
    assert np.allclose(ax.get_images()[0].get_array(), 0.25) and ax.get_images()[0].get_clim() == (0, 1)
    plt.close(fig)


def test_grid_has_one_row_per_example_and_shared_scale():
    x = torch.rand(2, 3, 8, 8)
    attrs = {"a": torch.randn(2, 3, 8, 8), "b": torch.randn(2, 3, 8, 8) * 10}
    fig = viz.grid(x, attrs, shared_scale=True, row_titles=["one", "two"])
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 6  # colour bars are insets
    clims = [fig.axes[k].get_images()[0].get_clim() for k in (2, 5)]  # column "b", both rows
    assert clims[0] == clims[1]
    with pytest.raises(ValueError, match="maps for 2 examples"):
        viz.grid(x, {"bad": torch.randn(3, 3, 8, 8)})
    plt.close("all")


def colorbars(fig):
    """The colour bars drawn inside the axes of ``fig`` (inset axes are children, not figure axes)."""
    return [child for ax in fig.axes for child in ax.child_axes if child.get_label() == "colorbar"]


def test_shared_scale_grid_has_a_colorbar_per_method_with_its_range():
    x = torch.rand(2, 1, 8, 8)
    attrs = {"a": torch.randn(2, 1, 8, 8), "b": torch.randn(2, 1, 8, 8) * 10}
    for transpose in (False, True):
        fig = viz.grid(x, attrs, shared_scale=True, transpose=transpose)
        bars = colorbars(fig)
        assert len(bars) == 2
        for bar, name in zip(bars, attrs):
            ticks = bar.get_xticks() if not transpose else bar.get_yticks()
            largest = float(attrs[name].abs().max())
            assert np.allclose(sorted(ticks), [-largest, 0.0, largest], rtol=1e-6)
    unsigned = viz.grid(x, attrs, shared_scale=True, signed=False)
    assert all(np.allclose(bar.get_xticks()[0], 0.0) for bar in colorbars(unsigned))
    assert not colorbars(viz.grid(x, attrs, shared_scale=True, colorbar=False))
    plt.close("all")


def test_grid_with_own_ranges_has_one_key_that_says_what_the_colours_mean():
    x = torch.rand(2, 1, 8, 8)
    attrs = {"a": torch.randn(2, 1, 8, 8)}
    fig = viz.grid(x, attrs)
    keys = [ax for ax in fig.axes if ax.get_label() == "colour key"]
    assert len(keys) == 1 and not colorbars(fig)
    labels = [t.get_text() for t in keys[0].get_xticklabels()]
    assert labels == ["\u2212max", "0", "+max"] and "red: for it" in keys[0].get_xlabel()
    absolute = viz.grid(x, attrs, signed=False)
    key = [ax for ax in absolute.axes if ax.get_label() == "colour key"][0]
    assert [t.get_text() for t in key.get_xticklabels()] == ["0", "max"]
    assert not [ax for ax in viz.grid(x, attrs, colorbar=False).axes if ax.get_label() == "colour key"]
    plt.close("all")


def test_overlay_and_row():
    fig, ax = plt.subplots()
    viz.overlay(torch.rand(3, 8, 8), torch.randn(3, 8, 8), ax, title="t")
    assert len(ax.get_images()) == 2
    with pytest.raises(ValueError, match="upsample"):
        viz.overlay(torch.rand(3, 8, 8), torch.randn(1, 4, 4), ax)
    assert len(viz.image_row(torch.rand(3, 1, 8, 8), titles=["a", "b", "c"]).axes) == 3
    plt.close("all")
