r"""Remove and retrain (ROAR) and keep and retrain (KAR) (chapter 10, after Hooker et al. 2019).

Deleting pixels from a test image (:func:`~xaiutils.evaluation.curves.deletion`) moves
the image off the training distribution: the score may fall because the model never saw such
images, not because the pixels mattered. ROAR removes the same fraction of the most relevant
pixels from *every training and test image*, retrains a fresh model on the degraded data and
reports its test accuracy. A faithful map removes the information the task needs, so accuracy
falls faster than when the same number of *random* pixels is removed (``method="random"``).

Sized for the book: on the 4,000 training images of :func:`xaiutils.data.mnist` a small
network and 2-3 epochs per fraction take a couple of minutes on a 2-core CPU.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from ..core.batching import chunks
from ..core.baselines import resolve_baseline
from ..core.checks import check_input, check_int, check_number
from ..core.model_state import explaining
from ..core.seeding import seeded
from ._utils import check_map_for_input, expand_features, progress_bar
from .curves import feature_ranks
from .sanity import reinitialise


def _attributions(method, model, x, y, batch_size, progress, desc) -> torch.Tensor:
    parts = list(chunks(len(x), batch_size, 250))
    maps = [method(model, x[s], y[s]).detach() for s in progress_bar(parts, len(parts), progress, desc)]
    return check_map_for_input(torch.cat(maps), x)


def predictions(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """The class ``model`` predicts for every example of ``x``, in batches, without gradients."""
    with explaining(model, x), torch.no_grad():
        return torch.cat([model(x[s]).argmax(1) for s in chunks(len(x), batch_size, 250)])


def _degrade(x: torch.Tensor, ranks: torch.Tensor, count: int, keep: bool, fill: torch.Tensor) -> torch.Tensor:
    gone = ranks >= count if keep else ranks < count
    return torch.where(expand_features(gone, x), fill, x)


def roar(method, model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
         y_test: torch.Tensor, *, fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), keep: bool = False,
         removal="dataset_mean", make_model: Callable[[], nn.Module] | None = None, epochs: int = 3,
         train_options: dict | None = None, seed: int = 0, target: str = "label", batch_size: int | None = None,
         progress: bool = True) -> pd.DataFrame:
    r"""Remove (or keep) the most relevant pixels of every image, retrain, and measure test accuracy.

    Args:
        method: ``method(model, x, target) -> map``; ``"random"`` for the random-ranking baseline;
            or a pair ``(train_maps, test_maps)`` computed beforehand (with ``x_train``'s and
            ``x_test``'s shapes), to reuse one set of maps for several seeds or fractions. Pixels
            are ranked by the channel sum of the map as it is (pass a wrapper returning ``.abs()``
            to rank magnitudes).
        model: the trained model that is explained (left unchanged).
        x_train, y_train, x_test, y_test: the data set; every image is degraded.
        fractions: fractions of pixels removed (ROAR) or kept (``keep=True``, KAR).
        removal: ``"dataset_mean"``, the per-channel mean of ``x_train`` (Hooker et al.), or any
            baseline of :func:`xaiutils.core.baselines.resolve_baseline` (``"zeros"``, ``"blur"``,
            a number, ...), computed for each image.
        make_model: builds the fresh model to retrain; default a re-initialised copy of ``model``
            (same architecture, seeded).
        epochs, train_options: passed to :func:`xaiutils.models.train` (with ``seed`` and
            ``progress``), e.g. ``dict(lr=3e-3, batch_size=64)``.
        target: the class each map explains: ``"label"`` (the true label, as Hooker et al.) or
            ``"predicted"`` (the class ``model`` predicts). A map of the label can leak the label
            through the shape of what it removes (Rong et al. 2022); the predicted class leaks only
            what the model knows.
        batch_size: examples per call of ``method`` when explaining the data (default 250).
        progress: progress bars for explaining and for each retraining.

    Returns:
        A DataFrame with columns ``fraction``, ``accuracy`` (test accuracy of the retrained
        model) and ``mode`` (``"roar"`` or ``"kar"``). For ROAR lower accuracy at a given
        fraction means the removed pixels carried more information (better); for KAR higher.

    Reference: ``hooker2019benchmark``. Chapter 10.
    """
    from ..models import accuracy, train

    check_input(x_train, name="x_train")
    check_input(x_test, name="x_test")
    check_int(epochs, "epochs")
    if target not in ("label", "predicted"):
        raise ValueError(f"target must be 'label' or 'predicted'; got {target!r}.")
    if isinstance(method, (tuple, list)):
        if len(method) != 2 or not all(isinstance(m, torch.Tensor) for m in method):
            raise TypeError("method given as maps must be a pair (train_maps, test_maps) of tensors; "
                            f"got a {type(method).__name__} of {len(method)}.")
        precomputed = {"train": check_map_for_input(method[0], x_train, name="method[0] (train maps)"),
                       "test": check_map_for_input(method[1], x_test, name="method[1] (test maps)")}
    if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__len__") or not len(fractions):
        raise ValueError(f"fractions must be a non-empty sequence of numbers in [0, 1]; got {fractions!r}.")
    fractions = [check_number(f, "each of fractions", minimum=0, maximum=1) for f in fractions]
    if isinstance(removal, str) and removal == "dataset_mean":
        dims = [0, *range(2, x_train.dim())]
        fill_train = fill_test = x_train.mean(dims, keepdim=True)  # one value per channel, broadcast
    else:
        fill_train = resolve_baseline(x_train, removal, seed=seed, name="removal")
        fill_test = resolve_baseline(x_test, removal, seed=seed + 1, name="removal")
    ranks = {}
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if isinstance(method, (tuple, list)):
            ranks[name] = feature_ranks(precomputed[name], x, "most")
        elif isinstance(method, str) and method == "random":
            attr = torch.zeros_like(x[:, :1]) if x.dim() == 4 else torch.zeros_like(x)
            ranks[name] = feature_ranks(attr, x, "random", seed=seed + (name == "test"))
        elif callable(method):
            explained = y if target == "label" else predictions(model, x, batch_size)
            attr = _attributions(method, model, x, explained, batch_size, progress, f"explaining {name}")
            ranks[name] = feature_ranks(attr, x, "most")
        else:
            raise TypeError("method must be an attribution function, 'random' or a pair of maps (train, test); "
                            f"got {method!r}.")
    features = ranks["train"].shape[1]
    rows = []
    for fraction in fractions:
        count = int(round(fraction * features))
        x_tr = _degrade(x_train, ranks["train"], count, keep, fill_train)
        x_te = _degrade(x_test, ranks["test"], count, keep, fill_test)
        with seeded(seed):
            fresh = make_model() if make_model is not None else reinitialise(copy.deepcopy(model), seed)
            fresh.requires_grad_(True)
            train(fresh, x_tr, y_train, epochs=epochs, seed=seed, progress=progress, **(train_options or {}))
        rows.append({"fraction": float(fraction), "accuracy": accuracy(fresh, x_te, y_test),
                     "mode": "kar" if keep else "roar"})
    return pd.DataFrame(rows, columns=["fraction", "accuracy", "mode"])
