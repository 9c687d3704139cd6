"""SmoothGrad, SmoothGrad-squared and VarGrad (chapter 5): known answers, then Captum's NoiseTunnel."""
import warnings

import pytest
import torch
from captum import attr as captum_attr
from torch import nn

import helpers
from helpers import assert_untouched, snapshot
from xaiutils.attribution.backprop import guided_backprop
from xaiutils.attribution.gradients import gradient, gradient_x_input
from xaiutils.attribution.noise import noisy_copies, smoothgrad
from xaiutils.attribution.paths import integrated_gradients



mnist_cnn, linear, images = helpers.float64_mnist_cnn, helpers.float64_linear, helpers.float64_images


# ---------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("method, options", [
    (gradient, {}), (gradient_x_input, {}), (guided_backprop, {}),
    (integrated_gradients, {"steps": 8, "rule": "riemann_middle"}),
])
def test_one_sample_without_noise_is_the_wrapped_method(method, options):
    model, x = mnist_cnn(), images(2)
    target = torch.tensor([3, 5])
    for kind, transform in [("smoothgrad", lambda a: a), ("smoothgrad_sq", lambda a: a**2)]:
        smoothed = smoothgrad(method, model, x, target, samples=1, sigma=0.0, kind=kind, **options)
        assert torch.equal(smoothed, transform(method(model, x, target, **options)))
    assert torch.equal(smoothgrad(method, model, x, target, samples=1, sigma=0.0, kind="vargrad", **options),
                       torch.zeros_like(x))


def test_noise_free_samples_keep_each_example_with_its_target_in_every_chunk():
    model, x = mnist_cnn(), images(3)
    target = torch.tensor([1, 4, 9])
    expected = gradient(model, x, target)
    for batch_size in (None, 1, 2, 5):
        smoothed = smoothgrad(gradient, model, x, target, samples=4, sigma=0.0, batch_size=batch_size)
        assert torch.allclose(smoothed, expected, rtol=0, atol=1e-12 * expected.abs().max().item())


def test_on_a_linear_model_the_gradient_does_not_feel_the_noise():
    model, x = linear(), images(2, size=6)
    w = model[1].weight[1].view(1, 1, 6, 6).expand_as(x)
    assert torch.allclose(smoothgrad(gradient, model, x, 1, samples=7), w, atol=1e-15)
    assert torch.allclose(smoothgrad(gradient, model, x, 1, samples=7, kind="smoothgrad_sq"), w**2, atol=1e-15)
    assert smoothgrad(gradient, model, x, 1, samples=7, kind="vargrad").abs().max() < 1e-15
    # gradient x input averages the noisy inputs: (x + mean noise) * w, and its variance is w^2 var(noise).
    rows = noisy_copies(x, 7, 0.15, seed=0).view(7, *x.shape)
    assert torch.allclose(smoothgrad(gradient_x_input, model, x, 1, samples=7), rows.mean(0) * w, atol=1e-14)
    assert torch.allclose(smoothgrad(gradient_x_input, model, x, 1, samples=7, kind="vargrad"),
                          rows.var(0, correction=0) * w**2, atol=1e-14)


def test_sigma_is_relative_to_each_examples_range():
    x = images(2, size=28)
    x[1] = 10 * x[1] - 3  # range about 10 instead of 1
    rows = noisy_copies(x, 400, 0.2, seed=0).view(400, *x.shape)
    noise_std = (rows - x).flatten(2).std(dim=(0, 2))
    value_range = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    assert torch.allclose(noise_std, 0.2 * value_range, rtol=0.01)


def test_seed_fixes_the_noise():
    model, x = mnist_cnn(), images(1)
    a = smoothgrad(gradient, model, x, 2, samples=5, seed=7)
    assert torch.equal(a, smoothgrad(gradient, model, x, 2, samples=5, seed=7))
    assert not torch.equal(a, smoothgrad(gradient, model, x, 2, samples=5, seed=8))


def test_batch_size_gives_the_same_result_for_any_method():
    model, x = mnist_cnn(), images(2)
    for method, options in [(gradient, {}), (integrated_gradients, {"steps": 4})]:
        full = smoothgrad(method, model, x, 2, samples=5, **options)
        for batch_size in (1, 3, 100):
            chunked = smoothgrad(method, model, x, 2, samples=5, batch_size=batch_size, **options)
            assert torch.allclose(chunked, full, rtol=0, atol=1e-12 * full.abs().max().item())


