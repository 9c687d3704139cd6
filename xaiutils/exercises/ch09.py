"""Self-checks for the exercises of chapter 9, Axioms and sanity checks (notebooks/ch09_axioms_sanity.ipynb).

The references use the chapter's models (``mnist-standard``, ``mnist-random-labels``) and
:mod:`xaiutils.evaluation`. The checks of exercises 2 and 3 take the digits as ``x=x, y=y`` (the
chapter's 50 test digits); without them they load the first 50 MNIST test digits themselves, which
takes a few seconds more.
"""
from __future__ import annotations

from functools import lru_cache, partial

import numpy as np
import torch

from . import exercise, not_yet, right

CURVES = ("stays at 1", "falls partway", "falls to 0")
RESCALED = ("gradient", "gradient_x_input", "integrated_gradients", "lrp", "grad_cam")
ON_DIGIT = ("gradient_x_input", "integrated_gradients")


@lru_cache(maxsize=1)
def _models():
    from xaiutils import zoo

    return zoo.load("mnist-standard"), zoo.load("mnist-random-labels")


@lru_cache(maxsize=1)
def _digits():
    from xaiutils import data

    mnist = data.mnist()
    return mnist.x_test[:50], mnist.y_test[:50]


def _inputs(x, y):
    if x is None or y is None:
        return _digits()
    return x, y


# ---------------------------------------------------------------------------- exercise 1
def _test_images() -> torch.Tensor:
    """Three fixed 28 x 28 images with edges in both directions: a square, a bar and seeded noise."""
    images = torch.zeros(3, 1, 28, 28)
    images[0, 0, 8:20, 6:18] = 1.0
    images[1, 0, 4:24, 12:15] = 0.7
    images[2, 0] = torch.rand(28, 28, generator=torch.Generator().manual_seed(0))
    return images


def _edges(images: torch.Tensor, axes=(0, 1)) -> torch.Tensor:
    """Sobel edge magnitude of each image on its own (the reference), or one axis of it."""
    from scipy import ndimage

    out = []
    for image in images[:, 0].double().numpy():
        parts = [ndimage.sobel(image, axis=axis) for axis in axes]
        out.append(np.hypot(*parts) if len(parts) == 2 else np.abs(parts[0]))
    return torch.from_numpy(np.stack(out))[:, None]


