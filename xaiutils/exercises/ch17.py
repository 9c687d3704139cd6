"""Self-checks for the exercises of chapter 17, Tables: Shapley values and gradients
(notebooks/ch17_tables.ipynb).

The references are recomputed here with the library: the two-feature hinge of exercise 1 in closed form
and with :func:`~xaiutils.attribution.shapley_values`, and the chapter's wine and breast cancer settings
(the shipped MLPs in float64, the test splits, the predicted classes, the average training row as the
baseline) for exercises 2 and 3. Answers computed in float32 pass: the tolerances are relative, 1e-4.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from . import exercise, not_yet, number, right

GROUPS = ("mean", "error", "worst")


def _pair(value, name):
    """Two numbers from a list, tuple, array or tensor, or a sentence saying what is wrong."""
    try:
        values = torch.as_tensor(np.asarray(value.detach() if isinstance(value, torch.Tensor) else value,
                                            dtype=np.float64)).flatten()
    except (TypeError, ValueError):
        return f"`{name}` should be two numbers (a list, a tuple or a tensor of 2 values)."
    if values.numel() != 2:
        return f"`{name}` should be two numbers, one per feature; it has {values.numel()}."
    return values


def _matrix(value, name, shape):
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        return f"`{name}` should be a tensor or an array of shape {shape}."
    values = torch.as_tensor(np.asarray(value.detach() if isinstance(value, torch.Tensor) else value,
                                        dtype=np.float64))
    if tuple(values.shape) != shape:
        return f"`{name}` should have the shape {shape}; it has {tuple(values.shape)}."
    return values


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    return bool(torch.isfinite(a).all()) and (a - b).abs().max().item() <= rtol * b.abs().max().item() + 1e-12


# --- exercise 1 ------------------------------------------------------------------------------------------
class _Hinge(torch.nn.Module):
    def forward(self, z):
        return torch.relu(z.sum(1, keepdim=True) - 1)


def _hinge_reference():
    from xaiutils.attribution import shapley_values

    point = torch.tensor([[2.0, 0.5]], dtype=torch.float64)
    phi = shapley_values(_Hinge().eval(), point, 0)[0]
    opens = 1 / point.sum()  # the hinge opens on the diagonal at alpha = 1 / (x1 + x2)
    ig = point[0] * (1 - opens)
    return phi, ig, point[0]


@exercise("ch17.1", "Shapley and Aumann-Shapley by hand",
          "List the four coalitions and their values v({}), v({1}), v({2}), v({1, 2}); with two features every "
          "Shapley weight is 1/2. For integrated gradients, find the alpha at which x1 + x2 - 1 becomes positive on "
          "the path alpha * x; the gradient is (1, 1) after it and 0 before.")
def shapley_by_hand(phi, ig):
    phi, ig = _pair(phi, "phi"), _pair(ig, "ig")
    for answer in (phi, ig):
        if isinstance(answer, str):
            return not_yet(answer)
    phi_ref, ig_ref, point = _hinge_reference()
    near = lambda a, b: (a - b).abs().max().item() < 0.01  # noqa: E731  (a numerical IG is accurate to ~1e-3)
    if not near(phi, phi_ref):
        if near(phi, ig_ref):
            return not_yet("`phi` holds the integrated gradients; the Shapley value averages over the coalitions, "
                           "not along the diagonal.")
        if near(phi, phi_ref.flip(0)):
            return not_yet("`phi` has the features in the wrong order: the first number is feature 1 (x1 = 2).")
        if near(phi, point):
            return not_yet("That is gradient x input at x; the Shapley value compares coalitions with the baseline.")
        return not_yet("`phi` is not the Shapley value: check v({2}) = max(0, 0.5 - 1) and the weights 1/2.")
    if not near(ig, ig_ref):
        if near(ig, phi_ref):
            return not_yet("`ig` holds the Shapley values; integrated gradients integrates the gradient along the "
                           "straight path from the baseline.")
        if near(ig, ig_ref.flip(0)):
            return not_yet("`ig` has the features in the wrong order: the first number is feature 1 (x1 = 2).")
        if near(ig, point):
            return not_yet("That is gradient x input at x: the gradient is zero on the first part of the path.")
        return not_yet("`ig` is not integrated gradients: on which part of the path from 0 to x is the hinge open?")
    return right("Both are efficient (they sum to f(x) - f(b) = 1.5) but split it differently: integrated gradients "
                 "gives feature 2 more than the Shapley value does.")


# --- exercise 2 ------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _wine():
    from xaiutils import data, zoo

    wine, model = data.wine(), zoo.load("wine-mlp").double().eval()
    x = wine.x_test.double()
    with torch.no_grad():
        target = model(x).argmax(1)
    return wine, model, x, target


def _distance(a, reference):
    return ((a - reference).norm(dim=1) / reference.norm(dim=1)).mean().item()


@lru_cache(maxsize=1)
def _background_reference():
    from xaiutils.attribution import shapley_values

    wine, model, x, target = _wine()
    background = wine.x_train[:20].double()
    per_row = torch.stack([shapley_values(model, x, target, baseline=d[None], batch_size=1 << 16)
                           for d in background])
    exact = shapley_values(model, x, target, baseline=torch.zeros(1, 13, dtype=torch.float64), batch_size=1 << 16)
    at_average = shapley_values(model, x, target, baseline=background.mean(0, keepdim=True), batch_size=1 << 16)
    return per_row.mean(0), exact, at_average, per_row[0]


@exercise("ch17.2", "A background set instead of one baseline",
          "Loop over the 20 background wines d = wine.x_train[:20]: shapley_values(model, x, target, baseline=d[None]) "
          "for each, then average the 20 results. `moved` is distance(phi_background, exact).mean().")
def background_set(phi_background, moved):
    phi_background = _matrix(phi_background, "phi_background", (44, 13))
    if isinstance(phi_background, str):
        return not_yet(phi_background)
    moved = number(moved, "moved")
    reference, exact, at_average, first = _background_reference()
    if not _close(phi_background, reference):
        if _close(phi_background, exact):
            return not_yet("These are the chapter's exact values with the average training wine as the baseline; "
                           "use the 20 background wines instead.")
        if _close(phi_background, at_average):
            return not_yet("That is one baseline at the average of the 20 wines. Average the Shapley values over "
                           "the 20 baselines instead: for a nonlinear model the two differ.")
        if _close(phi_background, 20 * reference):
            return not_yet("That is the sum over the 20 background wines; take the mean.")
        if _close(phi_background, first):
            return not_yet("That uses only the first background wine; average over all 20.")
        return not_yet("`phi_background` is not the mean over the first 20 training wines (as baselines) of the exact "
                       "Shapley values of the 44 test wines for their predicted cultivars.")
    if abs(moved - _distance(reference, exact)) > 1e-3 * abs(_distance(reference, exact)):
        if abs(moved - _distance(exact, reference)) <= 1e-3 * _distance(exact, reference):
            return not_yet("`moved` divides by the norm of the background values; the chapter's distance(a, exact) "
                           "divides by the exact values' norm.")
        return not_yet("`moved` should be distance(phi_background, exact).mean(): the L2 distance relative to the "
                       "exact values' norm, averaged over the 44 wines.")
    return right(f"The background moves the values by {moved:.0%} of their norm on average: 'absent' is part of the "
                 "question an explanation answers.")


# --- exercise 3 ------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _three_groups():
    from xaiutils import data, zoo
    from xaiutils.attribution import integrated_gradients, shapley_values

    cancer, model = data.breast_cancer(), zoo.load("breast-cancer-mlp").double().eval()
    x = cancer.x_test.double()
    with torch.no_grad():
        target = model(x).argmax(1)
    three = torch.arange(30) // 10
    values = shapley_values(model, x, target, baseline="zeros", features=three)
    grouped = torch.stack([values[:, three == g].sum(1) for g in range(3)], 1)
    ig = integrated_gradients(model, x, target, baseline="zeros", steps=256).detach()
    ig_grouped = torch.stack([ig[:, three == g].sum(1) for g in range(3)], 1)
    interleaved = torch.arange(30) % 3
    wrong = shapley_values(model, x, target, baseline="zeros", features=interleaved)
    wrong = torch.stack([wrong[:, interleaved == g].sum(1) for g in range(3)], 1)
    return grouped, ig_grouped, wrong


@exercise("ch17.3", "Three statistics as players",
          "features=torch.arange(30) // 10 makes three players. shapley_values spreads a group's value over its 10 "
          "features: sum the returned map over each group's columns to get the group value.")
def three_statistics(phi3, strongest):
    phi3 = _matrix(phi3, "phi3", (142, 3))
    if isinstance(phi3, str):
        return not_yet(phi3)
    if strongest not in GROUPS:
        return not_yet(f"`strongest` should be one of {GROUPS}; got {strongest!r}.")
    reference, ig_grouped, interleaved = _three_groups()
    if not _close(phi3, reference):
        if _close(phi3, reference / 10):
            return not_yet("These are the values per feature; a group's value is the sum over its 10 features "
                           "(10 times these).")
        if _close(phi3, interleaved):
            return not_yet("Your groups interleave the features (j % 3); the means are features 0-9, the standard "
                           "errors 10-19 and the worst values 20-29 (j // 10).")
        if (phi3 - ig_grouped).abs().max() < 0.01 * ig_grouped.abs().max():
            return not_yet("That is integrated gradients summed per group; the exercise asks for the exact Shapley "
                           "values of the three-player game.")
        return not_yet("`phi3` is not the exact Shapley values of the three groups (means, errors, worst values) for "
                       "the predicted classes of the 142 test tumours, with the average training tumour as baseline.")
    expected = GROUPS[int(reference.abs().mean(0).argmax())]
    if strongest != expected:
        return not_yet("Your values are right, but not `strongest`: which column has the largest mean magnitude?")
    return right("The group values sum to f(x) - f(b) for every tumour, and one group of statistics dominates.")
