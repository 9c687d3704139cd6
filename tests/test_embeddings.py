"""Integrated gradients on token embeddings and the text model: closed forms first, then Captum."""
import copy
import warnings

import pytest
import torch
from captum.attr import LayerIntegratedGradients
from torch import nn

from helpers import assert_unchanged, snapshot
from xaiutils.attribution.embeddings import baseline_ids, embedding_integrated_gradients
from xaiutils.attribution.paths import RULES
from xaiutils.text import PAD, Vocabulary, TextClassifier, TextConfig, tokenize

TEXTS = ["a good film , not a bad one", "a bad film", "the acting is good !", "not good , not bad",
         "the film is great", "bad acting"]


# ---------------------------------------------------------------------------- fixtures
def vocab():
    return Vocabulary.from_texts(TEXTS)


def classifier(pooling="cls", layers=2, dropout=0.1, seed=0):
    torch.manual_seed(seed)
    config = TextConfig.for_vocabulary(vocab(), classes=3, dim=16, heads=2, layers=layers, hidden=32,
                                       max_length=16, dropout=dropout, pooling=pooling)
    return TextClassifier(config).double().eval()


def batch():
    """Three sequences of different lengths (pad at the end), one with an unknown word."""
    return vocab().encode_batch(["a good film", "not bad , the acting is great !", "a terrible film"])


