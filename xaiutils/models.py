"""The book's models, their training loop and the shipped model zoo (chapter 1).

* :class:`MnistCNN` -- three named convolutional blocks, then global average pooling and one
  linear layer, so that CAM is exact on it (chapter 7).
* :class:`ShapesResNet` -- a small residual network with BatchNorm, the realistic case for LRP
  canonizers and Grad-CAM (chapters 6 and 7).
* :class:`TabularMLP` -- a multilayer perceptron on standardised table features (chapter 17,
  tables, Shapley values and gradients). The vision transformers are in :mod:`xaiutils.vit`, the text
  transformer in :mod:`xaiutils.text`.
* :func:`train` -- a plain, seeded training loop with a progress bar; the adversarial and
  regularised recipes of chapter 13 plug into it through ``loss_fn``.
* :func:`random_shift`, :func:`random_symmetry`, :func:`random_labels` -- the augmentations and the label
  permutation of the zoo.

The trained models shipped with the package, and the recipes that train them, are in :mod:`xaiutils.zoo`.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .core.checks import check_int, check_number, describe


class MnistCNN(nn.Module):
    """Conv blocks ``block1``..``block3`` (conv, ReLU, max-pool), then GAP and a linear ``fc``.

    ``dropout > 0`` ends each block with an ``nn.Dropout(dropout)`` named ``drop`` (the MC dropout
    model of chapter 14, ``gal2016dropout``); at the default 0 no module is added, so
    the architecture and its ``state_dict`` are those of the other MNIST models.
    """

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 128), classes: int = 10, dropout: float = 0.0):
        super().__init__()
        c1, c2, c3 = channels
        check_number(dropout, "dropout", minimum=0, maximum=1, exclusive_maximum=True)

        def block(c_in, c_out, pool):
            layers = [("conv", nn.Conv2d(c_in, c_out, 3, padding=1)), ("relu", nn.ReLU())]
            if pool:
                layers.append(("pool", nn.MaxPool2d(2)))
            if dropout > 0:
                layers.append(("drop", nn.Dropout(dropout)))
            return nn.Sequential(OrderedDict(layers))

        self.block1 = block(1, c1, pool=True)   # 28 -> 14
        self.block2 = block(c1, c2, pool=True)  # 14 -> 7
        self.block3 = block(c2, c3, pool=False)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c3, classes)

    def forward(self, x):
        return self.fc(self.flatten(self.gap(self.block3(self.block2(self.block1(x))))))


class BasicBlock(nn.Module):
    """``relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x))``, as in He et al. (2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), bn=nn.BatchNorm2d(c_out)))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ShapesResNet(nn.Module):
    """A stem, three residual blocks (64 -> 16 pixels), GAP and a linear ``fc``."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), classes: int = 4):
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(3, w1, 3, padding=1, bias=False), bn=nn.BatchNorm2d(w1), relu=nn.ReLU()))
        self.layer1 = BasicBlock(w1, w1)
        self.layer2 = BasicBlock(w1, w2, stride=2)
        self.layer3 = BasicBlock(w2, w3, stride=2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w3, classes)

    def forward(self, x):
        return self.fc(self.flatten(self.gap(self.layer3(self.layer2(self.layer1(self.stem(x)))))))


class TabularMLP(nn.Module):
    """``features`` -> Linear, ReLU (``hidden`` times) -> Linear -> ``classes`` logits: ``(B, features)`` -> ``(B, classes)``.

    Piecewise linear, so integrated gradients, gradient x input and exact Shapley values can be
    compared on it with the reference answers of a linear model at hand (the first layer is ``fc1``,
    the head ``head``).
    """

    def __init__(self, features: int, classes: int, hidden: tuple[int, ...] = (32, 32)):
        super().__init__()
        check_int(features, "features")
        check_int(classes, "classes")
        if isinstance(hidden, int) or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise ValueError(f"hidden must be a tuple of layer widths >= 1; got {hidden!r}.")
        layers, width = [], features
        for k, h in enumerate(hidden, start=1):
            layers += [(f"fc{k}", nn.Linear(width, h)), (f"relu{k}", nn.ReLU())]
            width = h
        layers.append(("head", nn.Linear(width, classes)))
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x):
        return self.layers(x)


# ---------------------------------------------------------------------------- training
def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The standard training loss; the default ``loss_fn`` of :func:`train`."""
    return F.cross_entropy(model(x), y)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 10, batch_size: int = 64,
          lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0,
          loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
          augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
          progress: bool = True) -> list[float]:
    """Train ``model`` in place with Adam and a cosine learning-rate schedule; return the mean loss per epoch.

    ``loss_fn(model, x_batch, y_batch)`` returns the loss to minimise, so adversarial training
    or input-gradient regularisation only swap this function. ``augment(x_batch, generator)``
    may transform each batch of images (N, C, H, W); token ids and tables are trained on as they
    are (``augment=None``). The model is left in eval mode.
    """
    from tqdm.auto import tqdm

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    check_int(epochs, "epochs")
    check_int(batch_size, "batch_size")
    check_number(lr, "lr", minimum=0, exclusive_minimum=True)
    check_number(weight_decay, "weight_decay", minimum=0)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty tensors with one label per example; got "
                         f"{tuple(getattr(x, 'shape', ()))} and {tuple(getattr(y, 'shape', ()))}.")
    if augment is not None and (x.dim() != 4 or not x.is_floating_point()):
        raise ValueError(f"augment transforms images (N, C, H, W); got x as {describe(x)}: pass augment=None "
                         "for token ids and tables.")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    history = []
    bar = tqdm(range(epochs), desc=f"training {type(model).__name__}", disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            xb = x[idx] if augment is None else augment(x[idx], generator)
            loss = loss_fn(model, xb, y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
        history.append(total / len(x))
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    model.eval()
    return history


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y`` (evaluated in eval mode)."""
    check_int(batch_size, "batch_size")
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"x and y must be non-empty with one label per example; got {len(x)} and {len(y)}.")
    was_training = model.training
    model.eval()
    correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(x), batch_size))
    model.train(was_training)
    return correct / len(x)


def random_shift(x: torch.Tensor, generator: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Augmentation: translate each image by its own random offset of up to ``pixels`` (zero padding)."""
    padded = F.pad(x, (pixels,) * 4)
    offsets = torch.randint(0, 2 * pixels + 1, (len(x), 2), generator=generator).tolist()
    h, w = x.shape[-2:]
    return torch.stack([padded[i, ..., dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


def random_symmetry(x: torch.Tensor, generator: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Augmentation for square images whose class no reflection or quarter turn changes (the shapes):
    each image is mapped by its own random one of the square's 8 symmetries (flips and transposition),
    then shifted as by :func:`random_shift`."""
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x must be a batch of square images (N, C, S, S); got {describe(x)}.")
    choice = torch.randint(0, 8, (len(x), 1, 1, 1), generator=generator)
    x = torch.where(choice % 2 == 1, x.flip(-1), x)
    x = torch.where(choice // 2 % 2 == 1, x.flip(-2), x)
    x = torch.where(choice // 4 == 1, x.transpose(-1, -2), x)
    return random_shift(x, generator, pixels)


def random_labels(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``y`` permuted by a seeded random permutation: the labels of the data randomisation test."""
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
