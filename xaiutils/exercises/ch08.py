"""Self-checks for the exercises of chapter 8, All methods side by side (notebooks/ch08_side_by_side.ipynb).

Exercises 1 and 2 compare the maps of every method, which take a minute to compute: their checks
take the chapter's ``maps`` (``check("ch08.1", signed, most_changed, maps=maps)``), verify that they
are the chapter's maps, and compute the reference from them. Exercise 3 measures time on the
learner's machine: its check looks at the form of the answer and the reason, not at the timings.
"""
from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import torch
from scipy.stats import spearmanr

from . import exercise, not_yet, right

DATA_SETS = ("mnist", "shapes")
PAIRS = (("integrated_gradients", "deeplift"), ("integrated_gradients", "grad_cam"), ("gradient", "occlusion"))
REASONS = ("fewer operations", "shared fixed costs", "cached gradients")
BATCHES = (1, 8, 64)


@lru_cache(maxsize=1)
def _shapes_gradient() -> torch.Tensor:
    """The gradient of the chapter's ShapesResNet on its ten shapes images: to recognise the chapter's maps."""
    from xaiutils import data, zoo
    from xaiutils.attribution import gradient

    shapes = data.shapes("test")
    return gradient(zoo.load("shapes-standard"), shapes.x[:10], shapes.y[:10])


def _names() -> list[str]:
    from xaiutils import METHODS

    return list(METHODS)


def _chapter_maps(maps) -> str | None:
    """None when ``maps`` are the chapter's maps (every method, both data sets, ten images), else what is wrong."""
    if not hasattr(maps, "keys"):
        return "pass the chapter's maps as maps=maps (the dict filled by the loop over METHODS)"
    missing = [f"{d}/{n}" for d in DATA_SETS for n in _names() if (d, n) not in maps]
    if missing:
        return f"maps lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: pass the chapter's maps"
    if any(len(maps[d, n]) != 10 for d in DATA_SETS for n in _names()):
        return "maps must hold the maps of the chapter's ten images per data set"
    reference = _shapes_gradient()
    if maps["shapes", "gradient"].shape != reference.shape or \
            not torch.allclose(maps["shapes", "gradient"].detach().float(), reference, rtol=1e-4, atol=1e-6):
        return "maps['shapes', 'gradient'] is not the chapter's gradient of the ten shapes images: pass the chapter's maps"
    return None


def _pixels(m: torch.Tensor, absolute: bool) -> np.ndarray:
    """(images, pixels): channels summed, optionally the absolute value."""
    m = m.detach().double().sum(1)
    m = m.abs() if absolute else m
    return m.flatten(1).numpy()


