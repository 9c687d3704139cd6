"""Self-checks for chapter 6, attribution propagation: LRP and DeepLIFT (notebooks/ch06_propagation.ipynb).

1. LRP-0 by hand: a function computing LRP-0 for f(x) = v.ReLU(Wx), and what needs the biases to be zero.
2. The γ knob: negative share and cosine with z⁺ for each γ, and the rules γ = 0 and γ → ∞ become.
3. DeepLIFT with another reference: the share of |φ| on black pixels and the summation gaps, for a black
   image and the mean training digit.

The references are computed with :func:`xaiutils.attribution.lrp` and :func:`~xaiutils.attribution.deeplift`
on a small fixed network or on the chapter's model and digits.
"""
from __future__ import annotations

import math
from functools import cache

import torch
from torch import nn
from torch.nn import functional as F

from . import exercise, not_yet, right

GAMMAS = (0.0, 0.25, 1.0, 10.0, 1000.0)
VERDICTS = ("equivalence", "conservation", "both", "neither")
RULE_NAMES = {"epsilon": "epsilon", "lrp_0": "epsilon", "lrp0": "epsilon", "lrp_epsilon": "epsilon",
              "ε": "epsilon", "lrp_ε": "epsilon", "zplus": "zplus", "z+": "zplus", "z⁺": "zplus",
              "z_plus": "zplus", "alpha_beta": "alpha_beta", "alphabeta": "alpha_beta", "αβ": "alpha_beta",
              "flat": "flat"}
REFERENCES = ("black image", "mean digit")


def _name(answer) -> str:
    return str(answer).strip().lower().replace("-", "_").replace(" ", "_")


def _keyed(answer, keys, name: str, what: str):
    """A mapping as a dict of floats keyed by ``keys`` (numbers or strings), or a not_yet Feedback."""
    if not hasattr(answer, "items"):
        return not_yet(f"{name} should be a dict {what}; got {type(answer).__name__}.")
    values = {(float(k) if isinstance(k, (int, float)) else k): v for k, v in answer.items()}
    missing = [k for k in keys if k not in values]
    if missing:
        return not_yet(f"{name} should have one entry for each of {list(keys)}; missing {missing}.")
    try:
        return {k: float(values[k]) for k in keys}
    except (TypeError, ValueError):
        return not_yet(f"the values of {name} should be numbers.")


def _near(answer: dict, reference: dict, atol: float = 0.01) -> bool:
    return all(abs(answer[k] - reference[k]) <= atol for k in reference)


# ---------------------------------------------------------------------------- exercise 1
@cache
def _lrp0_case():
    """A one-hidden-layer ReLU network, with and without biases, and its LRP-0 by the library."""
    from xaiutils.attribution import gradient_x_input, lrp

    generator = torch.Generator().manual_seed(0)
    W = torch.randn(8, 6, generator=generator, dtype=torch.float64)
    v = torch.randn(8, generator=generator, dtype=torch.float64)
    x = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1)).double().eval()
    with torch.no_grad():
        net[0].weight.copy_(W), net[2].weight.copy_(v[None])
        net[0].bias.copy_(torch.randn(8, generator=generator, dtype=torch.float64))
        net[2].bias.fill_(0.5)
    biased = {"equivalence": torch.allclose(lrp(net, x, 0, composite="epsilon", epsilon=1e-12),
                                            gradient_x_input(net, x, 0), atol=1e-9),
              "conservation": torch.allclose(lrp(net, x, 0, composite="epsilon", epsilon=1e-12).sum(1),
                                             net(x)[:, 0].detach(), atol=1e-9)}
    failing = [name for name, holds in biased.items() if not holds]
    verdict = {0: "neither", 1: failing[0] if failing else None, 2: "both"}[len(failing)]
    with torch.no_grad():
        net[0].bias.zero_(), net[2].bias.zero_()
    return W, v, x, lrp(net, x, 0, composite="epsilon", epsilon=1e-12), verdict


@exercise("ch06.1", "LRP-0 by hand",
          "Start at the output with R_j = v_j a_j, pass it down with the fractions z_ij / z_j of eq-lrp0, and "
          "remember that a unit with z_j <= 0 has a_j = 0. For the biases, try your derivation on a network with "
          "biases: which of the two equalities still holds?")
