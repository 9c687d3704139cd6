"""Explorers and galleries build without a frontend; the gallery has one image per setting."""
import base64

import matplotlib

matplotlib.use("Agg")  # tests only; the book keeps matplotlib's inline backend

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

widgets = pytest.importorskip("ipywidgets")

from xaiutils.widgets import explorer, figure_png, gallery  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def draw(method="a", steps=1):
    fig, ax = plt.subplots(figsize=(2, 1 + steps / 10))
    ax.plot(range(steps + 1))
    ax.set_title(method)
    print(f"{method} with {steps} steps")
    return fig


def test_gallery_has_one_image_per_setting():
    settings = [{"method": "a", "steps": 1}, {"method": "b", "steps": 4}, {"method": "a", "steps": 8}]
    open_before = plt.get_fignums()
    tabs = gallery(draw, settings)
    assert isinstance(tabs, widgets.Tab) and len(tabs.children) == len(settings)
    assert all(isinstance(c, widgets.Image) and c.format == "png" and bytes(c.value).startswith(PNG) for c in tabs.children)
    assert list(tabs.titles) == ["a, 1", "b, 4", "a, 8"]
    assert len({bytes(c.value) for c in tabs.children}) == 3
    assert plt.get_fignums() == open_before  # every figure was closed
    assert list(gallery(draw, settings[:1], titles=["one"]).titles) == ["one"]
    with pytest.raises(ValueError, match="2 titles for 3 settings"):
        gallery(draw, settings, titles=["x", "y"])
    with pytest.raises(ValueError, match="at least one setting"):
        gallery(draw, [])


def test_explorer_draws_into_its_output_and_redraws_on_change():
    calls = []

    def counting(**kwargs):
        calls.append(kwargs)
        return draw(**kwargs)

    box = explorer(counting, {"method": ["a", "b"], "steps": range(2, 10, 2)})
    assert isinstance(box, widgets.VBox) and isinstance(box.output, widgets.Output)
    assert isinstance(box.controls["method"], widgets.Dropdown) and isinstance(box.controls["steps"], widgets.IntSlider)
    assert (box.controls["steps"].min, box.controls["steps"].max, box.controls["steps"].step) == (2, 8, 2)
    # names are HTML labels, not descriptions: the book's MathJax 3 pages cannot typeset descriptions
    assert all(c.description == "" for c in box.controls.values())
    labels = [row.children[0].value for row in box.children[0].children]
    assert labels == ["<b>method</b>&nbsp;", "<b>steps</b>&nbsp;"]
    assert calls == [{"method": "a", "steps": 2}]
    stream, picture = box.output.outputs
    assert stream["text"] == "a with 2 steps\n"
    assert base64.b64decode(picture["data"]["image/png"]).startswith(PNG)
    box.controls["method"].value = "b"
    box.controls["steps"].value = 6
    assert calls[-1] == {"method": "b", "steps": 6} and len(calls) == 3
    assert box.output.outputs[0]["text"] == "b with 6 steps\n"
    assert plt.get_fignums() == []


def test_explorer_accepts_widgets_and_shows_errors_after_the_first_draw():
    slider = widgets.IntSlider(value=3, min=1, max=5, description="number of steps")

    def fragile(steps):
        if steps == 5:
            raise ValueError("too many steps")
        return draw(steps=steps)

    box = explorer(fragile, {"steps": slider})
    assert box.controls["steps"] is slider and slider.description == ""
    assert box.children[0].children[0].children[0].value == "<b>number of steps</b>&nbsp;"
    slider.value = 5
    (error,) = box.output.outputs
    assert error["name"] == "stderr" and "ValueError: too many steps" in error["text"]
    with pytest.raises(ValueError, match="too many steps"):
        box.refresh()
    with pytest.raises(TypeError, match="Figure"):
        explorer(lambda steps: None, {"steps": range(3)})
    with pytest.raises(TypeError, match="control 'k'"):
        explorer(draw, {"k": 3})


def test_figure_png_closes_the_figure():
    fig = plt.figure(figsize=(1, 1))
    assert figure_png(fig).startswith(PNG) and not plt.fignum_exists(fig.number)
