"""Interactive explorers for the chapters, and the static galleries that stand in for them.

A chapter describes one picture by a *draw* function: keyword settings in, a matplotlib
``Figure`` out (anything it prints is shown with the picture). From it this module builds

* :func:`explorer`: controls (dropdowns, sliders) and an ``Output`` widget that redraws on
  every change. It recomputes live in Jupyter and Colab, where a kernel runs;
* :func:`gallery`: a ``Tab`` of precomputed PNG images, one per setting. It needs no kernel,
  so the static book shows it as it was executed.

The explorer writes its picture into the ``Output`` widget's *state* (``outputs``) instead of
printing into it: state is stored with the notebook, renders on the static page, and sends no
output message that a notebook test (nbval) would see as a cell output. ``ipywidgets`` is
imported only inside the functions, so ``xaiutils`` does not need it. Chapters 4, 5 and 7 use
this module.
"""
from __future__ import annotations

import base64
import contextlib
import io
from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

Draw = Callable[..., Figure]


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes; the figure is closed, so a notebook does not show it a second time."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _render(draw: Draw, settings: Mapping, dpi: int) -> tuple[bytes, str]:
    """``draw(**settings)`` as PNG bytes, and the text it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        fig = draw(**settings)
    if not isinstance(fig, Figure):
        raise TypeError(f"draw must return a matplotlib Figure, got {type(fig).__name__}.")
    return figure_png(fig, dpi), printed.getvalue()


def _control(name: str, spec):
    """A control widget from a widget, a list of choices (dropdown) or a ``range`` (integer slider).

    The control gets no ``description``: the web page's widget manager typesets descriptions with
    the MathJax 2 API (``MathJax.Hub``), which raises an error on pages that load MathJax 3, as the
    book's pages do. :func:`_labelled` shows the name in an HTML label instead.
    """
    import ipywidgets as widgets

    if isinstance(spec, widgets.ValueWidget):
        return spec
    if isinstance(spec, range):
        if len(spec) == 0:
            raise ValueError(f"control {name!r}: the range is empty.")
        return widgets.IntSlider(value=spec.start, min=spec.start, max=spec[-1], step=spec.step,
                                 continuous_update=False)
    if isinstance(spec, (list, tuple)) and len(spec) > 0:
        return widgets.Dropdown(options=list(spec), value=spec[0])
    raise TypeError(f"control {name!r}: give an ipywidgets value widget, a non-empty list of choices "
                    f"or a range, got {spec!r}.")


def _labelled(name: str, control):
    """``control`` behind an HTML label (a widget's own ``description`` moves into the label)."""
    import html

    import ipywidgets as widgets

    label = getattr(control, "description", "") or name
    if getattr(control, "description", ""):
        control.description = ""
    return widgets.HBox([widgets.HTML(f"<b>{html.escape(label)}</b>&nbsp;"), control])


def explorer(draw: Draw, controls: Mapping[str, object], *, dpi: int = 80):
    """A live explorer: one control per keyword of ``draw``, and the picture below them.

    Args:
        draw: ``draw(**settings) -> Figure``; what it prints is shown above the picture.
        controls: keyword name -> an ``ipywidgets`` value widget, a list of choices (a dropdown,
            the first one selected) or a ``range`` (an integer slider starting at its first value).
            Each is shown behind an HTML label with its name (or the widget's ``description``).
        dpi: resolution of the picture.

    Returns:
        An ``ipywidgets.VBox`` of the controls and an ``Output`` widget, drawn once with the
        initial values (an error there is raised). Its ``controls`` (a dict of the control
        widgets), ``output`` and ``refresh()`` are attributes. Later changes redraw; an error
        then is shown in the output instead of the picture.
    """
    import ipywidgets as widgets

    if not controls:
        raise ValueError("an explorer needs at least one control.")
    boxes = {name: _control(name, spec) for name, spec in controls.items()}
    output = widgets.Output()

    def settings() -> dict:
        return {name: box.value for name, box in boxes.items()}

    def refresh() -> None:
        image, text = _render(draw, settings(), dpi)
        shown = [{"output_type": "stream", "name": "stdout", "text": text}] if text else []
        shown.append({"output_type": "display_data", "metadata": {},
                      "data": {"image/png": base64.b64encode(image).decode("ascii"),
                               "text/plain": "<Figure>"}})
        output.outputs = tuple(shown)

    def on_change(_change) -> None:
        try:
            refresh()
        except Exception as error:  # a kernel only logs errors raised in callbacks: show it instead
            output.outputs = ({"output_type": "stream", "name": "stderr",
                               "text": f"{type(error).__name__}: {error}\n"},)

    refresh()
    for box in boxes.values():
        box.observe(on_change, names="value")
    row = [_labelled(name, box) for name, box in boxes.items()]
    layout = widgets.VBox([widgets.HBox(row, layout=widgets.Layout(flex_flow="row wrap")), output])
    layout.controls, layout.output, layout.refresh = boxes, output, refresh
    return layout


def setting_title(setting: Mapping) -> str:
    """A short tab title for a setting: its values joined by commas."""
    return ", ".join(str(v) for v in setting.values())


def gallery(draw: Draw, settings: Sequence[Mapping], *, titles: Sequence[str] | None = None, dpi: int = 80):
    """A static gallery: ``draw(**setting)`` for each setting, precomputed, one tab per picture.

    Args:
        draw: the same function as for :func:`explorer`; printed text is not kept.
        settings: the keyword settings to draw, e.g. ``[{"method": "blur_ig", "steps": 32}, ...]``.
        titles: one tab title per setting (default: :func:`setting_title`).

    Returns:
        An ``ipywidgets.Tab`` of ``ipywidgets.Image`` widgets (PNG). It shows in the static book
        because the images are stored with the notebook when it is executed.
    """
    import ipywidgets as widgets

    if len(settings) == 0:
        raise ValueError("a gallery needs at least one setting.")
    titles = [setting_title(s) for s in settings] if titles is None else list(titles)
    if len(titles) != len(settings):
        raise ValueError(f"got {len(titles)} titles for {len(settings)} settings.")
    images = [widgets.Image(value=_render(draw, dict(s), dpi)[0], format="png") for s in settings]
    return widgets.Tab(children=images, titles=titles)
