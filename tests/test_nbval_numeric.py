"""The comparator behind `make test-notebooks` (tests/nbval_numeric.py): numbers within tolerance
pass, beyond fail, text changes fail, NaN never equals a number, and a real regression is caught."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbval_numeric import DEFAULT, Tolerance, compare_text, last_place, number_matches, split, tolerance_of

ROOT = Path(__file__).resolve().parents[1]


def ok(stored, new, tolerance=DEFAULT):
    return compare_text(stored, new, tolerance).ok


def test_identical_text_passes():
    text = "signed Spearman 0.880 0.743\nafter fc: guided_backprop, fullgrad\n"
    assert ok(text, text)


def test_rounding_noise_within_tolerance_passes():
    assert ok("deletion AUC 0.482", "deletion AUC 0.484")  # 0.4%: the chapter 10 example
    assert ok("accuracy 97.1%", "accuracy 97.2%")  # one unit in the last place
    assert ok("p = 0.9976", "p = 0.9975")
    assert ok("-0.000", "0.000")
    assert ok("gap 9.3e-07 of 4.1e+01", "gap 9.3e-07 of 4.1e+01")


def test_a_real_regression_fails():
    assert not ok("accuracy 0.88", "accuracy 0.70")  # the example
    assert not ok("0.880 0.743 0.563", "0.880 0.743 0.500")
    assert not ok("accuracy 97.1%", "accuracy 95.0%")


def test_machine_precision_noise_printed_raw_fails():
    """Noise printed as digits is not portable; chapters print it as a bound instead."""
    assert not ok("1.30e-07 8.10e-07", "7.47e-08 4.11e-07")
    assert ok("< 1e-06 < 1e-06", "< 1e-06 < 1e-06")


def test_text_changes_fail():
    assert not ok("above 0.5: fullgrad, guided_backprop", "above 0.5: fullgrad, deconvnet")
    assert not ok("complete: True", "complete: False")
    assert not ok("0.5 0.6", "0.5 0.6 0.7")  # a number more
    assert not ok("< 1e-06", "3.2e-03")  # a bound that no longer holds


def test_nan_and_inf():
    assert ok("value nan", "value nan")
    assert not ok("value nan", "value 0.500")
    assert not ok("value 0.500", "value nan")
    assert ok("ratio inf", "ratio inf")
    assert not ok("ratio inf", "ratio -inf")
    assert not ok("ratio inf", "ratio 1e+300")


def test_integers_are_exact_by_default_and_tolerant_when_declared():
    assert not ok("shape (8, 1, 28, 28)", "shape (8, 1, 28, 27)")
    assert not ok("35 of 100 maps empty", "36 of 100 maps empty")
    wide = Tolerance(rtol=0.05, atol=0, integers_exact=False, reason="training")
    assert ok("35 of 100 maps empty", "36 of 100 maps empty", wide)
    assert not ok("35 of 100 maps empty", "45 of 100 maps empty", wide)


def test_declared_tolerance_widens_and_still_bounds():
    wide = tolerance_of({"tolerance": {"rtol": 0.05, "atol": 0.02, "reason": "trains for 3 epochs"}})
    assert wide.rtol == 0.05 and wide.atol == 0.02 and not wide.integers_exact
    assert not ok("0.877 0.838", "0.852 0.812")  # the chapter 18 example, default tolerance
    assert ok("0.877 0.838", "0.852 0.812", wide)
    assert not ok("0.877", "0.700", wide)


def test_names_with_digits_are_text_not_numbers():
    texts, numbers = split("block1.conv mnist-5k ch09 torch 2.14.1 x_test[:8] 3x3 1e-06, 0.5.")
    assert numbers == ["8", "1e-06", "0.5"]
    assert not ok("model ch09", "model ch10")
    assert not ok("torch 2.14.1", "torch 2.14.2")
    assert split("epoch 5.")[1] == ["5"]  # an integer at the end of a sentence stays an integer


def test_alignment_may_change_when_a_number_gets_wider():
    assert ok("a    9.8\nb   10.1", "a   10.2\nb   10.1", Tolerance(rtol=0.05, integers_exact=False, reason="r"))
    assert not ok("a 9.8", "a9.8")  # spaces collapse, they do not vanish


def test_last_place_and_number_matches():
    assert last_place("0.482") == pytest.approx(1e-3)
    assert last_place("1.3e-06") == pytest.approx(1e-7)
    assert last_place("35") == 1
    matches, difference, allowed = number_matches("0.482", "0.484")
    assert matches and difference == pytest.approx(0.002) and allowed == pytest.approx(0.001 + 0.00484)


@pytest.mark.parametrize("declared, message", [
    ({"rtol": 0.1}, "reason"),
    ({"rtol": 0.1, "reason": ""}, "reason"),
    ({"rtol": -1, "reason": "r"}, "rtol"),
    ({"atol": "big", "reason": "r"}, "atol"),
    ({"rtol": float("inf"), "reason": "r"}, "rtol"),
    ({"rtol": 0.1, "reason": "r", "integers": True}, "keys"),
    ([0.1], "dict"),
])
def test_bad_tolerance_metadata_is_refused(declared, message):
    with pytest.raises(ValueError, match=message):
        tolerance_of({"tolerance": declared})


def _run_nbval(tmp_path, cells, stored_outputs, report=None):
    """Write a notebook whose stored outputs are given, then run nbval with the plugin on it."""
    nb = nbformat.v4.new_notebook()
    for count, ((source, metadata), outputs) in enumerate(zip(cells, stored_outputs), start=1):
        cell = nbformat.v4.new_code_cell(source, metadata=metadata, execution_count=count)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text) for text in outputs]
        nb.cells.append(cell)
    path = tmp_path / "check.ipynb"
    nbformat.write(nb, path)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.nbval_numeric",
            "--nbval", str(path), "--rootdir", str(tmp_path)]
    if report:
        args += ["--nbval-numeric-report", str(report)]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_plugin_in_nbval_end_to_end(tmp_path):
    """A real nbval run: noise passes, a moved metric fails, an exception fails, the report lists moves."""
    cells = [("print('auc', 0.484)", {}),
             ("print('accuracy', 0.70)", {}),
             ("print('trained', 0.852)", {"tolerance": {"rtol": 0.05, "reason": "training"}}),
             ("raise RuntimeError('boom')", {})]
    stored = [["auc 0.482\n"], ["accuracy 0.88\n"], ["trained 0.877\n"], []]
    report = tmp_path / "moved.jsonl"
    result = _run_nbval(tmp_path, cells, stored, report)
    summary = result.stdout.strip().splitlines()[-1]
    assert "2 failed, 2 passed" in summary, result.stdout[-3000:]
    assert "stored 0.88, computed 0.7" in result.stdout
    assert "boom" in result.stdout
    moved = [json.loads(line) for line in report.read_text().splitlines()]
    assert {(m["cell"], m["stored"], m["computed"], m["ok"]) for m in moved} == {
        (0, "0.482", "0.484", True), (1, "0.88", "0.7", False), (2, "0.877", "0.852", True)}
