"""Self-checks for chapter 10, Faithfulness (notebooks/ch10_faithfulness.ipynb).

Every exercise of the chapter works on the first 50 test digits of MNIST, the ``mnist-standard``
network and the chapter's maps, so each check takes the chapter's ``maps`` (``maps=maps``) and
recomputes the reference with :mod:`xaiutils.evaluation` on exactly those maps, on the learner's
machine: the comparison does not depend on the last digits that differ between CPUs.
"""
from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

import xaiutils.evaluation as E
from xaiutils import data, zoo
from xaiutils.exercises import exercise, not_yet, right

N = 50  # the exercises use the first 50 test digits
METHODS = ["gradient", "gradient_x_input", "guided_backprop", "integrated_gradients", "smoothgrad", "lrp",
           "deeplift", "grad_cam", "occlusion"]  # the chapter's panel without the random map


@lru_cache(maxsize=1)
def _digits():
    mnist = data.mnist()
    return zoo.load("mnist-standard"), mnist.x_test[:N], mnist.y_test[:N]


def _number(value, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} should be one number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{name} should be a number, got {type(value).__name__}")
    return float(value)


def _numbers(answer, keys, name: str) -> dict[str, float] | str:
    """The answer as ``{key: float}``, or a sentence saying what is wrong with its keys."""
    if not hasattr(answer, "keys"):
        return f"`{name}` should be a dict (or a pandas Series) with the keys {sorted(keys)}."
    got = set(map(str, answer.keys()))
    if got != set(keys):
        return f"`{name}` should have exactly the keys {sorted(keys)}; it has {sorted(got)}."
    return {str(k): _number(answer[k], f"{name}[{k!r}]") for k in answer.keys()}


def _close(a: float, b: float, rtol: float = 1e-3, atol: float = 1e-6) -> bool:
    # the reference is computed on the learner's machine from the same maps: only the order of a sum differs
    return math.isfinite(a) and abs(a - b) <= atol + rtol * abs(b)


def _maps(maps, names):
    if not hasattr(maps, "keys") or not set(names) <= set(maps.keys()):
        raise ValueError(f"pass the chapter's maps: maps=maps, a dict with the methods {names}")
    return {name: torch.as_tensor(maps[name]).detach()[:N] for name in names}


# ---------------------------------------------------------------------------- exercise 1
_AREAS: dict[tuple[str, str], float] = {}  # (removal, digest of the map) -> mean deletion area


def _deletion_areas(maps, removal):
    """The mean deletion area of each map (steps=10), remembered: 27 curves take a few seconds."""
    model, x, y = _digits()
    areas = {}
    for name, attr in maps.items():
        key = (removal, hashlib.sha1(attr.contiguous().numpy().tobytes()).hexdigest())
        if key not in _AREAS:
            _AREAS[key] = E.deletion(model, x, attr, y, steps=10, removal=removal).area.mean().item()
        areas[name] = _AREAS[key]
    return areas


@exercise("ch10.1", "The removal value",
          "Compute the deletion areas of the nine methods (not the random map) on x[:50] with steps=10 for each "
          "removal value, then compare the list for 'mean' (and for 'blur') with the list for 'zeros' using "
          "scipy.stats.kendalltau, the methods in the same order in both lists.")
def removal_value(tau, *, maps):
    answer = _numbers(tau, {"mean", "blur"}, "tau")
    if isinstance(answer, str):
        return not_yet(answer)
    panel = _maps(maps, METHODS)
    areas = {removal: _deletion_areas(panel, removal) for removal in ["zeros", "mean", "blur"]}
    reference = {r: kendalltau([areas["zeros"][n] for n in METHODS], [areas[r][n] for n in METHODS])[0]
                 for r in ["mean", "blur"]}
    wrong = [r for r in reference if abs(answer[r] - reference[r]) > 0.01]
    if not wrong:
        return right("Both τ are within 0.01 of the reference: compare them with 1 (the same order) and 0 (no "
                     "relation) to say how much the ranking changes.")
    r = wrong[0]
    if any(abs(answer[r] - v) <= 0.01 for v in reference.values()) and len(wrong) == 2:
        return not_yet("The two values are swapped: tau['mean'] is the τ between 'zeros' and 'mean', "
                       "tau['blur'] the one between 'zeros' and 'blur'.")
    if abs(answer[r] + reference[r]) <= 0.01 and reference[r] != 0:
        return not_yet(f"tau[{r!r}] has the wrong sign: rank the areas in the same direction for both removal "
                       "values (a lower deletion area is better for all three).")
    if 1 < abs(answer[r]) <= 100 and abs(answer[r] / 100 - reference[r]) <= 0.01:
        return not_yet("Kendall's τ lies between -1 and 1; give it as a fraction, not in percent.")
    spearman = spearmanr([areas["zeros"][n] for n in METHODS], [areas[r][n] for n in METHODS])[0]
    if abs(answer[r] - spearman) <= 0.01 and abs(spearman - reference[r]) > 0.01:
        return not_yet("That is Spearman's correlation; the exercise asks for Kendall's τ (scipy.stats.kendalltau).")
    if "random" in maps:
        random_map = _maps(maps, ["random"])
        zeros_random, other_random = (_deletion_areas(random_map, removal)["random"] for removal in ("zeros", r))
        with_random = kendalltau([areas["zeros"][n] for n in METHODS] + [zeros_random],
                                 [areas[r][n] for n in METHODS] + [other_random])[0]
        if abs(answer[r] - with_random) <= 0.01 and abs(with_random - reference[r]) > 0.01:
            return not_yet("Leave the random map out: the ranking is of the nine methods of the panel.")
    return not_yet(f"tau[{r!r}] is not the reference value. Recompute the deletion areas on the first 50 digits "
                   "(x[:50], maps[name][:50], y[:50]) with steps=10 and removal='zeros', 'mean' and 'blur', "
                   "averaged over the digits, for the nine methods without the random map.")


