"""Faithfulness metrics: known answers on linear models first, then agreement with Captum's infidelity."""
import pytest
import torch
from torch import nn

from helpers import assert_unchanged, mnist_cnn, snapshot, vgg_like
from xaiutils.attribution.gradients import gradient, gradient_x_input
from xaiutils.core.baselines import resolve_baseline

from xaiutils import evaluation as Fa


def linear_model(features=(1, 6, 6), classes=3, seed=0):
    torch.manual_seed(seed)
    d = int(torch.tensor(features).prod())
    return nn.Sequential(nn.Flatten(), nn.Linear(d, classes)).double().eval()


@pytest.fixture
def linear():
    model = linear_model()
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return model, x, torch.tensor([0, 1, 2, 0])


# ---------------------------------------------------------------------------- deletion / insertion / AOPC
def test_deletion_of_the_exact_contributions_falls_faster_than_random(linear):
    model, x, y = linear
    exact = gradient_x_input(model, x, y)  # w_i x_i: the exact contribution of each pixel to the logit
    random = torch.rand(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    perfect = Fa.deletion(model, x, exact, y, steps=36, score_kind="logit")
    chance = Fa.deletion(model, x, random, y, steps=36, score_kind="logit")
    assert (perfect.area < chance.area).all()
    # removing pixels in order of w_i x_i removes the largest contributions first: the curve is the
    # logit minus the running sum of the sorted contributions
    contrib = exact.flatten(1).sort(1, descending=True).values
    bias = model[1].bias[y]
    expected = torch.cat([torch.zeros(4, 1, dtype=x.dtype), contrib.cumsum(1)], 1)
    torch.testing.assert_close(perfect.scores, contrib.sum(1, keepdim=True) + bias[:, None] - expected)
    torch.testing.assert_close(perfect.fractions, torch.arange(37, dtype=torch.float64) / 36)


def test_insertion_of_the_exact_contributions_rises_faster_than_random(linear):
    model, x, y = linear
    exact = gradient_x_input(model, x, y)
    random = torch.rand(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    perfect = Fa.insertion(model, x, exact, y, removal="zeros", score_kind="logit")
    chance = Fa.insertion(model, x, random, y, removal="zeros", score_kind="logit")
    assert (perfect.area > chance.area).all()
    # the curve starts at the removed image and ends at the original
    torch.testing.assert_close(perfect.scores[:, -1], model(x).gather(1, y[:, None])[:, 0].detach())
    torch.testing.assert_close(perfect.scores[:, 0], model(torch.zeros_like(x)).gather(1, y[:, None])[:, 0].detach())


def test_aopc_known_answer_and_orders(linear):
    model, x, y = linear
    exact = gradient_x_input(model, x, y)
    morf = Fa.aopc(model, x, exact, y, order="most", removal="zeros", steps=36)
    lerf = Fa.aopc(model, x, exact, y, order="least", removal="zeros", steps=36)
    contrib = exact.flatten(1).sort(1, descending=True).values
    drops = torch.cat([torch.zeros(4, 1, dtype=x.dtype), contrib.cumsum(1)], 1)
    torch.testing.assert_close(morf, drops.mean(1))
    assert (morf > lerf).all()


def test_patches_rank_by_summed_relevance():
    x = torch.zeros(1, 1, 4, 4)
    attr = torch.zeros(1, 1, 4, 4)
    attr[0, 0, 2:, 2:] = 1.0  # the bottom-right 2x2 patch is the most relevant
    ranks = Fa.feature_ranks(attr, x, "most", patch=2).view(4, 4)
    assert (ranks[2:, 2:] == 0).all() and (ranks[:2, :2] > 0).all()
    # a 5x5 image: the last row and column form partial patches, ranked by their sum too
    x, attr = torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 5, 5)
    attr[0, 0, 0, 0] = 1.5          # full patch, sum 1.5
    attr[0, 0, 4, :2] = 0.5         # partial patch (one row), sum 1.0
    ranks = Fa.feature_ranks(attr, x, "most", patch=2).view(5, 5)
    assert (ranks[:2, :2] == 0).all() and (ranks[4, :2] == 1).all()


def test_removal_values():
    x = torch.rand(2, 3, 8, 8)
    assert (resolve_baseline(x, "zeros") == 0).all()
    torch.testing.assert_close(resolve_baseline(x, "mean")[:, :, 0, 0], x.mean((2, 3)))
    u = resolve_baseline(x, "uniform", seed=1)
    assert (u >= x.flatten(1).amin(1)[:, None, None, None]).all()
    assert torch.equal(u, resolve_baseline(x, "uniform", seed=1))
    assert resolve_baseline(x, "blur").shape == x.shape
    assert (resolve_baseline(x, 0.5) == 0.5).all()


def test_batching_does_not_change_curves():
    model = mnist_cnn()
    x = torch.rand(3, 1, 28, 28)
    attr = gradient(model, x, 1)
    a = Fa.deletion(model, x, attr, 1, steps=10)
    b = Fa.deletion(model, x, attr, 1, steps=10, batch_size=5)
    torch.testing.assert_close(a.scores, b.scores)


# ---------------------------------------------------------------------------- infidelity
def test_infidelity_of_the_exact_attribution_of_a_linear_model_is_zero(linear):
    model, x, y = linear
    grad = gradient(model, x, y)
    assert Fa.infidelity(model, x, grad, y, sigma=0.3, samples=20).abs().max() < 1e-20
    assert Fa.infidelity(model, x, grad, y, perturbation="square", size=3).abs().max() < 1e-20
    # a global attribution (w x) with the square's indicator as perturbation (Captum's multiply_by_inputs)
    gxi = gradient_x_input(model, x, y)
    assert Fa.infidelity(model, x, gxi, y, perturbation="square", size=3, multiply_by_inputs=True).max() < 1e-20
    assert Fa.infidelity(model, x, torch.rand_like(x), y).min() > 1e-3


def test_infidelity_is_the_mean_squared_error(linear):
    model, x, y = linear
    attr = torch.rand_like(x)
    noise = Fa.perturbations(x, 5, sigma=0.2, seed=4)
    f = lambda z: model(z).gather(1, y[:, None])[:, 0]
    expected = torch.stack([((n * attr).flatten(1).sum(1) - (f(x) - f(x - n))) ** 2 for n in noise]).mean(0)
    torch.testing.assert_close(Fa.infidelity(model, x, attr, y, samples=5, sigma=0.2, seed=4), expected.detach())


@pytest.mark.parametrize("kind, normalise, global_attr", [("gaussian", False, False), ("gaussian", True, False),
                                                          ("square", False, True), ("square", True, False)])
def test_infidelity_matches_captum(kind, normalise, global_attr):
    from captum.metrics import infidelity, infidelity_perturb_func_decorator

    model = vgg_like().double()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 3, 1])
    attr = (gradient_x_input if global_attr else gradient)(model, x, target)
    samples, seed = 6, 2
    ours = Fa.infidelity(model, x, attr, target, perturbation=kind, samples=samples, size=5,
                         multiply_by_inputs=global_attr, normalise=normalise, seed=seed)
    noise = Fa.perturbations(x, samples, kind, size=5, seed=seed)  # (samples, B, ...)
    # Captum repeats each example consecutively (repeat_interleave): reorder our draws the same way
    interleaved = noise.transpose(0, 1).reshape(-1, *x.shape[1:])

    if global_attr:  # Captum derives the perturbation as (x - perturbed) / (x - baseline)
        perturb = infidelity_perturb_func_decorator(True)(lambda inputs: inputs - interleaved)
    else:
        perturb = lambda inputs: (interleaved, inputs - interleaved)  # noqa: E731

    theirs = infidelity(model, perturb, x, attr, target=target, n_perturb_samples=samples, normalize=normalise)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_custom_perturbation_callable(linear):
    model, x, y = linear
    fn = lambda xx, samples, generator: 0.1 * torch.ones(samples, *xx.shape, dtype=xx.dtype)
    value = Fa.infidelity(model, x, gradient(model, x, y), y, perturbation=fn, samples=3)
    assert value.abs().max() < 1e-20
    with pytest.raises(ValueError, match="shape"):
        Fa.infidelity(model, x, gradient(model, x, y), y, perturbation=lambda xx, s, g: torch.ones(2), samples=3)


