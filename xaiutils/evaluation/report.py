r"""A report card for attribution methods: every method x metric, with uncertainty (chapter 20).

:func:`evaluate` explains a batch with each method, scores every map with each metric, and
returns a tidy table: one row per (method, metric) with the mean over the examples and a
bootstrap 95% confidence interval. :func:`rank_agreement` asks whether the metrics agree on
which method is best; :func:`plot_report` draws the table.

A metric (:class:`Metric`) is one of the library's metric functions with its keyword settings and
a direction, ``"higher"`` or ``"lower"`` is better (:data:`METRICS`); the settings are part of every
row of the report. The defaults are sized to run on a few dozen MNIST or shapes images in seconds to
minutes on a CPU.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.checks import check_choice, check_int, check_number
from ..attribution.embeddings import is_token_ids
from ._utils import progress_bar, to_numpy
from .complexity import entropy, sparseness
from .curves import aopc, deletion, insertion
from .faithfulness import faithfulness_correlation, infidelity
from .localisation import auc, pointing_game, relevance_mass_accuracy, relevance_rank_accuracy
from .robustness import max_sensitivity


@dataclass(frozen=True)
class Metric:
    """A report-card metric: the function, which way is better, what it is given, and its settings.

    ``kind`` says how :func:`evaluate` calls ``fn``:

    * ``"map"``: ``fn(model, x, attr, y, batch_size=..., **settings)`` (faithfulness);
    * ``"method"``: ``fn(method, model, x, y, batch_size=..., **settings)`` (robustness: it re-explains);
    * ``"map_only"``: ``fn(attr, **settings)`` (complexity);
    * ``"mask"``: ``fn(attr, masks, **settings)`` (localisation; needs ``masks``).

    ``summary`` names the attribute of the result that is scored (``"area"`` of a
    :class:`~xaiutils.evaluation.curves.Curve`), or is ``None`` for a ``(B,)`` result. The
    settings are written into every row of the report, so a table says how it was computed.
    """

    fn: Callable
    direction: str  # "higher" or "lower" is better
    kind: str = "map"
    settings: Mapping = field(default_factory=dict)
    summary: str | None = None

    @property
    def needs_masks(self) -> bool:
        return self.kind == "mask"

    def __call__(self, model, x, y, attr, method, masks=None, batch_size=None) -> torch.Tensor:
        if self.kind == "map":
            result = self.fn(model, x, attr, y, batch_size=batch_size, **self.settings)
        elif self.kind == "method":
            result = self.fn(method, model, x, y, batch_size=batch_size, **self.settings)
        elif self.kind == "map_only":
            result = self.fn(attr, **self.settings)
        else:
            result = self.fn(attr, masks, **self.settings)
        return getattr(result, self.summary) if self.summary else result

    def describe(self) -> str:
        """``fn(setting=value, ...)``: how the metric is computed, for the report."""
        settings = ", ".join(f"{key}={value!r}" for key, value in self.settings.items())
        return f"{self.fn.__name__}({settings})" + (f".{self.summary}" if self.summary else "")


METRICS: dict[str, Metric] = {
    "deletion": Metric(deletion, "lower", settings={"steps": 20, "removal": "zeros", "score_kind": "probability"},
                       summary="area"),
    "insertion": Metric(insertion, "higher", settings={"steps": 20, "removal": "blur", "score_kind": "probability"},
                        summary="area"),
    "aopc": Metric(aopc, "higher", settings={"order": "most", "steps": 20, "removal": "uniform"}),
    "infidelity": Metric(infidelity, "lower", settings={"perturbation": "gaussian", "sigma": 0.1, "samples": 10,
                                                        "normalise": True}),
    "faithfulness_correlation": Metric(faithfulness_correlation, "higher", settings={"samples": 50}),
    "max_sensitivity": Metric(max_sensitivity, "lower", kind="method", settings={"samples": 5, "radius": 0.02}),
    "sparseness": Metric(sparseness, "higher", kind="map_only"),
    "complexity": Metric(entropy, "lower", kind="map_only"),
    "pointing_game": Metric(pointing_game, "higher", kind="mask"),
    "relevance_mass_accuracy": Metric(relevance_mass_accuracy, "higher", kind="mask"),
    "relevance_rank_accuracy": Metric(relevance_rank_accuracy, "higher", kind="mask"),
    "auc": Metric(auc, "higher", kind="mask"),
}
"""The report-card metrics by name, with the settings each row of a report records. Infidelity uses
``normalise=True`` so that maps of different scales (Grad-CAM and gradients) are comparable;
faithfulness correlation removes a quarter of the pixels per subset; complexity and localisation
score the channel-summed, signed maps."""

DEFAULT_METHODS = ("gradient", "gradient_x_input", "guided_backprop", "integrated_gradients", "smoothgrad",
                   "grad_cam")
TOKEN_METHODS = ("embedding_integrated_gradients", "lrp", "random")
"""The default methods for token ids: those that take ids, and the random control."""

TOKEN_SETTINGS: dict[str, dict] = {
    "deletion": {"removal": "pad"},
    "insertion": {"removal": "pad"},
    "aopc": {"removal": "mask"},
    "infidelity": {"perturbation": "subset", "baseline": "pad", "sigma": None},
    "faithfulness_correlation": {"baseline": "pad"},
}
"""How the report card's metrics remove tokens when ``x`` holds token ids (``None``: the setting is
dropped): deleted words become ``<pad>``, which the text models mask (ERASER's comprehensiveness and,
for insertion, sufficiency: ``deyoung2020eraser``); AOPC flips words to ``<mask>``. Max-sensitivity,
which perturbs a continuous input, is left out."""


def random_map(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0) -> torch.Tensor:
    """A control that knows nothing: seeded standard Gaussian noise of ``x``'s shape.

    It ignores the model and the target, so a method is only worth something on a metric where
    it beats this map (chapter 10). Because the noise is the same for every input, the robustness
    metrics (``max_sensitivity``) score it a perfect 0: stability alone is no evidence of quality.
    """
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()  # token ids get a float map
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(x.device)


def available_methods() -> dict[str, Callable]:
    """The methods :func:`evaluate` knows by name, ``name -> method(model, x, target)``.

    Every entry of the registries :data:`xaiutils.attribution.METHODS` and
    :data:`~xaiutils.attribution.TRANSFORMER_METHODS`, called with its
    :attr:`~xaiutils.attribution.Method.defaults` (e.g. exact Shapley values on a 3 x 3 grid of
    patches), and ``"random"``, the control :func:`random_map`.
    """
    from ..attribution import METHODS, TRANSFORMER_METHODS

    return {**METHODS, **TRANSFORMER_METHODS, "random": random_map}


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
    check_int(n_boot, "n_boot")
    check_number(level, "level", minimum=0, maximum=1, exclusive_minimum=True, exclusive_maximum=True)
    v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64).ravel()
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
        methods: names from :func:`available_methods` (default :data:`DEFAULT_METHODS`, without Grad-CAM
            for a table ``(B, F)``; for token ids embedding IG, LRP and the control; ``"random"`` is a
            control) or a dict ``name -> method(model, x, target) -> map``.
        metrics: names from :data:`METRICS` or a dict ``name -> Metric``; default every metric
            that applies (the localisation metrics only when ``masks`` is given; for a table ``(B, F)``,
            insertion starts from zeros instead of a blurred image; for token ids ``(B, T)``, words are
            removed as :data:`TOKEN_SETTINGS` says and max-sensitivity is left out; the settings
            column says so).
        masks: ground-truth masks ``(B, 1, H, W)`` for the localisation metrics.
        n_boot, seed: the bootstrap over examples (:func:`bootstrap_ci`).
        batch_size: rows per model pass, in the metrics and in every method that takes it.

    Returns:
        A DataFrame with one row per method and metric: ``method, metric, direction, mean,
        ci_low, ci_high, n, settings`` (``n`` = examples with a defined value, NaNs are left out;
        ``settings`` = how the metric was computed, :meth:`Metric.describe`).

    Reference: ``hedstrom2023quantus`` (a library of these metrics). Chapter 20.
    """
    check_int(n_boot, "n_boot")
    tokens = is_token_ids(x)
    table = not tokens and isinstance(x, torch.Tensor) and x.dim() == 2
    if tokens and methods is DEFAULT_METHODS:
        methods = TOKEN_METHODS
    elif table and methods is DEFAULT_METHODS:  # a table has no convolutional layer for Grad-CAM
        methods = tuple(name for name in DEFAULT_METHODS if name != "grad_cam")
    methods = _resolve(methods, available_methods(), "method")
    named = not isinstance(metrics, Mapping)  # None or names: the library's own metrics and settings
    if metrics is None:
        metrics = {k: v for k, v in METRICS.items() if masks is not None or not v.needs_masks}
        if table:  # no image to blur: insertion starts from the zero input (the training mean of standardised features)
            metrics = {k: replace(v, settings={**v.settings, "removal": "zeros"}) if v.settings.get("removal") == "blur"
                       else v for k, v in metrics.items()}
        if tokens:  # no noise ball around token ids
            metrics = {k: v for k, v in metrics.items() if v.kind != "method"}
    metrics = _resolve(metrics, METRICS, "metric")
    if tokens and named:
        metrics = {k: _for_tokens(m, TOKEN_SETTINGS.get(k, {})) for k, m in metrics.items()}
    for metric_name, metric in metrics.items():
        if not isinstance(metric, Metric):
            raise TypeError(f"metric {metric_name!r} must be a Metric; got {type(metric).__name__}.")
        check_choice(metric.kind, f"the kind of metric {metric_name!r}", ("map", "method", "map_only", "mask"))
    if masks is None and any(m.needs_masks for m in metrics.values()):
        raise ValueError("the localisation metrics need masks=... (B, 1, H, W); got masks=None.")
    if masks is not None and masks.shape[0] != x.shape[0]:
        raise ValueError(f"masks must have one mask per example, {x.shape[0]}; got {masks.shape[0]}.")
    rows = []
    for name, method in progress_bar(methods.items(), len(methods), progress, "methods"):
        attr = _explain(method, model, x, y, batch_size)
        for metric_name, metric in metrics.items():
            values = to_numpy(torch.as_tensor(metric(model, x, y, attr, method, masks, batch_size)))
            mean, low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
            rows.append({"method": name, "metric": metric_name, "direction": metric.direction, "mean": mean,
                         "ci_low": low, "ci_high": high, "n": int((~np.isnan(values)).sum()),
                         "settings": metric.describe()})
    return pd.DataFrame(rows, columns=["method", "metric", "direction", "mean", "ci_low", "ci_high", "n", "settings"])