def _agreement(maps, data_name: str, *, absolute: bool, pooled: bool = False):
    """Mean over images of the Spearman matrix between all methods (NaN for a constant map left out)."""
    names = _names()
    columns = [_pixels(maps[data_name, n], absolute) for n in names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if pooled:
            return spearmanr(np.stack([c.flatten() for c in columns], axis=1)).statistic
        per_image = [spearmanr(np.stack([c[i] for c in columns], axis=1)).statistic for i in range(len(columns[0]))]
        return np.nanmean(per_image, axis=0)


def _matrix(answer, data_name: str) -> np.ndarray:
    names = _names()
    if not hasattr(answer, "keys") or data_name not in answer:
        raise KeyError(f"signed must map 'mnist' and 'shapes' to a matrix; {data_name!r} is missing")
    value = answer[data_name]
    if hasattr(value, "loc"):  # a DataFrame: take it in the registry's order
        value = value.loc[names, names].to_numpy()
    value = np.asarray(value, dtype=float)
    if value.shape != (len(names), len(names)):
        raise ValueError(f"signed[{data_name!r}] must be {len(names)} x {len(names)} (every method), got {value.shape}")
    return value


def _close(a: np.ndarray, b: np.ndarray, tolerance: float = 1e-3) -> bool:
    return bool(np.allclose(a, b, rtol=0, atol=tolerance, equal_nan=True))


@exercise("ch08.1", "Signs",
          "Copy the chapter's agreement function and leave out .abs(); keep the sum over channels and the mean "
          "over images that skips NaN. Then compare with the chapter's correlations pair by pair.")
def check_signs(signed, most_changed, *, maps):
    problem = _chapter_maps(maps)
    if problem:
        return not_yet(problem + ".")
    names = _names()
    for data_name in DATA_SETS:
        answer = _matrix(signed, data_name)
        reference = _agreement(maps, data_name, absolute=False)
        if _close(answer, reference):
            continue
        if _close(answer, _agreement(maps, data_name, absolute=True)):
            return not_yet(f"{data_name}: this is the agreement of |map|; leave out the absolute value.")
        if np.isnan(answer).sum() > np.isnan(reference).sum():
            return not_yet(f"{data_name}: NaN entries. A constant map (an empty Grad-CAM map) has no ranking; "
                           "average over the images with np.nanmean.")
        if _close(answer, _agreement(maps, data_name, absolute=False, pooled=True)):
            return not_yet(f"{data_name}: you ranked the pixels of all ten images together; compute one matrix "
                           "per image and average them.")
        return not_yet(f"{data_name}: the signed matrix differs from the reference (by more than 1e-3): per image, "
                       "the Spearman correlation of the channel-summed signed maps of every pair of methods, "
                       "then the mean over the ten images.")
    for data_name in DATA_SETS:
        change = _agreement(maps, data_name, absolute=False) - _agreement(maps, data_name, absolute=True)
        upper = np.triu(np.ones_like(change, dtype=bool), k=1) & ~np.isnan(change)
        largest = np.where(upper, np.abs(change), -np.inf).max()
        if not hasattr(most_changed, "keys") or data_name not in most_changed:
            return not_yet(f"most_changed must map 'mnist' and 'shapes' to a pair of method names; {data_name!r} is missing.")
        pair = most_changed[data_name]
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and set(pair) <= set(names)):
            return not_yet(f"most_changed[{data_name!r}] must be a pair of method names, like ('gradient', 'lrp').")
        k, m = names.index(pair[0]), names.index(pair[1])
        if not abs(change[k, m]) >= largest - 1e-3:  # pairs within 1e-3 of the largest change count as a tie
            if abs(change[k, m]) < 1e-9:
                return not_yet(f"{data_name}: the correlation of that pair does not change at all; look for the "
                               "largest |signed - |map|| over the pairs.")
            return not_yet(f"{data_name}: that pair is not the one that changes most; take the largest absolute "
                           "difference between the signed and the |map| correlation (either direction).")
    return right("Pairs of two non-negative methods cannot change: their maps are their own absolute values. "
                 "The sign matters only where a map has both signs.")


def _overlap(maps, data_name: str, first: str, second: str, *, absolute=True, sum_channels=True, fraction=0.1):
    """Mean over images of the share of the top ``fraction`` pixels of the first map that are top in the second."""
    def flat(m):
        m = m.detach().sum(1) if sum_channels else m.detach()
        return (m.abs() if absolute else m).flatten(1)

    a, b = flat(maps[data_name, first]), flat(maps[data_name, second])
    k = int(fraction * a.shape[1])
    shares = [len(set(a[i].topk(k).indices.tolist()) & set(b[i].topk(min(k, b.shape[1])).indices.tolist())) / k
              for i in range(len(a))]
    return float(np.mean(shares))


def _pair_value(overlap, pair) -> float:
    for key in (pair, pair[::-1], f"{pair[0]}/{pair[1]}"):
        if key in overlap:
            value = overlap[key]
            return float(value.item() if hasattr(value, "item") else value)
    raise KeyError(f"overlap has no entry for the pair {pair}")


@exercise("ch08.2", "Top pixels",
          "Per image: sum over channels, take the absolute value, mark the int(0.1 * pixels) largest pixels of "
          "each map, and count the shared ones divided by that number. Average over the ten shapes images.")
