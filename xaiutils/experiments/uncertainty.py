r"""Does the spread of an explanation flag what earlier chapters found unreliable? (chapter 14)

Four sources of sampled networks (:mod:`xaiutils.evaluation.uncertainty`), each with the model it
samples around (its *base* model):

* ``ensemble``: the three seeds of ``mnist-standard`` (base: seed 0), ``lakshminarayanan2017simple``;
* ``mc_dropout``: ``mnist-dropout`` with dropout on (base: the model in eval mode), ``gal2016dropout``;
* ``bayesian``: weight draws of ``mnist-bayes`` (base: its mean weights), ``blundell2015weight``;
* ``weight_noise``: NoiseGrad's copies of ``mnist-standard``, sigma = 0.2 (base: the model), ``bykov2022noisegrad``.

For the gradient and guided backpropagation on test digits, the per-example spread
(:func:`~xaiutils.evaluation.uncertainty.spread`, ``"rank"`` and ``"cv"``) is measured on

* ``clean``: the digits as they are;
* ``randomised``: the same digits with every network of the source fully re-initialised (the last
  step of the cascading randomisation test of chapter 9, ``adebayo2018sanity``; the ensemble's
  members get different random weights, the others one random base model);
* ``attacked``: the digits after chapter 12's top-k attack on the base model's gradient
  (``ghorbani2019interpretation``: epsilon 0.05, k 50, 20 steps);
* ``decoy`` / ``decoy_clean``: ``decoy-mnist-standard`` (chapter 18) under NoiseGrad on the decoy
  test digits and on the same digits without the patch, and the share of the mean map and of the
  per-pixel std that lies on the patch.

``flag`` rows give the AUROC of the spread for telling a case from ``clean`` (the probability that
a random example of the case has a larger spread than a random clean one; 0.5 flags nothing). For
``randomised`` the answer is partly built in: the ensemble's members get different random weights,
and the other sources sample around one random network whose maps they move more than a trained one's.
``metric`` rows compare Part II's metrics on the base model's own map (``single``) and on the
mean map of the samples (``mean``): faithfulness correlation and deletion AOPC on MNIST, and on the
shapes (``shapes-standard``'s three seeds) relevance mass accuracy and the pointing game, whose
``single`` is the mean over the three seeds of each seed's own map.
"""
from __future__ import annotations

from functools import partial

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import data, models, zoo
from ..adversarial.explanations import top_k_attack
from ..attribution import gradient, guided_backprop
from ..attribution.weight_noise import weight_noise_samples
from ..evaluation import aopc, faithfulness_correlation, pointing_game, relevance_mass_accuracy
from ..evaluation.sanity import reinitialise
from ..evaluation.uncertainty import bayesian_samples, ensemble_samples, mc_dropout_samples, spread

SETTINGS = {
    "full": dict(digits=100, shapes=100, samples=10, methods=("gradient", "guided_backprop"),
                 sources=("ensemble", "mc_dropout", "bayesian", "weight_noise"), epsilon=0.05, k=50, attack_steps=20),
    "reduced": dict(digits=12, shapes=12, samples=3, methods=("gradient",),
                    sources=("ensemble", "mc_dropout", "bayesian", "weight_noise"), epsilon=0.05, k=50, attack_steps=5),
}
TOLERANCE = dict(atol=0.05, reason="the attack and the maps of trained float32 networks move in the last digits "
                                   "between CPUs; spreads, AUROCs and metrics are averages over 12 to 100 examples")
KEYS = ["question", "source", "method", "case", "statistic"]
VALUES = ["value"]
NOISE_SIGMA = 0.2  # NoiseGrad's default; costs mnist-standard about 3% accuracy (weight_noise.py)
METHODS = {"gradient": gradient, "guided_backprop": guided_backprop}


def sampler(source: str, samples: int):
    """``(method, model_or_models, x, target) -> maps (S, B, ...)`` for ``source``, seeded (seed 0)."""
    if source == "ensemble":
        return ensemble_samples
    if source == "weight_noise":
        return partial(_weight_noise, samples=samples)
    return partial({"mc_dropout": mc_dropout_samples, "bayesian": bayesian_samples}[source], samples=samples, seed=0)


def _weight_noise(method, model, x, target, *, samples):
    return weight_noise_samples(method, model, x, target, samples=samples, sigma=NOISE_SIGMA, seed=0)


def networks(source: str) -> tuple[object, torch.nn.Module]:
    """What the sampler of ``source`` takes (a model, or the ensemble's list) and the base model."""
    if source == "ensemble":
        members = zoo.load_seeds("mnist-standard")
        return members, members[0]
    model = zoo.load({"mc_dropout": "mnist-dropout", "bayesian": "mnist-bayes", "weight_noise": "mnist-standard"}[source])
    return model, model


def randomised(source: str):
    """The source's networks with every layer re-initialised (seeded: member k with seed k)."""
    sampled, base = networks(source)
    if source == "ensemble":
        return [reinitialise(member, seed=k) for k, member in enumerate(sampled)]
    return reinitialise(sampled, seed=0)


def auroc(case: torch.Tensor, clean: torch.Tensor) -> float:
    """P(spread of a case example > spread of a clean example), ties counted half (Mann-Whitney)."""
    greater = (case[:, None] > clean[None, :]).double().mean()
    ties = (case[:, None] == clean[None, :]).double().mean()
    return (greater + 0.5 * ties).item()


def _spread_rows(source, method, case, maps) -> tuple[list[dict], dict]:
    scores = {"rank": spread(maps), "cv": spread(maps, measure="cv")}
    rows = [dict(question="spread", source=source, method=method, case=case, statistic=f"{kind} mean",
                 value=values.mean().item()) for kind, values in scores.items()]
    return rows, scores


