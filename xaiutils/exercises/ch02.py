"""Self-checks for chapter 2, "Gradients and gradient × input" (notebooks/ch02_gradients.ipynb).

1. Euler's identity: a bias-free copy of the MNIST model, on which gradient × input sums to the score;
2. the deletion experiment with the saturated probability p_c as the explained output;
3. the rank correlation of the shapes saliency maps under noise of 0.5%, 1%, 2% and 5%.

The references use the chapter's 50 test images of each data set and the shipped models.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from . import exercise, not_yet, right

FRACTIONS = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3]  # the chapter's `fractions`
SIGMAS = [0.005, 0.01, 0.02, 0.05]  # exercise 3's noise levels


@lru_cache(maxsize=2)
def _fifty(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The chapter's ``x50, y50`` (``"mnist"``) or ``s50, t50`` (``"shapes"``)."""
    from .. import data

    if name == "mnist":
        mnist = data.mnist()
        return mnist.x_test[:50].clone(), mnist.y_test[:50].clone()
    shapes = data.shapes("test")
    return shapes.x[:50].clone(), shapes.y[:50].clone()


@lru_cache(maxsize=2)
def _model(name: str) -> nn.Module:
    from .. import zoo

    return zoo.load(f"{name}-standard")


def _grad(model, x, target) -> torch.Tensor:
    from ..attribution import gradient

    return gradient(model, x, target)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-3) -> bool:
    return a.shape == b.shape and bool((a - b).abs().max() <= rtol * b.abs().max() + 1e-12)


# ---------------------------------------------------------------------------- exercise 1
@exercise("ch02.1", "Euler's identity",
          hint="copy.deepcopy the model, then zero every module's bias under torch.no_grad(). Compare the sum of "
               "gradient_x_input(bias_free, x50, y50) over the pixels with bias_free's own scores.")
def check_euler(bias_free, relative, model=None) -> object:
    """``bias_free``: the copy without biases; ``relative``: the largest gap |sum - f_c(x)|, relative to the
    largest score; ``model``: optionally the chapter's ``mnist_model``, which must keep its biases."""
    trained = _model("mnist").state_dict()
    if model is not None:
        if bias_free is model:
            return not_yet("`bias_free` is the chapter's model itself: make a copy (copy.deepcopy) and change that.")
        if any(not torch.equal(value, trained[name]) for name, value in model.state_dict().items()):
            return not_yet("The chapter's `mnist_model` has changed: zero the biases of a copy (copy.deepcopy), "
                           "not of the model itself, and reload it with zoo.load.")
    state = bias_free.state_dict()
    if set(state) != set(trained):
        return not_yet("`bias_free` should be a copy of the MNIST model, with the same layers.")
    for name, value in state.items():
        if name.endswith("bias") and bool(value.abs().max() > 0):
            return not_yet(f"The bias of `{name.rsplit('.', 1)[0]}` is not zero: set the bias of every layer to zero.")
        if not name.endswith("bias") and not torch.equal(value, trained[name]):
            return not_yet(f"`{name}` differs from the trained model's: change only the biases.")
    x, y = _fifty("mnist")
    with torch.no_grad():
        score = bias_free(x).gather(1, y[:, None])[:, 0]
    total = (x * _grad(bias_free, x, y)).flatten(1).sum(1)
    own = ((total - score).abs().max() / score.abs().max()).item()
    relative = float(relative)
    if relative < 0:
        return not_yet("`relative` should be a size, |sum − f_c(x)| / max |f_c(x)|, never negative.")
    if relative > 1e-5:
        if own < 1e-5:
            return not_yet("Your gap is far above float32 rounding, yet bias_free satisfies the identity: compare "
                           "the sum of gradient × input of `bias_free` with the scores of `bias_free` itself, for "
                           "the same class y, not with the trained model's scores.")
        return not_yet("The gap is far above float32 rounding: look at which biases are still there.")
    return right("Every bias is zero, the weights are the trained ones, and gradient × input sums to the score "
                 "up to float32 rounding.")


# ---------------------------------------------------------------------------- exercise 2
def _probability(y: torch.Tensor):
    return lambda output: torch.softmax(output, dim=1).gather(1, y[:, None])[:, 0]


@lru_cache(maxsize=1)
def _probability_gradient() -> torch.Tensor:
    x, y = _fifty("mnist")
    return _grad(_model("mnist"), x, _probability(y))


def _deletion(ranking: torch.Tensor) -> np.ndarray:
    """Mean p_c of the 50 digits after setting the top fraction of pixels by ``ranking`` to 0."""
    x, y = _fifty("mnist")
    order = ranking.flatten(1).argsort(dim=1, descending=True)
    curve = []
    for fraction in FRACTIONS:
        removed = x.flatten(1).clone()
        removed.scatter_(1, order[:, :int(round(fraction * order.shape[1]))], 0.0)
        with torch.no_grad():
            curve.append(_probability(y)(_model("mnist")(removed.view_as(x))).mean().item())
    return np.array(curve)


@exercise("ch02.2", "Saturated probability",
          hint="Use the chapter's probability(y50) as the target: gradient(mnist_model, x50, probability(y50)). "
               "Rank the pixels by the absolute value of that gradient, set the top fractions to black, and "
               "record the mean probability of the true class.")
