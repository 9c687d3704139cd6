"""Numbers compared as numbers when nbval checks a notebook's stored outputs (`make test-notebooks`).

nbval compares every text output of a cell with the stored one, character by character. The last
digits of torch and BLAS results differ between CPU generations, so that comparison passes only on
the machine type that wrote the outputs. This plugin (loaded with ``-p tests.nbval_numeric``)
replaces nbval's comparison of text outputs:

- the text between numbers must match exactly (runs of spaces count as one, so a table may
  re-align when a number gets wider);
- integers must match exactly (shapes, counts, indices);
- a decimal number ``b`` stored as ``a`` matches when ``|a - b| <= atol + rtol * max(|a|, |b|)``
  plus one unit in the last printed place of the less precise of the two (two prints of nearly
  equal values can round to neighbouring last digits);
- ``nan`` matches only ``nan``, ``inf`` only ``inf`` of the same sign;
- an exception in a cell fails, as in plain nbval.

The defaults (:data:`DEFAULT`) absorb rounding and catch a metric that moves by more than 1%. A
cell that trains or optimises may declare a wider tolerance in its metadata, with the reason::

    "tolerance": {"rtol": 0.05, "atol": 0.02, "reason": "trains a model for 3 epochs"}

and then its integers are compared with that tolerance too. ``--nbval-numeric-report FILE``
writes every number that differed (within tolerance or not) as JSON lines, to see what moved on
another machine.
"""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

# A number that stands alone: not part of a name such as `block1`, `ch09` or `mnist-5k`.
NUMBER = re.compile(
    r"(?<![\w.])(?:[-+]?(?:\d+\.\d+|\.\d+|\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|NaN|inf|Inf))(?!\w|\.\d)")
SPACES = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class Tolerance:
    """How far a recomputed number may be from the stored one."""

    rtol: float = 1e-2
    atol: float = 0.0
    integers_exact: bool = True
    reason: str = "default: rounding noise and up to 1% of the value"


DEFAULT = Tolerance()
KEYS = {"rtol", "atol", "reason"}


def tolerance_of(metadata: dict) -> Tolerance:
    """The tolerance a cell declares in ``metadata["tolerance"]``, or :data:`DEFAULT`."""
    declared = metadata.get("tolerance")
    if declared is None:
        return DEFAULT
    if not isinstance(declared, dict) or set(declared) - KEYS:
        raise ValueError(f"cell metadata 'tolerance' must be a dict with keys {sorted(KEYS)}; got {declared!r}")
    reason = declared.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError(f"cell metadata 'tolerance' must say why in 'reason' (a non-empty string); got {declared!r}")
    values = {}
    for key in ("rtol", "atol"):
        value = declared.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise ValueError(f"cell metadata 'tolerance'['{key}'] must be a finite number >= 0; got {value!r}")
        values[key] = float(value)
    return Tolerance(values["rtol"], values["atol"], integers_exact=False, reason=reason)


def _is_integer(token: str) -> bool:
    return re.fullmatch(r"[-+]?\d+", token) is not None


