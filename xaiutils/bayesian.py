r"""A variational (Bayes by Backprop) linear layer and the MNIST CNN that ends with one (chapter 14).

Bayes by Backprop (Blundell et al., 2015, ``blundell2015weight``) learns a distribution over
weights instead of one value: every weight :math:`w` has its own Gaussian
:math:`q(w) = N(\mu, \sigma^2)` with :math:`\sigma = \log(1 + e^{\rho})` (mean field: independent
entries). A forward pass in training mode draws :math:`w = \mu + \sigma \varepsilon`,
:math:`\varepsilon \sim N(0, 1)` (the reparameterisation trick, so that the loss is differentiable
in :math:`\mu` and :math:`\rho`), and training minimises the negative evidence lower bound

.. math:: \mathcal{L} = \frac{1}{N}\,\mathrm{KL}\big(q(w)\,\|\,p(w)\big) - \frac1B \sum_{i \in \text{batch}} \log p(y_i \mid x_i, w),

per training example (``N`` examples). The prior is one Gaussian :math:`p(w) = N(0, s^2)`, whose KL
divergence is closed-form; Blundell et al. also propose a scale mixture of two Gaussians, which we
do not use.

*Which weights are used.* In eval mode the layer uses its means :math:`\mu` (a deterministic model
that every attribution method can explain). Inside :func:`sampled_weights` it uses one draw
:math:`w = \mu + \sigma \varepsilon` from a generator you pass, fixed for every forward pass of
the block, so that a method that calls the model several times (integrated gradients' steps) sees
one network: the sampler :func:`xaiutils.evaluation.uncertainty.bayesian_samples` draws one such
network per map.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from .core.checks import check_int, check_number, describe
from .models import MnistCNN

PRIOR_SIGMA = 1.0  # std of the Gaussian prior on every weight and bias of a BayesLinear
INITIAL_SIGMA = 0.01  # the posterior std every weight starts from


def _inverse_softplus(sigma: float) -> float:
    return math.log(math.expm1(sigma))


class BayesLinear(nn.Module):
    r"""A linear layer with a mean-field Gaussian posterior :math:`N(\mu, \operatorname{softplus}(\rho)^2)` per entry.

    Parameters ``weight_mu``, ``weight_rho``, ``bias_mu``, ``bias_rho``. Training mode: a fresh
    draw per forward pass (from torch's global generator, seeded by :func:`xaiutils.models.train`);
    eval mode: the means; inside :func:`sampled_weights`: the draw it fixed. ``kl()`` is
    :math:`\mathrm{KL}(q \| p)` for the prior :math:`N(0, \text{prior\_sigma}^2)`.

    Reference: ``blundell2015weight``.
    """

    def __init__(self, in_features: int, out_features: int, *, prior_sigma: float = PRIOR_SIGMA,
                 initial_sigma: float = INITIAL_SIGMA):
        super().__init__()
        check_int(in_features, "in_features")
        check_int(out_features, "out_features")
        self.prior_sigma = check_number(prior_sigma, "prior_sigma", minimum=0, exclusive_minimum=True)
        check_number(initial_sigma, "initial_sigma", minimum=0, exclusive_minimum=True, maximum=10)
        self.in_features, self.out_features, self.initial_sigma = in_features, out_features, initial_sigma
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
        self.bias_mu = nn.Parameter(torch.empty(out_features))
        self.weight_rho = nn.Parameter(torch.empty(out_features, in_features))
        self.bias_rho = nn.Parameter(torch.empty(out_features))
        self.fixed: tuple[torch.Tensor, torch.Tensor] | None = None  # set by sampled_weights
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Means as ``nn.Linear`` initialises its weights, every std ``initial_sigma`` (the model
        randomisation test re-initialises layers with this)."""
        bound = 1 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight_mu.uniform_(-bound, bound)
            self.bias_mu.uniform_(-bound, bound)
            self.weight_rho.fill_(_inverse_softplus(self.initial_sigma))
            self.bias_rho.fill_(_inverse_softplus(self.initial_sigma))

    def sigmas(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior standard deviations of the weight and the bias."""
        return F.softplus(self.weight_rho), F.softplus(self.bias_rho)

    def draw(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""One draw :math:`(\mu_W + \sigma_W \varepsilon, \mu_b + \sigma_b \varepsilon')` (differentiable in mu, rho)."""
        weight_sigma, bias_sigma = self.sigmas()
        noise = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                 for p in (self.weight_mu, self.bias_mu)]
        return self.weight_mu + weight_sigma * noise[0], self.bias_mu + bias_sigma * noise[1]

    def forward(self, x):
        if self.fixed is not None:
            weight, bias = self.fixed
        elif self.training:
            weight, bias = self.draw()
        else:
            weight, bias = self.weight_mu, self.bias_mu
        return F.linear(x, weight, bias)

    def kl(self) -> torch.Tensor:
        r""":math:`\sum \mathrm{KL}(N(\mu, \sigma^2) \| N(0, s^2)) = \sum \log\frac{s}{\sigma} + \frac{\sigma^2 + \mu^2}{2 s^2} - \frac12`."""
        total = torch.zeros((), dtype=self.weight_mu.dtype, device=self.weight_mu.device)
        for mu, sigma in zip((self.weight_mu, self.bias_mu), self.sigmas()):
            total = total + (math.log(self.prior_sigma) - torch.log(sigma)
                             + (sigma ** 2 + mu ** 2) / (2 * self.prior_sigma ** 2) - 0.5).sum()
        return total

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, prior_sigma={self.prior_sigma:g}"


def bayes_layers(model: nn.Module) -> list[BayesLinear]:
    """The :class:`BayesLinear` modules of ``model``, in registration order."""
    return [m for m in model.modules() if isinstance(m, BayesLinear)]


def kl_divergence(model: nn.Module) -> torch.Tensor:
    """The sum of ``kl()`` over every :class:`BayesLinear` of ``model``."""
    layers = bayes_layers(model)
    if not layers:
        raise ValueError(f"model must contain a BayesLinear layer to have a KL term; got {type(model).__name__}.")
    return sum(layer.kl() for layer in layers)


def elbo_loss(examples: int) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The ``loss_fn`` of :func:`xaiutils.models.train` for Bayes by Backprop: cross-entropy on one
    weight draw plus ``kl_divergence(model) / examples`` (the negative ELBO per training example)."""
    examples = check_int(examples, "examples")

    def loss(model, x, y):
        return F.cross_entropy(model(x), y) + kl_divergence(model) / examples

    return loss


@contextmanager
def sampled_weights(model: nn.Module, generator: torch.Generator) -> Iterator[None]:
    """Inside the block every :class:`BayesLinear` of ``model`` uses one weight draw from ``generator``.

    The draw is made on entry (layer by layer, weight then bias) without gradient and kept for
    every forward pass in the block, in any mode; on exit, also on error, the layers use their
    means (eval) or fresh draws (training) again.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {describe(generator)}.")
    layers = bayes_layers(model)
    if not layers:
        raise ValueError(f"model must contain a BayesLinear layer to sample its weights; got {type(model).__name__}.")
    try:
        with torch.no_grad():
            for layer in layers:
                layer.fixed = tuple(t.detach() for t in layer.draw(generator))
        yield
    finally:
        for layer in layers:
            layer.fixed = None


class BayesMnistCNN(MnistCNN):
    """:class:`~xaiutils.models.MnistCNN` whose last layer ``fc`` is a :class:`BayesLinear` (``mnist-bayes``)."""

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 128), classes: int = 10, *,
                 prior_sigma: float = PRIOR_SIGMA):
        super().__init__(channels, classes)
        self.fc = BayesLinear(channels[2], classes, prior_sigma=prior_sigma)
