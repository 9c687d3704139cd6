"""Every figure and table of the book has a numbered caption, and the text cites it by number.

Figures: a code cell that shows a picture (a PNG or a widget) carries myst-nb's
``"mystnb": {"figure": {"caption", "name"}}``; one picture per cell, so that one number names one
figure. Tables: a code cell that prints a table carries ``"table": {"caption", "name"}``, which
``book/_ext/book_tables.py`` turns into a numbered table. Every name is cited with ``{numref}``
in its own notebook, and no sentence points at "the table above" any more.

Exercise solutions (cells tagged ``solution``) are the exception: they are removed from the student
edition, so a number given to their output would leave a dangling citation there. They carry no
caption; what they print is the learner's own result.
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PICTURES = ("image/png", "application/vnd.jupyter.widget-view+json")
POINTERS = re.compile(r"\b(table|figure|plot|panel|picture|grid)s? (above|below)\b", re.IGNORECASE)
MIN_CAPTION_WORDS = 8


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def is_solution(cell: dict) -> bool:
    return "solution" in cell.get("metadata", {}).get("tags", [])


def pictures(cell: dict) -> int:
    return sum(1 for out in cell.get("outputs", []) if any(mime in out.get("data", {}) for mime in PICTURES))


def printed(cell: dict) -> str:
    return "".join("".join(out.get("text", "")) for out in cell.get("outputs", []) if out["output_type"] == "stream")


def looks_like_table(text: str) -> bool:
    """Three consecutive printed lines with numbers in columns (two or more spaces apart)."""
    run = 0
    for line in text.splitlines():
        run = run + 1 if re.search(r"\S\s{2,}\S", line) and re.search(r"\d", line) else 0
        if run >= 3:
            return True
    return False


def captions(path: Path) -> list[tuple[str, str, str]]:
    """``(kind, name, caption)`` of every figure and table of a notebook."""
    found = []
    for cell in cells(path):
        meta = cell.get("metadata", {})
        figure = meta.get("mystnb", {}).get("figure")
        if figure:
            found.append(("figure", figure.get("name", ""), figure.get("caption", "")))
        if meta.get("table"):
            found.append(("table", meta["table"].get("name", ""), meta["table"].get("caption", "")))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_picture_is_a_captioned_figure(path):
    missing, several = [], []
    for index, cell in enumerate(cells(path)):
        if cell["cell_type"] != "code" or not pictures(cell) or is_solution(cell):
            continue
        if pictures(cell) > 1:
            several.append(index)
        if not cell["metadata"].get("mystnb", {}).get("figure"):
            missing.append(index)
    assert not missing, f"{path.name}: cells {missing} show a picture without a figure caption"
    assert not several, f"{path.name}: cells {several} show more than one picture under one caption"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_printed_table_is_a_captioned_table(path):
    missing = [index for index, cell in enumerate(cells(path))
               if cell["cell_type"] == "code" and looks_like_table(printed(cell)) and not cell["metadata"].get("table")
               and not is_solution(cell)]
    assert not missing, f"{path.name}: cells {missing} print a table without a table caption"
    empty = [index for index, cell in enumerate(cells(path))
             if cell["cell_type"] == "code" and cell["metadata"].get("table") and not printed(cell)]
    assert not empty, f"{path.name}: cells {empty} have a table caption but print nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_captions_say_what_is_shown_and_are_cited_by_number(path):
    text = "\n".join("".join(cell["source"]) for cell in cells(path) if cell["cell_type"] == "markdown")
    for kind, name, caption in captions(path):
        prefix = "fig-" if kind == "figure" else "tbl-"
        assert name.startswith(prefix), f"{path.name}: {kind} {name!r} should be named {prefix}..."
        assert len(caption.split()) >= MIN_CAPTION_WORDS, f"{path.name}: {name}'s caption is too short: {caption!r}"
        assert f"{{numref}}`{name}`" in text, f"{path.name}: {kind} {name} is never cited with {{numref}}"
    pointers = sorted({match.group(0) for match in POINTERS.finditer(text)})
    assert not pointers, f"{path.name}: cite figures and tables by number, not {pointers}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solutions_carry_no_caption(path):
    captioned = [index for index, cell in enumerate(cells(path)) if is_solution(cell)
                 and (cell["metadata"].get("table") or cell["metadata"].get("mystnb", {}).get("figure"))]
    assert not captioned, (f"{path.name}: solution cells {captioned} have a caption; the student edition removes "
                           "them, so their numbers would dangle there. Remove the caption and its citation.")


def test_names_are_unique_in_the_book():
    names = [name for path in NOTEBOOKS for _, name, _ in captions(path)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    assert not repeated, f"figure or table names used twice: {repeated}"


def test_the_table_heuristic_finds_printed_tables_and_nothing_else():
    table = "AOPC:\ngrad_cam      10.309\ngradient_x_input   9.073\ndeeplift   9.020\n"
    assert looks_like_table(table)
    assert not looks_like_table("✓ every method beats the random map\naccuracy 0.97\n10 maps of 100 digits\n")
