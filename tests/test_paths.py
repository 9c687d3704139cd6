"""Path methods (chapter 4): known answers first, then Captum and the papers' reference code."""
import math
import warnings

import numpy as np
import pytest
import scipy.ndimage
import torch
from captum import attr as captum_attr
from torch import nn

import helpers
from helpers import assert_untouched, snapshot
from xaiutils.attribution import paths
from xaiutils.core import baselines
from xaiutils.attribution.paths import (RULES, blur_ig, expected_gradients, gaussian_blur, guided_ig,
                                        integrated_gradients, integration_rule, resolve_baseline)



# ---------------------------------------------------------------------------- models
def mnist_cnn():
    return helpers.mnist_cnn().double()


def shapes_resnet():
    return helpers.shapes_resnet().double()


def linear(features=1 * 6 * 6, classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, classes)).double().eval()


def smooth_cnn():
    """A small smooth (tanh, softplus) network: quadrature errors behave as in textbooks."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, stride=2), nn.Softplus(),
                         nn.Flatten(), nn.Linear(4 * 13 * 13, 10)).double().eval()


def images(b=2, c=1, size=28, seed=1):
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def scores(model, x, target):
    with torch.no_grad():
        return model(x)[torch.arange(len(x)), target]


# ---------------------------------------------------------------------------- quadrature rules
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("steps", [2, 3, 10, 50])
def test_rule_weights_sum_to_one_and_nodes_lie_in_unit_interval(rule, steps):
    alphas, weights = integration_rule(rule, steps)
    assert alphas.shape == weights.shape == (steps,)
    assert alphas.dtype == weights.dtype == torch.float64
    assert abs(weights.sum().item() - 1) < 1e-14
    assert (alphas >= 0).all() and (alphas <= 1).all()


def test_trapezoid_rule_halves_the_end_weights():
    alphas, weights = integration_rule("riemann_trapezoid", 11)
    assert torch.allclose(alphas, torch.linspace(0, 1, 11, dtype=torch.float64))
    assert weights[0] == weights[-1] == 1 / 20
    assert torch.allclose(weights[1:-1], torch.full((9,), 0.1, dtype=torch.float64))


def test_gauss_legendre_integrates_polynomials_of_degree_2n_minus_1_exactly():
    alphas, weights = integration_rule("gausslegendre", 4)
    for degree in range(8):
        assert abs((weights * alphas**degree).sum().item() - 1 / (degree + 1)) < 1e-14


# ---------------------------------------------------------------------------- integrated gradients: known answers
@pytest.mark.parametrize("rule", RULES)
def test_ig_on_a_linear_model_is_difference_times_weight_for_every_rule(rule):
    model, x = linear(), images(3, size=6)
    reference = images(1, size=6, seed=5)[0]
    w = model[1].weight
    for baseline, x_ref in [("zeros", torch.zeros_like(x)), (reference, reference.expand_as(x))]:
        attr, delta = integrated_gradients(model, x, 2, baseline=baseline, steps=7, rule=rule, return_delta=True)
        expected = (x - x_ref) * w[2].view(1, 1, 6, 6)
        assert torch.allclose(attr, expected, atol=1e-14, rtol=0)
        assert delta.abs().max() < 1e-13


def test_captum_trapezoid_weights_lose_one_nth_of_the_output_difference():
    """Captum's riemann_trapezoid weights sum to 1 - 1/n: 10% completeness error at n = 10; ours is exact."""
    model, x = linear(), images(2, size=6)
    gain = scores(model, x, 1) - scores(model, torch.zeros_like(x), 1)
    ours, delta = integrated_gradients(model, x, 1, steps=10, rule="riemann_trapezoid", return_delta=True)
    theirs, their_delta = captum_attr.IntegratedGradients(model).attribute(
        x, target=1, n_steps=10, method="riemann_trapezoid", return_convergence_delta=True)
    assert torch.allclose(theirs.flatten(1).sum(1), 0.9 * gain, rtol=1e-6)
    assert torch.allclose(their_delta, -0.1 * gain, rtol=1e-5)  # Captum's own delta reports it
    assert delta.abs().max() < 1e-13 and torch.allclose(ours.flatten(1).sum(1), gain, rtol=1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_ig_completeness_error_shrinks_with_steps(rule):
    model, x = mnist_cnn(), images(4)
    errors = [integrated_gradients(model, x, 3, steps=n, rule=rule, return_delta=True)[1].abs().sum().item()
              for n in (4, 16, 64)]
    assert errors[2] < errors[1] < errors[0]


def test_gauss_legendre_is_the_most_accurate_rule_on_a_smooth_model():
    model, x = smooth_cnn(), images(4)
    errors = {rule: integrated_gradients(model, x, 3, steps=8, rule=rule, return_delta=True)[1].abs().max().item()
              for rule in RULES}
    assert min(errors, key=errors.get) == "gausslegendre"
    assert errors["gausslegendre"] < 1e-3 * min(v for k, v in errors.items() if k != "gausslegendre")


def test_delta_is_the_completeness_error():
    model, x = mnist_cnn(), images(2)
    reference = images(1, seed=3)
    attr, delta = integrated_gradients(model, x, 4, baseline=reference, steps=5, return_delta=True)
    gain = scores(model, x, 4) - scores(model, reference.expand_as(x), 4)
    assert torch.allclose(delta, attr.flatten(1).sum(1) - gain, atol=1e-15)


# ---------------------------------------------------------------------------- integrated gradients: Captum
@pytest.mark.parametrize("make, shape", [(mnist_cnn, (2, 1, 28, 28)), (shapes_resnet, (2, 3, 64, 64))])
@pytest.mark.parametrize("rule", ["riemann_left", "riemann_right", "riemann_middle", "gausslegendre"])
def test_ig_matches_captum(make, shape, rule):
    model = make()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    baseline = torch.full(shape[1:], 0.25, dtype=torch.float64)
    target = torch.tensor([1, 3])
    ours = integrated_gradients(model, x, target, baseline=baseline, steps=12, rule=rule)
    theirs = captum_attr.IntegratedGradients(model).attribute(
        x, baselines=baseline[None], target=target, n_steps=12, method=rule)
    # Captum builds its Riemann nodes with float32 torch.linspace and casts its weights to float32:
    # agreement to ~1e-8 relative.
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6 * theirs.abs().max().item())


