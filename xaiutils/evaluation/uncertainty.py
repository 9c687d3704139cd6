r"""A map as a random quantity: samples of an explanation and how far they spread (chapter 14).

One trained network gives one map, but training could have given another network, and a Bayesian
view of the weights gives a whole distribution of them (Bykov et al., 2020, ``bykov2020much``):
explaining each network :math:`f(\cdot\,; W_j)` of a sample gives a sample of maps
:math:`\phi_j = \phi(x; f(\cdot\,; W_j))`. Four sources of :math:`W_j`, one sampler each, all
returning ``(samples, B, *map_shape)``:

* :func:`ensemble_samples`: the members of a deep ensemble, independently trained copies
  (Lakshminarayanan et al., 2017, ``lakshminarayanan2017simple``; the zoo's
  :func:`~xaiutils.zoo.load_seeds`);
* :func:`mc_dropout_samples`: the thinned networks of MC dropout (Gal and Ghahramani, 2016,
  ``gal2016dropout``): dropout stays on at explanation time, everything else in eval mode;
* :func:`bayesian_samples`: weight draws of a variational model (Bayes by Backprop,
  ``blundell2015weight``; :mod:`xaiutils.bayesian`);
* :func:`~xaiutils.attribution.weight_noise.weight_noise_samples`: NoiseGrad's multiplicative
  weight noise (``bykov2022noisegrad``), re-exported here.

A sampled network is fixed while it is explained: its dropout masks, or its weight draw, are drawn
once and shared by every example of the batch and by every forward pass the method makes
(integrated gradients' steps, SmoothGrad's noisy copies, any ``batch_size``), so each map is the
explanation of one network, exactly as for an ensemble member. The user's model is never changed:
the samplers work on a deep copy made inside :func:`~xaiutils.core.model_state.explaining`.

The summaries of a sample ``maps`` ``(S, B, ...)``: :func:`mean_and_std` (per feature),
:func:`interval` (per-feature quantiles) and :func:`spread` (one number per example).
"""
from __future__ import annotations

import contextlib
from functools import partial
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ..attribution.weight_noise import call_batched, copy_model, rebind_layers, weight_noise_samples
from ..bayesian import bayes_layers, sampled_weights
from ..core.checks import check_choice, check_int, check_number, describe
from ..core.model_state import explaining
from ..core.targets import Target
from .similarity import spearman, top_k_intersection

__all__ = ["ensemble_samples", "mc_dropout_samples", "bayesian_samples", "weight_noise_samples", "mean_and_std",
           "interval", "spread", "SPREADS"]

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _check_method(method) -> None:
    if not callable(method):
        raise TypeError(f"method must be an attribution function such as gradient; got {describe(method)}.")


def _stack(maps: list[torch.Tensor], source: str) -> torch.Tensor:
    shapes = {tuple(m.shape) for m in maps}
    if len(shapes) > 1:
        raise ValueError(f"the maps of the {source} must all have one shape; got {sorted(shapes)}.")
    return torch.stack(maps)


# ---------------------------------------------------------------------------- deep ensembles
def ensemble_samples(method: Callable[..., torch.Tensor], models: Sequence[nn.Module], x: torch.Tensor,
                     target: Target, *, batch_size: int | None = None, **method_options) -> torch.Tensor:
    r"""The maps :math:`\phi(x; f_k)` of every member :math:`f_k` of a deep ensemble, ``(len(models), B, ...)``.

    Args:
        method: an attribution method with the common signature, e.g. ``gradient``.
        models: the ensemble, e.g. ``zoo.load_seeds("mnist-standard")``; at least one model.
        batch_size: passed to ``method`` if it takes one, otherwise ``x`` is split into blocks.
        method_options: passed on to ``method``; a module of ``models[0]`` (``layer=models[0].block3``)
            is replaced by the module of the same name in each member.

    References: ``lakshminarayanan2017simple`` (deep ensembles); ``bykov2020much``. Chapter 14.
    """
    _check_method(method)
    if isinstance(models, nn.Module) or not isinstance(models, (list, tuple)) or not models:
        raise TypeError(f"models must be a non-empty list of torch.nn.Module (an ensemble); got {describe(models)}.")
    for k, member in enumerate(models):
        if not isinstance(member, nn.Module):
            raise TypeError(f"models[{k}] must be a torch.nn.Module; got {describe(member)}.")
    maps = []
    for member in models:
        options = rebind_layers(method_options, models[0], member) if member is not models[0] else method_options
        with explaining(member, x, target):
            maps.append(call_batched(method, member, x, target, batch_size, options))
    return _stack(maps, "ensemble")


