"""The self-checks of chapter 18 (xaiutils.exercises.ch18): a right answer passes, typical wrong ones do not.

The exercises retrain MLPs for about a minute in all, too long for a unit test, and their checks read the
learner's tables. The right tables below are the chapter's executed solutions (its stored outputs, rounded
as printed); the wrong ones are the same tables with a typical mistake made."""
import pandas as pd
import pytest

from xaiutils.exercises import evaluate

COLUMNS = ["decoy train", "decoy test", "clean test", "mass on patch"]
CORNERS = ["decoy test", "top left", "top right", "bottom left", "bottom right"]


@pytest.fixture
def sweep():
    return pd.DataFrame([[0.999, 0.929, 0.930, 0.003], [0.999, 0.930, 0.930, 0.000], [0.998, 0.929, 0.929, 0.000],
                         [0.976, 0.923, 0.923, 0.000]], index=[0.01, 0.1, 1.0, 100.0], columns=COLUMNS)


@pytest.fixture
def one_corner():
    return pd.DataFrame([[0.672, 0.053, 0.046, 0.060, 0.049], [0.872, 0.000, 0.015, 0.019, 0.015],
                         [0.926, 0.000, 0.000, 0.000, 0.000]],
                        index=["decoy", "decoy + RRR on the top left", "decoy + RRR on all four"], columns=CORNERS)


@pytest.fixture
def compare():
    return pd.DataFrame([[0.926, 0.926, 0.000], [0.927, 0.927, 0.000]],
                        index=["four corners (chapter)", "each image's own patch"],
                        columns=["decoy test", "clean test", "mass on patch"])


def test_sweep(sweep):
    assert evaluate("ch18.1", sweep).correct
    assert evaluate("ch18.1", sweep.T.to_dict()).correct  # a dict of rows works too
    no_penalty = sweep.copy()
    no_penalty.loc[0.01] = [1.000, 0.672, 0.411, 0.201]  # the loss was not passed to models.train
    feedback = evaluate("ch18.1", no_penalty)
    assert not feedback.correct and "penalty" in feedback.message
    no_cost = sweep.copy()
    no_cost.loc[100.0, "decoy train"] = 0.999
    assert not evaluate("ch18.1", no_cost).correct
    assert not evaluate("ch18.1", sweep * 100).correct  # percentages
    assert not evaluate("ch18.1", sweep.drop(index=100.0)).correct


def test_one_corner(one_corner):
    assert evaluate("ch18.2", one_corner).correct
    wrong_corner = one_corner.copy()  # the mask covered the top right instead
    wrong_corner.iloc[1, 1:] = [0.015, 0.000, 0.019, 0.015]
    feedback = evaluate("ch18.2", wrong_corner)
    assert not feedback.correct and "top right" in feedback.message
    assert not evaluate("ch18.2", one_corner.iloc[[0, 2, 1]]).correct  # rows out of order
    everything_dark = one_corner.copy()
    everything_dark.iloc[1, 2:] = 0.001
    assert not evaluate("ch18.2", everything_dark).correct


def test_per_image(compare):
    assert evaluate("ch18.3", compare).correct
    digit_masked = compare.copy()  # mask=lambda xb: xb > 0 forbids the digit itself
    digit_masked.iloc[1] = [0.31, 0.30, 0.000]
    feedback = evaluate("ch18.3", digit_masked)
    assert not feedback.correct and "xb > 0" in feedback.message
    unpenalised = compare.copy()
    unpenalised.iloc[1] = [0.67, 0.41, 0.2]
    assert not evaluate("ch18.3", unpenalised).correct
    assert not evaluate("ch18.3", compare.drop(columns="mass on patch")).correct
