"""Checks of the built book (run by `make test` after `jupyter-book build`)."""
from pathlib import Path

import pytest

HTML = Path(__file__).resolve().parents[2] / "_build" / "html"


def content_pages() -> list[Path]:
    """Every HTML page of the book except Sphinx's generated search and index pages."""
    skip = {"search.html", "genindex.html", "py-modindex.html"}
    return sorted(p for p in HTML.rglob("*.html") if p.name not in skip and "_static" not in p.parts
                  and "_sources" not in p.parts)


@pytest.fixture(scope="session")
def html_root() -> Path:
    if not (HTML / "index.html").exists():
        pytest.fail("the book is not built: run `make book` (or `make test`, which builds it) first.")
    return HTML


@pytest.fixture(scope="session")
def pages(html_root) -> list[Path]:
    found = content_pages()
    assert len(found) >= 4, f"expected the book's pages under {html_root}, found {found}"
    return found
