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
Leaf objectives within 1e-12 (relative) of the maximum count as ties, so float rounding (leaves with the same
label set reached in a different order) never overrides the first-leaf rule. The subtree under the committed
label is carried over to the next round (its nodes, scores and picks are unchanged, bit for bit), so each round
scores only the ``b^(d-1)`` nodes of its deepest level; see :class:`_Tree`.
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


_NEG = -math.inf


class _Tree:
    """The CLASS search state for N samples, vectorised over samples and tree nodes (numpy float64).

    Labels are stored in reversed order, so ``argmax`` (first maximum) breaks ties towards the higher original
    index, i.e. the stable descending order of the reference. Level ``L`` of the current round's tree holds
    ``nodes_L`` nodes per sample in creation order (parent-major) with, per node: ``z`` ``(N, nodes_L, K)`` (kept
    only up to the deepest scored level), ``paths`` ``(N, nodes_L, L)`` (the labels added below the root),
    ``picks`` ``(N, nodes_L, r_L)`` (its children) and ``gains`` ``(N, nodes_L, r_L)`` (``O(child) - O(node)``).
    After a commit the subtree under the committed child is the next round's tree: its nodes have the same label
    sets, z, picks and gains, bit for bit (same operands, same operations), so a round scores only its deepest
    level (``b^(d-1)`` nodes instead of ``(b^d - 1) / (b - 1)``) and the last ``d - 1`` rounds score nothing.
    """

    def __init__(self, phat: np.ndarray, m: np.ndarray, gamma: float, branches: int, normalize_z: bool) -> None:
        n, num = phat.shape
        self.n, self.num, self.gamma, self.b, self.normalize_z = n, num, gamma, branches, normalize_z
        self.rows = np.arange(n)
        self.lin = self.rows * num  # flat offset of each sample's (K,) row
        if m.ndim == 2:  # one matrix for every sample
            self.msym = (m + m.T)[::-1, ::-1].copy()
            self.moff = np.zeros(n, dtype=np.int64)
            diag = np.broadcast_to(np.diagonal(m)[::-1], (n, num))
        else:
            self.msym = (m + np.swapaxes(m, 1, 2))[:, ::-1, ::-1].reshape(n * num, num)  # rows of Msym
            self.moff = self.lin
            diag = np.diagonal(m, axis1=1, axis2=2)[:, ::-1]
        self.diag = np.ascontiguousarray(diag).reshape(-1)
        phat = phat[:, ::-1]
        conf = (1 - gamma) * phat
        self.conf = conf.reshape(-1)
        # gamma = 0 and finite M >= 0: gamma * (finite z >= 0) is exactly 0, so every score is conf and every gain
        # is (1 - gamma) P^ exactly as in the full computation; z is then never needed.
        self.use_z = gamma != 0 or not bool(((m >= 0) & (m < math.inf)).all())
        root = phat.argmax(1)
        self.member = np.zeros((n, num), dtype=bool)
        self.member[self.rows, root] = True
        self.conf_m = np.where(self.member, _NEG, conf)  # scores of the members of S are -inf
        self.z_s = self.msym[self.moff + root] if self.use_z else None  # (N, K): z of S
        self.obj_s = gamma * self.diag[self.lin + root] + self.conf[self.lin + root]  # (N,): O(S)
        self.z: list[np.ndarray | None] = []
        self.paths: list[np.ndarray] = []
        self.picks: list[np.ndarray] = []
        self.gains: list[np.ndarray] = []
        self._bases: dict[int, np.ndarray] = {}

    def _base(self, nodes: int) -> np.ndarray:
        """``(N, nodes, 1)``: flat offset of each node's ``(K,)`` row in an ``(N, nodes, K)`` array."""
        if nodes not in self._bases:
            self._bases[nodes] = (np.arange(self.n * nodes) * self.num).reshape(self.n, nodes, 1)
        return self._bases[nodes]

    def _expand(self, level: int) -> None:
        """z and paths of the nodes of ``level`` from the picks of ``level - 1``."""
        n, num = self.n, self.num
        pick, path = self.picks[level - 1], self.paths[level - 1]
        nodes = pick.shape[1] * pick.shape[2]
        if self.use_z:
            z = np.take(self.msym, (pick + self.moff[:, None, None]).reshape(-1), axis=0, mode="clip")
            z = z.reshape(*pick.shape, num)
            np.add(self.z[level - 1][:, :, None, :], z, out=z)  # parent z + Msym[pick], as before
            self.z.append(z.reshape(n, nodes, num))
        else:
            self.z.append(None)
        self.paths.append(np.concatenate([np.repeat(path, pick.shape[2], axis=1), pick.reshape(n, nodes, 1)], 2))

    def _score(self, level: int, r: int) -> None:
        """Picks (the top ``r`` non-members by score, stable descending) and gains of every node of ``level``."""
        n, gamma, z, path = self.n, self.gamma, self.z[level], self.paths[level]
        nodes = path.shape[1]
        if z is None:
            score = np.repeat(self.conf_m[:, None, :], nodes, axis=1)
        else:
            if self.normalize_z:
                top = torch.from_numpy(z).amax(2, keepdim=True).numpy()  # (torch's max is the faster one here)
                score = np.divide(z, np.maximum(top, 1e-300, out=top))
                score *= gamma
            else:
                score = gamma * z
            score += self.conf_m[:, None, :]
        flat, base = score.reshape(-1), self._base(nodes)
        if level:
            flat[(base + path).reshape(-1)] = _NEG  # the labels added below the root are members too
        pick = np.empty((r, n, nodes), dtype=np.int64)
        for i in range(r):
            score.argmax(2, out=pick[i])
            if i + 1 < r:
                flat[base[:, :, 0] + pick[i]] = _NEG
        pick = np.ascontiguousarray(pick.transpose(1, 2, 0))
        at = self.lin[:, None, None] + pick
        if z is None:  # gamma = 0: the gain is (1 - gamma) P^ of the child
            self.gains.append(self.conf[at])
        else:
            self.gains.append(gamma * (self.diag[at] + z.reshape(-1)[base + pick]) + self.conf[at])
        self.picks.append(pick)

    def step(self, size: int, levels: int) -> None:
        """One round: grow S (``size`` members) by one label, looking ``levels`` levels ahead."""
        n, rows = self.n, self.rows
        if not self.paths:  # (re)root the tree at S
            self.z.append(self.z_s[:, None, :] if self.use_z else None)
            self.paths.append(np.empty((n, 1, 0), dtype=np.int64))
        for level in range(len(self.picks), levels):
            if level == len(self.paths):
                self._expand(level)
            self._score(level, min(self.b, self.num - size - level))
        obj = self.obj_s[:, None]
        for level in range(levels):  # leaf objectives, summed root to leaf as before
            obj = (obj[:, :, None] + self.gains[level]).reshape(n, -1)
        best_val = obj.max(axis=1, keepdims=True)
        tol = 1e-12 * np.maximum(1.0, np.abs(best_val))
        best = np.argmax(obj >= best_val - tol, axis=1)  # first leaf attaining the max
        r0 = self.picks[0].shape[2]
        child = best // (obj.shape[1] // r0)  # the root's child above it
        add = self.picks[0][rows, 0, child]
        at = self.lin + add
        if self.use_z:
            self.obj_s = self.obj_s + self.gamma * (self.diag[at] + self.z_s[rows, add]) + self.conf[at]
            self.z_s = self.z[1][rows, child] if levels > 1 else self.z_s + self.msym[self.moff + add]
        else:
            self.obj_s = self.obj_s + self.conf[at]
        self.member[rows, add] = True
        self.conf_m.reshape(-1)[at] = _NEG

        def below(a: np.ndarray) -> np.ndarray:  # the nodes of a level under the committed child
            return a.reshape(n, r0, -1, *a.shape[2:])[rows, child]

        self.z = [None if z is None else below(z) for z in self.z[1:levels]]
        self.paths = [below(p)[:, :, 1:] for p in self.paths[1:levels]]
        self.picks = [below(p) for p in self.picks[1:levels]]
        self.gains = [below(g) for g in self.gains[1:levels]]


def _class_search(
    phat: np.ndarray, m: np.ndarray, k: int, gamma: float, branches: int, depth: int, normalize_z: bool
) -> np.ndarray:
    """``(N, K)`` bool membership of the CLASS subsets (``1 <= k < K``)."""
    tree = _Tree(phat, m, gamma, branches, normalize_z)
    for size in range(1, k):
        tree.step(size, min(depth, k - size))
    return tree.member[:, ::-1]


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
    if m.shape not in ((n, num_labels, num_labels), (num_labels, num_labels)):
        raise fail(owner, "icm", f"of shape ({n}, {num_labels}, {num_labels}) or ({num_labels}, {num_labels})", icm)
    if k >= num_labels or n == 0:
        return torch.ones(n, num_labels)
    member = _class_search(flippability(probs, target), m, k, gamma, b, d, normalize_z)
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
