"""xaiutils.claims: the check cells of the chapters and the stable printing of noise."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from xaiutils import claims


def test_check_prints_the_claim_when_it_holds(capsys):
    claims.check("the PGD model's gradients align better", 0.4 > 0.3)
    claims.check("a tensor condition", torch.tensor(True))
    claims.check("a numpy condition", np.float64(0.2) < 0.5)
    assert capsys.readouterr().out.splitlines() == [
        "✓ the PGD model's gradients align better", "✓ a tensor condition", "✓ a numpy condition"]


def test_check_raises_an_assertion_with_the_evidence_when_it_fails(capsys):
    with pytest.raises(claims.ClaimError, match=r"no longer holds: DeepLIFT is complete \(gap=0\.03, n=50\)"):
        claims.check("DeepLIFT is complete", 0.03 < 1e-5, gap=0.03, n=50)
    assert isinstance(claims.ClaimError("x"), AssertionError)
    assert capsys.readouterr().out == ""  # nothing printed: no check mark for a failed claim


@pytest.mark.parametrize("holds", [torch.tensor([True, False]), np.array([1.0, 2.0]), "yes", 0.5, None, 2])
def test_check_refuses_what_is_not_one_truth_value(holds):
    with pytest.raises(TypeError, match="holds must be"):
        claims.check("a claim", holds)


@pytest.mark.parametrize("claim", ["", "   ", None, 3])
def test_check_needs_a_statement(claim):
    with pytest.raises(TypeError, match="claim must be a non-empty string"):
        claims.check(claim, True)


def test_below_prints_the_bound_or_the_value_that_breaks_it():
    assert claims.below(1.9e-16, 1e-12) == "< 1e-12"
    assert claims.below(torch.tensor([1e-8, -4e-7]), 1e-6) == "< 1e-06"
    assert claims.below(np.array([[1e-8], [2e-9]]), 1e-6) == "< 1e-06"
    assert claims.below([1e-8, -3.2e-3], 1e-6) == "3.2e-03 (not < 1e-06)"
    assert claims.below(float("nan"), 1e-6) == "nan (not < 1e-06)"
    assert claims.below(torch.tensor([0.0, math.nan]), 1e-6).startswith("nan")


@pytest.mark.parametrize("bound", [0, -1e-6, math.inf, math.nan, "1e-6", True])
def test_below_refuses_a_bad_bound(bound):
    with pytest.raises(ValueError, match="bound must be a positive finite number"):
        claims.below(0.0, bound)


def test_below_refuses_what_holds_no_number():
    with pytest.raises(ValueError, match="empty"):
        claims.below([], 1e-6)
    with pytest.raises(TypeError, match="value must be"):
        claims.below(object(), 1e-6)


def test_noise_format_in_a_table():
    table = pd.DataFrame({"gap": [7.47e-08, 0.122, math.nan]}, index=["deeplift", "gxi", "none"])
    text = table.to_string(float_format=claims.noise_format(1e-6))
    assert text.splitlines()[1:] == ["deeplift  < 1e-06", "gxi      1.22e-01", "none          NaN"]
    assert claims.noise_format(1e-12, ".1e")(-2e-16) == "< 1e-12"
    with pytest.raises(ValueError, match="bound"):
        claims.noise_format(0)
    with pytest.raises(ValueError):
        claims.noise_format(1e-6, "not a format")
