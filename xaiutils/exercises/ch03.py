"""Self-checks for chapter 3, "Modified backward passes: deconvnet and guided backprop"
(notebooks/ch03_backprop_rules.ipynb).

1. the three ReLU rules by hand on the worked example at x = (2, -1);
2. a copy of the MNIST model with a random last layer, and how much each map notices;
3. a copy with average pooling, whose deconvnet map no longer depends on the image.

References come from the library's own methods on the chapter's tiny network and on the shipped
``mnist-standard`` with the chapter's 50 test digits.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from . import exercise, not_yet, right

RULES = ("gradient", "deconvnet", "guided backprop")
W1 = ((1.0, 0.0), (0.0, 1.0), (1.0, 1.0))  # the worked example's network
W2 = (2.0, -1.0, 1.0)


def _methods() -> dict:
    from ..attribution import deconvnet, gradient, guided_backprop

    return {"gradient": gradient, "deconvnet": deconvnet, "guided backprop": guided_backprop}


@lru_cache(maxsize=1)
def _mnist() -> tuple[torch.Tensor, torch.Tensor]:
    from .. import data

    mnist = data.mnist()
    return mnist.x_test[:50].clone(), mnist.y_test[:50].clone()


def _trained() -> nn.Module:
    from .. import zoo

    return zoo.load("mnist-standard")


def _unchanged(model) -> bool:
    trained = _trained().state_dict()
    return all(torch.equal(value, trained[name]) for name, value in model.state_dict().items())


def _normalised(answer: dict) -> dict:
    return {str(name).replace("_", " ").replace("guided backpropagation", "guided backprop"): value
            for name, value in dict(answer).items()}


# ---------------------------------------------------------------------------- exercise 1
def _tiny() -> nn.Module:
    tiny = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False)).double().eval()
    with torch.no_grad():
        tiny[0].weight.copy_(torch.tensor(W1, dtype=torch.float64))
        tiny[2].weight.copy_(torch.tensor([W2], dtype=torch.float64))
    return tiny


def _hidden_signals(x: tuple[float, float]) -> dict[str, torch.Tensor]:
    """Eq. eq-relu-rules at the hidden layer of the worked example, for the input ``x``."""
    w1, w2 = torch.tensor(W1, dtype=torch.float64), torch.tensor(W2, dtype=torch.float64)
    active = (w1 @ torch.tensor(x, dtype=torch.float64) > 0).double()
    return {"gradient": w2 * active, "deconvnet": w2.clamp(min=0), "guided backprop": w2.clamp(min=0) * active}


@exercise("ch03.1", "By hand",
          hint="First z = W1 x at the new x, and which hidden units are active. Then apply each rule of "
               "eq-relu-rules to the signal w2 arriving from above, and multiply the result by W1 transposed.")
def check_by_hand(by_hand) -> object:
    """``by_hand``: {"gradient": (a, b), "deconvnet": (a, b), "guided backprop": (a, b)} at x = (2, -1)."""
    try:
        answer = _normalised(by_hand)
    except (TypeError, ValueError):
        return not_yet(f"`by_hand` should be a dict with the keys {', '.join(map(repr, RULES))}.")
    missing = [rule for rule in RULES if rule not in answer]
    if missing:
        return not_yet(f"`by_hand` lacks {', '.join(map(repr, missing))}: give one input attribution per rule.")
    x = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    tiny, w1 = _tiny(), torch.tensor(W1, dtype=torch.float64)
    hidden, old_hidden = _hidden_signals((2.0, -1.0)), _hidden_signals((-1.0, 2.0))
    for rule, method in _methods().items():
        value = torch.as_tensor(np.asarray(answer[rule], dtype=float)).double().ravel()
        if len(value) == 3:
            if torch.allclose(value, hidden[rule]):
                return not_yet(f"{rule!r}: that is the signal at the hidden units; map it back to the input with "
                               "W1 transposed (two numbers).")
            return not_yet(f"{rule!r}: the attribution of the input has two numbers, one per input feature.")
        if len(value) != 2:
            return not_yet(f"{rule!r}: give two numbers, the attribution of x1 and of x2.")
        if torch.allclose(value, method(tiny, x, 0)[0]):
            continue
        if torch.allclose(value, w1.T @ old_hidden[rule]):
            return not_yet(f"{rule!r}: that is the answer at the old x = (-1, 2); recompute z = W1 x and the masks "
                           "[z > 0] at x = (2, -1).")
        if rule != "gradient" and torch.allclose(value, w1.T @ torch.tensor(W2, dtype=torch.float64)):
            return not_yet(f"{rule!r}: this rule passes only the positive part of the signal from above.")
        if rule == "gradient" and torch.allclose(value, w1.T @ torch.tensor(W2, dtype=torch.float64)):
            return not_yet("'gradient': the gradient passes the signal only through the active units, [z > 0].")
        return not_yet(f"{rule!r} is not right yet: apply its rule of eq-relu-rules to w2, then multiply by W1 "
                       "transposed.")
    return right("All three attributions match the library's.")


# ---------------------------------------------------------------------------- exercise 2
def _mean_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(np.mean([spearmanr(p, q).statistic for p, q in zip(a.flatten(1), b.flatten(1))]))


@lru_cache(maxsize=1)
def _trained_maps() -> dict[str, torch.Tensor]:
    x, y = _mnist()
    model = _trained()
    return {rule: _methods()[rule](model, x, y) for rule in ("gradient", "guided backprop")}


@exercise("ch03.2", "A model that has forgotten its classes",
          hint="copy.deepcopy the model, overwrite forgetful.fc.weight with random numbers under torch.no_grad(), "
               "then for each digit correlate (Spearman) the flattened map of the trained and of the copied model, "
               "and average over the 50 digits.")
def check_forgetful(forgetful, correlations, model=None) -> object:
    """``forgetful``: the copy with a random ``fc``; ``correlations``: {"gradient": rho, "guided backprop": rho},
    the mean Spearman correlation over the 50 digits between the maps of the two models."""
    if model is not None:
        if forgetful is model:
            return not_yet("`forgetful` is the chapter's model itself: randomise a copy (copy.deepcopy).")
        if not _unchanged(model):
            return not_yet("The chapter's `mnist_model` has changed: randomise a copy (copy.deepcopy), and reload the "
                           "model with zoo.load.")
    trained = _trained().state_dict()
    state = forgetful.state_dict()
    if set(state) != set(trained):
        return not_yet("`forgetful` should be a copy of the MNIST model, with the same layers.")
    changed = [name for name, value in state.items() if not torch.equal(value, trained[name])]
    if "fc.weight" not in changed:
        return not_yet("The weights of `fc` are still the trained ones: replace forgetful.fc.weight by random numbers.")
    others = [name for name in changed if not name.startswith("fc.")]
    if others:
        return not_yet(f"Only the last layer should change, but `{others[0]}` differs from the trained model.")
    try:
        answer = {rule: float(value) for rule, value in _normalised(correlations).items()}
        answer = {rule: answer[rule] for rule in ("gradient", "guided backprop")}
    except (KeyError, TypeError, ValueError):
        return not_yet("`correlations` should be a dict with the keys 'gradient' and 'guided backprop', one "
                       "number each.")
    x, y = _mnist()
    expected = {rule: _mean_spearman(maps, _methods()[rule](forgetful, x, y)) for rule, maps in _trained_maps().items()}
    if all(abs(answer[rule] - expected[rule]) <= 0.02 for rule in expected):
        return right("The head is random, the rest is the trained model, and both correlations match your copy: "
                     "compare the two numbers to answer.")
    if abs(answer["gradient"] - expected["guided backprop"]) <= 0.02 and abs(
            answer["guided backprop"] - expected["gradient"]) <= 0.02:
        return not_yet("The two correlations are swapped.")
    rule = next(rule for rule in expected if abs(answer[rule] - expected[rule]) > 0.02)
    return not_yet(f"The correlation for {rule!r} does not match your `forgetful`: for each of the 50 digits (their "
                   "true classes), the Spearman correlation of the flattened maps of the two models, then the mean.")


# ---------------------------------------------------------------------------- exercise 3
@exercise("ch03.3", "Switches",
          hint="copy.deepcopy the model and set block.pool = nn.AvgPool2d(2) for block1 and block2. Compute the "
               "deconvnet maps of the 50 digits for one class and their largest difference from the first map.")
def check_switches(average_pooled, spread, model=None) -> object:
    """``average_pooled``: the copy with average pooling; ``spread``: the largest difference between its deconvnet
    maps of the 50 digits (for one class)."""
    from ..attribution import deconvnet

    if model is not None:
        if average_pooled is model:
            return not_yet("`average_pooled` is the chapter's model itself: change a copy (copy.deepcopy).")
        if not _unchanged(model) or not any(isinstance(m, nn.MaxPool2d) for m in model.modules()):
            return not_yet("The chapter's `mnist_model` has changed: change a copy (copy.deepcopy), and reload the "
                           "model with zoo.load.")
    still = [name for name, module in average_pooled.named_modules() if isinstance(module, nn.MaxPool2d)]
    if still:
        return not_yet(f"`{still[0]}` still max-pools: replace every max-pooling layer.")
    replaced = [name for name, module in _trained().named_modules() if isinstance(module, nn.MaxPool2d)]
    modules = dict(average_pooled.named_modules())
    if not all(isinstance(modules.get(name), nn.AvgPool2d) for name in replaced):
        return not_yet(f"Put an nn.AvgPool2d where the max-pooling layers were ({', '.join(replaced)}).")
    if set(average_pooled.state_dict()) != set(_trained().state_dict()) or not _unchanged(average_pooled):
        return not_yet("Keep the trained weights: change only the pooling layers of a copy.")
    x, _ = _mnist()
    for k in (0, 3, 7):
        maps = deconvnet(average_pooled, x, k)
        if (maps - maps[:1]).abs().max() > 1e-5:
            return not_yet("With your copy the deconvnet map still depends on the image: look for a layer whose "
                           "backward pass depends on the input.")
    spread = float(spread)
    if not 0 <= spread < 1e-5:
        return not_yet("`spread` should be the largest |difference| between the deconvnet maps of the 50 digits made "
                       "with `average_pooled`; yours is not float32 rounding. Did you compute it with the "
                       "max-pooling model?")
    return right("No max-pooling is left, the weights are the trained ones, and every digit gets the same "
                 "deconvnet map.")
