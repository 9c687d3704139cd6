"""The model zoo: the trained models shipped with the package, and the recipes that train them (chapter 1).

A recipe is data (:class:`Recipe`): the architecture, the data set, where training starts (a fresh
seeded model or a shipped one) and one or more :class:`Phase` of :func:`xaiutils.models.train`
with its options and loss. ``make weights`` (``python -m xaiutils.zoo``) runs every recipe in
order (a recipe may fine-tune a model listed before it), saves the weights in
``xaiutils/weights`` and records their SHA-256 in ``weights/manifest.json``; :func:`load` checks it.

A recipe that Part II compares models with ships ``seeds`` independently trained copies (the
evidence across seeds of chapters 9--13): seed 0 is the model the chapters explain
(``{name}.pt``), seeds 1, 2, ... differ in the initial weights, the order of the batches, the
augmentation and the random starts or noise of the loss (``{name}.seed{k}.pt``);
``load(name, seed=k)`` and :func:`load_seeds` read them.

The zoo sits above :mod:`xaiutils.models` and :mod:`xaiutils.adversarial`: its recipes use both,
and neither imports it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import corpus
from .adversarial.attribution_training import attribution_regularised_loss
from .adversarial.training import adversarial_loss, gradient_regularised_loss, noise_augmented_loss
from .bayesian import BayesMnistCNN, elbo_loss
from .core.checks import check_choice, check_int
from .models import (MnistCNN, ShapesResNet, TabularMLP, cross_entropy, random_labels, random_shift, random_symmetry,
                     train)
from .text import TextClassifier

WEIGHTS = Path(__file__).parent / "weights"
GRADREG_LAMBDA = 1.0  # the weight of the squared input gradient in mnist-gradreg's loss
NOISE_SIGMA = 0.5  # the standard deviation of the Gaussian noise added to mnist-noise's training inputs
ATTRREG_LAMBDA, ATTRREG_EPSILON = 1.0, 0.1  # mnist-attrreg: the weight of the IG norm, and the L-inf ball of its attack
DROPOUT = 0.25  # the dropout probability after each block of mnist-dropout (MC dropout, chapter 14)
MNIST_TRAINING = 4000  # data.mnist()'s training images: the N that divides mnist-bayes's KL term
SEED_STRIDE = 100_000  # seed k of a recipe offsets every seed it uses by k * SEED_STRIDE (seed 0: unchanged)


@dataclass(frozen=True)
class Phase:
    """One call of :func:`xaiutils.models.train`. ``loss`` builds the ``loss_fn`` (default cross-entropy)."""

    epochs: int
    lr: float
    weight_decay: float = 0.0
    augment: bool | Callable = False  # True: random shifts of up to 2 pixels (models.random_shift); or an augmentation
    seed: int = 0
    loss: Callable[[int], Callable] | None = None  # the model's seed -> loss_fn (seeds its own randomness)


@dataclass(frozen=True)
class Recipe:
    """How one model of the zoo is trained."""

    architecture: Callable[[], nn.Module]  # a class, or a partial that fixes its config (text, tables)
    data: str  # "mnist", "shapes", "decoy_mnist", "reviews", "reviews_spurious", "wine" or "breast_cancer"
    phases: tuple[Phase, ...]
    start: str | None = None  # fine-tune this shipped model; None: a fresh model built after torch.manual_seed(0)
    labels: str = "true"  # or "random": the labels permuted (the data randomisation test)
    description: str = ""
    notes: dict = field(default_factory=dict)
    seeds: int = 1  # independently trained copies shipped (seed 0 is the one the chapters explain)


def _vit(name: str) -> nn.Module:
    """A fresh :mod:`xaiutils.vit` model, imported on first use (importing torchvision takes seconds)."""
    from . import vit

    return getattr(vit, name)()


ZOO: dict[str, Recipe] = {
    "mnist-standard": Recipe(MnistCNN, "mnist", (Phase(40, 3e-3, 1e-4, augment=True),),
                             description="the standard MNIST CNN", seeds=3),
    "shapes-standard": Recipe(ShapesResNet, "shapes", (Phase(15, 3e-3),), description="the standard shapes ResNet", seeds=3),
    "mnist-pgd": Recipe(MnistCNN, "mnist", tuple(
        Phase(epochs, 2e-3, augment=True, seed=phase,
              loss=lambda seed, epsilon=epsilon, phase=phase: adversarial_loss(
                  epsilon, steps=7, seed=1000 * phase + SEED_STRIDE * seed))
        for phase, (epsilon, epochs) in enumerate([(0.1, 3), (0.2, 3), (0.3, 10)])),
        start="mnist-standard",
        description="PGD adversarial training (7 steps), fine-tuned from mnist-standard with epsilon 0.1 -> 0.3", seeds=3),
    "mnist-gradreg": Recipe(MnistCNN, "mnist", (
        Phase(20, 3e-3, 1e-4, augment=True, loss=lambda seed: gradient_regularised_loss(GRADREG_LAMBDA)),),
        description="input-gradient regularisation (double backpropagation), trained from scratch", seeds=3),
    "mnist-noise": Recipe(MnistCNN, "mnist", (
        Phase(20, 3e-3, 1e-4, augment=True, loss=lambda seed: noise_augmented_loss(NOISE_SIGMA, seed=SEED_STRIDE * seed)),),
        description="Gaussian noise augmentation (sigma = 0.5, unclipped), trained from scratch", seeds=3),
    "mnist-random-labels": Recipe(MnistCNN, "mnist", (Phase(100, 5e-3),), labels="random",
                                  description="the training images with permuted labels, memorised"),
    "decoy-mnist-standard": Recipe(MnistCNN, "decoy_mnist", (Phase(60, 5e-3),),
                                   description="a standard model on decoy MNIST: it comes to rely on the patch", seeds=3),
    "shapes-pgd": Recipe(ShapesResNet, "shapes", (
        Phase(6, 1e-3, loss=lambda seed: adversarial_loss(8 / 255, steps=4, seed=SEED_STRIDE * seed)),), start="shapes-standard",
        description="PGD adversarial training at epsilon = 8/255 (4 steps), fine-tuned from shapes-standard", seeds=3),
    # issue 15: a model trained for robust attributions (chapter 13; xaiutils.experiments.attribution_robustness)
    "mnist-attrreg": Recipe(MnistCNN, "mnist", (
        Phase(2, 1e-3, augment=True, loss=lambda seed: attribution_regularised_loss(
            ATTRREG_LAMBDA, ATTRREG_EPSILON, steps=3, ig_steps=5, attack_ig_steps=2, seed=SEED_STRIDE * seed)),),
        start="mnist-standard",
        description="robust attribution regularisation (IG-NORM, lambda = 1, epsilon = 0.1; 3 attack steps, 5 Riemann "
                    "points), fine-tuned from mnist-standard for 2 epochs", seeds=3),
    # chapter 14: MC dropout and a variational last layer (Bayes by Backprop)
    "mnist-dropout": Recipe(partial(MnistCNN, dropout=DROPOUT), "mnist", (Phase(40, 3e-3, 1e-4, augment=True),),
                            description="the MNIST CNN with dropout (p = 0.25) after each block, for MC dropout"),
    "mnist-bayes": Recipe(BayesMnistCNN, "mnist", (
        Phase(40, 3e-3, augment=True, loss=lambda seed: elbo_loss(MNIST_TRAINING)),),
        description="the MNIST CNN with a variational last layer, trained by Bayes by Backprop (no weight decay)"),
    # Part IV: the text transformer clean and Clever Hans, two tables
    "mnist-vit": Recipe(partial(_vit, "MnistViT"), "mnist", (Phase(40, 3e-3, 1e-4, augment=True),),
                        description="a 3-layer vision transformer on MNIST (4x4 patches)"),
    "shapes-vit": Recipe(partial(_vit, "ShapesViT"), "shapes", (Phase(100, 3e-3, 1e-4, augment=random_symmetry),),
                         description="a 3-layer vision transformer on the shapes images (8x8 patches; random flips, "
                                     "quarter turns and shifts)"),
    "text-sentiment": Recipe(partial(TextClassifier, corpus.classifier_config()), "reviews", (Phase(20, 2e-3),),
                             description="the text transformer on the generated reviews (random signatures)"),
    "text-sentiment-spurious": Recipe(
        partial(TextClassifier, corpus.classifier_config()), "reviews_spurious", (Phase(20, 2e-3),),
        description="the text transformer on Clever Hans reviews: the signature gives the label away"),
    "wine-mlp": Recipe(partial(TabularMLP, 13, 3), "wine", (Phase(100, 3e-3, 1e-4),),
                       description="an MLP on scikit-learn's wine table (13 features, 3 cultivars)"),
    "breast-cancer-mlp": Recipe(partial(TabularMLP, 30, 2), "breast_cancer", (Phase(100, 3e-3, 1e-4),),
                                description="an MLP on scikit-learn's breast cancer table (30 features)"),
}


def _training_data(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    from . import data

    if name == "mnist":
        split = data.mnist()
        return split.x_train, split.y_train
    if name == "decoy_mnist":
        split = data.decoy_mnist()
        return split.x_train, split.y_train
    if name in ("reviews", "reviews_spurious"):
        split = corpus.reviews("train", spurious=name == "reviews_spurious")
        return split.ids, split.y
    if name in ("wine", "breast_cancer"):
        split = getattr(data, name)()
        return split.x_train, split.y_train
    split = data.shapes("train")
    return split.x, split.y


def train_recipe(recipe: Recipe, *, seed: int = 0, progress: bool = True) -> nn.Module:
    """Run ``recipe`` with model seed ``seed``: the model it describes, trained.

    Seed ``k`` starts from a fresh model built after ``torch.manual_seed(k * SEED_STRIDE)`` (or from
    seed ``k`` of the fine-tuned start, loaded with :func:`load`) and offsets every phase's seed,
    and the seeds of its loss, by ``k * SEED_STRIDE``; seed 0 is the recipe as written.
    """
    seed = check_int(seed, "seed", minimum=0)
    x, y = _training_data(recipe.data)
    if recipe.labels == "random":
        y = random_labels(y)
    if recipe.start is None:
        torch.manual_seed(SEED_STRIDE * seed)
        model = recipe.architecture()
    else:
        model = load(recipe.start, seed=seed)
    for phase in recipe.phases:
        train(model, x, y, epochs=phase.epochs, lr=phase.lr, weight_decay=phase.weight_decay,
              augment=phase.augment if callable(phase.augment) else random_shift if phase.augment else None, seed=phase.seed + SEED_STRIDE * seed,
              loss_fn=phase.loss(seed) if phase.loss is not None else cross_entropy, progress=progress)
    return model


def weights_file(name: str, seed: int = 0) -> Path:
    """Where the weights of seed ``seed`` of model ``name`` live: ``{name}.pt`` or ``{name}.seed{k}.pt``."""
    return WEIGHTS / (f"{name}.pt" if seed == 0 else f"{name}.seed{seed}.pt")


def _key(name: str, seed: int) -> str:
    return name if seed == 0 else f"{name}.seed{seed}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest() -> dict:
    path = WEIGHTS / "manifest.json"
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RuntimeError(f"{path} is not valid JSON ({error}); restore it from the repository "
                           "(git checkout xaiutils/weights/manifest.json) or run `make weights`.") from None
    if not isinstance(manifest, dict) or not all(isinstance(entry, dict) for entry in manifest.values()):
        raise RuntimeError(f"{path} must map each model name to {{'sha256': ..., 'file': ...}}; restore it from "
                           "the repository or run `make weights`.")
    return manifest


def _check_seed(name: str, seed) -> int:
    seed = check_int(seed, "seed", minimum=0)
    if seed >= ZOO[name].seeds:
        raise ValueError(f"seed must be one of 0..{ZOO[name].seeds - 1} for {name!r} (the seeds it ships); "
                         f"got {seed}.")
    return seed


def load(name: str, seed: int = 0) -> nn.Module:
    """The trained model ``name`` of :data:`ZOO`, in eval mode, from the shipped weights.

    ``seed`` picks one of the recipe's independently trained copies (0, the default, is the model
    the chapters explain). The weights are loaded with ``weights_only=True`` after their SHA-256
    is checked against ``weights/manifest.json``. Missing or altered weights raise an error that
    names ``make weights``, which retrains every model of the zoo.
    """
    check_choice(name, "name", ZOO)
    seed = _check_seed(name, seed)
    path = weights_file(name, seed)
    expected = _manifest().get(_key(name, seed), {}).get("sha256")
    if not path.exists() or expected is None:
        raise FileNotFoundError(
            f"no shipped weights for {name!r} (seed {seed}) at {path}. Run `make weights` "
            "(python -m xaiutils.zoo) in the repository to train them.")
    if _sha256(path) != expected:
        raise RuntimeError(
            f"the weights file {path} does not match its SHA-256 in weights/manifest.json; it is corrupt "
            "or was changed by hand. Run `make weights` to retrain and record it.")
    model = ZOO[name].architecture()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def load_seeds(name: str) -> list[nn.Module]:
    """Every shipped seed of model ``name``, seed 0 first: a deep ensemble (chapter 14)."""
    check_choice(name, "name", ZOO)
    return [load(name, seed) for seed in range(ZOO[name].seeds)]


def build_weights(names: list[str] | None = None, seeds: list[int] | None = None) -> dict:
    """Train the models of :data:`ZOO` (all by default), save their weights and update the manifest.

    ``seeds`` restricts the run to these model seeds (default: every seed each recipe ships);
    a seed a recipe does not ship is skipped for it.
    """
    for name in names or []:
        check_choice(name, "each of names", ZOO)
    for seed in seeds or []:
        check_int(seed, "each of seeds", minimum=0)
    WEIGHTS.mkdir(exist_ok=True)
    for name in names or list(ZOO):
        for seed in range(ZOO[name].seeds):
            if seeds is not None and seed not in seeds:
                continue
            model = train_recipe(ZOO[name], seed=seed)
            path = weights_file(name, seed)
            torch.save(model.state_dict(), path)
            # read again and written after every model: a later recipe can load (and fine-tune) this
            # one, and the entries of another run that finished meanwhile are kept
            manifest = _manifest()
            manifest[_key(name, seed)] = {"sha256": _sha256(path), "file": path.name}
            (WEIGHTS / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return _manifest()


def main(argv: list[str]) -> None:
    """``python -m xaiutils.zoo [NAME ...] [--seeds K ...]``: retrain the named models (all by default)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m xaiutils.zoo", description=main.__doc__)
    parser.add_argument("names", nargs="*", help="models of the zoo (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, help="only these model seeds (default: all shipped)")
    args = parser.parse_args(argv)
    build_weights(args.names or None, args.seeds)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