# ---------------------------------------------------------------------------- correlations
def test_sensitivity_n_is_one_for_exact_contributions_of_a_linear_model(linear):
    model, x, y = linear
    gxi = gradient_x_input(model, x, y)
    for n in (1, 5, 30):
        torch.testing.assert_close(Fa.sensitivity_n(model, x, gxi, y, n=n, samples=20),
                                   torch.ones(4, dtype=x.dtype))
    torch.testing.assert_close(Fa.faithfulness_correlation(model, x, gxi, y, samples=20), torch.ones(4, dtype=x.dtype))
    assert (Fa.sensitivity_n(model, x, torch.rand_like(x), y, n=5, samples=20) < 0.9).all()


# ---------------------------------------------------------------------------- EvalAttAI
def test_evalattai_noise_on_the_relevant_features_lowers_confidence_faster():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).double().eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0, :4] = 2.0  # only the first 4 features matter
        model[1].bias.copy_(torch.tensor([0.0, 4.0]))
    x = torch.ones(64, 1, 4, 4, dtype=torch.float64)
    relevant = torch.zeros_like(x)
    relevant.view(64, -1)[:, :4] = 1.0
    faithful = Fa.evalattai(model, x, relevant, 0, steps=8, epsilon=0.5, seed=1)
    unfaithful = Fa.evalattai(model, x, 1 - relevant, 0, steps=8, epsilon=0.5, seed=1)
    # noise on ignored features changes nothing: a flat curve at the initial confidence
    torch.testing.assert_close(unfaithful.scores, unfaithful.scores[:, :1].expand(-1, 9))
    # symmetric noise can raise one example's confidence; on average it falls (the softmax saturates)
    assert faithful.area.mean() < unfaithful.area.mean() - 0.05
    assert faithful.slope.mean() < 0
    accuracy = Fa.evalattai(model, x, relevant, 0, steps=8, epsilon=0.5, seed=1, score_kind="correct")
    assert set(accuracy.scores.unique().tolist()) <= {0.0, 1.0}
    assert accuracy.scores[:, 0].mean() == 1.0 and accuracy.scores[:, -1].mean() < 0.9


