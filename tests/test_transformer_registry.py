"""The registry of methods that need a transformer or token ids (TRANSFORMER_METHODS): the contract of
tests/test_registry.py on a vision transformer and a text transformer (shape, finite values, the model and
the input left as they were, batch_size changing nothing), a clear refusal on a CNN, names the report card
resolves, and the star import."""
import re
from pathlib import Path

import pytest
import torch
from helpers import assert_unchanged, mnist_cnn, small_text_model, small_vit, snapshot

from xaiutils import TRANSFORMER_METHODS
from xaiutils.attribution import METHODS, attention, embeddings
from xaiutils.evaluation import available_methods

BIB = (Path(__file__).parents[1] / "book" / "references.bib").read_text()
FAST = {"embedding_integrated_gradients": {"steps": 8}}
ON_IMAGES = [name for name, m in TRANSFORMER_METHODS.items() if m.family == "attention"]


def test_metadata_is_complete_and_apart_from_the_cnn_registry():
    keys = set(re.findall(r"@\w+\{([^,]+),", BIB))
    assert set(TRANSFORMER_METHODS) == {"raw_attention", "attention_rollout", "attention_relevance",
                                        "embedding_integrated_gradients"}
    assert not set(TRANSFORMER_METHODS) & set(METHODS)
    for name, m in TRANSFORMER_METHODS.items():
        assert m.name == name and m.function.__doc__ and m.bibkey in keys
        assert m.family in {"attention", "path"} and m.chapter in (15, 16) and m.map_shape in {"input", "layer"}
    assert TRANSFORMER_METHODS["attention_rollout"].function is attention.attention_rollout
    assert TRANSFORMER_METHODS["embedding_integrated_gradients"].function is \
        embeddings.embedding_integrated_gradients


@pytest.mark.parametrize("kind", ["vit", "text"])
@pytest.mark.parametrize("name", TRANSFORMER_METHODS)
def test_contract_on_a_vision_and_a_text_transformer(name, kind):
    if kind == "vit" and name not in ON_IMAGES:
        pytest.skip("integrated gradients on embeddings takes token ids")
    model, x = small_vit() if kind == "vit" else small_text_model(padded=True)
    x = x[:3]
    method, target = TRANSFORMER_METHODS[name], torch.tensor([0, 1, 1])
    before, x_before = snapshot(model), x.clone()
    model.train()  # explained in eval mode, with a warning, and given back in training mode
    with pytest.warns(UserWarning, match="training mode"):
        attr = method(model, x, target, **FAST.get(name, {}))
    assert model.training
    model.eval()
    expected = x.shape if kind == "text" else (len(x), 1, *x.shape[2:])
    assert attr.shape == expected and torch.isfinite(attr).all()
    assert_unchanged(model, before)
    assert torch.equal(x, x_before)
    one_by_one = method(model, x, target, batch_size=1, **FAST.get(name, {}))
    assert torch.allclose(one_by_one, attr, atol=1e-5 * attr.abs().max().item())
    with pytest.raises(ValueError, match="out of range"):
        method(model, x, 10, **FAST.get(name, {}))
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", TRANSFORMER_METHODS)
def test_a_cnn_is_refused_with_a_message(name):
    model = mnist_cnn()
    expected = "token ids" if name == "embedding_integrated_gradients" else "must contain attention layers"
    with pytest.raises((TypeError, ValueError), match=expected):
        TRANSFORMER_METHODS[name](model, torch.rand(2, 1, 28, 28), 0)


def test_the_report_card_knows_them_by_name_and_the_star_import_exports_them():
    known = available_methods()
    assert all(known[name] is entry for name, entry in TRANSFORMER_METHODS.items())
    namespace = {}
    exec("from xaiutils.attribution import *", namespace)
    assert {"TRANSFORMER_METHODS", *TRANSFORMER_METHODS} <= set(namespace)
