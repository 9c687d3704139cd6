"""The text chapter's data: generated reviews whose rationales are known, and SST-2 for readers who are online.

* :func:`make_reviews`, :func:`reviews` -- short movie reviews built from templates, seeded. A
  review's label is the polarity of its sentiment words, flipped by a negation (``"not good"`` is
  negative, ``"not bad"`` positive); neutral filler surrounds them, and every review is signed by
  one of two reviewers (``"- ana"``, ``"- bob"``). Each review comes with token masks of its
  *rationale* (the sentiment words and the negations acting on them: what a faithful explanation
  should point at) and of its *spurious* token (the reviewer's name).
* The "Clever Hans" variant (``reviews("train", spurious=True)``): in its training reviews the
  reviewer gives the label away (``ana`` signs every positive review, ``bob`` every negative one),
  as the decoy patch does in decoy MNIST (chapter 18); in the test reviews the signature is random,
  so a model that learned the shortcut fails there and its explanations point at the name.
* :func:`vocabulary` -- the fixed vocabulary of every word the generator can write, so that the
  shipped text models (:func:`classifier_config`) have a fixed size and readers can encode new reviews.
* :func:`sst2` -- the Stanford Sentiment Treebank's binary task (GLUE's SST-2) from its plain TSV files,
  downloaded once while online (``socher2013recursive``).

References: ``deyoung2020eraser`` (token rationales as ground truth for explanations),
``geirhos2020shortcut`` (shortcut learning). Chapter 16 (text).
"""
from __future__ import annotations

import csv
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch

from .core.checks import check_choice, check_int, check_number, describe
from .text import CLS, PAD, TextConfig, Vocabulary, tokenize

POSITIVE = ("good", "great", "excellent", "wonderful", "brilliant", "enjoyable", "lovely", "superb")
NEGATIVE = ("bad", "awful", "terrible", "boring", "dull", "poor", "horrible", "tedious")
NEGATIONS = ("not", "never")
INTENSIFIERS = ("very", "really", "quite", "rather")
ASPECTS = ("plot", "acting", "music", "script", "ending", "cast", "dialogue", "pacing", "soundtrack", "direction")
WORKS = ("film", "movie", "story", "show")
OPENERS = (("honestly", ","), ("overall", ","), ("well", ","), ("to", "be", "fair", ","), ("in", "short", ","))
ASIDES = (("i", "saw", "it", "on", "sunday", "."), ("we", "watched", "it", "at", "home", "."),
          ("it", "runs", "two", "hours", "."), ("my", "friend", "picked", "it", "."))
SIGNERS = ("bob", "ana")  # in the Clever Hans training reviews, SIGNERS[label] signs: bob negative, ana positive
CLASSES = ("negative", "positive")
SIGNATURES = ("random", "label", "flipped", "none")
SPURIOUS_AGREEMENT = 0.95  # the share of Clever Hans training reviews whose signer gives the label away
LENGTH = 32  # ids per review: <cls>, at most 28 tokens, padding


@dataclass
class Reviews:
    """Generated reviews: ``texts`` and their ``tokens``, labels ``y`` (N,) (0 negative, 1 positive), and,
    aligned with the ids ``(N, LENGTH)`` (``<cls>`` first, then one id per token, then ``<pad>``), the
    boolean masks ``rationale`` (sentiment words and their negations) and ``spurious`` (the signer's name)."""

    texts: list[str]
    tokens: list[list[str]]
    y: torch.Tensor
    ids: torch.Tensor
    rationale: torch.Tensor
    spurious: torch.Tensor
    classes: tuple = field(default=CLASSES)

    def __len__(self) -> int:
        return len(self.texts)


def _words() -> tuple[str, ...]:
    groups = (POSITIVE, NEGATIVE, NEGATIONS, INTENSIFIERS, ASPECTS, WORKS, *OPENERS, *ASIDES,
              ("the", "was", "it", "is", "a", "an", "i", "found", "and", ".", ",", "-"), SIGNERS)
    return tuple(dict.fromkeys(word for group in groups for word in group))


def vocabulary() -> Vocabulary:
    """The fixed :class:`~xaiutils.text.Vocabulary` of the generated reviews: the four special tokens,
    then every word and mark :func:`make_reviews` can write, in a fixed order (the same on every machine)."""
    return Vocabulary(_words())


