"""The course plan (book/course.md) lists every chapter of the table of contents once, with the
number of exercises that chapter really has (its solutions, as `make book-student` counts them)."""
import importlib.util
import re
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| *\d+ *\|(?P<chapters>[^|]+)\|[^|]+\|(?P<exercises>[^|]+)\|[^|]+\|$", re.MULTILINE)
LINK = re.compile(r"\]\(\.\./notebooks/(?P<name>[\w-]+)\.ipynb\)")


def toc_notebooks() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [chapter["file"] for part in toc["parts"] for chapter in part["chapters"]]
    return [Path(f).name for f in files if f.startswith("notebooks/")]


def course_rows() -> dict[str, int]:
    exercises = {}
    for row in ROW.finditer((ROOT / "book" / "course.md").read_text()):
        names = LINK.findall(row["chapters"])
        counts = [int(n) for n in re.findall(r"\d+", row["exercises"])]
        assert len(names) == len(counts), f"one exercise count per chapter in the row {row.group(0)!r}"
        for name, count in zip(names, counts):
            assert name not in exercises, f"{name} appears twice in the course plan"
            exercises[name] = count
    return exercises


def test_course_plan_lists_every_chapter_once():
    assert sorted(course_rows()) == sorted(toc_notebooks())


def test_course_plan_exercise_counts_match_the_notebooks():
    spec = importlib.util.spec_from_file_location("student_book_for_course", ROOT / "scripts" / "student_book.py")
    student_book = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(student_book)
    for name, count in course_rows().items():
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        numbered = set()  # an exercise may have a worked answer in words and a solution cell: count it once
        for cell in nb.cells:
            if "solution" in cell.metadata.get("tags", []):
                numbered |= set(re.findall(r"#\s*Solution\s+(\d+)", cell.source)[:1])
            elif cell.cell_type == "markdown":
                numbered |= {re.search(r"Solution\s+(\d+)", block.group(0))[1]
                             for block in student_book.SOLUTION_BLOCK.finditer(cell.source)}
        assert student_book.strip_solutions(nb) >= len(numbered) == count, (
            f"book/course.md says {name} has {count} exercises; its solutions number {sorted(numbered, key=int)}")
