"""Attribution methods, one module per family, and the registry :data:`METHODS`.

Every method has the signature ``method(model, x, target, **options) -> Tensor`` and returns a
raw, signed map of ``x``'s shape (the CAM family: ``(B, 1, H, W)``). Chapters, tests and
benchmarks loop over :data:`METHODS`; calling an entry (``METHODS[name](model, x, target)``) applies
its :attr:`Method.defaults`, the options that keep a sampled method practical in such a loop.

The methods that need a transformer (the attention maps) or token ids (integrated gradients on
embeddings) have their own registry, :data:`TRANSFORMER_METHODS`, with the same :class:`Method`
entries and signature (chapters 15 and 16): looping over :data:`METHODS` on a CNN stays meaningful.

``from xaiutils.attribution import *`` exports every function of both registries except ``lime``,
which would shadow the ``lime`` package of a user who imported it: import it by name
(``from xaiutils.attribution import lime``) or call ``METHODS["lime"]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Mapping

from .attention import attention_relevance, attention_rollout, raw_attention
from .backprop import deconvnet, guided_backprop
from .cam import cam, grad_cam, grad_cam_pp, guided_grad_cam, layer_cam, xgrad_cam
from .fullgrad import fullgrad
from .deeplift import deeplift
from .embeddings import embedding_integrated_gradients
from .gradients import gradient, gradient_x_input
from .lrp import lrp
from .noise import smoothgrad
from .paths import blur_ig, expected_gradients, guided_ig, integrated_gradients
from .perturbation import occlusion
from .shapley import kernel_shap, lime, shapley_values
from .weight_noise import fusiongrad, noisegrad

PLANNED_CHAPTERS: tuple[str, ...] = ()
"""Chapters that teach a registry method but have no number yet, by name (:attr:`Method.chapter`); none at
present: the tables chapter (17) and the uncertainty chapter (14) now exist."""


@dataclass(frozen=True)
class Patches:
    """A default for ``features=``: squares that cut an example into a grid of ``cells x cells`` patches.

    For ``x`` of shape ``(B, ..., H, W)`` the squares are ``(ceil(H / cells), ceil(W / cells))``,
    the channels together (a 4 x 4 grid of 7 x 7 squares on a 28 x 28 digit, of 16 x 16 squares on a
    64 x 64 shapes image); for ``(B, F)`` (a table), groups of ``ceil(F / cells**2)`` consecutive
    features, so a table of at most ``cells**2`` columns keeps one feature per column.
    """

    cells: int

    def squares(self, x) -> tuple[int, ...] | None:
        """The square sizes for ``x``, or ``None`` for what is not a batch (the method then says what is wrong)."""
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) < 2 or 0 in shape[1:]:
            return None
        if len(shape) == 2:
            return (math.ceil(shape[1] / self.cells**2),)
        return tuple(math.ceil(n / self.cells) for n in shape[-2:])


@dataclass(frozen=True)
class Method:
    """One entry of the registry.

    ``family``: gradient, backprop, path, noise, propagation, cam or perturbation; attention for the
    maps read from a transformer's attention.
    ``chapter``: the number of the chapter that teaches the method (2 to 7: Part I; 14, the uncertainty
    of explanations; 15, transformers; 16, text; 17, tables, Shapley values and gradients), or, for a
    chapter that is planned but
    not numbered yet, its name in :data:`PLANNED_CHAPTERS` (to be replaced by the number when the
    chapter exists).
    ``needs_layer``: explains the activations of a layer (``layer=`` option, with a default).
    ``needs_baseline``: compares ``x`` with a reference input (``baseline=`` or ``references=``).
    ``map_shape``: ``"input"`` (``x``'s shape) or ``"layer"`` (``(B, 1, H, W)``, the CAM family; for
    token ids ``(B, T)``, as the attention maps return).
    ``defaults``: options that calling the entry passes unless the caller gives them, so that a loop
    over the registry stays practical on the book's images (a :class:`Patches` value becomes the
    square sizes for ``x``). The function itself keeps its own defaults: ``shapley_values(model, x,
    target)`` makes every element a feature, ``METHODS["shapley_values"](model, x, target)`` a
    3 x 3 grid of patches. :meth:`options` gives what a call will use.
    """

    name: str
    function: Callable
    family: str
    bibkey: str
    chapter: int | str
    needs_layer: bool = False
    needs_baseline: bool = False
    map_shape: str = "input"
    defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))  # read-only, not shared

    def options(self, x, **options) -> dict:
        """The options ``self(model, x, target, **options)`` passes: :attr:`defaults`, then ``options``."""
        resolved = {}
        for key, value in self.defaults.items():
            if key in options:
                continue
            value = value.squares(x) if isinstance(value, Patches) else value
            if value is not None:
                resolved[key] = value
        return {**resolved, **options}

    def __call__(self, model, x, target, **options):
        return self.function(model, x, target, **self.options(x, **options))


def _smooth(kind: str) -> Callable:
    wrapped = partial(smoothgrad, gradient, kind=kind)
    wrapped.__name__ = kind
    wrapped.__doc__ = f"``smoothgrad(gradient, ..., kind={kind!r})``: see :func:`xaiutils.attribution.noise.smoothgrad`."
    return wrapped


def _of_the_gradient(weight_noise: Callable) -> Callable:
    wrapped = partial(weight_noise, gradient)
    wrapped.__name__ = weight_noise.__name__
    wrapped.__doc__ = (f"``{weight_noise.__name__}(gradient, ...)``: see "
                       f":func:`xaiutils.attribution.weight_noise.{weight_noise.__name__}`.")
    return wrapped


# The coalition methods evaluate the model once per coalition, on the same 3 x 3 grid of patches so
# that their maps compare: 2^9 = 512 per example for exact Shapley values, 130 and 128 for KernelSHAP
# and LIME. FusionGrad: 5 noisy models x 10 noisy inputs, SmoothGrad's 50 passes. Weight noise:
# the paper picks sigma so that the noisy models lose about 5% of the accuracy. Measured on the zoo
# (mean of five draws, 500 test digits, 200 shapes images), sigma = 0.05 costs the standard MNIST
# CNN 0.2% and the shapes ResNet 1.6%; 0.1 costs the ResNet 20% and 0.2, the authors' default, 58%.
_COALITIONS = {"shapley_values": {"features": Patches(3)},
               "kernel_shap": {"features": Patches(3), "samples": 128},
               "lime": {"features": Patches(3), "samples": 128}}
_WEIGHT_NOISE = {"sigma": 0.05}
_TABLES, _UNCERTAINTY = 17, 14


_ENTRIES = [
    Method("gradient", gradient, "gradient", "simonyan2014deep", 2),
    Method("gradient_x_input", gradient_x_input, "gradient", "shrikumar2016not", 2),
    Method("deconvnet", deconvnet, "backprop", "zeiler2014visualizing", 3),
    Method("guided_backprop", guided_backprop, "backprop", "springenberg2015striving", 3),
    Method("integrated_gradients", integrated_gradients, "path", "sundararajan2017axiomatic", 4, needs_baseline=True),
    Method("expected_gradients", expected_gradients, "path", "erion2021improving", 4, needs_baseline=True),
    Method("blur_ig", blur_ig, "path", "xu2020attribution", 4),
    Method("guided_ig", guided_ig, "path", "kapishnikov2021guided", 4, needs_baseline=True),
    Method("smoothgrad", _smooth("smoothgrad"), "noise", "smilkov2017smoothgrad", 5),
    Method("smoothgrad_sq", _smooth("smoothgrad_sq"), "noise", "hooker2019benchmark", 5),
    Method("vargrad", _smooth("vargrad"), "noise", "adebayo2018local", 5),
    Method("lrp", lrp, "propagation", "bach2015pixel", 6),
    Method("deeplift", deeplift, "propagation", "shrikumar2017learning", 6, needs_baseline=True),
    Method("cam", cam, "cam", "zhou2016learning", 7, needs_layer=True, map_shape="layer"),
    Method("grad_cam", grad_cam, "cam", "selvaraju2017grad", 7, needs_layer=True, map_shape="layer"),
    Method("grad_cam_pp", grad_cam_pp, "cam", "chattopadhay2018grad", 7, needs_layer=True, map_shape="layer"),
    Method("xgrad_cam", xgrad_cam, "cam", "fu2020axiom", 7, needs_layer=True, map_shape="layer"),
    Method("layer_cam", layer_cam, "cam", "jiang2021layercam", 7, needs_layer=True, map_shape="layer"),
    Method("guided_grad_cam", guided_grad_cam, "cam", "selvaraju2017grad", 7, needs_layer=True),
    Method("fullgrad", fullgrad, "cam", "srinivas2019full", 7, map_shape="layer"),
    Method("occlusion", occlusion, "perturbation", "zeiler2014visualizing", 3, needs_baseline=True),
    Method("shapley_values", shapley_values, "perturbation", "lundberg2017unified", _TABLES, needs_baseline=True,
           defaults=_COALITIONS["shapley_values"]),
    Method("kernel_shap", kernel_shap, "perturbation", "lundberg2017unified", _TABLES, needs_baseline=True,
           defaults=_COALITIONS["kernel_shap"]),
    Method("lime", lime, "perturbation", "ribeiro2016why", _TABLES, needs_baseline=True, defaults=_COALITIONS["lime"]),
    Method("noisegrad", _of_the_gradient(noisegrad), "noise", "bykov2022noisegrad", _UNCERTAINTY,
           defaults=_WEIGHT_NOISE),
    Method("fusiongrad", _of_the_gradient(fusiongrad), "noise", "bykov2022noisegrad", _UNCERTAINTY,
           defaults={**_WEIGHT_NOISE, "samples": 5, "input_samples": 10}),
]

METHODS: dict[str, Method] = {m.name: m for m in _ENTRIES}

_TRANSFORMERS, _TEXT = 15, 16
TRANSFORMER_METHODS: dict[str, Method] = {m.name: m for m in [
    Method("raw_attention", raw_attention, "attention", "abnar2020quantifying", _TRANSFORMERS, map_shape="layer"),
    Method("attention_rollout", attention_rollout, "attention", "abnar2020quantifying", _TRANSFORMERS,
           map_shape="layer"),
    Method("attention_relevance", attention_relevance, "attention", "chefer2021generic", _TRANSFORMERS,
           map_shape="layer"),
    Method("embedding_integrated_gradients", embedding_integrated_gradients, "path", "sundararajan2017axiomatic",
           _TEXT, needs_baseline=True),
]}
"""The methods that need a transformer (attention maps: on a ViT ``(B, 1, H, W)``, on token ids
``(B, T)``) or token ids (integrated gradients along a path of embeddings, ``(B, T)``). LRP, in
:data:`METHODS`, explains both kinds of model with its transformer composites (chapter 15)."""

__all__ = ["METHODS", "Method", "PLANNED_CHAPTERS", "Patches", "TRANSFORMER_METHODS",
           *(name for name in (*METHODS, *TRANSFORMER_METHODS) if name in globals() and name != "lime"),
           "smoothgrad"]
