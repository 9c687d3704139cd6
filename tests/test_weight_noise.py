"""NoiseGrad and FusionGrad (weight noise): known answers, an independent re-implementation, side effects."""
import copy
import math
import threading
import warnings
from functools import partial

import pytest
import torch
from torch import nn

import helpers
from helpers import assert_untouched, snapshot
from xaiutils.attribution.backprop import guided_backprop
from xaiutils.attribution.cam import grad_cam
from xaiutils.attribution.gradients import gradient, gradient_x_input
from xaiutils.attribution.noise import smoothgrad
from xaiutils.attribution.paths import integrated_gradients
from xaiutils.attribution.weight_noise import fusiongrad, noisegrad, weight_noise_samples


mnist_cnn, linear, images = helpers.float64_mnist_cnn, helpers.float64_linear, helpers.float64_images


def by_hand(method, model, x, target, samples, sigma, seed, **options):
    """Independent NoiseGrad samples: deep-copy the model, multiply each parameter in place by 1 + sigma z."""
    generator = torch.Generator().manual_seed(seed)
    maps = []
    for _ in range(samples):
        noisy = copy.deepcopy(model)
        with torch.no_grad():
            for p in noisy.parameters():
                p.mul_(1 + sigma * torch.randn(p.shape, generator=generator, dtype=p.dtype))
        maps.append(method(noisy, x, target, **options))
    return torch.stack(maps)


# ---------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("method, options", [
    (gradient, {}), (guided_backprop, {}), (integrated_gradients, {"steps": 8, "rule": "riemann_middle"}),
    (grad_cam, {"layer": "block3"}),
])
def test_without_noise_it_is_exactly_the_wrapped_method(method, options):
    model, x, target = mnist_cnn(), images(2), torch.tensor([3, 5])
    expected = method(model, x, target, **options)
    assert torch.equal(noisegrad(method, model, x, target, samples=5, sigma=0.0, **options), expected)
    maps = weight_noise_samples(method, model, x, target, samples=3, sigma=0, **options)
    assert maps.shape == (3, *expected.shape) and all(torch.equal(m, expected) for m in maps)


def test_on_a_linear_model_the_mean_is_w_and_the_spread_is_sigma_w():
    """f(x) = w.x + b: each sample's gradient is w * eta with eta ~ N(1, sigma^2), so E = w and std = sigma |w|."""
    model, x = linear(), images(2, size=6)
    samples, sigma = 2000, 0.2
    w = model[1].weight[1].view(1, 6, 6)
    maps = weight_noise_samples(gradient, model, x, 1, samples=samples, sigma=sigma, seed=3)
    assert maps.shape == (samples, *x.shape)
    assert torch.equal(maps[:, 0], maps[:, 1])  # one perturbed model explains both examples
    assert torch.equal(noisegrad(gradient, model, x, 1, samples=20, sigma=sigma, seed=3), maps[:20].mean(0))
    # The mean of n draws is within 4 standard errors, sigma |w| / sqrt(n) (0.45% of |w| here), of w ...
    assert ((maps.mean(0)[0] - w).abs() <= 4 * sigma * w.abs() / math.sqrt(samples)).all()
    # ... and the sample std within 4 of its standard errors, about 1 / sqrt(2 n) relative (1.6%), of sigma |w|.
    assert ((maps.std(0)[0] / (sigma * w.abs()) - 1).abs() <= 4 / math.sqrt(2 * samples)).all()


def test_equals_an_independent_reimplementation_with_the_same_draws():
    x, target = images(2), torch.tensor([1, 7])
    model = mnist_cnn()
    for method, options in [(gradient, {}), (integrated_gradients, {"steps": 4})]:
        expected = by_hand(method, model, x, target, 3, 0.3, 11, **options)
        assert torch.equal(weight_noise_samples(method, model, x, target, samples=3, sigma=0.3, seed=11, **options),
                           expected)
        assert torch.equal(noisegrad(method, model, x, target, samples=3, sigma=0.3, seed=11, **options),
                           expected.mean(0))
    resnet, x3 = helpers.shapes_resnet().double(), images(1, c=3, size=64)  # BatchNorm: affine perturbed, stats not
    assert torch.equal(weight_noise_samples(gradient, resnet, x3, 2, samples=2, sigma=0.1, seed=5),
                       by_hand(gradient, resnet, x3, 2, 2, 0.1, 5))


