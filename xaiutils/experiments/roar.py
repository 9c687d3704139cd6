r"""ROAR at five fractions, three retraining seeds and two targets (chapter 10).

:func:`xaiutils.evaluation.roar` removes the most relevant pixels of every training and test
image, retrains a fresh network and reports its test accuracy ``hooker2019benchmark``. One run at
one fraction says little: the retrained accuracy moves from seed to seed, and Hooker et al. found
their positive cases (SmoothGrad-squared and VarGrad) only at several fractions. This experiment
explains the MNIST standard model of the zoo with seven methods and the random ranking, removes
10-90% of the pixels, retrains the small network of chapter 10 with three seeds, and explains
either the true label (as Hooker et al.) or the class the model predicts (which cannot leak a
label the model does not know, ``rong2022consistent``).

The maps of the predicted class equal those of the label wherever the model predicts the label;
they are recomputed only for the other images.
"""
from __future__ import annotations

from functools import partial

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import data, models, zoo
from ..attribution import gradient, gradient_x_input, guided_backprop, integrated_gradients, smoothgrad
from ..evaluation import roar
from ..evaluation.retraining import _attributions, predictions

SETTINGS = {
    "full": dict(train=4000, test=1000, fractions=(0.1, 0.3, 0.5, 0.7, 0.9), seeds=(0, 1, 2), epochs=10,
                 samples=16, targets=("label", "predicted"),
                 methods=("gradient", "gradient_x_input", "integrated_gradients", "guided_backprop", "smoothgrad",
                          "smoothgrad_sq", "vargrad")),
    "reduced": dict(train=2000, test=500, fractions=(0.5,), seeds=(0,), epochs=5, samples=4, targets=("label",),
                    methods=("gradient_x_input", "smoothgrad_sq")),
}
TOLERANCE = dict(atol=0.05, reason="retraining amplifies the last-digit differences of float32 between CPUs "
                                   "(ATEN_CPU_CAPABILITY=default moved the reduced run by up to 0.008); 0.05 is 25 "
                                   "of its 500 test images")
LEARNING_RATE = 1e-2
CHANNELS = (8, 16, 32)


def methods(samples: int) -> dict:
    """The attribution methods of the experiment, with ``samples`` noisy copies for the SmoothGrad family."""
    return {
        "gradient": gradient,
        "gradient_x_input": gradient_x_input,
        "integrated_gradients": partial(integrated_gradients, steps=16),
        "guided_backprop": guided_backprop,
        "smoothgrad": partial(smoothgrad, gradient, samples=samples),
        "smoothgrad_sq": partial(smoothgrad, gradient, samples=samples, kind="smoothgrad_sq"),
        "vargrad": partial(smoothgrad, gradient, samples=samples, kind="vargrad"),
    }


def explain(method, model, x: torch.Tensor, labels: torch.Tensor, target: str, label_maps=None) -> torch.Tensor:
    """Maps of ``target`` ("label" or "predicted") in batches of 250; predicted maps reuse ``label_maps``."""
    if target == "label":
        return _attributions(method, model, x, labels, None, False, "explaining")
    predicted = predictions(model, x)
    maps, differ = label_maps.clone(), predicted != labels
    if differ.any():
        maps[differ] = method(model, x[differ], predicted[differ]).detach()
    return maps


def run(setting: str = "full", progress: bool = True) -> pd.DataFrame:
    """Test accuracy after ROAR, one row per (method, target, seed, fraction); ``random`` includes fraction 0."""
    options = SETTINGS[setting]
    mnist, model = data.mnist(), zoo.load("mnist-standard")
    x_train, y_train = mnist.x_train[:options["train"]], mnist.y_train[:options["train"]]
    x_test, y_test = mnist.x_test[:options["test"]], mnist.y_test[:options["test"]]
    chosen = {name: method for name, method in methods(options["samples"]).items() if name in options["methods"]}
    maps = {}
    for name, method in tqdm(chosen.items(), desc="explaining", disable=not progress):
        for target in options["targets"]:
            maps[name, target] = tuple(
                explain(method, model, x, y, target, maps.get((name, "label"), (None, None))[k])
                for k, (x, y) in enumerate(((x_train, y_train), (x_test, y_test))))
    retrain = dict(make_model=lambda: models.MnistCNN(channels=CHANNELS), epochs=options["epochs"],
                   train_options=dict(lr=LEARNING_RATE), progress=False)
    runs = [("random", "none", (0.0, *options["fractions"]), "random")]
    runs += [(name, target, options["fractions"], pair) for (name, target), pair in maps.items()]
    rows = []
    bar = tqdm(total=len(runs) * len(options["seeds"]), desc="retraining", disable=not progress)
    for seed in options["seeds"]:
        for name, target, fractions, method in runs:
            result = roar(method, model, x_train, y_train, x_test, y_test, fractions=fractions, seed=seed, **retrain)
            rows += [{"method": name, "target": target, "seed": seed, "fraction": row.fraction,
                      "accuracy": row.accuracy} for row in result.itertuples()]
            bar.update()
    bar.close()
    return pd.DataFrame(rows, columns=["method", "target", "seed", "fraction", "accuracy"])