def test_evalattai_total_normalisation_spends_the_budget_of_uniform_noise():
    # One logit reads feature 0 only; the map covers features 0-3 of 16 equally. "max" gives
    # them weight 1, "total" gives them weight 16 / 4 = 4 (mean weight 1, like uniform noise),
    # so with the same noise the logit moves exactly 4 times as far.
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 1, bias=False)).double().eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0, 0] = 1.0
    x = torch.zeros(3, 1, 4, 4, dtype=torch.float64)
    attr = torch.zeros_like(x)
    attr.view(3, -1)[:, :4] = 0.7
    runs = {n: Fa.evalattai(model, x, attr, 0, steps=5, epsilon=0.1, normalise=n, score_kind="logit", seed=3)
            for n in ("max", "total")}
    assert runs["max"].scores.abs().max() > 0
    torch.testing.assert_close(runs["total"].scores, 4 * runs["max"].scores)
    uniform = Fa.evalattai(model, x, torch.ones_like(x), 0, steps=5, epsilon=0.1, normalise="total",
                           score_kind="logit", seed=3)
    torch.testing.assert_close(uniform.scores, runs["max"].scores)  # weight 1 everywhere
    with pytest.raises(ValueError, match="normalise"):
        Fa.evalattai(model, x, attr, 0, normalise="sum")


# ---------------------------------------------------------------------------- side effects and bad input
def test_no_side_effects_on_the_model_or_input():
    model = mnist_cnn()
    model.train()
    before = snapshot(model)
    x = torch.rand(2, 1, 28, 28)
    x0 = x.clone()
    attr = torch.rand_like(x)
    with pytest.warns(UserWarning, match="training mode"):
        Fa.deletion(model, x, attr, 1, steps=4)
    with pytest.warns(UserWarning):
        Fa.infidelity(model, x, attr, 1, samples=2)
    with pytest.warns(UserWarning):
        Fa.sensitivity_n(model, x, attr, 1, n=10, samples=3)
    with pytest.warns(UserWarning):
        Fa.evalattai(model, x, attr, 1, steps=2)
    assert_unchanged(model, before)
    assert torch.equal(x, x0)


def test_bad_input_gets_a_clear_error(linear):
    model, x, y = linear
    attr = torch.rand_like(x)
    with pytest.raises(ValueError, match="does not fit"):
        Fa.deletion(model, x, attr[:, :, :4], y)
    with pytest.raises(ValueError, match="steps"):
        Fa.deletion(model, x, attr, y, steps=0)
    with pytest.raises(ValueError, match="removal"):
        Fa.deletion(model, x, attr, y, removal="nothing")
    with pytest.raises(ValueError, match="order"):
        Fa.pixel_flipping(model, x, attr, y, order="middle")
    with pytest.raises(ValueError, match="sigma"):
        Fa.infidelity(model, x, attr, y, sigma=-0.1)
    with pytest.raises(ValueError, match="size"):
        Fa.infidelity(model, x, attr, y, perturbation="square", size=7)
    with pytest.raises(ValueError, match="subset size"):
        Fa.sensitivity_n(model, x, attr, y, n=37)
    with pytest.raises(ValueError, match="epsilon"):
        Fa.evalattai(model, x, attr, y, epsilon=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        Fa.deletion(model, x, attr * float("nan"), y)
