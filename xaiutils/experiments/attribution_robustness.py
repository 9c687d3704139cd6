r"""Do models trained for robust attributions keep their explanations under attack? (chapters 12 and 13)

Robust attribution regularisation ``chen2019robust`` (the zoo's ``mnist-attrreg``, IG-NORM
fine-tuned from ``mnist-standard``) trains a model so that the integrated gradients of its loss
stay small within an :math:`\epsilon`-ball. This experiment measures it against the standard
model, adversarial training ``madry2018towards`` (``mnist-pgd``) and input-gradient regularisation
``ross2018improving`` (``mnist-gradreg``), each at the three seeds the zoo ships, on a fixed set
of test digits (the first ``digits`` of :func:`xaiutils.data.mnist`'s test split):

* chapter 13's measures: clean accuracy (``clean_digits`` digits), robust accuracy under PGD-10
  at :math:`\epsilon` = 0.1, and the alignment of input and gradient ``etmann2019connection``;
* chapter 12's attacks ``ghorbani2019interpretation``: the top-k intersection (k = 50) of the map
  of the predicted class before and after the top-k attack at :math:`\epsilon` = 0.1 (``attack_steps``
  steps; chapter 12 takes 20, the full setting 10 to fit its 2-core budget), for
  the gradient (attacked on the gradient map) and for integrated gradients (16 steps, black
  baseline; attacked on gradient x input, the attack's map closest to it), with the random sign
  perturbation of the same size as the control; and max-sensitivity at radius 0.02 (``samples``
  draws) ``yeh2019fidelity``;
* the quantity the regulariser bounds: :math:`\|\mathrm{IG}^{\ell_y}(x, x')\|_1` (10 Riemann
  points) at the :math:`x'` found by
  :func:`~xaiutils.adversarial.attribution_training.attribution_attack` (5 PGD steps, 5 points).

Each row is one (model, seed, measure, method): the mean over the digits with its 95% percentile
bootstrap interval (1,000 resamples, seed 0). :func:`summary` gives the spread across seeds and
:func:`in_every_seed` whether an ordering of two models holds for each seed.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import data, evaluation as E, zoo
from ..adversarial import pgd, saliency_map, top_k_attack
from ..adversarial.attribution_training import attribution_attack, loss_integrated_gradients
from ..attribution import gradient, integrated_gradients
from ..core.checks import check_choice
from ..evaluation import alignment  # Etmann et al.'s input-gradient alignment (chapter 13)

SETTINGS = {
    "full": dict(models=("mnist-standard", "mnist-pgd", "mnist-gradreg", "mnist-attrreg"), seeds=(0, 1, 2),
                 clean_digits=1000, digits=100, attack_steps=20, samples=3),
    "reduced": dict(models=("mnist-standard", "mnist-attrreg"), seeds=(0,), clean_digits=200, digits=16,
                    attack_steps=5, samples=2),
}
TOLERANCE = dict(atol=0.07, reason="the attacks keep or lose whole digits and take signed steps whose signs can flip "
                                   "with the last bits of float32 on another CPU; one digit of the reduced run's "
                                   "16 moves a mean by 0.0625")
KEYS = ["model", "seed", "measure", "method"]
VALUES = ["mean", "ci_low", "ci_high"]
COLUMNS = KEYS + ["n"] + VALUES

EPSILON = 0.1  # the L-inf budget of every attack
K = 50  # the top-k of Ghorbani's attack and of its measure (chapter 12)
RADIUS = 0.02  # max-sensitivity's L-inf radius (chapter 12)
IG_STEPS = 16
N_BOOT = 1000
DIRECTIONS = {"clean accuracy": "higher", "PGD-10 accuracy": "higher", "alignment": "higher",
              "top-k intersection, attack": "higher", "top-k intersection, random sign": "higher",
              "max-sensitivity": "lower", "loss IG norm under attack": "lower"}
IG = partial(integrated_gradients, steps=IG_STEPS)


def random_sign(x: torch.Tensor, epsilon: float, seed: int = 0) -> torch.Tensor:
    """Ghorbani et al.'s control, as chapter 12: every pixel moved by +-epsilon at random, clipped to [0, 1]."""
    signs = 2 * torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(seed)) - 1
    return (x + epsilon * signs).clamp(0, 1)


