"""The self-checks of chapter 1: right answers pass, typical mistakes get a pointer."""
import pytest
import torch

from xaiutils import data, zoo
from xaiutils.exercises import evaluate


@pytest.fixture(scope="module")
def digit():
    mnist = data.mnist()
    return mnist.x_test[:1], int(mnist.y_test[0])


def autograd(model, x, c):
    x = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(x)[0, c], x)
    return grad


@pytest.fixture(scope="module")
def reach(digit):
    """Bisection for the step where the relative error of the linear prediction reaches 10%."""
    model = zoo.load("mnist-standard").double()
    x, c = digit[0].double(), digit[1]
    g = autograd(model, x, c)
    direction = g / g.norm()

    def error(eps):
        with torch.no_grad():
            actual = (model(x + eps * direction)[0, c] - model(x)[0, c]).item()
        return abs(actual - eps * g.norm().item()) / abs(actual)

    low, high = 0.01, 1.0  # error(low) < 0.1 < error(high)
    for _ in range(40):
        middle = (low * high) ** 0.5
        low, high = (middle, high) if error(middle) < 0.1 else (low, middle)
    with torch.no_grad():
        before, after = model.block1.conv(x) > 0, model.block1.conv(x + low * direction) > 0
    return low, before, after, g.norm().item()


def test_reach_right(reach):
    eps, before, after, _ = reach
    assert evaluate("ch01.1", eps, (before != after).sum().item()).correct is True
    assert evaluate("ch01.1", torch.tensor(0.9 * eps), (before != after).sum().item() - 200).correct is False


def test_reach_mistakes(reach):
    eps, before, after, norm = reach
    switched = (before != after).sum().item()
    cases = [((eps / norm, switched), "unit vector"),
             ((eps, before.numel()), "all ReLU units"),
             ((eps, (before & ~after).sum().item()), "either direction"),
             ((0.1, switched), "refine"),
             ((1.0, switched), "more than 10%")]
    for answer, words in cases:
        feedback = evaluate("ch01.1", *answer)
        assert feedback.correct is False and words in feedback.message, (answer, feedback)


def central(model, x, c, h):
    images = x + h * torch.cat([torch.eye(784), -torch.eye(784)]).to(x.dtype).reshape(-1, *x.shape[1:])
    with torch.no_grad():
        scores = model(images)[:, c]
    return ((scores[:784] - scores[784:]) / (2 * h)).reshape(x.shape)


def test_central_difference_right():
    assert evaluate("ch01.2", central, 2 * 784).correct is True
    wrong_count = evaluate("ch01.2", central, 784)
    assert wrong_count.correct is False and "twice per pixel" in wrong_count.message


def test_central_difference_mistakes():
    halved = evaluate("ch01.2", lambda model, x, c, h: 2 * central(model, x, c, h), 2 * 784)
    assert halved.correct is False and "2h" in halved.message

    def forward_difference(model, x, c, h):
        images = torch.cat([x, x + h * torch.eye(784).to(x.dtype).reshape(-1, *x.shape[1:])])
        with torch.no_grad():
            scores = model(images)[:, c]
        return ((scores[1:] - scores[0]) / h).reshape(x.shape)

    one_sided = evaluate("ch01.2", forward_difference, 785)
    assert one_sided.correct is False and "two forward passes per pixel" in one_sided.message
    backward = evaluate("ch01.2", lambda model, x, c, h: autograd(model, x, c), 1)
    assert backward.correct is False and "no backward pass" in backward.message


def test_second_class(digit):
    x, c = digit
    model = zoo.load("mnist-standard")
    with torch.no_grad():
        order = model(x)[0].sort(descending=True).indices.tolist()
    second_map = autograd(model, x, order[1])
    assert evaluate("ch01.3", order[1], second_map).correct is True
    first = evaluate("ch01.3", order[0], autograd(model, x, order[0]))
    assert first.correct is False and "first" in first.message
    absolute = evaluate("ch01.3", order[1], second_map.abs())
    assert absolute.correct is False and "signed" in absolute.message
    swapped_map = evaluate("ch01.3", order[1], autograd(model, x, order[0]))
    assert swapped_map.correct is False and "predicted class" in swapped_map.message
