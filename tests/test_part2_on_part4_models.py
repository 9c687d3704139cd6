"""Part II's checks on Part IV's models (issue #14): the sanity checks, faithfulness and robustness metrics
and the report card run on a vision transformer, a table MLP and (where the input is token ids) a text
transformer, whose words the perturbation metrics remove (known answers in tests/test_token_metrics.py); what
does not apply to token ids says so by name. Small random models: the checks here are
that each tool runs, returns finite numbers of the right kind and leaves the model as it was."""
import math

import pytest
import torch
from helpers import assert_unchanged, small_text_model, small_vit, snapshot

from xaiutils import evaluation as E
from xaiutils.attribution import integrated_gradients, lrp
from xaiutils.attribution.attention import attention_relevance, attention_rollout
from xaiutils.models import TabularMLP


@pytest.fixture(scope="module")
def vit():
    return *small_vit(), torch.tensor([0, 1, 2, 3])


@pytest.fixture(scope="module")
def table():
    torch.manual_seed(1)
    return TabularMLP(13, 3).eval(), torch.randn(6, 13), torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.fixture(scope="module")
def text():
    return *small_text_model(), torch.tensor([0, 1, 1])


def finite(values) -> bool:
    return all(math.isfinite(float(v)) for v in torch.as_tensor(values).flatten())


def test_vit_runs_every_kind_of_part_ii_check(vit):
    model, x, target = vit
    before = snapshot(model)
    attr = lrp(model, x, target)
    for curve in (E.deletion(model, x, attr, target), E.insertion(model, x, attr, target)):
        assert finite(curve.area) and curve.area.shape == (4,)
    assert finite(E.infidelity(model, x, attr, target)) and finite(E.max_sensitivity(lrp, model, x, target))
    sanity = E.model_randomisation(model, x, target, {"lrp": lrp, "chefer": attention_relevance,
                                                      "rollout": attention_rollout}, progress=False)
    assert set(sanity.method) == {"lrp", "chefer", "rollout"} and set(sanity.metric) == {"spearman_abs", "spearman",
                                                                                          "ssim"}
    assert finite(sanity.value.dropna()) and sanity.step.max() == len(E.learnable_layers(model))
    card = E.evaluate(model, x, target, methods={"lrp": lrp, "chefer": attention_relevance}, n_boot=20, progress=False)
    assert set(card.method) == {"lrp", "chefer"} and finite(card["mean"].dropna())
    assert_unchanged(model, before)


def test_tables_get_the_checks_that_apply_to_them(table):
    model, x, target = table
    before = snapshot(model)
    sanity = E.model_randomisation(model, x, target, {"ig": integrated_gradients}, progress=False)
    assert set(sanity.metric) == {"spearman_abs", "spearman"}  # no SSIM: a row of features is no image
    with pytest.raises(ValueError, match="SSIM needs image maps"):
        E.model_randomisation(model, x, target, {"ig": integrated_gradients}, similarities=["ssim"], progress=False)
    card = E.evaluate(model, x, target, n_boot=20, progress=False)
    assert "grad_cam" not in set(card.method) and {"integrated_gradients", "gradient"} <= set(card.method)
    insertion = card[card.metric == "insertion"].settings.iloc[0]
    assert "removal=zeros" in insertion.replace("'", "").replace('"', "").replace(": ", "=")
    assert finite(card["mean"].dropna())
    assert_unchanged(model, before)


def test_token_ids_get_the_sanity_check_and_the_perturbation_metrics_remove_words(text):
    model, ids, target = text
    before = snapshot(model)
    sanity = E.model_randomisation(model, ids, target, {"lrp": lrp}, progress=False)
    assert set(sanity.metric) == {"spearman_abs", "spearman"} and finite(sanity.value.dropna())
    attr = lrp(model, ids, target)
    for curve in (E.deletion(model, ids, attr, target, removal="pad"),
                  E.insertion(model, ids, attr, target, removal="mask")):
        assert finite(curve.area) and curve.area.shape == (3,)
    assert finite(E.infidelity(model, ids, attr, target, perturbation="subset", baseline="pad"))
    with pytest.raises(ValueError, match="token ids, so removal must be 'pad', 'mask' or a token id"):
        E.deletion(model, ids, attr, target)  # the default removal, zeros, is for continuous inputs
    with pytest.raises(TypeError, match="token ids"):
        E.max_sensitivity(lrp, model, ids, target)
    card = E.evaluate(model, ids, target, methods={"lrp": lrp}, n_boot=20, progress=False)
    assert "max_sensitivity" not in set(card.metric) and finite(card["mean"])
    assert_unchanged(model, before)


def test_model_randomisation_reaches_the_attention_projections_and_the_position_embedding(vit):
    """On a ViT, parameters live outside leaf layers too: nn.MultiheadAttention's in_proj_weight and the
    encoder's pos_embedding. The cascading test randomises every one of them (the class token, a parameter
    of the model itself, is no layer), and each step changes only its own layer's parameters."""
    import copy

    model, x, target = vit
    model = copy.deepcopy(model)
    with torch.no_grad():  # every parameter away from its initial value, as after training
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    layers = E.learnable_layers(model)
    assert {"encoder", "encoder.layers.encoder_layer_0.self_attention",
            "encoder.layers.encoder_layer_0.self_attention.out_proj"} <= set(layers)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def record(randomised, x, target):
        seen.append({k: v.clone() for k, v in randomised.state_dict().items()})
        return lrp(randomised, x, target)

    E.model_randomisation(model, x, target, {"lrp": record}, progress=False)
    last = seen[-1]
    unchanged = {k for k in original if torch.equal(original[k], last[k])}
    assert unchanged == {"class_token"}
    order = list(reversed(layers))  # seen[0]: the trained model's map; seen[k]: after step k

    def changed_by(name):
        before, after = seen[order.index(name)], seen[order.index(name) + 1]
        return {k for k in original if not torch.equal(before[k], after[k])}

    attention = "encoder.layers.encoder_layer_1.self_attention"
    assert changed_by(attention) == {attention + ".in_proj_weight", attention + ".in_proj_bias"}
    assert changed_by(attention + ".out_proj") == {attention + ".out_proj.weight", attention + ".out_proj.bias"}
    assert changed_by("encoder") == {"encoder.pos_embedding"}
