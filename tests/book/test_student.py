"""The student edition (`make book-student`): every exercise is there, no solution is.

Skipped unless the student edition is built (``_build/student/html``, or ``XAI_STUDENT_HTML``);
`make test-student` builds it when missing and runs these checks.
"""
import html
import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STUDENT = Path(os.environ.get("XAI_STUDENT_HTML") or ROOT / "_build" / "student" / "html")
pytestmark = pytest.mark.skipif(not (STUDENT / "index.html").exists(),
                                reason=f"no student edition in {STUDENT}: run `make book-student`")


def page_text(path: Path) -> str:
    """The visible text of a page, roughly: tags and scripts removed, entities decoded."""
    source = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", path.read_text(encoding="utf-8"))
    return html.unescape(re.sub(r"<[^>]+>", " ", source))


def chapters_with_exercises() -> list[str]:
    """The notebooks of the table of contents (what the book builds) that have exercises."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [c["file"] for part in toc["parts"] for c in part["chapters"] if c["file"].startswith("notebooks/")]
    names = []
    for path in [ROOT / f"{name}.ipynb" for name in files]:
        if not path.exists():
            continue  # the build itself reports a chapter listed but not written
        nb = nbformat.read(path, as_version=4)
        if any(c.cell_type == "markdown" and "## Exercises" in c.source for c in nb.cells):
            names.append(path.stem)
    return names


@pytest.mark.parametrize("chapter", chapters_with_exercises())
def test_exercises_stay_and_solutions_go(chapter):
    page = STUDENT / "notebooks" / f"{chapter}.html"
    assert page.exists(), f"{chapter} is missing from the student edition"
    raw = page.read_text(encoding="utf-8")
    text = page_text(page)
    assert 'id="exercises"' in raw, f"{chapter}: the exercises section is gone"
    assert "tag_solution" not in raw, f"{chapter}: a cell tagged solution is still in the page"
    assert not re.search(r"#\s*Solution\s+\d", text), f"{chapter}: a solution's code is still in the page"
    assert not re.search(r"admonition-title\">\s*Solution", raw), f"{chapter}: a solution dropdown is still there"
    assert "tag_self-check" in raw, f"{chapter}: the self-checks of the exercises are gone"
    assert "✓ Exercise" not in text, f"{chapter}: a self-check still shows the verdict on the book's own solution"


def test_the_stripped_notebooks_are_handed_out_too():
    notebooks = sorted((STUDENT.parent / "notebooks").glob("*.ipynb"))
    assert notebooks, "the student notebooks were not written next to the site"
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        assert not any("solution" in c.metadata.get("tags", []) for c in nb.cells), f"{path.name} keeps a solution"
        checks = [c for c in nb.cells if "self-check" in c.metadata.get("tags", [])]
        if any(c.cell_type == "markdown" and "## Exercises" in c.source for c in nb.cells):
            assert checks, f"{path.name}: exercises without their self-checks"
        assert all(c.outputs == [] for c in checks), f"{path.name}: a self-check keeps its stored verdict"
