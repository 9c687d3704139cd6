"""Build the student edition of the book: every exercise, no solution (`make book-student`).

Solutions are marked in two ways in the notebooks, and both are removed:

* code cells tagged ``solution`` (shown folded in the full book, ``# Solution 1`` ...);
* MyST admonitions whose title starts with "Solution" (``{admonition} Solution 1`` with
  ``:class: dropdown``), removed from their markdown cell; a cell left empty is dropped.

The self-checks stay: code cells tagged ``self-check`` (``exercises.check("ch09.1", answer)``)
are kept with their stored outputs cleared, so a learner sees the call to run, not the verdict
the book's own solution got.

The notebooks in notebooks/ are never touched: the book's sources are copied to a temporary
folder (the files git tracks or would track, and the vendored JavaScript), the copies are
stripped and built there, and the results are moved to

* ``_build/student/html``       the student website;
* ``_build/student/notebooks``  the stripped notebooks, to hand out or open in Colab.

    python scripts/student_book.py [--out DIR] [JUPYTER-BOOK BUILD OPTIONS ...]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "student"
SOLUTION_TAG = "solution"
SELF_CHECK_TAG = "self-check"
# A fenced admonition or dropdown titled "Solution ...", up to its closing fence (``` or :::).
SOLUTION_BLOCK = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?:admonition|dropdown)\}[ \t]+Solution\b.*?^(?P=fence)[ \t]*$\n?",
                            re.MULTILINE | re.DOTALL)


def strip_solutions(nb) -> int:
    """Remove the solutions from a notebook (nbformat node) in place; return how many were removed.

    Self-check cells are kept, without their outputs.
    """
    kept, removed = [], 0
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if SOLUTION_TAG in tags:
            removed += 1
            continue
        if SELF_CHECK_TAG in tags and cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if cell.cell_type == "markdown":
            cell.source, n = SOLUTION_BLOCK.subn("", cell.source)
            removed += n
            if n and not cell.source.strip():
                continue
            cell.source = cell.source.rstrip("\n") if n else cell.source
        kept.append(cell)
    nb.cells = kept
    return removed


def copy_sources(dest: Path) -> None:
    """Copy what a clone has (tracked or not ignored files) plus the vendored JavaScript to ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    vendor = ROOT / "book" / "_vendor"
    if not (vendor / ".stamp").exists() and not (vendor / "mathjax").exists():
        raise SystemExit("book/_vendor is missing: run `make vendor` first.")
    shutil.copytree(vendor, dest / "book" / "_vendor", dirs_exist_ok=True)


def main(argv: list[str]) -> int:
    import nbformat

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where html/ and notebooks/ go (default _build/student)")
    args, jb_options = parser.parse_known_args(argv)
    out = args.out.resolve()
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    with tempfile.TemporaryDirectory(prefix="student-book-") as tmp:
        src = Path(tmp)
        copy_sources(src)
        total = 0
        for path in sorted((src / "notebooks").glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            removed = strip_solutions(nb)
            total += removed
            nbformat.write(nb, path)
            print(f"{path.relative_to(src)}: {removed} solution(s) removed")
        result = subprocess.run([str(jupyter_book), "build", *jb_options, str(src)])
        if result.returncode:
            print("the student build failed (see above)", file=sys.stderr)
            return result.returncode
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        shutil.move(src / "_build" / "html", out / "html")
        shutil.copytree(src / "notebooks", out / "notebooks")
    print(f"student edition: {total} solutions removed; open {out / 'html' / 'index.html'}; "
          f"the notebooks are in {out / 'notebooks'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
