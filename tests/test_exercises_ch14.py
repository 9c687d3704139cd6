"""The self-checks of chapter 14 (xaiutils.exercises.ch14): a right answer passes, typical mistakes do not.

The right answers are built here with the library, as the chapter's solutions build them."""
import pytest
import torch

from xaiutils import data, exercises, zoo
from xaiutils.attribution import gradient
from xaiutils.evaluation.uncertainty import bayesian_samples, interval, mc_dropout_samples, spread, weight_noise_samples
from xaiutils.experiments.uncertainty import auroc


@pytest.fixture(scope="module")
def mnist():
    return data.mnist()


def sure_share(maps, level=0.9):
    low, high = interval(maps, level)
    return ((low > 0) | (high < 0)).double().mean().item()


def test_sure_sign(mnist):
    x, y = mnist.x_test[:8], mnist.y_test[:8]
    maps = {"mc_dropout": mc_dropout_samples(gradient, zoo.load("mnist-dropout"), x, y, samples=20, seed=0),
            "bayesian": bayesian_samples(gradient, zoo.load("mnist-bayes"), x, y, samples=20, seed=0)}
    sure = {source: sure_share(sample) for source, sample in maps.items()}
    assert exercises.evaluate("ch14.1", sure).correct
    feedback = exercises.evaluate("ch14.1", {source: 100 * share for source, share in sure.items()})
    assert not feedback.correct and "percentage" in feedback.message
    feedback = exercises.evaluate("ch14.1", {**sure, "bayesian": sure_share(maps["bayesian"], 0.95)})
    assert not feedback.correct and "95%" in feedback.message
    mean, std = maps["mc_dropout"].mean(0), maps["mc_dropout"].std(0)
    feedback = exercises.evaluate("ch14.1", {**sure, "mc_dropout": (mean.abs() > std).double().mean().item()})
    assert not feedback.correct and "interval" in feedback.message
    feedback = exercises.evaluate("ch14.1", {"mc_dropout": sure["mc_dropout"]})
    assert not feedback.correct and "keys" in feedback.message


def test_noise_level(mnist):
    model = zoo.load("mnist-standard")
    x, y = mnist.x_test[:32], mnist.y_test[:32]
    maps = {sigma: weight_noise_samples(gradient, model, x, y, samples=10, sigma=sigma, seed=0)
            for sigma in (0.1, 0.2, 0.4)}
    rank = {sigma: spread(sample).mean().item() for sigma, sample in maps.items()}
    grows = rank[0.1] < rank[0.2] < rank[0.4]
    assert exercises.evaluate("ch14.2", rank, grows).correct
    assert exercises.evaluate("ch14.2", {str(s): v for s, v in rank.items()}, grows).correct  # "0.1" is the same sigma
    feedback = exercises.evaluate("ch14.2", rank, not grows)
    assert not feedback.correct and "grows" in feedback.message
    cv = {sigma: spread(sample, measure="cv").mean().item() for sigma, sample in maps.items()}
    feedback = exercises.evaluate("ch14.2", cv, grows)
    assert not feedback.correct and "'cv'" in feedback.message
    feedback = exercises.evaluate("ch14.2", {0.1: rank[0.1]}, grows)
    assert not feedback.correct and "every sigma" in feedback.message
    feedback = exercises.evaluate("ch14.2", rank, "yes")
    assert not feedback.correct and "True or False" in feedback.message


def test_flags_errors(mnist):
    model = zoo.load("mnist-dropout")
    x, y = mnist.x_test[:500], mnist.y_test[:500]
    with torch.no_grad():
        predicted = model(x).argmax(1)
    wrong = predicted != y
    rank = spread(mc_dropout_samples(gradient, model, x, predicted, samples=10, seed=0))

    def probabilities(net, inputs, target):
        with torch.no_grad():
            return net(inputs).softmax(1)

    uncertainty = 1 - mc_dropout_samples(probabilities, model, x, predicted, samples=10, seed=0).mean(0).max(1).values
    right_spread, right_predictive = auroc(rank[wrong], rank[~wrong]), auroc(uncertainty[wrong], uncertainty[~wrong])
    assert exercises.evaluate("ch14.3", right_spread, right_predictive).correct
    feedback = exercises.evaluate("ch14.3", right_spread, 1 - right_predictive)
    assert not feedback.correct and "reversed" in feedback.message
    with_labels = spread(mc_dropout_samples(gradient, model, x, y, samples=10, seed=0))
    feedback = exercises.evaluate("ch14.3", auroc(with_labels[wrong], with_labels[~wrong]), right_predictive)
    assert not feedback.correct and "predict" in feedback.message
    feedback = exercises.evaluate("ch14.3", right_spread, 0.5)
    assert not feedback.correct and "auroc_predictive" in feedback.message
