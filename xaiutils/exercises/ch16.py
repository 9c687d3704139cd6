"""Self-checks for chapter 16, Explaining text (notebooks/ch16_text.ipynb).

The checks recompute every answer on the learner's machine from the shipped text models
(``text-sentiment``, ``text-sentiment-spurious``) and the generated reviews of :mod:`xaiutils.corpus`,
with the chapter's settings: the first 200 test reviews, the predicted class, integrated gradients on
the embeddings with the ``"pad"`` baseline and 128 Gauss-Legendre steps
(``sundararajan2017axiomatic``), AttnLRP (``achtibat2024attnlrp``). An answer is a share over 200
reviews, so the checks accept a difference of one review (ties between nearly equal attributions
may fall differently when a sum is taken in another order) and name the typical mistakes.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from . import exercise, not_yet, numbers, right

N = 200
STEPS = 128


@lru_cache(maxsize=2)
def _model(name: str):
    from xaiutils import zoo

    return zoo.load(name)


@lru_cache(maxsize=2)
def _reviews(signature: str):
    from xaiutils import corpus

    reviews = corpus.make_reviews(1000, seed=1, signature=signature)  # the test reviews (corpus.reviews("test"))
    return reviews.ids[:N], reviews.y[:N], reviews.rationale[:N], reviews.spurious[:N]


def _predicted(model, ids):
    with torch.no_grad():
        return model(ids).argmax(1)


@lru_cache(maxsize=1)
def _ig_clean():
    from xaiutils.attribution.embeddings import embedding_integrated_gradients

    model = _model("text-sentiment")
    ids = _reviews("random")[0]
    return embedding_integrated_gradients(model, ids, _predicted(model, ids), baseline="pad", steps=STEPS).detach()


def _words(ids):
    from xaiutils.text import CLS, PAD

    return (ids != CLS) & (ids != PAD)


def _close(a: float, b: float, atol: float = 1.5 / N) -> bool:
    return math.isfinite(a) and abs(a - b) <= atol


# ---------------------------------------------------------------------------- exercise 1
def _top1_share(attr, ids, rationale, *, signed=False, words=True):
    score = attr if signed else attr.abs()
    if words:
        score = score.masked_fill(~_words(ids), -math.inf)
    top = score.argmax(1)
    return rationale[torch.arange(len(ids)), top].float().mean().item()


@exercise("ch16.1", "The most relevant token",
          "For the first 200 test reviews and the clean model's predicted classes, take the word (not <cls>, not "
          "<pad>) with the largest |attribution| of each review and ask whether test.rationale is True there; "
          "average over the reviews, once for IG (pad baseline, steps=128) and once for AttnLRP.")
def most_relevant_token(top1):
    answer = numbers(top1, {"IG pad", "AttnLRP"}, "top1")
    if isinstance(answer, str):
        return not_yet(answer)
    from xaiutils.attribution import lrp

    model = _model("text-sentiment")
    ids, _, rationale, _ = _reviews("random")
    maps = {"IG pad": _ig_clean(), "AttnLRP": lrp(model, ids, _predicted(model, ids)).detach()}
    for name, attr in maps.items():
        reference = _top1_share(attr, ids, rationale)
        if _close(answer[name], reference):
            continue
        if _close(answer[name], 100 * reference, atol=150 / N):
            return not_yet(f"top1[{name!r}] looks like a percentage; give the share as a fraction.")
        if _close(answer[name], _top1_share(attr, ids, rationale, words=False)):
            return not_yet(f"top1[{name!r}] counts <cls> as a candidate; take the largest |attribution| among the "
                           "words only (ids that are neither <cls> nor <pad>).")
        if _close(answer[name], _top1_share(attr, ids, rationale, signed=True)):
            return not_yet(f"top1[{name!r}] takes the largest signed attribution; rank the words by |attribution|.")
        return not_yet(f"top1[{name!r}] is not the share of the 200 reviews whose most relevant word is a rationale "
                       "token (for the predicted class; IG with baseline='pad' and steps=128).")
    return right("Both shares are within one review of the reference.")


# ---------------------------------------------------------------------------- exercise 2
def _name_share(attr, ids, spurious, words=True):
    magnitude = attr.abs() * (_words(ids) if words else 1)
    return (magnitude * spurious).sum(1) / magnitude.sum(1)


@exercise("ch16.2", "When the name lies",
          "Use corpus.make_reviews(1000, seed=1, signature='flipped'), first 200 reviews, the Clever Hans model and "
          "its predicted classes; AttnLRP (lrp(model, ids, prediction)); per review the share of |relevance| over "
          "the words that falls on the name; average it over the wrongly and over the rightly predicted reviews.")
def when_the_name_lies(name_share):
    answer = numbers(name_share, {"wrong", "right"}, "name_share")
    if isinstance(answer, str):
        return not_yet(answer)
    from xaiutils.attribution import lrp

    model = _model("text-sentiment-spurious")
    ids, y, _, spurious = _reviews("flipped")
    prediction = _predicted(model, ids)
    wrong = prediction != y

    def split(share):
        return {"wrong": share[wrong].mean().item(), "right": share[~wrong].mean().item()}

    reference = split(_name_share(lrp(model, ids, prediction).detach(), ids, spurious))
    if all(_close(answer[k], reference[k], atol=1e-3) for k in reference):
        verdict = "more" if reference["wrong"] > reference["right"] else "less"
        return right(f"Both means match; the wrong predictions put {verdict} relevance on the name than the right ones.")
    if _close(answer["wrong"], reference["right"], atol=1e-3) and _close(answer["right"], reference["wrong"], atol=1e-3):
        return not_yet("The two values are swapped: 'wrong' is the mean over the reviews whose prediction differs "
                       "from the label.")
    if all(_close(answer[k], v, atol=1e-3) for k, v in split(_name_share(lrp(model, ids, y).detach(), ids,
                                                                          spurious)).items()):
        return not_yet("These are the shares for the labels; explain the predicted classes.")
    with_cls = split(_name_share(lrp(model, ids, prediction).detach(), ids, spurious, words=False))
    if all(_close(answer[k], v, atol=1e-3) for k, v in with_cls.items()):
        return not_yet("The denominator includes <cls>; divide by the |relevance| of the words only.")
    clean = _model("text-sentiment")
    clean_prediction = _predicted(clean, ids)
    clean_wrong = clean_prediction != y
    share = _name_share(lrp(clean, ids, clean_prediction).detach(), ids, spurious)
    if _close(answer["right"], share[~clean_wrong].mean().item(), atol=1e-3):
        return not_yet("That looks like the clean model; explain the Clever Hans model text-sentiment-spurious.")
    return not_yet("The means are not the reference: per review, |AttnLRP relevance| on the name divided by the "
                   "|relevance| of all words, averaged over the wrong and over the right predictions.")


# ---------------------------------------------------------------------------- exercise 3
def _probability_drop(model, ids, prediction, erase, fill):
    with torch.no_grad():
        before = model(ids).softmax(1).gather(1, prediction[:, None])[:, 0]
        after = model(torch.where(erase, fill, ids)).softmax(1).gather(1, prediction[:, None])[:, 0]
    return (before - after).mean().item()


def _top_k(attr, ids, rationale):
    score = attr.abs().masked_fill(~_words(ids), -math.inf)
    erase = torch.zeros_like(rationale)
    for i, k in enumerate(rationale.sum(1).tolist()):
        erase[i, score[i].topk(int(k)).indices] = True
    return erase


@exercise("ch16.3", "Erase the evidence",
          "For the first 200 test reviews and the clean model's predicted classes, replace the k words with the "
          "largest |IG| (pad baseline, steps=128; k = the number of rationale tokens of the review) by <mask>, and "
          "average the drop of the predicted class's softmax probability; then erase the rationale tokens instead.")
def erase_the_evidence(drop):
    answer = numbers(drop, {"IG top-k", "rationale"}, "drop")
    if isinstance(answer, str):
        return not_yet(answer)
    from xaiutils.text import MASK, PAD

    model = _model("text-sentiment")
    ids, _, rationale, _ = _reviews("random")
    prediction = _predicted(model, ids)
    erase = {"IG top-k": _top_k(_ig_clean(), ids, rationale), "rationale": rationale}
    reference = {k: _probability_drop(model, ids, prediction, e, MASK) for k, e in erase.items()}
    if all(_close(answer[k], reference[k], atol=2e-3) for k in reference):
        return right("Both drops match the reference (within 0.002).")
    if all(_close(answer[k], -reference[k], atol=2e-3) for k in reference):
        return not_yet("The signs are reversed: the drop is the probability before minus the probability after.")
    padded = {k: _probability_drop(model, ids, prediction, e, PAD) for k, e in erase.items()}
    if all(_close(answer[k], padded[k], atol=2e-3) for k in reference):
        return not_yet("These replace the words by <pad>, which the model masks as keys; use <mask> (id MASK = 3).")
    if _close(answer["rationale"], reference["rationale"], atol=2e-3):
        return not_yet("The rationale's drop is right, not the IG top-k drop: rank the words (not <cls>, not <pad>) by "
                       "|IG| with baseline='pad', steps=128, and erase as many as the review has rationale tokens.")
    return not_yet("The drops are not the reference: the mean over the 200 reviews of p_c(review) - p_c(erased "
                   "review), c the predicted class and p the softmax, with the erased words replaced by <mask>.")