def _single_and_mean(method, base, x, y, maps) -> dict:
    return {"single": method(base, x, y).detach(), "mean": maps.mean(0)}


def _accuracy_rows(source, sampled, base, x, y, samples) -> list[dict]:
    """The base model's accuracy and the mean accuracy of the sampled networks (on the maps' digits)."""
    def accuracy_of(model):
        return models.accuracy(model, x, y)

    rows = [dict(question="accuracy", source=source, method="-", case="base", statistic="accuracy",
                 value=accuracy_of(base))]
    # the predictions of each sampled network: explain the output with a method that returns the logits
    logits = sampler(source, samples)(_logits, sampled, x, y)
    rows.append(dict(question="accuracy", source=source, method="-", case="sampled networks", statistic="accuracy",
                     value=(logits.argmax(-1) == y).double().mean().item()))
    return rows


def _logits(model, x, target, batch_size=None):
    """Not an attribution: the logits, so that the samplers report what each sampled network predicts."""
    with torch.no_grad():
        return model(x)


def run(setting: str = "full", progress: bool = True) -> pd.DataFrame:
    """One row per (question, source, method, case, statistic); see the module's docstring."""
    options = SETTINGS[setting]
    mnist = data.mnist()
    x, y = mnist.x_test[:options["digits"]], mnist.y_test[:options["digits"]]
    rows = []
    for source in tqdm(options["sources"], desc="sources", disable=not progress):
        sample = sampler(source, options["samples"])
        sampled, base = networks(source)
        rows += _accuracy_rows(source, sampled, base, x, y, options["samples"])
        attacked = top_k_attack(base, x, y, epsilon=options["epsilon"], k=options["k"], steps=options["attack_steps"])
        random_networks = randomised(source)
        for name in options["methods"]:
            method = METHODS[name]
            maps = sample(method, sampled, x, y)
            new, clean = _spread_rows(source, name, "clean", maps)
            rows += new
            for kind, value in faithfulness(base, x, y, _single_and_mean(method, base, x, y, maps)).items():
                rows.append(dict(question="metric", source=source, method=name, case=kind[0], statistic=kind[1],
                                 value=value))
            for case, case_maps in (("randomised", sample(method, random_networks, x, y)),
                                    ("attacked", sample(method, sampled, attacked, y))):
                new, scores = _spread_rows(source, name, case, case_maps)
                rows += new
                rows += [dict(question="flag", source=source, method=name, case=case, statistic=f"{kind} auroc",
                              value=auroc(scores[kind], clean[kind])) for kind in scores]
    rows += decoy(options)
    rows += shapes_localisation(options)
    return pd.DataFrame(rows)


def faithfulness(model, x, y, maps: dict) -> dict:
    """Faithfulness correlation and deletion AOPC (most relevant first, 20 steps) of each map, mean over digits."""
    result = {}
    for kind, attr in maps.items():
        result[kind, "faithfulness correlation"] = faithfulness_correlation(model, x, attr, y, seed=0).mean().item()
        result[kind, "deletion aopc"] = aopc(model, x, attr, y, steps=20).mean().item()
    return result


def decoy(options: dict) -> list[dict]:
    """NoiseGrad on decoy-mnist-standard: spread with and without the patch, and where the map and its std lie."""
    split, clean = data.decoy_mnist(), data.mnist()
    n = options["digits"]
    x, x_clean, y = split.x_test[:n], clean.x_test[:n], split.y_test[:n]
    patch = data.decoy_mask(x, x_clean)
    model = zoo.load("decoy-mnist-standard")
    rows = []
    for name in options["methods"]:
        maps = _weight_noise(METHODS[name], model, x, y, samples=options["samples"])
        new, scores = _spread_rows("weight_noise", name, "decoy", maps)
        rows += new
        new, clean_scores = _spread_rows("weight_noise", name, "decoy_clean",
                                         _weight_noise(METHODS[name], model, x_clean, y, samples=options["samples"]))
        rows += new
        rows += [dict(question="flag", source="weight_noise", method=name, case="decoy", statistic=f"{kind} auroc",
                      value=auroc(scores[kind], clean_scores[kind])) for kind in scores]
        mean, std = maps.mean(0).abs(), maps.std(0)
        for statistic, values in (("patch share of |mean map|", mean), ("patch share of std", std)):
            share = (values * patch).flatten(1).sum(1) / values.flatten(1).sum(1)
            rows.append(dict(question="decoy", source="weight_noise", method=name, case="decoy", statistic=statistic,
                             value=share.mean().item()))
        rows.append(dict(question="decoy", source="weight_noise", method=name, case="decoy",
                         statistic="patch share of pixels", value=patch.double().mean().item()))
    return rows


def shapes_localisation(options: dict) -> list[dict]:
    """shapes-standard's three seeds: localisation of each seed's map (averaged) and of the ensemble's mean map."""
    split = data.shapes("test")
    n = options["shapes"]
    x, y, mask = split.x[:n], split.y[:n], split.mask[:n]
    members = zoo.load_seeds("shapes-standard")
    rows = []
    for name in options["methods"]:
        maps = ensemble_samples(METHODS[name], members, x, y)
        for kind, attrs in (("single", list(maps)), ("mean", [maps.mean(0)])):
            for statistic, metric in (("relevance mass accuracy", relevance_mass_accuracy),
                                      ("pointing game", pointing_game)):
                value = torch.stack([metric(attr, mask).double().mean() for attr in attrs]).mean().item()
                rows.append(dict(question="metric", source="ensemble (shapes)", method=name, case=kind,
                                 statistic=statistic, value=value))
    return rows
