"""The self-checks of chapter 16 (xaiutils.exercises.ch16): a right answer passes, typical mistakes do not.

The right answers are built here with the library, as the chapter's solutions build them, on the
shipped text models and the generated test reviews."""
import pytest
import torch

from xaiutils import corpus, exercises, zoo
from xaiutils.attribution import lrp
from xaiutils.attribution.embeddings import embedding_integrated_gradients
from xaiutils.text import CLS, MASK, PAD

N = 200


@pytest.fixture(scope="module")
def setting():
    model = zoo.load("text-sentiment")
    test = corpus.reviews("test")
    ids, rationale = test.ids[:N], test.rationale[:N]
    with torch.no_grad():
        prediction = model(ids).argmax(1)
    ig = embedding_integrated_gradients(model, ids, prediction, baseline="pad", steps=128).detach()
    words = (ids != CLS) & (ids != PAD)
    return model, ids, rationale, prediction, ig, words


def top1(attr, rationale, words, signed=False):
    score = (attr if signed else attr.abs()).masked_fill(~words, -float("inf"))
    return rationale[torch.arange(N), score.argmax(1)].float().mean().item()


def test_the_most_relevant_token(setting):
    model, ids, rationale, prediction, ig, words = setting
    relevance = lrp(model, ids, prediction).detach()
    right = {"IG pad": top1(ig, rationale, words), "AttnLRP": top1(relevance, rationale, words)}
    assert exercises.evaluate("ch16.1", right).correct
    assert exercises.evaluate("ch16.1", {k: v + 0.5 / N for k, v in right.items()}).correct  # one tie either way
    feedback = exercises.evaluate("ch16.1", {k: 100 * v for k, v in right.items()})
    assert not feedback.correct and "percentage" in feedback.message
    with_cls = top1(relevance, rationale, torch.ones_like(words))
    if abs(with_cls - right["AttnLRP"]) > 2 / N:
        feedback = exercises.evaluate("ch16.1", {**right, "AttnLRP": with_cls})
        assert not feedback.correct and "<cls>" in feedback.message
    feedback = exercises.evaluate("ch16.1", {"IG pad": right["IG pad"]})
    assert not feedback.correct and "keys" in feedback.message
    feedback = exercises.evaluate("ch16.1", {**right, "IG pad": right["IG pad"] - 0.1})
    assert not feedback.correct and "IG pad" in feedback.message


def test_when_the_name_lies():
    hans = zoo.load("text-sentiment-spurious")
    flipped = corpus.make_reviews(1000, seed=1, signature="flipped")
    ids, y, name = flipped.ids[:N], flipped.y[:N], flipped.spurious[:N]
    with torch.no_grad():
        prediction = hans(ids).argmax(1)
    words = (ids != CLS) & (ids != PAD)

    def shares(target, words_only=True):
        magnitude = lrp(hans, ids, target).detach().abs() * (words if words_only else 1)
        share = (magnitude * name).sum(1) / magnitude.sum(1)
        wrong = prediction != y
        return {"wrong": share[wrong].mean().item(), "right": share[~wrong].mean().item()}

    right = shares(prediction)
    feedback = exercises.evaluate("ch16.2", right)
    assert feedback.correct and "more relevance on the name" in feedback.message
    feedback = exercises.evaluate("ch16.2", {"wrong": right["right"], "right": right["wrong"]})
    assert not feedback.correct and "swapped" in feedback.message
    feedback = exercises.evaluate("ch16.2", shares(prediction, words_only=False))
    assert not feedback.correct and "<cls>" in feedback.message
    feedback = exercises.evaluate("ch16.2", {"wrong": 0.5, "right": 0.5})
    assert not feedback.correct


def test_erase_the_evidence(setting):
    model, ids, rationale, prediction, ig, words = setting
    score = ig.abs().masked_fill(~words, -float("inf"))
    top_k = torch.zeros_like(rationale)
    for i, k in enumerate(rationale.sum(1).tolist()):
        top_k[i, score[i].topk(int(k)).indices] = True

    def drop(erase, fill=MASK):
        with torch.no_grad():
            before = model(ids).softmax(1)[torch.arange(N), prediction]
            after = model(torch.where(erase, fill, ids)).softmax(1)[torch.arange(N), prediction]
        return (before - after).mean().item()

    right = {"IG top-k": drop(top_k), "rationale": drop(rationale)}
    assert exercises.evaluate("ch16.3", right).correct
    feedback = exercises.evaluate("ch16.3", {k: -v for k, v in right.items()})
    assert not feedback.correct and "signs" in feedback.message
    padded = {"IG top-k": drop(top_k, PAD), "rationale": drop(rationale, PAD)}
    if any(abs(padded[k] - right[k]) > 0.01 for k in right):
        feedback = exercises.evaluate("ch16.3", padded)
        assert not feedback.correct and "<pad>" in feedback.message
    feedback = exercises.evaluate("ch16.3", {**right, "IG top-k": right["IG top-k"] + 0.05})
    assert not feedback.correct and "IG top-k" in feedback.message
    feedback = exercises.evaluate("ch16.3", [right["IG top-k"], right["rationale"]])
    assert not feedback.correct and "dict" in feedback.message
