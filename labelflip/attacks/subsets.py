"""Subset attacks (seed §IV-C): MI-FGSM/BCE weighted 0/1 per label, the target vector staying ``1 - clean
prediction`` for every label. CLASS (``class``, ``class-raw``), random subsets (``random``) and closest-to-threshold
subsets (``top-n``); the subsets themselves are chosen by :mod:`labelflip.attacks.selection`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from labelflip._registry import Param
from labelflip._validation import check_float, check_int, fail
from labelflip.attacks.base import Batch, FixedBudgetAttack
from labelflip.attacks.mifgsm import MIFGSM
from labelflip.attacks.registry import ATTACKS
from labelflip.attacks.selection import class_subsets, closest_subsets, random_subsets, subset_length
from labelflip.estimate import FlipEstimate
from labelflip.models import MultiLabelModel

__all__ = ["ClassAttack", "ClosestSubsetAttack", "RandomSubsetAttack", "SubsetAttack", "search_gamma"]


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
        subsets = [
            random_subsets(batch.sample_ids, num_labels, k, seed=self.seed, budget_index=b) for b, k in enumerate(ks)
        ]
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
