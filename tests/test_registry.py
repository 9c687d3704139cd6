"""Every method of the registry: the common contract (shape, side effects, clear errors)."""
import re
import warnings
from pathlib import Path

import pytest
import torch

from helpers import assert_unchanged, mnist_cnn, resnet18, shapes_resnet, snapshot
from xaiutils import METHODS
from xaiutils.attribution import PLANNED_CHAPTERS, Patches, shapley

BIB = (Path(__file__).parents[1] / "book" / "references.bib").read_text()
FAST = {"integrated_gradients": {"steps": 4}, "expected_gradients": {"samples": 4}, "blur_ig": {"steps": 4},
        "guided_ig": {"steps": 8}, "smoothgrad": {"samples": 3}, "smoothgrad_sq": {"samples": 3},
        "vargrad": {"samples": 3}, "occlusion": {"window": (16, 16), "stride": 16},
        "shapley_values": {"features": (32, 32)}, "kernel_shap": {"features": (32, 32), "samples": 8},
        "lime": {"features": (32, 32), "samples": 8}, "noisegrad": {"samples": 2},
        "fusiongrad": {"samples": 2, "input_samples": 2}}


def options(name, x):
    opts = dict(FAST.get(name, {}))
    if name == "expected_gradients":
        opts["references"] = torch.rand(3, *x.shape[1:], generator=torch.Generator().manual_seed(0)).to(x.dtype)
    return opts


def test_registry_metadata_is_complete():
    assert len(METHODS) >= 26
    keys = set(re.findall(r"@\w+\{([^,]+),", BIB))
    for name, m in METHODS.items():
        assert m.name == name and callable(m.function)
        assert m.family in {"gradient", "backprop", "path", "noise", "propagation", "cam", "perturbation"}
        assert m.bibkey in keys, f"{name}: bib key {m.bibkey} missing from references.bib"
        assert m.chapter in (*range(2, 8), 14, 17) or m.chapter in PLANNED_CHAPTERS, f"{name}: chapter {m.chapter!r}"
        assert m.map_shape in {"input", "layer"}
        assert m.function.__doc__, f"{name} has no docstring"


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("make,shape", [(shapes_resnet, (2, 3, 64, 64)), (resnet18, (2, 3, 64, 64))],
                         ids=["shapes_resnet", "resnet18"])
def test_contract_shape_and_no_side_effects(name, make, shape):
    method = METHODS[name]
    model = make()
    model.layer1.train()  # a mixed-mode model must come back exactly as it was
    model.fc.weight.requires_grad_(False)
    x = torch.rand(*shape)
    x_copy = x.clone()
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attr = method(model, x, torch.tensor([0, 3]), **options(name, x))
    expected = x.shape if method.map_shape == "input" else (x.shape[0], 1, *x.shape[2:])
    assert attr.shape == expected and torch.isfinite(attr).all()
    assert_unchanged(model, before)
    assert torch.equal(x, x_copy)
    with pytest.raises(ValueError, match="out of range"):
        method(model, x, 10, **options(name, x))
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="NaN or inf"):
        method(model, torch.full_like(x, float("nan")), 0, **options(name, x))
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", METHODS)
def test_training_mode_is_explained_in_eval_mode_with_a_warning(name):
    model = mnist_cnn()
    x = torch.rand(2, 1, 28, 28)
    expected = METHODS[name](model, x, 1, **options(name, x))
    model.train()
    with pytest.warns(UserWarning, match="training mode"):
        attr = METHODS[name](model, x, 1, **options(name, x))
    assert model.training and all(m.training for m in model.modules())
    assert torch.allclose(attr, expected)


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if m.needs_layer])
def test_layer_methods_reject_unknown_layer_names(name):
    model = mnist_cnn()
    with pytest.raises(ValueError, match=r"no layer named 'block7'.*block3"):
        METHODS[name](model, torch.rand(1, 1, 28, 28), 0, layer="block7")


def test_star_import_exports_every_function_but_lime_which_would_shadow_the_lime_package():
    namespace = {}
    exec("from xaiutils.attribution import *", namespace)
    assert {"METHODS", "gradient", "lrp", "grad_cam", "smoothgrad", "occlusion", "shapley_values", "kernel_shap",
            "noisegrad", "fusiongrad"} <= set(namespace)
    assert "lime" not in namespace
    exec("from xaiutils.attribution import lime", namespace)
    assert namespace["lime"] is shapley.lime is METHODS["lime"].function