# ---------------------------------------------------------------------------- exercise 2
SQUARE = {"gradient": False, "gradient_x_input": True, "integrated_gradients": True}  # multiply_by_inputs


def _square_infidelity(attr, multiply_by_inputs, normalise=True):
    model, x, y = _digits()
    return E.infidelity(model, x, attr, y, perturbation="square", size=7, samples=10,
                        multiply_by_inputs=multiply_by_inputs, normalise=normalise).mean().item()


@exercise("ch10.2", "Infidelity with squares",
          "Call E.infidelity on x[:50] with perturbation='square', size=7, samples=10 and normalise=True, as the "
          "chapter did with Gaussian noise; only the two maps that already contain the factor x - x' get "
          "multiply_by_inputs=True. Then ask which value is best, remembering which direction is better.")
def infidelity_with_squares(square, winner, *, maps):
    answer = _numbers(square, set(SQUARE), "square")
    if isinstance(answer, str):
        return not_yet(answer)
    panel = _maps(maps, list(SQUARE))
    reference = {name: _square_infidelity(panel[name], global_map) for name, global_map in SQUARE.items()}
    for name, global_map in SQUARE.items():
        value = answer[name]
        if _close(value, reference[name]):
            continue
        if _close(value, _square_infidelity(panel[name], not global_map)):
            if global_map:
                return not_yet(f"square[{name!r}]: this map already contains the factor x - x', so pass "
                               "multiply_by_inputs=True for it.")
            return not_yet(f"square[{name!r}]: the plain gradient is a local map without the factor x - x'; "
                           "leave multiply_by_inputs=False for it.")
        if _close(value, _square_infidelity(panel[name], global_map, normalise=False)):
            return not_yet(f"square[{name!r}]: pass normalise=True, so that maps of different scales can be "
                           "compared.")
        return not_yet(f"square[{name!r}] is not the reference value: use x[:50], maps[name][:50], y[:50], "
                       "perturbation='square', size=7, samples=10, normalise=True, and average over the digits.")
    best = min(reference, key=reference.get)
    if winner != best:
        if winner == max(reference, key=reference.get):
            return not_yet("Your numbers are right, but `winner` has the largest infidelity: lower infidelity is "
                           "better.")
        return not_yet(f"Your numbers are right, but `winner` should be the name of the method with the lowest "
                       f"infidelity, one of {sorted(SQUARE)}.")
    return right("The three infidelities are within 0.1% of the reference and the winner is the method with the "
                 "lowest.")


# ---------------------------------------------------------------------------- exercise 3
LERF = ["gradient", "integrated_gradients", "random"]


def _aopc(attr, order):
    model, x, y = _digits()
    return E.aopc(model, x, attr, y, steps=10, order=order).mean().item()


@exercise("ch10.3", "Least relevant first",
          "E.aopc(model, x[:50], maps[name][:50], y[:50], steps=10, order='least') gives LeRF. For MoRF a higher "
          "AOPC is better, for LeRF a lower one: rank each in its own direction before comparing the two orders.")
def least_relevant_first(lerf, same_order, *, maps):
    answer = _numbers(lerf, set(LERF), "lerf")
    if isinstance(answer, str):
        return not_yet(answer)
    if not isinstance(same_order, (bool, np.bool_)):
        return not_yet("`same_order` should be True or False: do LeRF and MoRF rank the three maps the same way?")
    panel = _maps(maps, LERF)
    reference = {name: _aopc(panel[name], "least") for name in LERF}
    for name in LERF:
        if _close(answer[name], reference[name]):
            continue
        if _close(answer[name], _aopc(panel[name], "most")):
            return not_yet(f"lerf[{name!r}] is the MoRF value; pass order='least'.")
        return not_yet(f"lerf[{name!r}] is not the reference value: use x[:50], maps[name][:50], y[:50], steps=10 "
                       "and order='least', averaged over the digits.")
    morf = {name: _aopc(panel[name], "most") for name in LERF}
    same = sorted(LERF, key=morf.get, reverse=True) == sorted(LERF, key=reference.get)
    if bool(same_order) != same:
        return not_yet("Your LeRF values are right, but not the verdict `same_order`: MoRF ranks a map higher the "
                       "larger its AOPC, LeRF the smaller its AOPC; compare the two orders in those directions.")
    return right("The LeRF values are within 0.1% of the reference and the verdict on the two orders holds.")
