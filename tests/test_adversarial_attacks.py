"""FGSM and PGD: closed forms on a linear model, the constraints, Captum, side effects and bad input."""
import pytest
import torch
from captum.robust import FGSM, PGD
from torch import nn
from torch.nn import functional as F

from helpers import assert_unchanged, mnist_cnn, shapes_resnet, snapshot
from xaiutils import data, models, zoo
from xaiutils.adversarial import fgsm, pgd, robust_accuracy

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")


def linear_model(classes: int = 2):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, classes)).double().eval()


def loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


def linf(d):
    return d.flatten(1).abs().amax(1)


def l2(d):
    return d.flatten(1).norm(dim=1)


# ---------------------------------------------------------------------------- closed forms
def test_fgsm_on_a_linear_model_steps_along_the_sign_of_the_weight_difference():
    # two classes: d/dx CE(x, y) = (p_other - 1 + ...) -> a positive multiple of w_other - w_y
    model = linear_model()
    w = model[1].weight.detach()
    x = torch.rand(4, 1, 3, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])
    direction = (w[1 - y] - w[y]).view(4, 1, 3, 4)
    expected = x + 0.05 * direction.sign()
    assert torch.allclose(fgsm(model, x, y, epsilon=0.05, clamp=None), expected)
    expected_l2 = x + 0.05 * direction / l2(direction).view(-1, 1, 1, 1)
    assert torch.allclose(fgsm(model, x, y, epsilon=0.05, norm="l2", clamp=None), expected_l2)
    # targeted towards the other class: the same step (with two classes, away from y = towards 1 - y)
    assert torch.allclose(fgsm(model, x, 1 - y, epsilon=0.05, targeted=True, clamp=None), expected)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_on_a_linear_model_ends_at_the_closed_form_optimum(norm):
    # the loss of a two-class linear model grows along w_other - w_y everywhere: the optimum over the
    # ball is its boundary point in that direction (sign for L-inf, the unit vector for L2). From a
    # random start L-inf PGD reaches it exactly (clipping); L2 projection only shrinks the sideways
    # part of a random start, so L2 starts from x.
    model = linear_model()
    w = model[1].weight.detach()
    x = torch.rand(3, 1, 3, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 1])
    direction = (w[1 - y] - w[y]).view(3, 1, 3, 4)
    step = direction.sign() if norm == "linf" else direction / l2(direction).view(-1, 1, 1, 1)
    x_adv = pgd(model, x, y, epsilon=0.3, steps=20, norm=norm, clamp=None, random_start=norm == "linf", seed=3)
    assert torch.allclose(x_adv, x + 0.3 * step, atol=1e-12)


# ---------------------------------------------------------------------------- constraints
@pytest.mark.parametrize("norm,epsilon", [("linf", 0.1), ("l2", 1.5)])
def test_pgd_stays_in_the_ball_and_the_range_and_increases_the_loss(norm, epsilon):
    model = zoo.load("mnist-standard")
    d = data.mnist()
    x, y = d.x_test[:32], d.y_test[:32]
    x_adv = pgd(model, x, y, epsilon=epsilon, steps=10, norm=norm)
    size = linf(x_adv - x) if norm == "linf" else l2(x_adv - x)
    assert (size <= epsilon + 1e-6).all()
    assert size.max() > 0.5 * epsilon  # it moved
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (loss(model, x_adv, y) > loss(model, x, y)).all()
    # and it changes predictions: the point of the attack
    with torch.no_grad():
        assert (model(x_adv).argmax(1) != y).float().mean() > 0.3


def test_fgsm_clamps_to_the_input_range():
    model, x = mnist_cnn(), torch.rand(4, 1, 28, 28)
    x_adv = fgsm(model, x, 3, epsilon=0.5)
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and linf(x_adv - x).max() <= 0.5 + 1e-6
    unclamped = fgsm(model, x, 3, epsilon=0.5, clamp=None)
    assert unclamped.min() < 0 and unclamped.max() > 1


def test_targeted_pgd_moves_towards_the_target_class():
    model = zoo.load("mnist-standard")
    d = data.mnist()
    x, y = d.x_test[:32], d.y_test[:32]
    target = (y + 1) % 10
    x_adv = pgd(model, x, target, epsilon=0.2, steps=20, targeted=True)
    with torch.no_grad():
        p0, p1 = F.softmax(model(x), 1), F.softmax(model(x_adv), 1)
    assert (p1.gather(1, target[:, None]) > p0.gather(1, target[:, None])).all()
    assert (p1.argmax(1) == target).float().mean() > 0.5
    assert (loss(model, x_adv, target) < loss(model, x, target)).all()


def test_pgd_is_stronger_than_fgsm_and_zero_epsilon_changes_nothing():
    model = zoo.load("mnist-standard")
    d = data.mnist()
    x, y = d.x_test[:100], d.y_test[:100]
    with torch.no_grad():
        fgsm_acc = (model(fgsm(model, x, y, epsilon=0.1)).argmax(1) == y).float().mean().item()
    pgd_acc = robust_accuracy(model, x, y, epsilon=0.1, steps=20)
    assert pgd_acc < fgsm_acc
    assert torch.equal(pgd(model, x, y, epsilon=0.0, steps=3), x)
    assert robust_accuracy(model, x, y, epsilon=0.0, steps=1) == models.accuracy(model, x, y)


def test_random_start_is_seeded_and_batching_changes_nothing():
    model, x, y = mnist_cnn(), torch.rand(6, 1, 28, 28), torch.arange(6)
    a = pgd(model, x, y, epsilon=0.1, steps=3, seed=1)
    assert torch.equal(a, pgd(model, x, y, epsilon=0.1, steps=3, seed=1))
    assert not torch.equal(a, pgd(model, x, y, epsilon=0.1, steps=3, seed=2))
    assert torch.allclose(a, pgd(model, x, y, epsilon=0.1, steps=3, seed=1, batch_size=4), atol=1e-6)


