"""Every method of the registry: the common contract (shape, side effects, clear errors)."""
import re
import warnings
from pathlib import Path

import pytest
import torch

from helpers import assert_unchanged, mnist_cnn, resnet18, shapes_resnet, snapshot
from xaiutils import METHODS

BIB = (Path(__file__).parents[1] / "book" / "references.bib").read_text()
FAST = {"integrated_gradients": {"steps": 4}, "expected_gradients": {"samples": 4}, "blur_ig": {"steps": 4},
        "guided_ig": {"steps": 8}, "smoothgrad": {"samples": 3}, "smoothgrad_sq": {"samples": 3},
        "vargrad": {"samples": 3}, "occlusion": {"window": (16, 16), "stride": 16}}


def options(name, x):
    opts = dict(FAST.get(name, {}))
    if name == "expected_gradients":
        opts["references"] = torch.rand(3, *x.shape[1:], generator=torch.Generator().manual_seed(0)).to(x.dtype)
    return opts


def test_registry_metadata_is_complete():
    assert len(METHODS) >= 21
    keys = set(re.findall(r"@\w+\{([^,]+),", BIB))
    for name, m in METHODS.items():
        assert m.name == name and callable(m.function)
        assert m.family in {"gradient", "backprop", "path", "noise", "propagation", "cam", "perturbation"}
        assert m.bibkey in keys, f"{name}: bib key {m.bibkey} missing from references.bib"
        assert 2 <= m.chapter <= 7
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


def test_star_import_exports_every_function():
    namespace = {}
    exec("from xaiutils.attribution import *", namespace)
    assert {"METHODS", "gradient", "lrp", "grad_cam", "smoothgrad", "occlusion"} <= set(namespace)


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
