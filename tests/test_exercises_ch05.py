"""The self-checks of chapter 5 (xaiutils.exercises.ch05): a right answer passes, typical mistakes do not."""
import pytest
import torch

from xaiutils import data, zoo
from xaiutils.exercises import evaluate


def range_of(x):
    flat = x.flatten(1)
    return (flat.max(1).values - flat.min(1).values).view(-1, 1, 1, 1)


def maps(mean_gxi, variance_gxi, square=lambda w: w * w):
    def linear_maps(w, x, sigma):
        return {"gradient": {"smoothgrad": w + 0 * x, "smoothgrad_sq": square(w) + 0 * x, "vargrad": 0 * x},
                "gradient_x_input": {"smoothgrad": mean_gxi(w, x), "vargrad": variance_gxi(w, x, sigma)}}
    return linear_maps


def test_linear_model():
    right_maps = maps(lambda w, x: w * x, lambda w, x, sigma: (w * sigma * range_of(x)) ** 2)
    assert evaluate("ch05.1", right_maps).correct
    for wrong, pointer in [
            (maps(lambda w, x: w * x, lambda w, x, sigma: (w * sigma) ** 2), "relative to each image's value range"),
            (maps(lambda w, x: w * x, lambda w, x, sigma: w.abs() * (sigma * range_of(x)) ** 2),
             "weight enters squared"),
            (maps(lambda w, x: w * x, lambda w, x, sigma: w * w * sigma * range_of(x)), "variance"),
            (maps(lambda w, x: w + 0 * x, lambda w, x, sigma: (w * sigma * range_of(x)) ** 2), "noisy input"),
            (maps(lambda w, x: w * x, lambda w, x, sigma: (w * sigma * range_of(x)) ** 2, square=lambda w: w),
             "squared")]:
        feedback = evaluate("ch05.1", wrong)
        assert not feedback.correct and pointer in feedback.message, feedback.message
    feedback = evaluate("ch05.1", lambda w, x, sigma: {"gradient": {}})
    assert not feedback.correct and "missing" in feedback.message


@pytest.fixture(scope="module")
def kept():
    mnist, model = data.mnist(), zoo.load("mnist-standard")
    x, y = mnist.x_test[:200], mnist.y_test[:200]
    generator, shares = torch.Generator().manual_seed(123), {}  # another draw of noise than the reference's
    for sigma in [0.1, 0.2, 0.3, 0.5, 1]:
        noisy = x + sigma * torch.randn((5, *x.shape), generator=generator)  # MNIST digits span [0, 1]
        with torch.no_grad():
            shares[sigma] = (model(noisy.flatten(0, 1)).argmax(1) == y.repeat(5)).float().mean().item()
    return shares


def test_too_much_noise(kept):
    first_below_half = min(sigma for sigma, share in kept.items() if share < 0.5)
    assert evaluate("ch05.2", kept, first_below_half).correct
    for answer, breaks, pointer in [({s: 100 * v for s, v in kept.items()}, first_below_half, "percentages"),
                                    ({s: 1 - v for s, v in kept.items()}, first_below_half, "lose"),
                                    (kept, 1.0, "breaks_down_at"),
                                    ({0.1: 0.9}, first_below_half, "missing")]:
        feedback = evaluate("ch05.2", answer, breaks)
        assert not feedback.correct and pointer in feedback.message, feedback.message


def test_smooth_anything():
    # the chapter's recipe (uniform perturbations of 2% from a generator seeded with 1, the largest of four
    # relative changes, averaged over the two images), written out again here
    from xaiutils.attribution import grad_cam, lrp, smoothgrad

    shapes, model = data.shapes("test"), zoo.load("shapes-standard")
    x, y = shapes.x[:2], shapes.y[:2]
    generator = torch.Generator().manual_seed(1)
    deltas = [(2 * torch.rand(x.shape, generator=generator) - 1) * 0.02 for _ in range(4)]

    def sensitivity(explain):
        base = explain(x)
        return torch.stack([(explain(x + d) - base).flatten(1).norm(dim=1) / base.flatten(1).norm(dim=1)
                            for d in deltas]).max(0).values.mean().item()

    smoothing = {name: (sensitivity(lambda z: method(model, z, y)),
                        sensitivity(lambda z: smoothgrad(method, model, z, y, samples=16, sigma=0.15, batch_size=32)))
                 for name, method in [("LRP", lrp), ("Grad-CAM", grad_cam)]}
    helped = {name for name, (plain, smooth) in smoothing.items() if smooth < plain}
    feedback = evaluate("ch05.3", smoothing, helped)
    assert feedback.correct and "For lrp the two numbers differ by less than" in feedback.message, feedback.message
    # LRP's verdict hinges on the draws: the opposite measurement is accepted when it is consistent
    lrp_other_way = {"lrp": smoothing["LRP"][::-1], "grad_cam": smoothing["Grad-CAM"]}
    assert evaluate("ch05.3", lrp_other_way, set()).correct
    for answer, named, pointer in [(smoothing, {"LRP", "Grad-CAM"}, "agree with your numbers"),
                                   ({"lrp": smoothing["LRP"], "grad_cam": smoothing["Grad-CAM"][::-1]},
                                    {"lrp", "grad_cam"}, "(smoothed, plain)"),
                                   ({"lrp": smoothing["LRP"], "grad_cam": (10.0, 20.0)}, helped, "factor of 2"),
                                   (smoothing, "lrp", "set of method names"),
                                   ({"lrp": smoothing["LRP"]}, helped, "keys")]:
        feedback = evaluate("ch05.3", answer, named)
        assert not feedback.correct and pointer in feedback.message, feedback.message
