"""Exact maximum-flip computations for **linear** multi-label models ``h(x) = W x + b``.

Notation (SPEC-related-methods §1.2): labels ``y_j ∈ {±1}`` (by default the clean prediction), ``v_j = y_j w_j``,
margins ``μ_j = y_j h_j(x)`` in decision-score units (logit minus ``logit(threshold)``). Flipping every label of a
set ``T`` needs ``v_jᵀ r <= -(μ_j + κ)`` for ``j ∈ T`` (``κ`` keeps the flips clear of rounding noise).

* :func:`min_norm_linear`: the exact minimum-norm perturbation that flips a label set. L2: a least-distance
  program ``min ‖r‖₂ s.t. G r >= h`` solved exactly by the Lawson-Hanson reduction to one NNLS problem
  (``scipy.optimize.nnls``; it needs no Cholesky and detects infeasible sets, e.g. two labels with opposite
  weight vectors); L-inf: a linear program (``scipy.optimize.linprog``, HiGHS). Optional input bounds add box
  constraints on ``x + r``.
* :func:`milp_max_flips`: the exact maximum number of flips within an L-inf ball, as a mixed-integer LP solved
  by HiGHS (``scipy.optimize.milp``): binaries ``z_j`` switch the flip constraint of label ``j`` on, with the
  big-M ``M_j = μ_j + κ + ε‖v_j‖₁`` (valid: ``|v_jᵀ r| <= ε‖v_j‖₁`` in the ball).
* :func:`enumerate_max_flips`: the exact maximum by exhaustive enumeration over label sets with Apriori pruning
  (the min-norm cost is monotone in the set, so a set is checked only when all its subsets are feasible). Any
  norm; exponential in ``m`` and meant for validation on small problems (``m <= 16``).

These are the references against which GASE (:mod:`labelflip.estimators.gase`, a reconstruction) and any attack
can be measured: an attack's flips at budget ``ε`` can never exceed :func:`milp_max_flips` (L-inf) or
:func:`enumerate_max_flips`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp, nnls

from labelflip._validation import fail

__all__ = ["ExactFlips", "enumerate_max_flips", "flipped_labels", "milp_max_flips", "min_norm_linear", "perturb_norm"]


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence the C-level stdout for a moment: HiGHS prints a stray debug line
    ("HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();", ERGO-Code/HiGHS#2783) when it
    repairs an incumbent, even with output off."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def perturb_norm(r: np.ndarray, norm: str) -> float:
    """``‖r‖₂`` or ``‖r‖_∞`` of a flat perturbation."""
    return float(np.linalg.norm(r) if norm == "l2" else np.abs(r).max(initial=0.0))


def flipped_labels(v: np.ndarray, mu: np.ndarray, r: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bool ``(m,)``: labels whose prediction at ``x + r`` differs from ``y`` (``y_j h_j = μ_j + v_jᵀ r``).

    A label with ``y = +1`` is flipped when ``h <= 0``; one with ``y = -1`` when ``h > 0`` (strict threshold)."""
    margin = mu + v @ r
    return np.where(y > 0, margin <= 0, margin < 0)


def _ldp(g: np.ndarray, h: np.ndarray) -> np.ndarray | None:
    """``argmin ‖r‖₂ s.t. g r >= h`` (Lawson & Hanson, *Solving Least Squares Problems*, ch. 23): with
    ``E = [gᵀ; hᵀ]`` and ``f = e_{d+1}``, ``u = nnls(E, f)``; the residual ``ρ = E u - f`` is zero iff the system is
    infeasible, else ``r = -ρ[:d] / ρ[d]``."""
    d = g.shape[1]
    e = np.vstack([g.T, h[None, :]])
    f = np.zeros(d + 1)
    f[d] = 1.0
    u, _ = nnls(e, f, maxiter=50 * max(e.shape))
    rho = e @ u - f
    if np.linalg.norm(rho) < 1e-10 or rho[d] > -1e-12:
        return None
    return -rho[:d] / rho[d]