def _for_tokens(metric: Metric, changes: Mapping) -> Metric:
    settings = {**metric.settings, **changes}
    return replace(metric, settings={k: v for k, v in settings.items() if v is not None})


def _explain(method, model: nn.Module, x: torch.Tensor, y, batch_size: int | None) -> torch.Tensor:
    """``method(model, x, y)``, with ``batch_size`` when the method takes one (or any keyword, as a registry entry)."""
    try:
        takes_batch_size = any(p.name == "batch_size" or p.kind is p.VAR_KEYWORD
                               for p in inspect.signature(method).parameters.values())
    except (TypeError, ValueError):
        takes_batch_size = False
    if takes_batch_size and batch_size is not None:
        return method(model, x, y, batch_size=batch_size).detach()
    return method(model, x, y).detach()


def rank_agreement(table: pd.DataFrame, *, correlation: str = "kendall") -> pd.DataFrame:
    r"""Do the metrics agree on which method is best? Rank correlation between metrics, across methods.

    Each metric's means are turned into "goodness" (negated where lower is better), and every
    pair of metrics is compared by Kendall's :math:`\tau` (or ``correlation="spearman"``) over
    the methods: 1 means the same ranking, -1 the reverse. NaN where a metric ties all methods.

    Returns a square DataFrame, metric x metric. Chapter 20.
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

    Returns the matplotlib figure. Chapter 20.
    """
    import matplotlib.pyplot as plt

    check_int(ncols, "ncols")
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
