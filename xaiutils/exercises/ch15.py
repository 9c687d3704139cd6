"""Self-checks for chapter 15, Explaining transformers (notebooks/ch15_transformers.ipynb).

Every map of the chapter takes well under a second on the small vision transformers, so each check
recomputes its reference on the learner's machine from the same fixed images as the chapter: the 64
first ``shapes`` test images (or 64 first MNIST test digits) with their labels. Only the order of
sums differs between the learner's numbers and the reference, so they agree to 0.1%.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch.nn import functional as F

import xaiutils.evaluation as E
from xaiutils import data, zoo
from xaiutils.attribution import grad_cam, lrp, occlusion
from xaiutils.attribution.attention import attention_relevance, attention_rollout, raw_attention
from xaiutils.exercises import exercise, not_yet, number, numbers, right

N = 64
GRAD_CAM_LAYERS = tuple(f"encoder.layers.encoder_layer_{i}.ln_1" for i in range(3))
LAST_BLOCK = "encoder.layers.encoder_layer_2"
MNIST_METHODS = {"raw attention": raw_attention, "rollout": attention_rollout, "Chefer": attention_relevance,
                 "AttnLRP": lrp}


@lru_cache(maxsize=1)
def _shapes():
    test = data.shapes("test")
    return zoo.load("shapes-vit"), test.x[:N], test.y[:N], test.mask[:N]


@lru_cache(maxsize=1)
def _mnist():
    mnist = data.mnist()
    return zoo.load("mnist-vit"), mnist.x_test[:N], mnist.y_test[:N]


def patch_scores(attr: torch.Tensor, patch: int) -> torch.Tensor:
    """The chapter's patch relevance: a map summed over its channels and over each ``patch x patch`` square."""
    return F.avg_pool2d(attr.sum(1, keepdim=True), patch, divisor_override=1)


def _agreement(model, x, y, attr, patch) -> float:
    """Mean Spearman correlation, over the examples, between a map's and occlusion's patch relevance."""
    occluded = occlusion(model, x, y, window=(patch, patch), stride=patch).detach()
    return E.spearman(patch_scores(attr, patch), patch_scores(occluded, patch)).nanmean().item()


def _close(a: float, b: float, rtol: float = 1e-3, atol: float = 1e-6) -> bool:
    return math.isfinite(a) and abs(a - b) <= atol + rtol * abs(b)


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


# ---------------------------------------------------------------------------- exercise 1
@exercise("ch15.1", "Rollout with the weakest attention discarded",
          "attention_rollout(vit, x, discard_ratio=0.9) sets the smallest 90% of each fused attention matrix to 0 "
          "before the product. Compare its patch relevance (patch_scores(map, 8)) with occlusion's, as in the "
          "agreement table, by E.spearman per image, and average over the 64 images.")
def rollout_discarding(rho_discard, closer):
    rho_discard = number(rho_discard, "rho_discard")
    if not _is_bool(closer):
        return not_yet("`closer` should be True or False: does the rollout with discarding agree better with "
                       "occlusion than the plain rollout?")
    vit, x, y, _ = _shapes()
    reference = _agreement(vit, x, y, attention_rollout(vit, x, discard_ratio=0.9), 8)
    plain = _agreement(vit, x, y, attention_rollout(vit, x), 8)
    if not _close(rho_discard, reference):
        if _close(rho_discard, plain):
            return not_yet("That is the plain rollout's agreement; pass discard_ratio=0.9.")
        occluded = occlusion(vit, x, y, window=(8, 8), stride=8).detach()
        pixels = E.spearman(attention_rollout(vit, x, discard_ratio=0.9), occluded.sum(1, keepdim=True))
        if _close(rho_discard, pixels.nanmean().item()):
            return not_yet("That is the correlation over pixels; compare the 64 patch values (patch_scores(map, 8)) "
                           "of each image, as the chapter does.")
        return not_yet("`rho_discard` is not the reference: the mean over the 64 images of the Spearman correlation "
                       "between the patch relevance of the rollout (discard_ratio=0.9) and of occlusion (8x8 "
                       "windows, stride 8) for the labels y.")
    if bool(closer) != (reference > plain):
        return not_yet("Your correlation is right, but not `closer`: compare it with the rollout row of the "
                       "agreement table.")
    return right("The agreement is within 0.1% of the reference, and so is the comparison with the plain rollout.")


