"""Self-checks for chapter 12, Fragile explanations (notebooks/ch12_fragile.ipynb).

The attacks and the fine-tuning of the chapter take minutes and their results differ between CPUs
in the last digits, which the optimisation amplifies. The checks therefore take what the chapter
optimised (the manipulated digits, the attacked digits, the fine-tuned network) as arguments and
recompute everything after it on the learner's machine: the learner's numbers and the reference
come from the same inputs.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

import xaiutils.evaluation as E
from xaiutils import data, models, zoo
from xaiutils.adversarial import beta_smoothed, saliency_map
from xaiutils.attribution import grad_cam, gradient, smoothgrad
from xaiutils.exercises import exercise, not_yet, number, right


@lru_cache(maxsize=1)
def _setting():
    return zoo.load("mnist-standard"), data.mnist()



def _close(a: float, b: float, rtol: float = 1e-3, atol: float = 1e-6) -> bool:
    # the reference is computed on the learner's machine from the same inputs: only the order of a sum differs
    return math.isfinite(a) and abs(a - b) <= atol + rtol * abs(b)


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


# ---------------------------------------------------------------------------- exercise 1
def _relative_error(s, target):
    return ((s - target).flatten(1).pow(2).sum(1) / target.flatten(1).pow(2).sum(1)).mean().item()


@exercise("ch12.1", "Attack the defence by transfer",
          "Inside `with beta_smoothed(model, 3.0):` compute saliency_map(model, x', labels) at the digits "
          "manipulated against the ReLU network, and its relative_error to target_maps, averaged over the 8 "
          "digits; then compare it with the 'map error after' of the beta = 3 row of the defence table.")
def attack_by_transfer(transferred, further, *, x_manipulated, adaptive):
    transferred, adaptive = number(transferred, "transferred"), number(adaptive, "adaptive")
    if not _is_bool(further):
        return not_yet("`further` should be True or False: is the smoothed map further from the target after the "
                       "transferred manipulation than after the adaptive attack?")
    model, mnist = _setting()
    xd = mnist.x_test[:8]
    xm = torch.as_tensor(x_manipulated).detach()
    if xm.shape != xd.shape or (xm - xd).abs().max() > 0.1 + 1e-5:
        return not_yet("Pass the digits manipulated within the budget: x_manipulated=manipulated[\"|delta|_inf <= "
                       "0.1\"] (8 digits, each pixel within 0.1 of the original).")
    with torch.no_grad():
        labels = model(xd).argmax(1)
    target_maps = saliency_map(model, xd.roll(1, 0), labels.roll(1, 0))

    def error(beta, inputs):
        if beta is None:
            return _relative_error(saliency_map(model, inputs, labels), target_maps)
        with beta_smoothed(model, beta):
            return _relative_error(saliency_map(model, inputs, labels), target_maps)

    reference = error(3.0, xm)
    if not _close(transferred, reference):
        if _close(transferred, error(None, xm)):
            return not_yet("That is the error of the ReLU network's map; compute the map inside "
                           "`with beta_smoothed(model, 3.0):`.")
        if _close(transferred, error(3.0, xd)):
            return not_yet("That is the smoothed map at the clean digits xd; use the manipulated digits.")
        if _close(transferred, 8 * reference):
            return not_yet("That is the sum over the 8 digits; average the relative error over them.")
        for beta in (30.0, 10.0, 1.0):
            if _close(transferred, error(beta, xm)):
                return not_yet("That is the error for another beta; the exercise asks for beta = 3.")
        return not_yet("`transferred` is not the reference value: the relative error (the chapter's "
                       "relative_error) of the beta = 3 map at the manipulated digits to target_maps, averaged "
                       "over the 8 digits.")
    if bool(further) != (reference > adaptive):
        return not_yet("Your error is right, but not the verdict `further`: compare it with the adaptive attack's "
                       "'map error after' for beta = 3 (a larger error is further from the target).")
    return right("The error is within 0.1% of the reference and the comparison with the adaptive attack holds.")


# ---------------------------------------------------------------------------- exercise 2
EPSILONS = [0.01, 0.02, 0.05, 0.1]
K = 50


def _by_epsilon(answer, name):
    if not hasattr(answer, "keys"):
        return f"`{name}` should be a dict from each epsilon of the Ghorbani table ({EPSILONS}) to a number."
    values = {}
    for key, value in answer.items():
        match = [e for e in EPSILONS if abs(float(key) - e) < 1e-9]
        if not match:
            return f"`{name}` has the key {key!r}; its keys should be the epsilons {EPSILONS}."
        values[match[0]] = number(value, f"{name}[{key!r}]")
    if set(values) != set(EPSILONS):
        return f"`{name}` should have one value for every epsilon {EPSILONS}."
    return values


@exercise("ch12.2", "Attack SmoothGrad",
          "SmoothGrad with 16 samples is PANEL['smoothgrad']; compare its map at xg with its map at "
          "attacked['gradient', 'top-k attack', epsilon] by E.top_k_intersection(..., K), averaged over the 16 "
          "digits, for the predicted classes. The gradient's numbers are in the Ghorbani table.")
def attack_smoothgrad(kept_sg, protects, *, attacked):
    answer = _by_epsilon(kept_sg, "kept_sg")
    if isinstance(answer, str):
        return not_yet(answer)
    if not _is_bool(protects):
        return not_yet("`protects` should be True or False: does SmoothGrad keep more of its top pixels than the "
                       "gradient at every epsilon?")
    model, mnist = _setting()
    xg = mnist.x_test[:16]
    with torch.no_grad():
        predicted = model(xg).argmax(1)

    def sg(inputs):
        return smoothgrad(gradient, model, inputs, predicted, samples=16).detach()

    sg0, s0 = sg(xg), saliency_map(model, xg, predicted)
    plain = {}
    for epsilon in EPSILONS:
        xp = torch.as_tensor(attacked["gradient", "top-k attack", epsilon]).detach()
        reference = E.top_k_intersection(sg0, sg(xp), K).mean().item()
        plain[epsilon] = E.top_k_intersection(s0, saliency_map(model, xp, predicted), K).mean().item()
        if _close(answer[epsilon], reference):
            continue
        if _close(answer[epsilon], plain[epsilon]):
            return not_yet(f"kept_sg[{epsilon}] is the gradient's top-k intersection; compute SmoothGrad's maps at "
                           "xg and at the attacked digits.")
        xr = torch.as_tensor(attacked["gradient", "random sign", epsilon]).detach()
        if _close(answer[epsilon], E.top_k_intersection(sg0, sg(xr), K).mean().item()):
            return not_yet(f"kept_sg[{epsilon}] uses the random sign control; use the top-k attack's digits.")
        if 0 <= answer[epsilon] <= 1 and _close(answer[epsilon], reference, rtol=0.1):
            return not_yet(f"kept_sg[{epsilon}] is close but not equal to the reference: use SmoothGrad with "
                           "samples=16 (PANEL['smoothgrad']) and the predicted classes.")
        return not_yet(f"kept_sg[{epsilon}] is not the reference value: the top-k intersection (k = {K}) between "
                       "SmoothGrad's map at xg and at the top-k attacked digits, averaged over the 16 digits.")
    if bool(protects) != all(answer[e] > plain[e] for e in EPSILONS):
        return not_yet("Your intersections are right, but not the verdict `protects`: compare them with the "
                       "gradient's top-k intersection under the same attack, epsilon by epsilon.")
    return right("The four intersections are within 0.1% of the reference and the verdict holds.")


# ---------------------------------------------------------------------------- exercise 3
def _corner() -> torch.Tensor:
    corner = torch.zeros(1, 1, 28, 28, dtype=torch.bool)
    corner[..., :7, :7] = True
    return corner


@exercise("ch12.3", "A larger budget for Heo",
          "Measure the fine-tuned network as the chapter measured `fooled`: models.accuracy on the first 2,000 "
          "test digits; on the first 200, the share of Grad-CAM maps that are zero everywhere, and for the others "
          "the share of the positive mass in the corner (the chapter's `share`).")
def heo_budget(accuracy8, zero8, corner8, *, model):
    answer = {name: number(value, name) for name, value in
              [("accuracy8", accuracy8), ("zero8", zero8), ("corner8", corner8)]}
    original, mnist = _setting()
    if not isinstance(model, torch.nn.Module):
        return not_yet("Pass the network you fine-tuned for 8 epochs: model=fooled8.")
    theirs, ours = model.state_dict(), original.state_dict()
    if theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours):
        return not_yet("That is the original network; pass the one manipulate_model returned (model=fooled8).")
    accuracy = models.accuracy(model, mnist.x_test[:2000], mnist.y_test[:2000])
    if not _close(answer["accuracy8"], accuracy):
        if _close(answer["accuracy8"], 100 * accuracy):
            return not_yet("Give the accuracy as a fraction, not in percent.")
        if _close(answer["accuracy8"], models.accuracy(original, mnist.x_test[:2000], mnist.y_test[:2000])):
            return not_yet("`accuracy8` is the original network's accuracy; measure the fine-tuned one.")
        return not_yet("`accuracy8` is not the accuracy of this network on the first 2,000 test digits.")
    xh, yh = mnist.x_test[:200], mnist.y_test[:200]
    h = grad_cam(model, xh, yh).detach()
    on = h.flatten(1).amax(1) > 0
    zero = 1 - on.float().mean().item()
    if not _close(answer["zero8"], zero):
        if _close(answer["zero8"], 1 - zero):
            return not_yet("`zero8` is the share of maps that are *not* zero everywhere; take its complement.")
        return not_yet("`zero8` is not the share of this network's Grad-CAM maps that are zero everywhere, on the "
                       "first 200 test digits for their labels.")
    corner = _corner()
    mass = E.relevance_mass_accuracy(h[on], corner.expand_as(h[on])).nanmean().item()
    if math.isnan(answer["corner8"]):
        return not_yet("`corner8` is NaN: leave out the maps that are zero everywhere (they have no positive mass).")
    if not _close(answer["corner8"], mass):
        if _close(answer["corner8"], E.relevance_mass_accuracy(h[on], xh[on] > 0.5).nanmean().item()):
            return not_yet("`corner8` is the mass on the digit; the exercise asks for the mass in the corner.")
        return not_yet("`corner8` is not the share of the positive Grad-CAM mass in the top-left 7 x 7 corner, "
                       "averaged over the maps that are not zero everywhere.")
    return right("The three numbers match the network you passed (within 0.1%); the check cannot see how many "
                 "epochs it was trained for.")