def check_probability_deletion(grad_p, curve_p) -> object:
    """``grad_p``: the gradient of p_c for the 50 digits; ``curve_p``: the mean p_c after removing the top
    ``fractions`` of pixels ranked by |grad_p| (7 values, the chapter's ``fractions``)."""
    x, y = _fifty("mnist")
    model, reference = _model("mnist"), _probability_gradient()
    grad_p = torch.as_tensor(grad_p).detach().float()
    if grad_p.shape != reference.shape:
        return not_yet(f"`grad_p` should hold one map per digit, shaped like x50 {tuple(x.shape)}; yours has shape "
                       f"{tuple(grad_p.shape)}.")
    if not _close(grad_p, reference):
        if _close(grad_p, _grad(model, x, y)):
            return not_yet("That is the gradient of the logit f_c; differentiate the probability p_c, the softmax "
                           "of the logits at the true class (the chapter's probability(y50)).")
        if _close(grad_p, reference.abs()):
            return not_yet("Keep `grad_p` signed; take the absolute value only to rank the pixels.")
        if _close(grad_p, x * reference):
            return not_yet("That is gradient × input of p_c; `grad_p` is the gradient itself.")
        log_p = _grad(model, x, lambda out: torch.log_softmax(out, dim=1).gather(1, y[:, None])[:, 0])
        if _close(grad_p, log_p):
            return not_yet("That is the gradient of log p_c; differentiate p_c itself, which saturates.")
        return not_yet("`grad_p` is not the gradient of p_c for the true classes y50.")
    curve = np.asarray(curve_p, dtype=float).ravel()
    if len(curve) != len(FRACTIONS):
        return not_yet(f"`curve_p` should have one value per fraction of the chapter's `fractions` "
                       f"({len(FRACTIONS)} values); yours has {len(curve)}.")
    if curve.max() > 1 or curve.min() < 0:
        return not_yet("These are not probabilities: the curve shows the mean p_c (a softmax probability), not "
                       "the logit.")
    expected = _deletion(reference.abs())
    if np.abs(curve - expected).max() <= 0.01:
        return right("The gradient of p_c and its deletion curve match the reference: compare the curve with the "
                     "random order to answer the question.")
    if np.abs(curve - _deletion(x * reference)).max() <= 0.01:
        return not_yet("That is the curve in the order of gradient × input of p_c; rank by |∇p_c|.")
    if np.abs(curve - _deletion(-reference.abs())).max() <= 0.01:
        return not_yet("Remove the pixels with the *largest* |∇p_c| first (argsort with descending=True).")
    if np.abs(curve - _deletion(reference)).max() <= 0.01:
        return not_yet("Rank by the absolute value |∇p_c|, not the signed gradient.")
    return not_yet("The curve differs from the reference: set the top fraction of pixels by |grad_p| to 0 for each "
                   "fraction and average p_c of the true class over the 50 digits.")


# ---------------------------------------------------------------------------- exercise 3
def _spearman_medians(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(np.median([spearmanr(a[i], b[i]).statistic for i in range(len(a))]))


@lru_cache(maxsize=1)
def _noise_references() -> dict[str, np.ndarray]:
    """Median rank correlations over the 50 shapes images, per noise level (seed 0, as noise_effect)."""
    x, y = _fifty("shapes")
    model = _model("shapes")
    clean = _grad(model, x, y)
    rows = {"gradient": [], "gradient x input": [], "signed": []}
    for sigma in SIGMAS:
        noisy = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        moved = _grad(model, noisy, y)
        rows["gradient"].append(_spearman_medians(clean.sum(1).abs().flatten(1), moved.sum(1).abs().flatten(1)))
        rows["gradient x input"].append(_spearman_medians((x * clean).sum(1).abs().flatten(1),
                                                          (noisy * moved).sum(1).abs().flatten(1)))
        rows["signed"].append(_spearman_medians(clean.sum(1).flatten(1), moved.sum(1).flatten(1)))
    return {name: np.array(values) for name, values in rows.items()}


@exercise("ch02.3", "How noisy?",
          hint="Call the chapter's noise_effect(shapes_model, s50, t50, sigma=...) for each level and keep the "
               "column 'rank correlation, gradient'.")
def check_noise_levels(rank_correlations) -> object:
    """``rank_correlations``: the median rank correlation of the shapes saliency maps, for noise of 0.5%,
    1%, 2% and 5% of the pixel range, in that order. Any noise seed is accepted (within 0.03)."""
    values = np.asarray(rank_correlations, dtype=float).ravel()
    if len(values) != len(SIGMAS):
        return not_yet(f"Give one median rank correlation per noise level, 0.5%, 1%, 2% and 5% ({len(SIGMAS)} "
                       f"values); yours has {len(values)}.")
    references = _noise_references()
    close = {name: bool(np.abs(values - reference).max() <= 0.03) for name, reference in references.items()}
    if close["gradient"]:
        return right("The saliency map's rank correlation falls steadily as the noise grows, as in the reference "
                     "(within 0.03).")
    if np.abs(values[::-1] - references["gradient"]).max() <= 0.03:
        return not_yet("Order the values by noise level, from 0.5% up to 5%.")
    if close["gradient x input"]:
        return not_yet("Those are gradient × input's correlations; the question asks about the saliency map, the "
                       "column 'rank correlation, gradient'.")
    if close["signed"]:
        return not_yet("Compare the absolute maps (channels summed, then abs), as noise_effect does.")
    if values.max() < references["gradient"].min() - 0.1:
        return not_yet("Your correlations are all lower than expected: the noise std is a fraction of the pixel "
                       "range [0, 1], 0.005 for 0.5%, not 0.5.")
    return not_yet("The correlations differ from the reference: use the 50 shapes test images s50, t50 and the "
                   "saliency map (the gradient) of their true classes.")
