"""xaiutils: gradient-based attribution methods and the checks that judge them.

The library of the book *Robust Explainability* (after ``nielsen2022robust``). Every method has
the signature ``method(model, x, target, **options) -> Tensor`` and is listed in
:data:`METHODS`.
"""
__version__ = "0.1.0"

from .attribution import METHODS  # noqa: E402

__all__ = ["METHODS", "__version__"]
