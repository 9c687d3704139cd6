"""Self-checks for the exercises of chapter 20, best practices (notebooks/ch20_best_practices.ipynb).

The learner writes report-card pieces (an ``E.Metric``, a card, a metric function); the checks run them on
a few digits of the chapter's model (``mnist-standard``) and compare with the library's metric functions
called directly.
"""
from __future__ import annotations

import copy
from functools import lru_cache

import torch

from . import exercise, not_yet, right


@lru_cache(maxsize=1)
def _setting():
    from xaiutils import data, zoo

    mnist = data.mnist()
    return zoo.load("mnist-standard"), mnist.x_test[:50], mnist.y_test[:50]


def _close(a, b, atol):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return bool(((a - b).abs() <= atol).all())


@exercise("ch20.1", "Add a metric",
          hint="E.Metric(E.deletion, direction, settings={...}, summary='area'): deletion is better when the "
               "curve falls fast, and the settings are deletion's keyword options, removal among them.")
def _check_metric(deletion_mean):
    """``deletion_mean``: an ``E.Metric`` that scores the deletion area with removal to each image's mean."""
    import xaiutils.evaluation as E
    from xaiutils.attribution import gradient

    if not isinstance(deletion_mean, E.Metric):
        return not_yet(f"deletion_mean should be an E.Metric, got {type(deletion_mean).__name__}.")
    if deletion_mean.direction != "lower":
        return not_yet("look at the direction: a deletion curve that falls faster (a smaller area) means a better "
                       "map, so lower is better.")
    settings = dict(deletion_mean.settings)
    if settings.get("removal") != "mean":
        return not_yet(f"the removal is {settings.get('removal', 'the default (zeros)')!r}; this metric removes "
                       "pixels to the mean of each image: settings={'removal': 'mean', ...}.")
    model, x, y = _setting()
    x, y = x[:10], y[:10]
    attr = gradient(model, x, y)
    options = {key: settings[key] for key in ("steps", "score_kind") if key in settings}
    reference = E.deletion(model, x, attr, y, removal="mean", **options).area
    scores = deletion_mean(model, x, y, attr, gradient)
    if not isinstance(scores, torch.Tensor) or scores.shape != reference.shape:
        return not_yet("the metric should give one number per example, the area under each deletion curve: "
                       "summary='area'.")
    if not _close(scores, reference, 1e-6):
        return not_yet("on 10 digits your metric disagrees with E.deletion(..., removal='mean').area; check that fn is "
                       "E.deletion and kind is 'map' (the default).")
    return right("Your metric scores the area of the deletion curve with removal to the image mean; with it on the "
                 "card, compare the rankings of the two deletions with E.rank_agreement.")


BASELINES = ("zeros", "blur", "uniform")
CARD_METRICS = ("deletion", "insertion", "faithfulness_correlation", "sparseness")


@exercise("ch20.2", "Change the baseline",
          hint="Pass E.evaluate a dict of three methods, partial(integrated_gradients, baseline=b, steps=16) for b "
               "in 'zeros', 'blur', 'uniform', with metrics=['deletion', 'insertion', 'faithfulness_correlation', "
               "'sparseness'] on x[:50], y[:50].")
