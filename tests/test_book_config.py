"""The book's own tooling: Colab links and install cells, the Colab simulation's parsing, the
student edition's stripping of solutions, and the dist zip. Fast: nothing is built here."""
import importlib.util
import json
import re
import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def script(name: str):
    """Import scripts/<name>.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is created
    spec.loader.exec_module(module)
    return module


sync_colab = script("sync_colab")
colab_simulation = script("colab_simulation")
student_book = script("student_book")
make_dist = script("make_dist")


def test_notebooks_match_the_repository_in_config(capsys):
    """A fork that edits `repository` in _config.yml and forgets `make sync-colab` fails here."""
    code = sync_colab.main(["--check"])
    assert code == 0, "notebooks out of sync with _config.yml (run `make sync-colab`):\n" + capsys.readouterr().err


def test_sync_rewrites_a_fork_and_is_idempotent(tmp_path):
    (tmp_path / "notebooks").mkdir()
    notebook = tmp_path / "notebooks" / "ch09_axioms_sanity.ipynb"
    shutil.copy(ROOT / "notebooks" / notebook.name, notebook)
    config = (ROOT / "_config.yml").read_text(encoding="utf-8")
    config = re.sub(r"(?m)^(\s+url:).*$", r"\1 https://github.com/someone/my-fork", config, count=1)
    config = re.sub(r"(?m)^(\s+branch:).*$", r"\1 teaching-2027", config, count=1)
    (tmp_path / "_config.yml").write_text(config, encoding="utf-8")

    assert sync_colab.main(["--check", "--root", str(tmp_path)]) == 1
    assert sync_colab.main(["--root", str(tmp_path)]) == 0
    once = notebook.read_bytes()
    assert sync_colab.main(["--root", str(tmp_path)]) == 0
    assert notebook.read_bytes() == once, "a second sync changed the notebook"
    assert sync_colab.main(["--check", "--root", str(tmp_path)]) == 0

    text = "".join("".join(c["source"]) for c in json.loads(once)["cells"])
    assert ("https://colab.research.google.com/github/someone/my-fork/blob/teaching-2027/notebooks/"
            "ch09_axioms_sanity.ipynb") in text
    assert '%pip install -q "xaiutils[book] @ git+https://github.com/someone/my-fork@teaching-2027"' in text
    assert "robust-explainability/robust-explainability" not in text
    # the install line is what the Colab simulation reads and points at a checkout
    line = colab_simulation.install_line(notebook)
    assert colab_simulation.local_pip_args(line, Path("/src")) == ["install", "-q", "/src[book]"]


def test_sync_keeps_a_chapters_extra_install_lines(tmp_path):
    """Chapter 15 also installs lxt (without its dependencies): a sync to a fork rewrites the xaiutils line
    and keeps that one, and the Colab simulation installs both."""
    (tmp_path / "notebooks").mkdir()
    notebook = tmp_path / "notebooks" / "ch15_transformers.ipynb"
    shutil.copy(ROOT / "notebooks" / notebook.name, notebook)
    config = re.sub(r"(?m)^(\s+branch:).*$", r"\1 teaching-2027", (ROOT / "_config.yml").read_text(encoding="utf-8"),
                    count=1)
    (tmp_path / "_config.yml").write_text(config, encoding="utf-8")
    assert sync_colab.main(["--root", str(tmp_path)]) == 0
    lines = colab_simulation.install_lines(notebook)
    assert len(lines) == 2 and "@teaching-2027" in lines[0] and lines[1].startswith('%pip install -q --no-deps "lxt==')
    assert colab_simulation.install_line(notebook) == lines[0]


def test_sync_reports_a_notebook_without_install_cell(tmp_path, capsys):
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "_config.yml", tmp_path)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A chapter"),
                                         nbformat.v4.new_code_cell("print(1)")])
    nbformat.write(nb, tmp_path / "notebooks" / "ch99_draft.ipynb")
    assert sync_colab.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "notebooks/ch99_draft.ipynb: no Colab link" in err and "no install cell" in err


def test_install_line_keeps_other_packages_and_needs_a_git_xaiutils():
    args = colab_simulation.local_pip_args('%pip install -q "xaiutils[book] @ git+https://x/y@dev" extra', Path("/c"))
    assert args == ["install", "-q", "/c[book]", "extra"]
    assert colab_simulation.local_pip_args('!pip install "xaiutils @ git+https://x/y"', Path("/c")) == ["install", "/c"]
    with pytest.raises(SystemExit, match="does not install xaiutils from git"):
        colab_simulation.local_pip_args("%pip install xaiutils", Path("/c"))


def test_book_extra_has_the_reference_libraries_at_the_tested_versions():
    """`xaiutils[book]` (what Colab installs) asks for what the test environment pins."""
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["book"]
    pinned = {}
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                pinned[re.split(r"[<>=!~ ]", line, maxsplit=1)[0].lower()] = line.strip()
    for requirement in extra:
        name = re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0].lower()
        assert pinned.get(name) == requirement, f"book extra {requirement!r} differs from the test pin {pinned.get(name)!r}"
    for library in ("captum", "zennit", "grad-cam", "quantus", "ipywidgets", "shap"):
        assert any(r.startswith(library) for r in extra), f"{library} is imported by a chapter but not in xaiutils[book]"


def test_student_edition_drops_solution_cells_and_dropdowns_only():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("## Exercises\n\n1. Do this.\n2. Do that."),
        nbformat.v4.new_code_cell("# Solution 1\nprint(42)", metadata={"tags": ["hide-cell", "solution"]}),
        nbformat.v4.new_markdown_cell("```{admonition} Solution 2\n:class: dropdown\nBecause.\n```"),
        nbformat.v4.new_markdown_cell("Before.\n\n:::{admonition} Solution 3\n:class: dropdown\nSo.\n:::\n\nAfter."),
        nbformat.v4.new_markdown_cell("```{admonition} Note\n:class: dropdown\nKept.\n```"),
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["hide-cell"]}),
    ])
    assert student_book.strip_solutions(nb) == 3
    assert [c.source for c in nb.cells] == ["## Exercises\n\n1. Do this.\n2. Do that.", "Before.\n\n\nAfter.",
                                            "```{admonition} Note\n:class: dropdown\nKept.\n```", "x = 1"]


def test_student_edition_keeps_self_checks_without_their_verdict():
    check = nbformat.v4.new_code_cell('exercises.check("ch09.1", sobel)', metadata={"tags": ["self-check"]},
                                      execution_count=7,
                                      outputs=[nbformat.v4.new_output("stream", text="✓ Exercise 9.1: right.\n")])
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("# Solution 1\nsobel = 1", metadata={"tags": ["hide-cell", "solution"]}), check])
    assert student_book.strip_solutions(nb) == 1
    assert len(nb.cells) == 1 and nb.cells[0].source == 'exercises.check("ch09.1", sobel)'
    assert nb.cells[0].outputs == [] and nb.cells[0].execution_count is None


def test_every_chapter_with_exercises_has_solutions_to_strip():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if any(c.cell_type == "markdown" and "## Exercises" in c.source for c in nb.cells):
            assert student_book.strip_solutions(nb) > 0, f"{path.name}: exercises but no marked solution"
            assert not any("# Solution" in c.source for c in nb.cells), f"{path.name}: an unmarked solution"


def test_dist_zip_is_one_folder_with_the_site(tmp_path):
    html = tmp_path / "html"
    (html / "book").mkdir(parents=True)
    (html / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/intro.html" />')
    (html / "book" / "intro.html").write_text("<p>hello</p>")
    (html / ".buildinfo").write_text("x")
    target = make_dist.make_zip(html, tmp_path / "out", "9.9.9")
    assert target.name == "robust-explainability-9.9.9.zip"
    with zipfile.ZipFile(target) as zf:
        assert sorted(zf.namelist()) == ["robust-explainability-9.9.9/README.txt",
                                         "robust-explainability-9.9.9/book/intro.html",
                                         "robust-explainability-9.9.9/index.html"]
    again = make_dist.make_zip(html, tmp_path / "again", "9.9.9")
    assert again.read_bytes() == target.read_bytes(), "the zip is not reproducible"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", make_dist.version())


def test_pdf_shows_the_pictures_inside_the_widgets():
    """book/_ext/book_print.py finds every image of a gallery (Tab of Image) and an explorer's first view."""
    spec = importlib.util.spec_from_file_location("book_print", ROOT / "book" / "_ext" / "book_print.py")
    book_print = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(book_print)
    checked = 0
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        state = book_print.widget_state(path)
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            for output in cell.get("outputs", []):
                view = output.get("data", {}).get(book_print.WIDGET_VIEW)
                if not view or view["model_id"] not in state:
                    continue
                model = state[view["model_id"]]
                found = book_print.pictures(state, view["model_id"])
                assert all(png.startswith(b"\x89PNG") for _, png in found), f"{path.name}: not a PNG"
                if model["model_name"] == "TabModel":  # a gallery: every tab's picture, under its title
                    assert [t for t, _ in found] == model["state"]["titles"], f"{path.name}: a tab is missing"
                    checked += 1
    assert checked >= 3, "no gallery with stored widget state: this test checks nothing"
