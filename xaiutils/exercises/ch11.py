"""Self-checks for chapter 11, Localisation against ground truth (notebooks/ch11_localisation.ipynb).

The exercises score maps of the ``shapes-standard`` network on the first 100 test images of
``shapes`` against their masks. Exercises 1 and 3 take the chapter's magnitude maps
(``magnitude=magnitude``), whose slow methods would take a minute to recompute; exercise 2
recomputes Grad-CAM itself. The references are computed on the learner's machine from the same
maps, so the comparison does not depend on the last digits that differ between CPUs.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from scipy.stats import pearsonr, spearmanr

import xaiutils.evaluation as E
from xaiutils import data, zoo
from xaiutils.attribution import grad_cam
from xaiutils.exercises import exercise, not_yet, number, numbers, right

N = 100  # the chapter's test images


@lru_cache(maxsize=1)
def _shapes():
    test = data.shapes("test")
    return zoo.load("shapes-standard"), test.x[:N], test.y[:N], test.mask[:N]




def _magnitude(magnitude, names=None) -> dict[str, torch.Tensor]:
    """The chapter's magnitude maps, checked: one non-negative channel per image of the test set."""
    if not hasattr(magnitude, "keys") or (names and not set(names) <= set(magnitude.keys())):
        raise ValueError("pass the chapter's maps: magnitude=magnitude, a dict of |map| by method")
    maps = {name: torch.as_tensor(magnitude[name]).detach() for name in (names or magnitude.keys())}
    for name, attr in maps.items():
        if attr.dim() != 4 or attr.shape[0] != N or attr.shape[1] != 1:
            raise ValueError(f"magnitude[{name!r}] should have the shape (100, 1, 64, 64) of the chapter's maps")
        if (attr < 0).any():
            raise ValueError(f"magnitude[{name!r}] has negative values: pass the magnitude maps "
                             "(magnitude=magnitude), not the signed ones")
    return maps


# ---------------------------------------------------------------------------- exercise 1
def _is_control(name: str) -> bool:
    return "control" in name


@exercise("ch11.1", "A tolerant pointing game",
          "For every map of `magnitude`, the gain is the mean of E.pointing_game(map, mask, tolerance=3) minus the "
          "mean of the exact pointing game. The three methods that gain most are the three largest gains among "
          "the methods of the registry (the controls left out).")
def tolerant_pointing_game(gain, top3, *, magnitude):
    maps = _magnitude(magnitude)
    mask = _shapes()[3]
    methods = [name for name in maps if not _is_control(name)]
    if not hasattr(gain, "keys") or not set(methods) <= set(map(str, gain.keys())) or not set(
            map(str, gain.keys())) <= set(maps):
        return not_yet("`gain` should have one value for every method of `magnitude` (the controls may be left "
                       "out), by name.")
    answer = {str(k): number(v, f"gain[{k!r}]") for k, v in gain.items()}
    exact = {name: E.pointing_game(attr, mask).mean().item() for name, attr in maps.items()}
    tolerant = {name: E.pointing_game(attr, mask, tolerance=3).mean().item() for name, attr in maps.items()}
    reference = {name: tolerant[name] - exact[name] for name in maps}
    wrong = [name for name in answer if abs(answer[name] - reference[name]) > 1e-6]
    if wrong:
        name = wrong[0]
        if all(abs(answer[n] + reference[n]) <= 1e-6 for n in answer):
            return not_yet("Your gains have the wrong sign: the gain is the tolerant score minus the exact one.")
        if all(abs(answer[n] - 100 * reference[n]) <= 1e-4 for n in answer):
            return not_yet("Give the gains as fractions of the images (between 0 and 1), not in percent.")
        if abs(answer[name] - tolerant[name]) <= 1e-6:
            return not_yet(f"gain[{name!r}] is the tolerant score itself; subtract the exact pointing game.")
        return not_yet(f"gain[{name!r}] is not the reference value: use the magnitude maps and the masks of the "
                       "100 test images, with tolerance=3 (pixels) against the exact pointing game.")
    if not isinstance(top3, (set, frozenset, list, tuple)) or len(set(top3)) != 3:
        return not_yet("Your gains are right; `top3` should be a set of three method names.")
    chosen = set(map(str, top3))
    if any(_is_control(name) for name in chosen):
        return not_yet("Your gains are right; leave the controls out of `top3`: they are not methods.")
    third = sorted((reference[n] for n in methods), reverse=True)[2]
    if chosen <= set(methods) and all(reference[n] >= third - 1e-9 for n in chosen):
        return right("The gains match the reference, and the three methods are those that gain most.")
    by_score = sorted(methods, key=tolerant.get, reverse=True)[:3]
    if chosen == set(by_score):
        return not_yet("Your gains are right, but `top3` ranks the methods by their tolerant score; rank them "
                       "by the gain.")
    return not_yet("Your gains are right, but `top3` is not the three registry methods with the largest gains.")


