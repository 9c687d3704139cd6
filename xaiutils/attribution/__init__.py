"""Attribution methods, one module per family, and the registry :data:`METHODS`.

Every method has the signature ``method(model, x, target, **options) -> Tensor`` and returns a
raw, signed map of ``x``'s shape (the CAM family: ``(B, 1, H, W)``). Chapters, tests and
benchmarks loop over :data:`METHODS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from .backprop import deconvnet, guided_backprop
from .cam import cam, grad_cam, grad_cam_pp, guided_grad_cam, layer_cam, xgrad_cam
from .fullgrad import fullgrad
from .deeplift import deeplift
from .gradients import gradient, gradient_x_input
from .lrp import lrp
from .noise import smoothgrad
from .paths import blur_ig, expected_gradients, guided_ig, integrated_gradients
from .perturbation import occlusion


@dataclass(frozen=True)
class Method:
    """One entry of the registry.

    ``family``: gradient, backprop, path, noise, propagation, cam or perturbation.
    ``needs_layer``: explains the activations of a layer (``layer=`` option, with a default).
    ``needs_baseline``: compares ``x`` with a reference input (``baseline=`` or ``references=``).
    ``map_shape``: ``"input"`` (``x``'s shape) or ``"layer"`` (``(B, 1, H, W)``, the CAM family).
    """

    name: str
    function: Callable
    family: str
    bibkey: str
    chapter: int
    needs_layer: bool = False
    needs_baseline: bool = False
    map_shape: str = "input"

    def __call__(self, model, x, target, **options):
        return self.function(model, x, target, **options)


def _smooth(kind: str) -> Callable:
    wrapped = partial(smoothgrad, gradient, kind=kind)
    wrapped.__name__ = kind
    wrapped.__doc__ = f"``smoothgrad(gradient, ..., kind={kind!r})``: see :func:`xaiutils.attribution.noise.smoothgrad`."
    return wrapped


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
]

METHODS: dict[str, Method] = {m.name: m for m in _ENTRIES}

__all__ = ["METHODS", "Method", *(name for name in METHODS if name in globals()), "smoothgrad"]
