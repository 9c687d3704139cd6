"""Self-checks for chapter 14, How sure is an explanation? (notebooks/ch14_uncertainty.ipynb).

Every sampler of the chapter is seeded and cheap on a few MNIST digits, so the checks recompute
the reference on the learner's machine with :mod:`xaiutils.evaluation.uncertainty` and compare
within 0.1%: the learner's numbers and the reference come from the same seeds and the same code.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from xaiutils import data, zoo
from xaiutils.attribution import gradient
from xaiutils.evaluation.uncertainty import bayesian_samples, interval, mc_dropout_samples, spread, weight_noise_samples
from xaiutils.exercises import exercise, not_yet, number, numbers, right
from xaiutils.experiments.uncertainty import auroc


@lru_cache(maxsize=1)
def _mnist():
    return data.mnist()


def _close(a: float, b: float, rtol: float = 1e-3, atol: float = 1e-6) -> bool:
    # the reference is computed on the learner's machine from the same seeds: only the order of a sum differs
    return math.isfinite(a) and abs(a - b) <= atol + rtol * abs(b)


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


# ---------------------------------------------------------------------------- exercise 1
SURE_SOURCES = ("mc_dropout", "bayesian")


def _sure_share(low: torch.Tensor, high: torch.Tensor) -> float:
    return ((low > 0) | (high < 0)).double().mean().item()


@lru_cache(maxsize=1)
def _sure_samples() -> dict:
    """Exercise 1's samples (seeded, so drawn once per session)."""
    mnist = _mnist()
    x, y = mnist.x_test[:8], mnist.y_test[:8]
    return {"mc_dropout": mc_dropout_samples(gradient, zoo.load("mnist-dropout"), x, y, samples=20, seed=0),
            "bayesian": bayesian_samples(gradient, zoo.load("mnist-bayes"), x, y, samples=20, seed=0)}


@exercise("ch14.1", "Pixels of sure sign",
          "Draw 20 maps of the gradient for the first 8 test digits and their labels with each sampler (seed 0); "
          "interval(maps, 0.9) gives (low, high) per pixel, and a pixel has a sure sign when low > 0 or high < 0. "
          "Take the share over all pixels of the 8 digits.")
def sure_sign(sure):
    answer = numbers(sure, SURE_SOURCES, "sure")
    if isinstance(answer, str):
        return not_yet(answer)
    maps = _sure_samples()
    for source in SURE_SOURCES:
        value, reference = answer[source], _sure_share(*interval(maps[source], 0.9))
        if _close(value, reference):
            continue
        if _close(value, 100 * reference):
            return not_yet(f"sure[{source!r}] looks like a percentage; give the share as a fraction between 0 and 1.")
        if _close(value, reference * maps[source][0].numel()):
            return not_yet(f"sure[{source!r}] is a count of pixels; divide by the number of pixels of the 8 digits.")
        if _close(value, _sure_share(*interval(maps[source], 0.95))):
            return not_yet(f"sure[{source!r}] uses the 95% interval; the exercise asks for level 0.9.")
        mean, std = maps[source].mean(0), maps[source].std(0)
        if _close(value, (mean.abs() > std).double().mean().item()):
            return not_yet(f"sure[{source!r}] counts the pixels whose |mean| exceeds the std; use the interval's "
                           "bounds from interval(maps, 0.9).")
        return not_yet(f"sure[{source!r}] is not the reference: the share of the pixels of the first 8 test digits "
                       "whose 90% interval of 20 sampled gradient maps (seed 0) lies entirely above or below 0.")
    return right("Both shares are within 0.1% of the reference.")


# ---------------------------------------------------------------------------- exercise 2
SIGMAS = (0.1, 0.2, 0.4)


def _by_sigma(answer, name):
    if not hasattr(answer, "keys"):
        return f"`{name}` should be a dict from each sigma {list(SIGMAS)} to a number."
    values = {}
    for key, value in answer.items():
        match = [s for s in SIGMAS if abs(float(key) - s) < 1e-9]
        if not match:
            return f"`{name}` has the key {key!r}; its keys should be the sigmas {list(SIGMAS)}."
        values[match[0]] = number(value, f"{name}[{key!r}]")
    if set(values) != set(SIGMAS):
        return f"`{name}` should have one value for every sigma {list(SIGMAS)}."
    return values


@lru_cache(maxsize=len(SIGMAS))
def _noise_samples(sigma: float) -> torch.Tensor:
    """Exercise 2's weight-noise samples at ``sigma`` (seeded, so drawn once per session)."""
    mnist = _mnist()
    return weight_noise_samples(gradient, zoo.load("mnist-standard"), mnist.x_test[:32], mnist.y_test[:32],
                                samples=10, sigma=sigma, seed=0)


