"""The book's models, their training loop and the shipped model zoo (chapter 1).

* :class:`MnistCNN` -- three named convolutional blocks, then global average pooling and one
  linear layer, so that CAM is exact on it (chapter 7).
* :class:`ShapesResNet` -- a small residual network with BatchNorm, the realistic case for LRP
  canonizers and Grad-CAM (chapters 6 and 7).
* :func:`train` -- a plain, seeded training loop with a progress bar; the adversarial and
  regularised recipes of chapter 13 plug into it through ``loss_fn``.
* :func:`load` -- a trained model from the weights shipped with the package, checked by hash.
  ``make weights`` (``python -m xaiutils.models``) retrains them all.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

WEIGHTS = Path(__file__).parent / "weights"


class MnistCNN(nn.Module):
    """Conv blocks ``block1``..``block3`` (conv, ReLU, max-pool), then GAP and a linear ``fc``."""

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 128), classes: int = 10):
        super().__init__()
        c1, c2, c3 = channels

        def block(c_in, c_out, pool):
            layers = [("conv", nn.Conv2d(c_in, c_out, 3, padding=1)), ("relu", nn.ReLU())]
            if pool:
                layers.append(("pool", nn.MaxPool2d(2)))
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
    may transform each batch. The model is left in eval mode.
    """
    from tqdm.auto import tqdm

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


# ---------------------------------------------------------------------------- model zoo
def _train_mnist_standard() -> nn.Module:
    from .data import mnist

    data = mnist()
    torch.manual_seed(0)
    model = MnistCNN()
    train(model, data.x_train, data.y_train, epochs=40, lr=3e-3, weight_decay=1e-4, augment=random_shift, seed=0)
    return model


def _train_shapes_standard() -> nn.Module:
    from .data import shapes

    data = shapes("train")
    torch.manual_seed(0)
    model = ShapesResNet()
    train(model, data.x, data.y, epochs=15, lr=3e-3, seed=0)
    return model


def _train_mnist_pgd() -> nn.Module:
    """PGD adversarial training (7 steps), fine-tuned from ``mnist-standard`` with epsilon growing 0.1 -> 0.3."""
    from .adversarial.training import adversarial_loss
    from .data import mnist

    data = mnist()
    model = load("mnist-standard")
    for phase, (epsilon, epochs) in enumerate([(0.1, 3), (0.2, 3), (0.3, 10)]):
        train(model, data.x_train, data.y_train, epochs=epochs, lr=2e-3, augment=random_shift, seed=phase,
              loss_fn=adversarial_loss(epsilon, steps=7, seed=1000 * phase))
    return model


GRADREG_LAMBDA = 1.0  # the weight of the squared input gradient in mnist-gradreg's loss


def _train_mnist_from_scratch(loss_fn) -> nn.Module:
    """The recipe shared by the MNIST models trained from scratch with a robustness loss."""
    from .data import mnist

    data = mnist()
    torch.manual_seed(0)
    model = MnistCNN()
    train(model, data.x_train, data.y_train, epochs=20, lr=3e-3, weight_decay=1e-4, augment=random_shift, seed=0,
          loss_fn=loss_fn)
    return model


def _train_mnist_gradreg() -> nn.Module:
    """Input-gradient regularisation (double backpropagation), trained from scratch."""
    from .adversarial.training import gradient_regularised_loss

    return _train_mnist_from_scratch(gradient_regularised_loss(GRADREG_LAMBDA))


NOISE_SIGMA = 0.5  # the standard deviation of the Gaussian noise added to mnist-noise's training inputs


def _train_mnist_noise() -> nn.Module:
    """Gaussian noise augmentation (sigma = 0.5, unclipped, as in randomised smoothing), trained from scratch."""
    from .adversarial.training import noise_augmented_loss

    return _train_mnist_from_scratch(noise_augmented_loss(NOISE_SIGMA))


def random_labels(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``y`` permuted by a seeded random permutation: the labels of the data randomisation test."""
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]


def _train_mnist_random_labels() -> nn.Module:
    """The data randomisation test's model: the MNIST training images with permuted labels, memorised."""
    from .data import mnist

    data = mnist()
    torch.manual_seed(0)
    model = MnistCNN()
    train(model, data.x_train, random_labels(data.y_train), epochs=100, lr=5e-3, seed=0)
    return model


def _train_decoy_mnist_standard() -> nn.Module:
    """A standard model trained on decoy MNIST (no augmentation, no weight decay): it comes to rely on the patch."""
    from .data import decoy_mnist

    data = decoy_mnist()
    torch.manual_seed(0)
    model = MnistCNN()
    train(model, data.x_train, data.y_train, epochs=60, lr=5e-3, seed=0)
    return model


def _train_shapes_pgd() -> nn.Module:
    """PGD adversarial training at epsilon = 8/255 (4 steps), fine-tuned from ``shapes-standard``."""
    from .adversarial.training import adversarial_loss
    from .data import shapes

    data = shapes("train")
    model = load("shapes-standard")
    train(model, data.x, data.y, epochs=6, lr=1e-3, seed=0, loss_fn=adversarial_loss(8 / 255, steps=4))
    return model


ZOO: dict[str, tuple[Callable[[], nn.Module], Callable[[], nn.Module]]] = {
    # name: (architecture, training recipe); a recipe may fine-tune a model listed before it
    "mnist-standard": (MnistCNN, _train_mnist_standard),
    "shapes-standard": (ShapesResNet, _train_shapes_standard),
    "mnist-pgd": (MnistCNN, _train_mnist_pgd),
    "mnist-gradreg": (MnistCNN, _train_mnist_gradreg),
    "mnist-random-labels": (MnistCNN, _train_mnist_random_labels),
    "decoy-mnist-standard": (MnistCNN, _train_decoy_mnist_standard),
    "shapes-pgd": (ShapesResNet, _train_shapes_pgd),
    "mnist-noise": (MnistCNN, _train_mnist_noise),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest() -> dict:
    path = WEIGHTS / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def load(name: str) -> nn.Module:
    """The trained model ``name`` of :data:`ZOO`, in eval mode, from the shipped weights.

    The weights are loaded with ``weights_only=True`` after their SHA-256 is checked against
    ``weights/manifest.json``. Missing or altered weights raise an error that names
    ``make weights``, which retrains every model of the zoo.
    """
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(ZOO)}.")
    path = WEIGHTS / f"{name}.pt"
    expected = _manifest().get(name, {}).get("sha256")
    if not path.exists() or expected is None:
        raise FileNotFoundError(
            f"no shipped weights for {name!r} at {path}. Run `make weights` (python -m xaiutils.models) "
            "in the repository to train them.")
    if _sha256(path) != expected:
        raise RuntimeError(
            f"the weights file {path} does not match its SHA-256 in weights/manifest.json; it is corrupt "
            "or was changed by hand. Run `make weights` to retrain and record it.")
    architecture, _ = ZOO[name]
    model = architecture()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def build_weights(names: list[str] | None = None) -> dict:
    """Train the models of :data:`ZOO` (all by default), save their weights and update the manifest."""
    WEIGHTS.mkdir(exist_ok=True)
    manifest = _manifest()
    for name in names or list(ZOO):
        model = ZOO[name][1]()
        path = WEIGHTS / f"{name}.pt"
        torch.save(model.state_dict(), path)
        manifest[name] = {"sha256": _sha256(path), "file": path.name}
        # written after every model, so that a later recipe can load (and fine-tune) this one
        (WEIGHTS / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


if __name__ == "__main__":
    import sys

    build_weights(sys.argv[1:] or None)
