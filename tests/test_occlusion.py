"""Occlusion: known answers on a linear model, then Captum's Occlusion."""
import warnings

import pytest
import torch
from captum import attr as captum_attr
from torch import nn

import helpers
from helpers import assert_untouched, snapshot
from xaiutils.attribution.perturbation import occlusion



def mnist_cnn():
    return helpers.mnist_cnn().double()


def shapes_resnet():
    return helpers.shapes_resnet().double()


def linear(channels=1, size=6, classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, classes)).double().eval()


def images(b=2, c=1, size=28, seed=1):
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------- known answers
def test_one_pixel_windows_on_a_linear_model_give_weight_times_change():
    model, x = linear(), images(2, size=6)
    w = model[1].weight[1].view(1, 1, 6, 6)
    attr = occlusion(model, x, 1, window=(1, 1), stride=1, baseline=0.25)
    assert torch.allclose(attr, w * (x - 0.25), atol=1e-15)


def test_disjoint_windows_on_a_linear_model_share_the_window_sum():
    model, x = linear(channels=2), images(2, c=2, size=6)
    w = model[1].weight[0].view(1, 2, 6, 6)
    attr = occlusion(model, x, 0, window=(3, 2), stride=(3, 2))
    # each pixel lies in exactly one window (all channels, 3 rows, 2 columns): its drop is the window's sum
    window_sums = (w * x).view(2, 2, 2, 3, 3, 2).sum(dim=(1, 3, 5), keepdim=True)
    assert torch.allclose(attr, window_sums.expand(2, 2, 2, 3, 3, 2).reshape(2, 2, 6, 6), atol=1e-15)


def test_overlapping_windows_average_the_drops_of_the_windows_covering_a_pixel():
    model, x = linear(size=4), images(1, size=4)
    w = model[1].weight[2].view(4, 4)
    attr = occlusion(model, x, 2, window=(1, 2), stride=1)
    # row i: windows [0,1], [1,2], [2,3]; their drops d0, d1, d2; pixels 0..3 get d0, (d0+d1)/2, (d1+d2)/2, d2
    d = (w * x[0, 0]).unfold(1, 2, 1).sum(-1)  # (4 rows, 3 windows)
    expected = torch.stack([d[:, 0], (d[:, 0] + d[:, 1]) / 2, (d[:, 1] + d[:, 2]) / 2, d[:, 2]], dim=1)
    assert torch.allclose(attr[0, 0], expected, atol=1e-15)


# ---------------------------------------------------------------------------- Captum
@pytest.mark.parametrize("window, stride, captum_window, captum_stride", [
    ((5, 5), 3, (1, 5, 5), (1, 3, 3)),
    ((8, 8), 4, (1, 8, 8), (1, 4, 4)),
    ((7, 7), (7, 7), (1, 7, 7), (1, 7, 7)),
    ((6, 4), (2, 3), (1, 6, 4), (1, 2, 3)),  # the last windows run past the border and are cut
])
def test_matches_captum_occlusion_on_mnist_cnn(window, stride, captum_window, captum_stride):
    model, x = mnist_cnn(), images(3)
    target = torch.tensor([1, 2, 3])
    ours = occlusion(model, x, target, window=window, stride=stride, baseline=0.3)
    theirs = captum_attr.Occlusion(model).attribute(x, sliding_window_shapes=captum_window, strides=captum_stride,
                                                    baselines=0.3, target=target)
    # Captum divides by the window counts in float32 (attrib.float() / weight): it returns float32.
    assert theirs.dtype == torch.float32 and ours.dtype == torch.float64
    assert torch.allclose(ours, theirs.double(), rtol=0, atol=1e-6 * theirs.abs().max().item())


@pytest.mark.parametrize("window, stride", [((3, 16, 16), (3, 8, 8)), ((1, 16, 16), (1, 12, 12))])
def test_matches_captum_occlusion_on_shapes_resnet(window, stride):
    model, x = shapes_resnet(), images(1, c=3, size=64)
    ours = occlusion(model, x, 2, window=window, stride=stride)
    theirs = captum_attr.Occlusion(model).attribute(x, sliding_window_shapes=window, strides=stride, target=2)
    assert torch.allclose(ours, theirs.double(), rtol=0, atol=1e-6 * theirs.abs().max().item())


# ---------------------------------------------------------------------------- options
def test_batch_size_target_and_baseline_options():
    model, x = mnist_cnn(), images(2)
    full = occlusion(model, x, torch.tensor([4, 6]), window=(7, 7), stride=7)
    for batch_size in (1, 5, 1000):
        chunked = occlusion(model, x, torch.tensor([4, 6]), window=(7, 7), stride=7, batch_size=batch_size)
        assert torch.allclose(chunked, full, rtol=0, atol=1e-12 * full.abs().max().item())
    assert torch.allclose(full[1:], occlusion(model, x[1:], 6, window=(7, 7), stride=7), atol=1e-16)
    by_callable = occlusion(model, x, lambda out: out[:, 4], window=(7, 7), stride=7)
    assert torch.allclose(by_callable, occlusion(model, x, 4, window=(7, 7), stride=7), atol=1e-16)
    grey = torch.full((1, 28, 28), 0.5, dtype=torch.float64)
    assert torch.allclose(occlusion(model, x, 4, window=(7, 7), stride=7, baseline=grey),
                          occlusion(model, x, 4, window=(7, 7), stride=7, baseline=0.5), atol=1e-16)


def test_bad_options_are_rejected():
    model, x = mnist_cnn(), images(1)
    with pytest.raises(ValueError, match="larger than the input"):
        occlusion(model, x, 0, window=(29, 5))
    with pytest.raises(ValueError, match="must not exceed the window"):
        occlusion(model, x, 0, window=(4, 4), stride=5)
    with pytest.raises(ValueError, match="window must be a positive int"):
        occlusion(model, x, 0, window=(0, 4))
    with pytest.raises(ValueError, match="window must be a positive int"):
        occlusion(model, x, 0, window=(1, 1, 4, 4))
    with pytest.raises(ValueError, match="stride must be a positive int"):
        occlusion(model, x, 0, window=(4, 4), stride=(2, 2, 2))
    with pytest.raises(ValueError, match="one entry per window dim"):
        occlusion(model, x, 0, window=(4, 4), stride=(2,))
    with pytest.raises(ValueError, match="does not broadcast"):
        occlusion(model, x, 0, baseline=torch.zeros(2, 28, 28, dtype=torch.float64))
    with pytest.raises(ValueError, match="out of range"):
        occlusion(model, x, 10)


# ---------------------------------------------------------------------------- side effects
def test_occlusion_leaves_the_model_and_input_as_they_were():
    model = mnist_cnn()
    model.block1.relu.inplace = True
    model.train()
    x = images(2)
    before = snapshot(model)
    x_before = x.clone()

    def check():
        assert_untouched(model, before, x, x_before)
        assert model.block1.relu.inplace is True

    with pytest.warns(UserWarning, match="training mode"):
        occlusion(model, x, 1, window=(7, 7), stride=7)
    check()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ValueError, match="out of range"):
            occlusion(model, x, 10, window=(7, 7), stride=7)
    check()
