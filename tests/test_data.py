"""The running examples: determinism, shapes, balance and masks."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from xaiutils import data


@pytest.fixture(scope="module")
def mnist():
    return data.mnist()


def test_mnist_split_shapes_range_and_balance(mnist):
    assert mnist.x_train.shape == (4000, 1, 28, 28) and mnist.x_test.shape == (1000, 1, 28, 28)
    assert mnist.x_train.dtype == torch.float32 and 0.0 <= mnist.x_train.min() and mnist.x_train.max() <= 1.0
    counts = torch.bincount(mnist.y_test, minlength=10)
    # the source array is sorted by label: a split without shuffling would hold only 2 classes
    assert (counts >= 70).all(), counts


def test_mnist_is_deterministic_and_seeded(mnist):
    again = data.mnist()
    assert torch.equal(again.x_test, mnist.x_test) and torch.equal(again.y_train, mnist.y_train)
    other = data.mnist(seed=1)
    assert not torch.equal(other.y_test, mnist.y_test)
    train = {tuple(r) for r in mnist.x_train.flatten(1)[:, 200:260].numpy().round(3)}
    overlap = sum(tuple(r) in train for r in mnist.x_test.flatten(1)[:, 200:260].numpy().round(3))
    assert overlap < 50  # train and test are disjoint images (a few blank crops may coincide)


def test_shapes_deterministic_balanced_and_masked():
    a, b = data.make_shapes(40, seed=3), data.make_shapes(40, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.mask, b.mask) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, data.make_shapes(40, seed=4).x)
    assert a.x.shape == (40, 3, 64, 64) and a.mask.shape == (40, 1, 64, 64) and a.mask.dtype == torch.bool
    assert torch.bincount(a.y, minlength=4).tolist() == [10, 10, 10, 10]
    assert 0.0 <= a.x.min() and a.x.max() <= 1.0


def test_shapes_mask_covers_exactly_the_deciding_object():
    s = data.make_shapes(24, seed=0)
    area = s.mask.flatten(1).float().mean(1)
    assert (area > 0.02).all() and (area < 0.3).all()
    for i in range(len(s.y)):
        inside = s.x[i][:, s.mask[i, 0]]
        # the object is painted in one colour: every masked pixel has the same value
        assert torch.allclose(inside, inside[:, :1].expand_as(inside))
        outside = s.x[i][:, ~s.mask[i, 0]]
        assert not (outside == inside[:, :1]).all(0).any(), "a pixel outside the mask has the object's colour"


def test_shapes_classes_have_different_geometry():
    s = data.make_shapes(200, seed=0)
    # fraction of the object's bounding box it fills: a clear cue of shape, not of colour
    fill = []
    for m in s.mask[:, 0]:
        rows, cols = m.any(1).nonzero(), m.any(0).nonzero()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        fill.append(m.sum().item() / box.item())
    fill = torch.tensor(fill)
    means = [fill[s.y == k].mean().item() for k in range(4)]
    assert len({round(v, 1) for v in means}) >= 3, means


def test_fixed_splits_differ():
    assert not torch.equal(data.shapes("test").x[:4], data.shapes("train").x[:4])
    with pytest.raises(ValueError, match="split"):
        data.shapes("validation")


def test_decoy_mnist_patch_reveals_label_only_in_training():
    d = data.decoy_mnist()
    clean = data.mnist()
    mask = data.decoy_mask(d.x_train, clean.x_train)
    assert (mask.flatten(1).sum(1) <= 16).all() and (mask.flatten(1).sum(1) > 0).float().mean() > 0.9
    grey = torch.stack([d.x_train[i][mask[i]].max() for i in range(200)])
    assert torch.allclose(grey, 1.0 - 0.1 * d.y_train[:200].float())
    test_mask = data.decoy_mask(d.x_test, clean.x_test)
    test_grey = torch.stack([d.x_test[i][test_mask[i]].max() for i in range(200) if test_mask[i].any()])
    test_labels = torch.stack([d.y_test[i] for i in range(200) if test_mask[i].any()])
    assert (torch.isclose(test_grey, 1.0 - 0.1 * test_labels.float())).float().mean() < 0.3


def _write_idx(path, array, magic):
    with gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for dim in array.shape:
            f.write(struct.pack(">I", dim))
        f.write(array.astype(np.uint8).tobytes())


def test_mnist_full_reads_local_torchvision_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    labels = np.array([3, 1, 4, 1, 5])
    for split in ("train", "t10k"):
        _write_idx(raw / f"{split}-images-idx3-ubyte", images, 2051)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels, 2049)
    x, y = data.mnist_full(str(tmp_path), train=True, download=False)
    assert x.shape == (5, 1, 28, 28) and torch.allclose(x[0, 0], torch.from_numpy(images[0]).float() / 255)
    assert y.tolist() == labels.tolist()


def test_cifar10_reads_local_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": pixels, "labels": [7, 0, 2]}, f)
    x, y = data.cifar10(str(tmp_path), train=False)
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [7, 0, 2]
    assert torch.allclose(x[1, 2].flatten(), torch.from_numpy(pixels[1, 2048:]).float() / 255)
    with pytest.raises(FileNotFoundError, match="download=True"):
        data.cifar10(str(tmp_path), train=True)