def _same_up_to_scale(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.double().flatten(1), b.double().flatten(1)
    a = a / a.abs().amax(1, keepdim=True).clamp_min(1e-12)
    b = b / b.abs().amax(1, keepdim=True).clamp_min(1e-12)
    return bool(torch.allclose(a, b, atol=1e-5))


@exercise("ch09.1", "An edge detector",
          "The edge map is np.hypot of scipy.ndimage.sobel along the two image axes of one 2-D image; it never "
          "looks at the model. What does a map that ignores the model do when the model's weights are destroyed?")
def check_edge_detector(sobel, curve):
    import xaiutils.evaluation as E

    model, _ = _models()
    images = _test_images()
    target = torch.zeros(len(images), dtype=torch.long)
    out = sobel(model, images, target)
    if not isinstance(out, torch.Tensor):
        return not_yet(f"sobel must return a torch tensor, like every method of the chapter; got {type(out).__name__}.")
    if out.shape != images.shape:
        return not_yet(f"sobel must return a map of x's shape {tuple(images.shape)} (with the channel axis); "
                       f"got {tuple(out.shape)}.")
    alone = torch.cat([sobel(model, images[i:i + 1], target[i:i + 1]) for i in range(len(images))])
    if not torch.allclose(out.double(), alone.double(), atol=1e-6):
        return not_yet("the map of one image depends on the other images of the batch: scipy's sobel also smooths "
                       "along every other axis of the array, the batch axis included. Apply it to each image "
                       "(a 2-D array) on its own.")
    if not _same_up_to_scale(out, _edges(images)):
        if any(_same_up_to_scale(out.abs(), _edges(images, (axis,))) for axis in (0, 1)):
            return not_yet("this finds the edges in one direction only: combine the Sobel filters along both image "
                           "axes (the gradient magnitude, np.hypot).")
        return not_yet("the map is not the Sobel edge magnitude of the image: np.hypot of ndimage.sobel along the "
                       "rows and along the columns of each 28 x 28 image.")
    if curve not in CURVES:
        return not_yet(f"curve must be one of {', '.join(repr(c) for c in CURVES)}; got {curve!r}.")
    table = E.model_randomisation(model, images, target, {"sobel": sobel}, progress=False)
    expected = "stays at 1" if (table["value"] > 0.999).all() else None
    if curve != expected:
        return not_yet("run the randomisation test with your edge map and look at the similarity at each step: "
                       "does anything in the map depend on the weights?")
    return right("Like the input itself, an edge map never looks at the model, so it passes visual inspection and "
                 "fails the randomisation test completely.")


# ---------------------------------------------------------------------------- exercise 2
def _panel():
    from xaiutils.attribution import grad_cam, gradient, gradient_x_input, integrated_gradients, lrp

    return {"gradient": gradient, "gradient_x_input": gradient_x_input,
            "integrated_gradients": partial(integrated_gradients, steps=16), "lrp": lrp, "grad_cam": grad_cam}


@exercise("ch09.2", "Implementation invariance",
          "E.implementation_invariance returns, per digit, the largest difference relative to the map's maximum. "
          "A difference at the level of float32 rounding (below 1e-4) is not noticing the rewrite.")
def check_implementation_invariance(noticed, *, x=None, y=None):
    import xaiutils.evaluation as E

    if isinstance(noticed, str) or not hasattr(noticed, "__iter__"):
        return not_yet("noticed must be a set of method names, e.g. {'gradient'}, or set() for none.")
    noticed = set(noticed)
    unknown = noticed - set(RESCALED)
    if unknown:
        return not_yet(f"unknown names {sorted(unknown)}: use the chapter's names {', '.join(RESCALED)}.")
    model, _ = _models()
    x, y = _inputs(x, y)
    x, y = x[:8], y[:8]
    rescaled = E.rescaled_copy(model, "block1.conv", scale=10.0)
    difference = {name: E.implementation_invariance(method, model, rescaled, x, y).max().item()
                  for name, method in _panel().items()}
    reference = {name for name, value in difference.items() if value > 1e-4}
    if noticed == reference:
        if reference:
            return right("The other methods are unchanged by the rewrite, up to float32 rounding.")
        return right("All five maps are unchanged up to float32 rounding: the two networks have the same gradients, "
                     "and LRP's rules see this rescaling only through their tiny stabilisers.")
    extra, missing = sorted(noticed - reference), sorted(reference - noticed)
    if extra:
        return not_yet(f"measure it: the maps of {', '.join(extra)} differ by no more than float32 rounding "
                       "(below 1e-4 of their maximum), so they do not notice the rewrite.")
    return not_yet(f"{', '.join(missing)}: measure E.implementation_invariance for it; its maps differ by more "
                   "than float32 rounding.")


# ---------------------------------------------------------------------------- exercise 3
def _on_digit(x, y, *, absolute=True, digit_only=True) -> dict[str, float]:
    """Mean over digits of the Spearman correlation between the two models' maps, on the digit's pixels."""
    from scipy.stats import spearmanr

    from xaiutils.attribution import gradient_x_input, integrated_gradients

    model, random_model = _models()
    methods = {"gradient_x_input": gradient_x_input,
               "integrated_gradients": partial(integrated_gradients, steps=16)}
    result = {}
    for name, method in methods.items():
        a, b = method(model, x, y).detach(), method(random_model, x, y).detach()
        if absolute:
            a, b = a.abs(), b.abs()
        values = []
        for i in range(len(x)):
            keep = x[i] > 0 if digit_only else torch.ones_like(x[i], dtype=torch.bool)
            values.append(spearmanr(a[i][keep], b[i][keep])[0])
        result[name] = float(np.nanmean(values))
    return result


@exercise("ch09.3", "Only the digit",
          "For each digit, keep the pixels where x > 0, rank |map| of the trained and of the random-label model "
          "there, and correlate; average over the 50 digits. Compare with the whole-image values of the chapter.")
def check_only_the_digit(on_digit, still_insensitive, *, x=None, y=None):
    if not hasattr(on_digit, "keys") or not set(ON_DIGIT) <= set(on_digit.keys()):
        return not_yet(f"on_digit must be a dict with the keys {', '.join(ON_DIGIT)}.")
    answer = {name: float(on_digit[name]) for name in ON_DIGIT}
    if any(np.isnan(value) for value in answer.values()):
        return not_yet("NaN: a digit whose map is constant on its pixels has no ranking; average with np.nanmean.")
    x, y = _inputs(x, y)
    reference = _on_digit(x, y)
    tolerance = 0.01
    for name in ON_DIGIT:
        if abs(answer[name] - reference[name]) <= tolerance:
            continue
        if abs(answer[name] - _on_digit(x, y, absolute=False)[name]) <= tolerance:
            return not_yet(f"{name}: this is the signed correlation; the exercise compares absolute values, |map|.")
        if abs(answer[name] - _on_digit(x, y, digit_only=False)[name]) <= tolerance:
            return not_yet(f"{name}: this is the whole-image value; keep only the pixels where the digit is not "
                           "black (x > 0).")
        return not_yet(f"{name}: differs from the reference by more than {tolerance}: per digit, the Spearman "
                       "correlation of |map| of the two models on the pixels where x > 0 (the chapter's SANITY "
                       "methods, integrated gradients with 16 steps), then the mean over the digits.")
    if not isinstance(still_insensitive, (bool, np.bool_)):
        return not_yet("still_insensitive must be True or False.")
    whole = _on_digit(x, y, digit_only=False)
    insensitive = all(reference[name] >= 0.5 * whole[name] for name in ON_DIGIT)
    if bool(still_insensitive) != insensitive:
        return not_yet("your numbers are right, but the verdict does not follow from them: compare each with half "
                       "its whole-image value (data_wide, column spearman_abs).")
    return right("Without the black background the similarity falls far below the whole-image value: "
                 "the maps do depend on the model, and the background had hidden it.")
