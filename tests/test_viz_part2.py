"""viz.grid with transpose=True: one column per example, one row per method (chapter 8)."""
import matplotlib

matplotlib.use("Agg")  # tests only; the book keeps matplotlib's inline backend

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from xaiutils import viz  # noqa: E402


def test_transposed_grid_has_one_column_per_example_and_one_row_per_method():
    x = torch.rand(2, 3, 8, 8)
    attrs = {"a": torch.randn(2, 3, 8, 8), "b": torch.randn(2, 1, 8, 8) * 10, "c": torch.randn(2, 3, 8, 8)}
    fig = viz.grid(x, attrs, transpose=True, shared_scale=True, row_titles=["one", "two"])
    axes = fig.axes
    assert len(axes) == 2 * 4  # (1 input row + 3 methods) x 2 examples, row-major
    assert [ax.get_title() for ax in axes[:2]] == ["one", "two"]
    assert [t.get_text() for t in axes[2].texts] == ["a"] and not axes[3].texts
    assert axes[2 * 2].get_images()[0].get_clim() == axes[2 * 2 + 1].get_images()[0].get_clim()  # "b", shared
    same = viz.grid(x, attrs)  # the default layout is unchanged: one row per example, plus the colour key
    maps = [ax for ax in same.axes if ax.get_label() != "colour key"]
    assert len(maps) == 2 * 4 and maps[1].get_title() == "a" and len(same.axes) == 2 * 4 + 1
    with pytest.raises(ValueError, match="maps for 2 examples"):
        viz.grid(x, {"bad": torch.randn(3, 3, 8, 8)}, transpose=True)
    plt.close("all")