# ---------------------------------------------------------------------------- integrated gradients: options
def test_ig_batch_size_gives_the_same_result():
    model, x = mnist_cnn(), images(3)
    full = integrated_gradients(model, x, 2, steps=10)
    for batch_size in (1, 4, 7, 1000):
        assert torch.allclose(integrated_gradients(model, x, 2, steps=10, batch_size=batch_size), full,
                              rtol=0, atol=1e-12 * full.abs().max().item())


def test_ig_target_tensor_and_callable():
    model, x = mnist_cnn(), images(2)
    per_example = integrated_gradients(model, x, torch.tensor([5, 7]), steps=6, batch_size=3)
    assert torch.allclose(per_example[:1], integrated_gradients(model, x[:1], 5, steps=6), atol=1e-16)
    assert torch.allclose(per_example[1:], integrated_gradients(model, x[1:], 7, steps=6), atol=1e-16)
    by_callable = integrated_gradients(model, x, lambda out: out[:, 5], steps=6)
    assert torch.allclose(by_callable, integrated_gradients(model, x, 5, steps=6), atol=1e-16)
    log_prob = lambda out: out.log_softmax(1)[:, 5]  # noqa: E731
    _, delta = integrated_gradients(model, x, log_prob, steps=64, return_delta=True)
    assert delta.abs().max() < 1e-3


def test_baseline_names_give_baselines_of_the_right_shape_and_range():
    x = images(2, c=3, size=32)
    x[1] *= 4.0
    for name in ("zeros", "blur", "uniform", "gaussian"):
        reference = resolve_baseline(x, name, seed=0)
        assert reference.shape == x.shape and reference.dtype == x.dtype
    for name in ("uniform", "gaussian"):
        reference = resolve_baseline(x, name, seed=0)
        assert torch.equal(reference, resolve_baseline(x, name, seed=0))
        assert not torch.equal(reference, resolve_baseline(x, name, seed=1))
        for b in range(2):
            assert x[b].min() <= reference[b].min() and reference[b].max() <= x[b].max()
    uniform = resolve_baseline(x, "uniform")
    assert abs(uniform[1].mean().item() - 2.0) < 0.1  # uniform over example 1's range [0, 4]


def test_blur_baseline_is_scipys_gaussian_filter_with_zero_padding():
    x = images(2, c=3, size=32)
    blurred = resolve_baseline(x, "blur")
    sigma = baselines.BLUR_BASELINE_SIGMA
    expected = scipy.ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="constant")
    assert np.allclose(blurred.numpy(), expected, atol=1e-12)
    for sigma in (0.0, 0.7, 1.3, 3.0):
        expected = scipy.ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="constant")
        assert np.allclose(gaussian_blur(x, sigma).numpy(), expected, atol=1e-12)

    def roughness(t):
        return (t[..., 1:, :] - t[..., :-1, :]).abs().mean()

    assert roughness(blurred) < 0.1 * roughness(x)


