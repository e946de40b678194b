"""MLA-LP: the linear-programming multi-label attack (Zhou et al., IJCNN 2020; SPEC-related-methods §3.4,
SPEC-reference-code §9; seed App. J eq. 14-15), with SciPy's HiGHS instead of MOSEK.

Each outer iteration (published: 10) linearises the per-label BCE toward the target at ``x_k``::

    A_j = d BCE(f_j, t_j) / dx = (f_j - t_j) dz_j/dx,    Delta_j = BCE(tau_j, t_j) - BCE(f_j, t_j)
    min z  s.t.  A r <= Delta,  |r_i| <= z,  lo_i <= r_i <= hi_i      (lo = low - x_k, hi = high - x_k)
    x_k+1 = clip(x_k + r)

``tau_j``, the target confidence, starts at the threshold: labels to flip get ``Delta_j < 0``, labels on target
``Delta_j >= 0`` (they may lose ground up to it). Rows: the attacked labels, all-zero Jacobian rows dropped.
**Adaptive target** [R]: after a step, an attacked label still off target moves ``tau`` 0.05 toward its target
(``t = 0``: down to 0.1, ``t = 1``: up to 0.9).

**Solving** (exact, SPEC §3.4): for fixed z, ``phi(z) = min sum(s) s.t. A r - s <= Delta, s >= 0, max(lo, -z) <= r <=
min(hi, z)`` is convex, non-increasing and piecewise linear in z, and ``z* = min{z : phi(z) = 0}``. ``"bisect"``
bisects ``[z_lb, z_box]`` to relative accuracy ``rtol`` (``z_lb = max_j -Delta_j / ||A_j||_1``, each row alone;
``z_box``, the whole box, decides infeasibility). ``"secant"`` (default) jumps to the root of the secant through the
two latest infeasible points, a lower bound on ``z*`` by convexity, and probes just above it: exact once on the last
linear piece, typically 2-5 LPs instead of ~17. (The LP in one go, ``d + 1`` variables and ``m + 2d`` rows, is slow.)

**Infeasible** linearisations (some label cannot reach its target within the box): ``infeasible="drop"``
(default) drops the labels the least-violation solution at the box leaves violated and solves for the rest
(counted in ``result.extra["dropped_labels"]``); ``"stop"`` stops the sample (the published solver failure).

**Reduction** (``d > max_dim``, or ``block``/``topk`` given): ``block=k`` perturbs k x k blocks per channel (sum-pooled
Jacobian rows, the intersection of the pixels' boxes; d / k^2), ``topk=K`` only the K coordinates with the largest
``sum_j |A_ji|``; both give feasible (upper-bound) steps of the full problem. Auto: blocks for images, else top-K.
**L2** (``norm="l2"``): ``min ||r||_2`` under the same constraints, a QP solved exactly (:func:`min_l2_step`).
Samples are solved in ``workers`` processes; ``time_limit`` (per sample, all its solves) is passed to HiGHS; a
timeout or solver failure stops the sample, which keeps its best iterate.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linprog
from torch import Tensor, nn

from labelflip._registry import Param
from labelflip._validation import check_choice, check_float, check_int
from labelflip.attacks.base import Batch, MinimumNormAttack
from labelflip.attacks.baselines.ml_deepfool import (
    BestIterate,
    attacked_labels,
    label_jacobian,
    on_target,
    record_outcome,
)
from labelflip.attacks.registry import ATTACKS
from labelflip.models import MultiLabelModel

__all__ = ["MLALP", "StepSolution", "min_l2_step", "min_linf_step"]

_OWNER = "MLALP"
_TAU_STEP, _TAU_MIN, _TAU_MAX = 0.05, 0.1, 0.9


@dataclass
class StepSolution:
    """One sample's step: ``r`` ``(d,)`` (``None`` if nothing feasible was found), its norm ``z``, ``status``
    (``"optimal"``, ``"infeasible"``, ``"timeout"``, ``"solver_error"``), ``solves``, ``seconds``, and ``violated``:
    for an infeasible problem, the rows the least-violation solution at the box leaves violated."""

    r: np.ndarray | None
    z: float
    status: str
    solves: int = 0
    seconds: float = 0.0
    violated: np.ndarray | None = None
    dropped: int = 0


def min_linf_step(
    a: np.ndarray,
    delta: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    search: str = "secant",
    rtol: float = 1e-3,
    time_limit: float = math.inf,
    box_first: bool = False,
) -> StepSolution:
    """``min ||r||_inf  s.t.  a r <= delta,  lo <= r <= hi`` (``a`` ``(m, d)``, ``lo <= 0 <= hi``), exact to relative
    accuracy ``rtol``, by a ``"secant"`` or ``"bisect"`` search over feasibility LPs (module docstring).
    ``box_first`` probes the whole box first (bisection always does): cheaper when infeasibility is likely."""
    start = time.perf_counter()
    deadline = start + time_limit
    m, d = a.shape
    z_box = float(max(np.max(-lo, initial=0.0), np.max(hi, initial=0.0)))
    phi0 = float(np.clip(-delta, 0, None).sum())
    solves = 0

    def done(r: np.ndarray | None, z: float, status: str, violated: np.ndarray | None = None) -> StepSolution:
        z = z if r is not None else math.inf
        return StepSolution(r, z, status, solves, time.perf_counter() - start, violated)

    if m == 0 or phi0 == 0.0:
        return done(np.zeros(d), 0.0, "optimal")
    cost, a_ub, slack = np.r_[np.zeros(d), np.ones(m)], np.hstack([a, -np.eye(m)]), np.tile([0.0, np.inf], (m, 1))
    tol = 1e-9 * max(1.0, float(np.abs(delta).max()))

    def phi(z: float) -> tuple[float, np.ndarray | None, str]:
        nonlocal solves
        if time.perf_counter() >= deadline:
            return math.inf, None, "timeout"
        solves += 1
        opts = {"time_limit": max(deadline - time.perf_counter(), 1e-6)} if math.isfinite(time_limit) else {}
        bounds = np.r_[np.c_[np.maximum(lo, -z), np.minimum(hi, z)], slack]
        res = linprog(cost, A_ub=a_ub, b_ub=delta, bounds=bounds, method="highs", options={"presolve": False, **opts})
        if res.status != 0:  # the slack LP is always feasible: anything else is a solver problem (1: time limit)
            return math.inf, None, "timeout" if res.status == 1 else "solver_error"
        return float(res.fun), res.x, "optimal"

    with np.errstate(divide="ignore"):
        z_lb = float(np.max(np.where(delta < 0, -delta / np.abs(a).sum(axis=1), 0.0)))
    z_lo, z_hi, r_hi = min(z_lb, z_box), z_box, None
    left = [(0.0, phi0)]  # infeasible points (z, phi(z)) for the secant
    z = z_box if search == "bisect" or box_first else z_lo
    for _ in range(200):
        val, sol, status = phi(z)
        if status != "optimal" or sol is None:
            return done(r_hi, z_hi, status)
        if val <= tol:
            z_hi, r_hi = z, sol[:d]
        elif z >= z_box:
            return done(None, 0.0, "infeasible", np.flatnonzero(sol[d:] > tol))
        else:
            z_lo = max(z_lo, z)
            left.append((z, val))
        if r_hi is not None and z_hi - z_lo <= rtol * z_hi:
            return done(r_hi, z_hi, "optimal")
        (za, pa), (zb, pb) = left[-2:] if len(left) > 1 else (left[-1], left[-1])
        if search == "secant" and len(left) == 1:  # the box was probed first: the row-wise lower bound next
            z = z_lo
        elif search == "secant" and pa > pb:
            # the secant of a convex non-increasing function through two points left of z* stays below it, so its
            # root is a lower bound on z*: probe just above it
            z_lo = max(z_lo, min(zb + pb * (zb - za) / (pa - pb), z_hi))
            z = z_lo * (1 + rtol / 2)
            if z >= z_hi:
                z = z_hi if r_hi is None else (z_lo + z_hi) / 2
        else:  # phi stopped decreasing (convex: flat from here on) or bisection: the box, or halve
            z = z_hi if r_hi is None else (z_lo + z_hi) / 2
    return done(r_hi, z_hi, "solver_error")  # pragma: no cover - the search ends long before


def min_l2_step(
    a: np.ndarray, delta: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, time_limit: float = math.inf
) -> StepSolution:
    """``min ||r||_2  s.t.  a r <= delta, lo <= r <= hi``: feasibility certified by one LP at the box, then the concave
    dual over ``lam >= 0`` (``r(lam) = clip(-a^T lam, lo, hi)``) maximised exactly by projected Newton steps."""
    start = time.perf_counter()
    m, d = a.shape
    if m == 0 or np.all(delta >= 0):
        return StepSolution(np.zeros(d), 0.0, "optimal", 0, time.perf_counter() - start)
    check = min_linf_step(a, delta, lo, hi, search="bisect", rtol=math.inf, time_limit=time_limit)
    if check.status != "optimal":
        return check
    tol = 1e-10 * max(1.0, float(np.abs(delta).max()))

    def primal(lam: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        u = -(a.T @ lam)
        r = np.clip(u, lo, hi)
        return r, (u > lo) & (u < hi), 0.5 * float(r @ r) + float(lam @ (a @ r - delta))

    lam = np.zeros(m)
    r, free, val = primal(lam)
    for _ in range(200):
        g = a @ r - delta
        if np.max(np.abs(np.where(lam > 0, g, np.maximum(g, 0.0)))) <= tol or time.perf_counter() - start > time_limit:
            break
        s = (lam > 0) | (g > 0)  # the multipliers that may move
        af = a[s][:, free]
        h = np.einsum("id,jd->ij", af, af)  # no BLAS: OpenBLAS threads spin badly on small products
        step = np.zeros(m)
        step[s] = np.linalg.solve(h + (1e-12 * (np.trace(h) + 1.0)) * np.eye(len(h)), g[s])
        t = 1.0
        while True:  # projected Armijo backtracking (q is concave)
            cand = np.maximum(lam + t * step, 0.0)
            r_c, free_c, val_c = primal(cand)
            if val_c >= val + 1e-4 * float(g @ (cand - lam)) or t < 1e-12:
                break
            t /= 2
        lam, r, free, val = cand, r_c, free_c, val_c
    seconds = time.perf_counter() - start
    if float(np.max(a @ r - delta)) <= 1e-6 * max(1.0, float(np.abs(delta).max())):
        return StepSolution(r, float(np.linalg.norm(r)), "optimal", check.solves, seconds)
    status = "timeout" if seconds > time_limit else "optimal"  # not converged: the feasible L-inf step instead
    return StepSolution(check.r, float(np.linalg.norm(check.r)), status, check.solves, seconds)


def _solve_task(job: tuple[Any, ...]) -> StepSolution:
    """One sample's step (in a worker process). ``drop``: rows no step in the box satisfies alone are dropped, then,
    if the rest is infeasible, the rows its least-violation solution violates."""
    norm, a, delta, lo, hi, search, rtol, time_limit, drop = job
    start, dropped, solves = time.perf_counter(), 0, 0
    if drop:
        alone = np.minimum(a * lo, a * hi).sum(axis=1) > delta  # min over the box of a_j r exceeds delta_j
        a, delta, dropped = a[~alone], delta[~alone], int(alone.sum())
    for retry in (False, True):
        left = time_limit - (time.perf_counter() - start)
        if left <= 0:
            sol = StepSolution(None, math.inf, "timeout")
        elif norm == "l2":
            sol = min_l2_step(a, delta, lo, hi, time_limit=left)
        else:  # in drop mode, certify the box first; after dropping, the rest is known feasible there
            sol = min_linf_step(
                a, delta, lo, hi, search=search, rtol=rtol, time_limit=left, box_first=drop and not retry
            )
        solves += sol.solves
        if retry or not (drop and sol.status == "infeasible" and sol.violated is not None and sol.violated.size):
            break
        keep = np.setdiff1d(np.arange(a.shape[0]), sol.violated)
        a, delta, dropped = a[keep], delta[keep], dropped + int(sol.violated.size)
    sol.solves, sol.seconds, sol.dropped = solves, time.perf_counter() - start, dropped
    return sol


def _reduction(shape: tuple[int, ...], block: int, topk: int, max_dim: int) -> tuple[int, int]:
    """``(block, topk)`` for per-sample inputs of ``shape``: as given, or automatic above ``max_dim``."""
    if block > 1 or topk > 0 or math.prod(shape) <= max_dim:
        return block, topk
    if len(shape) != 3:
        return 0, max_dim
    c, h, w = shape
    k = 2
    while c * math.ceil(h / k) * math.ceil(w / k) > max_dim:
        k += 1
    return k, 0


def _pool(v: Tensor, k: int, pad: float, op: str) -> Tensor:
    """k x k block sums / maxima / minima over the last two dims (padding with ``pad``)."""
    v = F.pad(v, (0, (-v.shape[-1]) % k, 0, (-v.shape[-2]) % k), value=pad)
    v = v.reshape(*v.shape[:-2], v.shape[-2] // k, k, v.shape[-1] // k, k)
    return getattr(v, op)(dim=(-3, -1))


@ATTACKS.register(
    "mla-lp",
    params=[
        Param("steps", int, 10, "outer iterations (published: 10)", low=1),
        Param("workers", int, 1, "processes solving different samples' problems in parallel (1: inline)", low=1),
        Param("time_limit", float, 600.0, "seconds per sample over all its solves (passed to HiGHS)", low=0.0),
        Param("search", str, "secant", "how z is found: secant or bisect"),
        Param("rtol", float, 1e-3, "relative accuracy of z", low=0.0),
        Param("infeasible", str, "drop", "an infeasible step: drop the violated labels, or stop (published)"),
        Param("block", int, 0, "perturb k x k pixel blocks (0: automatic above max_dim)", low=0),
        Param("topk", int, 0, "perturb only the K most influential coordinates (0: off)", low=0),
        Param("max_dim", int, 20000, "largest LP dimension before the automatic reduction", low=1),
    ],
    label="MLA-LP",
    description="MLA-LP: minimum-L-inf steps under linearised per-label BCE constraints, by LP (SciPy HiGHS)",
)
class MLALP(MinimumNormAttack):
    """MLA-LP, a minimum-norm attack (module docstring): ``MLALP(model, workers=2)(x, eps=[0.01, 1.0])``.

    Args: ``steps`` outer iterations (published 10); ``workers`` processes solving different samples' problems
    (``1``: in this process); ``time_limit`` seconds per sample over all its solves (then ``"timeout"``);
    ``search`` (``"secant"``/``"bisect"``) and ``rtol``, the accuracy of z; ``infeasible`` (``"drop"``/``"stop"``);
    ``block``, ``topk``, ``max_dim``: the reduction; ``norm``: ``"linf"`` (LP) or ``"l2"`` (QP step); ``batch_size``,
    ``return_adv``: see :class:`~labelflip.attacks.Attack`.

    ``result.extra``: per-sample ``status``, ``stop_reason``, ``labels_on_target``, ``iterations``, ``solves``,
    ``solver_s``, ``dropped_labels``; ``reduction`` = ``(block, topk)`` used.
    """

    def __init__(
        self,
        model: nn.Module | MultiLabelModel,
        *,
        steps: int = 10,
        workers: int = 1,
        time_limit: float = 600.0,
        search: str = "secant",
        rtol: float = 1e-3,
        infeasible: str = "drop",
        block: int = 0,
        topk: int = 0,
        max_dim: int = 20000,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.steps = check_int(_OWNER, "steps", steps, low=1)
        self.workers = check_int(_OWNER, "workers", workers, low=1)
        self.time_limit = check_float(_OWNER, "time_limit", time_limit, low=0.0, low_inclusive=False)
        self.search = check_choice(_OWNER, "search", search, ("secant", "bisect"))
        self.rtol = check_float(_OWNER, "rtol", rtol, low=0.0, low_inclusive=False)
        self.infeasible = check_choice(_OWNER, "infeasible", infeasible, ("drop", "stop"))
        self.block, self.topk = check_int(_OWNER, "block", block, low=0), check_int(_OWNER, "topk", topk, low=0)
        self.max_dim = check_int(_OWNER, "max_dim", max_dim, low=1)

    def __repr__(self) -> str:
        return (
            f"MLALP(steps={self.steps}, search={self.search!r}, rtol={self.rtol:g}, infeasible={self.infeasible!r}, "
            f"block={self.block}, topk={self.topk}, norm={self.norm!r})"
        )

    def run(self, batch: Batch) -> Tensor:
        if self.workers == 1:
            return self._run(batch, map)
        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return self._run(batch, pool.map)

    @staticmethod
    def _reduce(a: Tensor, lo: Tensor, hi: Tensor, block: int, topk: int) -> tuple[Tensor, ...]:
        """Rows ``(n, m, *shape)`` and box ``(n, *shape)`` -> flat reduced ``(a, lo, hi, index or None)``."""
        n, m = a.shape[:2]
        if block > 1:
            a = _pool(a, block, 0.0, "sum")
            lo, hi = _pool(lo, block, -math.inf, "amax"), _pool(hi, block, math.inf, "amin")
        a, lo, hi = a.reshape(n, m, -1), lo.reshape(n, -1), hi.reshape(n, -1)
        if not 0 < topk < a.shape[2]:
            return a, lo, hi, None
        index = a.abs().sum(dim=1).topk(topk, dim=1).indices.sort(dim=1).values
        return a.gather(2, index.unsqueeze(1).expand(n, m, topk)), lo.gather(1, index), hi.gather(1, index), index

    @staticmethod
    def _expand(r: Tensor, shape: tuple[int, ...], block: int, index: Tensor | None) -> Tensor:
        """Reduced steps ``(n, d')`` back to ``(n, *shape)``."""
        n = r.shape[0]
        grid = (shape[0], math.ceil(shape[1] / block), math.ceil(shape[2] / block)) if block > 1 else shape
        if index is not None:
            r = torch.zeros(n, math.prod(grid), dtype=r.dtype).scatter(1, index.cpu(), r)
        r = r.view(n, *grid)
        if block > 1:
            r = r.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)[:, :, : shape[1], : shape[2]]
        return r

    def _run(self, batch: Batch, mapper: Callable[..., Any]) -> Tensor:
        model, x0 = self.model, batch.x
        n, k = batch.clean_pred.shape
        shape = tuple(x0.shape[1:])
        low, high = model.bounds
        block, topk = _reduction(shape, self.block, self.topk, self.max_dim)
        batch.info["reduction"] = (block, topk)
        mask, t = attacked_labels(batch), batch.target.to(torch.float64)
        needed, clean_score = mask.sum(dim=1), on_target(batch.clean_pred, batch, mask)
        tau = model.threshold.to(device=x0.device, dtype=torch.float64).expand(n, k).clone()
        best = BestIterate.start(x0, clean_score, self.norm)
        xk, active = x0.clone(), clean_score < needed
        reasons = ["max_iterations" if a else "on_target" for a in active.tolist()]
        iterations, solves, dropped = (torch.zeros(n, dtype=torch.int64) for _ in range(3))
        spent = np.zeros(n)

        def track(idx: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None, Tensor]:
            """Forward (and Jacobian) at ``xk[idx]``, keeping the best iterate; returns ``(z, jac, hit)``."""
            if jacobian:
                z, jac = label_jacobian(model, xk[idx])
            else:
                with torch.no_grad():
                    z, jac = model(xk[idx]), None
            hit = model.predict_from_probabilities(torch.sigmoid(z)) == batch.target[idx].bool()
            score = (hit & mask[idx]).sum(dim=1)
            best.update(idx, xk[idx], x0[idx], score)
            for i in idx[score == needed[idx]].tolist():
                reasons[i] = "on_target"
            return z, jac, hit

        moved = torch.zeros(n, dtype=torch.bool, device=x0.device)  # stopped after a step not yet evaluated
        for it in range(self.steps + 1):
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            z, jac, hit = track(idx, jacobian=it < self.steps)
            off = mask[idx] & ~hit
            if it > 0:  # adaptive target confidence
                up, ti = tau[idx], t[idx]
                up = torch.where(off & (ti > 0.5), (up + _TAU_STEP).clamp(max=_TAU_MAX), up)
                tau[idx] = torch.where(off & (ti <= 0.5), (up - _TAU_STEP).clamp(min=_TAU_MIN), up)
            done = ~off.any(dim=1)
            active[idx[done]] = False
            if jac is None or bool(done.all()):
                break
            idx, z, jac = idx[~done], z[~done].double(), jac[~done].double()
            ti, xd = t[idx], xk[idx].double()
            loss = ti * F.softplus(-z) + (1 - ti) * F.softplus(z)  # per-label BCE toward the target (logits)
            rhs = -(ti * torch.log(tau[idx]) + (1 - ti) * torch.log1p(-tau[idx])) - loss
            a = (torch.sigmoid(z) - ti).view(*z.shape, *(1,) * len(shape)) * jac  # (n', K, *shape)
            rows = (mask[idx] & (a.flatten(2).abs().amax(dim=2) > 0)).cpu().numpy()
            a_red, lo, hi, index = self._reduce(a, low - xd, high - xd, block, topk)
            a_red, lo, hi, rhs = a_red.cpu().numpy(), lo.cpu().numpy(), hi.cpu().numpy(), rhs.cpu().numpy()
            drop = self.infeasible == "drop"
            jobs = [
                (self.norm, a_red[j][rows[j]], rhs[j][rows[j]], lo[j], hi[j], self.search, self.rtol,
                 self.time_limit - spent[i], drop)
                for j, i in enumerate(idx.tolist())
            ]  # fmt: skip
            steps = torch.zeros(len(jobs), a_red.shape[2], dtype=torch.float64)
            for j, (i, sol) in enumerate(zip(idx.tolist(), mapper(_solve_task, jobs), strict=True)):
                spent[i] += sol.seconds
                solves[i] += sol.solves
                dropped[i] += sol.dropped
                iterations[i] += 1
                if sol.r is not None:
                    steps[j] = torch.from_numpy(sol.r)
                if sol.status != "optimal":  # infeasible (stop), timeout, solver_error: stop, keep the best
                    reasons[i], active[i], moved[i] = sol.status, False, sol.r is not None
            xk[idx] = (xd + self._expand(steps, shape, block, index).to(x0.device)).clamp(low, high).to(x0.dtype)
        if bool(moved.any()):  # a solver stopped early may still have returned a feasible step: evaluate it
            track(moved.nonzero().flatten(), jacobian=False)
        per_sample = {"iterations": iterations, "solves": solves, "solver_s": spent.tolist(), "dropped_labels": dropped}
        record_outcome(batch, best.score, clean_score, needed, reasons, **per_sample)
        return best.adv