def _check_baseline_card(ig_card):
    """``ig_card``: the report card of integrated gradients at the three baselines, on the first 50 digits; each
    method's name contains its baseline ('zeros', 'blur' or 'uniform')."""
    import xaiutils.evaluation as E
    from xaiutils.attribution import integrated_gradients

    needed = {"method", "metric", "mean"}
    if not needed <= set(getattr(ig_card, "columns", [])):
        return not_yet("ig_card should be the DataFrame that E.evaluate returns (columns method, metric, mean, ...).")
    methods = list(dict.fromkeys(ig_card["method"]))
    named = {b: [m for m in methods if b in str(m)] for b in BASELINES}
    if any(len(found) != 1 for found in named.values()) or len(methods) != 3:
        return not_yet("the card should have three methods, one per baseline, each named with its baseline "
                       f"('zeros', 'blur', 'uniform'); its methods are {methods}.")
    missing = [m for m in CARD_METRICS if m not in set(ig_card["metric"])]
    if missing:
        return not_yet(f"the card lacks the metric(s) {', '.join(missing)}.")
    if "n" in ig_card.columns and set(ig_card["n"]) != {50}:
        return not_yet("the card should be computed on the first 50 digits (its n column says otherwise).")
    model, x, y = _setting()
    for baseline in BASELINES:
        rows = ig_card[ig_card["method"] == named[baseline][0]].set_index("metric")["mean"]
        attr = integrated_gradients(model, x, y, baseline=baseline, steps=16)
        sparseness = E.sparseness(attr).mean().item()
        deletion = E.deletion(model, x, attr, y, **E.METRICS["deletion"].settings).area.mean().item()
        if abs(rows["sparseness"] - sparseness) > 0.005 or abs(rows["deletion"] - deletion) > 0.005:
            return not_yet(f"the row of the {baseline!r} baseline disagrees with integrated gradients at that baseline "
                           "(16 steps) on the first 50 digits, scored with the card's default deletion and "
                           "sparseness; check the baseline, the steps and the digits.")
    return right("The baseline moves every column of the card, and which baseline wins depends on the metric: "
                 "report the baseline with the card.")


@exercise("ch20.3", "Put a sanity check on the card",
          hint="Inside the metric, compute method(model, x, y) and method(random_model, x, y), with random_model = "
               "E.reinitialise(copy.deepcopy(model), seed=0), and return E.spearman of the two, one value per "
               "example, signed (absolute=False).")
def _check_sanity_metric(randomisation_similarity):
    """``randomisation_similarity(method, model, x, y, *, batch_size=None)``: per example, the signed Spearman
    correlation of the map with the map of the chapter's model with re-initialised weights (seed 0)."""
    import xaiutils.evaluation as E
    from xaiutils.attribution import gradient, gradient_x_input, guided_backprop

    model, x, y = _setting()
    x, y = x[:10], y[:10]
    random_model = E.reinitialise(copy.deepcopy(model), seed=0)
    panel = {"gradient": gradient, "gradient_x_input": gradient_x_input, "guided_backprop": guided_backprop,
             "random": E.random_map}
    for name, method in panel.items():
        got = randomisation_similarity(method, model, x, y, batch_size=None)
        got = torch.as_tensor(got.detach() if isinstance(got, torch.Tensor) else got)
        if got.shape != (len(x),):
            return not_yet(f"the metric should return one value per example, shape ({len(x)},); it returned "
                           f"shape {tuple(got.shape)}.")
        ours, theirs = method(model, x, y).detach(), method(random_model, x, y).detach()
        signed, absolute = E.spearman(ours, theirs), E.spearman(ours, theirs, absolute=True)
        if not _close(got, signed, 0.02):
            if _close(got, absolute, 0.02):
                return not_yet(f"for {name} your values match the correlation of absolute values; use the signed "
                               "Spearman correlation (absolute=False), which chapter 9 showed does not let the "
                               "black background of input-multiplied maps pass as similarity.")
            if _close(got, torch.ones_like(got), 1e-6) and name != "random":
                return not_yet(f"for {name} every correlation is 1: are both maps computed on the same model? The "
                               "second map needs a copy with re-initialised weights.")
            return not_yet(f"for {name} your values disagree with the signed Spearman correlation between the map of "
                           "the model and that of a copy re-initialised with E.reinitialise(copy.deepcopy(model), "
                           "seed=0).")
    return right("Your metric is the signed correlation with the re-initialised model's maps: on the card, guided "
                 "backprop's maps stay similar when the weights are random, and the random map, which ignores the "
                 "model, scores the worst possible value, so the card now tests from both sides.")
