"""The seeds experiment (xaiutils.experiments.seeds): its interval, its verdicts, its alignment, its stored table.

The reduced re-run against the stored table is in test_experiments.py with every experiment.
"""
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from xaiutils.experiments import seeds


def test_interval_of_a_constant_is_the_constant():
    assert seeds.interval(np.full(37, 0.25)) == pytest.approx((0.25, 0.25, 0.25), abs=1e-15)


def test_interval_of_a_proportion_matches_the_normal_approximation():
    # 200 successes in 400 trials: mean 0.5, standard error 0.025, so the interval is 0.5 +- 1.96 * 0.025
    values = np.r_[np.ones(200), np.zeros(200)]
    mean, low, high = seeds.interval(values)
    assert mean == 0.5
    assert low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.006) and high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.006)


def test_interval_of_normal_data_matches_the_t_interval():
    values = np.random.default_rng(3).normal(2.0, 1.5, size=300)
    mean, low, high = seeds.interval(values)
    t_low, t_high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(values.mean(), abs=1e-12)
    width = t_high - t_low  # 0.34: a percentile bootstrap of 1,000 resamples is within a few per cent of it
    assert abs(low - t_low) < 0.06 * width and abs(high - t_high) < 0.06 * width


def test_paired_interval_of_a_constant_difference_excludes_zero():
    standard = np.random.default_rng(0).uniform(size=50)
    mean, low, high = seeds.interval(standard + 0.01 - standard)
    assert (mean, low, high) == pytest.approx((0.01, 0.01, 0.01), abs=1e-12)
    assert seeds.verdict(low, high, "higher") == "better" and seeds.verdict(low, high, "lower") == "worse"


@pytest.mark.parametrize("low, high, direction, expected", [
    (0.1, 0.3, "higher", "better"), (-0.3, -0.1, "higher", "worse"), (-0.1, 0.3, "higher", "~"),
    (0.1, 0.3, "lower", "worse"), (-0.3, -0.1, "lower", "better"), (-0.1, 0.3, "lower", "~"),
    (0.0, 0.3, "higher", "~")])
def test_verdict_reads_the_paired_interval_against_zero(low, high, direction, expected):
    assert seeds.verdict(low, high, direction) == expected


def test_verdict_names_a_bad_direction():
    with pytest.raises(ValueError, match="direction"):
        seeds.verdict(0.1, 0.2, "up")


def test_alignment_of_a_linear_model_is_the_cosine_with_its_weights():
    model = nn.Linear(4, 2, bias=False).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 0.0, -2.0], [0.0, 1.0, 1.0, 1.0]], dtype=torch.float64))
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0], [-1.0, 1.0, 0.5, 0.0]], dtype=torch.float64)
    target = torch.tensor([0, 1, 0])
    w = model.weight.detach()[target]
    expected = (x * w).sum(1).abs() / (x.norm(dim=1) * w.norm(dim=1))  # 1/3, 1 and 1/(1.5 * 3)
    assert torch.allclose(seeds.alignment(model, x, target), expected, atol=1e-12)
    assert torch.allclose(expected, torch.tensor([1 / 3, 1.0, 2 / 9], dtype=torch.float64), atol=1e-12)


def small_table():
    rows = []
    for seed, (a, b) in enumerate([(0.50, 0.20), (0.54, 0.10), (0.46, 0.30)]):
        rows += [{"model": "m", "seed": seed, "measure": "acc", "method": "none", "versus": "none", "n": 10,
                  "mean": a, "ci_low": a - 0.1, "ci_high": a + 0.1},
                 {"model": "m", "seed": seed, "measure": "gap", "method": "none", "versus": "none", "n": 10,
                  "mean": b, "ci_low": b - 0.02, "ci_high": b + 0.04}]
    return pd.DataFrame(rows, columns=seeds.COLUMNS)


def test_by_seed_and_spread_table_read_the_stored_rows():
    table = small_table()
    assert seeds.by_seed(table, 1, ["m"], ["gap", "acc"]).to_numpy().tolist() == [[0.10, 0.54]]
    spread = seeds.spread_table(table, ["m"], ["acc", "gap"])
    assert spread.loc[("m", "seed 2"), "acc"] == "0.460 ±0.100" and spread.loc[("m", "seed 0"), "gap"] == "0.200 ±0.030"
    assert spread.loc[("m", "range"), "acc"] == "0.080" and spread.loc[("m", "range"), "gap"] == "0.200"
    with pytest.raises(KeyError, match="no mean for seed 3"):
        seeds.by_seed(table, 3, ["m"], ["acc"])
