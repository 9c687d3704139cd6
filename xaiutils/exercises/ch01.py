"""Self-checks for chapter 1, "Why explain, and what a gradient tells you" (notebooks/ch01_why_explain.ipynb).

1. how far the first-order Taylor model holds along the gradient's direction, and how many ReLU
   units of ``block1`` have switched by then;
2. a gradient from forward passes only (central differences), compared with autograd;
3. the saliency map of the class that the model ranks second.

Every check works on the chapter's digit, the first test image of ``data.mnist()`` explained for
its label with ``mnist-standard`` (in float64 for exercises 1 and 2, as in the chapter).
"""
from __future__ import annotations

import copy
from functools import lru_cache

import torch

from . import exercise, not_yet, right

TOLERATED = 0.1  # exercise 1: the largest relative error of the linear prediction


@lru_cache(maxsize=1)
def _digit() -> tuple[torch.Tensor, int]:
    from .. import data

    mnist = data.mnist()
    return mnist.x_test[:1].clone(), int(mnist.y_test[0])


@lru_cache(maxsize=2)
def _model(double: bool):
    from .. import zoo

    model = zoo.load("mnist-standard")
    return model.double() if double else model


def _noisy_digit() -> torch.Tensor:
    """The chapter's digit with 1% noise (cell "digit + 1% noise"), in float64."""
    x64 = _digit()[0].double()
    return x64 + 0.01 * torch.rand(x64.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _grad(model, x, target) -> torch.Tensor:
    from ..attribution import gradient

    return gradient(model, x, target)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    return a.shape == b.shape and bool((a - b).abs().max() <= rtol * b.abs().max() + 1e-6)


# ---------------------------------------------------------------------------- exercise 1
def _along_gradient():
    model, (x, c) = _model(True), _digit()
    x64 = x.double()
    g = _grad(model, x64, c)
    return model, x64, c, g / g.norm(), g.norm().item()


def _relative_error(steps: torch.Tensor) -> torch.Tensor:
    """|actual - predicted| / |actual| for steps of length ``steps`` along the unit gradient."""
    model, x64, c, direction, norm = _along_gradient()
    with torch.no_grad():
        actual = model(x64 + steps.view(-1, 1, 1, 1) * direction)[:, c] - model(x64)[0, c]
    return (actual - steps * norm).abs() / actual.abs()


@lru_cache(maxsize=1)
def _crossing() -> float:
    """The largest step on a fine grid (800 steps per 5 decades) whose error is below 10%."""
    steps = torch.logspace(-3, 2, 801, dtype=torch.float64)
    return steps[_relative_error(steps) < TOLERATED].max().item()


def _switched(eps: float) -> dict[str, int]:
    """ReLU units of block1 (before pooling) that switch on, off, or either at step ``eps``."""
    model, x64, _, direction, _ = _along_gradient()
    with torch.no_grad():
        before = model.block1.conv(x64) > 0
        after = model.block1.conv(x64 + eps * direction) > 0
        pooled = [model.block1(z) > 0 for z in (x64, x64 + eps * direction)]
    return {"either": (before != after).sum().item(), "on": (~before & after).sum().item(),
            "off": (before & ~after).sum().item(), "pooled": (pooled[0] != pooled[1]).sum().item(),
            "all": before.numel()}


@exercise("ch01.1", "How far the gradient sees",
          hint="Step along the unit vector g / |g| for a fine grid of lengths (torch.logspace), compute "
               "|actual - predicted| / |actual| for each, and keep the largest length below 10%. Then compare "
               "model64.block1.conv(z) > 0 at the moved digit and at the digit.")
def check_reach(largest, changed) -> object:
    """``largest``: the step length epsilon; ``changed``: block1's ReLU units that switched on or off."""
    eps = float(largest)
    if not eps > 0:
        return not_yet("`largest` should be a step length ε > 0.")
    crossing, norm = _crossing(), _along_gradient()[4]
    error = _relative_error(torch.tensor([eps], dtype=torch.float64)).item()
    if error >= TOLERATED:
        if error < 1.2 * TOLERATED:
            return not_yet("At your ε the error is just above 10%: measure it as in the chapter's table, "
                           "|actual − predicted| / |actual|, relative to the actual change.")
        return not_yet("At your ε the linear prediction is off by more than 10%: look for a smaller step, along "
                       "the gradient's direction.")
    if eps < 0.8 * crossing:
        if abs(eps * norm / crossing - 1) < 0.25:
            return not_yet("Step along the unit vector g / |g|: ε is the length of the step, and your steps "
                           "seem to be multiples of g itself.")
        return not_yet("A larger step still keeps the error below 10%: refine your grid of steps (for instance "
                       "torch.logspace(-3, 2, 101)).")
    counts = _switched(eps)
    n = int(changed)
    if abs(n - counts["either"]) <= max(3, 0.01 * counts["either"]):
        return right("Your ε keeps the linear prediction within 10% and is close to the largest such step; the "
                     "count of switched units matches it.")
    if n == counts["all"]:
        return not_yet("That is the number of all ReLU units of block1; count only those whose state (z > 0) "
                       "differs from the unperturbed digit.")
    if n in (counts["on"], counts["off"]):
        return not_yet("Count the units that switched in either direction, off to on and on to off.")
    if abs(n - counts["pooled"]) <= max(3, 0.01 * counts["pooled"]):
        return not_yet("Count the ReLU units themselves, before max-pooling: the pre-activations "
                       "model64.block1.conv(z), 32 × 28 × 28 of them.")
    return not_yet("`changed` does not match the ReLU units of block1 that switch at your ε: compare "
                   "model64.block1.conv(x64 + ε g/|g|) > 0 with model64.block1.conv(x64) > 0.")


# ---------------------------------------------------------------------------- exercise 2
@exercise("ch01.2", "A black-box gradient",
          hint="Build the 784 unit images e_i (torch.eye(784) reshaped), evaluate the model on x + h e_i and "
               "x − h e_i without gradients, and divide the difference of the scores of class c by 2h.")
def check_central_difference(central_difference, passes) -> object:
    """``central_difference(model, x, c, h)``: the estimate shaped like ``x``; ``passes``: images it evaluates.

    It is called with h = 1e-7 on the chapter's noisy digit, where autograd's gradient is exact.
    """
    model, point, c = copy.deepcopy(_model(True)), _noisy_digit(), _digit()[1]
    evaluated = []
    hook = model.register_forward_hook(lambda module, inputs, output: evaluated.append(len(inputs[0])))
    try:
        estimate = central_difference(model, point.clone(), c, 1e-7)
    finally:
        hook.remove()
    estimate = torch.as_tensor(estimate).detach().double()
    if estimate.numel() != point.numel():
        return not_yet(f"The estimate should have one value per pixel, shaped like x {tuple(point.shape)}; yours "
                       f"has {estimate.numel()} values.")
    estimate = estimate.reshape(point.shape)
    reference = _grad(model, point, c)
    counted = sum(evaluated)
    if counted < 2 * point.numel():
        return not_yet(f"Your function sent {counted} images through the model; central differences need two "
                       "forward passes per pixel, and no backward pass.")
    if not _close(estimate, reference):
        if _close(estimate, 2 * reference, 1e-3):
            return not_yet("The estimate is twice the gradient: divide by 2h, the distance between x − h e_i "
                           "and x + h e_i.")
        if _close(estimate, -reference, 1e-3):
            return not_yet("The estimate has the wrong sign: f_c(x + h e_i) − f_c(x − h e_i), in that order.")
        if _close(estimate.transpose(-1, -2), reference, 1e-3):
            return not_yet("The estimate is transposed: the value of pixel (row, column) belongs at the same "
                           "position.")
        return not_yet("On the noisy digit (the chapter's `noisy`, no ties) the estimate should agree with "
                       "autograd to about 1e-6: check the score of class c and the step h e_i of one pixel.")
    if int(passes) != counted:
        if int(passes) == point.numel():
            return not_yet("`passes`: central differences evaluate the model twice per pixel, at x + h e_i and "
                           "at x − h e_i.")
        return not_yet("`passes` should be the number of images your function sends through the model; the "
                       "check counted a different number.")
    if counted > 2 * point.numel():
        return not_yet("The estimate is right, but central differences need exactly two forward passes per "
                       "pixel; yours makes more.")
    return right("Forward passes only, two per pixel, and on the noisy digit the estimate agrees with autograd. "
                 "(Your explanation of the difference on the digit is not checked.)")


# ---------------------------------------------------------------------------- exercise 3
@exercise("ch01.3", "Another class",
          hint="mnist_model(x).topk(2, dim=1) gives the two classes with the largest logits; explain the second "
               "with gradient(mnist_model, x, k).")
def check_second_class(second, saliency_second) -> object:
    """``second``: the class the model ranks second; ``saliency_second``: its signed saliency map."""
    model, (x, c) = _model(False), _digit()
    with torch.no_grad():
        ranked = model(x)[0].argsort(descending=True).tolist()
    k = int(second)
    if k != ranked[1]:
        if k == ranked[0]:
            return not_yet("That is the class the model ranks first, its prediction; take the next one.")
        if k == ranked[-2]:
            return not_yet("That is the second *smallest* logit: rank the classes from the largest logit down.")
        return not_yet("That is not the class with the second-largest logit of mnist_model(x).")
    answer = torch.as_tensor(saliency_second).detach().float()
    reference = _grad(model, x, k)
    if answer.numel() != reference.numel():
        return not_yet(f"`saliency_second` should be shaped like x, {tuple(x.shape)}.")
    answer = answer.reshape(reference.shape)
    if _close(answer, reference):
        return right("The class ranked second, and its signed saliency map. (Where it differs from the predicted "
                     "class's map is for you to describe; that part is not checked.)")
    if _close(answer, reference.abs()):
        return not_yet("Draw the signed map: the gradient itself, without abs.")
    if _close(answer, _grad(model, x, ranked[0])):
        return not_yet("That is the map of the predicted class; explain the class ranked second.")
    if _close(answer, x * reference):
        return not_yet("That is gradient × input; the saliency map is the plain gradient.")
    return not_yet("`saliency_second` should be gradient(mnist_model, x, second) for the chapter's digit x.")