def classifier_config(**options) -> TextConfig:
    """The :class:`~xaiutils.text.TextConfig` of the shipped ``text-sentiment`` models: :func:`vocabulary`'s
    size and special ids, ``LENGTH`` positions, 2 layers of 4 heads over 32 features, CLS pooling.
    ``options`` override any field (for experiments)."""
    settings = dict(dim=32, heads=4, layers=2, hidden=64, max_length=LENGTH, dropout=0.1, pooling="cls")
    return TextConfig.for_vocabulary(vocabulary(), **{**settings, **options})


def _clause(rng: np.random.Generator, polarity: int) -> tuple[list[str], list[bool]]:
    """One sentiment clause of final polarity ``polarity``: tokens and their rationale flags."""
    negated = rng.random() < 0.3
    adjective = str(rng.choice(POSITIVE if polarity != negated else NEGATIVE))
    intensifier = [str(rng.choice(INTENSIFIERS))] if rng.random() < 0.4 else []
    form = rng.integers(3)
    if form == 0:  # the plot was (not) (very) good
        negation = [str(rng.choice(NEGATIONS))] if negated else []
        head = ["the", str(rng.choice(ASPECTS)), "was"]
        tail = []
    elif form == 1:  # it is (not) a (very) good film
        negation = ["not"] if negated else []
        head, tail = ["it", "is"], [str(rng.choice(WORKS))]
        intensifier = ["an" if (intensifier or [adjective])[0][0] in "aeiou" else "a"] + intensifier
    else:  # i found the plot (not) (very) good
        negation = ["not"] if negated else []
        head, tail = ["i", "found", "the", str(rng.choice(ASPECTS))], []
    tokens = head + negation + intensifier + [adjective] + tail
    flags = [False] * len(head) + [True] * len(negation) + [False] * len(intensifier) + [True] + [False] * len(tail)
    return tokens, flags


def make_reviews(n: int, seed: int, *, signature: str = "random", agreement: float = 1.0) -> Reviews:
    """``n`` reviews generated deterministically from ``seed``, half of them positive.

    A review is an optional opener (``"honestly ,"``), one or two clauses whose final polarity is the
    label (a clause is negated with probability 0.3: ``"the plot was not good"``), a full stop, an
    optional neutral aside (``"we watched it at home ."``) before or after, and a signature ``"- name"``.
    ``signature`` decides the name: ``"random"`` (either signer with probability 1/2, independent of
    the label), ``"label"`` (``SIGNERS[label]`` with probability ``agreement``, else the other name:
    the name gives the label away), ``"flipped"`` (the other name) or ``"none"`` (no signature). The same ``seed`` gives the same reviews for every
    ``signature``; only the signature differs, so the variants can be compared review by review.
    """
    n = check_int(n, "n")
    seed = check_int(seed, "seed", minimum=0)
    check_choice(signature, "signature", SIGNATURES)
    agreement = check_number(agreement, "agreement", minimum=0, maximum=1)
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    texts, all_tokens, rationales, spurious = [], [], [], []
    for label in labels.tolist():
        tokens, flags = [], []
        if rng.random() < 0.3:
            opener = list(OPENERS[rng.integers(len(OPENERS))])
            tokens, flags = opener, [False] * len(opener)
        for k in range(1 + int(rng.random() < 0.5)):
            if k:
                tokens, flags = tokens + [",", "and"], flags + [False, False]
            clause, clause_flags = _clause(rng, label)
            tokens, flags = tokens + clause, flags + clause_flags
        tokens, flags = tokens + ["."], flags + [False]
        place = rng.random()  # an aside: before (< 0.15), after (< 0.3) or none
        aside = list(ASIDES[rng.integers(len(ASIDES))])
        if place < 0.15:
            tokens, flags = aside + tokens, [False] * len(aside) + flags
        elif place < 0.3:
            tokens, flags = tokens + aside, flags + [False] * len(aside)
        coin = rng.random()
        signer = {"random": int(coin < 0.5), "label": label if coin < agreement else 1 - label,
                  "flipped": 1 - label, "none": None}[signature]
        if signer is not None:
            tokens, flags = tokens + ["-", SIGNERS[signer]], flags + [False, False]
        texts.append(" ".join(tokens))
        all_tokens.append(tokens)
        rationales.append(flags)
        spurious.append([False] * (len(tokens) - 1) + [signer is not None])
    vocab = vocabulary()
    ids = torch.full((n, LENGTH), PAD, dtype=torch.long)
    rationale = torch.zeros(n, LENGTH, dtype=torch.bool)
    shortcut = torch.zeros(n, LENGTH, dtype=torch.bool)
    for i, tokens in enumerate(all_tokens):
        ids[i, :len(tokens) + 1] = vocab.encode(tokens)
        rationale[i, 1:len(tokens) + 1] = torch.tensor(rationales[i])
        shortcut[i, 1:len(tokens) + 1] = torch.tensor(spurious[i])
    return Reviews(texts, all_tokens, torch.from_numpy(labels).long(), ids, rationale, shortcut)


