"""Tests for xaiutils.attribution.cam (chapter 7): known answers first, then pytorch-grad-cam and Captum."""
from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from xaiutils.core.model_state import explaining
from xaiutils.attribution.backprop import guided_backprop
from xaiutils.models import MnistCNN, ShapesResNet

# the package exports the function `cam`, which shadows the module of the same name
C = importlib.import_module("xaiutils.attribution.cam")
FG = importlib.import_module("xaiutils.attribution.fullgrad")

GRAD_METHODS = [C.grad_cam, C.grad_cam_pp, C.xgrad_cam, C.layer_cam]


# ---------------------------------------------------------------------------- models
def _random_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(n, generator=generator))
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model


def mnist_cnn() -> nn.Module:
    torch.manual_seed(0)
    return MnistCNN().double().eval()


def shapes_resnet() -> nn.Module:
    torch.manual_seed(1)
    return _random_batchnorm(ShapesResNet(), 1).double().eval()


def resnet18() -> nn.Module:
    torch.manual_seed(2)
    return _random_batchnorm(torchvision.models.resnet18(weights=None), 2).double().eval()


def batch(shape, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# (factory, input shape, a layer name for the CAM methods, targets)
CASES = {
    "mnist": (mnist_cnn, (2, 1, 28, 28), "block3.conv", torch.tensor([3, 7])),
    "shapes": (shapes_resnet, (2, 3, 64, 64), "layer3", torch.tensor([1, 2])),
    "resnet18": (resnet18, (2, 3, 112, 112), "layer4", torch.tensor([5, 900])),
}


def _close(actual, expected, rtol=1e-10):
    """Max-abs difference relative to the scale of ``expected``; the scale must not be zero."""
    expected = torch.as_tensor(expected, dtype=torch.float64)
    actual = torch.as_tensor(actual, dtype=torch.float64)
    scale = expected.abs().max()
    assert scale > 0, "the reference is all zero: the comparison would be vacuous"
    assert (actual - expected).abs().max() <= rtol * scale, (actual - expected).abs().max() / scale


# ---------------------------------------------------------------------------- CAM: known answers
@pytest.mark.parametrize("name", list(CASES))
def test_cam_mean_plus_bias_is_the_logit(name):
    """On GAP + linear, the layer-resolution CAM averages to the logit minus the head's bias."""
    factory, shape, _, target = CASES[name]
    model, x = factory(), batch(shape)
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        logits = model(x).gather(1, target[:, None])[:, 0]
    maps = C.cam(model, x, target, upsample=False)
    _close(maps.mean((1, 2, 3)) + fc.bias[target], logits, 1e-12)
    assert (maps < 0).any(), "CAM is signed: no ReLU"


def test_cam_default_layer_is_the_input_of_global_average_pooling():
    model, x = mnist_cnn(), batch((2, 1, 28, 28))
    default = C.cam(model, x, 4, upsample=False)
    assert default.shape == (2, 1, 7, 7)
    _close(C.cam(model, x, 4, layer="block3.relu", upsample=False), default, 0)
    _close(C.cam(model, x, 4, layer=model.block3, upsample=False), default, 0)
    net, xr = resnet18(), batch((1, 3, 64, 64))
    _close(C.cam(net, xr, 4, layer="layer4"), C.cam(net, xr, 4), 0)


def test_grad_cam_equals_relu_cam_over_hw_on_gap_linear_model():
    """CAM is defined on the activations that feed the GAP: in MnistCNN that is ``block3.relu``.

    There, dy_c/dA^k_ij = w_ck / (h w) at every pixel, so Grad-CAM's weights are w_ck / (h w)
    and Grad-CAM = ReLU(CAM) / (h w) exactly (h = w = 7). XGrad-CAM's weights are the same up
    to its epsilon. On ``block3.conv`` (before the ReLU) the gradient is masked by the ReLU and
    the relation fails, which is why CAM needs the GAP's input.
    """
    model, x, target = mnist_cnn(), batch((3, 1, 28, 28)), torch.tensor([0, 4, 9])
    cam_map = C.cam(model, x, target, layer="block3.relu", upsample=False)
    grad_map = C.grad_cam(model, x, target, layer="block3.relu", upsample=False)
    _close(grad_map, cam_map.clamp(min=0) / 49, 1e-12)
    _close(C.xgrad_cam(model, x, target, layer="block3.relu", upsample=False), grad_map, 1e-5)
    on_conv = C.grad_cam(model, x, target, layer="block3.conv", upsample=False)
    assert (on_conv - grad_map).abs().max() > 1e-3 * grad_map.abs().max()


def test_cam_errors():
    model, x = mnist_cnn(), batch((2, 1, 28, 28))
    with pytest.raises(TypeError, match="class indices"):
        C.cam(model, x, lambda out: out[:, 0])
    with pytest.raises(ValueError, match="64 channels but the linear head expects 128"):
        C.cam(model, x, 0, layer="block2.relu")
    with pytest.raises(TypeError, match="nn.Linear"):
        C.cam(model, x, 0, fc="block3.conv")
    with pytest.raises(ValueError, match="out of range"):
        C.cam(model, x, 10)
    no_gap = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 3)).double().eval()
    with pytest.raises(ValueError, match="global average pooling"):
        C.cam(no_gap, x, 0)


