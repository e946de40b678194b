"""Target subsets: CLASS (seed §V-B, Algorithm 3), random subsets and closest-to-threshold subsets.

A subset attack is MI-FGSM with BCE weighted 0/1 per label; the target vector stays ``1 - clean prediction``
for every label (seed §IV-C). The subset length comes from the flip profile (SPEC.md):
``k = int(min(K, 1.66 * int(clip(E(eps), 0, K))))``, at least 1.

CLASS, per sample (SPEC-reference-code §6)::

    q_i = t_i P_i + (1 - t_i)(1 - P_i);  P^_i = q_i / max_j q_j        # closeness to flipping, in [0, 1]
    S = [argmax P^]                                                   # root: the most flippable label
    repeat k - 1 times:                                               # grow S by one label
        build a tree of depth D = min(d, k - |S|), b children per node: a node T = S + added labels ranks
        the non-members j by  score_j = gamma * z_j + (1 - gamma) * P^_j,  z_j = sum_{s in T} M[j,s] + M[s,j]
        (z / max z if normalize_z, the paper's Alg. 3; raw sums reproduce the code behind the tables)
        leaves: O(T) = gamma * sum_{u,v in T} M[u,v] + (1 - gamma) * sum_{u in T} P^_u  (ordered pairs + diagonal)
        commit the first added label of the first leaf with the largest O
    M = the sample's instance correlation matrix.

Ties: ranks use a stable ascending argsort read from the end (among equal scores the higher label index comes
first); among leaves the first one in creation order (parent-major) with the maximal O wins, as paper Fig. 9.

The search is vectorised over samples and tree nodes, with incremental updates: adding label ``a`` to ``T``
adds row ``Msym[a]`` (``Msym = M + M^T``) to ``z`` and ``gamma (M[a,a] + z_T[a]) + (1-gamma) P^_a`` to ``O``.
Leaves with the same label set therefore get bit-identical objectives; leaf objectives within 1e-12
(relative) of the maximum count as ties so float rounding never overrides the first-leaf rule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from labelflip._registry import Param
from labelflip._validation import check_float, check_int, fail
from labelflip.attacks.base import Batch, FixedBudgetAttack
from labelflip.attacks.mifgsm import MIFGSM
from labelflip.attacks.registry import ATTACKS
from labelflip.estimate import FlipEstimate
from labelflip.models import MultiLabelModel

__all__ = [
    "SUBSET_FACTOR",
    "ClassAttack",
    "ClosestSubsetAttack",
    "RandomSubsetAttack",
    "SubsetAttack",
    "class_subsets",
    "closest_subsets",
    "flippability",
    "random_subsets",
    "search_gamma",
    "subset_length",
]

SUBSET_FACTOR = 1.66
"""``1 / 0.6``: targets per expected flip (seed §IV-C, Fig. 7)."""

_NEG = -math.inf


def subset_length(estimate: float, num_labels: int, factor: float = SUBSET_FACTOR) -> int:
    """``k = int(min(K, factor * int(clip(E, 0, K))))``, at least 1 (the authors' double truncation)."""
    e_int = int(min(max(float(estimate), 0.0), num_labels))
    return max(1, int(min(num_labels, factor * e_int)))


def flippability(probs: Tensor, target: Tensor) -> np.ndarray:
    """``P^``: the target-direction probability over its per-sample max, ``(N, K)`` float64 in ``[0, 1]``."""
    p = probs.double().cpu().numpy()
    t = target.double().cpu().numpy()
    q = np.abs(t * p + (1 - t) * (1 - p))
    top = q.max(axis=1, keepdims=True)
    return np.divide(q, top, out=np.zeros_like(q), where=top > 0)


def _top_desc(scores: np.ndarray, r: int) -> np.ndarray:
    """Indices of the ``r`` largest scores, descending; ties: higher index first (= a stable ascending argsort
    read from the end). O(r K): ``r`` rounds of argmax on the reversed scores (argmax returns the first maximum,
    i.e. the highest index in the original order)."""
    work = scores[..., ::-1].copy()
    last = scores.shape[-1] - 1
    out = np.empty((*scores.shape[:-1], r), dtype=np.int64)
    for i in range(r):
        rev = work.argmax(axis=-1)
        out[..., i] = last - rev
        np.put_along_axis(work, rev[..., None], _NEG, axis=-1)
    return out


def class_subsets(
    probs: Tensor,
    target: Tensor,
    icm: Tensor,
    k: int,
    *,
    gamma: float = 0.5,
    branches: int = 4,
    depth: int = 4,
    normalize_z: bool = True,
) -> Tensor:
    """CLASS subsets for a batch (Algorithm 3).

    Args:
        probs: clean confidences ``(N, K)`` in ``[0, 1]``.
        target: ``(N, K)`` in {0, 1} (``1 - clean prediction`` for the max-flip attack).
        icm: instance correlation matrices ``(N, K, K)`` (or one ``(K, K)`` for all samples), entries in [0, 1].
        k: subset length (>= 1); ``k >= K`` selects every label.
        gamma: weight of correlation vs confidence in ``[0, 1]``.
        branches, depth: ``b`` children per node and ``d`` levels of look-ahead.
        normalize_z: divide ``z`` by its max (paper) or not (the code behind the tables).

    Returns:
        ``(N, K)`` float32 0/1 weights with exactly ``min(k, K)`` ones per row.
    """
    owner = "class_subsets"
    k = check_int(owner, "k", k, low=1)
    gamma = check_float(owner, "gamma", gamma, low=0.0, high=1.0)
    b = check_int(owner, "branches", branches, low=1)
    d = check_int(owner, "depth", depth, low=1)
    n, num_labels = probs.shape
    if tuple(target.shape) != (n, num_labels):
        raise fail(owner, "target", f"of shape ({n}, {num_labels})", target)
    m = icm.double().cpu().numpy()
    if m.ndim == 2:
        m = np.broadcast_to(m, (n, num_labels, num_labels))
    if m.shape != (n, num_labels, num_labels):
        raise fail(owner, "icm", f"of shape ({n}, {num_labels}, {num_labels}) or ({num_labels}, {num_labels})", icm)
    if k >= num_labels:
        return torch.ones(n, num_labels)
    phat = flippability(probs, target)
    msym = m + np.swapaxes(m, 1, 2)
    diag = np.diagonal(m, axis1=1, axis2=2)  # (N, K)
    rows = np.arange(n)

    conf = (1 - gamma) * phat
    root = _top_desc(phat, 1)[:, 0]
    member = np.zeros((n, num_labels), dtype=bool)
    member[rows, root] = True
    z_s = msym[rows, root].copy()  # (N, K): z of the committed set S
    obj_s = gamma * diag[rows, root] + conf[rows, root]  # (N,): O(S)
    for size in range(1, k):
        levels = min(d, k - size)
        # frontier arrays, nodes in creation order: (N, nodes, ...)
        f_z, f_obj, f_mem = z_s[:, None, :], obj_s[:, None], member[:, None, :]
        f_first = np.full((n, 1), -1, dtype=np.int64)
        for level in range(levels):
            r = min(b, num_labels - size - level)
            z = f_z / np.maximum(f_z.max(axis=2, keepdims=True), 1e-300) if normalize_z else f_z
            score = np.where(f_mem, _NEG, gamma * z + conf[:, None, :])
            pick = _top_desc(score, r)  # (N, parents, r), children in parent-major order
            nodes = pick.shape[1] * r
            pick_flat = pick.reshape(n, nodes)
            parent = np.repeat(np.arange(pick.shape[1]), r)
            z_at_pick = np.take_along_axis(f_z, pick, axis=2).reshape(n, nodes)  # z_T[a] of each child's parent
            gain = gamma * (diag[rows[:, None], pick_flat] + z_at_pick) + conf[rows[:, None], pick_flat]
            f_obj = f_obj[:, parent] + gain
            f_first = np.where(f_first[:, parent] < 0, pick_flat, f_first[:, parent])
            if level + 1 < levels:  # leaves need no z / membership
                f_z = f_z[:, parent, :] + msym[rows[:, None], pick_flat]
                f_mem = f_mem[:, parent, :]
                f_mem[rows[:, None], np.arange(nodes)[None, :], pick_flat] = True
        best_val = f_obj.max(axis=1, keepdims=True)
        tol = 1e-12 * np.maximum(1.0, np.abs(best_val))
        best = np.argmax(f_obj >= best_val - tol, axis=1)  # first leaf attaining the max
        add = f_first[rows, best]
        obj_s = obj_s + gamma * (diag[rows, add] + z_s[rows, add]) + conf[rows, add]
        z_s = z_s + msym[rows, add]
        member[rows, add] = True
    return torch.from_numpy(member.astype(np.float32))


def random_subsets(sample_ids: Sequence[int] | Tensor, num_labels: int, k: int, *, seed: int, budget_index: int) -> Tensor:
    """``(N, K)`` 0/1 weights with ``min(k, K)`` labels per row, each row from its own permutation drawn from a
    generator seeded by ``(seed, sample id, budget index)`` (SPEC.md): the subsets do not depend on batching,
    chunking or sharding, and the authors' one-permutation-per-batch bug is not reproduced."""
    k = min(check_int("random_subsets", "k", k, low=0), num_labels)
    ids = [int(i) for i in (sample_ids.tolist() if isinstance(sample_ids, Tensor) else sample_ids)]
    w = torch.zeros(len(ids), num_labels)
    for row, sid in enumerate(ids):
        if sid < 0:
            raise fail("random_subsets", "sample_ids", "non-negative integers", sid)
        perm = np.random.default_rng([seed, sid, budget_index]).permutation(num_labels)
        w[row, torch.from_numpy(perm[:k])] = 1.0
    return w


def closest_subsets(probs: Tensor, n: int, threshold: float | Tensor = 0.5) -> Tensor:
    """``(N, K)`` 0/1 weights on the ``n`` labels per sample whose confidence is closest to the threshold
    (stable order; direction ignored; no batch-union bug). Used for the targets-vs-flips study (Fig. 7)."""
    n = min(check_int("closest_subsets", "n", n, low=0), probs.shape[1])
    dist = (probs.double() - torch.as_tensor(threshold, dtype=torch.float64)).abs()
    order = torch.sort(dist, dim=1, stable=True).indices
    w = torch.zeros(probs.shape, dtype=torch.float32)
    w.scatter_(1, order[:, :n], 1.0)
    return w


# ----------------------------------------------------------------------------- attacks
_ENGINE_OPTIONS = ("alpha", "mu", "normalize", "clip", "l2_mode")


def _check_estimate(owner: str, profile: Any) -> FlipEstimate:
    if not isinstance(profile, FlipEstimate):
        raise fail(
            owner,
            "profile",
            "a flip estimate (a Profile, or anything with eps_max and estimate(eps))",
            profile,
            "probe one with probe_profile(...) or load one with Profile.load(path).",
        )
    return profile


class SubsetAttack(FixedBudgetAttack):
    """BCE MI-FGSM on a subset of labels per sample and budget (0/1 weights; the target stays complete).

    Subclasses implement :meth:`select`. The result's ``extra`` holds ``k`` (subset length per budget),
    ``selection_s`` (time spent choosing subsets) and ``method``.

    Args:
        model: the classifier.
        **options: ``norm``, ``batch_size``, ``return_adv`` and the MI-FGSM settings ``alpha``, ``mu``,
            ``normalize``, ``clip``, ``l2_mode`` (see :class:`MIFGSM`).
    """

    def __init__(self, model: nn.Module | MultiLabelModel, **options: Any) -> None:
        engine = {k: options.pop(k) for k in _ENGINE_OPTIONS if k in options}
        super().__init__(model, **options)
        self.engine = MIFGSM(self.model, "bce", norm=self.norm, **engine)

    def select(self, batch: Batch, budgets: list[float]) -> tuple[Tensor, list[int]]:
        """``(weights, ks)``: 0/1 weights ``(B, N, K)`` (or ``(N, K)`` for every budget) and ``k`` per budget."""
        raise NotImplementedError

    def steps_for(self, budgets: list[float], x: Tensor) -> list[int]:
        return self.engine.steps_for(budgets, x)

    def describe(self) -> str:
        return repr(self.engine.loss)

    def run(self, batch: Batch, budgets: list[float]) -> Tensor:
        start = time.perf_counter()
        weights, ks = self.select(batch, budgets)
        batch.info["selection_s"] = batch.info.get("selection_s", 0.0) + time.perf_counter() - start
        batch.info.update({"k": ks, "method": repr(self)})
        batch.weights = weights.to(batch.x.device)
        return self.engine.run(batch, budgets)


def _class_label(params: dict[str, Any]) -> str:
    extra = [f"b={params['branches']}"] if params["branches"] != 4 else []
    extra += [f"d={params['depth']}"] if params["depth"] != 4 else []
    raw = ", raw Z" if not params.get("normalize_z", True) else ""
    return f"CLASS(γ={params['gamma']:g}{raw}" + "".join(f", {e}" for e in extra) + ")"


_CLASS_PARAMS = [
    Param("gamma", float, help="weight of correlation vs confidence in [0, 1]", low=0.0, high=1.0),
    Param("branches", int, 4, "children per tree node (b)", low=1),
    Param("depth", int, 4, "look-ahead levels (d)", low=1),
]


@ATTACKS.register(
    "class",
    params=_CLASS_PARAMS,
    fixed={"normalize_z": True},
    label=_class_label,
    description="BCE on the CLASS subset (Alg. 3, Z normalised as in the paper); k from the flip profile",
)
@ATTACKS.register(
    "class-raw",
    params=_CLASS_PARAMS,
    fixed={"normalize_z": False},
    label=lambda p: _class_label({**p, "normalize_z": False}),
    description="CLASS with raw Z sums (the code behind the published tables)",
)
class ClassAttack(SubsetAttack):
    """CLASS: MI-FGSM/BCE on the CLASS subset of each sample, with ``k`` from the flip profile per budget.

    Args:
        model: the classifier.
        profile: a :class:`~labelflip.estimate.FlipEstimate` (a flip Profile) giving ``E(eps)`` and hence ``k``.
        correlations: a :class:`labelflip.analysis.Correlations` (flip-up matrix) for the ICMs.
        gamma, branches, depth, normalize_z: see :func:`class_subsets`.
        **options: see :class:`SubsetAttack`.
    """

    requires = frozenset({"profile", "correlations"})

    def __init__(
        self,
        model: nn.Module | MultiLabelModel,
        profile: FlipEstimate,
        correlations: Any,
        *,
        gamma: float = 0.5,
        branches: int = 4,
        depth: int = 4,
        normalize_z: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.profile = _check_estimate("ClassAttack", profile)
        if not hasattr(correlations, "instance_matrices"):
            raise fail(
                "ClassAttack",
                "correlations",
                "a Correlations artefact",
                correlations,
                "measure one with measure_correlations(...).",
            )
        self.correlations = correlations
        self.gamma = check_float("ClassAttack", "gamma", gamma, low=0.0, high=1.0)
        self.branches = check_int("ClassAttack", "branches", branches, low=1)
        self.depth = check_int("ClassAttack", "depth", depth, low=1)
        self.normalize_z = bool(normalize_z)

    def __repr__(self) -> str:
        return f"ClassAttack(gamma={self.gamma}, b={self.branches}, d={self.depth}, normalize_z={self.normalize_z})"

    def select(self, batch: Batch, budgets: list[float]) -> tuple[Tensor, list[int]]:
        probs, target = batch.clean_probs.cpu(), batch.target.float().cpu()
        num_labels = probs.shape[1]
        if self.correlations.num_labels != num_labels:
            raise fail(
                "ClassAttack",
                "correlations",
                f"a {num_labels}x{num_labels} matrix (the model's K)",
                f"{self.correlations.num_labels} labels",
            )
        icm = self.correlations.instance_matrices(target)
        ks = [subset_length(self.profile.estimate(e), num_labels) for e in budgets]
        cache: dict[int, Tensor] = {}
        for k in ks:
            if k not in cache:
                cache[k] = class_subsets(
                    probs,
                    target,
                    icm,
                    k,
                    gamma=self.gamma,
                    branches=self.branches,
                    depth=self.depth,
                    normalize_z=self.normalize_z,
                )
        return torch.stack([cache[k] for k in ks]), ks


@ATTACKS.register("random", label="Random", description="BCE on a random subset of k labels per sample (baseline)")
class RandomSubsetAttack(SubsetAttack):
    """Random-subset baseline: ``k`` labels from an independent permutation per sample and budget, seeded by
    ``(seed, sample id, budget index)``; pass dataset indices as ``sample_ids`` to make a subset follow its
    sample across calls (studies do)."""

    requires = frozenset({"profile"})
    stochastic = True

    def __init__(self, model: nn.Module | MultiLabelModel, profile: FlipEstimate, *, seed: int = 0, **options: Any):
        super().__init__(model, **options)
        self.profile = _check_estimate("RandomSubsetAttack", profile)
        self.seed = check_int("RandomSubsetAttack", "seed", seed, low=0)

    def __repr__(self) -> str:
        return f"RandomSubsetAttack(seed={self.seed})"

    def select(self, batch: Batch, budgets: list[float]) -> tuple[Tensor, list[int]]:
        num_labels = batch.clean_probs.shape[1]
        ks = [subset_length(self.profile.estimate(e), num_labels) for e in budgets]
        subsets = [random_subsets(batch.sample_ids, num_labels, k, seed=self.seed, budget_index=b) for b, k in enumerate(ks)]
        return torch.stack(subsets), ks


@ATTACKS.register(
    "top-n",
    params=[Param("n", int, help="number of labels closest to the threshold", low=0)],
    label="Top-{n}",
    description="BCE on the n labels closest to the threshold (Fig. 7's targeting)",
)
class ClosestSubsetAttack(SubsetAttack):
    """Top-n closest-to-threshold subset (the same ``n`` at every budget): Fig. 7's targeting."""

    def __init__(self, model: nn.Module | MultiLabelModel, n: int, **options: Any) -> None:
        super().__init__(model, **options)
        self.n = check_int("ClosestSubsetAttack", "n", n, low=0)

    def __repr__(self) -> str:
        return f"ClosestSubsetAttack(n={self.n})"

    def select(self, batch: Batch, budgets: list[float]) -> tuple[Tensor, list[int]]:
        w = closest_subsets(batch.clean_probs.cpu(), self.n, self.model.threshold.cpu())
        return w, [min(self.n, w.shape[1])] * len(budgets)


def search_gamma(
    model: nn.Module | MultiLabelModel,
    x: Tensor,
    budgets: Sequence[float],
    profile: FlipEstimate,
    correlations: Any,
    *,
    gammas: Sequence[float] | None = None,
    **class_kwargs: Any,
) -> tuple[float, dict[float, float]]:
    """Pick CLASS's gamma on held-out samples ``x``: the gamma (0.05 steps by default) with the largest total
    of mean flips over ``budgets`` (the tables' "Total"); ties go to the smaller gamma.

    Returns:
        ``(best_gamma, {gamma: total mean flips})``.
    """
    grid = [round(0.05 * i, 2) for i in range(21)] if gammas is None else [float(g) for g in gammas]
    if not grid:
        raise fail("search_gamma", "gammas", "a non-empty sequence in [0, 1]", gammas)
    totals: dict[float, float] = {}
    for g in grid:
        res = ClassAttack(model, profile, correlations, gamma=g, **class_kwargs)(x, list(budgets))
        totals[g] = float(res.mean_flips().sum())
    best = max(grid, key=lambda g: (totals[g], -g))
    return best, totals
