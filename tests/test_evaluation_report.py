"""The report card: evaluate, bootstrap intervals, rank agreement between metrics, and the plot."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import assert_unchanged, snapshot
from xaiutils.attribution.gradients import gradient
from xaiutils.evaluation import report as Rp


@pytest.fixture(scope="module")
def mnist_batch():
    from xaiutils.data import mnist
    from xaiutils.zoo import load

    data = mnist()
    return load("mnist-standard"), data.x_test[:6], data.y_test[:6]


def test_bootstrap_ci_known_answers():
    mean, low, high = Rp.bootstrap_ci(np.full(10, 2.5))
    assert mean == low == high == 2.5
    values = np.random.default_rng(0).normal(size=400)
    mean, low, high = Rp.bootstrap_ci(values, n_boot=2000)
    se = values.std() / np.sqrt(400)
    assert low < mean < high and high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert Rp.bootstrap_ci([1.0, np.nan, 3.0])[0] == 2.0
    assert np.isnan(Rp.bootstrap_ci([np.nan])[0])
    assert Rp.bootstrap_ci(values, seed=1) == Rp.bootstrap_ci(values, seed=1)


def test_evaluate_every_default_method_and_metric(mnist_batch):
    model, x, y = mnist_batch
    before = snapshot(model)
    table = Rp.evaluate(model, x[:3], y[:3], n_boot=200, progress=False)
    assert list(table.columns) == ["method", "metric", "direction", "mean", "ci_low", "ci_high", "n", "settings"]
    deletion_rows = table[table.metric == "deletion"]
    assert (deletion_rows["settings"] == "deletion(steps=20, removal='zeros', score_kind='probability').area").all()
    assert table["method"].drop_duplicates().tolist() == list(Rp.DEFAULT_METHODS)
    assert set(table["metric"]) == {k for k, v in Rp.METRICS.items() if not v.needs_masks}
    ok = table.dropna()
    assert ((ok["ci_low"] <= ok["mean"] + 1e-12) & (ok["mean"] <= ok["ci_high"] + 1e-12)).all()
    assert (table["n"] <= 3).all()
    assert_unchanged(model, before)


def test_evaluate_with_masks_and_custom_methods_and_metrics():
    from xaiutils.data import shapes
    from xaiutils.zoo import load

    model, data = load("shapes-standard"), shapes("test")
    x, y, masks = data.x[:4], data.y[:4], data.mask[:4]
    oracle = lambda m, xx, t: masks.double().expand(-1, 3, -1, -1).to(xx)  # the mask itself: perfect localisation
    table = Rp.evaluate(model, x, y, methods={"oracle": oracle, "gradient": gradient},
                        metrics=["pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy", "auc",
                                 "sparseness"], masks=masks, n_boot=100, progress=False)
    oracle_rows = table[(table.method == "oracle") & (table.metric != "sparseness")]
    assert (oracle_rows["mean"] == 1.0).all() and (oracle_rows["ci_low"] == 1.0).all()
    def seven(attr, *, value):
        return torch.full((len(attr),), value)

    constant = Rp.Metric(seven, "lower", kind="map_only", settings={"value": 7.0})
    custom = Rp.evaluate(model, x, y, methods={"gradient": gradient}, metrics={"seven": constant}, progress=False)
    assert custom[["metric", "direction", "mean", "n", "settings"]].values.tolist() == [
        ["seven", "lower", 7.0, 4, "seven(value=7.0)"]]
    with pytest.raises(ValueError, match="the kind of metric 'odd' must be one of 'map', 'method'"):
        Rp.evaluate(model, x, y, methods={"gradient": gradient}, metrics={"odd": Rp.Metric(seven, "lower", kind="x")},
                    progress=False)


def test_rank_agreement_respects_directions():
    rows = []
    for method, quality in (("a", 3.0), ("b", 2.0), ("c", 1.0)):
        rows += [{"method": method, "metric": "up", "direction": "higher", "mean": quality},
                 {"method": method, "metric": "down", "direction": "lower", "mean": -quality},  # agrees
                 {"method": method, "metric": "wrong", "direction": "higher", "mean": -quality}]  # disagrees
    table = pd.DataFrame(rows)
    tau = Rp.rank_agreement(table)
    assert tau.loc["up", "down"] == pytest.approx(1.0) and tau.loc["up", "wrong"] == pytest.approx(-1.0)
    assert list(tau.index) == ["up", "down", "wrong"] and np.allclose(np.diag(tau), 1.0)
    rho = Rp.rank_agreement(table, correlation="spearman")
    assert rho.loc["down", "wrong"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="two methods"):
        Rp.rank_agreement(table[table.method == "a"])


def test_plot_report_draws_one_panel_per_metric():
    table = pd.DataFrame({"method": ["a", "b", "a", "b", "a", "b"], "metric": ["m1", "m1", "m2", "m2", "m3", "m3"],
                          "direction": ["higher"] * 4 + ["lower"] * 2, "mean": [1.0, 2, 3, 4, 5, 6],
                          "ci_low": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5], "ci_high": [1.5, 2.5, 3.5, 4.5, 5.5, 6.5]})
    fig = Rp.plot_report(table, ncols=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3 and "\u2193" in visible[2].get_title()
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_bad_input(mnist_batch):
    model, x, y = mnist_batch
    with pytest.raises(ValueError, match="unknown method"):
        Rp.evaluate(model, x, y, methods=["shap"], progress=False)
    with pytest.raises(ValueError, match="masks"):
        Rp.evaluate(model, x, y, methods=["gradient"], metrics=["pointing_game"], progress=False)
    with pytest.raises(ValueError, match="n_boot"):
        Rp.evaluate(model, x, y, n_boot=0, progress=False)
    with pytest.raises(ValueError, match="correlation"):
        Rp.rank_agreement(pd.DataFrame(), correlation="pearson")


def test_every_registry_method_and_a_random_control_are_available(mnist_batch):
    from xaiutils.attribution import METHODS, TRANSFORMER_METHODS

    known = Rp.available_methods()
    assert set(known) == set(METHODS) | set(TRANSFORMER_METHODS) | {"random"}
    model, x, y = mnist_batch
    a, b = Rp.random_map(model, x, y), Rp.random_map(model, x + 1.0, y.flip(0))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)  # ignores the input and the target
    assert not torch.equal(a, Rp.random_map(model, x, y, seed=1))
    table = Rp.evaluate(model, x[:3], y[:3], methods=["lrp", "random"], metrics=["deletion", "max_sensitivity"],
                        n_boot=50, progress=False)
    assert table["method"].drop_duplicates().tolist() == ["lrp", "random"]
    random_rows = table[table.method == "random"].set_index("metric")
    assert random_rows.loc["max_sensitivity", "mean"] == 0.0  # a map that ignores the input is "perfectly robust"
