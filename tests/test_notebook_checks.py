"""The notebooks' own verification is in place (issue: portable verification): every chapter
asserts its claims in check cells, declared tolerances are valid and give a reason, and no stored
output prints float64 rounding noise as if it were a result. Fast: nothing is executed here."""
import re
from pathlib import Path

import nbformat
import pytest

from nbval_numeric import NUMBER, tolerance_of

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("ch*.ipynb"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHECK = re.compile(r"\bclaims\.check\(")


def code_cells(path):
    return [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def text_outputs(cell):
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            yield output.text
        elif output.output_type in ("execute_result", "display_data"):
            for mime in ("text/plain", "text/html"):
                if mime in output.data and "image/png" not in output.data:
                    yield output.data[mime]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 16


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_checks_its_claims(path):
    checks = [cell for cell in code_cells(path) if CHECK.search(cell.source)]
    count = sum(len(CHECK.findall(cell.source)) for cell in checks)
    assert count >= 3, f"{path.name}: {count} claims checked; every quantitative statement needs a check cell"
    for cell in checks:
        tags = cell.metadata.get("tags", [])
        if "solution" in tags:
            continue
        assert "remove-input" in tags, f"{path.name}: a check cell is not tagged remove-input:\n{cell.source[:200]}"
        printed = "".join(text for text in text_outputs(cell))
        assert printed.count("✓ ") >= len(CHECK.findall(cell.source)), (
            f"{path.name}: a check cell's stored output lacks its check marks (re-run `make notebooks`):\n"
            f"{cell.source[:200]}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_declared_tolerances_are_valid_and_bounded(path):
    for cell in code_cells(path):
        if "tolerance" not in cell.metadata:
            continue
        tolerance = tolerance_of(cell.metadata)
        assert len(tolerance.reason.split()) >= 4, f"{path.name}: say why in a sentence: {tolerance.reason!r}"
        # wide enough for training noise, never so wide that a metric could halve unnoticed
        assert tolerance.rtol <= 0.25 and tolerance.atol <= 0.1, f"{path.name}: tolerance too wide: {tolerance}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_have_no_errors_and_no_raw_float64_noise(path):
    for cell in code_cells(path):
        assert all(output.output_type != "error" for output in cell.get("outputs", [])), (
            f"{path.name}: a stored output is an exception:\n{cell.source[:200]}")
        for text in text_outputs(cell):
            for match in NUMBER.finditer(text):
                token = match.group()
                if "e-" not in token.lower() or float(token) == 0:
                    continue
                exponent = int(token.lower().split("e")[1])
                before = text[max(0, match.start() - 2):match.start()]
                # `< 1e-15` is a bound and `epsilon=1e-15` a setting; `3.1e-16` is float64 rounding noise
                if exponent <= -13 and "<" not in before and not before.endswith("="):
                    pytest.fail(f"{path.name}: prints rounding noise {token!r} as a number; print it as a "
                                f"bound with xaiutils.claims.below:\n{text[max(0, match.start() - 120):match.end() + 40]}")


EXERCISE_CHECK = re.compile(r"""\bexercises\.check\(\s*["']([\w.]+)["']""")


def exercise_prefix(path):
    return "running_examples" if path.stem == "01_running_examples" else path.stem.split("_")[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_answers_back(path):
    """One self-check per solution, after it, with a registered key of this chapter and a stored ✓."""
    from xaiutils import exercises

    cells = nbformat.read(path, as_version=4).cells
    solutions = [i for i, c in enumerate(cells) if "solution" in c.metadata.get("tags", [])]
    checks = [i for i, c in enumerate(cells) if "self-check" in c.metadata.get("tags", [])]
    assert len(checks) >= len(solutions), f"{path.name}: {len(solutions)} solutions but {len(checks)} self-checks"
    if solutions:
        assert min(checks) > min(solutions), f"{path.name}: a self-check runs before the first solution"
    keys = []
    for i in checks:
        cell = cells[i]
        found = EXERCISE_CHECK.findall(cell.source)
        assert len(found) == 1, f"{path.name}: a self-check cell calls exercises.check {len(found)} times"
        key = found[0]
        assert key.split(".")[0] == exercise_prefix(path), f"{path.name}: checks {key}, another chapter's exercise"
        assert key in exercises.catalogue(), f"{path.name}: {key} is not a registered exercise"
        assert not {"solution", "remove-input", "remove-cell"} & set(cell.metadata.get("tags", [])), (
            f"{path.name}: the self-check of {key} must stay visible in the student edition")
        printed = "".join(text_outputs(cell))
        assert printed.startswith("✓ "), f"{path.name}: the stored self-check of {key} is not ✓:\n{printed[:300]}"
        keys.append(key)
    assert len(keys) == len(set(keys)), f"{path.name}: an exercise is checked twice"


def test_every_registered_exercise_is_checked_in_its_chapter():
    from xaiutils import exercises

    used = {key for path in NOTEBOOKS for cell in code_cells(path) for key in EXERCISE_CHECK.findall(cell.source)}
    unused = sorted(set(exercises.catalogue()) - used)
    assert not unused, f"exercises registered but never checked in a chapter: {unused}"