class LinearOnEmbeddings(nn.Module):
    """:math:`f(x) = \\sum_t W e(x_t) + b`: integrated gradients is :math:`W_c \\cdot (e(x_t) - e(x'_t))` per token."""

    pad_id, mask_id, special_ids = PAD, 3, (2, PAD)

    def __init__(self, vocab_size=20, dim=5, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(vocab_size, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids):
        return self.head(self.embedding(input_ids).sum(1))


def logits_from_embeddings(model, ids, embedded):
    """:class:`TextClassifier`'s forward with the token embeddings given: an independent f_c(E)."""
    padding = ids == model.pad_id
    h = embedded + model.position.weight[: ids.shape[1]]
    for layer in model.layers:
        h = layer(h, src_key_padding_mask=padding)
    weight = (~padding).unsqueeze(-1).to(h)
    pooled = h[:, 0] if model.config.pooling == "cls" else (h * weight).sum(1) / weight.sum(1)
    return model.head(model.norm(pooled))


def start_embeddings(model, ids, baseline):
    """The path's start E' of a named baseline, built by hand from the embedding matrix."""
    kept = (ids == model.cls_id) | (ids == model.pad_id)
    table = model.embedding.weight.detach()
    if baseline == "zero":
        return torch.where(kept[..., None], table[ids], 0.0)
    token = model.pad_id if baseline == "pad" else model.mask_id
    return table[torch.where(kept, ids, token)]


# ---------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("baseline", ["pad", "mask", "zero", "ids"])
def test_linear_model_gives_weight_times_embedding_difference_per_token(rule, baseline):
    model = LinearOnEmbeddings().double().eval()
    ids = torch.tensor([[2, 5, 7, 9, 0], [2, 11, 4, 0, 0]])
    table, w = model.embedding.weight.detach(), model.head.weight.detach()
    kept = (ids == 2) | (ids == 0)
    if baseline == "ids":
        reference = torch.tensor([2, 6, 6, 6, 6])
        start = table[reference].expand(2, -1, -1)
        option = reference
    else:
        start = torch.where(kept[..., None], table[ids], 0.0) if baseline == "zero" else \
            table[torch.where(kept, ids, 0 if baseline == "pad" else 3)]
        option = baseline
    target = torch.tensor([1, 2])
    attr, delta = embedding_integrated_gradients(model, ids, target, baseline=option, steps=7, rule=rule,
                                                 return_delta=True)
    expected = ((table[ids] - start) * w[target][:, None, :]).sum(-1)
    assert attr.shape == ids.shape
    assert torch.allclose(attr, expected, rtol=0, atol=1e-14)
    assert delta.abs().max() < 1e-13
    if baseline != "ids":
        assert (attr[kept] == 0).all()  # <cls> and <pad> stay: no attribution


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("baseline", ["pad", "mask", "zero"])
def test_completeness_with_many_steps_against_an_independent_forward(pooling, baseline):
    model, ids = classifier(pooling), batch()
    attr, delta = embedding_integrated_gradients(model, ids, 1, baseline=baseline, steps=64, return_delta=True)
    with torch.no_grad():
        gain = (logits_from_embeddings(model, ids, model.embedding.weight[ids])[:, 1]
                - logits_from_embeddings(model, ids, start_embeddings(model, ids, baseline))[:, 1])
        assert torch.allclose(model(ids)[:, 1], logits_from_embeddings(model, ids, model.embedding.weight[ids])[:, 1],
                              rtol=0, atol=1e-12)
    assert gain.abs().min() > 1e-3  # a real difference to explain
    assert torch.allclose(attr.sum(1), gain, rtol=0, atol=1e-12)
    assert delta.abs().max() < 1e-12
    assert torch.allclose(delta, attr.sum(1) - gain, rtol=0, atol=1e-14)


def test_completeness_error_shrinks_with_steps():
    model, ids = classifier(), batch()
    errors = [embedding_integrated_gradients(model, ids, 0, steps=n, rule="riemann_middle", return_delta=True)[1]
              .abs().max().item() for n in (2, 8, 32)]
    assert errors[2] < errors[1] < errors[0]


def test_full_map_sums_to_the_token_map_and_named_baselines_equal_their_ids():
    model, ids = classifier(), batch()
    full = embedding_integrated_gradients(model, ids, 2, baseline="mask", steps=8, reduce=False)
    assert full.shape == (*ids.shape, 16)
    tokens = embedding_integrated_gradients(model, ids, 2, baseline="mask", steps=8)
    assert torch.allclose(full.sum(-1), tokens, rtol=0, atol=1e-15)
    for name, token in (("pad", model.pad_id), ("mask", model.mask_id)):
        reference = baseline_ids(ids, token, model.special_ids)
        assert ((reference == ids) | (reference == token)).all() and (reference[:, 0] == model.cls_id).all()
        assert torch.equal(embedding_integrated_gradients(model, ids, 2, baseline=name, steps=8),
                           embedding_integrated_gradients(model, ids, 2, baseline=reference, steps=8))


def test_the_three_baselines_differ_and_keep_controls_the_fixed_tokens():
    model, ids = classifier(), batch()
    maps = {b: embedding_integrated_gradients(model, ids, 0, baseline=b, steps=16) for b in ("pad", "mask", "zero")}
    fixed = (ids == model.cls_id) | (ids == model.pad_id)
    for b, attr in maps.items():
        assert (attr[fixed] == 0).all() and (attr[~fixed] != 0).all(), b
    assert (maps["pad"] - maps["zero"]).abs().max() > 1e-3 and (maps["pad"] - maps["mask"]).abs().max() > 1e-3
    everything = embedding_integrated_gradients(model, ids, 0, baseline="zero", keep=(), steps=16)
    assert (everything[:, 0] != 0).all()  # <cls> now moves too
    by_options = embedding_integrated_gradients(model, ids, 0, baseline="pad", keep=[2, 0], pad_id=0, steps=16)
    assert torch.equal(by_options, maps["pad"])


# ---------------------------------------------------------------------------- Captum
def captum_lig(model, ids, reference, target, steps, rule, **options):
    return LayerIntegratedGradients(model, model.embedding).attribute(
        ids, baselines=reference, target=target, n_steps=steps, method=rule, **options)


@pytest.mark.parametrize("rule", ["riemann_left", "riemann_right", "riemann_middle", "gausslegendre"])
@pytest.mark.parametrize("baseline", ["pad", "mask"])
def test_matches_captum_layer_integrated_gradients(rule, baseline):
    model, ids, target = classifier("mean"), batch(), torch.tensor([0, 2, 1])
    reference = baseline_ids(ids, model.pad_id if baseline == "pad" else model.mask_id, model.special_ids)
    ours = embedding_integrated_gradients(model, ids, target, baseline=baseline, steps=12, rule=rule, reduce=False)
    theirs = captum_lig(model, ids, reference, target, 12, rule)
    # Captum casts its quadrature weights (and builds its Riemann nodes) in float32: ~1e-8 relative.
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6 * theirs.abs().max().item())


def test_captum_trapezoid_is_ours_times_n_minus_one_over_n():
    """Captum's trapezoid weights sum to 1 - 1/n (see paths.integration_rule); ours sum to 1."""
    model, ids = classifier(), batch()
    reference = baseline_ids(ids, model.mask_id, model.special_ids)
    ours = embedding_integrated_gradients(model, ids, 1, baseline="mask", steps=10, rule="riemann_trapezoid",
                                          reduce=False)
    theirs = captum_lig(model, ids, reference, 1, 10, "riemann_trapezoid")
    assert torch.allclose(0.9 * ours, theirs, rtol=0, atol=1e-6 * theirs.abs().max().item())


