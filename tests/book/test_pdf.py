"""The PDF of the book (`make pdf`): complete, with figures, maths and the bibliography.

Skipped unless the PDF exists (``_build/latex/robust-explainability.pdf``, or ``XAI_BOOK_PDF``);
`make test-pdf` builds it when missing. Needs poppler-utils (pdfinfo, pdftotext, pdfimages,
pdftoppm), which `make tex` installs. A few pages are rendered to PNG in ``pages/`` next to the
PDF, to look at.
"""
import os
import re
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PDF = Path(os.environ.get("XAI_BOOK_PDF") or ROOT / "_build" / "latex" / "robust-explainability.pdf")
pytestmark = pytest.mark.skipif(not PDF.exists(), reason=f"no PDF at {PDF}: run `make pdf`")
LIGATURES = {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl"}


def run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def text() -> str:
    """The PDF's text, whitespace, ligatures and LaTeX's curly quotes normalised, so that phrases can be searched."""
    raw = run("pdftotext", "-enc", "UTF-8", str(PDF), "-")
    for ligature, letters in LIGATURES.items():
        raw = raw.replace(ligature, letters)
    raw = raw.replace("\u2019", "'").replace("\u2018", "'")
    return re.sub(r"\s+", " ", raw.replace("-\n", ""))


def chapter_titles() -> list[tuple[str, bool]]:
    """(title, numbered) of every notebook in the table of contents, in order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    titles = []
    for part in toc["parts"]:
        for chapter in part["chapters"]:
            path = ROOT / f"{chapter['file']}.ipynb"
            if chapter["file"].startswith("notebooks/") and path.exists():
                nb = nbformat.read(path, as_version=4)
                first = next(c.source for c in nb.cells if c.cell_type == "markdown")
                title = re.match(r"#\s+(.+)", first.strip())[1].strip().replace("`", "")
                titles.append((title, bool(part.get("numbered"))))
    return titles


def test_every_chapter_is_in_the_pdf_numbered_as_online(text):
    pages = int(re.search(r"^Pages:\s+(\d+)", run("pdfinfo", str(PDF)), re.MULTILINE)[1])
    titles = chapter_titles()
    assert pages >= 10 * len(titles), f"only {pages} pages for {len(titles)} chapters"
    missing = [t for t, _ in titles if t not in text]
    assert not missing, f"chapters missing from the PDF: {missing}"
    # the running heads say "Chapter 4. Path methods: ...": the numbers the website and the text use
    numbered = [t for t, is_numbered in titles if is_numbered]
    wrong = [f"{n}. {t}" for n, t in enumerate(numbered, 1) if f"Chapter {n}. {t}" not in text]
    assert not wrong, f"chapters not numbered as on the website: {wrong}"


def test_figures_maths_and_citations_made_it(text):
    images = run("pdfimages", "-list", str(PDF)).splitlines()[2:]
    assert len(images) >= 50, f"only {len(images)} images in the PDF: figures are missing"
    # widgets: a gallery's pictures stand in for the widget, not its Python repr (book/_ext/book_print.py)
    assert "Tab(children=(Image(value=b" not in text, "a widget printed as its repr instead of its pictures"
    # labelled equations are typeset and numbered by chapter, as (4.2); LaTeX prints ?? for a
    # reference or citation it could not resolve
    numbers = set(re.findall(r"\((\d+\.\d+)\)", text))
    assert len(numbers) >= 20, f"only {len(numbers)} numbered equations in the PDF"
    assert "??" not in text, "an unresolved reference (??) in the PDF"
    assert re.search(r"Nielsen et al\. \[2022\]", text), "the author-year citation of the tutorial paper is missing"


def test_bibliography_is_there(text):
    tail = text[text.rfind("Bibliography"):]
    assert "Bibliography" in text
    for title in ("Robust Explainability: A Tutorial on Gradient-Based Attribution", "Axiomatic Attribution"):
        assert title.lower() in text.lower(), f"reference {title!r} missing from the bibliography"
    assert len(tail) > 2000, "the bibliography is nearly empty"


def test_pages_render():
    out = PDF.parent / "pages"
    out.mkdir(exist_ok=True)
    for page in (1, 5, 40):
        run("pdftoppm", "-png", "-r", "60", "-f", str(page), "-l", str(page), "-singlefile", str(PDF), str(out / f"page-{page:03d}"))
        image = out / f"page-{page:03d}.png"
        assert image.stat().st_size > 5000, f"page {page} rendered blank"
