"""The perturbation metrics on token ids (issue #14): words are removed by replacing them with <pad> or
<mask>, the model's special tokens stay, and each sequence removes a fraction of its own words.

Known answers come from a bag-of-words model whose logit is the sum of one weight per token, <pad>
weighing nothing: removing a word lowers the logit by exactly its weight, so the exact map is the
weights themselves. On it the deletion curve is known in closed form, infidelity is 0 and the
subset correlations are 1."""
import pytest
import torch
from helpers import assert_unchanged, small_text_model, snapshot
from torch import nn

from xaiutils import evaluation as E
from xaiutils.attribution import lrp
from xaiutils.attribution.embeddings import embedding_integrated_gradients

PAD, CLS, MASK = 0, 2, 3


class BagOfWords(nn.Module):
    """Logit of class 0: the sum of the tokens' weights (pad: 0); class 1: its negative. Records its inputs."""

    pad_id, mask_id, special_ids = PAD, MASK, (CLS, PAD)

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.embedding = nn.Embedding(len(weights), 1, dtype=weights.dtype)
        with torch.no_grad():
            self.embedding.weight.copy_(weights[:, None])
        self.seen = []

    def forward(self, ids):
        self.seen.append(ids.clone())
        logit = self.embedding(ids).squeeze(-1).sum(1)
        return torch.stack([logit, -logit], 1)


@pytest.fixture()
def bag():
    weights = torch.linspace(-1, 1, 20, dtype=torch.float64)
    weights[[PAD, MASK]] = 0.0
    weights[CLS] = 0.5
    ids = torch.tensor([[CLS, 7, 12, 19, 4, 15, PAD, PAD],
                        [CLS, 18, 5, PAD, PAD, PAD, PAD, PAD]])
    model = BagOfWords(weights).eval()
    return model, ids, weights[ids] * (ids != CLS), torch.tensor([0, 0])


def test_deletion_of_a_bag_of_words_follows_the_sorted_weights(bag):
    model, ids, exact, target = bag
    steps = 10
    curve = E.deletion(model, ids, exact, target, removal="pad", steps=steps, score_kind="logit")
    assert torch.allclose(curve.fractions, torch.arange(steps + 1, dtype=torch.float64) / steps)
    for row, words in enumerate((5, 2)):  # each sequence removes a fraction of its own words
        words_of_row = (ids[row] != CLS) & (ids[row] != PAD)
        drops = exact[row][words_of_row].sort(descending=True).values.cumsum(0)
        assert len(drops) == words
        f_x = model(ids[row:row + 1])[0, 0]
        for step in range(steps + 1):
            removed = round(step * words / steps)
            expected = f_x - (drops[removed - 1] if removed else 0.0)
            assert curve.scores[row, step].item() == pytest.approx(expected.item(), abs=1e-12)


