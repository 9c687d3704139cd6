"""Self-checks for chapter 4, path methods (notebooks/ch04_path_methods.ipynb).

1. IG by hand: the two attributions of min(1, x1 + x2) at (1, 1), and where the gradient switches off.
2. Black and white: the average of the IG maps for a black and a white baseline.
3. Guided IG's completeness: the median relative completeness errors, and the rule max_dist = 0 reduces to.

The references are computed with :mod:`xaiutils.attribution` on the chapter's model and digits.
"""
from __future__ import annotations

from functools import cache

import torch
from torch import nn
from torch.nn import functional as F

from . import exercise, not_yet, right

MAX_DISTS = (0.0, 0.02, 0.1, 1.0)


class _MinOne(nn.Module):
    """f(x) = min(1, x1 + x2) = 1 - relu(1 - x1 - x2), the toy of chapters 2 and 4."""

    def forward(self, x):
        return (1 - torch.relu(1 - x.sum(1))).unsqueeze(1)


def _numbers(answer, name: str, size: int | None = None):
    """``answer`` as a flat float64 tensor, or a not_yet Feedback saying what was expected."""
    try:
        values = torch.as_tensor(answer, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        return not_yet(f"{name} should be numbers (a list, tuple or tensor); got {type(answer).__name__}.")
    if size is not None and values.numel() != size:
        return not_yet(f"{name} should hold {size} number(s); got {values.numel()}.")
    if not torch.isfinite(values).all():
        return not_yet(f"{name} contains NaN or infinity.")
    return values


def _by_max_dist(answer, name: str):
    """A {max_dist: value} mapping as a dict of floats keyed by MAX_DISTS, or a not_yet Feedback."""
    if not hasattr(answer, "items"):
        return not_yet(f"{name} should be a dict {{max_dist: value}}; got {type(answer).__name__}.")
    values = {float(k): v for k, v in answer.items()}
    missing = [m for m in MAX_DISTS if m not in values]
    if missing:
        return not_yet(f"{name} should have one entry for each max_dist in {list(MAX_DISTS)}; missing {missing}.")
    return {m: float(values[m]) for m in MAX_DISTS}


# ---------------------------------------------------------------------------- exercise 1
@cache
def _toy_reference() -> tuple[torch.Tensor, float]:
    from xaiutils.attribution import gradient, integrated_gradients

    toy, point = _MinOne().eval(), torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    ig = integrated_gradients(toy, point, 0, steps=1000, rule="riemann_middle")[0]
    nodes = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    on = (gradient(toy, nodes[:, None] * point, 0) != 0).any(1)
    return ig, on.double().mean().item()  # the gradient is non-zero on [0, switch)


@exercise("ch04.1", "IG by hand",
          "Follow x1 + x2 along the path alpha * (1, 1): where does min(1, .) stop growing, and what is "
          "the gradient before and after that point?")
def check_ig_by_hand(ig_by_hand, switch_alpha):
    values = _numbers(ig_by_hand, "ig_by_hand", 2)
    if not isinstance(values, torch.Tensor):
        return values
    alpha = _numbers(switch_alpha, "switch_alpha", 1)
    if not isinstance(alpha, torch.Tensor):
        return alpha
    ig, switch = _toy_reference()
    if not torch.allclose(values, ig, atol=1e-3):
        if values.abs().max() < 1e-3:
            return not_yet("ig_by_hand is zero, the gradient at x (where f is saturated). IG integrates the "
                           "gradient along the whole path from the baseline 0 to x.")
        if torch.allclose(values, 2 * ig, atol=1e-3):
            return not_yet("ig_by_hand adds up to 2, but f(x) - f(0) is 1 (completeness): the gradient is (1, 1) "
                           "only on part of the path. Where does x1 + x2 reach 1?")
        if abs(values.sum() - ig.sum()) < 1e-3:
            return not_yet("ig_by_hand adds up to f(x) - f(0) = 1, but the split is off: f treats x1 and x2 "
                           "the same way, and so does the path.")
        return not_yet("ig_by_hand is not IG yet: IG_i = (x_i - x'_i) times the average of df/dx_i over alpha "
                       "in [0, 1]; its two entries must add up to f(x) - f(0).")
    if abs(alpha.item() - switch) > 0.01:
        if abs(alpha.item() - 1) < 0.01:
            return not_yet("ig_by_hand is right, but switch_alpha is not: the gradient is zero before the end "
                           "of the path. At which alpha does x1 + x2 = 2 alpha reach 1?")
        return not_yet("ig_by_hand is right, but switch_alpha is not: it is the alpha at which x1 + x2 = 2 alpha "
                       "reaches 1, where f stops growing.")
    return right("Each feature gets 1/2: the gradient is (1, 1) up to alpha = 1/2 and zero after, and the two "
                 "attributions add up to f(x) - f(0) = 1.")


# ---------------------------------------------------------------------------- exercise 2
@cache
def _digits():
    from xaiutils import data, zoo

    mnist = data.mnist()
    return zoo.load("mnist-standard"), mnist.x_test[:2], mnist.y_test[:2]


@cache
def _black_white_reference() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from xaiutils.attribution import integrated_gradients

    model, x, y = _digits()
    black = integrated_gradients(model, x, y, steps=64)
    white = integrated_gradients(model, x, y, baseline=torch.ones_like(x), steps=64)
    return black, white, (black + white) / 2


@exercise("ch04.2", "Black and white",
          "A pixel gets exactly zero from a baseline wherever it equals that baseline; build one map per "
          "baseline for the two digits of the baseline figure, with their true classes, and combine them.")
def check_black_and_white(average):
    model, x, _ = _digits()
    try:
        answer = torch.as_tensor(average).detach().double().cpu()
    except (TypeError, ValueError, RuntimeError):
        return not_yet(f"average should be a tensor of maps; got {type(average).__name__}.")
    if tuple(answer.shape) != tuple(x.shape):
        return not_yet(f"average should hold one map for each of the two digits, shape {tuple(x.shape)} "
                       f"(digits = mnist.x_test[:2]); got shape {tuple(answer.shape)}.")
    black, white, reference = (t.double() for t in _black_white_reference())
    zero = answer == 0
    if zero[x == 0].float().mean() > 0.9:
        return not_yet("average is still exactly zero on the black pixels: that is what the black baseline alone "
                       "gives. Average it with the IG map for a white baseline (an image of ones).")
    if zero[x == 1].float().mean() > 0.9 and (x == 1).any():
        return not_yet("average is exactly zero on the white pixels: that is what the white baseline alone gives. "
                       "Average it with the IG map for the black baseline.")
    ratio = answer.flatten(1).sum(1) / reference.flatten(1).sum(1)
    cosine = F.cosine_similarity(answer.flatten(1), reference.flatten(1))
    if cosine.min() > 0.98 and ((ratio - 2).abs() < 0.15).all():
        return not_yet("average is twice the average of the two maps: divide their sum by 2.")
    if cosine.min() < 0.98 or ((ratio - 1).abs() > 0.15).any():
        return not_yet("average does not match the mean of the two IG maps (black and white baselines) for "
                       "digits = mnist.x_test[:2]: check the images, the targets (their true classes, "
                       "digit_targets) and the two baselines.")
    if zero.any():
        return right("The two maps average to the reference (cosine similarity above 0.98). A few pixels are "
                     "still exactly zero: the gradient vanishes there on both paths.")
    return right("The two maps average to the reference (cosine similarity above 0.98), and no pixel gets exactly "
                 "zero any more: a pixel would need to equal both baselines, and none is both black and white.")


# ---------------------------------------------------------------------------- exercise 3
@cache
def _guided_reference() -> dict:
    from xaiutils.attribution import guided_ig, integrated_gradients, paths

    model, _, _ = _digits()
    mnist_x, mnist_y = _ten_digits()
    with torch.no_grad():
        gain = model(mnist_x).gather(1, mnist_y[:, None])[:, 0] - model(torch.zeros_like(mnist_x)).gather(
            1, mnist_y[:, None])[:, 0]
    median, mean, unscaled, signed, guided0 = {}, {}, {}, {}, None
    for max_dist in MAX_DISTS:
        attr = guided_ig(model, mnist_x, mnist_y, steps=64, max_dist=max_dist)
        error = attr.flatten(1).sum(1) - gain
        median[max_dist] = (error.abs() / gain.abs()).median().item()
        mean[max_dist] = (error.abs() / gain.abs()).mean().item()
        unscaled[max_dist] = error.abs().median().item()
        signed[max_dist] = (error / gain.abs()).median().item()
        if max_dist == 0.0:
            guided0 = attr
    difference = {rule: (guided0 - integrated_gradients(model, mnist_x, mnist_y, steps=64, rule=rule)).abs().max()
                  .item() for rule in paths.RULES}
    return {"median": median, "mean": mean, "unscaled": unscaled, "signed": signed,
            "rule": min(difference, key=difference.get), "rules": paths.RULES}


@cache
def _ten_digits():
    from xaiutils import data

    mnist = data.mnist()
    return mnist.x_test[:10], mnist.y_test[:10]


def _matches(answer: dict, reference: dict, rtol: float = 0.15, atol: float = 1e-3) -> bool:
    return all(abs(answer[m] - reference[m]) <= max(atol, rtol * abs(reference[m])) for m in MAX_DISTS)


@exercise("ch04.3", "Guided IG's completeness",
          "The completeness error compares the sum of a map with f_c(x) - f_c(0); for max_dist = 0 compare "
          "guided IG's map with integrated_gradients under each rule of paths.RULES.")
def check_guided_completeness(median_error, reduces_to):
    answer = _by_max_dist(median_error, "median_error")
    if not isinstance(answer, dict):
        return answer
    reference = _guided_reference()
    if not _matches(answer, reference["median"]):
        if _matches({m: v / 100 for m, v in answer.items()}, reference["median"]):
            return not_yet("median_error looks like percentages; give fractions (0.01 for 1%).")
        if any(v < 0 for v in answer.values()) or _matches(answer, reference["signed"]):
            return not_yet("median_error should be the median of the absolute error |sum of the map - "
                           "(f_c(x) - f_c(0))|, divided by |f_c(x) - f_c(0)|; yours keeps the sign.")
        if _matches(answer, reference["unscaled"]):
            return not_yet("median_error is not relative yet: divide each digit's |error| by its "
                           "|f_c(x) - f_c(0)| before taking the median.")
        if _matches(answer, reference["mean"]):
            return not_yet("median_error looks like the mean over the digits; the exercise asks for the median.")
        return not_yet("median_error does not match the reference (within 15%): use the first 10 test digits "
                       "(x50[:10]) with their true classes, 64 steps, and f_c(x) - f_c(0) for the zero baseline.")
    if not isinstance(reduces_to, str) or reduces_to.strip().lower() not in reference["rules"]:
        return not_yet(f"median_error is right. reduces_to should name a rule of paths.RULES, one of "
                       f"{', '.join(reference['rules'])}; got {reduces_to!r}.")
    if reduces_to.strip().lower() != reference["rule"]:
        return not_yet("median_error is right, but with max_dist = 0 guided IG is not IG with that rule: compare "
                       "the two maps on the same digits and steps, rule by rule.")
    return right("The medians match the reference within 15%, and with max_dist = 0 guided IG stays on the straight "
                 "line and is IG with that rule.")