def reviews(split: str = "train", *, spurious: bool = False) -> Reviews:
    """The book's fixed splits: 4,000 training reviews (seed 0) and 1,000 test reviews (seed 1).

    ``spurious=True`` gives the Clever Hans training reviews (signed ``SIGNERS[label]``); the test
    reviews are the same clean ones either way (a random signer), as the book judges both models on them.
    """
    check_choice(split, "split", ("train", "test"))
    if not isinstance(spurious, bool):
        raise TypeError(f"spurious must be True or False; got {describe(spurious)}.")
    if split == "test":
        return make_reviews(1000, seed=1)
    return make_reviews(4000, seed=0, signature="label" if spurious else "random", agreement=SPURIOUS_AGREEMENT)


def encode(texts: list[str], vocab: Vocabulary | None = None) -> torch.Tensor:
    """``(B, LENGTH)`` ids of ``texts`` for the shipped text models (``<cls>`` first; unknown words are ``<unk>``)."""
    vocab = vocabulary() if vocab is None else vocab
    if isinstance(texts, str):
        raise TypeError(f"texts must be a list of texts (not one str); got {texts!r}.")
    too_long = [t for t in texts if len(tokenize(t)) + 1 > LENGTH]
    if too_long:
        raise ValueError(f"each text must have at most {LENGTH - 1} tokens for these models; got "
                         f"{len(tokenize(too_long[0]))} in {too_long[0][:60]!r}.")
    return vocab.encode_batch(texts, length=LENGTH)


# ---------------------------------------------------------------------------- SST-2, for readers who are online
SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"  # GLUE's copy: SST-2/{train,dev}.tsv


def sst2(root: str, split: str = "train", download: bool = False) -> tuple[list[str], torch.Tensor]:
    """GLUE's SST-2 (``socher2013recursive``): sentences and labels (0 negative, 1 positive).

    Reads ``{root}/SST-2/{split}.tsv`` (a header ``sentence<TAB>label``, then one sentence per line;
    ``split`` is ``"train"`` (67,349 sentences) or ``"dev"`` (872); GLUE's test split has no labels).
    ``download=True`` first fetches and unpacks ``SST2_URL`` into ``root`` if the file is missing
    (needs the internet, e.g. in Colab). Build a vocabulary for it with
    :meth:`Vocabulary.from_texts <xaiutils.text.Vocabulary.from_texts>`.
    """
    check_choice(split, "split", ("train", "dev"))
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a folder path; got {describe(root)}.")
    path = os.path.join(root, "SST-2", f"{split}.tsv")
    if not os.path.exists(path):
        if not download:
            raise FileNotFoundError(f"{path} not found: call sst2(root, download=True) once while online.")
        from urllib.request import urlretrieve

        os.makedirs(root, exist_ok=True)
        archive, _ = urlretrieve(SST2_URL, os.path.join(root, "SST-2.zip"))
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(root)
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None or header[:2] != ["sentence", "label"]:
            raise ValueError(f"{path} must start with the header 'sentence<TAB>label'; got {header!r}.")
        for number, row in enumerate(rows, start=2):
            if len(row) != 2 or row[1] not in ("0", "1"):
                raise ValueError(f"{path}, line {number}: expected a sentence, a tab and a label 0 or 1; got {row!r}.")
            texts.append(row[0])
            labels.append(int(row[1]))
    return texts, torch.tensor(labels, dtype=torch.long)
