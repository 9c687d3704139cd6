r"""Sanity checks for attribution maps (chapter 9, after Adebayo et al. 2018).

An explanation of a model should depend on the model. Two tests destroy what the model has
learned and ask whether the map notices:

* **model-parameter randomisation** -- re-initialise the weights, layer by layer, *cascading*
  from the output layer down (after step :math:`k` the top :math:`k` layers are random) or
  *independently* (one layer at a time, the rest trained), and compare each map with the
  original by the similarities of :mod:`~xaiutils.evaluation.similarity`;
* **data randomisation** -- compare the maps of a model trained on the true labels with those
  of the same architecture trained on permuted labels (:func:`train_random_labels`).

A method whose maps stay similar (an edge detector, or the input itself) fails: it cannot be
explaining the model. Randomisation works on deep copies; the caller's model is never changed.
"""
from __future__ import annotations

import copy
import zlib
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.layers import resolve_layer
from ..core.targets import Target
from ..core.checks import check_int
from ..core.seeding import seeded
from ._utils import progress_bar, to_numpy
from .similarity import SIMILARITIES

Method = Callable[[nn.Module, torch.Tensor, Target], torch.Tensor]
DEFAULT_SIMILARITIES = ("spearman_abs", "spearman", "ssim")


def _redraw_own(module: nn.Module) -> None:
    """Re-draw the parameters ``module`` holds itself, for a module without ``reset_parameters``:
    ``nn.MultiheadAttention``'s query/key/value projections as torch initialises them (Xavier, zero
    biases), anything else (a ViT's position embedding) from :math:`N(0, 0.02^2)`, torchvision's
    initialisation of the position embedding."""
    with torch.no_grad():
        if isinstance(module, nn.MultiheadAttention):
            for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                if getattr(module, name, None) is not None:
                    nn.init.xavier_uniform_(getattr(module, name))
            for name in ("bias_k", "bias_v"):
                if getattr(module, name, None) is not None:
                    nn.init.xavier_normal_(getattr(module, name))
            if module.in_proj_bias is not None:
                nn.init.zeros_(module.in_proj_bias)
            return
        for parameter in module.parameters(recurse=False):
            nn.init.normal_(parameter, std=0.02)


def reinitialise(module: nn.Module, seed: int = 0, *, children: bool = True) -> nn.Module:
    """Re-initialise ``module`` and (``children=True``) its children in place (seeded).

    Each module with a ``reset_parameters`` uses it; a module that holds parameters without one
    (``nn.MultiheadAttention``'s projections, a ViT encoder's position embedding) has them re-drawn
    (:func:`_redraw_own`). BatchNorm layers get their initial affine parameters and running
    statistics back. With ``children=False`` only the parameters ``module`` holds itself change.
    The global random state of the caller is left as it was. Returns ``module``.
    """
    with seeded(seed):
        for m in module.modules() if children else [module]:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            elif any(True for _ in m.parameters(recurse=False)):
                _redraw_own(m)
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
    return module


def _layer_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**62


def learnable_layers(model: nn.Module) -> list[str]:
    """Names of the modules that hold parameters themselves, input to output (module order): the leaf layers
    (conv, linear, norm, embedding) and modules with parameters beside their children, such as
    ``nn.MultiheadAttention`` (its query/key/value projections) and torchvision's ViT encoder (its position
    embedding). Parameters of the model itself (a ViT's class token) belong to no layer and are not listed."""
    return [name for name, m in model.named_modules() if name and any(True for _ in m.parameters(recurse=False))]


def _methods(methods) -> dict[str, Method]:
    if callable(methods):
        return {getattr(methods, "__name__", "method"): methods}
    if not isinstance(methods, Mapping) or not methods:
        raise TypeError("methods must be a callable or a non-empty dict name -> method(model, x, target).")
    return dict(methods)


def _similarities(names: Sequence[str] | None, x) -> dict:
    if names is None:  # SSIM compares images; a table's or a sequence's maps get the rank correlations only
        images = isinstance(x, torch.Tensor) and x.dim() >= 3
        names = DEFAULT_SIMILARITIES if images else tuple(n for n in DEFAULT_SIMILARITIES if n != "ssim")
    unknown = [n for n in names if n not in SIMILARITIES]
    if unknown:
        raise ValueError(f"unknown similarity {unknown[0]!r}; choose from {', '.join(SIMILARITIES)}.")
    return {n: SIMILARITIES[n] for n in names}


def _compare(rows: list, original: torch.Tensor, other: torch.Tensor, similarities: dict, **labels) -> None:
    for metric, fn in similarities.items():
        values = to_numpy(torch.as_tensor(fn(original, other)))
        values = values[~np.isnan(values)]  # e.g. Spearman of a constant (all-zero) map
        rows.append({**labels, "metric": metric, "value": float(values.mean()) if len(values) else float("nan"),
                     "std": float(values.std()) if len(values) else float("nan"), "n": len(values)})


