"""The self-checks of chapter 20 (xaiutils.exercises.ch20): a right answer passes, typical wrong ones do not.

The right answers are the chapter's solutions (a metric, a card, a metric function), written here again."""
import copy
from functools import partial

import pytest

import xaiutils.evaluation as E
from xaiutils import data, zoo
from xaiutils.attribution import integrated_gradients
from xaiutils.exercises import evaluate


@pytest.fixture(scope="module")
def setting():
    mnist = data.mnist()
    return zoo.load("mnist-standard"), mnist.x_test[:50], mnist.y_test[:50]


def test_add_a_metric():
    right = E.Metric(E.deletion, "lower", settings={"steps": 20, "removal": "mean", "score_kind": "probability"},
                     summary="area")
    assert evaluate("ch20.1", right).correct
    assert evaluate("ch20.1", E.Metric(E.deletion, "lower", settings={"removal": "mean"}, summary="area")).correct
    feedback = evaluate("ch20.1", E.Metric(E.deletion, "higher", settings={"removal": "mean"}, summary="area"))
    assert not feedback.correct and "lower" in feedback.message
    feedback = evaluate("ch20.1", E.METRICS["deletion"])  # still removes to black
    assert not feedback.correct and "mean" in feedback.message
    feedback = evaluate("ch20.1", E.Metric(E.deletion, "lower", settings={"removal": "mean"}))  # no summary
    assert not feedback.correct and "area" in feedback.message
    assert not evaluate("ch20.1", E.Metric(E.insertion, "lower", settings={"removal": "mean"}, summary="area")).correct


def test_change_the_baseline(setting):
    model, x, y = setting
    metrics = ["deletion", "insertion", "faithfulness_correlation", "sparseness"]
    methods = {f"IG, baseline {b}": partial(integrated_gradients, baseline=b, steps=16)
               for b in ["zeros", "blur", "uniform"]}
    card = E.evaluate(model, x, y, methods=methods, metrics=metrics, n_boot=100, progress=False)
    assert evaluate("ch20.2", card).correct
    swapped = card.replace({"method": {"IG, baseline zeros": "IG, baseline blur",
                                       "IG, baseline blur": "IG, baseline zeros"}})
    assert not evaluate("ch20.2", swapped).correct
    assert not evaluate("ch20.2", card[card["metric"] != "sparseness"]).correct
    renamed = card.replace({"method": {"IG, baseline zeros": "IG, black"}})
    assert not evaluate("ch20.2", renamed).correct


def test_sanity_check_on_the_card(setting):
    model, _, _ = setting
    random_model = E.reinitialise(copy.deepcopy(model), seed=0)

    def randomisation_similarity(method, model, x, y, *, batch_size=None):
        return E.spearman(method(model, x, y).detach(), method(random_model, x, y).detach())

    def absolute(method, model, x, y, *, batch_size=None):
        return E.spearman(method(model, x, y).detach(), method(random_model, x, y).detach(), absolute=True)

    def same_model(method, model, x, y, *, batch_size=None):
        return E.spearman(method(model, x, y).detach(), method(model, x, y).detach())

    def mean_only(method, model, x, y, *, batch_size=None):
        return randomisation_similarity(method, model, x, y).mean()

    assert evaluate("ch20.3", randomisation_similarity).correct
    feedback = evaluate("ch20.3", absolute)
    assert not feedback.correct and "absolute" in feedback.message
    feedback = evaluate("ch20.3", same_model)
    assert not feedback.correct and "same model" in feedback.message
    feedback = evaluate("ch20.3", mean_only)
    assert not feedback.correct and "one value per example" in feedback.message