# ---------------------------------------------------------------------------- sampled networks
def _network_samples(method, model, x, target, samples, seed, batch_size, options, prepare) -> torch.Tensor:
    """``samples`` maps of a deep copy of ``model``; ``prepare(copy)`` returns ``draw(generator)``, a context
    manager inside which the copy is one fixed network of the sample."""
    with explaining(model, x, target):
        network = copy_model(model)
        options = rebind_layers(options, model, network)
        draw = prepare(network)
        generator = torch.Generator().manual_seed(seed)
        maps = []
        for _ in range(samples):
            with draw(generator):
                maps.append(call_batched(method, network, x, target, batch_size, options))
        return torch.stack(maps)


def _check_sampling(method, samples, seed) -> None:
    _check_method(method)
    check_int(samples, "samples")
    check_number(seed, "seed", minimum=0, maximum=2**63 - 1, integer=True)


class SampledDropout(nn.Module):
    r"""Dropout with one mask for every forward pass until :meth:`redraw`: a fixed thinned network.

    Replaces an ``nn.Dropout``/``Dropout1d/2d/3d`` of probability :math:`p` in the copy that
    :func:`mc_dropout_samples` explains. The mask, drawn from ``generator`` at the first forward pass
    after :meth:`redraw`, is Bernoulli(:math:`1 - p`) divided by :math:`1 - p`, as in training, of shape
    ``(1, *x.shape[1:])`` (``nn.Dropout``: every feature) or ``(1, C, 1, ...)`` (the channel variants), and
    is shared by the batch.
    """

    def __init__(self, p: float, channels: bool):
        super().__init__()
        self.p, self.channels = p, channels
        self.mask: torch.Tensor | None = None
        self.generator: torch.Generator | None = None

    def redraw(self, generator: torch.Generator) -> None:
        self.mask, self.generator = None, generator

    def forward(self, x):
        shape = (1, x.shape[1]) + (1,) * (x.dim() - 2) if self.channels else (1, *x.shape[1:])
        if self.mask is None:
            if self.generator is None:
                raise RuntimeError("SampledDropout needs redraw(generator) before its first forward pass.")
            keep = torch.rand(shape, generator=self.generator, dtype=x.dtype) >= self.p
            self.mask = (keep.to(x.dtype) / (1 - self.p)).to(x.device)
        elif self.mask.shape[1:] != shape[1:]:
            raise ValueError(f"a sampled dropout mask of shape {tuple(self.mask.shape)} cannot be applied to "
                             f"activations of shape {tuple(x.shape)}: the method changed the input's shape "
                             "between forward passes.")
        return x * self.mask


def _sampled_dropout_copy(network: nn.Module) -> list[SampledDropout]:
    """Replace every dropout module of ``network`` (a copy) by a :class:`SampledDropout`; return them."""
    replaced = []
    for name, module in list(network.named_modules()):
        if isinstance(module, _DROPOUTS):
            sampled = SampledDropout(module.p, channels=not type(module) is nn.Dropout)
            parent_name, _, child = name.rpartition(".")
            setattr(network.get_submodule(parent_name) if parent_name else network, child, sampled)
            replaced.append(sampled)
    return replaced