def min_norm_linear(
    v: np.ndarray,
    mu: np.ndarray,
    *,
    norm: str = "l2",
    kappa: float = 1e-4,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> np.ndarray | None:
    """The minimum-norm ``r`` with ``v_jᵀ r <= -(μ_j + κ)`` for every row ``j``, or ``None`` if none exists.

    Args:
        v: ``(k, d)`` rows ``y_j w_j`` of the labels to flip. mu: ``(k,)`` their margins ``y_j h_j(x)``.
        norm: ``"l2"`` (exact LDP via NNLS) or ``"linf"`` (exact LP via HiGHS).
        kappa: the flip margin (decision-score units).
        lower, upper: optional ``(d,)`` bounds on ``r`` (``bounds - x``: the input box).

    Returns:
        float64 ``(d,)`` perturbation, or ``None`` when the set cannot be flipped (inconsistent constraints).
    """
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    need = -(np.asarray(mu, dtype=np.float64) + kappa)  # v r <= need
    d = v.shape[1]
    if v.shape[0] == 0 or ((need >= 0).all() and _in_box(np.zeros(d), lower, upper)):
        return np.zeros(d)
    if norm == "l2":
        g, h = -v, -need
        if lower is not None:
            g, h = np.vstack([g, np.eye(d)]), np.concatenate([h, lower])
        if upper is not None:
            g, h = np.vstack([g, -np.eye(d)]), np.concatenate([h, -upper])
        r = _ldp(g, h)
        slack = max(kappa / 2, 1e-9 * (1.0 + float(np.abs(need).max())))
        if r is None or (v @ r - need).max() > slack:  # not feasible to within rounding
            return None
        return r
    if norm != "linf":
        raise fail("min_norm_linear", "norm", "'l2' or 'linf'", norm)
    # variables (r, t): min t s.t. v r <= need, r - t <= 0, -r - t <= 0
    c = np.zeros(d + 1)
    c[d] = 1.0
    eye = np.eye(d)
    a_ub = np.vstack(
        [
            np.hstack([v, np.zeros((v.shape[0], 1))]),
            np.hstack([eye, -np.ones((d, 1))]),
            np.hstack([-eye, -np.ones((d, 1))]),
        ]
    )
    b_ub = np.concatenate([need, np.zeros(2 * d)])
    lo = np.full(d, -np.inf) if lower is None else lower
    hi = np.full(d, np.inf) if upper is None else upper
    bounds = [*zip(lo, hi, strict=True), (0, None)]
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    return res.x[:d] if res.status == 0 else None


def _in_box(r: np.ndarray, lower: np.ndarray | None, upper: np.ndarray | None) -> bool:
    return (lower is None or bool((r >= lower - 1e-12).all())) and (upper is None or bool((r <= upper + 1e-12).all()))


@dataclass
class ExactFlips:
    """The exact maximum of one sample: ``count`` labels flipped by ``perturbation`` (``norm`` <= eps);
    ``subset`` the flipped label indices; ``oracle_calls`` min-norm problems solved (enumeration) or 1 (MILP)."""

    count: int
    subset: tuple[int, ...]
    perturbation: np.ndarray
    oracle_calls: int


def enumerate_max_flips(
    v: np.ndarray,
    mu: np.ndarray,
    y: np.ndarray,
    eps: float,
    *,
    norm: str = "l2",
    kappa: float = 1e-4,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    max_labels: int = 16,
) -> ExactFlips:
    """The exact maximum number of labels flippable within ``‖r‖ <= eps`` by exhaustive enumeration.

    Level ``k`` holds every feasible label set of size ``k`` (min-norm cost <= eps); candidates of size ``k+1``
    are Apriori joins of two feasible ``k``-sets whose every ``k``-subset is feasible (the cost is monotone, so
    nothing feasible is skipped). Exponential in ``m``: refused above ``max_labels``.

    Args:
        v: ``(m, d)`` rows ``y_j w_j``. mu: ``(m,)`` margins. y: ``(m,)`` labels in ``{±1}``. eps: the budget.
        norm, kappa, lower, upper: as :func:`min_norm_linear`.
    """
    m = v.shape[0]
    if m > max_labels:
        raise fail(
            "enumerate_max_flips",
            "v",
            f"at most max_labels = {max_labels} labels",
            m,
            "restrict the problem to a label subset (labels=...) or use GASE / milp_max_flips.",
        )
    tol = eps * (1 + 1e-9) + 1e-12
    calls = 0

    def feasible(subset: tuple[int, ...]) -> np.ndarray | None:
        nonlocal calls
        calls += 1
        r = min_norm_linear(v[list(subset)], mu[list(subset)], norm=norm, kappa=kappa, lower=lower, upper=upper)
        return r if r is not None and perturb_norm(r, norm) <= tol else None

    best: tuple[tuple[int, ...], np.ndarray] = ((), np.zeros(v.shape[1]))
    level: dict[tuple[int, ...], np.ndarray] = {}
    for j in range(m):
        r = feasible((j,))
        if r is not None:
            level[(j,)] = r
    while level:
        best = max(level.items(), key=lambda kv: -perturb_norm(kv[1], norm))  # the cheapest of the largest size
        keys = sorted(level)
        nxt: dict[tuple[int, ...], np.ndarray] = {}
        for a, b in itertools.combinations(keys, 2):
            if a[:-1] != b[:-1]:
                continue
            cand = (*a, b[-1])
            if all(sub in level for sub in itertools.combinations(cand, len(cand) - 1)):
                r = feasible(cand)
                if r is not None:
                    nxt[cand] = r
        level = nxt
    r = best[1]
    flipped = flipped_labels(v, mu, r, y)
    subset = tuple(int(j) for j in np.flatnonzero(flipped))
    return ExactFlips(max(len(best[0]), len(subset)), subset, r, calls)


def milp_max_flips(
    v: np.ndarray,
    mu: np.ndarray,
    y: np.ndarray,
    eps: float,
    *,
    kappa: float = 1e-4,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    time_limit: float | None = None,
) -> ExactFlips:
    """The exact maximum number of flips within the L-inf ball ``‖r‖_∞ <= eps``: a MILP solved by HiGHS.

    ``max Σ z_j`` over ``r ∈ [-eps, eps]^d`` (intersected with ``[lower, upper]``) and ``z ∈ {0,1}^m`` subject to
    ``v_jᵀ r + M_j z_j <= M_j - μ_j - κ`` (``z_j = 1`` forces the flip), ``M_j = max(μ_j + κ + eps ‖v_j‖₁, 0)``.

    Args: as :func:`enumerate_max_flips`; ``time_limit`` in seconds (``None``: none; then the optimum is proven).
    """
    m, d = v.shape
    big = np.maximum(mu + kappa + eps * np.abs(v).sum(axis=1), 0.0) + 1e-9
    c = np.concatenate([np.zeros(d), -np.ones(m)])
    a = np.hstack([v, np.diag(big)])
    constraint = LinearConstraint(a, -np.inf, big - mu - kappa)
    lo = np.full(d, -eps) if lower is None else np.maximum(lower, -eps)
    hi = np.full(d, eps) if upper is None else np.minimum(upper, eps)
    bounds = Bounds(np.concatenate([lo, np.zeros(m)]), np.concatenate([hi, np.ones(m)]))
    integrality = np.concatenate([np.zeros(d), np.ones(m)])
    options: dict[str, Any] = {} if time_limit is None else {"time_limit": float(time_limit)}
    with _quiet_stdout():
        res = milp(c, constraints=constraint, integrality=integrality, bounds=bounds, options=options)
    if res.x is None:
        raise fail("milp_max_flips", "problem", "solvable by HiGHS", res.message, "check the inputs for NaN/inf.")
    r = res.x[:d]
    flipped = flipped_labels(v, mu, r, y)
    return ExactFlips(int(flipped.sum()), tuple(int(j) for j in np.flatnonzero(flipped)), r, 1)
