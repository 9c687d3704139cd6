"""AttnLRP and CP-LRP as the authors' library ``lxt`` computes them, to check :func:`~xaiutils.attribution.lrp`
against (chapter 15's "In practice", ``tests/test_attnlrp.py``, ``benchmarks/transformer_speed.py``).

``lxt`` (``achtibat2024attnlrp``) is a test and book dependency, not a dependency of ``xaiutils``: this module
imports it only when called. Its "efficient" mode patches the forward functions of ``nn.GELU``,
``nn.LayerNorm`` and ``nn.MultiheadAttention`` so that gradient x input is the relevance. The package's
``lxt.efficient.__init__`` imports every ``transformers`` model it can patch; its rules and its patch of
torchvision's ViT need only torch, so :func:`lxt_efficient` loads those modules without that
``__init__``. Everything it changes (``sys.modules``, the patched classes) is put back on exit.
"""
from __future__ import annotations

import importlib
import os
import sys
import types
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..core.checks import check_choice
from ..core.targets import Target, select

PATCHED = (nn.GELU, nn.LayerNorm, nn.MultiheadAttention)
_MODULES = ("lxt.efficient", "lxt.efficient.models", "lxt.efficient.rules", "lxt.efficient.patches",
            "lxt.efficient.models.vit_torch")


@contextmanager
def classes_restored() -> Iterator[None]:
    """Inside the block lxt may patch ``nn.GELU``, ``nn.LayerNorm`` and ``nn.MultiheadAttention``; on exit,
    also on error, their own forward functions are back."""
    forwards = {cls: cls.__dict__["forward"] for cls in PATCHED}
    try:
        yield
    finally:
        for cls, forward in forwards.items():
            cls.forward = forward
            if "original_forward" in cls.__dict__:
                delattr(cls, "original_forward")


@contextmanager
def lxt_efficient() -> Iterator[tuple[types.ModuleType, types.ModuleType]]:
    """``(lxt.efficient.patches, lxt.efficient.models.vit_torch)``, loaded without ``lxt.efficient``'s
    ``__init__``; ``sys.modules`` and the classes lxt patches are restored on exit.

    Raises ``ImportError`` (with the install line) when lxt is not installed.
    """
    try:
        import lxt
    except ImportError as error:
        raise ImportError("lxt is not installed: pip install --no-deps lxt==2.1 (its transformers models are not "
                          "needed)") from error
    base = os.path.join(os.path.dirname(lxt.__file__), "efficient")
    saved = {name: sys.modules.get(name) for name in _MODULES}
    try:
        for name, path in (("lxt.efficient", base), ("lxt.efficient.models", os.path.join(base, "models"))):
            shell = types.ModuleType(name)
            shell.__path__ = [path]
            sys.modules[name] = shell
        with classes_restored():
            yield (importlib.import_module("lxt.efficient.patches"),
                   importlib.import_module("lxt.efficient.models.vit_torch"))
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def lxt_vit_relevance(model: nn.Module, x: torch.Tensor, target: Target, kind: str = "attn_lrp") -> torch.Tensor:
    """lxt's relevance of ``x`` for a torchvision ``VisionTransformer``: its CP-LRP patch of the ViT
    (``kind="cp_lrp"``), or its LayerNorm and GELU patches with its AttnLRP attention wrapper
    (``"attn_lrp"``), then gradient x input, as lxt's documentation uses it. The model's classes are
    restored afterwards; the model's parameters are not touched."""
    check_choice(kind, "kind", ("attn_lrp", "cp_lrp"))
    with lxt_efficient() as (patches, vit_torch), classes_restored():
        if kind == "cp_lrp":
            for cls, patch in vit_torch.cp_LRP.items():
                patch(cls)
        else:
            for cls in (nn.GELU, nn.LayerNorm):
                vit_torch.cp_LRP[cls](cls)
            nn.MultiheadAttention.forward = patches.wrap_attention_forward(nn.MultiheadAttention.forward)
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(select(model(x), target).sum(), x)
        return (grad * x).detach()