def test_every_parameter_is_perturbed_and_no_buffer():
    model, x = helpers.shapes_resnet().double(), images(1, c=3, size=64)
    seen = []

    def spy(m, rows, target):
        seen.append((m, {k: v.clone() for k, v in m.state_dict().items()}, [n.training for n in m.modules()]))
        return gradient(m, rows, target)

    weight_noise_samples(spy, model, x, 0, samples=2, sigma=0.2)
    parameters = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    assert len(seen) == 2 and {k for k in seen[0][1]} == set(parameters) | set(buffers)
    assert any(".bn" in name for name in parameters) and any("running_var" in name for name in buffers)
    for noisy, state, training in seen:
        assert noisy is not model and not any(training)
        for name, p in parameters.items():
            ratio = state[name] / p.detach()
            assert not torch.equal(state[name], p.detach()), f"{name} was not perturbed"
            if p.numel() >= 500:  # the multiplicative noise has std sigma
                assert abs((ratio - 1).std().item() - 0.2) < 0.03, name
        for name, b in buffers.items():
            assert torch.equal(state[name], b), f"buffer {name} was perturbed"
    assert not torch.equal(seen[0][1]["fc.weight"], seen[1][1]["fc.weight"])  # fresh noise per sample


def test_a_layer_given_as_a_module_means_the_same_layer_of_each_perturbed_copy():
    model, x, target = mnist_cnn(), images(2), torch.tensor([0, 4])
    by_module = noisegrad(grad_cam, model, x, target, samples=3, layer=model.block3)
    assert torch.equal(by_module, noisegrad(grad_cam, model, x, target, samples=3, layer="block3"))
    assert not torch.allclose(by_module, grad_cam(model, x, target, layer="block3"))


# ---------------------------------------------------------------------------- FusionGrad
def test_fusiongrad_is_noisegrad_of_smoothgrad():
    model, x, target = mnist_cnn(), images(2), torch.tensor([2, 9])
    options = dict(samples=3, sigma=0.2, input_samples=4, input_sigma=0.1, seed=4)
    expected = by_hand(partial(smoothgrad, gradient, samples=4, sigma=0.1, seed=4), model, x, target, 3, 0.2, 4)
    assert torch.equal(fusiongrad(gradient, model, x, target, **options), expected.mean(0))
    # No input noise: NoiseGrad of the same seed; no weight noise: SmoothGrad of the same seed. Both exact.
    assert torch.equal(fusiongrad(gradient, model, x, target, **{**options, "input_sigma": 0}),
                       noisegrad(gradient, model, x, target, samples=3, sigma=0.2, seed=4))
    assert torch.equal(fusiongrad(gradient, model, x, target, **{**options, "sigma": 0}),
                       smoothgrad(gradient, model, x, target, samples=4, sigma=0.1, seed=4))
    # A layer given as a module follows the copies through smoothgrad too.
    assert torch.equal(fusiongrad(grad_cam, model, x, target, **options, layer=model.block2),
                       fusiongrad(grad_cam, model, x, target, **options, layer="block2"))


def test_on_a_linear_model_fusiongrad_of_gradient_x_input_averages_both_noises():
    """x * (w eta): the mean over models and inputs is mean(x + eps) * mean(w eta), computed by hand."""
    model, x = linear(), images(2, size=6)
    w = model[1].weight[1].view(1, 1, 6, 6)
    eta_w = by_hand(gradient, model, x, 1, 5, 0.2, 0).mean(0)  # mean of w * eta over the five models
    noisy = smoothgrad(lambda m, rows, t: rows, model, x, 1, samples=6, sigma=0.15)  # mean of x + eps
    ours = fusiongrad(gradient_x_input, model, x, 1, samples=5, input_samples=6, sigma=0.2, input_sigma=0.15)
    assert torch.allclose(ours, noisy * eta_w, rtol=0, atol=1e-14)
    assert not torch.allclose(ours, x * w, atol=1e-3)


# ---------------------------------------------------------------------------- seeds and batches
def test_the_seed_fixes_the_noise_and_the_global_generator_is_left_alone():
    model, x = mnist_cnn(), images(1)
    state = torch.get_rng_state()
    a = noisegrad(gradient, model, x, 2, samples=3, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, noisegrad(gradient, model, x, 2, samples=3, seed=7))
    assert not torch.allclose(a, noisegrad(gradient, model, x, 2, samples=3, seed=8))
    f = fusiongrad(gradient, model, x, 2, samples=2, input_samples=2, seed=7)
    assert torch.equal(f, fusiongrad(gradient, model, x, 2, samples=2, input_samples=2, seed=7))
    assert not torch.allclose(f, fusiongrad(gradient, model, x, 2, samples=2, input_samples=2, seed=8))


