"""The architectures, the training loop and the shipped model zoo."""
import functools
import json
import shutil

import pytest
import torch

from xaiutils import data, models, zoo


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
    return {name: zoo.load(name) for name in zoo.ZOO}


@functools.lru_cache(maxsize=None)
def seed_of(name: str, seed: int) -> torch.nn.Module:
    return zoo.load(name, seed=seed)


SEEDS = (0, 1, 2)  # every recipe that Part II compares ships three seeds; each must pass the same checks


@pytest.mark.parametrize("seed", SEEDS)
def test_mnist_standard_reaches_97_percent(seed):
    d = data.mnist()
    assert models.accuracy(seed_of("mnist-standard", seed), d.x_test, d.y_test) >= 0.97


@pytest.mark.parametrize("seed", SEEDS)
def test_shapes_standard_reaches_95_percent(seed):
    s = data.shapes("test")
    assert models.accuracy(seed_of("shapes-standard", seed), s.x, s.y) >= 0.95


def test_the_compared_recipes_ship_three_independent_seeds():
    compared = ("mnist-standard", "mnist-pgd", "mnist-gradreg", "mnist-noise", "shapes-standard", "shapes-pgd",
                "decoy-mnist-standard")  # chapters 14 and 18 check the decoy model over its seeds
    for name in compared:
        assert zoo.ZOO[name].seeds == 3
        ensemble = zoo.load_seeds(name)
        assert len(ensemble) == 3 and all(not m.training for m in ensemble)
        first = [torch.cat([p.flatten() for p in m.parameters()]) for m in ensemble]
        for i in range(3):
            for j in range(i + 1, 3):  # different initial weights and training: no two seeds are close
                assert (first[i] - first[j]).abs().mean() > 1e-3 * first[i].abs().mean()
    assert zoo.weights_file("mnist-pgd", 0).name == "mnist-pgd.pt"
    assert zoo.weights_file("mnist-pgd", 2).name == "mnist-pgd.seed2.pt"


def test_seed_zero_is_the_recipe_as_written_and_other_seeds_differ():
    from xaiutils.adversarial.training import noise_augmented_loss

    tiny = functools.partial(models.MnistCNN, (2, 2, 4))
    recipe = zoo.Recipe(tiny, "mnist", (zoo.Phase(1, 1e-2, seed=3, loss=lambda seed: noise_augmented_loss(
        0.3, seed=zoo.SEED_STRIDE * seed)),))
    d = data.mnist()
    torch.manual_seed(0)
    by_hand = tiny()
    models.train(by_hand, d.x_train, d.y_train, epochs=1, lr=1e-2, seed=3, loss_fn=noise_augmented_loss(0.3),
                 progress=False)
    seed0, seed1 = (zoo.train_recipe(recipe, seed=k, progress=False) for k in (0, 1))
    for a, b in zip(by_hand.parameters(), seed0.parameters()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(seed0.parameters(), seed1.parameters()))


def test_seed_errors_name_what_is_shipped():
    with pytest.raises(ValueError, match=r"seed must be one of 0..2 for 'mnist-standard'.*got 3"):
        zoo.load("mnist-standard", seed=3)
    with pytest.raises(ValueError, match=r"seed must be one of 0..0 for 'mnist-random-labels'.*got 1"):
        zoo.load("mnist-random-labels", seed=1)
    with pytest.raises(TypeError, match="seed must be an integer >= 0; got True"):
        zoo.load("mnist-standard", seed=True)
    with pytest.raises(ValueError, match="seed must be an integer >= 0; got -1"):
        zoo.train_recipe(zoo.ZOO["mnist-standard"], seed=-1)
    with pytest.raises(ValueError, match="each of seeds must be an integer >= 0"):
        zoo.build_weights(["mnist-standard"], seeds=[-1])


def test_loaded_models_are_in_eval_mode(shipped):
    assert all(not m.training for m in shipped.values())


def test_load_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="name must be one of 'mnist-standard', .*; got 'imagenet-resnet'"):
        zoo.load("imagenet-resnet")
    monkeypatch.setattr(zoo, "WEIGHTS", tmp_path)
    with pytest.raises(FileNotFoundError, match="make weights"):
        zoo.load("mnist-standard")
    shutil.copy(models.__file__.replace("models.py", "weights/mnist-standard.pt"), tmp_path / "mnist-standard.pt")
    (tmp_path / "manifest.json").write_text(json.dumps({"mnist-standard": {"sha256": "0" * 64}}))
    with pytest.raises(RuntimeError, match="SHA-256.*make weights"):
        zoo.load("mnist-standard")
    (tmp_path / "manifest.json").write_text('{"mnist-standard": {"sha256": ')  # cut short: corrupt
    with pytest.raises(RuntimeError, match="manifest.json is not valid JSON.*make weights"):
        zoo.load("mnist-standard")
    (tmp_path / "manifest.json").write_text('["mnist-standard"]')
    with pytest.raises(RuntimeError, match="must map each model name"):
        zoo.load("mnist-standard")