# ---------------------------------------------------------------------------- Captum
def scaled_cross_entropy(output, y):
    # Captum's FGSM skips gradient entries with |g| <= 1e-6; scaling the loss (which leaves every
    # sign unchanged) moves that threshold out of the way so that both step on the same entries
    return F.cross_entropy(output, y, reduction="none") * 1e9


@pytest.mark.parametrize("make,shape", [(mnist_cnn, (4, 1, 28, 28)), (shapes_resnet, (2, 3, 64, 64))])
def test_fgsm_agrees_with_captum_in_float64(make, shape):
    model = make().double()
    x = torch.rand(*shape, dtype=torch.float64)
    y = torch.arange(shape[0]) % 3
    for targeted in (False, True):
        ours = fgsm(model, x, y, epsilon=0.03, targeted=targeted)
        theirs = FGSM(model, scaled_cross_entropy, lower_bound=0.0, upper_bound=1.0).perturb(
            x, 0.03, y, targeted=targeted)
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)


def test_captums_threshold_is_the_only_difference_from_fgsm():
    # with the plain loss Captum leaves the pixels with tiny gradients where they were
    model = mnist_cnn().double()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    y = torch.arange(4)
    theirs = FGSM(model, lambda out, t: F.cross_entropy(out, t, reduction="none")).perturb(x, 0.03, y)
    ours = fgsm(model, x, y, epsilon=0.03, clamp=None)
    differ = (ours - theirs).abs() > 1e-12
    assert differ.any()
    assert torch.equal(theirs[differ], x[differ])  # Captum did not step there


def test_pgd_linf_agrees_with_captum_in_float64():
    model = mnist_cnn().double()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    y = torch.tensor([1, 3, 5, 7])
    for targeted in (False, True):
        ours = pgd(model, x, y, epsilon=0.1, steps=7, step_size=0.02, random_start=False, targeted=targeted)
        theirs = PGD(model, scaled_cross_entropy, lower_bound=0.0, upper_bound=1.0).perturb(
            x, radius=0.1, step_size=0.02, step_num=7, target=y, targeted=targeted, norm="Linf")
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)


def test_captum_l2_pgd_takes_signed_steps_and_ours_follows_the_gradient():
    # Captum's L2 PGD reuses FGSM's signed step and only projects onto the L2 ball; Madry et al.'s
    # L2 attack steps along the normalised gradient. After one step from x both lie in the ball but
    # point in different directions; ours is the steepest L2 ascent, so its first-order gain is larger.
    model = linear_model(3)
    x = torch.rand(3, 1, 3, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    ours = pgd(model, x, y, epsilon=0.5, steps=1, step_size=0.5, norm="l2", random_start=False, clamp=None)
    theirs = PGD(model, lambda out, t: F.cross_entropy(out, t, reduction="none")).perturb(
        x, radius=0.5, step_size=0.5, step_num=1, target=y, norm="L2")
    assert torch.allclose(l2(ours - x), torch.full((3,), 0.5, dtype=torch.float64))
    assert (l2(theirs - x) <= 0.5 + 1e-12).all()
    grad = torch.func.grad(lambda z: F.cross_entropy(model(z), y, reduction="sum"))(x)
    gain = lambda d: (grad * d).flatten(1).sum(1)  # noqa: E731
    assert (gain(ours - x) > gain(theirs - x)).all()


# ---------------------------------------------------------------------------- side effects, bad input
@pytest.mark.parametrize("attack", [fgsm, pgd])
def test_model_and_input_left_unchanged_also_on_error(attack):
    model = shapes_resnet()
    model.layer1.train()
    model.fc.weight.requires_grad_(False)
    x = torch.rand(2, 3, 64, 64)
    x_copy = x.clone()
    before = snapshot(model)
    attack(model, x, 1, epsilon=0.05)  # a mixed-mode model comes back mixed
    assert_unchanged(model, before)
    model.train()
    before_train = snapshot(model)
    with pytest.warns(UserWarning, match="training mode"):
        attack(model, x, 1, epsilon=0.05)
    assert_unchanged(model, before_train)
    model.eval()
    model.layer1.train()
    with pytest.raises(ValueError, match="out of range"):
        attack(model, x, 7, epsilon=0.05)
    assert_unchanged(model, before)
    assert torch.equal(x, x_copy)


def test_bad_input_gets_a_clear_error():
    model, x = mnist_cnn(), torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match="epsilon must be a finite number >= 0"):
        pgd(model, x, 0, epsilon=-0.1)
    with pytest.raises(ValueError, match="epsilon"):
        fgsm(model, x, 0, epsilon=float("nan"))
    with pytest.raises(ValueError, match="norm must be one of"):
        pgd(model, x, 0, epsilon=0.1, norm="l1")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        pgd(model, x, 0, epsilon=0.1, steps=0)
    with pytest.raises(ValueError, match="step_size"):
        pgd(model, x, 0, epsilon=0.1, step_size=-1.0)
    with pytest.raises(ValueError, match="outside clamp"):
        fgsm(model, x * 3, 0, epsilon=0.1)
    with pytest.raises(ValueError, match="low < high"):
        fgsm(model, x, 0, epsilon=0.1, clamp=(1.0, 0.0))
    with pytest.raises(ValueError, match="NaN or inf"):
        fgsm(model, torch.full((1, 1, 28, 28), float("nan")), 0, epsilon=0.1, clamp=None)
    with pytest.raises(ValueError, match="one loss per example"):
        fgsm(model, x, 0, epsilon=0.1, loss_fn=lambda out, y: F.cross_entropy(out, y))
