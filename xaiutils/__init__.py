"""xaiutils: gradient-based attribution methods and the checks that judge them.

The library of the book *Robust Explainability* (after ``nielsen2022robust``). Every method has
the signature ``method(model, x, target, **options) -> Tensor`` and is listed in
:data:`METHODS`, or, if it needs a transformer or token ids, in :data:`TRANSFORMER_METHODS`.
"""
__version__ = "0.1.0"

from .attribution import METHODS, TRANSFORMER_METHODS  # noqa: E402

__all__ = ["METHODS", "TRANSFORMER_METHODS", "__version__", "versions"]


def versions(packages=("torch", "torchvision", "numpy", "scipy", "matplotlib", "scikit-image")) -> str:
    """One line naming the versions this code runs with, for the footer of every chapter."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = [f"xaiutils {__version__}", f"Python {platform.python_version()}"]
    for name in packages:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return "Executed with " + ", ".join(found) + "."
