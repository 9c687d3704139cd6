"""Part II's methods on a vision transformer: the CAM family on token layers, and clear refusals
from the methods that are not defined there (guided backprop, deconvnet, FullGrad, CAM)."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import VisionTransformer

from helpers import assert_untouched, snapshot
from xaiutils.attribution.backprop import deconvnet, guided_backprop

C = importlib.import_module("xaiutils.attribution.cam")
FG = importlib.import_module("xaiutils.attribution.fullgrad")

LAYER = "encoder.layers.encoder_layer_1.ln_1"  # the last block's attention input, as pytorch-grad-cam's ViT example


def tiny_vit(image_size: int = 28, patch: int = 7) -> nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=image_size, patch_size=patch, num_layers=2, num_heads=4, hidden_dim=32,
                              mlp_dim=64, num_classes=10)
    nn.init.normal_(model.heads.head.weight)  # torchvision starts the head at zero
    return model.double().eval()


def images(b: int = 3, size: int = 28) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def reshape_transform(tokens, side=4):
    """pytorch-grad-cam's documented reshape for a ViT: drop the class token, lay the patches on the grid."""
    return tokens[:, 1:, :].reshape(tokens.size(0), side, side, tokens.size(2)).permute(0, 3, 1, 2)


def _pgc_scale(maps, reference=None):
    """pytorch-grad-cam's min-max scaling of each map, with its epsilon 1e-7."""
    reference = maps if reference is None else reference
    low = reference.amin((2, 3), keepdim=True)
    return (maps - low) / (reference.amax((2, 3), keepdim=True) - low + 1e-7)


def test_grad_cam_family_on_vit_tokens_matches_pytorch_grad_cam():
    """As test_cam's comparison: exact at the 4x4 token grid, and the whole (scaled, resized) pipeline."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, XGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    vit, x = tiny_vit(), images()
    target = torch.tensor([1, 4, 7])
    layer = dict(vit.named_modules())[LAYER]
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    for reference, method in [(GradCAM, C.grad_cam), (GradCAMPlusPlus, C.grad_cam_pp),
                              (XGradCAM, C.xgrad_cam), (LayerCAM, C.layer_cam)]:
        low = method(vit, x, target, layer=LAYER, upsample=False)
        up = method(vit, x, target, layer=LAYER)
        with reference(vit, [layer], reshape_transform=reshape_transform) as ref:
            expected_map = torch.from_numpy(ref(x, targets))
            activations = ref.activations_and_grads.activations[0].numpy()
            gradients = ref.activations_and_grads.gradients[0].numpy()
            expected_low = np.maximum(ref.get_cam_image(x, layer, targets, activations, gradients, False), 0)
        assert low.shape == (3, 1, 4, 4) and up.shape == (3, 1, 28, 28)
        assert expected_low.max() > 0
        np.testing.assert_allclose(low[:, 0].numpy(), expected_low, atol=1e-10)
        np.testing.assert_allclose(_pgc_scale(_pgc_scale(up, low))[:, 0].numpy(), expected_map.numpy(), atol=1e-5)


def test_grad_cam_on_tokens_equals_grad_cam_on_the_reshaped_map():
    """Grad-CAM by hand on the token grid: weights = mean gradient over patches (the class token dropped)."""
    vit, x = tiny_vit(), images()
    seen = {}
    layer = dict(vit.named_modules())[LAYER]
    handle = layer.register_forward_hook(lambda m, a, out: seen.setdefault("a", out))
    try:
        with torch.enable_grad():
            score = vit(x)[:, 3].sum()
            (g,) = torch.autograd.grad(score, seen["a"])
    finally:
        handle.remove()
    a, g = reshape_transform(seen["a"].detach()), reshape_transform(g)
    expected = (g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True).clamp(min=0)
    assert torch.allclose(C.grad_cam(vit, x, 3, layer=LAYER, upsample=False), expected, atol=1e-12)


def test_the_last_blocks_output_has_zero_patch_gradients():
    """Only the class token of the last block reaches the head: the documented poor choice gives zeros."""
    vit, x = tiny_vit(), images()
    assert (C.grad_cam(vit, x, 1, layer="encoder.layers.encoder_layer_1", upsample=False) == 0).all()


def test_token_layers_leave_the_model_unchanged():
    vit, x = tiny_vit(), images()
    vit.train()
    x_before, before = x.clone(), snapshot(vit)
    with pytest.warns(UserWarning, match="training mode"):
        C.layer_cam(vit, x, 2, layer=LAYER)
    with pytest.warns(UserWarning, match="training mode"), \
            pytest.raises(ValueError, match=r"feature map or \(B, T, D\) tokens, got tuple"):
        C.grad_cam(vit, x, 2, layer="encoder.layers.encoder_layer_0.self_attention")  # returns (output, weights)
    assert_untouched(vit, before, x, x_before)


def test_token_layers_that_are_no_patch_grid_are_refused():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Sequential(nn.Flatten(), nn.Linear(3 * 28 * 28, 7 * 8), nn.Unflatten(1, (7, 8)))
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.embed(x).mean(1))

    with pytest.raises(ValueError, match=r"the layer has 7 tokens, which are not a grid of patches.*28x28 input"):
        C.grad_cam(Tokens().double().eval(), images(), 0, layer="embed")


def test_cam_needs_global_average_pooling_and_says_so_on_a_vit():
    with pytest.raises(ValueError, match=r"CAM needs a global average pooling"):
        C.cam(tiny_vit(), images(), 1)


def test_fullgrad_refuses_transformers_and_other_uncounted_biases():
    vit, x = tiny_vit(), images()
    before = snapshot(vit)
    with pytest.raises(ValueError, match=r"fullgrad is defined for convolutional networks.*MultiheadAttention "
                                         r"\('encoder.layers.encoder_layer_0.self_attention'\)"):
        FG.fullgrad(vit, x, 1)
    assert_untouched(vit, before, x, images())
    grouped = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(4, 2)).double().eval()
    with pytest.raises(ValueError, match=r"this model has GroupNorm \('1'\)"):
        FG.fullgrad(grouped, x, 1)


@pytest.mark.parametrize("method", [guided_backprop, deconvnet])
def test_guided_methods_name_the_activation_modules_they_cannot_modify(method):
    vit, x = tiny_vit(), images()
    with pytest.raises(ValueError, match=r"also applies GELU \(2 calls\) \(modules 'encoder.layers.encoder_layer_0."
                                         r"mlp.1', 'encoder.layers.encoder_layer_1.mlp.1'\); the method is defined "
                                         r"for ReLU networks only"):
        method(vit, x, 1)
    mixed = nn.Sequential(nn.Flatten(), nn.Linear(3 * 28 * 28, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(),
                          nn.Linear(8, 2)).double().eval()
    with pytest.raises(ValueError, match=r"also applies Tanh \(1 call\) \(module '4'\)"):
        method(mixed, x, 1)

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 28 * 28, 2)

        def forward(self, x):
            return torch.nn.functional.silu(self.fc(x.flatten(1)))

    with pytest.raises(ValueError, match=r"also applies SiLU \(1 call\) \(as functions\)"):
        method(Functional().double().eval(), x, 1)