def test_zero_baseline_is_captum_with_a_token_whose_embedding_is_zero():
    model, ids = classifier(), batch()
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.embedding.weight[zeroed.mask_id] = 0
    ours = embedding_integrated_gradients(zeroed, ids, 1, baseline="zero", steps=12, reduce=False)
    assert torch.equal(ours, embedding_integrated_gradients(zeroed, ids, 1, baseline="mask", steps=12, reduce=False))
    theirs = captum_lig(zeroed, ids, baseline_ids(ids, zeroed.mask_id, zeroed.special_ids), 1, 12, "gausslegendre")
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6 * theirs.abs().max().item())


def test_captum_delta_runs_the_baseline_ids_ours_the_path_start():
    """With "pad", model(baseline ids) masks every word; the path's start keeps the input's mask."""
    model, ids = classifier(), batch()
    reference = baseline_ids(ids, model.pad_id, model.special_ids)
    ours, delta = embedding_integrated_gradients(model, ids, 1, baseline="pad", steps=64, return_delta=True)
    theirs, their_delta = captum_lig(model, ids, reference, 1, 64, "gausslegendre", return_convergence_delta=True)
    assert torch.allclose(ours, theirs.sum(-1), rtol=0, atol=1e-6 * theirs.abs().max().item())
    with torch.no_grad():
        captum_gain = model(ids)[:, 1] - model(reference)[:, 1]
    assert torch.allclose(their_delta, theirs.sum((1, 2)) - captum_gain, rtol=0, atol=1e-10)
    assert delta.abs().max() < 1e-12 < 1e-3 < their_delta.abs().max()



class BertLikeEmbeddings(nn.Module):
    """Words, positions and a LayerNorm in one module, as Hugging Face's ``BertEmbeddings``."""

    def __init__(self, vocab_size=20, dim=8, length=6):
        super().__init__()
        self.words, self.positions = nn.Embedding(vocab_size, dim), nn.Embedding(length, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, input_ids):
        return self.norm(self.words(input_ids) + self.positions.weight[: input_ids.shape[1]])


class BertLike(nn.Module):
    pad_id, mask_id, special_ids = PAD, 3, (2, PAD)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embeddings, self.mix, self.head = BertLikeEmbeddings(), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, input_ids):
        return self.head(torch.tanh(self.mix(self.embeddings(input_ids))).mean(1))


def test_a_composite_embedding_layer_by_name_matches_captum():
    """The whole output of the named layer moves (positions and LayerNorm included), as in Captum."""
    model, ids = BertLike().double().eval(), torch.tensor([[2, 5, 7, 9, 0], [2, 11, 4, 19, 12]])
    ours, delta = embedding_integrated_gradients(model, ids, 1, embedding="embeddings", baseline="mask", steps=32,
                                                 reduce=False, return_delta=True)
    theirs = LayerIntegratedGradients(model, model.embeddings).attribute(
        ids, baselines=baseline_ids(ids, 3, (2, PAD)), target=1, n_steps=32, method="gausslegendre")
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6 * theirs.abs().max().item())
    assert delta.abs().max() < 1e-12 and (ours[ids == 2] == 0).all()
    with pytest.raises(ValueError, match="input_ids must be token ids >= 0 and < 20"):
        embedding_integrated_gradients(model, ids + 8, 1, embedding="embeddings")  # the words' rows count

# ---------------------------------------------------------------------------- options
def test_batch_size_gives_the_same_result():
    model, ids = classifier(), batch()
    full, delta = embedding_integrated_gradients(model, ids, 1, steps=10, return_delta=True)
    for batch_size in (1, 4, 7, 1000):
        attr, d = embedding_integrated_gradients(model, ids, 1, steps=10, return_delta=True, batch_size=batch_size)
        assert torch.allclose(attr, full, rtol=0, atol=1e-12 * full.abs().max().item())
        assert torch.allclose(d, delta, rtol=0, atol=1e-12)


def test_target_tensor_callable_and_embedding_by_name():
    model, ids = classifier(), batch()
    per_example = embedding_integrated_gradients(model, ids, torch.tensor([0, 2, 1]), steps=6, batch_size=4)
    for i, c in enumerate([0, 2, 1]):
        alone = embedding_integrated_gradients(model, ids[i:i + 1], c, steps=6)
        assert torch.allclose(per_example[i:i + 1], alone, rtol=0, atol=1e-14)
    by_callable = embedding_integrated_gradients(model, ids, lambda out: out[:, 2], steps=6, embedding="embedding")
    assert torch.equal(by_callable, embedding_integrated_gradients(model, ids, 2, steps=6))


