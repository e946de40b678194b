"""Uniform, actionable input validation.

Every public entry point validates its arguments up front and raises :class:`LabelflipError` (a
``ValueError``) whose message names the owner and the parameter, says what was expected, what was got,
and how to fix it, in the style::

    The 'eps' parameter of MIFGSM must be a finite float >= 0. Got -1.0. Fix: pass a non-negative budget
    in pixel units, e.g. eps=8/255.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "LabelflipError",
    "LabelflipWarning",
    "check_choice",
    "check_float",
    "check_int",
    "fail",
]


class LabelflipError(ValueError):
    """Bad input to a labelflip call. The message names the parameter and the fix."""


class LabelflipWarning(UserWarning):
    """A suspicious but legal situation (dropout left on, probability outputs, zero gradients)."""


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail(owner: str, param: str, expected: str, got: Any, fix: str | None = None) -> LabelflipError:
    """Build (not raise) the uniform error: ``raise fail("MIFGSM", "eps", "a float >= 0", eps)``."""
    msg = f"The '{param}' parameter of {owner} must be {expected}. Got {_short(got)}."
    if fix:
        msg += f" Fix: {fix}"
    return LabelflipError(msg)


def check_float(
    owner: str,
    param: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    fix: str | None = None,
) -> float:
    """Validate a finite real number within optional bounds and return it as ``float``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value, ok = value.item(), True
    if ok:
        v = float(value)
        ok = math.isfinite(v)
        if ok and low is not None:
            ok = v >= low if low_inclusive else v > low
        if ok and high is not None:
            ok = v <= high if high_inclusive else v < high
    if not ok:
        parts = ["a finite float"]
        if low is not None:
            parts.append(f"{'>=' if low_inclusive else '>'} {low}")
        if high is not None:
            parts.append(f"{'<=' if high_inclusive else '<'} {high}")
        raise fail(owner, param, " ".join(parts), value, fix)
    return float(value)


def check_int(owner: str, param: str, value: Any, *, low: int | None = None, fix: str | None = None) -> int:
    """Validate an integer (bools refused) with an optional lower bound."""
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        expected = "an int" + (f" >= {low}" if low is not None else "")
        raise fail(owner, param, expected, value, fix)
    return int(value)


def check_choice(owner: str, param: str, value: Any, choices: Sequence[str]) -> str:
    """Validate a string option; unknown names get a 'did you mean' hint."""
    if isinstance(value, str) and value in choices:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, list(choices), n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    raise fail(owner, param, "one of " + ", ".join(repr(c) for c in choices), value, f"pick one.{hint}")


def did_you_mean(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""