def mc_dropout_samples(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, target: Target, *,
                       samples: int = 10, seed: int = 0, batch_size: int | None = None,
                       **method_options) -> torch.Tensor:
    r"""MC dropout: the maps of ``samples`` thinned networks, dropout on and everything else in eval mode.

    Gal and Ghahramani read dropout as a variational distribution over the weights: a network
    with dropout masks :math:`M_j` drawn as in training is a sample :math:`W_j` of it. Each sample
    is a deep copy of ``model`` in eval mode (BatchNorm uses its running statistics, which are not
    updated) whose ``nn.Dropout``/``Dropout1d/2d/3d`` modules apply one fixed mask
    (:class:`SampledDropout`), with the modules' own :math:`p`. Dropout written as a function call
    in ``forward`` (``F.dropout``) is not a module and cannot be found: it is off in eval mode.

    Args:
        method: an attribution method with the common signature.
        model: a model with at least one dropout module (e.g. ``zoo.load("mnist-dropout")``).
        samples: the number of thinned networks.
        seed: seeds the masks (a generator of its own; torch's global state is untouched).
        batch_size: passed to ``method`` if it takes one, otherwise ``x`` is split into blocks of that
            many rows; the maps do not depend on it.
        method_options: passed on to ``method``; a module of ``model`` is replaced by the copy's.

    Returns:
        ``(samples, *shape)`` with ``shape`` what ``method`` returns for ``x``.

    References: ``gal2016dropout``. Chapter 14.
    """
    _check_sampling(method, samples, seed)
    if isinstance(model, nn.Module):
        for name, module in model.named_modules():
            if isinstance(module, (nn.AlphaDropout, nn.FeatureAlphaDropout)):
                raise ValueError(f"mc_dropout_samples supports nn.Dropout and nn.Dropout1d/2d/3d; the model's {name!r} "
                                 f"is {type(module).__name__}, whose masks set units to a negative value, not zero.")
        if not any(isinstance(m, _DROPOUTS) for m in model.modules()):
            raise ValueError(f"model must contain a dropout module (nn.Dropout, nn.Dropout1d/2d/3d) for MC dropout; "
                             f"{type(model).__name__} has none.")

    def prepare(network: nn.Module):
        dropouts = _sampled_dropout_copy(network)

        @contextlib.contextmanager
        def draw(generator: torch.Generator) -> Iterator[None]:
            for module in dropouts:
                module.redraw(generator)
            yield

        return draw

    return _network_samples(method, model, x, target, samples, seed, batch_size, method_options, prepare)


def bayesian_samples(method: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, target: Target, *,
                     samples: int = 10, seed: int = 0, batch_size: int | None = None,
                     **method_options) -> torch.Tensor:
    r"""The maps of ``samples`` weight draws :math:`W_j \sim q(W)` of a variational model.

    Each draw fixes every :class:`~xaiutils.bayesian.BayesLinear` of a deep copy of ``model`` to
    :math:`\mu + \sigma \varepsilon_j` (:func:`~xaiutils.bayesian.sampled_weights`, drawn from a
    generator seeded by ``seed``); the rest of the model is used as it is, in eval mode. Arguments and
    result as in :func:`mc_dropout_samples`; ``model`` must contain a ``BayesLinear`` (e.g.
    ``zoo.load("mnist-bayes")``).

    References: ``blundell2015weight``; ``bykov2020much`` (explaining Bayesian networks). Chapter 14.
    """
    _check_sampling(method, samples, seed)
    if isinstance(model, nn.Module) and not bayes_layers(model):
        raise ValueError(f"model must contain a BayesLinear layer (xaiutils.bayesian) to sample its weights; "
                         f"{type(model).__name__} has none.")
    return _network_samples(method, model, x, target, samples, seed, batch_size, method_options,
                            lambda network: partial(sampled_weights, network))


# ---------------------------------------------------------------------------- summaries
def _check_maps(maps, minimum: int = 2) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or not maps.is_floating_point():
        raise TypeError(f"maps must be a floating-point tensor of samples (S, B, ...); got {describe(maps)}.")
    if maps.dim() < 3:
        raise ValueError(f"maps must be samples of a batch of maps, (S, B, ...) with at least 3 dims; "
                         f"got shape {tuple(maps.shape)}.")
    if maps.shape[0] < minimum or maps.shape[1] == 0:
        raise ValueError(f"maps must hold at least {minimum} samples of a non-empty batch, (S >= {minimum}, B >= 1, "
                         f"...); got shape {tuple(maps.shape)}.")
    if not torch.isfinite(maps).all():
        raise ValueError("maps contains NaN or inf values.")
    return maps.detach()


