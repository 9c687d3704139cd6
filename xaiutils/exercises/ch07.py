"""Self-checks for the exercises of chapter 7, Class activation maps (notebooks/ch07_cam.ipynb).

The references are computed here with :mod:`xaiutils.attribution` on the chapter's ShapesResNet
(``zoo.load("shapes-standard")``) and the shapes test images, exactly as the exercises specify them.
"""
from __future__ import annotations

from functools import lru_cache
from numbers import Real

import torch

from . import exercise, not_yet, right


@lru_cache(maxsize=1)
def _shapes():
    """The shapes test split and the chapter's model (generated and loaded once per session)."""
    from xaiutils import data, zoo

    return data.shapes("test"), zoo.load("shapes-standard")


def _count(value, name: str) -> int:
    """A count given as an int, a numpy integer or a one-element tensor."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number (a count of image-class pairs), got {type(value).__name__}")
    if float(value) != int(value):
        raise ValueError(f"{name} must be a whole number of image-class pairs, got a fraction")
    return int(value)


def _number(mapping, key: str) -> float:
    if key not in mapping:
        raise KeyError(f"the answer has no entry {key!r}")
    value = mapping[key]
    return float(value.item() if isinstance(value, torch.Tensor) else value)


# ---------------------------------------------------------------------------- exercise 1
def _empty_counts(use_labels: bool = False) -> tuple[int, int]:
    """Empty Grad-CAM maps (default layer) of the first 50 test images: (explained class, other classes)."""
    from xaiutils.attribution import grad_cam

    shapes, model = _shapes()
    x = shapes.x[:50]
    with torch.no_grad():
        chosen = shapes.y[:50] if use_labels else model(x).argmax(1)
    empty = torch.stack([grad_cam(model, x, k).flatten(1).amax(1) == 0 for k in range(4)], dim=1)
    mine = torch.nn.functional.one_hot(chosen, 4).bool()
    return int(empty[mine].sum()), int(empty[~mine].sum())


@exercise("ch07.1", "Empty maps",
          "A map is empty when its largest value is exactly 0. Compute Grad-CAM for each of the four classes, "
          "then split the 200 image-class pairs by whether the class is the model's prediction.")
def check_empty_maps(empty_predicted, empty_other):
    try:
        answer = (_count(empty_predicted, "empty_predicted"), _count(empty_other, "empty_other"))
    except ValueError:
        return not_yet("these look like fractions; give the number of image-class pairs whose map is empty.")
    reference = _empty_counts()
    if answer == reference:
        return right("An empty map says that no region of the last feature map carries net positive "
                     "evidence for that class.")
    if answer == reference[::-1]:
        return not_yet("the two counts are swapped: the first is for the predicted class, the second for the "
                       "other three classes.")
    if answer == (50 - reference[0], 150 - reference[1]):
        return not_yet("you counted the maps that are not empty; count those that are zero everywhere.")
    if answer == _empty_counts(use_labels=True) and answer != reference:
        return not_yet("you split the pairs by the true label; the exercise asks about the model's prediction "
                       "(the argmax of the logits).")
    if sum(answer) > 200 or min(answer) < 0:
        return not_yet("there are 50 pairs with the predicted class and 150 with the others; your counts do not fit.")
    return not_yet("the counts differ from the reference: use the first 50 shapes test images, Grad-CAM at its "
                   "default layer for each of the four classes, and call a map empty when its maximum is exactly 0 "
                   "(not merely small).")


# ---------------------------------------------------------------------------- exercise 2
def _xgrad_differences() -> dict[str, dict[str, float]]:
    """max |Grad-CAM - XGrad-CAM| on 8 shapes images, normalised several ways (the right one first)."""
    from xaiutils.attribution import grad_cam, xgrad_cam

    shapes, model = _shapes()
    x, y = shapes.x[:8], shapes.y[:8]
    result = {}
    for layer in ("layer3", "layer2"):
        variants = {}
        for upsample in (False, True):
            a = grad_cam(model, x, y, layer=layer, upsample=upsample)
            b = xgrad_cam(model, x, y, layer=layer, upsample=upsample)
            gap = (a - b).abs().max()
            key = "" if not upsample else "upsampled "
            variants[key + "relative"] = (gap / a.abs().max()).item()
            variants[key + "absolute"] = gap.item()
            variants[key + "over XGrad-CAM"] = (gap / b.abs().max()).item()
        result[layer] = variants
    return result


@exercise("ch07.2", "XGrad-CAM is not always Grad-CAM",
          "Compute both maps at the layer's own resolution (upsample=False) on the first eight shapes test "
          "images, and divide the largest absolute difference by the largest value of Grad-CAM.")
def check_xgrad_cam(differences):
    answer = {layer: _number(differences, layer) for layer in ("layer3", "layer2")}
    reference = _xgrad_differences()
    at3, at2 = answer["layer3"], answer["layer2"]
    right2 = reference["layer2"]["relative"]
    if at3 > 0.1 and at2 < 1e-4:
        return not_yet("the two layers are swapped: which layer feeds the global average pooling?")
    if at3 >= 1e-4:
        return not_yet("at layer3 the two maps should agree to float32 rounding (below 1e-4 of Grad-CAM's maximum); "
                       "check that you compare the same images, classes and layer for both methods.")
    if abs(at2 - right2) <= 0.02 * right2:
        return right("At the pooling's input the gradient is the same at every position, so the activation-weighted "
                     "average of XGrad-CAM is Grad-CAM's plain average; at layer2 it is not.")
    for name, message in [("absolute", "divide the largest difference by the largest value of Grad-CAM"),
                          ("over XGrad-CAM", "divide by the largest value of Grad-CAM, not of XGrad-CAM"),
                          ("upsampled relative", "compare the maps at the layer's resolution (upsample=False)"),
                          ("upsampled absolute", "compare at the layer's resolution (upsample=False) and divide by "
                                                 "the largest value of Grad-CAM")]:
        value = reference["layer2"][name]
        if abs(at2 - value) <= 0.02 * abs(value):
            return not_yet(f"the layer2 value is not normalised as asked: {message}.")
    return not_yet("the layer2 value differs from the reference by more than 2%: use the first eight shapes test "
                   "images with their labels, upsample=False for both methods, and max |Grad-CAM - XGrad-CAM| "
                   "divided by the largest value of Grad-CAM.")


# ---------------------------------------------------------------------------- exercise 3
VERDICTS = ("more even", "about the same", "less even")


def _evenness(visible_only: bool = True) -> dict[str, float]:
    """Mean (smaller / larger) share of the map on two pasted crosses, over ten pairs of cross images.

    The pasted object hides part of the first one: with ``visible_only`` the first object's mask is
    its visible part (otherwise both full masks, the hidden pixels counted for both objects).
    """
    from xaiutils.attribution import grad_cam, grad_cam_pp

    shapes, model = _shapes()
    cross = shapes.classes.index("cross")
    crosses = (shapes.y == cross).nonzero()[:, 0][:20].tolist()
    ratios = {"Grad-CAM": [], "Grad-CAM++": []}
    for first, second in zip(crosses[0::2], crosses[1::2]):
        mask_a, mask_b = shapes.mask[first], shapes.mask[second]
        image = torch.where(mask_b, shapes.x[second], shapes.x[first])[None]
        if visible_only:
            mask_a = mask_a & ~mask_b
        for name, method in [("Grad-CAM", grad_cam), ("Grad-CAM++", grad_cam_pp)]:
            m = method(model, image, cross)[0]
            on_a, on_b = (m * mask_a).sum().item(), (m * mask_b).sum().item()
            ratios[name].append(min(on_a, on_b) / max(on_a, on_b, 1e-12))
    return {name: sum(values) / len(values) for name, values in ratios.items()}


@exercise("ch07.3", "Two objects",
          "For each pair, sum each method's map over the visible pixels of each cross (the masks, minus what the "
          "pasted cross covers), divide the smaller sum by the larger, and average over the ten pairs.")
def check_two_objects(ratio, verdict):
    answer = {name: _number(ratio, name) for name in ("Grad-CAM", "Grad-CAM++")}
    if verdict not in VERDICTS:
        return not_yet(f"verdict must be one of {', '.join(repr(v) for v in VERDICTS)}; got {verdict!r}.")
    if any(value > 1 for value in answer.values()):
        return not_yet("a ratio above 1: divide the smaller share by the larger one.")
    reference = _evenness()
    close = {name: abs(answer[name] - reference[name]) <= 0.005 for name in answer}
    if not all(close.values()):
        if all(abs(answer[name] - value) <= 0.005 for name, value in _evenness(visible_only=False).items()):
            return not_yet("the pasted cross hides part of the first one: count for the first cross only its "
                           "visible pixels (its mask minus the pasted cross's mask).")
        wrong = ", ".join(name for name, ok in close.items() if not ok)
        return not_yet(f"the ratio for {wrong} differs from the reference: use the first 20 cross images of the test "
                       "set in consecutive pairs, paste the second's object into the first, explain the class cross, "
                       "and sum each map over each cross's visible pixels.")
    gain = answer["Grad-CAM++"] - answer["Grad-CAM"]
    expected = "more even" if gain > 0.02 else "less even" if gain < -0.02 else "about the same"
    if verdict != expected:
        return not_yet("your ratios are right, but the verdict does not follow from them: compare the two ratios "
                       "(closer to 1 is more even; within 0.02 of each other is about the same).")
    return right("On these images Grad-CAM already spreads its map over both crosses, and the weighting of "
                 "Grad-CAM++ changes little.")
