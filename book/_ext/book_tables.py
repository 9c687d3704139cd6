"""Numbered, captioned tables for the tables a notebook prints.

The chapters print their tables as text (pandas' ``to_string``), which reads the same in
Jupyter, Colab and the book, and which nbval compares number by number. Sphinx numbers only
``table`` nodes, so a printed table could not be cited as "Table 10.3". A code cell whose
metadata carries ::

    "table": {"caption": "AOPC of every method, most relevant first. Look for ...",
              "name": "tbl-aopc"}

has its printed output (every stdout stream of the cell) wrapped in a one-cell table whose title
is the caption; Sphinx numbers it per chapter, and ``{numref}`tbl-aopc``` cites it. Figures use
myst-nb's own cell metadata (``"mystnb": {"figure": {"caption": ..., "name": ...}}``).

Captions may use ``code`` and $maths$; nothing else of MyST is parsed in them.
"""
import re

from docutils import nodes
from docutils.transforms import Transform

INLINE = re.compile(r"(`[^`]+`|\$[^$]+\$)")


def caption_nodes(text: str) -> list[nodes.Node]:
    """A caption's text as docutils inline nodes: ``code`` literals, $maths$, the rest as text."""
    parts = []
    for piece in INLINE.split(text):
        if not piece:
            continue
        if piece.startswith("`"):
            parts.append(nodes.literal(piece, piece[1:-1]))
        elif piece.startswith("$"):
            parts.append(nodes.math(piece, piece[1:-1]))
        else:
            parts.append(nodes.Text(piece))
    return parts


def table_around(blocks: list[nodes.Element], caption: str) -> nodes.table:
    """A one-column table whose only cell holds ``blocks`` and whose title is ``caption``."""
    title = nodes.title(caption, "", *caption_nodes(caption))
    entry = nodes.entry("", *blocks)
    tgroup = nodes.tgroup(cols=1)
    tgroup += nodes.colspec(colwidth=100)
    tgroup += nodes.tbody("", nodes.row("", entry))
    return nodes.table("", title, tgroup, classes=["output-table"])


class CaptionPrintedTables(Transform):
    """Wrap the stdout of every code cell with ``table`` metadata in a numbered table."""

    default_priority = 500

    def apply(self):
        for cell in list(self.document.findall(nodes.container)):
            if cell.get("nb_element") != "cell_code":
                continue
            spec = (cell.get("cell_metadata") or {}).get("table")
            if not spec:
                continue
            source, line = cell.get("source"), cell.get("line")
            if not isinstance(spec, dict) or not spec.get("caption") or not spec.get("name"):
                self.document.reporter.warning(
                    f"cell metadata 'table' must be {{'caption': ..., 'name': ...}}; got {spec!r}",
                    source=source, line=line)
                continue
            outputs = [child for child in cell.children if child.get("nb_element") == "cell_code_output"]
            blocks = [block for output in outputs for block in output.children
                      if isinstance(block, nodes.literal_block) and "stream" in block["classes"]]
            if not blocks:
                self.document.reporter.warning(
                    f"table {spec['name']!r}: the cell printed nothing to caption", source=source, line=line)
                continue
            first = blocks[0]
            parent, index = first.parent, first.parent.index(first)
            for block in blocks:
                block.parent.remove(block)
            table = table_around(blocks, str(spec["caption"]))
            table.source, table.line = source, line
            table["names"].append(nodes.fully_normalize_name(str(spec["name"])))
            self.document.note_explicit_target(table, table)
            parent.insert(index, table)


def setup(app):
    app.add_transform(CaptionPrintedTables)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