def test_ig_with_a_named_baseline_equals_ig_with_that_baseline_tensor():
    model, x = mnist_cnn(), images(2)
    for name in ("blur", "uniform", "gaussian"):
        attr = integrated_gradients(model, x, 1, baseline=name, steps=8, seed=4)
        explicit = integrated_gradients(model, x, 1, baseline=resolve_baseline(x, name, seed=4), steps=8)
        assert attr.shape == x.shape and torch.equal(attr, explicit)


def test_ig_rejects_bad_options():
    model, x = mnist_cnn(), images(1)
    with pytest.raises(ValueError, match="rule must be one of .*; got 'simpson'"):
        integrated_gradients(model, x, 0, rule="simpson")
    with pytest.raises(ValueError, match="baseline must be one of 'zeros', .*; got 'black'"):
        integrated_gradients(model, x, 0, baseline="black")
    with pytest.raises(ValueError, match="does not broadcast"):
        integrated_gradients(model, x, 0, baseline=torch.zeros(1, 27, 27, dtype=torch.float64))
    with pytest.raises(ValueError, match="does not broadcast"):
        integrated_gradients(model, images(2), 0, baseline=torch.zeros(3, 1, 28, 28, dtype=torch.float64))
    with pytest.raises(TypeError, match="baseline must be"):
        integrated_gradients(model, x, 0, baseline=[0.0])
    with pytest.raises(ValueError, match="steps must be an integer >= 1; got 0"):
        integrated_gradients(model, x, 0, steps=0)
    with pytest.raises(ValueError, match="steps must be >= 2 for the trapezoid rule"):
        integrated_gradients(model, x, 0, steps=1, rule="riemann_trapezoid")
    with pytest.raises(ValueError, match="out of range"):
        integrated_gradients(model, x, 10)


# ---------------------------------------------------------------------------- expected gradients
def test_expected_gradients_on_a_linear_model():
    model, x = linear(), images(2, size=6)
    w = model[1].weight[0].view(1, 1, 6, 6)
    one = images(1, size=6, seed=7)
    assert torch.allclose(expected_gradients(model, x, 0, references=one, samples=5), (x - one) * w, atol=1e-14)
    references = images(20, size=6, seed=8)
    attr = expected_gradients(model, x, 0, references=references, samples=40, seed=3)
    index, _, _ = paths._expected_gradients_draws(x, 20, 40, 0.0, 3)
    drawn_mean = references[index].mean(0)  # (B, ...) the mean of the references each example drew
    assert torch.allclose(attr, (x - drawn_mean) * w, atol=1e-14)
    many = expected_gradients(model, x, 0, references=references, samples=4000, seed=3)
    assert torch.allclose(many, (x - references.mean(0)) * w, atol=0.02 * w.abs().max().item())


def test_expected_gradients_matches_captum_gradient_shap_with_the_same_draws(monkeypatch):
    """Captum draws with numpy and torch's global RNG, example-major; we feed it our draws."""
    import captum._utils.common as captum_common  # noqa: F401  (the module that draws the baselines)

    model, x = mnist_cnn(), images(2)
    references = images(6, seed=9)
    samples, noise = 5, 0.1
    index, alpha, eps = paths._expected_gradients_draws(x, len(references), samples, noise, seed=0)

    def example_major(t):  # ours: row k * B + b; Captum's: row b * samples + k
        return t.transpose(0, 1).reshape(-1, *t.shape[2:])

    monkeypatch.setattr(np.random, "choice", lambda n, size: example_major(index).numpy())
    monkeypatch.setattr(np.random, "uniform", lambda low, high, size: example_major(alpha).numpy())
    monkeypatch.setattr(captum_attr.NoiseTunnel, "_add_noise_to_input",
                        staticmethod(lambda inp, stdev, n: inp.repeat_interleave(n, 0) + example_major(eps)))
    target = torch.tensor([2, 6])
    theirs = captum_attr.GradientShap(model).attribute(x, baselines=references, target=target,
                                                        n_samples=samples, stdevs=noise)
    ours = expected_gradients(model, x, target, references=references, samples=samples, noise=noise, seed=0)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12 * theirs.abs().max().item())


