"""Robustness of explanations: known answers, then Captum's sensitivity_max and Quantus with the same draws."""
import numpy as np
import pytest
import torch
from torch import nn

from helpers import assert_unchanged, mnist_cnn, snapshot, vgg_like
from xaiutils.attribution.gradients import gradient, gradient_x_input
from xaiutils.evaluation import robustness as R


@pytest.fixture
def smooth():
    """A small smooth (softplus) conv net in float64, so gradients move with the input."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Softplus(), nn.Flatten(), nn.Linear(4 * 64, 3))
    model = model.double().eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return model, x, model(x).argmax(1)


def test_noise_draws():
    x = torch.zeros(2, 3, 4, 4)
    u = R.noise(x, 5, "uniform", 0.1, seed=3)
    assert u.shape == (5, 2, 3, 4, 4) and u.abs().max() <= 0.1
    assert torch.equal(u, R.noise(x, 5, "uniform", 0.1, seed=3))
    assert 0.15 < R.noise(x, 50, "gaussian", 0.2).std() < 0.25


def test_gradient_of_a_linear_model_is_perfectly_stable():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double().eval()
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64)
    assert R.max_sensitivity(gradient, model, x, 1, radius=0.5).max() < 1e-12
    assert R.avg_sensitivity(gradient, model, x, 1, radius=0.5).max() < 1e-12
    assert R.local_lipschitz(gradient, model, x, 1).max() < 1e-10
    # gradient x input = w * x moves by w * delta: its Lipschitz ratio is at most max |w|
    lip = R.local_lipschitz(gradient_x_input, model, x, 1, samples=20)
    assert (lip > 0).all() and (lip <= model[1].weight[1].abs().max() + 1e-12).all()


def test_max_is_at_least_average_and_relative_option(smooth):
    model, x, y = smooth
    mx = R.max_sensitivity(gradient, model, x, y, radius=0.1)
    avg = R.avg_sensitivity(gradient, model, x, y, radius=0.1)
    assert (mx >= avg).all() and (avg > 0).all()
    raw = R.max_sensitivity(gradient, model, x, y, radius=0.1, relative=False)
    torch.testing.assert_close(raw / gradient(model, x, y).flatten(1).norm(dim=1), mx)
    batched = R.max_sensitivity(gradient, model, x, y, radius=0.1, batch_size=4)
    torch.testing.assert_close(batched, mx)


def test_max_sensitivity_matches_captum():
    from captum.metrics import sensitivity_max

    model = vgg_like().double()
    x = torch.rand(3, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 4, 2])
    samples, radius, seed = 7, 0.05, 5
    ours = R.max_sensitivity(gradient, model, x, target, radius=radius, samples=samples, seed=seed)
    delta = R.noise(x, samples, "uniform", radius, seed)
    interleaved = delta.transpose(0, 1).reshape(-1, *x.shape[1:])  # Captum's repeat_interleave layout
    def explain(inputs, target):  # Captum passes the unperturbed inputs as a tuple and expects a tuple back
        if isinstance(inputs, tuple):
            return (gradient(model, inputs[0], target),)
        return gradient(model, inputs, target)

    theirs = sensitivity_max(explain, x,
                             perturb_func=lambda inputs: inputs + interleaved, n_perturb_samples=samples,
                             target=target)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def _quantus_explain(model, inputs, targets, **kwargs):
    return gradient(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()


@pytest.mark.parametrize("name", ["MaxSensitivity", "AvgSensitivity", "LocalLipschitzEstimate",
                                  "RelativeInputStability"])
def test_matches_quantus_with_the_same_perturbations(smooth, name):
    import quantus

    model, x, y = smooth
    samples, seed = 5, 1
    kind, scale = ("uniform", 0.05) if "Sensitivity" in name else ("gaussian", 0.05)
    delta = R.noise(x, samples, kind, scale, seed)
    steps = iter(range(samples))

    def perturb(arr, indices, **kwargs):  # Quantus draws one perturbation of the whole batch per step
        return arr + delta[next(steps)].reshape(len(x), -1).numpy()

    options = dict(nr_samples=samples, perturb_func=perturb, normalise=False, abs=False, disable_warnings=True)
    if name == "RelativeInputStability":
        options["return_nan_when_prediction_changes"] = False
    metric = getattr(quantus, name)(**options)
    theirs = np.array(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
                             explain_func=_quantus_explain, device="cpu"))
    ours = {
        "MaxSensitivity": lambda: R.max_sensitivity(gradient, model, x, y, radius=scale, samples=samples, seed=seed),
        "AvgSensitivity": lambda: R.avg_sensitivity(gradient, model, x, y, radius=scale, samples=samples, seed=seed),
        "LocalLipschitzEstimate": lambda: R.local_lipschitz(gradient, model, x, y, sigma=scale, samples=samples,
                                                            seed=seed),
        "RelativeInputStability": lambda: R.relative_input_stability(gradient, model, x, y, sigma=scale,
                                                                     samples=samples, seed=seed,
                                                                     same_prediction=False),
    }[name]()
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-8)


def test_relative_input_stability_ignores_neighbours_that_change_the_prediction(smooth):
    model, x, y = smooth
    samples, sigma, eps = 12, 0.5, 1e-6
    delta = R.noise(x, samples, "gaussian", sigma, seed=2)
    neighbours = (x + delta).flatten(0, 1)
    keeps = (model(neighbours).argmax(1).view(samples, -1) == model(x).argmax(1)).detach()
    assert not keeps.all() and keeps.any(0).all()  # some neighbours flip the prediction, not all of one example
    e_x = gradient(model, x, y)
    e_n = gradient(model, neighbours, y.repeat(samples)).view(samples, *x.shape)
    safe = lambda t: torch.where(t == 0, torch.full_like(t, eps), t)
    ratio = ((e_x - e_n) / safe(e_x)).flatten(2).norm(dim=2) / (delta / safe(x)).flatten(2).norm(dim=2)
    expected = torch.where(keeps, ratio, torch.full_like(ratio, -1.0)).amax(0)
    ours = R.relative_input_stability(gradient, model, x, y, sigma=sigma, samples=samples, seed=2)
    torch.testing.assert_close(ours, expected)
    every = R.relative_input_stability(gradient, model, x, y, sigma=sigma, samples=samples, seed=2,
                                       same_prediction=False)
    torch.testing.assert_close(every, ratio.amax(0))


def test_no_side_effects():
    model = mnist_cnn()
    before = snapshot(model)
    x = torch.rand(2, 1, 28, 28)
    x0 = x.clone()
    R.max_sensitivity(gradient, model, x, 1, samples=2)
    R.local_lipschitz(gradient, model, x, 1, samples=2)
    R.relative_input_stability(gradient, model, x, 1, samples=2)
    assert_unchanged(model, before)
    assert torch.equal(x, x0)


def test_bad_input(smooth):
    model, x, y = smooth
    with pytest.raises(ValueError, match="radius"):
        R.max_sensitivity(gradient, model, x, y, radius=-0.1)
    with pytest.raises(ValueError, match="sigma"):
        R.local_lipschitz(gradient, model, x, y, sigma=-1.0)
    with pytest.raises(ValueError, match="samples"):
        R.avg_sensitivity(gradient, model, x, y, samples=0)
    with pytest.raises(ValueError, match="noise"):
        R.local_lipschitz(gradient, model, x, y, noise_kind="salt")
    with pytest.raises(TypeError, match="attribution function"):
        R.max_sensitivity("gradient", model, x, y)
