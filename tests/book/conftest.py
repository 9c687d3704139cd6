"""Checks of the built book (run by `make test` after `jupyter-book build`).

They check `_build/html` unless ``XAI_BOOK_HTML`` names another built copy, and the browser test
serves it over http unless ``XAI_BOOK_SCHEME=file`` opens the files directly (file://), as a
reader of the unzipped `make dist` archive does; `make test-dist` sets both.
"""
import os
from pathlib import Path

import pytest

HTML = Path(os.environ.get("XAI_BOOK_HTML") or Path(__file__).resolve().parents[2] / "_build" / "html").resolve()
SCHEME = os.environ.get("XAI_BOOK_SCHEME", "http")
if SCHEME not in ("http", "file"):
    raise pytest.UsageError(f"XAI_BOOK_SCHEME must be http or file, not {SCHEME!r}")


def content_pages() -> list[Path]:
    """Every HTML page of the book except Sphinx's generated search and index pages."""
    skip = {"search.html", "genindex.html", "py-modindex.html"}
    return sorted(p for p in HTML.rglob("*.html") if p.name not in skip and "_static" not in p.parts
                  and "_sources" not in p.parts)


@pytest.fixture(scope="session")
def html_root() -> Path:
    if not (HTML / "index.html").exists():
        pytest.fail(f"the book is not built in {HTML}: run `make book` (or `make test`, which builds it) first.")
    return HTML


@pytest.fixture(scope="session")
def scheme() -> str:
    """How the browser test opens the pages: "http" (a local server) or "file" (from disk)."""
    return SCHEME


@pytest.fixture(scope="session")
def pages(html_root) -> list[Path]:
    found = content_pages()
    assert len(found) >= 4, f"expected the book's pages under {html_root}, found {found}"
    return found