def test_batch_size_is_passed_on_or_applied_here():
    model, x, target = mnist_cnn(), images(3), torch.tensor([1, 4, 9])
    full = noisegrad(gradient, model, x, target, samples=2)
    rows = []

    def without_batch_size(m, xs, t):
        rows.append(len(xs))
        return gradient(m, xs, t)

    for method in (gradient, without_batch_size):
        chunked = noisegrad(method, model, x, target, samples=2, batch_size=2)
        assert torch.allclose(chunked, full, rtol=0, atol=1e-12 * full.abs().max().item())
    assert rows == [2, 1, 2, 1]
    fused = fusiongrad(gradient, model, x, target, samples=2, input_samples=2)
    assert torch.allclose(fusiongrad(gradient, model, x, target, samples=2, input_samples=2, batch_size=4), fused,
                          rtol=0, atol=1e-12 * fused.abs().max().item())


# ---------------------------------------------------------------------------- bad input and side effects
@pytest.mark.parametrize("function, options, error, message", [
    (noisegrad, {"method": "gradient"}, TypeError, "method must be an attribution function .*; got 'gradient'"),
    (noisegrad, {"samples": 0}, ValueError, "samples must be an integer >= 1; got 0"),
    (noisegrad, {"samples": 2.5}, TypeError, "samples must be an integer >= 1; got 2.5"),
    (noisegrad, {"sigma": -0.1}, ValueError, "sigma must be a number in \\[0, 1e\\+06\\]; got -0.1"),
    (noisegrad, {"sigma": float("nan")}, ValueError, "sigma must be a number .*; got nan"),
    (noisegrad, {"sigma": "0.2"}, TypeError, "sigma must be a number .*; got '0.2'"),
    (noisegrad, {"seed": -1}, ValueError, "seed must be an integer in \\[0, .*\\]; got -1"),
    (weight_noise_samples, {"samples": True}, TypeError, "samples must be an integer >= 1; got True"),
    (fusiongrad, {"input_samples": 0}, ValueError, "input_samples must be an integer >= 1; got 0"),
    (fusiongrad, {"input_sigma": -1}, ValueError, "input_sigma must be a number in \\[0, 1e\\+06\\]; got -1"),
    (fusiongrad, {"sigma": -1}, ValueError, "sigma must be a number in \\[0, 1e\\+06\\]; got -1"),
    (noisegrad, {"model": "mnist"}, TypeError, "model must be a torch.nn.Module; got str"),
    (noisegrad, {"x": torch.zeros(28)}, ValueError, "x must be a batch"),
    (noisegrad, {"target": 10}, ValueError, "out of range"),
    (noisegrad, {"method": partial(integrated_gradients, steps=2, return_delta=True)}, TypeError,
     "must return one attribution tensor per example"),
])
def test_bad_input_names_the_argument_what_was_given_and_what_is_expected(function, options, error, message):
    model = mnist_cnn()
    arguments = {"method": gradient, "model": model, "x": images(1), "target": 0, **options}
    rest = {k: v for k, v in options.items() if k not in ("method", "model", "x", "target")}
    before = snapshot(model)
    with pytest.raises(error, match=message):
        function(arguments["method"], arguments["model"], arguments["x"], arguments["target"], **{"samples": 2, **rest})
    helpers.assert_unchanged(model, before)


def test_a_model_that_cannot_be_copied_is_refused_clearly():
    model = mnist_cnn()
    model.lock = threading.Lock()
    with pytest.raises(TypeError, match="model must be copyable with copy.deepcopy.*MnistCNN"):
        noisegrad(gradient, model, images(1), 0, samples=2)


@pytest.mark.parametrize("function", [noisegrad, fusiongrad])
def test_the_model_is_left_as_it_was_in_training_mode_and_on_error(function):
    model = mnist_cnn()
    model.block3.relu.inplace = True
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.train()
    x = images(2)
    before, x_before = snapshot(model), x.clone()
    with pytest.warns(UserWarning, match="training mode") as record:
        function(gradient, model, x, 1, samples=2)
    assert len([w for w in record if "training mode" in str(w.message)]) == 1  # once, not once per copy
    assert_untouched(model, before, x, x_before)
    calls = []

    def fails_on_the_second_model(m, rows, target):
        calls.append(m)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return gradient(m, rows, target)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(RuntimeError, match="boom"):
            function(fails_on_the_second_model, model, x, 1, samples=3, input_samples=1) if function is fusiongrad \
                else function(fails_on_the_second_model, model, x, 1, samples=3)
        with pytest.raises(ValueError, match="out of range"):
            function(gradient, model, x, 11, samples=2)
    assert_untouched(model, before, x, x_before)