def test_expected_gradients_converges_to_captum_and_is_complete_in_expectation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).double().eval()
    x = torch.randn(2, 8, dtype=torch.float64)
    references = torch.randn(50, 8, dtype=torch.float64)
    ours = expected_gradients(model, x, 1, references=references, samples=20000, batch_size=20000)
    np.random.seed(0)
    theirs = captum_attr.GradientShap(model).attribute(x, baselines=references, target=1, n_samples=20000)
    scale = ours.abs().max().item()
    assert torch.allclose(ours, theirs, atol=0.03 * scale)
    with torch.no_grad():
        expected_gain = model(x)[:, 1] - model(references)[:, 1].mean()
    assert torch.allclose(ours.sum(1), expected_gain, atol=0.03 * expected_gain.abs().max().item())


def test_expected_gradients_batch_size_and_bad_references():
    model, x = mnist_cnn(), images(2)
    references = images(4, seed=2)
    full = expected_gradients(model, x, 0, references=references, samples=6)
    assert torch.allclose(expected_gradients(model, x, 0, references=references, samples=6, batch_size=5), full,
                          rtol=0, atol=1e-12 * full.abs().max().item())
    with pytest.raises(ValueError, match="references must be a non-empty tensor"):
        expected_gradients(model, x, 0, references=images(4, size=27))
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        expected_gradients(model, x, 0, references=references, samples=0)


# ---------------------------------------------------------------------------- blur IG
def test_blur_derivative_matches_finite_differences():
    x = images(1, c=2, size=16)
    sigmas = torch.tensor([0.5, 1.0, 2.5], dtype=torch.float64)
    h = 1e-5
    _, velocity = baselines.blurred(x, sigmas, 12)
    plus, _ = baselines.blurred(x, sigmas + h, 12)
    minus, _ = baselines.blurred(x, sigmas - h, 12)
    assert torch.allclose(velocity, (plus - minus) / (2 * h), atol=1e-8)


def test_blur_ig_on_a_linear_model_is_weight_times_the_removed_blur():
    model, x = linear(), images(2, size=6)
    w = model[1].weight[2].view(1, 1, 6, 6)
    attr = blur_ig(model, x, 2, max_sigma=3.0, steps=128, rule="gausslegendre")
    assert torch.allclose(attr, w * (x - gaussian_blur(x, 3.0)), atol=1e-8)


def test_blur_ig_completeness_improves_with_steps():
    model, x = mnist_cnn(), images(2)
    gain = scores(model, x, 3) - scores(model, gaussian_blur(x, 10.0), 3)
    errors = [(blur_ig(model, x, 3, steps=n).flatten(1).sum(1) - gain).abs().max().item() for n in (8, 32, 128)]
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 0.05 * gain.abs().min().item()


def test_blur_ig_follows_the_paper_code_grid_and_batches():
    model, x = mnist_cnn(), images(2)
    full = blur_ig(model, x, 0, max_sigma=4.0, steps=6)
    assert torch.allclose(blur_ig(model, x, 0, max_sigma=4.0, steps=6, batch_size=5), full,
                          rtol=0, atol=1e-12 * full.abs().max().item())
    # PAIR's grid: sigma_k = k * max_sigma / steps, weight max_sigma / steps, left end at sigma = 0.
    alphas, weights = integration_rule("riemann_left", 6)
    assert alphas[0] == 0 and torch.allclose(4.0 * alphas, torch.arange(6, dtype=torch.float64) * 4.0 / 6)
    with pytest.raises(ValueError, match="max_sigma must be a number > 0"):
        blur_ig(model, x, 0, max_sigma=0.0)
    with pytest.raises(ValueError, match="x must be a batch of images .* at least 3 dims"):
        blur_ig(linear(36), x.flatten(1), 0)


# ---------------------------------------------------------------------------- guided IG
def guided_ig_reference(x, baseline, grad_fn, steps, fraction, max_dist):
    """One example, plain numpy, written from Algorithm 1 of Kapishnikov et al. (2021)."""
    x, baseline = x.astype(np.float64), baseline.astype(np.float64)
    point, attr = baseline.copy(), np.zeros_like(x)
    total = np.abs(x - baseline).sum()
    if total == 0:
        return attr
    diff = x - baseline
    for step in range(1, steps + 1):
        grad = grad_fn(point)
        alpha = step / steps
        lo, hi = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        x_lo, x_hi = baseline + diff * lo, baseline + diff * hi
        goal = total * (1 - alpha)
        while True:
            before = point.copy()
            with np.errstate(divide="ignore", invalid="ignore"):
                where = np.where(diff != 0, (point - baseline) / diff, hi)
            point[where < lo] = x_lo[where < lo]
            now = np.abs(point - x).sum()
            if math.isclose(now, goal, rel_tol=1e-9, abs_tol=1e-9):
                attr += (point - before) * grad
                break
            magnitude = np.abs(grad)
            magnitude[point == x_hi] = np.inf
            chosen = (magnitude <= np.quantile(magnitude, fraction, method="lower")) & np.isfinite(magnitude)
            room = (np.abs(point - x_hi) * chosen).sum()
            gamma = (now - goal) / room if room > 0 else np.inf
            if gamma > 1:
                point[chosen] = x_hi[chosen]
            else:
                point[chosen] = (point + gamma * (x_hi - point))[chosen]
            attr += (point - before) * grad
            if gamma <= 1:
                break
    return attr