# ---------------------------------------------------------------------------- side effects
def test_model_and_input_are_left_as_they_were_also_after_an_error():
    model, ids = classifier(), batch()
    model.train()
    model.layers[0].eval()
    model.head.weight.requires_grad_(False)
    before, ids_before = snapshot(model), ids.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        embedding_integrated_gradients(model, ids, 1, steps=4, return_delta=True, batch_size=5)
        assert_unchanged(model, before)
        assert torch.equal(ids, ids_before)
        with pytest.raises(ValueError, match="out of range"):
            embedding_integrated_gradients(model, ids, 5, steps=4)
        assert_unchanged(model, before)
        assert torch.equal(ids, ids_before)


def test_a_model_in_training_mode_is_explained_in_eval_mode():
    model, ids = classifier(dropout=0.5), batch()
    expected = embedding_integrated_gradients(model, ids, 1, steps=8)
    model.train()
    with pytest.warns(UserWarning, match="training mode"):
        attr = embedding_integrated_gradients(model, ids, 1, steps=8)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(attr, expected)


class TwiceEmbedded(LinearOnEmbeddings):
    def forward(self, input_ids):
        return self.head(self.embedding(input_ids).sum(1) + self.embedding(input_ids).mean(1))


class PairEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.words = nn.Embedding(20, 5)

    def forward(self, input_ids):
        return self.words(input_ids), input_ids != PAD


class TupleEmbedding(LinearOnEmbeddings):
    def __init__(self):
        super().__init__()
        self.embedding = PairEmbedding()

    def forward(self, input_ids):
        return self.head(self.embedding(input_ids)[0].sum(1))


class NoEmbeddingAttribute(nn.Module):
    def __init__(self):
        super().__init__()
        self.words = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, input_ids):
        return self.head(self.words(input_ids).sum(1))


# (options, error type, message)
BAD = [
    (dict(input_ids=[[2, 4, 5]]), TypeError, "input_ids must be a tensor of integer token ids"),
    (dict(input_ids=torch.tensor([[2.0, 4.0]])), TypeError, "input_ids must hold integer token ids; got dtype"),
    (dict(input_ids=torch.tensor([2, 4, 5])), ValueError,
     r"input_ids must be a batch of token ids \(B, T\); got shape \(3,\).*unsqueeze\(0\)"),
    (dict(input_ids=torch.zeros(0, 3, dtype=torch.long)), ValueError, "at least one sequence"),
    (dict(input_ids=torch.tensor([[2, 99]])), ValueError, r"input_ids must be token ids >= 0 and < \d+ .*got 99"),
    (dict(input_ids=torch.tensor([[2, -1]])), ValueError, "input_ids must be token ids >= 0.*got -1"),
    (dict(baseline="padding"), ValueError, r"baseline must be one of 'pad', 'mask', 'zero'.*did you mean 'pad'"),
    (dict(baseline=0.0), TypeError, "baseline must be one of .* or a tensor of token ids"),
    (dict(baseline=torch.tensor([2, 0])), ValueError, r"baseline ids must have shape \(T,\) or \(B, T\)"),
    (dict(baseline=torch.zeros(3, dtype=torch.float64)), TypeError, "baseline must hold integer token ids"),
    (dict(baseline=torch.tensor([2, 0, 99])), ValueError, "baseline must be token ids .*got 99"),
    (dict(pad_id=99), ValueError, r"pad_id must be < \d+"),
    (dict(baseline="mask", pad_id=1.5), TypeError, r"pad_id must be an integer >= 0; got 1.5"),
    (dict(baseline="mask", mask_id=-1), ValueError, "mask_id must be an integer >= 0"),
    (dict(keep="cls"), TypeError, "keep must be a sequence of token ids"),
    (dict(steps=0), ValueError, "steps must be an integer >= 1; got 0"),
    (dict(rule="simpson"), ValueError, "rule must be one of"),
    (dict(reduce="sum"), TypeError, "reduce must be True or False"),
    (dict(batch_size=0), ValueError, "batch_size must be an integer >= 1"),
    (dict(target=torch.tensor([0, 1, 2])), ValueError, r"target must be an int or have one class per example"),
    (dict(target=7), ValueError, "target 7 is out of range"),
    (dict(embedding=nn.Linear(2, 2)), ValueError, "not part of the model"),
    (dict(embedding="embeddings"), ValueError, "the model has no layer named 'embeddings'"),
    (dict(embedding="head"), ValueError, r"embedding must output one vector per token.*got shape \(1, 3\)"),
]