@exercise("ch14.2", "How much weight noise?",
          "weight_noise_samples(gradient, model, x, y, samples=10, sigma=s, seed=0) on the chapter's 32 digits "
          "(mnist-standard, seed 0, the labels) for each sigma, then spread(maps).mean() (the rank measure).")
def noise_level(spread_by_sigma, grows):
    answer = _by_sigma(spread_by_sigma, "spread_by_sigma")
    if isinstance(answer, str):
        return not_yet(answer)
    if not _is_bool(grows):
        return not_yet("`grows` should be True or False: does the spread grow with every larger sigma?")
    reference = {}
    for sigma in SIGMAS:
        maps = _noise_samples(sigma)
        reference[sigma] = spread(maps).mean().item()
        if _close(answer[sigma], reference[sigma]):
            continue
        if _close(answer[sigma], spread(maps, measure="cv").mean().item()):
            return not_yet(f"spread_by_sigma[{sigma}] is the 'cv' measure; the exercise asks for the rank measure "
                           "(spread's default).")
        if _close(answer[sigma], spread(maps, absolute=False).mean().item()):
            return not_yet(f"spread_by_sigma[{sigma}] ranks the signed maps; keep spread's default absolute=True.")
        return not_yet(f"spread_by_sigma[{sigma}] is not the reference: the mean over the 32 digits of the rank "
                       "spread of 10 weight-noise samples (seed 0) of the gradient at that sigma.")
    if bool(grows) != all(reference[a] < reference[b] for a, b in zip(SIGMAS, SIGMAS[1:])):
        return not_yet("Your spreads are right, but not the verdict `grows`: compare them sigma by sigma.")
    return right("The three spreads are within 0.1% of the reference and the verdict holds.")


# ---------------------------------------------------------------------------- exercise 3
def _probabilities(model, x, target):
    """Not an attribution: the softmax output, so that MC dropout reports each thinned network's prediction."""
    with torch.no_grad():
        return model(x).softmax(1)


@lru_cache(maxsize=1)
def _flags_reference() -> dict:
    """The right AUROCs of exercise 3 and those of two typical slips (seeded, so computed once per session)."""
    mnist = _mnist()
    model = zoo.load("mnist-dropout")
    x, y = mnist.x_test[:500], mnist.y_test[:500]
    with torch.no_grad():
        predicted = model(x).argmax(1)
    wrong = predicted != y
    maps = mc_dropout_samples(gradient, model, x, predicted, samples=10, seed=0)
    rank, cv = spread(maps), spread(maps, measure="cv")
    with_labels = spread(mc_dropout_samples(gradient, model, x, y, samples=10, seed=0))
    probabilities = mc_dropout_samples(_probabilities, model, x, predicted, samples=10, seed=0).mean(0)
    uncertainty = 1 - probabilities.max(1).values
    return {"auroc_spread": auroc(rank[wrong], rank[~wrong]),
            "auroc_predictive": auroc(uncertainty[wrong], uncertainty[~wrong]),
            "labels": auroc(with_labels[wrong], with_labels[~wrong]), "cv": auroc(cv[wrong], cv[~wrong])}


@exercise("ch14.3", "Does the spread flag a wrong prediction?",
          "On the first 500 test digits, explain mnist-dropout's predicted classes with mc_dropout_samples(gradient, "
          "..., samples=10, seed=0) and take spread(maps); for the predictive uncertainty, 1 minus the largest mean "
          "softmax probability of 10 thinned networks (same seed). auroc(values[wrong], values[~wrong]).")
def flags_errors(auroc_spread, auroc_predictive):
    answers = {"auroc_spread": number(auroc_spread, "auroc_spread"),
               "auroc_predictive": number(auroc_predictive, "auroc_predictive")}
    reference = _flags_reference()
    for name, value in answers.items():
        if _close(value, reference[name]):
            continue
        if _close(value, 1 - reference[name]):
            return not_yet(f"`{name}` is reversed: auroc(case, clean) takes the misclassified digits first.")
        if name == "auroc_spread":
            if _close(value, reference["labels"]):
                return not_yet("`auroc_spread` explains the labels; explain the classes the model predicts (a user "
                               "who does not know the label sees only those).")
            if _close(value, reference["cv"]):
                return not_yet("`auroc_spread` uses the 'cv' measure; the exercise asks for the rank measure.")
        return not_yet(f"`{name}` is not the reference value; the hint (exercises.hint('ch14.3')) lists each step.")
    return right("Both AUROCs are within 0.1% of the reference.")