# ---------------------------------------------------------------------------- Captum's NoiseTunnel
@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("wrapped", ["gradient", "integrated_gradients"])
def test_matches_captum_noise_tunnel_with_the_same_noise(monkeypatch, kind, wrapped):
    model, x = mnist_cnn(), images(2)
    target = torch.tensor([2, 7])
    samples, sigma = 6, 0.2
    ours_rows = noisy_copies(x, samples, sigma, seed=0)  # row k * B + b
    theirs_rows = ours_rows.view(samples, 2, *x.shape[1:]).transpose(0, 1).reshape(-1, *x.shape[1:])
    monkeypatch.setattr(captum_attr.NoiseTunnel, "_add_noise_to_input",
                        staticmethod(lambda inp, stdev, n: theirs_rows.clone()))
    if wrapped == "gradient":
        ours = smoothgrad(gradient, model, x, target, samples=samples, sigma=sigma, kind=kind)
        theirs = captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
            x, nt_type=kind, nt_samples=samples, stdevs=1.0, target=target, abs=False)
    else:
        ours = smoothgrad(integrated_gradients, model, x, target, samples=samples, sigma=sigma, kind=kind,
                          steps=5, rule="gausslegendre")
        theirs = captum_attr.NoiseTunnel(captum_attr.IntegratedGradients(model)).attribute(
            x, nt_type=kind, nt_samples=samples, stdevs=1.0, target=target, n_steps=5, method="gausslegendre")
    # Captum's IG casts its quadrature weights to float32: agreement to ~1e-8 relative there.
    tolerance = 1e-12 if wrapped == "gradient" else 1e-6
    assert torch.allclose(ours, theirs, rtol=0, atol=tolerance * theirs.abs().max().item())


def test_converges_to_captum_with_absolute_stdevs_equal_to_sigma_times_range():
    """Captum's stdevs is absolute; ours is relative: stdevs = sigma * (x.max() - x.min())."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 2)).double().eval()
    x = 3 * torch.randn(1, 6, dtype=torch.float64)
    sigma, samples = 0.3, 20000
    stdevs = sigma * (x.max() - x.min()).item()
    torch.manual_seed(1)
    for kind in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        ours = smoothgrad(gradient, model, x, 0, samples=samples, sigma=sigma, kind=kind, batch_size=samples)
        theirs = captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
            x, nt_type=kind, nt_samples=samples, stdevs=stdevs, target=0, abs=False)
        assert torch.allclose(ours, theirs, atol=0.05 * theirs.abs().max().item())
    not_scaled = captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
        x, nt_type="vargrad", nt_samples=samples, stdevs=sigma, target=0, abs=False)
    assert not torch.allclose(ours, not_scaled, atol=0.5 * theirs.abs().max().item())


# ---------------------------------------------------------------------------- bad input and side effects
def test_bad_options_are_rejected():
    model, x = mnist_cnn(), images(1)
    with pytest.raises(ValueError, match="kind must be one of .*; got 'median'"):
        smoothgrad(gradient, model, x, 0, kind="median")
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        smoothgrad(gradient, model, x, 0, samples=0)
    with pytest.raises(ValueError, match="sigma must be a number in \\[0, 1e\\+06\\]"):
        smoothgrad(gradient, model, x, 0, sigma=-0.1)
    with pytest.raises(TypeError, match="method must be an attribution function"):
        smoothgrad("gradient", model, x, 0)
    with pytest.raises(TypeError, match="one attribution tensor per row"):
        smoothgrad(integrated_gradients, model, x, 0, samples=2, steps=2, return_delta=True)
    with pytest.raises(TypeError, match="unexpected keyword"):
        smoothgrad(gradient, model, x, 0, samples=2, steps=4)
    with pytest.raises(ValueError, match="out of range"):
        smoothgrad(gradient, model, x, 10, samples=2)


@pytest.mark.parametrize("method", [gradient, guided_backprop, integrated_gradients])
def test_smoothgrad_leaves_the_model_and_input_as_they_were(method):
    model = mnist_cnn()
    model.block3.relu.inplace = True
    model.train()
    x = images(2)
    before = snapshot(model)
    x_before = x.clone()
    options = {"steps": 3} if method is integrated_gradients else {}
    with pytest.warns(UserWarning, match="training mode"):
        smoothgrad(method, model, x, 1, samples=3, **options)
    assert_untouched(model, before, x, x_before)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ValueError, match="out of range"):
            smoothgrad(method, model, x, 11, samples=3, **options)
    assert_untouched(model, before, x, x_before)
