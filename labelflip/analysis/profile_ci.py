"""Sampling uncertainty of a flip profile's ``eps_max``: a percentile bootstrap over the probe images.

``eps_max`` is where the profile's stopping rule first fires on the probe's **mean** flip curve (SPEC.md "Flip
profile"; :func:`~labelflip.analysis.profile.stopping_rule`), so it depends on which images were probed. The probe
records every image's flip count at every probe point (for the BCE and, with ``curve="max"``, the Linear
trajectory); a bootstrap resample draws ``N`` of the ``N`` probe images with replacement, rebuilds the fitted
curve ``max(mean BCE, mean Linear)`` from the resampled counts, applies the same stopping rule and reads off that
resample's ``eps_max``. The interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
resampled values (linear interpolation, ``numpy.quantile``).

What it does and does not say (asl-cnn, measured): the interval is the spread of ``eps_max`` over probe draws of
**this size**. ``eps_max`` also grows with the probe size: the mean curve of ``N`` images moves in steps of
``1 / N`` flips, so with few images an interval in which no image gains a flip (increment 0 < 1 % of the first)
comes sooner. Resamples, with about 63 % distinct images, are coarser still, so resampled ``eps_max`` rarely lies
above the probe's own and the interval's upper end is often ``eps_max`` itself. A larger probe is the remedy for
both; the interval is reported with the probe size for that reason.

A resample whose rule does not fire within the measured points (possible when the probe stopped at its cap) is
counted at the last measured eps and reported as censored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labelflip._validation import check_float, check_int, fail

__all__ = ["BOOTSTRAP_RESAMPLES", "CI_LEVEL", "bootstrap_eps_max", "first_stop"]

BOOTSTRAP_RESAMPLES = 1000
"""Default number of bootstrap resamples of the probe images."""

CI_LEVEL = 0.95
"""Default confidence level of the ``eps_max`` interval."""

_OWNER = "bootstrap_eps_max"


def first_stop(curves: np.ndarray, *, rel_tol: float = 0.01) -> np.ndarray:
    """Index of the point at which :func:`~labelflip.analysis.profile.stopping_rule` first fires, per column.

    Vectorised form of the rule (same arithmetic): with increments ``d_j = f_j - f_(j-1)`` and ``d_ref`` the
    first positive increment, the first ``j`` at or after ``d_ref`` with ``d_j < 0`` (dip) or ``d_j / d_ref <
    rel_tol`` (converged).

    Args:
        curves: ``(P, R)`` mean flip curves, ``P`` probe points (``P[0]`` at eps 0), ``R`` curves.

    Returns:
        ``(R,)`` int64 point indices in ``[1, P)``, or ``-1`` where the rule never fires (censored).
    """
    f = np.asarray(curves, dtype=np.float64)
    if f.ndim != 2:
        raise fail("first_stop", "curves", "a (points, curves) array", f.shape)
    out = np.full(f.shape[1], -1, dtype=np.int64)
    if f.shape[0] < 2:
        return out
    d = np.diff(f, axis=0)  # (P - 1, R)
    pos = d > 0
    has_ref = pos.any(axis=0)
    ref_at = pos.argmax(axis=0)
    ref = np.where(has_ref, d[ref_at, np.arange(d.shape[1])], 1.0)
    after_ref = np.arange(d.shape[0])[:, None] >= ref_at[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        fires = after_ref & has_ref[None, :] & ((d < 0) | (d / ref[None, :] < rel_tol))
    any_fire = fires.any(axis=0)
    out[any_fire] = fires.argmax(axis=0)[any_fire] + 1
    return out


def bootstrap_eps_max(
    eps: Sequence[float],
    image_flips: Sequence[Sequence[Sequence[float]]],
    *,
    rel_tol: float = 0.01,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = 0,
) -> tuple[tuple[float, float], np.ndarray, float]:
    """Percentile-bootstrap interval of ``eps_max`` over the probe images.

    Args:
        eps: ``(P,)`` probe budgets, ``eps[0] = 0``.
        image_flips: one ``(P, N)`` array per measured trajectory (BCE, and Linear for ``curve="max"``): flips of
            image ``n`` at point ``p``. The fitted curve of a resample is the pointwise max of the trajectories'
            resampled means, as the probe's own.
        rel_tol: the stopping rule's tolerance (the profile's).
        resamples: bootstrap resamples ``R`` (>= 10).
        level: confidence level in ``(0, 1)``.
        seed: seed of the ``numpy.random.Generator`` drawing the resamples (no global RNG).

    Returns:
        ``((low, high), eps_star (R,), censored fraction)``.
    """
    resamples = check_int(_OWNER, "resamples", resamples, low=10)
    level = check_float(_OWNER, "level", level, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    e = np.asarray(eps, dtype=np.float64)
    mats = [np.asarray(m, dtype=np.float64) for m in image_flips]
    if not mats or any(m.ndim != 2 or m.shape != mats[0].shape or m.shape[0] != e.size for m in mats):
        shapes = [m.shape for m in mats]
        raise fail(_OWNER, "image_flips", f"one or two (points = {e.size}, images) arrays of one shape", shapes)
    n = mats[0].shape[1]
    if n < 1:
        raise fail(_OWNER, "image_flips", "at least one probe image", n)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    weights = np.zeros((resamples, n), dtype=np.float64)
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    curves = np.max(np.stack([m @ weights.T / n for m in mats]), axis=0)  # (P, R)
    stop = first_stop(curves, rel_tol=rel_tol)
    censored = stop < 0
    eps_star = e[np.where(censored, e.size - 1, stop)]
    tail = (1.0 - level) / 2
    low, high = np.quantile(eps_star, [tail, 1.0 - tail])
    return (float(low), float(high)), eps_star, float(censored.mean())