def mean_and_std(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The per-feature mean :math:`\bar\phi = \frac1S \sum_j \phi_j` and sample standard deviation
    :math:`\sqrt{\frac1{S-1} \sum_j (\phi_j - \bar\phi)^2}` of ``maps`` ``(S >= 2, B, ...)``; each ``(B, ...)``."""
    maps = _check_maps(maps)
    return maps.mean(0), maps.std(0, correction=1)


def interval(maps: torch.Tensor, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per feature, the empirical ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of ``maps`` ``(S, B, ...)``.

    The central interval holding ``level`` of the sampled maps (linear interpolation between order
    statistics, as :func:`torch.quantile`), in the spirit of the credible intervals of Slack et
    al. (``slack2021reliable``). It describes the distribution of the map, not the error of its mean;
    with few samples (three seeds) it is the range of the samples stretched a little, so report ``S``.

    Returns ``(low, high)``, each ``(B, ...)``.
    """
    maps = _check_maps(maps)
    level = check_number(level, "level", minimum=0, maximum=1, exclusive_minimum=True, exclusive_maximum=True)
    bounds = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=maps.dtype, device=maps.device)
    low, high = torch.quantile(maps, bounds, dim=0)
    return low, high


SPREADS = ("rank", "top_k", "cv")


def _pairs(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair ``i < j`` of samples, stacked: two ``(P * B, ...)`` batches."""
    i, j = torch.triu_indices(maps.shape[0], maps.shape[0], offset=1)
    return maps[i].flatten(0, 1), maps[j].flatten(0, 1)


def spread(maps: torch.Tensor, *, measure: str = "rank", k: int | None = None,
           absolute: bool = True) -> torch.Tensor:
    r"""How much the sampled maps of each example disagree: one number per example, 0 when all samples agree.

    ``measure``:

    * ``"rank"``: :math:`1 - \frac{2}{S(S-1)} \sum_{i<j} \rho(\phi_i, \phi_j)`, one minus the mean
      pairwise Spearman correlation of the samples (:func:`~.similarity.spearman`), the pairwise
      disagreement of Krishna et al. (``krishna2022disagreement``) applied to samples of one method
      rather than to different methods. In :math:`[0, 2]`; about 1 for unrelated maps.
    * ``"top_k"``: one minus the mean pairwise share of the ``k`` most relevant pixels that two samples
      name alike (:func:`~.similarity.top_k_intersection`, ``ghorbani2019interpretation``). In
      :math:`[0, 1]`; unrelated maps of :math:`d` pixels give about :math:`1 - k/d`.
    * ``"cv"``: the coefficient of variation of the map, :math:`\sum_p \sigma_p / \sum_p |\bar\phi_p|`,
      the pixels' standard deviations over the magnitude of the mean map (``bykov2020much`` show
      per-pixel standard deviations; the ratio makes maps of different scales comparable). 0 when
      the samples are equal; large when the mean map is small beside its spread.

    Image maps ``(S, B, C, H, W)`` are first summed over channels (signed), as every similarity of
    Part II. ``absolute`` ranks magnitudes for ``"rank"`` and ``"top_k"`` (the sign of a gradient map
    often flips between networks while its important pixels stay); ``k`` (required for ``"top_k"``) is a
    number of pixels.

    Returns a ``(B,)`` float64 tensor.
    """
    maps = _check_maps(maps)
    check_choice(measure, "measure", SPREADS)
    if not isinstance(absolute, bool):
        raise TypeError(f"absolute must be True or False; got {describe(absolute)}.")
    if measure != "top_k" and k is not None:
        raise ValueError(f"k is the number of pixels of measure='top_k'; got k={k!r} with measure={measure!r}.")
    samples, batch = maps.shape[:2]
    flat = (maps.sum(2) if maps.dim() == 5 else maps).flatten(2).double()  # (S, B, pixels)
    if measure == "cv":
        mean, std = flat.mean(0), flat.std(0, correction=1)
        magnitude = mean.abs().sum(1)
        if (magnitude == 0).any():
            raise ValueError("spread(measure='cv') needs a mean map that is not zero everywhere; the mean map of "
                             f"example(s) {torch.nonzero(magnitude == 0).flatten().tolist()} is all zeros.")
        return std.sum(1) / magnitude
    a, b = _pairs(flat)
    if measure == "rank":
        agreement = spearman(a, b, absolute=absolute)
        if torch.isnan(agreement).any():
            raise ValueError("spread(measure='rank') cannot rank a constant map (its Spearman correlation is "
                             "undefined); use measure='cv' or drop the constant samples.")
    else:
        if k is None:
            raise ValueError(f"k must be given for measure='top_k': the number of pixels, 1..{flat.shape[2]}.")
        agreement = top_k_intersection(a, b, k, absolute=absolute)
    return 1 - agreement.view(-1, batch).mean(0)
