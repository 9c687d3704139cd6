r"""A report card for attribution methods: every method x metric, with uncertainty (chapter 16).

:func:`evaluate` explains a batch with each method, scores every map with each metric, and
returns a tidy table: one row per (method, metric) with the mean over the examples and a
bootstrap 95% confidence interval. :func:`rank_agreement` asks whether the metrics agree on
which method is best; :func:`plot_report` draws the table.

Metrics are functions ``fn(model, x, y, attr, method, masks, batch_size) -> (B,)`` with a
direction, ``"higher"`` or ``"lower"`` is better (:data:`METRICS`). The defaults are sized to
run on a few dozen MNIST or shapes images in seconds to minutes on a CPU.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from ._utils import check_positive, progress_bar, to_numpy
from .complexity import entropy, sparseness
from .faithfulness import aopc, deletion, faithfulness_correlation, infidelity, insertion
from .localisation import auc, pointing_game, relevance_mass_accuracy, relevance_rank_accuracy
from .robustness import max_sensitivity


class Metric(NamedTuple):
    """A report-card metric: ``fn(model, x, y, attr, method, masks, batch_size) -> (B,)`` and its direction."""

    fn: Callable
    direction: str  # "higher" or "lower" is better
    needs_masks: bool = False


def _map_only(fn):
    return lambda model, x, y, attr, method, masks, batch_size: fn(attr)


def _with_mask(fn):
    return lambda model, x, y, attr, method, masks, batch_size: fn(attr, masks)


METRICS: dict[str, Metric] = {
    "deletion": Metric(lambda m, x, y, a, f, s, b: deletion(m, x, a, y, batch_size=b).area, "lower"),
    "insertion": Metric(lambda m, x, y, a, f, s, b: insertion(m, x, a, y, batch_size=b).area, "higher"),
    "aopc": Metric(lambda m, x, y, a, f, s, b: aopc(m, x, a, y, batch_size=b), "higher"),
    "infidelity": Metric(lambda m, x, y, a, f, s, b: infidelity(m, x, a, y, normalise=True, batch_size=b), "lower"),
    "faithfulness_correlation": Metric(
        lambda m, x, y, a, f, s, b: faithfulness_correlation(m, x, a, y, samples=50, batch_size=b), "higher"),
    "max_sensitivity": Metric(lambda m, x, y, a, f, s, b: max_sensitivity(f, m, x, y, samples=5, batch_size=b),
                              "lower"),
    "sparseness": Metric(_map_only(sparseness), "higher"),
    "complexity": Metric(_map_only(entropy), "lower"),
    "pointing_game": Metric(_with_mask(pointing_game), "higher", True),
    "relevance_mass_accuracy": Metric(_with_mask(relevance_mass_accuracy), "higher", True),
    "relevance_rank_accuracy": Metric(_with_mask(relevance_rank_accuracy), "higher", True),
    "auc": Metric(_with_mask(auc), "higher", True),
}
"""The report-card metrics by name. Settings: deletion (zero removal) and insertion (blur) with 20
steps and the target probability; AOPC most-relevant-first with uniform noise; infidelity with
Gaussian noise of std 0.1, 10 samples and ``normalise=True`` (so maps of different scales, e.g.
Grad-CAM and gradients, are comparable); faithfulness correlation with 50 subsets of a quarter of
the pixels; max-sensitivity with 5 draws of radius 0.02; complexity and localisation on the
channel-summed, signed maps."""

DEFAULT_METHODS = ("gradient", "gradient_x_input", "guided_backprop", "integrated_gradients", "smoothgrad",
                   "grad_cam")


def random_map(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0) -> torch.Tensor:
    """A control that knows nothing: seeded standard Gaussian noise of ``x``'s shape.

    It ignores the model and the target, so a method is only worth something on a metric where
    it beats this map (chapter 10). Because the noise is the same for every input, the robustness
    metrics (``max_sensitivity``) score it a perfect 0: stability alone is no evidence of quality.
    """
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype).to(x.device)


def available_methods() -> dict[str, Callable]:
    """The methods :func:`evaluate` knows by name, ``name -> method(model, x, target)``.

    Every entry of the registry :data:`xaiutils.attribution.METHODS` with its default options,
    and ``"random"``, the control :func:`random_map`.
    """
    from ..attribution import METHODS

    return {**{name: entry.function for name, entry in METHODS.items()}, "random": random_map}


def _resolve(items, known: Mapping, kind: str) -> dict:
    if isinstance(items, Mapping):
        return dict(items)
    if isinstance(items, str):
        items = [items]
    unknown = [name for name in items if name not in known]
    if unknown:
        raise ValueError(f"unknown {kind} {unknown[0]!r}; choose from {', '.join(known)} or pass a dict.")
    return {name: known[name] for name in items}


def bootstrap_ci(values, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of the non-NaN ``values`` and its percentile bootstrap interval.

    ``n_boot`` resamples of the examples with replacement (numpy ``default_rng(seed)``); the
    interval is the ``(1 - level)/2`` and ``(1 + level)/2`` percentiles of the resampled means.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
    low, high = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(v.mean()), float(low), float(high)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, methods=DEFAULT_METHODS, metrics=None,
             masks: torch.Tensor | None = None, n_boot: int = 1000, seed: int = 0, batch_size: int | None = None,
             progress: bool = True) -> pd.DataFrame:
    r"""Score every method with every metric on ``(x, y)``; a tidy table with bootstrap confidence intervals.

    Args:
        model: the classifier (left unchanged).
        x, y: inputs and the labels; the maps explain the label ``y``.
        methods: names from :func:`available_methods` (default :data:`DEFAULT_METHODS`; ``"random"``
            is a control) or a dict ``name -> method(model, x, target) -> map``.
        metrics: names from :data:`METRICS` or a dict ``name -> Metric``; default every metric
            that applies (the localisation metrics only when ``masks`` is given).
        masks: ground-truth masks ``(B, 1, H, W)`` for the localisation metrics.
        n_boot, seed: the bootstrap over examples (:func:`bootstrap_ci`).
        batch_size: rows per model pass inside the metrics. The methods run with their own
            options; to batch them too, pass a dict of ``functools.partial(method, batch_size=...)``.

    Returns:
        A DataFrame with one row per method and metric: ``method, metric, direction, mean,
        ci_low, ci_high, n`` (``n`` = examples with a defined value; NaNs are left out).

    Reference: ``hedstrom2023quantus`` (a library of these metrics). Chapter 16.
    """
    check_positive("n_boot", n_boot, integer=True)
    methods = _resolve(methods, available_methods(), "method")
    if metrics is None:
        metrics = {k: v for k, v in METRICS.items() if masks is not None or not v.needs_masks}
    metrics = _resolve(metrics, METRICS, "metric")
    if masks is None and any(m.needs_masks for m in metrics.values()):
        raise ValueError("the localisation metrics need masks=...")
    if masks is not None and masks.shape[0] != x.shape[0]:
        raise ValueError(f"masks has {masks.shape[0]} examples for {x.shape[0]} inputs.")
    rows = []
    for name, method in progress_bar(methods.items(), len(methods), progress, "methods"):
        attr = method(model, x, y).detach()
        for metric_name, metric in metrics.items():
            values = to_numpy(torch.as_tensor(metric.fn(model, x, y, attr, method, masks, batch_size)))
            mean, low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
            rows.append({"method": name, "metric": metric_name, "direction": metric.direction, "mean": mean,
                         "ci_low": low, "ci_high": high, "n": int((~np.isnan(values)).sum())})
    return pd.DataFrame(rows, columns=["method", "metric", "direction", "mean", "ci_low", "ci_high", "n"])


def rank_agreement(table: pd.DataFrame, *, correlation: str = "kendall") -> pd.DataFrame:
    r"""Do the metrics agree on which method is best? Rank correlation between metrics, across methods.

    Each metric's means are turned into "goodness" (negated where lower is better), and every
    pair of metrics is compared by Kendall's :math:`\tau` (or ``correlation="spearman"``) over
    the methods: 1 means the same ranking, -1 the reverse. NaN where a metric ties all methods.

    Returns a square DataFrame, metric x metric. Chapter 16.
    """
    from scipy.stats import kendalltau, spearmanr

    if correlation not in ("kendall", "spearman"):
        raise ValueError(f"correlation must be 'kendall' or 'spearman', got {correlation!r}.")
    goodness = table.assign(score=np.where(table["direction"] == "lower", -table["mean"], table["mean"]))
    wide = goodness.pivot(index="method", columns="metric", values="score")
    wide = wide[[m for m in dict.fromkeys(table["metric"])]]
    if len(wide) < 2:
        raise ValueError("rank agreement needs at least two methods.")
    fn = kendalltau if correlation == "kendall" else spearmanr
    names = list(wide.columns)
    result = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ok = wide[[a, b]].dropna()
            value = fn(ok[a], ok[b])[0] if len(ok) >= 2 else float("nan")
            result.loc[a, b] = result.loc[b, a] = value
    return result


def plot_report(table: pd.DataFrame, *, ncols: int = 4, size: tuple[float, float] = (3.2, 2.4)):
    """A figure with one panel per metric: each method's mean and 95% interval; the title says which way is better.

    Returns the matplotlib figure. Chapter 16.
    """
    import matplotlib.pyplot as plt

    check_positive("ncols", ncols, integer=True)
    metrics = list(dict.fromkeys(table["metric"]))
    if not metrics:
        raise ValueError("the table is empty.")
    ncols = min(ncols, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        part = table[table["metric"] == metric]
        ypos = np.arange(len(part))
        err = np.vstack([part["mean"] - part["ci_low"], part["ci_high"] - part["mean"]])
        ax.errorbar(part["mean"], ypos, xerr=np.nan_to_num(err), fmt="o", capsize=3)
        ax.set_yticks(ypos, part["method"])
        ax.invert_yaxis()
        arrow = "\u2191" if part["direction"].iloc[0] == "higher" else "\u2193"
        ax.set_title(f"{metric} ({arrow} better)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
