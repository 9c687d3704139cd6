"""Adversarial model manipulation (Heo et al.): Grad-CAM fooled by fine-tuning, the original model untouched."""
import pytest
import torch

from helpers import assert_unchanged, mnist_cnn, shapes_resnet, snapshot
from xaiutils import data, models, zoo
from xaiutils.adversarial import manipulate_model
from xaiutils.adversarial.manipulation import _grad_cam_with_graph, _layer_in_copy
from xaiutils.attribution.cam import grad_cam


@pytest.mark.parametrize("make,shape,layer", [(mnist_cnn, (3, 1, 28, 28), None),
                                              (mnist_cnn, (3, 1, 28, 28), "block2.conv"),
                                              (shapes_resnet, (2, 3, 64, 64), None),
                                              (shapes_resnet, (2, 3, 64, 64), "layer2")])
def test_differentiable_grad_cam_equals_grad_cam_in_float64(make, shape, layer):
    model = make().double()
    x = torch.rand(*shape, dtype=torch.float64)
    target = torch.arange(shape[0]) % 3
    module, on_input = _layer_in_copy(model, model, layer)
    ours, _ = _grad_cam_with_graph(model, x, target, module, on_input)
    assert torch.allclose(ours, grad_cam(model, x, target, layer=layer), rtol=1e-10, atol=1e-12)
    assert ours.requires_grad  # differentiable in the parameters


def corner_mass(model, x, y, corner):
    h = grad_cam(model, x, y)
    return ((h * corner).flatten(1).sum(1) / h.flatten(1).sum(1).clamp_min(1e-12)).mean().item()


def test_manipulated_model_points_grad_cam_to_the_corner_and_keeps_its_accuracy():
    model = zoo.load("mnist-standard")
    d = data.mnist()
    x, y, x_test, y_test = d.x_train[:512], d.y_train[:512], d.x_test[:300], d.y_test[:300]
    corner = torch.zeros(1, 1, 28, 28)
    corner[..., :10, :10] = 1.0
    before = snapshot(model)
    fooled = manipulate_model(model, x, y, corner, lam=100.0, lr=1e-2, epochs=10, progress=False)
    assert_unchanged(model, before)
    assert fooled is not model and not fooled.training
    assert all(p is not q for p, q in zip(fooled.parameters(), model.parameters()))
    assert corner_mass(model, x_test, y_test, corner) < 0.2
    assert corner_mass(fooled, x_test, y_test, corner) > 0.5  # the top-left 13% of the image
    assert models.accuracy(fooled, x_test, y_test) > models.accuracy(model, x_test, y_test) - 0.08


def test_manipulate_model_accepts_a_module_of_the_original_and_rejects_others():
    model = mnist_cnn()
    module, on_input = _layer_in_copy(model, mnist_cnn(1), model.block2.conv)
    assert not on_input and module is not model.block2.conv and isinstance(module, torch.nn.Conv2d)
    with pytest.raises(ValueError, match="not a module of model"):
        _layer_in_copy(model, model, mnist_cnn().block2.conv)


def test_manipulate_model_bad_input():
    model, x, y = mnist_cnn(), torch.rand(4, 1, 28, 28), torch.arange(4)
    with pytest.raises(ValueError, match=r"target_map must be one map of shape \(1, 1, 28, 28\)"):
        manipulate_model(model, x, y, torch.zeros(4, 1, 28, 28), progress=False)
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        manipulate_model(model, x, y, torch.zeros(1, 1, 28, 28), lam=-1.0, progress=False)
    with pytest.raises(ValueError, match=r"x must be a batch of images .* at least 4 dims; got shape \(28,\)"):
        manipulate_model(model, torch.rand(28), y, torch.zeros(1, 1, 28, 28), progress=False)
