"""Subset selection for the subset attacks (seed §IV-C, §V-B, Algorithm 3): CLASS, random and closest-to-threshold
subsets, and the subset length ``k`` from the flip profile. Pure functions on confidences and correlations; the
attacks in :mod:`labelflip.attacks.subsets` call them.

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
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from labelflip._validation import check_float, check_int, fail

__all__ = [
    "SUBSET_FACTOR",
    "class_subsets",
    "closest_subsets",
    "flippability",
    "random_subsets",
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


def random_subsets(
    sample_ids: Sequence[int] | Tensor, num_labels: int, k: int, *, seed: int, budget_index: int
) -> Tensor:
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