# ---------------------------------------------------------------------------- exercise 2
LAYERS = ["layer3", "layer2", "layer1"]


@lru_cache(maxsize=1)
def _grad_cam_maps():
    model, x, y, _ = _shapes()
    return {layer: grad_cam(model, x, y, layer=layer).detach() for layer in LAYERS}


@exercise("ch11.2", "Grad-CAM at another layer",
          "Compute grad_cam(model, x, y, layer=...) for each layer and average E.relevance_mass_accuracy over the "
          "100 images. A map that is zero everywhere has no positive relevance and scores NaN: leave it out.")
def grad_cam_layers(layer_rma):
    answer = numbers(layer_rma, set(LAYERS), "layer_rma")
    if isinstance(answer, str):
        return not_yet(answer)
    mask = _shapes()[3]
    maps = _grad_cam_maps()
    reference = {layer: E.relevance_mass_accuracy(maps[layer], mask).nanmean().item() for layer in LAYERS}
    for layer in LAYERS:
        if math.isnan(answer[layer]):
            return not_yet(f"layer_rma[{layer!r}] is NaN: at this layer a Grad-CAM map is zero everywhere, and its "
                           "mass accuracy is NaN; average without it (nanmean).")
    for layer in LAYERS:
        value = answer[layer]
        if abs(value - reference[layer]) <= 1e-4:
            continue
        if abs(value - 100 * reference[layer]) <= 1e-2:
            return not_yet("Give the mass accuracies as fractions (between 0 and 1), not in percent.")
        if len({round(v, 6) for v in answer.values()}) == 1:
            return not_yet("All three values are the same: pass layer=... to grad_cam, one layer at a time.")
        rank = E.relevance_rank_accuracy(maps[layer], mask).nanmean().item()
        if abs(value - rank) <= 1e-4:
            return not_yet(f"layer_rma[{layer!r}] is the relevance rank accuracy; the exercise asks for the "
                           "relevance mass accuracy.")
        return not_yet(f"layer_rma[{layer!r}] is not the reference value: Grad-CAM at {layer} for the labels y of "
                       "the 100 test images, scored with E.relevance_mass_accuracy against their masks.")
    return right("All three mass accuracies are within 1e-4 of the reference.")


# ---------------------------------------------------------------------------- exercise 3
AREA_METHODS = ["integrated_gradients", "grad_cam"]


@exercise("ch11.3", "Small objects",
          "The object's area is the share of its mask's pixels in each image; correlate it over the 100 images "
          "with E.relevance_rank_accuracy(magnitude[name], mask) using scipy.stats.spearmanr.")
def small_objects(with_area, *, magnitude):
    answer = numbers(with_area, set(AREA_METHODS), "with_area")
    if isinstance(answer, str):
        return not_yet(answer)
    maps = _magnitude(magnitude, AREA_METHODS)
    mask = _shapes()[3]
    area = mask.flatten(1).float().mean(1).numpy()
    for name in AREA_METHODS:
        rra = E.relevance_rank_accuracy(maps[name], mask).numpy()
        reference = spearmanr(area, rra)[0]
        value = answer[name]
        if abs(value - reference) <= 1e-3:
            continue
        if abs(value + reference) <= 1e-3:
            return not_yet(f"with_area[{name!r}] has the wrong sign: correlate the area with the rank accuracy "
                           "itself, not with an error or a rank from the top.")
        if abs(value - pearsonr(area, rra)[0]) <= 1e-3:
            return not_yet(f"with_area[{name!r}] is Pearson's correlation; the exercise asks for a rank "
                           "correlation (scipy.stats.spearmanr).")
        rma = E.relevance_mass_accuracy(maps[name], mask).numpy()
        if abs(value - spearmanr(area, rma)[0]) <= 1e-3:
            return not_yet(f"with_area[{name!r}] uses the relevance mass accuracy; the exercise asks for the "
                           "relevance rank accuracy.")
        return not_yet(f"with_area[{name!r}] is not the reference value: over the 100 test images, the Spearman "
                       "correlation between each object's area and the relevance rank accuracy of the magnitude map.")
    return right("Both correlations are within 0.001 of the reference; the explanation of the difference is yours to "
                 "give (the check cannot read it).")
