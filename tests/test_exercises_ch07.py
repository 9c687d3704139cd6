"""The self-checks of chapter 7 (xaiutils.exercises.ch07): a right answer passes, typical mistakes do not.

The right answers are built here with the library, as a learner would, on the chapter's ShapesResNet."""
import pytest
import torch

from xaiutils import data, exercises, zoo
from xaiutils.attribution import grad_cam, grad_cam_pp, xgrad_cam


@pytest.fixture(scope="module")
def setting():
    return data.shapes("test"), zoo.load("shapes-standard")


def test_empty_maps(setting):
    shapes, model = setting
    x = shapes.x[:50]
    with torch.no_grad():
        predicted = model(x).argmax(1)
    maxima = torch.stack([grad_cam(model, x, k).amax((1, 2, 3)) for k in range(4)], dim=1)
    own = torch.arange(4)[None] == predicted[:, None]
    empty_predicted, empty_other = int((maxima[own] == 0).sum()), int((maxima[~own] == 0).sum())
    assert exercises.evaluate("ch07.1", empty_predicted, empty_other).correct
    if empty_predicted != empty_other:
        feedback = exercises.evaluate("ch07.1", empty_other, empty_predicted)
        assert not feedback.correct and "swapped" in feedback.message
    feedback = exercises.evaluate("ch07.1", 50 - empty_predicted, 150 - empty_other)
    assert not feedback.correct and "not empty" in feedback.message
    feedback = exercises.evaluate("ch07.1", empty_predicted / 50, empty_other / 150 + 0.001)
    assert not feedback.correct and "fractions" in feedback.message
    feedback = exercises.evaluate("ch07.1", empty_predicted, empty_other + 5)
    assert not feedback.correct and "exactly 0" in feedback.message


def test_xgrad_cam(setting):
    shapes, model = setting
    x, y = shapes.x[:8], shapes.y[:8]
    relative, absolute = {}, {}
    for layer in ["layer3", "layer2"]:
        a = grad_cam(model, x, y, layer=layer, upsample=False)
        b = xgrad_cam(model, x, y, layer=layer, upsample=False)
        relative[layer] = ((a - b).abs().max() / a.max()).item()
        absolute[layer] = (a - b).abs().max().item()
    assert relative["layer3"] < 1e-5 < 0.1 < relative["layer2"]
    assert exercises.evaluate("ch07.2", relative).correct
    feedback = exercises.evaluate("ch07.2", {"layer3": relative["layer2"], "layer2": relative["layer3"]})
    assert not feedback.correct and "swapped" in feedback.message
    feedback = exercises.evaluate("ch07.2", absolute)
    assert not feedback.correct and "normalised" in feedback.message
    feedback = exercises.evaluate("ch07.2", {"layer3": relative["layer3"]})
    assert not feedback.correct and "layer2" in feedback.message


def evenness(shapes, model, visible_only):
    cross = shapes.classes.index("cross")
    crosses = [i for i in range(len(shapes.y)) if shapes.y[i] == cross][:20]
    shares = {"Grad-CAM": [], "Grad-CAM++": []}
    for first, second in zip(crosses[0::2], crosses[1::2]):
        pasted = shapes.mask[second]
        first_mask = shapes.mask[first] & ~pasted if visible_only else shapes.mask[first]
        image = shapes.x[first].clone()
        image[pasted.expand_as(image)] = shapes.x[second][pasted.expand_as(image)]
        for name, method in [("Grad-CAM", grad_cam), ("Grad-CAM++", grad_cam_pp)]:
            m = method(model, image[None], cross)[0]
            a, b = m[first_mask].sum().item(), m[pasted].sum().item()
            shares[name].append(min(a, b) / max(a, b))
    return {name: sum(v) / len(v) for name, v in shares.items()}


def test_two_objects(setting):
    shapes, model = setting
    ratio = evenness(shapes, model, visible_only=True)
    gain = ratio["Grad-CAM++"] - ratio["Grad-CAM"]
    verdict = "more even" if gain > 0.02 else "less even" if gain < -0.02 else "about the same"
    assert exercises.evaluate("ch07.3", ratio, verdict).correct
    other = "more even" if verdict != "more even" else "less even"
    feedback = exercises.evaluate("ch07.3", ratio, other)
    assert not feedback.correct and "verdict" in feedback.message
    feedback = exercises.evaluate("ch07.3", evenness(shapes, model, visible_only=False), verdict)
    assert not feedback.correct and "visible" in feedback.message
    inverted = {name: 1 / value for name, value in ratio.items()}
    feedback = exercises.evaluate("ch07.3", inverted, verdict)
    assert not feedback.correct and "smaller share by the larger" in feedback.message
    feedback = exercises.evaluate("ch07.3", ratio, "yes")
    assert not feedback.correct and "verdict must be one of" in feedback.message