@pytest.mark.parametrize("options, error, message", BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_inputs_name_the_argument_what_was_given_and_what_is_expected(options, error, message):
    model = LinearOnEmbeddings().double().eval()
    arguments = dict(input_ids=torch.tensor([[2, 4, 5]]), target=1, steps=3)
    arguments.update(options)
    before = snapshot(model)
    with pytest.raises(error, match=message):
        embedding_integrated_gradients(model, arguments.pop("input_ids"), arguments.pop("target"), **arguments)
    assert_unchanged(model, before)


def test_bad_models_are_refused_with_what_to_do():
    ids = torch.tensor([[2, 4, 5]])
    with pytest.raises(ValueError, match="ran 2 times in one forward pass"):
        embedding_integrated_gradients(TwiceEmbedded().double().eval(), ids, 1, steps=3)
    with pytest.raises(TypeError, match="embedding must output a floating-point tensor.*got tuple"):
        embedding_integrated_gradients(TupleEmbedding().eval(), ids, 1, steps=3)
    with pytest.raises(ValueError, match="no module model.embedding.*nn.Embedding modules: words"):
        embedding_integrated_gradients(NoEmbeddingAttribute().eval(), ids, 1, steps=3)
    with pytest.raises(ValueError, match="needs pad_id: the model has no attribute pad_id"):
        embedding_integrated_gradients(NoEmbeddingAttribute().eval(), ids, 1, embedding="words", steps=3)
    attr = embedding_integrated_gradients(NoEmbeddingAttribute().eval(), ids, 1, embedding="words", pad_id=0, steps=3)
    assert (attr != 0).all()  # no special_ids on the model: nothing is kept
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        embedding_integrated_gradients(lambda i: i, ids, 1)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        embedding_integrated_gradients(LinearOnEmbeddings().eval(), ids, 1)


# ---------------------------------------------------------------------------- the text model
def test_vocabulary_round_trip_specials_and_padding():
    v = vocab()
    assert v.itos[:4] == ["<pad>", "<unk>", "<cls>", "<mask>"]
    assert (v.pad_id, v.unk_id, v.cls_id, v.mask_id) == (0, 1, 2, 3) and v.special_ids == (2, 0)
    assert tokenize("Not bad, FILM!") == ["not", "bad", ",", "film", "!"]
    assert v.itos[4] in ("a", "bad", "film", "good", "not")  # the most frequent tokens come first
    ids = v.encode("a good film", length=6)
    assert ids.tolist()[0] == v.cls_id and ids.tolist()[-2:] == [v.pad_id, v.pad_id]
    assert v.decode(ids) == ["<cls>", "a", "good", "film"]
    assert v["terrible"] == v.unk_id and "terrible" not in v
    rows = v.encode_batch(["a film", "the acting is great"])
    assert rows.shape == (2, 5) and rows[0, 3:].tolist() == [0, 0]
    assert v.encode_batch(["the acting is great"], length=3).tolist() == [v.encode("the acting", cls=True).tolist()]
    assert len(Vocabulary.from_texts(TEXTS, min_count=2)) < len(v)
    with pytest.raises(TypeError, match="tokens must be an iterable of str"):
        Vocabulary("abc")
    with pytest.raises(ValueError, match="ids must lie in"):
        v.decode([2, 999])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_shape_and_padding_does_not_change_the_logits(pooling):
    model, v = classifier(pooling), vocab()
    short, padded = v.encode_batch(["a good film"]), v.encode_batch(["a good film"], length=9)
    with torch.no_grad():
        logits = model(short)
        assert logits.shape == (1, 3)
        assert torch.allclose(model(padded), logits, rtol=0, atol=1e-12)
        assert isinstance(model.embedding, nn.Embedding) and model.embedding.num_embeddings == len(v)
    with pytest.raises(ValueError, match="max_length = 16"):
        model(torch.full((1, 17), 4))


def test_config_is_checked():
    with pytest.raises(ValueError, match="dim must be divisible by heads"):
        TextConfig(vocab_size=10, dim=10, heads=3)
    with pytest.raises(ValueError, match="pooling must be one of 'cls', 'mean'"):
        TextConfig(vocab_size=10, pooling="max")
    with pytest.raises(ValueError, match="mask_id must be < vocab_size"):
        TextConfig(vocab_size=10, mask_id=10)
    with pytest.raises(TypeError, match="config must be a TextConfig"):
        TextClassifier({"vocab_size": 10})
