"""``E(eps)``: a model's expected mean flips at budget ``eps`` (seed §V-C), the one place it is evaluated.

:class:`FlipEstimate` is the protocol SLAM (its BCE/Linear mix ``p``), CLASS and random subsets (their subset
length ``k``) read: anything with ``eps_max`` and ``estimate(eps)``. A measured
:class:`labelflip.analysis.Profile` satisfies it; :class:`PolynomialEstimate` is the bare polynomial (from
published coefficients, say). This module is a leaf (it imports nothing of labelflip) because the losses, which
sit upstream of the analyses, need the type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["FlipEstimate", "PolynomialEstimate", "polynomial_estimate"]


@runtime_checkable
class FlipEstimate(Protocol):
    """What SLAM and the subset attacks need of a flip profile.

    Attributes:
        eps_max: the budget (pixel units) from which flips saturate; SLAM uses ``p = 1`` from there on.
    """

    eps_max: float

    def estimate(self, eps: float | Sequence[float] | np.ndarray) -> float | np.ndarray:
        """Estimated mean flips at ``eps`` (unclipped: callers clip to ``[0, K]``)."""
        ...


def polynomial_estimate(coefficients: Sequence[float] | np.ndarray, eps: float | Sequence[float] | np.ndarray):
    """``E(eps) = sum_k c_k eps^k`` with coefficients in **increasing** degree (``polyval``); float or array."""
    val = np.polynomial.polynomial.polyval(np.asarray(eps, dtype=np.float64), np.asarray(coefficients, np.float64))
    return float(val) if np.ndim(val) == 0 else val


@dataclass(frozen=True)
class PolynomialEstimate:
    """A :class:`FlipEstimate` from polynomial coefficients (increasing degree) and ``eps_max``."""

    coefficients: tuple[float, ...]
    eps_max: float

    def estimate(self, eps: float | Sequence[float] | np.ndarray) -> float | np.ndarray:
        return polynomial_estimate(self.coefficients, eps)