def test_guided_ig_matches_a_plain_reimplementation_of_the_paper_algorithm():
    model, x = mnist_cnn(), images(2)
    target = torch.tensor([3, 8])
    ours = guided_ig(model, x, target, steps=15, fraction=0.25, max_dist=0.05)
    for b in range(2):
        def grad_fn(point):
            p = torch.from_numpy(point)[None].requires_grad_(True)
            model(p)[0, target[b]].backward()
            return p.grad[0].numpy()

        expected = guided_ig_reference(x[b].numpy(), np.zeros_like(x[b].numpy()), grad_fn, 15, 0.25, 0.05)
        assert np.allclose(ours[b].numpy(), expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_guided_ig_on_a_linear_model_is_difference_times_weight():
    model, x = linear(), images(3, size=6)
    reference = images(1, size=6, seed=5)
    w = model[1].weight[1].view(1, 1, 6, 6)
    attr = guided_ig(model, x, 1, baseline=reference, steps=20)
    assert torch.allclose(attr, (x - reference) * w, atol=1e-13)


def test_guided_ig_without_deviation_is_left_riemann_ig_and_completeness_degrades_with_max_dist():
    model, x = mnist_cnn(), images(2)
    straight = guided_ig(model, x, 3, steps=24, max_dist=0.0)
    ig = integrated_gradients(model, x, 3, steps=24, rule="riemann_left")
    assert torch.allclose(straight, ig, rtol=0, atol=1e-12 * ig.abs().max().item())
    gain = scores(model, x, 3) - scores(model, torch.zeros_like(x), 3)
    errors = [(guided_ig(model, x, 3, steps=24, max_dist=d).flatten(1).sum(1) - gain).abs().max().item()
              for d in (0.0, 0.02, 1.0)]
    assert errors[0] < errors[1] < errors[2] < gain.abs().max().item()


def test_guided_ig_batch_size_zero_difference_and_bad_options():
    model, x = mnist_cnn(), images(2)
    full = guided_ig(model, x, 1, steps=8)
    assert torch.allclose(guided_ig(model, x, 1, steps=8, batch_size=1), full, rtol=0,
                          atol=1e-12 * full.abs().max().item())
    assert torch.equal(guided_ig(model, x, 1, baseline=x, steps=4), torch.zeros_like(x))
    with pytest.raises(ValueError, match="fraction"):
        guided_ig(model, x, 1, fraction=0.0)
    with pytest.raises(ValueError, match="baseline must be one of"):
        guided_ig(model, x, 1, baseline="noise")


# ---------------------------------------------------------------------------- side effects
METHODS = {
    "integrated_gradients": lambda m, x, t: integrated_gradients(m, x, t, steps=4, return_delta=True),
    "expected_gradients": lambda m, x, t: expected_gradients(m, x, t, references=x.detach() * 0.5, samples=3),
    "blur_ig": lambda m, x, t: blur_ig(m, x, t, steps=4),
    "guided_ig": lambda m, x, t: guided_ig(m, x, t, steps=4),
}


@pytest.mark.parametrize("name", METHODS)
def test_methods_leave_the_model_and_input_as_they_were(name):
    model = mnist_cnn()
    model.block2.relu.inplace = True
    model.train()
    model.block1.eval()
    x = images(2)
    before = snapshot(model)
    x_before = x.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # explained in eval mode, with a warning
        METHODS[name](model, x, 1)
        assert_untouched(model, before, x, x_before)
        with pytest.raises(ValueError, match="out of range"):
            METHODS[name](model, x, 12)
        assert_untouched(model, before, x, x_before)


@pytest.mark.parametrize("name", METHODS)
def test_methods_warn_about_training_mode(name):
    model, x = mnist_cnn(), images(1)
    model.train()
    with pytest.warns(UserWarning, match="training mode"):
        METHODS[name](model, x, 0)
    assert model.training