def check_top_pixels(overlap, same_order, *, maps):
    problem = _chapter_maps(maps)
    if problem:
        return not_yet(problem + ".")
    if not hasattr(overlap, "keys"):
        return not_yet("overlap must be a dict from each pair, e.g. ('integrated_gradients', 'deeplift'), to its share.")
    answer = {pair: _pair_value(overlap, pair) for pair in PAIRS}
    reference = {pair: _overlap(maps, "shapes", *pair) for pair in PAIRS}
    tolerance = 0.015  # top-k sets differ at tied values (occlusion's map is piecewise constant): measured 0.009
    for pair in PAIRS:
        value, expected = answer[pair], reference[pair]
        if abs(value - expected) <= tolerance:
            continue
        if value > 1 and abs(value / 100 - expected) <= tolerance:
            return not_yet("give the share as a fraction in [0, 1], not a percentage.")
        variants = [(dict(absolute=False), "rank the pixels by magnitude: take the absolute value (after summing "
                                           "the channels)"),
                    (dict(sum_channels=False), "sum each map over its channels before ranking the pixels"),
                    (dict(data_name="mnist"), "the exercise asks for the ten shapes images, not MNIST")]
        for options, message in variants:
            data_name = options.pop("data_name", "shapes")
            if abs(value - _overlap(maps, data_name, *pair, **options)) <= tolerance:
                return not_yet(f"{pair[0]} / {pair[1]}: {message}.")
        return not_yet(f"{pair[0]} / {pair[1]}: the share differs from the reference by more than {tolerance}: "
                       "10% of the pixels of each image, shared top pixels divided by that number, mean over images.")
    if not isinstance(same_order, (bool, np.bool_)):
        return not_yet("same_order must be True or False.")
    rho = {pair: _pair_spearman(maps, pair) for pair in PAIRS}
    by_overlap = sorted(PAIRS, key=answer.get)
    by_spearman = sorted(PAIRS, key=rho.get)
    if bool(same_order) != (by_overlap == by_spearman):
        return not_yet("your shares are right, but same_order does not follow from them: sort the three pairs by "
                       "the share and by the chapter's Spearman correlation of |map| (correlations['shapes']).")
    return right("The top-pixel overlap and the rank correlation weigh pixels differently, so they need not "
                 "order the pairs alike.")


def _pair_spearman(maps, pair) -> float:
    a, b = (_pixels(maps["shapes", name], absolute=True) for name in pair)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(np.nanmean([spearmanr(a[i], b[i]).statistic for i in range(len(a))]))


@exercise("ch08.3", "Batches",
          "Time each call once the model is warm (call it once before timing), divide the call's time by the "
          "number of images, and compare the three batch sizes.")
def check_batches(ms_per_image, reason):
    if not hasattr(ms_per_image, "keys"):
        return not_yet("ms_per_image must be a dict from (method name, batch size) to milliseconds per image.")
    missing = [(n, b) for n in ("gradient", "integrated_gradients") for b in BATCHES if (n, b) not in ms_per_image]
    if missing:
        return not_yet(f"ms_per_image lacks {missing[0]}: give the six (method, batch size) entries.")
    times = {key: float(ms_per_image[key]) for key in ms_per_image}
    if not all(math.isfinite(t) and t > 0 for t in times.values()):
        return not_yet("every time must be a positive number of milliseconds.")
    for name in ("gradient", "integrated_gradients"):
        if times[name, 64] > 4 * times[name, 1]:
            return not_yet(f"{name}: 64 images cost far more per image than one; these look like the time of the "
                           "whole call, divide it by the batch size.")
    if reason not in REASONS:
        return not_yet(f"reason must be one of {', '.join(repr(r) for r in REASONS)}; got {reason!r}.")
    if reason == "fewer operations":
        return not_yet("each image needs the same arithmetic in a batch as alone; what else does every call cost, "
                       "whatever its size?")
    if reason == "cached gradients":
        return not_yet("nothing is reused between the images of a batch: each gets its own forward and backward "
                       "pass. What does every call cost, whatever its size?")
    if not all(times[name, 64] < times[name, 1] for name in ("gradient", "integrated_gradients")):
        return not_yet("the reason is right, but on your numbers the cost per image does not fall from 1 to 64 "
                       "images: time each call after a warm-up call, and take the best of a few repeats.")
    return right("The cost per image falls on your machine; by how much depends on it.")
