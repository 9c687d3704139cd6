"""ROAR / KAR (Hooker et al. 2019) on a synthetic task whose informative pixels are known."""
import pytest
import torch
from torch import nn

from helpers import assert_unchanged, snapshot
from xaiutils.evaluation import roar


def task(n, seed):
    """Label 1 iff the mean of the top-left 2x2 pixels exceeds 0.5; the other 60 pixels are noise."""
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return x, (x[:, 0, :2, :2].mean((1, 2)) > 0.5).long()


def perfect(model, x, target):
    attr = torch.zeros_like(x)
    attr[:, :, :2, :2] = 1.0
    return attr


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2)).eval()


@pytest.fixture(scope="module")
def data():
    return (*task(1500, 0), *task(500, 1))


def test_removing_the_informative_pixels_destroys_accuracy_random_removal_does_not(data):
    model = mlp()
    before = snapshot(model)
    options = dict(fractions=(0.0, 4 / 64), epochs=15, train_options=dict(lr=1e-2), progress=False)
    good = roar(perfect, model, *data, **options)
    chance = roar("random", model, *data, **options)
    assert list(good.columns) == ["fraction", "accuracy", "mode"] and (good["mode"] == "roar").all()
    assert good["accuracy"].iloc[0] > 0.85 and chance["accuracy"].iloc[0] == good["accuracy"].iloc[0]
    assert good["accuracy"].iloc[1] < 0.65  # the label is gone: about chance
    assert chance["accuracy"].iloc[1] > 0.8
    assert_unchanged(model, before)


def test_keep_and_retrain(data):
    kar = roar(perfect, mlp(), *data, fractions=(4 / 64,), keep=True, epochs=15, train_options=dict(lr=1e-2),
               progress=False)
    assert kar["mode"].tolist() == ["kar"] and kar["accuracy"].iloc[0] > 0.85  # the 4 pixels are enough


def test_bad_input(data):
    with pytest.raises(ValueError, match="fractions"):
        roar(perfect, mlp(), *data, fractions=(1.5,), progress=False)
    with pytest.raises(ValueError, match="removal must be one of 'zeros', .*; got 'black'"):
        roar(perfect, mlp(), *data, removal="black", progress=False)
    with pytest.raises(TypeError, match="random"):
        roar("gradient", mlp(), *data, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        roar(perfect, mlp(), *data, epochs=0, progress=False)


def test_precomputed_maps_give_the_same_result_as_the_method(data):
    options = dict(fractions=(4 / 64,), epochs=15, train_options=dict(lr=1e-2), progress=False)
    x_train, _, x_test, _ = data
    by_method = roar(perfect, mlp(), *data, **options)
    by_maps = roar((perfect(None, x_train, None), perfect(None, x_test, None)), mlp(), *data, **options)
    assert by_maps["accuracy"].tolist() == by_method["accuracy"].tolist()
    with pytest.raises(TypeError, match="pair"):
        roar((perfect(None, x_train, None),), mlp(), *data, **options)
    with pytest.raises(ValueError, match="method\\[1\\]"):
        roar((perfect(None, x_train, None), x_test[:3]), mlp(), *data, **options)


def test_predicted_target_explains_the_models_prediction_and_leaves_the_model_unchanged(data):
    seen = []

    def recording(model, x, target):
        seen.append(target.clone())
        return perfect(model, x, target)

    model = mlp().train()  # a model left in training mode is explained in eval mode and restored
    before = snapshot(model)
    with pytest.warns(UserWarning, match="training mode"):
        roar(recording, model, *data, fractions=(0.0,), epochs=1, target="predicted", batch_size=5000,
                 progress=False)
    with torch.no_grad():
        expected = [model.eval()(x).argmax(1) for x in (data[0], data[2])]
    model.train()
    assert len(seen) == 2 and all(torch.equal(got, want) for got, want in zip(seen, expected))
    assert not torch.equal(seen[0], data[1])  # an untrained network does not predict the labels
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="target must be 'label' or 'predicted'; got 'true'"):
        roar(perfect, mlp(), *data, target="true", progress=False)