def check_lrp0_by_hand(lrp0, needs_zero_biases):
    W, v, x, reference, verdict = _lrp0_case()
    answer = lrp0(W.clone(), v.clone(), x.clone())
    answer = torch.as_tensor(answer, dtype=torch.float64)
    if tuple(answer.shape) != tuple(x.shape):
        return not_yet(f"lrp0(W, v, x) should return one relevance per input feature, shape {tuple(x.shape)} for "
                       f"W of shape {tuple(W.shape)} and x of shape {tuple(x.shape)}; got {tuple(answer.shape)}.")
    if not torch.allclose(answer, reference, rtol=1e-6, atol=1e-9):
        z = x @ W.T
        if torch.allclose(answer, x * (v @ W), rtol=1e-6, atol=1e-9):
            return not_yet("lrp0 passes relevance through every hidden unit: a unit with z_j <= 0 is off "
                           "(a_j = 0) and passes none.")
        if torch.allclose(answer, (z > 0).double() * v @ W, rtol=1e-6, atol=1e-9):
            return not_yet("lrp0 returns the gradient of f, not relevance: the contributions z_ij = x_i w_ji "
                           "carry the input.")
        if torch.allclose(answer, -reference, rtol=1e-6, atol=1e-9):
            return not_yet("lrp0 has the wrong sign: the relevance should add up to +f(x).")
        return not_yet("lrp0 does not match LRP-0 on a small bias-free network: check that the relevance of the "
                       "output layer, R_j = v_j a_j, adds up to f(x), and that each layer's relevance keeps its sum.")
    if _name(needs_zero_biases) not in VERDICTS:
        return not_yet(f"lrp0 is right. needs_zero_biases should be one of {list(VERDICTS)}; "
                       f"got {needs_zero_biases!r}.")
    if _name(needs_zero_biases) != verdict:
        return not_yet("lrp0 is right, but needs_zero_biases is not: with biases, is LRP-0 still equal to "
                       "x * grad f, and does its relevance still add up to f(x)? Try it on a network with biases.")
    return right("lrp0 matches LRP-0 of the library and x * grad f on a small bias-free network, and you have "
                 "found which of the two properties the biases break.")


# ---------------------------------------------------------------------------- exercise 2
@cache
def _digits():
    from xaiutils import data, zoo

    mnist = data.mnist()
    return zoo.load("mnist-standard"), mnist.x_test[:8], mnist.y_test[:8], mnist.x_train


def _cosine(a, b) -> float:
    return F.cosine_similarity(a.flatten(1), b.flatten(1)).mean().item()


@cache
def _gamma_reference() -> dict:
    from xaiutils.attribution import lrp
    from xaiutils.attribution.lrp import Composite, alpha_beta_rule, epsilon_rule, zbox_rule, zplus_rule

    model, x, y, _ = _digits()
    eps, box = epsilon_rule(1e-6), zbox_rule(0.0, 1.0)
    candidates = {name: lrp(model, x, y, composite=Composite(dense=eps, conv=rule, first=box, first_on="conv"))
                  for name, rule in [("epsilon", eps), ("zplus", zplus_rule()),
                                     ("alpha_beta", alpha_beta_rule(2.0, 1.0))]}
    named_plus = lrp(model, x, y, composite="epsilon_plus")
    result = {"negative": {}, "cosine": {}, "negative_pixels": {}, "cosine_named": {}, "limits": {}}
    for gamma in GAMMAS:
        relevance = lrp(model, x, y, composite="epsilon_gamma_box", gamma=gamma, low=0.0, high=1.0)
        flat = relevance.flatten(1)
        result["negative"][gamma] = (flat.clamp(max=0).abs().sum(1) / flat.abs().sum(1)).mean().item()
        result["negative_pixels"][gamma] = (flat < 0).double().mean().item()
        result["cosine"][gamma] = _cosine(relevance, candidates["zplus"])
        result["cosine_named"][gamma] = _cosine(relevance, named_plus)
        if gamma in (GAMMAS[0], GAMMAS[-1]):
            similarity = {name: _cosine(relevance, other) for name, other in candidates.items()}
            result["limits"][0.0 if gamma == GAMMAS[0] else math.inf] = max(similarity, key=similarity.get)
    return result


@exercise("ch06.2", "The γ knob",
          "Change only gamma of epsilon_gamma_box (with low=0.0, high=1.0), and compare each map with one z+ map "
          "whose first layer is z^B as well; for the limits, write out the gamma rule's contributions for gamma = 0 "
          "and for a very large gamma.")
