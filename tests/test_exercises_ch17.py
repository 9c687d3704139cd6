"""The self-checks of chapter 17 (xaiutils.exercises.ch17): a right answer passes, typical mistakes do not.

The right answers are built here with the library, on the chapter's models and data."""
import pytest
import torch

from xaiutils import data, exercises, zoo
from xaiutils.attribution import integrated_gradients, shapley_values


# ---------------------------------------------------------------------------- exercise 1
def test_shapley_by_hand():
    assert exercises.evaluate("ch17.1", [1.25, 0.25], (1.2, 0.3)).correct
    assert exercises.evaluate("ch17.1", torch.tensor([1.25, 0.25]), torch.tensor([1.2004, 0.2999])).correct
    cases = [(([1.2, 0.3], [1.2, 0.3]), "integrated gradients"),  # IG given as the Shapley value
             (([0.25, 1.25], [1.2, 0.3]), "wrong order"),
             (([2.0, 0.5], [1.2, 0.3]), "gradient x input"),
             (([1.25, 0.25], [1.25, 0.25]), "Shapley values"),
             (([1.25, 0.25], [2.0, 0.5]), "gradient x input"),
             (([1.0, 0.5], [1.2, 0.3]), "weights 1/2"),
             (([1.25, 0.25, 0.0], [1.2, 0.3]), "two numbers")]
    for (phi, ig), words in cases:
        feedback = exercises.evaluate("ch17.1", phi, ig)
        assert not feedback.correct and words in feedback.message, (phi, ig, feedback.message)


# ---------------------------------------------------------------------------- exercise 2
@pytest.fixture(scope="module")
def wine_setting():
    wine, model = data.wine(), zoo.load("wine-mlp").double().eval()
    x = wine.x_test.double()
    with torch.no_grad():
        target = model(x).argmax(1)
    return wine, model, x, target


def distance(a, reference):  # the chapter's definition
    return (a - reference).norm(dim=1) / reference.norm(dim=1)


def test_background_set(wine_setting):
    wine, model, x, target = wine_setting
    background = wine.x_train[:20].double()
    per_row = torch.stack([shapley_values(model, x, target, baseline=d[None], batch_size=1 << 16) for d in background])
    phi_background = per_row.mean(0)
    exact = shapley_values(model, x, target, baseline="zeros", batch_size=1 << 16)
    moved = distance(phi_background, exact).mean().item()
    assert exercises.evaluate("ch17.2", phi_background, moved).correct
    assert exercises.evaluate("ch17.2", phi_background.float(), moved).correct  # a float32 answer passes
    at_average = shapley_values(model, x, target, baseline=background.mean(0, keepdim=True))
    cases = [((at_average, moved), "average of the 20"),
             ((exact, moved), "chapter's exact values"),
             ((20 * phi_background, moved), "sum"),
             ((per_row[0], moved), "first background wine"),
             ((phi_background, distance(exact, phi_background).mean().item()), "norm of the background"),
             ((phi_background, 2 * moved), "distance(phi_background, exact)"),
             ((phi_background[:10], moved), "shape")]
    for answer, words in cases:
        feedback = exercises.evaluate("ch17.2", *answer)
        assert not feedback.correct and words in feedback.message, (words, feedback.message)


# ---------------------------------------------------------------------------- exercise 3
def test_three_statistics():
    cancer, model = data.breast_cancer(), zoo.load("breast-cancer-mlp").double().eval()
    x = cancer.x_test.double()
    with torch.no_grad():
        target = model(x).argmax(1)
    three = torch.arange(30) // 10
    values = shapley_values(model, x, target, features=three)
    phi3 = torch.stack([values[:, three == g].sum(1) for g in range(3)], 1)
    strongest = ["mean", "error", "worst"][int(phi3.abs().mean(0).argmax())]
    assert exercises.evaluate("ch17.3", phi3, strongest).correct
    with torch.no_grad():
        gap = model(x).gather(1, target[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, target[:, None])[:, 0]
    assert torch.allclose(phi3.sum(1), gap, atol=1e-10)  # efficiency of the grouped game
    other = next(g for g in ("mean", "error", "worst") if g != strongest)
    ig = integrated_gradients(model, x, target, steps=256).detach()
    interleaved = torch.arange(30) % 3
    wrong = shapley_values(model, x, target, features=interleaved)
    cases = [((phi3, other), "not `strongest`"),
             ((phi3 / 10, strongest), "values per feature"),
             ((torch.stack([wrong[:, interleaved == g].sum(1) for g in range(3)], 1), strongest), "interleave"),
             ((torch.stack([ig[:, three == g].sum(1) for g in range(3)], 1), strongest), "integrated gradients"),
             ((phi3, "radius"), "should be one of"),
             ((phi3.T, strongest), "shape")]
    for answer, words in cases:
        feedback = exercises.evaluate("ch17.3", *answer)
        assert not feedback.correct and words in feedback.message, (words, feedback.message)
