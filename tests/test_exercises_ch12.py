"""The self-checks of chapter 12 (xaiutils.exercises.ch12): a right answer passes, typical mistakes do not.

The checks take what the chapter optimised; the tests optimise it briefly (a few attack steps, one
short fine-tuning) and build the right answers here with the library."""
import pytest
import torch

import xaiutils.evaluation as E
from xaiutils import data, exercises, models, zoo
from xaiutils.adversarial import beta_smoothed, manipulate_explanation, manipulate_model, saliency_map, top_k_attack
from xaiutils.attribution import grad_cam, gradient, smoothgrad

EPSILONS = [0.01, 0.02, 0.05, 0.1]


@pytest.fixture(scope="module")
def mnist_setting():
    return zoo.load("mnist-standard"), data.mnist()


def relative_error(s, target):  # the chapter's definition
    return ((s - target).flatten(1).pow(2).sum(1) / target.flatten(1).pow(2).sum(1))


def test_attack_by_transfer(mnist_setting):
    model, mnist = mnist_setting
    xd = mnist.x_test[:8]
    with torch.no_grad():
        labels = model(xd).argmax(1)
    target_maps = saliency_map(model, xd.roll(1, 0), labels.roll(1, 0))
    xm = manipulate_explanation(model, xd, target_maps, steps=10, lr=1e-2, epsilon=0.1)
    with beta_smoothed(model, 3.0):
        transferred = relative_error(saliency_map(model, xm, labels), target_maps).mean().item()
    adaptive = transferred - 0.05  # pretend the adaptive attack got closer
    assert exercises.evaluate("ch12.1", transferred, True, x_manipulated=xm, adaptive=adaptive).correct
    feedback = exercises.evaluate("ch12.1", transferred, False, x_manipulated=xm, adaptive=adaptive)
    assert not feedback.correct and "further" in feedback.message
    relu = relative_error(saliency_map(model, xm, labels), target_maps).mean().item()
    feedback = exercises.evaluate("ch12.1", relu, True, x_manipulated=xm, adaptive=adaptive)
    assert not feedback.correct and "beta_smoothed" in feedback.message
    feedback = exercises.evaluate("ch12.1", transferred, True, x_manipulated=xd + 0.5, adaptive=adaptive)
    assert not feedback.correct and "within 0.1" in feedback.message


def test_attack_smoothgrad(mnist_setting):
    model, mnist = mnist_setting
    xg = mnist.x_test[:16]
    with torch.no_grad():
        predicted = model(xg).argmax(1)
    attacked = {}
    for epsilon in EPSILONS:
        attacked["gradient", "top-k attack", epsilon] = top_k_attack(model, xg, epsilon=epsilon, k=50, steps=2)
        signs = 2 * torch.randint(0, 2, xg.shape, generator=torch.Generator().manual_seed(0)) - 1
        attacked["gradient", "random sign", epsilon] = (xg + epsilon * signs).clamp(0, 1)
    sg0 = smoothgrad(gradient, model, xg, predicted, samples=16)
    s0 = saliency_map(model, xg, predicted)
    kept_sg, kept_plain = {}, {}
    for epsilon in EPSILONS:
        xp = attacked["gradient", "top-k attack", epsilon]
        sg = smoothgrad(gradient, model, xp, predicted, samples=16)
        kept_sg[epsilon] = E.top_k_intersection(sg0, sg, 50).mean().item()
        kept_plain[epsilon] = E.top_k_intersection(s0, saliency_map(model, xp, predicted), 50).mean().item()
    protects = all(kept_sg[e] > kept_plain[e] for e in EPSILONS)
    assert exercises.evaluate("ch12.2", kept_sg, protects, attacked=attacked).correct
    feedback = exercises.evaluate("ch12.2", kept_sg, not protects, attacked=attacked)
    assert not feedback.correct and "protects" in feedback.message
    feedback = exercises.evaluate("ch12.2", kept_plain, protects, attacked=attacked)
    assert not feedback.correct and "gradient's" in feedback.message
    feedback = exercises.evaluate("ch12.2", {str(e): v for e, v in kept_sg.items()}, protects, attacked=attacked)
    assert feedback.correct  # "0.01" as a key is the same epsilon
    feedback = exercises.evaluate("ch12.2", {0.01: 0.5}, protects, attacked=attacked)
    assert not feedback.correct and "every epsilon" in feedback.message


def test_heo_budget(mnist_setting):
    model, mnist = mnist_setting
    corner = torch.zeros(1, 1, 28, 28)
    corner[..., :7, :7] = 1
    fooled = manipulate_model(model, mnist.x_train[:256], mnist.y_train[:256], corner, lam=100.0, epochs=1,
                              lr=1e-3, progress=False)
    xh, yh = mnist.x_test[:200], mnist.y_test[:200]
    h = grad_cam(fooled, xh, yh).detach()
    on = h.flatten(1).amax(1) > 0
    accuracy = models.accuracy(fooled, mnist.x_test[:2000], mnist.y_test[:2000])
    zero = 1 - on.float().mean().item()
    positive = h[on].clamp(min=0).flatten(1)
    in_corner = (positive * corner.flatten(1)).sum(1) / positive.sum(1)  # relevance mass accuracy, by hand
    corner_mass = in_corner.nanmean().item()
    assert exercises.evaluate("ch12.3", accuracy, zero, corner_mass, model=fooled).correct
    feedback = exercises.evaluate("ch12.3", 100 * accuracy, zero, corner_mass, model=fooled)
    assert not feedback.correct and "percent" in feedback.message
    feedback = exercises.evaluate("ch12.3", accuracy, 1 - zero, corner_mass, model=fooled)
    assert not feedback.correct and "zero8" in feedback.message
    feedback = exercises.evaluate("ch12.3", accuracy, zero, corner_mass, model=model)
    assert not feedback.correct and "original network" in feedback.message
    feedback = exercises.evaluate("ch12.3", accuracy, zero, corner_mass + 0.1, model=fooled)
    assert not feedback.correct and "corner8" in feedback.message