# ---------------------------------------------------------------------------- exercise 2
@exercise("ch15.2", "Grad-CAM on which token layer?",
          "grad_cam(vit, x, y, layer=name) for each name of the three blocks' ln_1; the mass accuracy of a map is "
          "E.relevance_mass_accuracy(map, mask), averaged over the 64 images. For the zero maps, look at "
          "grad_cam(..., layer='encoder.layers.encoder_layer_2') and count the maps whose largest value is 0.")
def grad_cam_layers(mass, zero_share):
    answer = numbers(mass, GRAD_CAM_LAYERS, "mass")
    if isinstance(answer, str):
        return not_yet(answer)
    zero_share = number(zero_share, "zero_share")
    vit, x, y, mask = _shapes()
    reference = {name: E.relevance_mass_accuracy(grad_cam(vit, x, y, layer=name).detach(), mask).nanmean().item()
                 for name in GRAD_CAM_LAYERS}
    for name in GRAD_CAM_LAYERS:
        if not _close(answer[name], reference[name]):
            wrong_layer = [other for other in GRAD_CAM_LAYERS if other != name and _close(answer[name],
                                                                                          reference[other])]
            if wrong_layer:
                return not_yet(f"mass[{name!r}] is the value of another layer ({wrong_layer[0]}); check the keys.")
            if _close(answer[name], 100 * reference[name]):
                return not_yet("The mass accuracy is a share between 0 and 1, not a percentage.")
            return not_yet(f"mass[{name!r}] is not the reference: the mean relevance mass accuracy of Grad-CAM at "
                           f"that layer against the object masks of the 64 images.")
    last = grad_cam(vit, x, y, layer=LAST_BLOCK).detach()
    zeros = (last.flatten(1).amax(1) == 0).float().mean().item()
    if not _close(zero_share, zeros, atol=1e-9):
        if _close(zero_share, zeros * N, atol=1e-9):
            return not_yet("That is a count; `zero_share` is the share of the 64 maps (between 0 and 1).")
        return not_yet("`zero_share` is not the share of the 64 maps at the last block's output that are zero "
                       "everywhere.")
    return right("All three mass accuracies and the share of zero maps match the reference.")


# ---------------------------------------------------------------------------- exercise 3
@exercise("ch15.3", "The same questions on the MNIST transformer",
          "mnist-vit has 4x4 patches: occlusion(vit, x, y, window=(4, 4), stride=4) and patch_scores(map, 4). For "
          "each of the four methods, the mean over the 64 digits of E.spearman between its patch relevance and "
          "occlusion's.")
def mnist_agreement(rho, same_order):
    answer = numbers(rho, MNIST_METHODS, "rho")
    if isinstance(answer, str):
        return not_yet(answer)
    if not _is_bool(same_order):
        return not_yet("`same_order` should be True or False: do Chefer's relevance and AttnLRP both agree better "
                       "with occlusion than raw attention and rollout, as on the shapes?")
    vit, x, y = _mnist()
    reference = {name: _agreement(vit, x, y, method(vit, x, y).detach(), 4) for name, method in MNIST_METHODS.items()}
    for name in MNIST_METHODS:
        if not _close(answer[name], reference[name]):
            shapes_like = _agreement(vit, x, y, MNIST_METHODS[name](vit, x, y).detach(), 7)
            if _close(answer[name], shapes_like):
                return not_yet(f"rho[{name!r}] uses 7x7 squares; the MNIST transformer's patches are 4x4 pixels.")
            return not_yet(f"rho[{name!r}] is not the reference: the mean over the 64 digits of the Spearman "
                           f"correlation between the patch relevance (4x4 squares) of {name} and of occlusion.")
    order = min(reference["Chefer"], reference["AttnLRP"]) > max(reference["raw attention"], reference["rollout"])
    if bool(same_order) != order:
        return not_yet("Your correlations are right, but not `same_order`: compare the smaller of Chefer's and "
                       "AttnLRP's with the larger of raw attention's and rollout's.")
    return right("All four correlations match the reference, and so does the comparison of the orders.")
