"""The uncertainty of explanations: map samples from ensembles, MC dropout and a variational layer, and their summaries.

Known answers on linear models (a map is then a row of the weights, so its distribution is the
weights'), exact cases (p = 0, sigma -> 0), independent re-implementations of the summaries
(numpy, scipy), side effects on the user's model, seeds, batching and bad inputs.
"""
import itertools
import math
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.nn import functional as F

import helpers
from helpers import assert_untouched, snapshot
from xaiutils import data, models, zoo
from xaiutils.attribution.cam import grad_cam
from xaiutils.attribution.gradients import gradient
from xaiutils.attribution.paths import integrated_gradients
from xaiutils.bayesian import BayesLinear, BayesMnistCNN, elbo_loss, kl_divergence, sampled_weights
from xaiutils.evaluation.uncertainty import (SampledDropout, bayesian_samples, ensemble_samples, interval,
                                             mc_dropout_samples, mean_and_std, spread, weight_noise_samples)

images = helpers.float64_images


def linear(seed: int, features: int = 36, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, classes)).double().eval()


def dropout_linear(p: float, features: int = 36, classes: int = 3) -> nn.Module:
    """``Linear(Dropout(flatten(x)))``: the gradient of a thinned network is mask * w / (1 - p)."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), drop=nn.Dropout(p), fc=nn.Linear(features, classes))).double().eval()


def dropout_bn_cnn(p: float) -> nn.Module:
    """A CNN with BatchNorm (non-trivial running statistics) and dropout: BatchNorm must stay in eval mode."""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        conv=nn.Conv2d(1, 4, 3, padding=1), bn=nn.BatchNorm2d(4), relu=nn.ReLU(inplace=True), drop=nn.Dropout(p),
        pool=nn.AdaptiveAvgPool2d(2), flatten=nn.Flatten(), fc=nn.Linear(16, 3)))
    return helpers.randomised_bn(model).double().eval()


def bayes_linear(sigma: float = 0.1, features: int = 36, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(),
                                     fc=BayesLinear(features, classes, initial_sigma=sigma))).double().eval()


def bayes_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = BayesMnistCNN().double().eval()
    with torch.no_grad():
        model.fc.weight_rho.fill_(math.log(math.expm1(0.05)))
    return model


def dropout_cnn() -> nn.Module:
    torch.manual_seed(0)
    return models.MnistCNN(dropout=0.25).double().eval()


# ---------------------------------------------------------------------------- known answers
def test_an_ensemble_of_linear_models_has_the_mean_and_std_of_its_weight_rows():
    members = [linear(seed) for seed in range(5)]
    x = images(2, size=6)
    maps = ensemble_samples(gradient, members, x, 2)
    rows = torch.stack([m[1].weight[2].view(1, 6, 6) for m in members])  # (5, 1, 6, 6)
    assert maps.shape == (5, 2, 1, 6, 6)
    mean, std = mean_and_std(maps)
    for b in range(2):
        torch.testing.assert_close(mean[b], rows.mean(0), rtol=0, atol=1e-12)
        torch.testing.assert_close(std[b], rows.std(0), rtol=0, atol=1e-12)


def test_mc_dropout_with_p_zero_gives_the_map_itself_and_zero_spread():
    model, x = dropout_bn_cnn(0.0), images(3, size=8)
    expected = gradient(model, x, 1)
    maps = mc_dropout_samples(gradient, model, x, 1, samples=4)
    assert all(torch.equal(m, expected) for m in maps)
    assert mean_and_std(maps)[1].abs().max() == 0


def test_mc_dropout_before_a_linear_layer_averages_to_the_dropout_free_map():
    """Each sample is w * mask / (1 - p) with mask ~ Bernoulli(1 - p): mean w, std |w| sqrt(p / (1 - p))."""
    p, samples = 0.3, 2000
    model, x = dropout_linear(p), images(2, size=6)
    w = model.fc.weight[1].view(1, 6, 6)
    maps = mc_dropout_samples(gradient, model, x, 1, samples=samples, seed=5)
    assert maps.shape == (samples, 2, 1, 6, 6)
    assert torch.equal(maps[:, 0], maps[:, 1])  # one thinned network explains the whole batch
    ratio = maps[:, 0] / w
    assert torch.all((ratio.abs() < 1e-12) | ((ratio - 1 / (1 - p)).abs() < 1e-12))  # dropped or rescaled
    mean, std = mean_and_std(maps)
    relative_error = math.sqrt(p / (1 - p)) / math.sqrt(samples)  # 1.5% of |w|: 5 standard errors allowed
    assert ((mean[0] - w).abs() <= 5 * relative_error * w.abs() + 1e-12).all()
    assert ((std[0] / w.abs() - math.sqrt(p / (1 - p))).abs() < 0.05).all()


def test_integrated_gradients_sees_one_thinned_network_along_its_path():
    """On a linear model IG = x * gradient exactly, but only if every step uses the same masks."""
    model, x = dropout_linear(0.5), images(2, size=6)
    ig = mc_dropout_samples(integrated_gradients, model, x, 0, samples=6, seed=2, steps=7, batch_size=3)
    grads = mc_dropout_samples(gradient, model, x, 0, samples=6, seed=2)
    torch.testing.assert_close(ig, x * grads, rtol=0, atol=1e-12)
    assert mean_and_std(grads)[1].max() > 0


def test_sampled_dropout_keeps_one_mask_per_draw_of_the_right_shape():
    g = torch.Generator().manual_seed(0)
    element, channel = SampledDropout(0.5, channels=False), SampledDropout(0.5, channels=True)
    x = torch.ones(3, 4, 5, 5, dtype=torch.float64)
    for module, shape in ((element, (1, 4, 5, 5)), (channel, (1, 4, 1, 1))):
        module.redraw(g)
        first = module(x)
        assert module.mask.shape == shape and torch.equal(module(x), first)
        assert set(first.unique().tolist()) <= {0.0, 2.0} and torch.equal(first[0], first[2])
    masks = []
    for _ in range(20):
        element.redraw(g)
        masks.append(element(x)[0])
    assert len({tuple(m.flatten().tolist()) for m in masks}) == 20  # a fresh mask after each redraw
    with pytest.raises(ValueError, match="cannot be applied to activations of shape \\(3, 4, 6, 6\\)"):
        element(torch.ones(3, 4, 6, 6, dtype=torch.float64))


def test_mc_dropout_keeps_batchnorm_in_eval_mode_with_its_statistics():
    model, x = dropout_bn_cnn(0.5), images(4, size=8)
    model.train()  # the user's model in training mode: MC dropout must not use batch statistics
    before = snapshot(model)
    with pytest.warns(UserWarning, match="training mode"):
        maps = mc_dropout_samples(gradient, model, x, 0, samples=3, seed=1)
    assert_untouched(model, before, x, x.clone())
    # by hand: the same masks on an eval-mode copy (running statistics), drawn in the same order
    g = torch.Generator().manual_seed(1)
    reference = dropout_bn_cnn(0.5)
    for j in range(3):
        keep = (torch.rand((1, 4, 8, 8), generator=g, dtype=torch.float64) >= 0.5).double() / 0.5
        reference.drop = _Mask(keep)
        torch.testing.assert_close(maps[j], gradient(reference, x, 0), rtol=0, atol=1e-12)


class _Mask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def forward(self, x):
        return x * self.mask


def test_a_variational_layer_with_sigma_near_zero_is_its_mean():
    model, x = bayes_linear(sigma=1e-12), images(2, size=6)
    expected = gradient(model, x, 2)  # eval mode: the means
    torch.testing.assert_close(expected[0], model.fc.weight_mu[2].view(1, 6, 6), rtol=0, atol=0)
    maps = bayesian_samples(gradient, model, x, 2, samples=5)
    torch.testing.assert_close(maps, expected.expand_as(maps), rtol=0, atol=1e-10)


def test_a_variational_linear_layer_gives_maps_with_its_posterior_mean_and_std():
    model, x, samples = bayes_linear(sigma=0.1), images(1, size=6), 2000
    maps = bayesian_samples(gradient, model, x, 1, samples=samples, seed=4)[:, 0]
    mean, std = maps.mean(0), maps.std(0)
    mu, sigma = model.fc.weight_mu[1].view(1, 6, 6), model.fc.sigmas()[0][1].view(1, 6, 6)
    assert ((mean - mu).abs() < 5 * sigma / math.sqrt(samples)).all()
    assert ((std / sigma - 1).abs() < 0.1).all()  # the sample std's relative error is 1 / sqrt(2n) = 1.6%


def test_sampled_weights_draws_mu_plus_sigma_eps_from_the_generator_and_restores_the_layer():
    layer = bayes_linear(sigma=0.2).fc
    g, replay = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    x = torch.rand(2, 36, dtype=torch.float64)
    with sampled_weights(layer, g):
        first, again = layer(x), layer(x)
        layer.train()
        in_training = layer(x)
        layer.eval()
    eps_w = torch.randn(layer.weight_mu.shape, generator=replay, dtype=torch.float64)
    eps_b = torch.randn(layer.bias_mu.shape, generator=replay, dtype=torch.float64)
    w_sigma, b_sigma = layer.sigmas()
    expected = F.linear(x, layer.weight_mu + w_sigma * eps_w, layer.bias_mu + b_sigma * eps_b)
    torch.testing.assert_close(first, expected, rtol=0, atol=1e-12)
    assert torch.equal(first, again) and torch.equal(first, in_training)  # fixed in every mode
    assert layer.fixed is None and torch.equal(layer(x), F.linear(x, layer.weight_mu, layer.bias_mu))
    with pytest.raises(RuntimeError, match="boom"), sampled_weights(layer, g):
        raise RuntimeError("boom")
    assert layer.fixed is None


def test_the_kl_term_is_the_closed_form_of_torch_distributions_and_the_elbo_adds_it_per_example():
    model = bayes_linear(sigma=0.3)
    with torch.no_grad():
        model.fc.weight_mu.mul_(3)
    q = torch.distributions.Normal(torch.cat([model.fc.weight_mu.flatten(), model.fc.bias_mu]),
                                   torch.cat([s.flatten() for s in model.fc.sigmas()]))
    p = torch.distributions.Normal(torch.zeros(()), torch.tensor(model.fc.prior_sigma, dtype=torch.float64))
    torch.testing.assert_close(kl_divergence(model), torch.distributions.kl_divergence(q, p).sum(), rtol=1e-12, atol=0)
    x, y = torch.rand(5, 1, 6, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    model.train()
    torch.manual_seed(3)
    loss = elbo_loss(1000)(model, x, y)
    torch.manual_seed(3)
    expected = F.cross_entropy(model(x), y) + kl_divergence(model) / 1000
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-12)
    loss.backward()
    assert model.fc.weight_rho.grad.abs().sum() > 0  # the reparameterisation trick: rho gets a gradient


def test_mnist_cnn_without_dropout_is_the_architecture_of_the_shipped_models():
    plain = models.MnistCNN()
    assert repr(models.MnistCNN(dropout=0.0)) == repr(plain)
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    assert list(models.MnistCNN(dropout=0.3).state_dict()) == list(plain.state_dict())
    assert [m.p for m in models.MnistCNN(dropout=0.3).modules() if isinstance(m, nn.Dropout)] == [0.3] * 3
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\); got 1"):
        models.MnistCNN(dropout=1)


# ---------------------------------------------------------------------------- summaries
def test_mean_std_and_interval_equal_numpy():
    maps = torch.randn(7, 3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, std = mean_and_std(maps)
    np.testing.assert_allclose(mean.numpy(), maps.numpy().mean(0), rtol=0, atol=1e-14)
    np.testing.assert_allclose(std.numpy(), maps.numpy().std(0, ddof=1), rtol=0, atol=1e-14)
    low, high = interval(maps, level=0.8)
    np.testing.assert_allclose(low.numpy(), np.quantile(maps.numpy(), 0.1, axis=0), rtol=0, atol=1e-14)
    np.testing.assert_allclose(high.numpy(), np.quantile(maps.numpy(), 0.9, axis=0), rtol=0, atol=1e-14)
    assert ((maps >= low).double().mean(0) >= 5 / 7 - 1e-9).all()  # 7 samples: the 0.1 quantile excludes one


def test_spread_equals_pairwise_scipy_and_by_hand_measures():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(4, 2, 3, 5, 5, generator=g, dtype=torch.float64)
    pixels = maps.sum(2).flatten(2).numpy()  # channels summed, as every similarity of Part II
    pairs = list(itertools.combinations(range(4), 2))
    for b in range(2):
        rho = [spearmanr(np.abs(pixels[i, b]), np.abs(pixels[j, b]))[0] for i, j in pairs]
        assert spread(maps)[b].item() == pytest.approx(1 - np.mean(rho), abs=1e-12)
        signed = [spearmanr(pixels[i, b], pixels[j, b])[0] for i, j in pairs]
        assert spread(maps, absolute=False)[b].item() == pytest.approx(1 - np.mean(signed), abs=1e-12)
        top = [len(set(np.argsort(-np.abs(pixels[i, b]))[:5]) & set(np.argsort(-np.abs(pixels[j, b]))[:5])) / 5
               for i, j in pairs]
        assert spread(maps, measure="top_k", k=5)[b].item() == pytest.approx(1 - np.mean(top), abs=1e-12)
        cv = pixels[:, b].std(0, ddof=1).sum() / np.abs(pixels[:, b].mean(0)).sum()
        assert spread(maps, measure="cv")[b].item() == pytest.approx(cv, rel=1e-12)


def test_spread_is_zero_for_equal_samples_and_near_one_for_unrelated_ones():
    g = torch.Generator().manual_seed(2)
    one = torch.randn(1, 3, 1, 28, 28, generator=g, dtype=torch.float64)
    same = one.expand(5, -1, -1, -1, -1).clone()
    for measure, options in (("rank", {}), ("top_k", {"k": 50}), ("cv", {})):
        torch.testing.assert_close(spread(same, measure=measure, **options), torch.zeros(3, dtype=torch.float64),
                                   rtol=0, atol=1e-12)
    unrelated = torch.randn(5, 3, 1, 28, 28, generator=g, dtype=torch.float64)
    assert (spread(unrelated) - 1).abs().max() < 0.15  # 784 pixels: a pairwise Spearman of 0 +- 0.036
    assert (spread(unrelated, measure="top_k", k=78) - 0.9).abs().max() < 0.08  # chance overlap k / d = 0.1


# ---------------------------------------------------------------------------- seeds, batches, the user's model
SAMPLERS = [
    ("mc_dropout", mc_dropout_samples, dropout_cnn),
    ("bayesian", bayesian_samples, bayes_cnn),
]


@pytest.mark.parametrize("name, sampler, make", SAMPLERS)
def test_the_seed_fixes_the_samples_and_the_global_generator_is_left_alone(name, sampler, make):
    model, x = make(), images(2)
    state = torch.get_rng_state()
    first = sampler(gradient, model, x, 3, samples=3, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(sampler(gradient, model, x, 3, samples=3, seed=7), first)
    assert not torch.allclose(sampler(gradient, model, x, 3, samples=3, seed=8), first)
    assert mean_and_std(first)[1].max() > 0


@pytest.mark.parametrize("name, sampler, make", SAMPLERS)
def test_the_samples_do_not_depend_on_the_batch_size(name, sampler, make):
    model, x = make(), images(5)
    whole = sampler(gradient, model, x, 1, samples=3, seed=0)
    torch.testing.assert_close(sampler(gradient, model, x, 1, samples=3, seed=0, batch_size=2), whole,
                               rtol=0, atol=1e-12)

    def no_batch_size(m, rows, target):  # a method without batch_size: rows are split here
        return gradient(m, rows, target)

    torch.testing.assert_close(sampler(no_batch_size, model, x, 1, samples=3, seed=0, batch_size=2), whole,
                               rtol=0, atol=1e-12)


def test_ensemble_samples_rebind_a_layer_to_each_member_and_match_each_members_map():
    members = [helpers.float64_mnist_cnn(), helpers.mnist_cnn(seed=1).double()]
    x = images(2)
    maps = ensemble_samples(grad_cam, members, x, 4, layer=members[0].block3, batch_size=1)
    for member, sample in zip(members, maps):
        torch.testing.assert_close(sample, grad_cam(member, x, 4, layer=member.block3), rtol=0, atol=1e-12)
    assert not torch.allclose(maps[0], maps[1])


def test_weight_noise_samples_are_re_exported_for_the_fourth_source():
    from xaiutils.attribution import weight_noise

    assert weight_noise_samples is weight_noise.weight_noise_samples


def _call(sampler, method, model, x, target, **options):
    if sampler is ensemble_samples:
        return sampler(method, [model, model], x, target, **options)
    return sampler(method, model, x, target, samples=2, **options)


@pytest.mark.parametrize("sampler, make", [(mc_dropout_samples, lambda: dropout_bn_cnn(0.5)),
                                           (bayesian_samples, bayes_cnn), (ensemble_samples, dropout_cnn)])
def test_the_model_is_left_as_it_was_in_training_mode_and_on_error(sampler, make):
    model = make()
    model.train()
    first = next(model.parameters())
    first.grad = torch.ones_like(first)
    x = images(2, size=8 if sampler is mc_dropout_samples else 28)
    before, x_before = snapshot(model), x.clone()
    with pytest.warns(UserWarning, match="training mode"):
        _call(sampler, gradient, model, x, 1)
    assert_untouched(model, before, x, x_before)
    calls = []

    def fails_on_the_second_network(m, rows, target):
        calls.append(m)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return gradient(m, rows, target)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(RuntimeError, match="boom"):
            _call(sampler, fails_on_the_second_network, model, x, 1)
        with pytest.raises(ValueError, match="out of range"):
            _call(sampler, gradient, model, x, 11)
    assert_untouched(model, before, x, x_before)
    assert all(b.fixed is None for b in model.modules() if isinstance(b, BayesLinear))


# ---------------------------------------------------------------------------- bad inputs
MAPS = torch.zeros(3, 2, 1, 4, 4)


@pytest.mark.parametrize("call, error, message", [
    (lambda: mc_dropout_samples(gradient, helpers.float64_mnist_cnn(), images(1), 0), ValueError,
     "model must contain a dropout module .* MnistCNN has none"),
    (lambda: mc_dropout_samples(gradient, nn.Sequential(nn.Flatten(), nn.AlphaDropout(0.1), nn.Linear(784, 2)).double(),
                                images(1), 0), ValueError, "supports nn.Dropout .* AlphaDropout"),
    (lambda: mc_dropout_samples(gradient, dropout_cnn(), images(1), 0, samples=0), ValueError,
     "samples must be an integer >= 1; got 0"),
    (lambda: mc_dropout_samples(gradient, dropout_cnn(), images(1), 0, seed=-1), ValueError, "seed must be an integer"),
    (lambda: mc_dropout_samples("gradient", dropout_cnn(), images(1), 0), TypeError,
     "method must be an attribution function .* got 'gradient'"),
    (lambda: mc_dropout_samples(gradient, "mnist-dropout", images(1), 0), TypeError, "model must be a torch.nn.Module"),
    (lambda: mc_dropout_samples(gradient, dropout_cnn(), images(1)[0], 0), ValueError, "x must be a batch"),
    (lambda: bayesian_samples(gradient, dropout_cnn(), images(1), 0), ValueError,
     "model must contain a BayesLinear layer .* MnistCNN has none"),
    (lambda: ensemble_samples(gradient, helpers.float64_mnist_cnn(), images(1), 0), TypeError,
     "models must be a non-empty list of torch.nn.Module"),
    (lambda: ensemble_samples(gradient, [], images(1), 0), TypeError, "models must be a non-empty list"),
    (lambda: ensemble_samples(gradient, [helpers.float64_mnist_cnn(), "b"], images(1), 0), TypeError,
     "models\\[1\\] must be a torch.nn.Module; got 'b'"),
    (lambda: mean_and_std(MAPS[:1]), ValueError, "maps must hold at least 2 samples .* got shape \\(1, 2, 1, 4, 4\\)"),
    (lambda: mean_and_std(MAPS[0, 0, 0]), ValueError, "maps must be samples of a batch of maps, \\(S, B, ...\\)"),
    (lambda: mean_and_std(MAPS.long()), TypeError, "maps must be a floating-point tensor"),
    (lambda: mean_and_std(MAPS / 0), ValueError, "maps contains NaN or inf"),
    (lambda: interval(MAPS, level=1.0), ValueError, "level must be a number in \\(0, 1\\); got 1.0"),
    (lambda: spread(MAPS, measure="ranks"), ValueError, "measure must be one of .* \\(did you mean 'rank'\\?\\)"),
    (lambda: spread(MAPS + torch.randn(3, 2, 1, 4, 4), measure="top_k"), ValueError, "k must be given for measure='top_k'"),
    (lambda: spread(MAPS, k=3), ValueError, "k is the number of pixels of measure='top_k'"),
    (lambda: spread(MAPS), ValueError, "cannot rank a constant map"),
    (lambda: spread(MAPS, measure="cv"), ValueError, "mean map of example\\(s\\) \\[0, 1\\] is all zeros"),
    (lambda: spread(MAPS + 1, absolute=1), TypeError, "absolute must be True or False; got 1"),
    (lambda: BayesLinear(4, 2, prior_sigma=0), ValueError, "prior_sigma must be a number > 0; got 0"),
    (lambda: sampled_weights(helpers.float64_mnist_cnn(), torch.Generator()).__enter__(), ValueError,
     "model must contain a BayesLinear layer to sample its weights"),
    (lambda: sampled_weights(bayes_cnn(), 3).__enter__(), TypeError, "generator must be a torch.Generator; got 3"),
    (lambda: kl_divergence(helpers.float64_mnist_cnn()), ValueError, "model must contain a BayesLinear layer"),
])
def test_bad_input_names_the_argument_what_was_given_and_what_is_expected(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------------------- the shipped models
def test_mnist_dropout_is_accurate_and_mc_dropout_keeps_it_accurate():
    d = data.mnist()
    model = zoo.load("mnist-dropout")
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [zoo.DROPOUT] * 3
    assert models.accuracy(model, d.x_test, d.y_test) >= 0.96  # trained: 0.969 (mnist-standard: 0.98)
    maps = mc_dropout_samples(gradient, model, d.x_test[:8], d.y_test[:8], samples=3, seed=0)
    assert mean_and_std(maps)[1].abs().sum() > 0


def test_mnist_bayes_is_accurate_and_learned_a_posterior_wider_than_its_start():
    d = data.mnist()
    assert zoo.MNIST_TRAINING == len(d.x_train)  # the N of the KL term
    model = zoo.load("mnist-bayes")
    assert models.accuracy(model, d.x_test, d.y_test) >= 0.96  # trained: 0.970 with the mean weights
    weight_sigma, _ = model.fc.sigmas()
    assert weight_sigma.mean() > 0.03  # trained: 0.067, from 0.01 at the start: the KL term widened the posterior
    g = torch.Generator().manual_seed(0)
    accuracies = []
    for _ in range(3):
        with sampled_weights(model, g):
            accuracies.append(models.accuracy(model, d.x_test, d.y_test))
    assert min(accuracies) >= 0.94  # trained: 0.957 to 0.970 for three draws


def test_reset_parameters_reinitialises_a_variational_layer_as_the_randomisation_test_needs():
    from xaiutils.evaluation.sanity import reinitialise

    model = bayes_cnn()
    before = model.fc.weight_mu.detach().clone()
    reinitialise(model.fc, seed=3)
    assert not torch.allclose(model.fc.weight_mu, before)
    assert model.fc.weight_mu.abs().max() <= 1 / math.sqrt(128)
    torch.testing.assert_close(model.fc.sigmas()[0], torch.full((10, 128), 0.01, dtype=torch.float64), rtol=1e-9, atol=0)