def _correct(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return (model(x).argmax(1) == y).double()


def measure(model, x: torch.Tensor, y: torch.Tensor, *, attack_steps: int, samples: int) -> dict:
    """Every per-digit measurement of one model: ``{(measure, method): values (n,)}``."""
    with torch.no_grad():
        predicted = model(x).argmax(1)
    values = {("PGD-10 accuracy", "none"): _correct(model, pgd(model, x, y, epsilon=EPSILON, steps=10), y),
              ("alignment", "gradient"): alignment(model, x, y)}
    control = random_sign(x, EPSILON)
    for method, attacked_map, explain in [("gradient", "gradient", lambda z: saliency_map(model, z, predicted)),
                                          ("integrated_gradients", "gradient_x_input",
                                           lambda z: IG(model, z, predicted).detach())]:
        x_attack = top_k_attack(model, x, epsilon=EPSILON, k=K, steps=attack_steps, method=attacked_map)
        before = explain(x)
        values["top-k intersection, attack", method] = E.top_k_intersection(before, explain(x_attack), K)
        values["top-k intersection, random sign", method] = E.top_k_intersection(before, explain(control), K)
        values["max-sensitivity", method] = E.max_sensitivity(
            gradient if method == "gradient" else IG, model, x, predicted, radius=RADIUS, samples=samples)
    x_prime = attribution_attack(model, x, y, epsilon=EPSILON, steps=5, ig_steps=5, seed=0)
    values["loss IG norm under attack", "integrated_gradients"] = loss_integrated_gradients(
        model, x, x_prime, y, steps=10).abs().flatten(1).sum(1)
    return values


def run(setting: str = "full", progress: bool = True) -> pd.DataFrame:
    """One row per (model, seed, measure, method): the mean over the digits and its bootstrap interval."""
    options = SETTINGS[setting]
    mnist = data.mnist()
    x, y = mnist.x_test[:options["digits"]], mnist.y_test[:options["digits"]]
    rows = []
    runs = [(name, seed) for name in options["models"] for seed in options["seeds"]]
    for name, seed in tqdm(runs, desc="models", disable=not progress):
        torch.manual_seed(0)
        model = zoo.load(name, seed=seed)
        values = {("clean accuracy", "none"): _correct(model, mnist.x_test[:options["clean_digits"]],
                                                        mnist.y_test[:options["clean_digits"]])}
        values |= measure(model, x, y, attack_steps=options["attack_steps"], samples=options["samples"])
        for (measured, method), v in values.items():
            mean, low, high = E.bootstrap_ci(np.asarray(v.detach(), dtype=np.float64), n_boot=N_BOOT, seed=0)
            rows.append({"model": name, "seed": seed, "measure": measured, "method": method, "n": len(v),
                         "mean": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=COLUMNS)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (measure, method, model): the mean over seeds of the seed means, their spread (sd, min, max) and
    the widest example interval of any seed (half-width)."""
    grouped = table.assign(half=(table["ci_high"] - table["ci_low"]) / 2).groupby(["measure", "method", "model"])
    return pd.DataFrame({"mean over seeds": grouped["mean"].mean(), "sd across seeds": grouped["mean"].std(ddof=1),
                         "lowest seed": grouped["mean"].min(), "highest seed": grouped["mean"].max(),
                         "widest 95% half-width": grouped["half"].max(), "seeds": grouped["seed"].nunique()})


def in_every_seed(table: pd.DataFrame, measured: str, method: str, better: str, worse: str) -> bool:
    """Whether ``better`` beats ``worse`` on the measure in every seed (by the measure's direction, seed k vs k)."""
    check_choice(measured, "measured", DIRECTIONS)
    rows = table[(table["measure"] == measured) & (table["method"] == method)].set_index(["model", "seed"])["mean"]
    if rows.empty:
        raise ValueError(f"no rows for measure {measured!r} with method {method!r}.")
    seeds = sorted(set(rows.loc[better].index) & set(rows.loc[worse].index))
    sign = 1 if DIRECTIONS[measured] == "higher" else -1
    return bool(seeds) and all(sign * (rows.loc[(better, s)] - rows.loc[(worse, s)]) > 0 for s in seeds)
