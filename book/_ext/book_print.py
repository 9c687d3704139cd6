"""The PDF (`make pdf`): widget outputs become the pictures they hold, with a short note.

A LaTeX page cannot run an ipywidgets explorer or switch the tabs of a gallery, and myst-nb would
fall back to the output's text/plain, a screenful of ``Tab(children=(Image(value=b'\\x89PNG...``.
Before myst-nb picks a mime type (its ``SelectMimeType``, priority 4), every output that carries
a widget view is replaced, for builders that write LaTeX, by

* the images inside the widget, read from the widget state stored in the notebook: every tab of
  a gallery (``Tab`` of ``Image``), each under its tab title, and the view an explorer showed
  when the notebook was executed (the images of its ``Output``);
* one italic line saying that the widget is interactive in the online book, Jupyter and Colab.
"""
import base64
import hashlib
import json
import re
from pathlib import Path

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
NOTE = "Interactive widget: it runs in the online book, in Jupyter and in Colab."
GALLERY_NOTE = "Interactive gallery in the online book, in Jupyter and in Colab; here all of its pictures."
EXPLORER_NOTE = "Interactive explorer in the online book, in Jupyter and in Colab; here the view it opens with."


def widget_state(notebook: Path) -> dict:
    """``{model_id: model}`` of the widget state stored in a notebook's metadata."""
    try:
        metadata = json.loads(notebook.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError):
        return {}
    return metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def pictures(state: dict, model_id: str, title: str = "") -> list[tuple[str, bytes]]:
    """``(title, PNG bytes)`` of every image in a widget and its children, in display order."""
    model = state.get(model_id)
    if model is None:
        return []
    name, attrs = model.get("model_name", ""), model.get("state", {})
    if name == "ImageModel":
        for buffer in model.get("buffers", []):
            if buffer.get("path") == ["value"] and attrs.get("format", "png") == "png":
                return [(title, base64.b64decode(buffer["data"]))]
        return []
    if name == "OutputModel":
        return [(title, base64.b64decode(out["data"]["image/png"])) for out in attrs.get("outputs", [])
                if "image/png" in out.get("data", {})]
    children = [c.removeprefix("IPY_MODEL_") for c in attrs.get("children", [])]
    titles = list(attrs.get("titles") or []) if name in ("TabModel", "AccordionModel") else []
    found = []
    for i, child in enumerate(children):
        found += pictures(state, child, titles[i] if i < len(titles) else title)
    return found


class WidgetsInPrint(SphinxPostTransform):
    default_priority = 3
    formats = ("latex",)

    def run(self, **kwargs) -> None:
        bundles = [n for n in self.document.findall(nodes.container) if n.get("nb_element") == "mime_bundle"
                   and any(child.get("mime_type") == WIDGET_VIEW for child in n.children)]
        if not bundles:
            return
        # the LaTeX builder transforms one tree of all pages: each output knows its notebook
        states = {}
        outdir = Path(self.app.builder.outdir)
        for bundle in bundles:
            source = bundle.source or self.env.doc2path(self.env.docname)
            if source not in states:
                states[source] = widget_state(Path(source))
            state = states[source]
            view = next(child for child in bundle.children if child.get("mime_type") == WIDGET_VIEW)
            # the view's JSON, as myst-nb embeds it (possibly with escaped quotes)
            match = re.search(r'model_id\\?"\s*:\s*\\?"([\w-]+)', view.astext())
            model = state.get(match[1], {}) if match else {}
            found = pictures(state, match[1]) if match else []
            note = NOTE if not found else GALLERY_NOTE if model.get("model_name") == "TabModel" else EXPLORER_NOTE
            replacement = [nodes.paragraph("", "", nodes.emphasis(note, note))]
            for title, png in found:
                name = f"widget-{hashlib.sha256(png).hexdigest()[:16]}.png"
                (outdir / name).write_bytes(png)
                if title:
                    replacement.append(nodes.paragraph("", "", nodes.strong(title, title)))
                replacement.append(nodes.image(uri=name, candidates={"*": name}, width="70%"))
            bundle.replace_self(replacement)


def setup(app):
    app.add_post_transform(WidgetsInPrint)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
