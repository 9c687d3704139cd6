"""The architectures, the training loop and the shipped model zoo."""
import json
import shutil

import pytest
import torch

from xaiutils import data, models


def test_architectures_have_the_documented_layers():
    cnn = models.MnistCNN()
    assert cnn(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    names = dict(cnn.named_modules())
    for name in ("block1.conv", "block2.conv", "block3.conv", "block3.relu", "gap", "fc"):
        assert name in names
    resnet = models.ShapesResNet()
    assert resnet(torch.rand(2, 3, 64, 64)).shape == (2, 4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in resnet.modules())
    assert isinstance(resnet.layer2.shortcut.conv, torch.nn.Conv2d)


def test_train_is_seeded_and_reduces_the_loss():
    x, y = torch.rand(64, 1, 28, 28), torch.arange(64) % 10
    losses = []
    for _ in range(2):
        torch.manual_seed(1)
        model = models.MnistCNN((4, 4, 8))
        losses.append(models.train(model, x, y, epochs=3, lr=1e-2, seed=0, progress=False))
    assert losses[0] == losses[1]
    assert losses[0][-1] < losses[0][0]
    assert not model.training


@pytest.fixture(scope="module")
def shipped():
    return {name: models.load(name) for name in models.ZOO}


def test_mnist_standard_reaches_97_percent(shipped):
    d = data.mnist()
    assert models.accuracy(shipped["mnist-standard"], d.x_test, d.y_test) >= 0.97


def test_shapes_standard_reaches_95_percent(shipped):
    s = data.shapes("test")
    assert models.accuracy(shipped["shapes-standard"], s.x, s.y) >= 0.95


def test_loaded_models_are_in_eval_mode(shipped):
    assert all(not m.training for m in shipped.values())


def test_load_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="available: mnist-standard"):
        models.load("imagenet-resnet")
    monkeypatch.setattr(models, "WEIGHTS", tmp_path)
    with pytest.raises(FileNotFoundError, match="make weights"):
        models.load("mnist-standard")
    shutil.copy(models.__file__.replace("models.py", "weights/mnist-standard.pt"), tmp_path / "mnist-standard.pt")
    (tmp_path / "manifest.json").write_text(json.dumps({"mnist-standard": {"sha256": "0" * 64}}))
    with pytest.raises(RuntimeError, match="SHA-256.*make weights"):
        models.load("mnist-standard")


def test_random_shift_moves_content_without_rescaling():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 4, 4] = 1.0
    shifted = models.random_shift(x, torch.Generator().manual_seed(0), pixels=2)
    assert shifted.shape == x.shape and shifted.sum() <= 1.0 and shifted.max() in (0.0, 1.0)
