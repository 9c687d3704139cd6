"""Shared test fixtures: small models and a recorder of a model's full state."""
from collections import OrderedDict

import torch
from torch import nn

from xaiutils.models import MnistCNN, ShapesResNet


def vgg_like(classes: int = 5) -> nn.Module:
    """A small VGG-style network: conv-ReLU stacks, max-pooling, a dense head with a reused ReLU."""
    torch.manual_seed(0)
    relu = nn.ReLU()
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1), relu1=nn.ReLU(), conv2=nn.Conv2d(8, 8, 3, padding=1),
        relu2=nn.ReLU(inplace=True), pool1=nn.MaxPool2d(2), conv3=nn.Conv2d(8, 16, 3, padding=1), relu3=relu,
        pool2=nn.AdaptiveAvgPool2d(2), flatten=nn.Flatten(), fc1=nn.Linear(64, 32), relu4=relu,
        fc2=nn.Linear(32, classes))).eval()


def randomised_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so merging is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def mnist_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MnistCNN().eval()


def float64_mnist_cnn() -> nn.Module:
    return mnist_cnn().double()


def float64_linear(features: int = 36, classes: int = 3) -> nn.Module:
    """A seeded linear classifier on flattened inputs, in float64: its gradient is a row of the weight."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, classes)).double().eval()


def float64_images(b: int = 2, c: int = 1, size: int = 28, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def shapes_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomised_bn(ShapesResNet(), seed).eval()


def resnet18() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return randomised_bn(torchvision.models.resnet18(weights=None, num_classes=10)).eval()


def snapshot(model: nn.Module) -> dict:
    """Everything an attribution method must leave as it found it."""
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                  + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["hooks"] == before["hooks"], "a hook was left on the model"
    assert after["training"] == before["training"], "a module's training mode changed"
    assert after["requires_grad"] == before["requires_grad"], "requires_grad flags changed"
    assert after["inplace"] == before["inplace"], "an inplace flag changed"
    for k, v in before["params"].items():
        assert torch.equal(after["params"][k], v), f"{k} changed"
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None and b is None) or torch.equal(a, b), ".grad changed on a parameter"


def assert_untouched(model: nn.Module, before: dict, x: torch.Tensor, x_before: torch.Tensor) -> None:
    """:func:`assert_unchanged`, and the input tensor is as it was (values, no grad attached)."""
    assert_unchanged(model, before)
    assert torch.equal(x, x_before) and not x.requires_grad and x.grad is None


def small_vit() -> tuple[nn.Module, torch.Tensor]:
    """A random two-layer MNIST ViT (its head drawn, not torchvision's zeros) and four digits' worth of noise."""
    from xaiutils.vit import MnistViT

    torch.manual_seed(0)
    model = MnistViT(layers=2, hidden=32, mlp=64).eval()
    nn.init.normal_(model.heads.head.weight, std=0.3)  # torchvision starts the head at zero
    return model, torch.rand(4, 1, 28, 28)


def small_text_model(padded: bool = False) -> tuple[nn.Module, torch.Tensor]:
    """A random two-layer text transformer (vocabulary 30) and three sequences of 8 ids starting with <cls>;
    with ``padded`` the last sequence ends in two <pad>."""
    from xaiutils.text import TextClassifier, TextConfig

    torch.manual_seed(2)
    ids = torch.randint(4, 30, (3, 8))
    ids[:, 0] = 2
    if padded:
        ids[2, 6:] = 0
    return TextClassifier(TextConfig(vocab_size=30, layers=2)).eval(), ids