def model_randomisation(model: nn.Module, x: torch.Tensor, target: Target, methods, *, cascading: bool = True,
                        layers: Sequence[str] | None = None, similarities: Sequence[str] | None = None,
                        seed: int = 0, progress: bool = True) -> pd.DataFrame:
    r"""The model-parameter randomisation test: how similar is each map to the original as layers are randomised?

    Args:
        model: the trained model (left unchanged; copies are randomised).
        x, target: the examples to explain and what to explain (a class index, a ``(B,)``
            tensor, e.g. the labels, or a callable).
        methods: a dict name -> ``method(model, x, target) -> map`` (or one callable); use
            :func:`functools.partial` to fix options such as ``layer=``.
        cascading: randomise from the output layer down, accumulating (Adebayo et al.'s
            cascading test); ``False`` randomises one layer at a time (independent test).
        layers: module names to randomise, input to output; default :func:`learnable_layers`.
        similarities: names from :data:`~xaiutils.evaluation.similarity.SIMILARITIES` (default
            Spearman of absolute values, signed Spearman and, for images (``x`` with 3 or more
            dimensions), SSIM).
        seed: seeds the re-initialisation of each layer (together with the layer's name, so that
            a layer does not get back the weights it was built with under ``torch.manual_seed(seed)``).
        progress: show a progress bar over the randomisation steps.

    Returns:
        A tidy DataFrame with columns ``method, layer, step, metric, value`` (mean over the
        examples), ``std``, ``n`` (examples with a defined value: Spearman is undefined, NaN, for
        a constant map, e.g. a Grad-CAM map that the ReLU zeroes after randomisation). ``step`` counts from 1 in the order randomised; ``layer`` is
        the layer randomised at that step (cascading: together with all above it).

    Reference: ``adebayo2018sanity``. Chapter 9.
    """
    methods = _methods(methods)
    similarities = _similarities(similarities, x)
    layers = learnable_layers(model) if layers is None else list(layers)
    for name in layers:
        resolve_layer(model, name)  # a clear error for unknown names
    if not layers:
        raise ValueError("the model has no layers with parameters to randomise.")
    originals = {name: method(model, x, target).detach() for name, method in methods.items()}
    order = list(reversed(layers))  # from the output layer down
    rows: list[dict] = []
    randomised = copy.deepcopy(model)
    for step, name in enumerate(progress_bar(order, len(order), progress, "randomising layers"), start=1):
        if not cascading:
            randomised = copy.deepcopy(model)
        layer = resolve_layer(randomised, name)
        own = any(True for _ in layer.parameters(recurse=False))  # then only its own: its children are layers too
        reinitialise(layer, _layer_seed(seed, name), children=not own)
        for method_name, method in methods.items():
            _compare(rows, originals[method_name], method(randomised, x, target).detach(), similarities,
                     method=method_name, layer=name, step=step)
    return pd.DataFrame(rows, columns=["method", "layer", "step", "metric", "value", "std", "n"])


def data_randomisation(model: nn.Module, random_model: nn.Module, x: torch.Tensor, target: Target, methods, *,
                       similarities: Sequence[str] | None = None) -> pd.DataFrame:
    r"""The data randomisation test: maps of a model trained on true labels vs one trained on permuted labels.

    Both models explain the same ``target`` (e.g. the true labels). A method that passes gives
    dissimilar maps: the random-label model has memorised, not learned the digits. Neither model
    is changed. ``random_model`` comes from :func:`train_random_labels` or the model zoo
    (``xaiutils.zoo.load("mnist-random-labels")``).

    ``similarities`` as in :func:`model_randomisation`. Returns a tidy DataFrame ``method, metric, value``
    (mean over examples with a defined value), ``std``, ``n``.
    Reference: ``adebayo2018sanity``. Chapter 9.
    """
    methods = _methods(methods)
    similarities = _similarities(similarities, x)
    rows: list[dict] = []
    for name, method in methods.items():
        _compare(rows, method(model, x, target).detach(), method(random_model, x, target).detach(), similarities,
                 method=name)
    return pd.DataFrame(rows, columns=["method", "metric", "value", "std", "n"])


def train_random_labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0, epochs: int = 10,
                        progress: bool = True, **train_options) -> list[float]:
    """Train ``model`` in place on ``(x, y)`` with the labels randomly permuted (seeded); return the loss history.

    Uses :func:`xaiutils.models.train`; with enough epochs the network memorises the random
    labels. Reference: ``adebayo2018sanity`` (after ``zhang2017understanding``). Chapter 9.
    """
    from ..models import train

    check_int(epochs, "epochs")
    permutation = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return train(model, x, y[permutation.to(y.device)], epochs=epochs, seed=seed, progress=progress,
                 **train_options)
