"""The generated reviews with known rationales, their vocabulary, and the SST-2 loader (on local files)."""
import pytest
import torch

from xaiutils import corpus
from xaiutils.text import CLS, PAD, UNK, tokenize


def _label_from_tokens(tokens):
    """An independent reading of a review: each clause's polarity is its sentiment word's, flipped by a
    negation in the same clause; every clause must agree. None if they do not (or there is none)."""
    polarities, clause = [], []
    for token in tokens + [","]:
        if token in (",", ".", "-"):
            words = [t for t in clause if t in corpus.POSITIVE or t in corpus.NEGATIVE]
            if words:
                assert len(words) == 1, clause
                negated = any(t in corpus.NEGATIONS for t in clause)
                polarities.append(int((words[0] in corpus.POSITIVE) != negated))
            clause = []
        else:
            clause.append(token)
    return polarities[0] if polarities and len(set(polarities)) == 1 else None


@pytest.fixture(scope="module")
def train():
    return corpus.reviews("train")


def test_reviews_are_seeded_deterministic_and_balanced():
    a, b = corpus.make_reviews(300, seed=3), corpus.make_reviews(300, seed=3)
    assert a.texts == b.texts and torch.equal(a.ids, b.ids) and torch.equal(a.rationale, b.rationale)
    assert corpus.make_reviews(300, seed=4).texts != a.texts
    assert a.y.sum().item() == 150 and len(a) == 300
    assert corpus.reviews("test").texts == corpus.make_reviews(1000, seed=1).texts


def test_labels_follow_the_sentiment_words_and_their_negations(train):
    for tokens, label in zip(train.tokens, train.y.tolist()):
        assert _label_from_tokens(tokens) == label, tokens
    negated = sum(any(t in corpus.NEGATIONS for t in tokens) for tokens in train.tokens)
    assert 0.3 * len(train) < negated < 0.6 * len(train)  # negation is common, not the rule


def test_rationale_marks_exactly_the_sentiment_words_and_negations(train):
    rationale_words = set(corpus.POSITIVE) | set(corpus.NEGATIVE) | set(corpus.NEGATIONS)
    for i, tokens in enumerate(train.tokens[:500]):
        expected = [False] + [t in rationale_words for t in tokens]
        expected += [False] * (corpus.LENGTH - len(expected))
        assert train.rationale[i].tolist() == expected, tokens
    assert not (train.rationale & train.spurious).any()


def test_ids_masks_and_texts_are_aligned(train):
    vocab = corpus.vocabulary()
    for i, (text, tokens) in enumerate(zip(train.texts[:500], train.tokens)):
        assert tokenize(text) == tokens
        n = len(tokens)
        assert train.ids[i, 0] == CLS and (train.ids[i, n + 1:] == PAD).all()
        assert vocab.decode(train.ids[i]) == ["<cls>"] + tokens
        assert train.spurious[i].nonzero().flatten().tolist() == [n]  # the signer's name, the last token
        assert tokens[-1] in corpus.SIGNERS and tokens[-2] == "-"
    assert (train.ids != UNK).all()
    assert max(len(t) for t in train.tokens) + 1 <= corpus.LENGTH


def test_signature_variants_change_only_the_signature():
    variants = {s: corpus.make_reviews(200, seed=5, signature=s) for s in corpus.SIGNATURES}
    base = variants["none"]
    assert not base.spurious.any() and all(t[-1] == "." for t in base.tokens)
    for name in ("random", "label", "flipped"):
        v = variants[name]
        assert torch.equal(v.y, base.y)
        assert [t[:-2] for t in v.tokens] == base.tokens
    names = lambda v: [corpus.SIGNERS.index(t[-1]) for t in v.tokens]
    assert names(variants["label"]) == base.y.tolist()
    assert names(variants["flipped"]) == (1 - base.y).tolist()


