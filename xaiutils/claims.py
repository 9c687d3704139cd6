"""Claims checked where the book makes them, and noise printed as what it is.

Every quantitative statement of a chapter ("the PGD model's gradients align better", "DeepLIFT is
complete") is followed by a cell that asserts it on the numbers just computed, with a margin that
holds on any machine::

    claims.check("DeepLIFT is complete: every gap is below 1e-5 of the output change",
                 gap.max() < 1e-5, largest_gap=gap.max())

prints ``✓ DeepLIFT is complete: ...`` and raises :class:`ClaimError` (an ``AssertionError``) with
the evidence when the claim stops holding, so `make notebooks` and `make test` fail on any machine.

A quantity that is zero up to rounding (a completeness gap in float64, an invariance difference,
the agreement with a reference library) has no portable digits: ``1.9e-16`` on one CPU is
``4.3e-16`` on the next. :func:`below` prints it as the bound it satisfies (``< 1e-12``), and
:func:`noise_format` does the same inside a pandas table.
"""
from __future__ import annotations

import math
from numbers import Real

import numpy as np

__all__ = ["ClaimError", "check", "below", "noise_format"]


class ClaimError(AssertionError):
    """A statement of the book that the numbers beside it no longer support."""


def _as_bool(value, name: str) -> bool:
    if hasattr(value, "shape") and hasattr(value, "item"):  # a tensor, an array or a numpy scalar
        if math.prod(value.shape) != 1:
            raise TypeError(f"{name} must be one truth value; got an array of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be a truth value (a bool, or a one-element tensor or array); "
                    f"got {value!r} of type {type(value).__name__}")


def check(claim: str, holds, **evidence) -> None:
    """Assert that ``claim`` holds, and print it with a check mark.

    Args:
        claim: the statement as the chapter makes it, in words a reader recognises.
        holds: whether the numbers support it (a bool, or a one-element tensor or array).
        **evidence: the numbers the claim rests on; shown only when it fails, so that the
            printed line stays the same on every machine.

    Raises:
        ClaimError: when ``holds`` is false, naming the claim and the evidence.
    """
    if not isinstance(claim, str) or not claim.strip():
        raise TypeError(f"claim must be a non-empty string; got {claim!r}")
    if not _as_bool(holds, "holds"):
        details = ", ".join(f"{key}={_short(value)}" for key, value in evidence.items())
        raise ClaimError(f"The claim no longer holds: {claim}" + (f" ({details})" if details else ""))
    print(f"✓ {claim}")


def _short(value) -> str:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return f"{value:.4g}"
    text = repr(value)
    return text if len(text) < 200 else text[:197] + "..."


def _largest_magnitude(value) -> float:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    try:
        values = np.abs(np.asarray(value, dtype=float))
    except (TypeError, ValueError):
        raise TypeError(f"value must be a number, a tensor, an array or a list of numbers; "
                        f"got {type(value).__name__}") from None
    if values.size == 0:
        raise ValueError("value must hold at least one number; got an empty sequence")
    return float(values.max())


def below(value, bound: float) -> str:
    """``"< {bound}"`` when every entry of ``value`` is smaller than ``bound`` in magnitude.

    For printing quantities that are zero up to rounding. When the bound does not hold, the
    largest magnitude is printed instead (``"3.2e-03 (not < 1e-06)"``), so that the stored output
    changes and the notebook test fails. NaN never satisfies a bound.

    Args:
        value: a number, tensor, array or sequence of numbers.
        bound: a positive number.
    """
    if isinstance(bound, bool) or not isinstance(bound, Real) or not 0 < bound < math.inf:
        raise ValueError(f"bound must be a positive finite number; got {bound!r}")
    largest = _largest_magnitude(value)
    if largest < bound:  # False for NaN
        return f"< {bound:.0e}"
    return f"{largest:.1e} (not < {bound:.0e})"


def noise_format(bound: float, spec: str = ".2e"):
    """A ``float_format`` for pandas: ``below(v, bound)`` for noise, ``format(v, spec)`` otherwise.

    ``table.to_string(float_format=noise_format(1e-6))`` prints a completeness gap of ``7.5e-08``
    as ``< 1e-06`` and a gap of ``0.12`` as ``1.20e-01``.
    """
    below(0.0, bound)  # validates the bound
    format(1.0, spec)  # validates the format specification

    def formatted(value) -> str:
        if not math.isnan(value) and abs(value) < bound:
            return f"< {bound:.0e}"
        return format(value, spec)

    return formatted