def test_random_shift_moves_content_without_rescaling():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 4, 4] = 1.0
    shifted = models.random_shift(x, torch.Generator().manual_seed(0), pixels=2)
    assert shifted.shape == x.shape and shifted.sum() <= 1.0 and shifted.max() in (0.0, 1.0)


# ---------------------------------------------------------------------------- robust and control models
# Thresholds a little below what the shipped weights measured (seeded CPU training): mnist-pgd 95.5% clean and
# 44% under PGD-20 at eps 0.3 on these 200 images (45.4% under PGD-40 on all 1,000; mnist-standard 0%);
# shapes-pgd 99.2% clean, 88% vs 4% (shapes-standard) under PGD-5 at 8/255 on these 50 images (88.6% vs
# 0.4% under PGD-20 on all 500); mnist-gradreg 96.3% clean; mnist-noise 92.8% clean and 90.0% on test images
# with Gaussian noise of std 0.5 (mnist-standard 11.9%). Seeds 1 and 2 (2026-12-05): mnist-pgd 95.4% and 95.7%
# clean, mnist-gradreg 96.3% and 96.4%, mnist-noise 92.7% and 90.4% clean, 90.7% and 90.9% with noise; the
# thresholds hold for every seed.
MNIST_PGD_CLEAN, MNIST_PGD_ROBUST = 0.95, 0.35
SHAPES_PGD_CLEAN, SHAPES_PGD_GAP = 0.98, 0.5
MNIST_GRADREG_CLEAN = 0.95
MNIST_NOISE_CLEAN, MNIST_NOISE_NOISY = 0.89, 0.85


@pytest.mark.parametrize("seed", SEEDS)
def test_mnist_pgd_resists_pgd_where_the_standard_model_does_not(seed):
    from xaiutils.adversarial import robust_accuracy

    d = data.mnist()
    x, y = d.x_test[:200], d.y_test[:200]
    assert models.accuracy(seed_of("mnist-pgd", seed), d.x_test, d.y_test) >= MNIST_PGD_CLEAN
    standard = robust_accuracy(seed_of("mnist-standard", seed), x, y, epsilon=0.3, steps=20)
    robust = robust_accuracy(seed_of("mnist-pgd", seed), x, y, epsilon=0.3, steps=20)
    assert standard <= 0.02 and robust >= MNIST_PGD_ROBUST


@pytest.mark.parametrize("seed", SEEDS)
def test_shapes_pgd_resists_pgd_where_the_standard_model_does_not(seed):
    from xaiutils.adversarial import robust_accuracy

    s = data.shapes("test")
    assert models.accuracy(seed_of("shapes-pgd", seed), s.x, s.y) >= SHAPES_PGD_CLEAN
    x, y = s.x[:50], s.y[:50]
    standard = robust_accuracy(seed_of("shapes-standard", seed), x, y, epsilon=8 / 255, steps=5)
    robust = robust_accuracy(seed_of("shapes-pgd", seed), x, y, epsilon=8 / 255, steps=5)
    assert robust >= standard + SHAPES_PGD_GAP


@pytest.mark.parametrize("seed", SEEDS)
def test_mnist_gradreg_is_accurate(seed):
    d = data.mnist()
    assert models.accuracy(seed_of("mnist-gradreg", seed), d.x_test, d.y_test) >= MNIST_GRADREG_CLEAN


@pytest.mark.parametrize("seed", SEEDS)
def test_mnist_noise_is_accurate_and_resists_gaussian_noise_where_the_standard_model_does_not(seed):
    d = data.mnist()
    noisy = d.x_test + zoo.NOISE_SIGMA * torch.randn(d.x_test.shape, generator=torch.Generator().manual_seed(0))
    assert models.accuracy(seed_of("mnist-noise", seed), d.x_test, d.y_test) >= MNIST_NOISE_CLEAN
    assert models.accuracy(seed_of("mnist-noise", seed), noisy, d.y_test) >= MNIST_NOISE_NOISY
    assert models.accuracy(seed_of("mnist-standard", seed), noisy, d.y_test) <= 0.3


def test_mnist_random_labels_memorised_its_labels_and_learned_nothing(shipped):
    d = data.mnist()
    model = shipped["mnist-random-labels"]
    assert models.accuracy(model, d.x_train, models.random_labels(d.y_train)) >= 0.95
    assert models.accuracy(model, d.x_test, d.y_test) <= 0.15  # chance is 0.1
    assert not torch.equal(models.random_labels(d.y_train), d.y_train)
    assert torch.equal(models.random_labels(d.y_train).sort().values, d.y_train.sort().values)


@pytest.mark.parametrize("seed", SEEDS)
def test_decoy_mnist_standard_fits_the_decoys_and_fails_without_them(shipped, seed):
    dd = data.decoy_mnist()
    model = seed_of("decoy-mnist-standard", seed)
    train_accuracy = models.accuracy(model, dd.x_train, dd.y_train)
    assert train_accuracy >= 0.99
    assert models.accuracy(model, dd.x_test, dd.y_test) <= train_accuracy - 0.1
    # the model trained without decoys is not fooled by the test patches
    assert models.accuracy(shipped["mnist-standard"], dd.x_test, dd.y_test) >= 0.95
