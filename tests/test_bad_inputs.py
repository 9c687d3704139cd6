"""Every bad input gets a message that names the argument, what was given and what is expected;
nothing hangs, nothing wrong is returned silently, and the model is left as it was.

One test per class of bad input, over every method of the registry, every model-based metric and
every attack (the classes an audit of ~1,800 calls found answered badly)."""
import json
import warnings

import pytest
import torch
from torch import nn

from helpers import assert_unchanged, mnist_cnn, snapshot
from xaiutils import METHODS, data, evaluation as E, models
from xaiutils.adversarial import fgsm, manipulate_explanation, pgd, robust_accuracy
from xaiutils.attribution import gradient, occlusion
from xaiutils.core.baselines import resolve_baseline

FAST = {"integrated_gradients": {"steps": 3}, "expected_gradients": {"samples": 3}, "blur_ig": {"steps": 3},
        "guided_ig": {"steps": 3}, "smoothgrad": {"samples": 2}, "smoothgrad_sq": {"samples": 2},
        "vargrad": {"samples": 2}, "occlusion": {"window": (14, 14), "stride": 14},
        "shapley_values": {"features": (14, 14)}, "kernel_shap": {"features": (14, 14), "samples": 4},
        "lime": {"features": (14, 14), "samples": 4}, "noisegrad": {"samples": 2},
        "fusiongrad": {"samples": 2, "input_samples": 2}}
BASELINE_METHODS = ["integrated_gradients", "guided_ig", "deeplift", "occlusion", "shapley_values", "kernel_shap",
                    "lime"]


