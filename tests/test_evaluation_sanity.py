"""Sanity checks (Adebayo et al. 2018): model-parameter and data randomisation, on copies of the model."""
import functools

import pandas as pd
import pytest
import torch

from helpers import assert_unchanged, mnist_cnn, shapes_resnet, snapshot
from xaiutils.attribution.cam import grad_cam
from xaiutils.attribution.gradients import gradient
from xaiutils.evaluation import sanity as S
from xaiutils.models import MnistCNN


def the_input(model, x, target):
    """An "edge detector": the map is the input itself and ignores the model."""
    return x.clone()


@pytest.fixture
def cnn():
    return mnist_cnn(), torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 2, 3])


def test_gradient_maps_change_under_cascading_randomisation_while_the_input_map_does_not(cnn):
    model, x, y = cnn
    before = snapshot(model)
    table = S.model_randomisation(model, x, y, {"gradient": gradient, "input": the_input}, progress=False)
    assert list(table.columns) == ["method", "layer", "step", "metric", "value", "std", "n"]
    assert table["layer"].drop_duplicates().tolist() == ["fc", "block3.conv", "block2.conv", "block1.conv"]
    assert len(table) == 4 * 2 * 3
    ours = table[table.method == "input"]
    assert (ours["value"] == 1.0).all()
    grad = table[(table.method == "gradient") & (table.metric == "spearman_abs")]
    assert (grad["value"] < 0.9).all()
    # cascading: once everything is random, the map is far from the original
    assert grad["value"].iloc[-1] < 0.6
    assert_unchanged(model, before)


def test_independent_randomisation_randomises_one_layer_at_a_time(cnn):
    model, x, y = cnn
    seen = []

    def record(m, xx, t):
        seen.append({name: p.detach().clone() for name, p in m.named_parameters()})
        return gradient(m, xx, t)

    S.model_randomisation(model, x, y, record, cascading=False, layers=["block1.conv", "fc"], progress=False)
    original, after_fc, after_conv = seen  # the original, then fc, then block1.conv (top down)
    assert not torch.equal(after_fc["fc.weight"], original["fc.weight"])
    assert torch.equal(after_fc["block1.conv.weight"], original["block1.conv.weight"])
    assert torch.equal(after_conv["fc.weight"], original["fc.weight"])  # independent: fc is trained again
    assert not torch.equal(after_conv["block1.conv.weight"], original["block1.conv.weight"])
    S.model_randomisation(model, x, y, (seen.clear() or record), cascading=True, layers=["block1.conv", "fc"],
                          progress=False)
    assert not torch.equal(seen[2]["fc.weight"], seen[0]["fc.weight"])  # cascading: fc stays random


def test_resnet_with_batchnorm_and_a_cam_method():
    model = shapes_resnet()
    before = snapshot(model)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    layers = S.learnable_layers(model)
    assert layers[:2] == ["stem.conv", "stem.bn"] and layers[-1] == "fc"
    table = S.model_randomisation(model, x, 0, {"gradient": gradient}, layers=["layer3.bn2", "fc"],
                                  similarities=["cosine"], progress=False)
    assert len(table) == 2 and (table["value"] < 0.99).all()
    from xaiutils.data import mnist
    from xaiutils.zoo import load

    trained, data = load("mnist-standard"), mnist()
    cam = S.model_randomisation(trained, data.x_test[:4], data.y_test[:4], functools.partial(grad_cam, layer="block3"),
                                layers=["block3.conv"], progress=False)
    assert (cam["value"] < 0.9).all()  # Spearman is averaged over the maps that the ReLU did not zero
    assert (cam["n"] >= 1).all()
    assert_unchanged(model, before)


def test_reinitialise_is_seeded_and_keeps_the_global_random_state():
    a, b, c = MnistCNN(), MnistCNN(), MnistCNN()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    S.reinitialise(a, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    S.reinitialise(b, seed=5)
    S.reinitialise(c, seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_data_randomisation_with_a_model_trained_on_permuted_labels():
    from xaiutils.data import mnist

    data = mnist()
    x, y = data.x_train[:256], data.y_train[:256]
    torch.manual_seed(0)
    trained, random = MnistCNN(channels=(4, 8, 8)), MnistCNN(channels=(4, 8, 8))
    from xaiutils.models import train
    train(trained, x, y, epochs=2, progress=False)
    history = S.train_random_labels(random, x, y, epochs=2, progress=False)
    assert len(history) == 2
    before = snapshot(trained)
    table = S.data_randomisation(trained, random, data.x_test[:4], data.y_test[:4],
                                 {"gradient": gradient, "input": the_input})
    assert isinstance(table, pd.DataFrame) and list(table.columns) == ["method", "metric", "value", "std", "n"]
    assert (table[table.method == "input"]["value"] == 1.0).all()
    assert (table[table.method == "gradient"]["value"] < 0.95).all()
    assert_unchanged(trained, before)


def test_bad_input(cnn):
    model, x, y = cnn
    with pytest.raises(ValueError, match="unknown similarity"):
        S.model_randomisation(model, x, y, gradient, similarities=["hog"], progress=False)
    with pytest.raises(ValueError, match="block9"):
        S.model_randomisation(model, x, y, gradient, layers=["block9"], progress=False)
    with pytest.raises(TypeError, match="methods"):
        S.model_randomisation(model, x, y, {}, progress=False)