# ---------------------------------------------------------------------------- pytorch-grad-cam
def _pgc_scale(maps, reference=None):
    """pytorch-grad-cam's ``scale_cam_image`` min-max scaling, with its epsilon 1e-7."""
    reference = maps if reference is None else reference
    low = reference.amin((2, 3), keepdim=True)
    return (maps - low) / (reference.amax((2, 3), keepdim=True) - low + 1e-7)


@pytest.mark.parametrize("name", list(CASES))
def test_grad_cam_family_matches_pytorch_grad_cam(name):
    """Two comparisons per method, in float64.

    1. Exact, at the layer's resolution: pytorch-grad-cam's un-normalised internal map
       ``max(get_cam_image(activations, gradients), 0)`` against ours with ``upsample=False``.
    2. The whole pipeline: it computes ``scale(resize(scale(map)))`` (min-max scaling and
       OpenCV's bilinear resize, in float32, then the multi-layer aggregation scales again).
       The resize is linear, so given our upsampled map ``up`` that is
       ``scale((up - min) / (max - min + eps))`` with ``min``/``max`` of the layer-resolution map.
       Agreement to float32 precision shows that OpenCV's resize equals ``F.interpolate`` with
       ``align_corners=False``.
    """
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, XGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    factory, shape, layer_name, target = CASES[name]
    model, x = factory(), batch(shape)
    layer = dict(model.named_modules())[layer_name]
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    for reference, method in [(GradCAM, C.grad_cam), (GradCAMPlusPlus, C.grad_cam_pp),
                              (XGradCAM, C.xgrad_cam), (LayerCAM, C.layer_cam)]:
        low = method(model, x, target, layer=layer_name, upsample=False)
        up = method(model, x, target, layer=layer_name)
        with reference(model, [layer]) as ref:
            expected_map = torch.from_numpy(ref(x, targets))
            activations = ref.activations_and_grads.activations[0].numpy()
            gradients = ref.activations_and_grads.gradients[0].numpy()
            expected_low = np.maximum(ref.get_cam_image(x, layer, targets, activations, gradients, False), 0)
        _close(low[:, 0], expected_low, 1e-10)
        _close(_pgc_scale(_pgc_scale(up, low))[:, 0], expected_map, 1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_fullgrad_matches_pytorch_grad_cam(name):
    """Bias-gradients exactly (float64); the map after pytorch-grad-cam's final min-max scaling (float32)."""
    from pytorch_grad_cam import FullGrad
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    factory, shape, _, target = CASES[name]
    model, x = factory(), batch(shape)
    ours = FG.fullgrad(model, x, target)
    with explaining(model, x) as hooks:
        _, bias_terms, _ = FG.full_gradient_terms(model, x, target, hooks)
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = FullGrad(model, [])
        expected_map = torch.from_numpy(ref(x, targets))
        expected_terms = [torch.from_numpy(b[None, :, None, None] * g.numpy())
                          for b, g in zip(ref.bias_data, ref.activations_and_grads.gradients)]
        ref.activations_and_grads.release()
    spatial = [t for t in bias_terms if t.dim() == 4]
    assert len(spatial) == len(expected_terms) > 0
    for term, expected in zip(spatial, expected_terms):
        _close(term, expected, 1e-10)
    assert ours.shape == (shape[0], 1, *shape[2:]) and (ours >= 0).all()
    _close(_pgc_scale(ours)[:, 0], expected_map, 1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_fullgrad_completeness(name):
    """Input-gradient x input plus all bias-gradients add up to the score (piecewise-linear nets)."""
    factory, shape, _, target = CASES[name]
    model, x = factory(), batch(shape)
    with explaining(model, x) as hooks:
        input_term, bias_terms, scores = FG.full_gradient_terms(model, x, target, hooks)
    total = input_term.sum((1, 2, 3)) + sum(t.flatten(1).sum(1) for t in bias_terms)
    _close(total, scores, 1e-10)
    # the input term alone is not complete: the biases carry part of the score
    assert (input_term.sum((1, 2, 3)) - scores).abs().max() > 1e-3 * scores.abs().max()


# ---------------------------------------------------------------------------- Captum
@pytest.mark.parametrize("name", list(CASES))
def test_grad_cam_matches_captum_layer_grad_cam_with_relu(name):
    """Captum skips the Grad-CAM paper's ReLU by default; with ``relu_attributions=True`` it agrees."""
    from captum.attr import LayerGradCam

    factory, shape, layer_name, target = CASES[name]
    model, x = factory(), batch(shape)
    layer = dict(model.named_modules())[layer_name]
    ours = C.grad_cam(model, x, target, layer=layer_name, upsample=False)
    captum = LayerGradCam(model, layer)
    _close(ours, captum.attribute(x, target, relu_attributions=True).detach(), 1e-12)
    assert (captum.attribute(x, target).detach() < 0).any()


@pytest.mark.parametrize("name", ["mnist", "shapes"])
def test_guided_grad_cam_matches_captum_with_bilinear_upsampling(name):
    """Captum's GuidedGradCam upsamples with ``"nearest"`` by default; ours is bilinear."""
    from captum.attr import GuidedGradCam

    factory, shape, layer_name, target = CASES[name]
    model, x = factory(), batch(shape)
    ours = C.guided_grad_cam(model, x, target, layer=layer_name)
    assert ours.shape == x.shape
    captum = GuidedGradCam(model, dict(model.named_modules())[layer_name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = captum.attribute(x, target, interpolate_mode="bilinear").detach()
        nearest = captum.attribute(x, target).detach()
    _close(ours, expected, 1e-12)
    assert (ours - nearest).abs().max() > 1e-3 * ours.abs().max()
    _close(ours, C.grad_cam(model, x, target, layer=layer_name) * guided_backprop(model, x, target), 0)


# ---------------------------------------------------------------------------- layers, upsampling, targets
def test_layer_by_name_or_module_and_upsampling():
    model, x = shapes_resnet(), batch((2, 3, 64, 64))
    for method in GRAD_METHODS:
        by_name = method(model, x, 1, layer="layer2.conv2", upsample=False)
        assert by_name.shape == (2, 1, 32, 32)
        _close(method(model, x, 1, layer=model.layer2.conv2, upsample=False), by_name, 0)
        up = method(model, x, 1, layer="layer2.conv2")
        assert up.shape == (2, 1, 64, 64)
        _close(up, F.interpolate(by_name, size=(64, 64), mode="bilinear", align_corners=False), 0)
    # the default layer is the feature map that feeds the global average pooling (layer3's output),
    # not the last nn.Conv2d in module order, which in ShapesResNet is layer3's 1x1 shortcut
    _close(C.grad_cam(model, x, 1), C.grad_cam(model, x, 1, layer="layer3"), 0)
    assert not torch.allclose(C.grad_cam(model, x, 1), C.grad_cam(model, x, 1, layer="layer3.shortcut.conv"))
    no_gap = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3),
                                 torch.nn.Flatten(), torch.nn.Linear(4 * 60 * 60, 2)).to(x.dtype).eval()
    _close(C.grad_cam(no_gap, x, 1), C.grad_cam(no_gap, x, 1, layer="2"), 0)


def test_bad_layers_raise_clear_errors():
    model, x = mnist_cnn(), batch((1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"no layer named 'block9'.*block3\.relu"):
        C.grad_cam(model, x, 0, layer="block9")
    with pytest.raises(ValueError, match=r"\(B, C, h, w\)"):
        C.grad_cam(model, x, 0, layer="fc")
    with pytest.raises(ValueError, match="not part of the model"):
        C.grad_cam(model, x, 0, layer=nn.Conv2d(1, 1, 1))
    net = resnet18()
    with pytest.raises(ValueError, match="ran 2 times"):
        C.grad_cam(net, batch((1, 3, 32, 32)), 0, layer="layer4.1.relu")


@pytest.mark.parametrize("method", GRAD_METHODS + [FG.fullgrad, C.guided_grad_cam])
def test_targets_int_tensor_callable_and_batching(method):
    model, x = mnist_cnn(), batch((3, 1, 28, 28), seed=3)
    by_int = method(model, x, 2)
    assert by_int.abs().max() > 0
    _close(method(model, x, torch.full((3,), 2)), by_int, 0)
    _close(method(model, x, lambda out: out[:, 2]), by_int, 1e-12)
    per_row = torch.tensor([2, 5, 8])
    mixed = method(model, x, per_row)
    for i, t in enumerate(per_row.tolist()):
        _close(mixed[i:i + 1], method(model, x[i:i + 1], t), 1e-12)
    _close(method(model, x, per_row, batch_size=2), mixed, 1e-12)


def test_cam_targets_and_batching():
    model, x = mnist_cnn(), batch((3, 1, 28, 28), seed=3)
    per_row = torch.tensor([2, 5, 8])
    mixed = C.cam(model, x, per_row)
    for i, t in enumerate(per_row.tolist()):
        _close(mixed[i:i + 1], C.cam(model, x[i:i + 1], t), 1e-12)
    _close(C.cam(model, x, per_row, batch_size=1), mixed, 0)


def test_bad_inputs():
    model = mnist_cnn()
    with pytest.raises(ValueError, match="at least 4 dims"):
        C.grad_cam(model, batch((1, 28, 28)), 0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        C.grad_cam(model, batch((2, 1, 28, 28)), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        FG.fullgrad(model, batch((2, 1, 28, 28)), torch.tensor([1, 2, 3]), batch_size=1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        C.cam(model, np.zeros((1, 1, 28, 28)), 0)
    with pytest.raises(TypeError, match="floating-point"):
        FG.fullgrad(model, torch.zeros(1, 1, 28, 28, dtype=torch.long), 0)


# ---------------------------------------------------------------------------- side effects
def _snapshot(model):
    return {
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "inplace": {n: m.inplace for n, m in model.named_modules() if hasattr(m, "inplace")},
    }


def _assert_untouched(model, before, x, x_before):
    for name, module in model.named_modules():
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(module, hooks, {}), f"{hooks} left on {name!r}"
    after = _snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["inplace"] == before["inplace"]
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, x_before) and not x.requires_grad and x.grad is None


CALLS = {
    "cam": lambda m, x: C.cam(m, x, 1),
    "grad_cam": lambda m, x: C.grad_cam(m, x, 1, layer="layer4"),
    "grad_cam_pp": lambda m, x: C.grad_cam_pp(m, x, 1),
    "xgrad_cam": lambda m, x: C.xgrad_cam(m, x, 1, layer="layer3"),
    "layer_cam": lambda m, x: C.layer_cam(m, x, 1, layer="layer2.0.bn2"),
    "guided_grad_cam": lambda m, x: C.guided_grad_cam(m, x, 1, layer="layer4"),
    "fullgrad": lambda m, x: FG.fullgrad(m, x, 1),
    # raising calls
    "bad_name": lambda m, x: C.grad_cam(m, x, 1, layer="nope"),
    "reused_layer": lambda m, x: C.layer_cam(m, x, 1, layer="layer4.0.relu"),
    "bad_target": lambda m, x: C.grad_cam_pp(m, x, 5000),
    "cam_wrong_layer": lambda m, x: C.cam(m, x, 1, layer="layer3"),
    "fullgrad_bad_target": lambda m, x: FG.fullgrad(m, x, lambda out: out),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_no_side_effects(call):
    """torchvision's resnet18 (in-place ReLUs) in training mode, with the stem frozen."""
    model = resnet18().float()
    model.train()
    model.layer1.eval()
    for p in model.conv1.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 32, 32)
    x_before, before = x.clone(), _snapshot(model)
    with pytest.warns(UserWarning, match="training mode"):
        if call in ("bad_name", "reused_layer", "bad_target", "cam_wrong_layer", "fullgrad_bad_target"):
            with pytest.raises(ValueError):
                CALLS[call](model, x)
        else:
            out = CALLS[call](model, x)
            assert out.shape[0] == 2 and out.shape[-2:] == (32, 32) and torch.isfinite(out).all()
            assert not out.requires_grad
    _assert_untouched(model, before, x, x_before)