def call(name, model, x, target, **extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return METHODS[name](model, x, target, **{**FAST.get(name, {}), **extra})


@pytest.fixture
def model():
    return mnist_cnn()


@pytest.fixture
def x():
    return torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------- methods
@pytest.mark.parametrize("name", METHODS)
def test_a_target_longer_than_the_batch_is_refused(name, model, x):
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"target must be an int or have one class per example, shape \(2,\); "
                                         r"got shape \(3,\)"):
        call(name, model, x, torch.tensor([1, 2, 3]))
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", METHODS)
def test_a_float_target_is_refused(name, model, x):
    with pytest.raises(TypeError, match="target must hold integer class indices; got dtype torch.float32"):
        call(name, model, x, torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("name", METHODS)
def test_an_image_without_its_batch_dimension_is_refused_with_the_fix(name, model, x):
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        call(name, model, x[0], 1)


@pytest.mark.parametrize("name", METHODS)
def test_an_empty_batch_is_refused(name, model, x):
    with pytest.raises(ValueError, match=r"x must hold at least one example; got an empty batch of shape \(0, 1, 28, 28\)"):
        call(name, model, x[:0], 1)


@pytest.mark.parametrize("name", METHODS)
def test_a_float64_input_to_a_float32_model_is_refused_with_the_fix(name, model, x):
    with pytest.raises(TypeError, match=r"x has dtype torch.float64 but the model's parameters are torch.float32; "
                                        r"use x.to\(torch.float32\)"):
        call(name, model, x.double(), 1)


@pytest.mark.parametrize("name", METHODS)
def test_inside_inference_mode_the_call_is_refused(name, model, x):
    before = snapshot(model)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        call(name, model, x, 1)
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", METHODS)
def test_batch_size_zero_is_refused(name, model, x):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1; got 0"):
        call(name, model, x, 1, batch_size=0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", BASELINE_METHODS)
def test_a_non_finite_baseline_is_refused_and_nothing_hangs(name, value, model, x):
    before = snapshot(model)
    for baseline in (value, torch.full(x.shape[1:], value)):
        with pytest.raises(ValueError, match="baseline must be finite"):
            call(name, model, x, 1, baseline=baseline)
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", BASELINE_METHODS)
def test_a_baseline_name_outside_the_vocabulary_is_refused_with_the_names(name, model, x):
    with pytest.raises(ValueError, match=r"baseline must be one of 'zeros', 'mean', 'blur', 'uniform', 'gaussian'; "
                                         r"got 'black'"):
        call(name, model, x, 1, baseline="black")


@pytest.mark.parametrize("name", BASELINE_METHODS)
def test_every_baseline_name_is_accepted(name, model, x):
    for baseline in ("zeros", "mean", "blur", "uniform", "gaussian"):
        attr = call(name, model, x, 1, baseline=baseline)
        assert attr.shape == x.shape and torch.isfinite(attr).all()


def test_expected_gradients_refuses_non_finite_references_and_defaults_to_the_batch(model, x):
    with pytest.raises(ValueError, match="references must be finite"):
        call("expected_gradients", model, x, 1, references=torch.full_like(x, float("nan")))
    attr = call("expected_gradients", model, x, 1)
    assert torch.equal(attr, call("expected_gradients", model, x, 1, references=x))


def test_occlusion_takes_the_baseline_vocabulary(model, x):
    assert torch.equal(occlusion(model, x, 1, window=(14, 14), stride=14, baseline="zeros"),
                       occlusion(model, x, 1, window=(14, 14), stride=14, baseline=0.0))


# ---------------------------------------------------------------------------- metrics
def _map(model, x):
    return gradient(model, x, torch.tensor([1, 2]))


MAP_METRICS = {
    "deletion": lambda m, x, a, t, **o: E.deletion(m, x, a, t, steps=4, **o),
    "insertion": lambda m, x, a, t, **o: E.insertion(m, x, a, t, steps=4, **o),
    "aopc": lambda m, x, a, t, **o: E.aopc(m, x, a, t, steps=4, **o),
    "infidelity": lambda m, x, a, t, **o: E.infidelity(m, x, a, t, samples=3, **o),
    "sensitivity_n": lambda m, x, a, t, **o: E.sensitivity_n(m, x, a, t, n=10, samples=3, **o),
    "faithfulness_correlation": lambda m, x, a, t, **o: E.faithfulness_correlation(m, x, a, t, samples=3, **o),
    "evalattai": lambda m, x, a, t, **o: E.evalattai(m, x, a, t, steps=3, **o),
    "completeness": lambda m, x, a, t, **o: E.completeness(m, x, a, t, **o),
}
METHOD_METRICS = {
    "max_sensitivity": lambda f, m, x, t: E.max_sensitivity(f, m, x, t, samples=2),
    "avg_sensitivity": lambda f, m, x, t: E.avg_sensitivity(f, m, x, t, samples=2),
    "local_lipschitz": lambda f, m, x, t: E.local_lipschitz(f, m, x, t, samples=2),
    "relative_input_stability": lambda f, m, x, t: E.relative_input_stability(f, m, x, t, samples=2),
}


@pytest.mark.parametrize("name", MAP_METRICS)
def test_metrics_refuse_a_target_longer_than_the_batch(name, model, x):
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"one class per example, shape \(2,\); got shape \(3,\)"):
        MAP_METRICS[name](model, x, _map(model, x), torch.tensor([1, 2, 3]))
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", METHOD_METRICS)
def test_robustness_metrics_refuse_a_target_longer_than_the_batch(name, model, x):
    with pytest.raises(ValueError, match=r"one class per example, shape \(2,\); got shape \(3,\)"):
        METHOD_METRICS[name](gradient, model, x, torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("name", MAP_METRICS)
def test_metrics_refuse_an_image_without_its_batch_dimension(name, model, x):
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        MAP_METRICS[name](model, x[0], _map(model, x)[0], 1)


@pytest.mark.parametrize("name", ["deletion", "insertion", "sensitivity_n", "faithfulness_correlation"])
def test_metrics_take_the_baseline_vocabulary_and_refuse_non_finite_values(name, model, x):
    key = "removal" if name in ("deletion", "insertion") else "baseline"
    attr = _map(model, x)
    for value in ("zeros", "mean", "blur", "uniform", 0.5):
        assert torch.isfinite(torch.as_tensor(_value(MAP_METRICS[name](model, x, attr, 1, **{key: value})))).any()
    with pytest.raises(ValueError, match=f"{key} must be finite"):
        MAP_METRICS[name](model, x, attr, 1, **{key: float("nan")})
    with pytest.raises(ValueError, match=f"{key} must be one of 'zeros'.*; got 'zero'"):
        MAP_METRICS[name](model, x, attr, 1, **{key: "zero"})


def _value(result):
    return result.area if hasattr(result, "area") else result


def test_infidelity_and_completeness_use_the_baseline_names(model, x):
    attr = _map(model, x)
    with pytest.raises(ValueError, match="baseline must be one of 'zeros', .*; got 'black'"):
        E.infidelity(model, x, attr, 1, perturbation="square", baseline="black")
    with pytest.raises(ValueError, match="baseline must be finite"):
        E.completeness(model, x, attr, 1, baseline=float("inf"))


def test_sensitivity_a_needs_the_index_of_one_entry(model, x):
    with pytest.raises(ValueError, match=r"feature must index one entry of an example of shape \(1, 28, 28\), a "
                                         r"tuple of 3 integers such as \(0, 0, 0\); got \(0,\)"):
        E.sensitivity_a(gradient, model, x, 1, feature=(0,))
    check = E.sensitivity_a(gradient, model, x, 1, feature=(0, 14, 14))
    assert check.attribution.shape == (2,)


@pytest.mark.parametrize("metric", [E.sparseness, E.entropy])
def test_complexity_refuses_an_ambiguous_3d_map(metric):
    with pytest.raises(ValueError, match=r"attr of shape \(3, 8, 8\) is ambiguous"):
        metric(torch.rand(3, 8, 8))
    assert metric(torch.rand(1, 3, 8, 8)).shape == (1,)


@pytest.mark.parametrize("options, message", [
    (dict(n_boot=0), "n_boot must be an integer >= 1; got 0"),
    (dict(level=1.5), r"level must be a number in \(0, 1\); got 1.5"),
    (dict(level=0), r"level must be a number in \(0, 1\); got 0"),
])
def test_bootstrap_ci_refuses_bad_settings(options, message):
    with pytest.raises(ValueError, match=message):
        E.bootstrap_ci([1.0, 2.0, 3.0], **options)


def test_the_report_card_runs_every_method_of_the_registry(model, x):
    y = torch.tensor([1, 2])
    methods = {name: (lambda m, xx, t, name=name: call(name, m, xx, t)) for name in METHODS}
    table = E.evaluate(model, x, y, methods=methods, metrics=["sparseness", "complexity"], n_boot=10,
                       progress=False)
    assert set(table["method"]) == set(METHODS) and table["settings"].str.startswith(("sparseness", "entropy")).all()
    table = E.evaluate(model, x, y, methods=["expected_gradients", "gradient"], metrics=["deletion"], n_boot=10,
                       progress=False, batch_size=1)
    assert table["settings"].iloc[0] == "deletion(steps=20, removal='zeros', score_kind='probability').area"


def test_perturbation_curves_with_squares_step_through_squares(model, x):
    """patch > 1: the fractions count squares, and each step removes that many squares."""
    attr = _map(model, x)
    curve = E.deletion(model, x, attr, 1, steps=7, patch=4, score_kind="logit")
    assert torch.allclose(curve.fractions, torch.arange(8, dtype=torch.float64) / 7)
    ranks = E.feature_ranks(attr, x, "most", patch=4)
    assert int(ranks.max()) + 1 == 49  # 7 x 7 squares of 4 x 4 pixels
    one_step = (ranks < 7).sum(1)  # the first step removes 7 squares = 112 pixels, not 7 pixels
    assert (one_step == 7 * 16).all()


# ---------------------------------------------------------------------------- attacks
@pytest.mark.parametrize("attack", [fgsm, pgd])
def test_attacks_refuse_a_target_longer_than_the_batch(attack, model, x):
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"one class per example, shape \(2,\); got shape \(3,\)"):
        attack(model, x, torch.tensor([1, 2, 3]), epsilon=0.1)
    assert_unchanged(model, before)


def test_robust_accuracy_takes_an_int_target(model, x):
    value = robust_accuracy(model, x, 3, epsilon=0.0, steps=1, random_start=False)
    assert value == (model(x).argmax(1) == 3).double().mean().item()


def test_manipulating_towards_a_nan_map_is_refused(model, x):
    with pytest.raises(ValueError, match="target_map must be finite"):
        manipulate_explanation(model, x, torch.full_like(x, float("nan")), steps=1)


# ---------------------------------------------------------------------------- data, training, zoo
@pytest.mark.parametrize("options, error, message", [
    (dict(epochs=0), ValueError, "epochs must be an integer >= 1; got 0"),
    (dict(batch_size=0), ValueError, "batch_size must be an integer >= 1; got 0"),
    (dict(lr=-1.0), ValueError, "lr must be a number > 0; got -1.0"),
    (dict(epochs=1.5), TypeError, "epochs must be an integer >= 1; got 1.5"),
])
def test_train_refuses_bad_settings_before_touching_the_model(options, error, message, model, x):
    before = snapshot(model)
    with pytest.raises(error, match=message):
        models.train(model, x, torch.tensor([1, 2]), progress=False, **options)
    assert_unchanged(model, before)


@pytest.mark.parametrize("n_test", [-1, 0, 5000])
def test_mnist_refuses_a_split_without_test_or_training_images(n_test):
    with pytest.raises(ValueError, match="n_test must"):
        data.mnist(n_test=n_test)


def test_resolve_baseline_suggests_the_near_name():
    with pytest.raises(ValueError, match=r"did you mean 'zeros'\?"):
        resolve_baseline(torch.rand(1, 1, 4, 4), "zero")


# ---------------------------------------------------------------------------- transformers
def tiny_vit():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(image_size=28, patch_size=14, num_layers=1, num_heads=2,
                                                hidden_dim=8, mlp_dim=16, num_classes=3).eval()


def test_fullgrad_refuses_a_vision_transformer():
    """Its attention and LayerNorm biases are not counted and its bias terms have no image grid:
    a refusal that names them, instead of a map of the input term and the patch embedding's bias alone."""
    vit, x = tiny_vit(), torch.rand(2, 3, 28, 28)
    before = snapshot(vit)
    with pytest.raises(ValueError, match=r"fullgrad is defined for convolutional networks.*LayerNorm "
                                         r"\('encoder.layers.encoder_layer_0.ln_1'\), MultiheadAttention.*attention_relevance"):
        METHODS["fullgrad"](vit, x, 1)
    assert_unchanged(vit, before)


@pytest.mark.parametrize("name", ["guided_backprop", "deconvnet", "guided_grad_cam"])
def test_guided_methods_refuse_a_transformer_instead_of_returning_the_gradient(name):
    vit, x = tiny_vit(), torch.rand(2, 3, 28, 28)
    before = snapshot(vit)
    with pytest.raises(ValueError, match=r"changes the backward rule of ReLU, but this model also applies GELU"):
        METHODS[name](vit, x, 1)
    assert_unchanged(vit, before)


def test_deeplift_refuses_functional_activations():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(torch.nn.functional.gelu(self.fc1(x)))

    with pytest.raises(ValueError, match=r"applies GELU \(1 call\) as functions.*use modules"):
        METHODS["deeplift"](Functional().eval(), torch.randn(3, 4), 1)


def test_a_corrupt_manifest_names_the_fix(tmp_path, monkeypatch):
    from xaiutils import zoo

    monkeypatch.setattr(zoo, "WEIGHTS", tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="not valid JSON.*make weights"):
        zoo.load("mnist-standard")
    (tmp_path / "manifest.json").write_text(json.dumps({"mnist-standard": "abc"}))
    with pytest.raises(RuntimeError, match="must map each model name"):
        zoo.load("mnist-standard")