def test_patches_cut_an_example_into_a_grid_whatever_its_size():
    assert Patches(4).squares(torch.zeros(2, 1, 28, 28)) == (7, 7)
    assert Patches(4).squares(torch.zeros(2, 3, 64, 64)) == (16, 16)
    assert Patches(3).squares(torch.zeros(2, 1, 28, 28)) == (10, 10)  # 10, 10 and 8 rows: a 3 x 3 grid
    assert Patches(4).squares(torch.zeros(5, 13)) == (1,) and Patches(3).squares(torch.zeros(5, 13)) == (2,)
    for x, cells, count in [(torch.zeros(1, 1, 28, 28), 3, 9), (torch.zeros(1, 3, 64, 64), 4, 16),
                            (torch.zeros(1, 3, 30, 17), 4, 16), (torch.zeros(1, 13), 4, 13)]:
        assert shapley.feature_mask(Patches(cells).squares(x), tuple(x.shape[1:]))[1] == count
    assert Patches(4).squares([1, 2]) is None and Patches(4).squares(torch.zeros(3)) is None


def test_the_registry_defaults_apply_unless_the_caller_overrides_them_and_the_functions_keep_their_own():
    model = mnist_cnn()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    entry = METHODS["kernel_shap"]
    assert entry.options(x) == {"features": (10, 10), "samples": 128}
    assert entry.options(x, samples=8, seed=1) == {"features": (10, 10), "samples": 8, "seed": 1}
    assert entry.options(x, features=None) == {"features": None, "samples": 128}
    assert torch.equal(METHODS["shapley_values"](model, x, 1), shapley.shapley_values(model, x, 1, features=(10, 10)))
    assert torch.equal(entry(model, x, 1, samples=8), shapley.kernel_shap(model, x, 1, features=(10, 10), samples=8))
    with pytest.raises(ValueError, match="M must be at most 16; got M = 784 features"):
        shapley.shapley_values(model, x, 1)  # the function's own default: every pixel a feature
    assert METHODS["gradient"].defaults == {} and METHODS["gradient"].options(x, a=1) == {"a": 1}
    assert METHODS["noisegrad"].options(x) == {"sigma": 0.05}
    assert METHODS["fusiongrad"].options(x) == {"sigma": 0.05, "samples": 5, "input_samples": 10}
    with pytest.raises(TypeError):
        METHODS["noisegrad"].defaults["sigma"] = 0.2  # read-only: one caller cannot change another's defaults


@pytest.mark.parametrize("name", ["shapley_values", "kernel_shap", "lime"])
def test_a_coalition_method_makes_as_many_model_evaluations_per_example_as_evaluations_says(name):
    model, x = mnist_cnn(), torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    rows = []
    hook = model.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    try:
        METHODS[name](model, x, 1)
    finally:
        hook.remove()
    features = shapley.feature_mask(METHODS[name].options(x)["features"], (1, 28, 28))[1]
    assert sum(rows) == len(x) * shapley.evaluations(name, features, METHODS[name].options(x).get("samples"))
    assert sum(rows) / len(x) == {"shapley_values": 512, "kernel_shap": 130, "lime": 128}[name]


@pytest.mark.parametrize("name", ["noisegrad", "fusiongrad"])
def test_the_weight_noise_methods_of_the_registry_explain_the_gradient(name):
    from xaiutils.attribution import weight_noise as W
    from xaiutils.attribution.gradients import gradient

    model, x = mnist_cnn(), torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    options = {"samples": 2, "input_samples": 2} if name == "fusiongrad" else {"samples": 2}
    expected = getattr(W, name)(gradient, model, x, 1, sigma=0.05, **options)
    assert torch.equal(METHODS[name](model, x, 1, **options), expected)
    assert not torch.equal(expected, gradient(model, x, 1))


@pytest.mark.parametrize("name", METHODS)
def test_every_method_takes_batch_size_and_it_changes_nothing_but_memory(name):
    # float64: in float32 a batch of one may take other kernels than a batch of three (oneDNN's AVX2
    # convolutions do), and a pre-activation or a max-pool tie that flips at the last digit moves a
    # gradient entry by a visible amount; in float64 no flip happens on this input, so any difference
    # beyond rounding is a batching bug (rows or targets mixed up).
    model = mnist_cnn().double()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    target = torch.tensor([1, 4, 7])
    whole = METHODS[name](model, x, target, **options(name, x))
    one_by_one = METHODS[name](model, x, target, batch_size=1, **options(name, x))
    assert torch.allclose(one_by_one, whole, rtol=1e-9, atol=1e-9 * whole.abs().max().item())
