r"""Chapter 13's model comparisons for every shipped seed of every model, with intervals over the examples.

Chapter 13 compares one standard model with robust ones (adversarial training
``madry2018towards``, input-gradient regularisation ``ross2018improving``, noise augmentation
``cohen2019certified``) on MNIST and on the shapes: clean and robust accuracy, the alignment of
input and gradient ``etmann2019connection``, eight metrics of Part II for three methods with a
paired verdict against the standard model, and localisation against the object masks. One
trained model per kind cannot tell a property of the training from a property of one run. This
experiment repeats every one of those measurements, with the chapter's settings, for each of the
three independently trained seeds that the zoo ships of each model (:func:`xaiutils.zoo.load`).

Each row is one (model, seed, measure, method, versus): the mean over the examples and its 95%
percentile bootstrap interval (:func:`interval`: 1,000 resamples of the examples, seeded). Rows
with ``versus == "standard"`` are paired: the per-example difference robust $-$ standard between
the models of the *same* seed (seed ``k`` of ``mnist-pgd`` is fine-tuned from seed ``k`` of
``mnist-standard``); :func:`verdict` reads them as the chapter does. Seed 0 is the model the
chapter explains, so its rows repeat the chapter's own numbers.
"""
from __future__ import annotations

import copy
from functools import partial

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import data, evaluation as E, zoo
from ..adversarial import fgsm, pgd
from ..attribution import gradient, integrated_gradients, smoothgrad
from ..core.checks import check_choice
from ..evaluation import alignment  # Etmann et al.'s input-gradient alignment (chapter 13)

SETTINGS = {
    "full": dict(seeds=(0, 1, 2), clean_digits=1000, attack_digits=200, metric_digits=100, shown_digits=6,
                 large_attack_digits=1000, shape_clean=500, shape_images=50,
                 methods=("gradient", "smoothgrad", "integrated_gradients")),
    "reduced": dict(seeds=(1,), clean_digits=200, attack_digits=40, metric_digits=20, shown_digits=6,
                    large_attack_digits=0, shape_clean=100, shape_images=20, methods=("gradient", "smoothgrad")),
}
TOLERANCE = dict(atol=0.05, reason="the attacks and the pointing game count examples: one flipped by the last "
                                   "digits of float32 on another CPU moves a mean over the reduced run's 40 "
                                   "digits by 0.025 and over its 12 shape images by 0.083 (the pointing game's "
                                   "ties), so those rows get one flip, every other row 0.05")
KEYS = ["model", "seed", "measure", "method", "versus"]
VALUES = ["mean", "ci_low", "ci_high"]
COLUMNS = KEYS + ["n"] + VALUES

MNIST_MODELS = ("mnist-standard", "mnist-pgd", "mnist-gradreg", "mnist-noise")
SHAPES_MODELS = ("shapes-standard", "shapes-pgd")
EPSILONS = (0.05, 0.1, 0.2, 0.3)  # the L-inf radii of FGSM and PGD-10 on MNIST
SHAPES_EPSILON = 8 / 255
N_BOOT = 1000
DIRECTIONS = {"deletion gain": "higher", "insertion gain": "higher", "EvalAttAI gain": "higher",
              "relative infidelity": "lower", "faithfulness correlation": "higher", "max-sensitivity": "lower",
              "sparseness": "higher", "randomisation similarity": "lower",
              "pointing game": "higher", "relevance mass accuracy": "higher", "relevance rank accuracy": "higher",
              "ROC AUC": "higher"}
METHODS = {"gradient": gradient, "smoothgrad": partial(smoothgrad, gradient, samples=16),
           "integrated_gradients": partial(integrated_gradients, steps=16)}
LOCALISATION = {"pointing game": E.pointing_game, "relevance mass accuracy": E.relevance_mass_accuracy,
                "relevance rank accuracy": E.relevance_rank_accuracy, "ROC AUC": E.auc}