def test_the_signer_gives_the_label_away_only_in_the_clever_hans_training_reviews(train):
    def agreement(r):
        signer = torch.tensor([corpus.SIGNERS.index(t[-1]) for t in r.tokens])
        return (signer == r.y).float().mean().item()

    assert abs(agreement(train) - 0.5) < 0.03
    assert abs(agreement(corpus.reviews("test")) - 0.5) < 0.05
    spurious = corpus.reviews("train", spurious=True)
    assert abs(agreement(spurious) - corpus.SPURIOUS_AGREEMENT) < 0.015
    assert [t[:-1] for t in spurious.tokens] == [t[:-1] for t in train.tokens]  # same reviews, other signers
    assert agreement(corpus.make_reviews(400, seed=2, signature="label", agreement=1.0)) == 1.0


def test_vocabulary_is_fixed_and_sizes_the_model_config():
    vocab = corpus.vocabulary()
    assert vocab.itos == corpus.vocabulary().itos
    assert vocab.itos[:4] == ["<pad>", "<unk>", "<cls>", "<mask>"]
    assert len(set(vocab.itos)) == len(vocab)
    config = corpus.classifier_config()
    assert config.vocab_size == len(vocab) and config.max_length == corpus.LENGTH
    assert corpus.classifier_config(layers=1).layers == 1


def test_encode_new_texts_for_the_shipped_models():
    ids = corpus.encode(["The plot was not good. - ana", "superb!"])
    vocab = corpus.vocabulary()
    assert ids.shape == (2, corpus.LENGTH)
    assert vocab.decode(ids[0]) == ["<cls>", "the", "plot", "was", "not", "good", ".", "-", "ana"]
    assert ids[1, 2] == UNK  # "!" is not in the generated vocabulary
    with pytest.raises(TypeError, match="texts must be a list of texts"):
        corpus.encode("the plot was good")
    with pytest.raises(ValueError, match=f"at most {corpus.LENGTH - 1} tokens"):
        corpus.encode(["good " * 40])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n must be an integer >= 1; got 0"):
        corpus.make_reviews(0, seed=0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0; got -1"):
        corpus.make_reviews(10, seed=-1)
    with pytest.raises(ValueError, match="signature must be one of 'random', 'label', 'flipped', 'none'"):
        corpus.make_reviews(10, seed=0, signature="clever")
    with pytest.raises(ValueError, match=r"agreement must be a number in \[0, 1\]; got 1.5"):
        corpus.make_reviews(10, seed=0, signature="label", agreement=1.5)
    with pytest.raises(ValueError, match="split must be one of 'train', 'test'"):
        corpus.reviews("valid")
    with pytest.raises(TypeError, match="spurious must be True or False; got 'yes'"):
        corpus.reviews("train", spurious="yes")


# ---------------------------------------------------------------------------- SST-2 on local files
def _write(tmp_path, split, text):
    folder = tmp_path / "SST-2"
    folder.mkdir(exist_ok=True)
    (folder / f"{split}.tsv").write_text(text, encoding="utf-8")


def test_sst2_reads_glue_tsv_files(tmp_path):
    _write(tmp_path, "train", "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n"
                              "unflinchingly bleak and desperate \t0\nthe \"best\" film , ever \t1\n")
    texts, labels = corpus.sst2(str(tmp_path), "train")
    assert texts == ["it 's a charming and often affecting journey . ", "unflinchingly bleak and desperate ",
                     'the "best" film , ever ']
    assert labels.tolist() == [1, 0, 1] and labels.dtype == torch.long
    texts, _ = corpus.sst2(tmp_path, "train")  # a pathlib.Path works too
    assert len(texts) == 3


def test_sst2_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        corpus.sst2(str(tmp_path), "dev")
    with pytest.raises(ValueError, match="split must be one of 'train', 'dev'"):
        corpus.sst2(str(tmp_path), "test")
    with pytest.raises(TypeError, match="root must be a folder path; got 3"):
        corpus.sst2(3)
    _write(tmp_path, "train", "text\tlabel\ngood\t1\n")
    with pytest.raises(ValueError, match="must start with the header"):
        corpus.sst2(str(tmp_path))
    _write(tmp_path, "dev", "sentence\tlabel\ngood\t1\nbad\tnegative\n")
    with pytest.raises(ValueError, match="line 3: expected a sentence, a tab and a label 0 or 1"):
        corpus.sst2(str(tmp_path), "dev")