def check_gamma_knob(gamma_negative, gamma_cosine, gamma_limits):
    negative = _keyed(gamma_negative, GAMMAS, "gamma_negative", "{gamma: share of |R| that is negative}")
    if not isinstance(negative, dict):
        return negative
    cosine = _keyed(gamma_cosine, GAMMAS, "gamma_cosine", "{gamma: cosine similarity with the z+ map}")
    if not isinstance(cosine, dict):
        return cosine
    reference = _gamma_reference()
    if not _near(negative, reference["negative"]):
        if _near({g: s / 100 for g, s in negative.items()}, reference["negative"]):
            return not_yet("gamma_negative looks like percentages; give fractions (0.1 for 10%).")
        if _near(negative, reference["negative_pixels"]):
            return not_yet("gamma_negative counts negative pixels; the exercise asks for the share of |R|, the sum "
                           "of |R| over the negative entries divided by the sum of |R|.")
        return not_yet("gamma_negative does not match the reference (within 0.01): use the eight digits x_mnist with "
                       "their labels, epsilon_gamma_box with low=0.0 and high=1.0, and average the share over the "
                       "digits.")
    if not _near(cosine, reference["cosine"]):
        if _near(cosine, reference["cosine_named"]):
            return not_yet("gamma_cosine compares with the named epsilon_plus composite, whose first layer is z+: "
                           "compare with a z+ map that has z^B on the first convolution, as epsilon_gamma_box does.")
        return not_yet("gamma_cosine does not match the reference (within 0.01): take the cosine similarity of each "
                       "digit's map with its z+ map (z^B first), then the mean over the eight digits.")
    if not hasattr(gamma_limits, "items"):
        return not_yet("gamma_limits should be a dict {0: rule name, 'infinity': rule name}.")
    limits = {}
    for key, value in gamma_limits.items():
        if _name(key) in ("inf", "infinity", "∞"):
            key = math.inf
        rule = _name(value).removesuffix("_rule")
        limits[float(key) if isinstance(key, (int, float)) else key] = RULE_NAMES.get(rule, rule)
    if set(limits) != {0.0, math.inf}:
        return not_yet("gamma_negative and gamma_cosine are right. gamma_limits should have the keys 0 and "
                       "'infinity'.")
    for key, label in [(0.0, "gamma = 0"), (math.inf, "gamma -> infinity")]:
        if limits[key] not in set(RULE_NAMES.values()):
            return not_yet(f"gamma_limits for {label} should name a rule of the chapter's table: epsilon (LRP-0), "
                           f"zplus, alpha_beta or flat; got {limits[key]!r}.")
        if limits[key] != reference["limits"][key]:
            return not_yet(f"gamma_negative and gamma_cosine are right, but the rule for {label} is not: write the "
                           f"contributions a_i (w_ij + gamma w_ij+) for that gamma.")
    return right("The negative shares and the cosine similarities match the reference within 0.01, and both limits "
                 "are right.")


# ---------------------------------------------------------------------------- exercise 3
@cache
def _deeplift_reference() -> dict:
    from xaiutils.attribution import deeplift

    model, x, y, x_train = _digits()
    black = x == 0
    result = {"on_black": {}, "signed": {}, "gap": {}}
    references = {"black image": torch.zeros_like(x[:1]), "mean digit": x_train.mean(0, keepdim=True),
                  "mean of the eight": x.mean(0, keepdim=True)}
    for name, reference in references.items():
        phi = deeplift(model, x, y, baseline=reference)
        result["on_black"][name] = ((phi.abs() * black).flatten(1).sum(1) / phi.abs().flatten(1).sum(1)).mean().item()
        result["signed"][name] = ((phi * black).flatten(1).sum(1) / phi.flatten(1).sum(1)).mean().item()
    return result


@exercise("ch06.3", "DeepLIFT with another reference",
          "Pass each reference as deeplift's baseline, and compute the delta against that same reference; the "
          "share on black pixels is sum |phi| over the pixels where the digit is 0, over sum |phi|.")
def check_deeplift_reference(on_black, summation_gap):
    shares = _keyed(on_black, REFERENCES, "on_black", "{'black image': share, 'mean digit': share}")
    if not isinstance(shares, dict):
        return shares
    gaps = _keyed(summation_gap, REFERENCES, "summation_gap",
                  "{'black image': largest relative gap, 'mean digit': largest relative gap}")
    if not isinstance(gaps, dict):
        return gaps
    reference = _deeplift_reference()
    expected = {name: reference["on_black"][name] for name in REFERENCES}
    if not _near(shares, expected):
        swapped = {REFERENCES[0]: shares[REFERENCES[1]], REFERENCES[1]: shares[REFERENCES[0]]}
        if _near({k: v / 100 for k, v in shares.items()}, expected):
            return not_yet("on_black looks like percentages; give fractions (0.1 for 10%).")
        if _near(swapped, expected):
            return not_yet("on_black has the two references swapped.")
        if abs(shares["mean digit"] - reference["on_black"]["mean of the eight"]) <= 0.01:
            return not_yet("on_black['mean digit'] uses the mean of the eight digits explained; the reference is the "
                           "mean training digit (mnist.x_train).")
        if abs(shares["mean digit"] - reference["signed"]["mean digit"]) <= 0.01:
            return not_yet("on_black['mean digit'] uses the signed phi; the share is one of |phi|.")
        if shares["black image"] != 0 and abs(shares["black image"]) > 0.01:
            return not_yet("on_black['black image'] is not zero: what is x_i - x'_i on a black pixel when the "
                           "reference is black?")
        return not_yet("on_black['mean digit'] does not match the reference (within 0.01): use DeepLIFT-Rescale on "
                       "x_mnist with their labels, the mean training digit as baseline, and average the share over "
                       "the eight digits.")
    if any(g < 0 for g in gaps.values()):
        return not_yet("summation_gap should hold |sum phi - delta| / |delta|, which cannot be negative.")
    if any(g > 1e-4 for g in gaps.values()):
        return not_yet("on_black is right, but summation_gap shows a gap above 1e-4 of the delta: compute "
                       "delta = f_c(x) - f_c(x') with the same reference x' that DeepLIFT used.")
    return right("The shares on black pixels match the reference within 0.01, and DeepLIFT sums to delta against "
                 "both references (to 1e-4); why a black pixel can be credited against the mean digit is for you to "
                 "explain.")