def interval(values) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its 95% percentile bootstrap interval.

    1,000 resamples of the examples with replacement, seed 0 (:func:`xaiutils.evaluation.bootstrap_ci`),
    the interval chapter 13 prints. For a paired comparison pass the per-example differences.
    """
    return E.bootstrap_ci(np.asarray(values, dtype=np.float64), n_boot=N_BOOT, seed=0)


def verdict(low: float, high: float, direction: str) -> str:
    """``"better"``, ``"worse"`` or ``"~"``: a paired interval of robust $-$ standard read against zero.

    ``direction`` is ``"higher"`` or ``"lower"`` (which way is better); ``"~"`` when the interval
    contains zero.
    """
    check_choice(direction, "direction", ("higher", "lower"))
    if direction == "lower":
        low, high = -high, -low
    return "better" if low > 0 else "worse" if high < 0 else "~"


def _rows(model: str, seed: int, measure: str, values, method: str = "none", versus: str = "none") -> dict:
    values = np.asarray(values.detach() if isinstance(values, torch.Tensor) else values, dtype=np.float64).ravel()
    mean, low, high = interval(values)
    return {"model": model, "seed": seed, "measure": measure, "method": method, "versus": versus, "n": len(values),
            "mean": mean, "ci_low": low, "ci_high": high}


def _correct(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)]) == y).double()


def _pgd_correct(model, x, y, epsilon, steps, **options) -> torch.Tensor:
    """Per example: still right after the attack (the indicators whose mean is ``robust_accuracy``)."""
    return _correct(model, pgd(model, x, y, epsilon=epsilon, steps=steps, batch_size=200, **options), y)


def mnist_accuracy(name: str, model, seed: int, mnist, options: dict) -> list[dict]:
    """Clean accuracy, FGSM and PGD-10 at :data:`EPSILONS`, PGD-L2 at 1.5 and Gaussian noise 0.5 (chapter 13)."""
    x, y = mnist.x_test[:options["attack_digits"]], mnist.y_test[:options["attack_digits"]]
    noisy = x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    rows = [_rows(name, seed, "clean", _correct(model, mnist.x_test[:options["clean_digits"]],
                                                 mnist.y_test[:options["clean_digits"]])),
            _rows(name, seed, "clean, attacked digits", _correct(model, x, y)),
            _rows(name, seed, "PGD-L2 1.5", _pgd_correct(model, x, y, 1.5, 10, norm="l2")),
            _rows(name, seed, "noise 0.5", _correct(model, noisy, y))]
    for eps in EPSILONS:
        rows.append(_rows(name, seed, f"FGSM {eps}", _correct(model, fgsm(model, x, y, epsilon=eps), y)))
        rows.append(_rows(name, seed, f"PGD-10 {eps}", _pgd_correct(model, x, y, eps, 10)))
    if name == "mnist-pgd" and options["large_attack_digits"]:
        n = options["large_attack_digits"]
        rows.append(_rows(name, seed, "PGD-10 0.3, more digits",
                          _pgd_correct(model, mnist.x_test[:n], mnist.y_test[:n], 0.3, 10)))
    return rows


def mnist_gradients(name: str, model, seed: int, mnist, options: dict) -> list[dict]:
    """The gradient's share on the digit (the digits shown), its alignment and norm (the metric digits)."""
    shown, shown_y = mnist.x_test[:options["shown_digits"]], mnist.y_test[:options["shown_digits"]]
    g = gradient(model, shown, shown_y).detach().abs().flatten(1)
    on_digit = (g * (shown.flatten(1) > 0)).sum(1) / g.sum(1)
    xm, ym = mnist.x_test[:options["metric_digits"]], mnist.y_test[:options["metric_digits"]]
    return [_rows(name, seed, "gradient share on digit", on_digit),
            _rows(name, seed, "alignment", alignment(model, xm, ym).detach()),
            _rows(name, seed, "gradient norm", gradient(model, xm, ym).flatten(1).norm(dim=1))]


def mnist_scores(model, x: torch.Tensor, y: torch.Tensor, random_model, methods=tuple(METHODS)) -> tuple[dict, dict]:
    """Chapter 13's confidence numbers and, per method, its eight per-digit metrics (gains over a random map)."""
    noise_map = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    chance = {"deletion": E.deletion(model, x, noise_map, y, steps=10).area,
              "insertion": E.insertion(model, x, noise_map, y, steps=10).area,
              "evalattai": E.evalattai(model, x, noise_map, y, steps=10, epsilon=0.3, clip=(0, 1)).area}
    output_change = E.infidelity(model, x, torch.zeros_like(x), y, samples=10, sigma=0.1)
    with torch.no_grad():
        confidence = {"p(label)": model(x).softmax(1).gather(1, y[:, None])[:, 0],
                      "deletion AUC, random map": chance["deletion"], "insertion AUC, random map": chance["insertion"],
                      "EvalAttAI area, random map": chance["evalattai"]}
    scores = {}
    for method_name in methods:
        method = METHODS[method_name]
        attr = method(model, x, y).detach()
        scores[method_name] = {
            "deletion gain": chance["deletion"] - E.deletion(model, x, attr, y, steps=10).area,
            "insertion gain": E.insertion(model, x, attr, y, steps=10).area - chance["insertion"],
            "EvalAttAI gain": chance["evalattai"] - E.evalattai(model, x, attr, y, steps=10, epsilon=0.3,
                                                                 clip=(0, 1)).area,
            "relative infidelity": E.infidelity(model, x, attr, y, samples=10, sigma=0.1, normalise=True)
            / output_change,
            "faithfulness correlation": E.faithfulness_correlation(model, x, attr, y, samples=20),
            "max-sensitivity": E.max_sensitivity(method, model, x, y, samples=3),
            "sparseness": E.sparseness(attr),
            "randomisation similarity": E.spearman(attr, method(random_model, x, y).detach()),
        }
    return confidence, scores