def last_place(token: str) -> float:
    """One unit in the last printed place: 0.001 for ``0.482``, 1e-07 for ``1.3e-06``, 1 for ``35``."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def split(text: str) -> tuple[list[str], list[str]]:
    """The text around the numbers (spaces collapsed) and the numbers, in order."""
    numbers = NUMBER.findall(text)
    texts = [SPACES.sub(" ", part) for part in NUMBER.split(text)]
    return texts, numbers


@dataclass
class Comparison:
    """The outcome of comparing one stored text with one recomputed text."""

    text_matches: bool
    numbers: list[tuple[str, str, float, float, bool]] = field(default_factory=list)  # stored, new, diff, allowed, ok

    @property
    def ok(self) -> bool:
        return self.text_matches and all(entry[4] for entry in self.numbers)

    @property
    def moved(self) -> list[tuple[str, str, float, float, bool]]:
        return [entry for entry in self.numbers if entry[0] != entry[1]]


def number_matches(stored: str, new: str, tolerance: Tolerance = DEFAULT) -> tuple[bool, float, float]:
    """Whether ``new`` matches ``stored``; with the difference and the allowed difference."""
    a, b = float(stored), float(new)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b), math.nan, 0.0
    if math.isinf(a) or math.isinf(b):
        return a == b, (0.0 if a == b else math.inf), 0.0
    difference = abs(a - b)
    both_integers = _is_integer(stored) and _is_integer(new)
    if both_integers and tolerance.integers_exact:
        return difference == 0, difference, 0.0
    allowed = tolerance.atol + tolerance.rtol * max(abs(a), abs(b))
    if not both_integers:
        allowed += max(last_place(stored), last_place(new))
    # the printed decimals carry the rounding; a tiny slack absorbs float parsing of both sides
    return difference <= allowed * (1 + 1e-9), difference, allowed


def compare_text(stored: str, new: str, tolerance: Tolerance = DEFAULT) -> Comparison:
    """Compare two text outputs: the words exactly, the numbers within ``tolerance``."""
    stored_texts, stored_numbers = split(stored)
    new_texts, new_numbers = split(new)
    if stored_texts != new_texts or len(stored_numbers) != len(new_numbers):
        return Comparison(text_matches=False)
    entries = []
    for a, b in zip(stored_numbers, new_numbers):
        ok, difference, allowed = number_matches(a, b, tolerance)
        entries.append((a, b, difference, allowed, ok))
    return Comparison(text_matches=True, numbers=entries)


def _text(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    return None


# ---------------------------------------------------------------------------------------------
# The pytest plugin: nbval's IPyNbCell.compare_outputs, with text compared by compare_text.

def pytest_addoption(parser):
    parser.getgroup("nbval").addoption(
        "--nbval-numeric-report", default=None, metavar="FILE",
        help="write every number that differed from the stored output (within tolerance or not) as JSON lines")


def pytest_configure(config):
    try:
        from nbval import plugin
    except ImportError:  # unit tests without nbval: nothing to patch
        return
    report = config.getoption("--nbval-numeric-report", default=None)
    if report:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text("", encoding="utf-8")
    plugin.IPyNbCell.compare_outputs = _compare_outputs_factory(plugin, report)


def _flatten(outputs, cell, skip_compare) -> dict[str, list]:
    """nbval's flattening: each key of an output (MIME types of `data` included) -> its values."""
    flat = defaultdict(list)
    for output in outputs:
        for key, value in output.items():
            if key in skip_compare:
                continue
            if key == "data":
                for mime, content in value.items():
                    if mime not in skip_compare:
                        flat[mime].append(cell.sanitize(content))
            else:
                flat[key].append(cell.sanitize(value))
    return flat


def _compare_outputs_factory(plugin, report: str | None):
    def compare_outputs(self, test, ref, skip_compare=None):
        skip_compare = skip_compare or self.parent.skip_compare
        tolerance = tolerance_of(self.cell.metadata)
        tested = _flatten(plugin.transform_streams_for_comparison(test), self, skip_compare)
        stored = _flatten(plugin.transform_streams_for_comparison(ref), self, skip_compare)
        self.comparison_traceback = []
        if set(stored) != set(tested):
            self.comparison_traceback.append(
                f"output fields differ: stored {sorted(stored)}, computed {sorted(tested)}")
            return False
        for key, stored_values in stored.items():
            tested_values = tested[key]
            if len(stored_values) != len(tested_values):
                self.comparison_traceback.append(
                    f"{len(stored_values)} stored outputs of type {key!r}, {len(tested_values)} computed")
                return False
            for old, new in zip(stored_values, tested_values):
                old_text, new_text = _text(old), _text(new)
                if old_text is None or new_text is None:
                    if old != new:
                        self.format_output_compare(key, old, new)
                        return False
                    continue
                comparison = compare_text(old_text, new_text, tolerance)
                if report and comparison.moved:
                    _write_report(report, self, key, tolerance, comparison)
                if not comparison.text_matches:
                    self.comparison_traceback.append("the text around the numbers changed:")
                    self.format_output_compare(key, old_text, new_text)
                    return False
                if not comparison.ok:
                    self.comparison_traceback.append(
                        f"numbers beyond tolerance (rtol={tolerance.rtol:g}, atol={tolerance.atol:g}; "
                        f"{tolerance.reason}):")
                    for a, b, difference, allowed, ok in comparison.numbers:
                        if not ok:
                            self.comparison_traceback.append(
                                f"  stored {a}, computed {b}: difference {difference:.3g} > allowed {allowed:.3g}")
                    self.format_output_compare(key, old_text, new_text)
                    return False
        return True

    return compare_outputs


def _write_report(report: str, cell, key: str, tolerance: Tolerance, comparison: Comparison) -> None:
    with open(report, "a", encoding="utf-8") as stream:
        for a, b, difference, allowed, ok in comparison.moved:
            stream.write(json.dumps({
                "notebook": Path(str(cell.fspath)).name, "cell": cell.cell_num, "output": key,
                "stored": a, "computed": b, "difference": difference, "allowed": allowed, "ok": ok,
                "declared": not tolerance.integers_exact}) + "\n")
