"""What is specific to the Shapley comparators (shapley_values, kernel_shap, lime): bad feature masks, bad
sampling options and bad calls of evaluations() get a message that names the argument, what was given and
what is expected, and leave the model as it was. The checks common to every method (targets, inputs,
batch_size, inference mode, baselines) run over the registry in tests/test_registry.py and
tests/test_bad_inputs.py, which these methods are part of."""
import warnings

import pytest
import torch

from helpers import assert_unchanged, mnist_cnn, snapshot
from xaiutils.attribution import shapley as S

QUARTERS = (torch.arange(28)[:, None] // 14 * 2 + torch.arange(28)[None, :] // 14)[None]  # 4 features of 14 x 14
METHODS = {"shapley_values": (S.shapley_values, {}), "kernel_shap": (S.kernel_shap, {"samples": 4}),
           "lime": (S.lime, {"samples": 4})}


def call(name, model, x, target, **extra):
    method, fast = METHODS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return method(model, x, target, **{"features": QUARTERS, **fast, **extra})


@pytest.fixture
def model():
    return mnist_cnn()


@pytest.fixture
def x():
    return torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------- features
@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("features, error, message", [
    (torch.zeros(1, 28, 28), TypeError, r"features must be an integer tensor numbering the elements of an example "
                                        r"of shape \(1, 28, 28\) with features 0..M-1; got dtype torch.float32"),
    ([[0, 1], [2, 3]], TypeError, r"features must be None, a tuple of at most 3 square sizes \(ints >= 1\) or "
                                  r"an integer tensor .*; got list"),
    ((0, 14), TypeError, r"features must be None, a tuple of at most 3 square sizes .*; got tuple \(0, 14\)"),
    ((1, 1, 14, 14), TypeError, r"features must be None, a tuple of at most 3 square sizes"),
    (torch.zeros(3, 3, dtype=torch.long), ValueError,
     r"features of shape \(3, 3\) does not broadcast to an example's shape \(1, 28, 28\)"),
    (QUARTERS * 2, ValueError, r"features must number the features 0..M-1, each at least once; got the values "
                               r"\[0, 2, 4, 6\] \(4 distinct, from 0 to 6\)"),
    (QUARTERS - 1, ValueError, r"features must number the features 0..M-1, each at least once; got the values "
                               r"\[-1, 0, 1, 2\]"),
])
def test_a_bad_feature_mask_is_refused(name, features, error, message, model, x):
    before = snapshot(model)
    with pytest.raises(error, match=message):
        call(name, model, x, 1, features=features)
    assert_unchanged(model, before)


def test_a_mask_may_broadcast_or_carry_a_batch_dim_of_one_and_squares_may_be_given_by_their_size(model, x):
    columns = (torch.arange(28) // 7)[None, None, :]  # (1, 1, 28): 4 column bands
    attr = S.shapley_values(model, x, 1, features=columns)
    assert torch.equal(attr, S.shapley_values(model, x, 1, features=columns.expand(1, 1, 28, 28)))
    squares = S.shapley_values(model, x, 1, features=(14, 14))
    assert torch.equal(squares, S.shapley_values(model, x, 1, features=QUARTERS))
    mask, count = S.feature_mask((2, 3), (2, 5, 7))  # squares cut at the border, both channels together
    assert count == 9 and torch.equal(mask[0], mask[1]) and mask[0, 4].tolist() == [6, 6, 6, 7, 7, 7, 8]


def test_exact_shapley_values_refuse_more_than_16_features_with_the_count(model, x):
    with pytest.raises(ValueError, match=r"features: exact Shapley values evaluate all 2\^M coalitions, so M must "
                                         r"be at most 16; got M = 784 features \(by default every element of an "
                                         r"example is a feature\) for an example of shape \(1, 28, 28\)"):
        S.shapley_values(model, x, 1)
    with pytest.raises(ValueError, match="got M = 49 features for an example"):
        S.shapley_values(model, x, 1, features=(torch.arange(28)[:, None] // 4 * 7 + torch.arange(28) // 4)[None])


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize("name, options, error, message", [
    ("kernel_shap", dict(samples=0), ValueError, "samples must be an integer >= 1; got 0"),
    ("lime", dict(samples=2.5), TypeError, "samples must be an integer >= 1; got 2.5"),
    ("kernel_shap", dict(seed=-1), ValueError, "seed must be an integer >= 0; got -1"),
    ("lime", dict(seed=2**32), ValueError, r"seed must be an integer in \[0, 2\*\*32 - 1\]; got 4294967296"),
    ("lime", dict(kernel_width=0), ValueError, "kernel_width must be a number > 0; got 0"),
    ("lime", dict(kernel_width=float("inf")), ValueError, "kernel_width must be a finite number > 0; got inf"),
    ("lime", dict(alpha=-1.0), ValueError, "alpha must be a number >= 0; got -1.0"),
    ("lime", dict(alpha=float("inf")), ValueError, "alpha must be a finite number >= 0; got inf"),
])
def test_bad_options_are_refused(name, options, error, message, model, x):
    with pytest.raises(error, match=message):
        call(name, model, x, 1, **options)


def test_evaluations_refuses_an_unknown_method_and_a_bad_count():
    with pytest.raises(ValueError, match="method must be shapley_values, kernel_shap or lime .*; got 'occlusion'"):
        S.evaluations("occlusion", 4)
    with pytest.raises(ValueError, match="features must be an integer >= 1; got 0"):
        S.evaluations(S.lime, 0)