def shapes_scores(model, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, methods=tuple(METHODS)) -> dict:
    """Per method, the four localisation metrics of the channel-summed absolute maps (chapters 11 and 13)."""
    located = {}
    for method_name in methods:
        magnitude = METHODS[method_name](model, x, y).detach().sum(1, keepdim=True).abs()
        located[method_name] = {metric: fn(magnitude, masks) for metric, fn in LOCALISATION.items()}
    return located


def _per_method(name: str, seed: int, scores: dict, standard: dict | None) -> list[dict]:
    rows = []
    for method_name, metrics in scores.items():
        for metric, values in metrics.items():
            rows.append(_rows(name, seed, metric, values, method_name))
            if standard is not None:
                difference = torch.as_tensor(values, dtype=torch.float64) - torch.as_tensor(
                    standard[method_name][metric], dtype=torch.float64)
                rows.append(_rows(name, seed, metric, difference, method_name, versus="standard"))
    return rows


def run(setting: str = "full", progress: bool = True) -> pd.DataFrame:
    """Every comparison of chapter 13 for every seed: one row per (model, seed, measure, method, versus)."""
    options = SETTINGS[setting]
    mnist = data.mnist()
    xm, ym = mnist.x_test[:options["metric_digits"]], mnist.y_test[:options["metric_digits"]]
    # the same random network for every model and seed, as in chapter 13
    random_model = E.reinitialise(copy.deepcopy(zoo.load("mnist-standard")), seed=0)
    shapes = data.shapes("test")
    n = options["shape_images"]
    xs, ys, masks = shapes.x[:n], shapes.y[:n], shapes.mask[:n]
    rows = []
    bar = tqdm(total=len(options["seeds"]) * (len(MNIST_MODELS) + len(SHAPES_MODELS)), disable=not progress)
    for seed in options["seeds"]:
        standard = None
        for name in MNIST_MODELS:
            bar.set_description(f"{name} seed {seed}")
            model = zoo.load(name, seed=seed)
            rows += mnist_accuracy(name, model, seed, mnist, options)
            rows += mnist_gradients(name, model, seed, mnist, options)
            confidence, scores = mnist_scores(model, xm, ym, random_model, options["methods"])
            rows += [_rows(name, seed, measure, values) for measure, values in confidence.items()]
            rows += _per_method(name, seed, scores, standard)
            standard = scores if name == "mnist-standard" else standard
            bar.update()
        standard = None
        for name in SHAPES_MODELS:
            bar.set_description(f"{name} seed {seed}")
            model = zoo.load(name, seed=seed)
            clean = options["shape_clean"]
            rows += [_rows(name, seed, "clean", _correct(model, shapes.x[:clean], shapes.y[:clean])),
                     _rows(name, seed, "PGD-5 8/255", _pgd_correct(model, xs, ys, SHAPES_EPSILON, 5))]
            located = shapes_scores(model, xs, ys, masks, options["methods"])
            rows += _per_method(name, seed, located, standard)
            standard = located if name == "shapes-standard" else standard
            bar.update()
    bar.close()
    return pd.DataFrame(rows, columns=COLUMNS)


def by_seed(table: pd.DataFrame, seed: int, models, measures, *, method: str = "none", versus: str = "none",
            column: str = "mean") -> pd.DataFrame:
    """One seed's ``column`` of the stored ``table`` as a grid: ``models`` (rows) by ``measures`` (columns)."""
    part = table[(table["seed"] == seed) & (table["method"] == method) & (table["versus"] == versus)]
    grid = part.pivot(index="model", columns="measure", values=column)
    missing = [(m, k) for m in models for k in measures if m not in grid.index or k not in grid.columns]
    if missing:
        raise KeyError(f"the stored table has no {column} for seed {seed}, method {method!r}, versus {versus!r} of "
                       f"(model, measure) {missing[:3]}; run `make experiments`.")
    return grid.loc[list(models), list(measures)]


def spread_table(table: pd.DataFrame, models, measures, *, method: str = "none", versus: str = "none",
                 digits: int = 3) -> pd.DataFrame:
    """Every seed's mean and the half-width of its 95% interval, then the range of the means over the seeds.

    Rows ``(model, "seed k")`` and ``(model, "range")``; one column per measure; cells ``"0.955 ±0.029"``.
    """
    seeds = sorted(set(table["seed"]))
    mean, low, high = ({seed: by_seed(table, seed, models, measures, method=method, versus=versus, column=column)
                        for seed in seeds} for column in VALUES)
    rows = {}
    for model in models:
        for seed in seeds:
            rows[model, f"seed {seed}"] = {k: f"{mean[seed].loc[model, k]:.{digits}f} "
                                              f"±{(high[seed].loc[model, k] - low[seed].loc[model, k]) / 2:.{digits}f}"
                                           for k in measures}
        values = pd.DataFrame({seed: mean[seed].loc[model] for seed in seeds})
        rows[model, "range"] = {k: f"{values.loc[k].max() - values.loc[k].min():.{digits}f}" for k in measures}
    return pd.DataFrame(rows).T.loc[:, list(measures)]