def test_special_tokens_stay_and_removed_words_become_the_removal_token(bag):
    model, ids, exact, target = bag
    for removal, token in (("pad", PAD), ("mask", MASK), (9, 9)):
        model.seen.clear()
        E.deletion(model, ids, exact, target, removal=removal, steps=4)
        rows = torch.cat(model.seen)
        assert (rows[:, 0] == CLS).all()  # <cls> is never removed
        assert (rows[1::2, 3:] == PAD).all()  # the second sequence's padding stays padding
        changed = rows != ids.repeat(len(rows) // 2, 1)
        assert (rows[changed] == token).all()
        assert (rows[-2:] == torch.where((ids == CLS) | (ids == PAD), ids, token)).all()  # the last step: all words


def test_insertion_starts_from_the_specials_alone_and_ends_at_the_input(bag):
    model, ids, exact, target = bag
    curve = E.insertion(model, ids, exact, target, removal="pad", steps=5, score_kind="logit")
    only_specials = torch.where(ids == CLS, ids, PAD)
    assert torch.allclose(curve.scores[:, 0], model(only_specials)[:, 0])
    assert torch.allclose(curve.scores[:, -1], model(ids)[:, 0])
    assert (curve.scores.diff(dim=1)[0] <= 1e-12).sum() >= 1  # words of negative weight lower the logit


def test_the_exact_map_has_zero_infidelity_and_full_subset_correlation(bag):
    model, ids, exact, target = bag
    infidelity = E.infidelity(model, ids, exact, target, perturbation="subset", baseline="pad", samples=20)
    assert torch.allclose(infidelity, torch.zeros(2, dtype=torch.float64), atol=1e-24)
    wrong = E.infidelity(model, ids, exact.flip(1), target, perturbation="subset", baseline="pad", samples=20)
    assert (wrong > 1e-3).all()
    for correlation in (E.sensitivity_n(model, ids, exact, target, n=1, baseline="pad", samples=10),
                        E.faithfulness_correlation(model, ids, exact, target, baseline="mask", samples=10)):
        assert torch.allclose(correlation, torch.ones(2, dtype=torch.float64))


def test_random_order_is_seeded_and_aopc_of_the_exact_map_beats_its_reverse(bag):
    model, ids, exact, target = bag
    first = E.pixel_flipping(model, ids, exact, target, order="random", removal="mask", seed=3)
    again = E.pixel_flipping(model, ids, exact, target, order="random", removal="mask", seed=3)
    assert torch.equal(first.scores, again.scores)
    best = E.aopc(model, ids, exact, target, removal="mask", steps=10)
    worst = E.aopc(model, ids, -exact, target, removal="mask", steps=10)
    assert (best > worst).all()


def test_bad_token_inputs_get_messages_that_name_the_argument(bag):
    model, ids, exact, target = bag
    with pytest.raises(ValueError, match="removal must be 'pad', 'mask' or a token id.*got 'zeros'"):
        E.deletion(model, ids, exact, target)
    with pytest.raises(ValueError, match="removal must be 'pad', 'mask' or a token id.*got 0.5"):
        E.deletion(model, ids, exact, target, removal=0.5)
    with pytest.raises(ValueError, match="perturbation='subset'.*got perturbation='gaussian'"):
        E.infidelity(model, ids, exact, target)
    with pytest.raises(ValueError, match=r"attr of shape \(2, 4\) does not fit the token ids"):
        E.deletion(model, ids, exact[:, :4], target, removal="pad")
    with pytest.raises(ValueError, match=r"subset size must be an integer between 1 and the removable tokens.*\(2\)"):
        E.sensitivity_n(model, ids, exact, target, n=3, baseline="pad")
    with pytest.raises(ValueError, match=r"x\[1\] has no token to remove"):
        E.deletion(model, torch.tensor([[CLS, 5], [CLS, PAD]]), exact[:, :2], target, removal="pad")
    for robustness in (E.max_sensitivity, E.avg_sensitivity, E.local_lipschitz, E.relative_input_stability):
        with pytest.raises(TypeError, match="token ids.*have no such neighbourhood"):
            robustness(lambda m, x, t: exact, model, ids, target)
    with pytest.raises(ValueError, match="token ids >= 0"):
        E.deletion(model, -ids, exact, target, removal="pad")
    plain = nn.Sequential(nn.Embedding(20, 2), nn.Flatten(), nn.Linear(16, 2)).eval()
    with pytest.raises(ValueError, match="removal='pad' needs the model's pad_id"):
        E.deletion(plain, ids, exact.float(), target, removal="pad")
    E.deletion(plain, ids, exact.float(), target, removal=1)  # a model without specials: any token id, all removable


def test_the_report_card_removes_words_on_a_text_transformer():
    (model, ids), target = small_text_model(padded=True), torch.tensor([0, 1, 1])
    before = snapshot(model)
    card = E.evaluate(model, ids, target, n_boot=20, progress=False)
    assert set(card.method) == {"embedding_integrated_gradients", "lrp", "random"}
    assert set(card.metric) == {"deletion", "insertion", "aopc", "infidelity", "faithfulness_correlation",
                                "sparseness", "complexity"}  # max-sensitivity has no neighbourhood of token ids
    settings = dict(zip(card.metric, card.settings))
    assert "removal='pad'" in settings["deletion"] and "removal='mask'" in settings["aopc"]
    assert "perturbation='subset'" in settings["infidelity"] and "sigma" not in settings["infidelity"]
    assert card["mean"].notna().all() and (card.n == 3).all()
    ig = card[(card.method == "embedding_integrated_gradients") & (card.metric == "faithfulness_correlation")]
    control = card[(card.method == "random") & (card.metric == "faithfulness_correlation")]
    assert ig["mean"].item() > control["mean"].item()
    attr = embedding_integrated_gradients(model, ids, target)
    assert torch.equal(E.deletion(model, ids, attr, target, removal="pad").area,
                       E.deletion(model, ids, attr, target, removal=model.pad_id).area)
    lrp(model, ids, target)
    assert_unchanged(model, before)
    named = E.evaluate(model, ids, target, methods={"lrp": lrp}, metrics=["deletion", "infidelity"], n_boot=20,
                       progress=False)  # metrics named by the caller remove words as the defaults do
    assert dict(zip(named.metric, named.settings)) == {"deletion": settings["deletion"],
                                                       "infidelity": settings["infidelity"]}
    with pytest.raises(TypeError, match="token ids"):
        E.evaluate(model, ids, target, methods={"lrp": lrp}, metrics=["max_sensitivity"], progress=False)


def test_localisation_scores_a_token_map_against_a_rationale_within_the_valid_positions():
    from sklearn.metrics import roc_auc_score

    attr = torch.tensor([[9.0, 0.5, 3.0, -1.0, 2.0, 7.0, 7.0],
                         [9.0, 4.0, 0.1, 0.2, 5.0, 0.0, 0.0]], dtype=torch.float64)
    rationale = torch.tensor([[0, 0, 1, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    words = torch.tensor([[0, 1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)  # no <cls>, no <pad>
    # row 0: of the words, 3.0 is the largest and on the rationale; row 1: 5.0 is off it (4.0 is on)
    assert E.pointing_game(attr, rationale, valid=words).tolist() == [1.0, 0.0]
    assert E.pointing_game(attr, rationale).tolist() == [0.0, 0.0]  # without valid, <cls> (9.0) wins
    mass = E.relevance_mass_accuracy(attr, rationale, valid=words)
    assert torch.allclose(mass, torch.tensor([5.0 / 5.5, 4.0 / 9.3], dtype=torch.float64))
    assert E.relevance_rank_accuracy(attr, rationale, valid=words).tolist() == [1.0, 0.0]
    expected = [roc_auc_score(rationale[i][words[i]].numpy(), attr[i][words[i]].numpy()) for i in range(2)]
    assert torch.allclose(E.auc(attr, rationale, valid=words), torch.tensor(expected, dtype=torch.float64))
    with pytest.raises(ValueError, match="valid .* must have the mask's shape"):
        E.auc(attr, rationale, valid=words[:, :3])
    with pytest.raises(ValueError, match="tolerance is a distance in pixels"):
        E.pointing_game(attr, rationale, tolerance=1.0, valid=words)
    with pytest.raises(ValueError, match="covers the whole image \\(or every valid position\\)"):
        E.auc(attr, rationale, valid=rationale)
    with pytest.raises(ValueError, match="sequences of the same length"):
        E.auc(attr, rationale[:, :5])
