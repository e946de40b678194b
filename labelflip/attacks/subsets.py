"""Subset attacks (seed §IV-C): MI-FGSM/BCE weighted 0/1 per label, the target vector staying ``1 - clean
prediction`` for every label. CLASS (``class``, ``class-raw``), CLASS with gamma searched on held-out samples
(``class-auto``, ``class-raw-auto``), random subsets (``random``) and closest-to-threshold subsets (``top-n``); the
subsets themselves are chosen by :mod:`labelflip.attacks.selection`.

The attacks that read a flip profile check it (:func:`labelflip.losses.check_flip_estimate`): a profile that
stopped at its probe cap, or one of a model with another K or probed under another norm, is refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from labelflip._registry import Param
from labelflip._validation import check_float, check_int, fail
from labelflip.attacks.base import Batch, FixedBudgetAttack, clean_pass, prepare_inputs
from labelflip.attacks.mifgsm import MIFGSM
from labelflip.attacks.registry import ATTACKS
from labelflip.attacks.selection import class_subsets, closest_subsets, random_subsets, subset_length
from labelflip.estimate import FlipEstimate
from labelflip.losses import check_flip_estimate
from labelflip.models import MultiLabelModel

__all__ = [
    "GAMMA_GRID",
    "ClassAttack",
    "ClassAutoAttack",
    "ClosestSubsetAttack",
    "RandomSubsetAttack",
    "SubsetAttack",
    "search_gamma",
]


# ----------------------------------------------------------------------------- attacks
_ENGINE_OPTIONS = ("alpha", "mu", "normalize", "clip", "l2_mode", "bce_formulation", "stack", "max_rows", "reuse")
GAMMA_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))
"""The paper's gamma search grid: 0, 0.05, ..., 1."""


def _check_correlations(owner: str, correlations: Any) -> Any:
    if not hasattr(correlations, "instance_matrices"):
        raise fail(owner, "correlations", "a Correlations artefact", correlations, "measure_correlations(...)")
    return correlations


def _check_k(owner: str, num_labels: int, profile: Any, correlations: Any = None) -> None:
    """The model's K against the profile's and the correlation matrix's (errors name the artefact and the fix)."""
    check_flip_estimate(owner, profile, num_labels=num_labels)
    if correlations is not None and correlations.num_labels != num_labels:
        raise fail(
            owner,
            "correlations",
            f"a {num_labels}x{num_labels} matrix (the model's K)",
            f"{correlations.num_labels} labels",
            "measure the correlations of this model (measure_correlations or `labelflip correlations`).",
        )


class SubsetAttack(FixedBudgetAttack):
    """BCE MI-FGSM on a subset of labels per sample and budget (0/1 weights; the target stays complete).

    Subclasses implement :meth:`select`. The result's ``extra`` holds ``k`` (subset length per budget),
    ``selection_s`` (time spent choosing subsets) and ``method``.

    Args:
        model: the classifier.
        **options: ``norm``, ``batch_size``, ``return_adv`` and the MI-FGSM settings ``alpha``, ``mu``,
            ``normalize``, ``clip``, ``l2_mode``, ``stack``, ``max_rows``, ``reuse`` (see :class:`MIFGSM`; with
            ``stack`` the distinct subsets of a chunk run as one stacked batch).
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

    def stack_factor(self, budgets: list[float]) -> int:
        return self.engine.stack_factor(budgets, per_budget_weights=True)  # a subset (weights) per budget

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
    gamma = params["gamma"] if isinstance(params["gamma"], str) else f"{params['gamma']:g}"
    return f"CLASS(γ={gamma}{raw}" + "".join(f", {e}" for e in extra) + ")"


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
        self.profile = check_flip_estimate("ClassAttack", profile, norm=self.norm)
        self.correlations = _check_correlations("ClassAttack", correlations)
        self.gamma = check_float("ClassAttack", "gamma", gamma, low=0.0, high=1.0)
        self.branches = check_int("ClassAttack", "branches", branches, low=1)
        self.depth = check_int("ClassAttack", "depth", depth, low=1)
        self.normalize_z = bool(normalize_z)

    def __repr__(self) -> str:
        return f"ClassAttack(gamma={self.gamma}, b={self.branches}, d={self.depth}, normalize_z={self.normalize_z})"

    def select(self, batch: Batch, budgets: list[float]) -> tuple[Tensor, list[int]]:
        probs, target = batch.clean_probs.cpu(), batch.target.float().cpu()
        num_labels = probs.shape[1]
        _check_k("ClassAttack", num_labels, self.profile, self.correlations)
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
        self.profile = check_flip_estimate("RandomSubsetAttack", profile, norm=self.norm)
        self.seed = check_int("RandomSubsetAttack", "seed", seed, low=0)

    def __repr__(self) -> str:
        return f"RandomSubsetAttack(seed={self.seed})"

    def select(self, batch: Batch, budgets: list[float]) -> tuple[Tensor, list[int]]:
        num_labels = batch.clean_probs.shape[1]
        _check_k("RandomSubsetAttack", num_labels, self.profile)
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


def _gamma_totals(
    engine: MIFGSM,
    x: Tensor,
    budgets: Sequence[float],
    profile: FlipEstimate,
    correlations: Any,
    grid: Sequence[float],
    *,
    branches: int = 4,
    depth: int = 4,
    normalize_z: bool = True,
) -> dict[float, float]:
    """``{gamma: total mean flips over budgets}`` of CLASS on ``x`` for each gamma of ``grid``. Gammas that choose
    the same subsets share one attack (identical weights give identical results), and the distinct choices run
    as one batch of copies of ``x`` (per-sample normalisation keeps the copies independent), chunked to at most
    ``max(len(x), 256)`` samples per call."""
    model, x = prepare_inputs(engine.model, x, "search_gamma")
    with model.eval_mode():
        probs, pred = clean_pass(model, x)
    probs, target = probs.cpu(), (~pred).float().cpu()
    _check_k("search_gamma", probs.shape[1], profile, correlations)
    icm = correlations.instance_matrices(target)
    ks = [subset_length(profile.estimate(e), probs.shape[1]) for e in budgets]
    choices: dict[bytes, Tensor] = {}  # distinct subset choices, (B, M, K) weights each
    chosen: dict[float, bytes] = {}
    for g in grid:
        per_k = {
            k: class_subsets(probs, target, icm, k, gamma=g, branches=branches, depth=depth, normalize_z=normalize_z)
            for k in set(ks)
        }
        weights = torch.stack([per_k[k] for k in ks])
        chosen[float(g)] = weights.numpy().tobytes()
        choices.setdefault(chosen[float(g)], weights)
    keys, m = list(choices), x.shape[0]
    per_call = max(1, max(m, 256) // m)
    totals_of: dict[bytes, float] = {}
    for start in range(0, len(keys), per_call):
        part = keys[start : start + per_call]
        xs = x.repeat((len(part),) + (1,) * (x.ndim - 1))
        flips = engine(xs, list(budgets), weights=torch.cat([choices[k] for k in part], dim=1)).flips
        means = flips.double().view(len(budgets), len(part), m).mean(dim=2).sum(dim=0)
        totals_of.update({k: float(v) for k, v in zip(part, means, strict=True)})
    return {g: totals_of[key] for g, key in chosen.items()}


def _best_gamma(totals: dict[float, float]) -> float:
    return max(totals, key=lambda g: (totals[g], -g))


def search_gamma(
    model: nn.Module | MultiLabelModel,
    x: Tensor,
    budgets: Sequence[float],
    profile: FlipEstimate,
    correlations: Any,
    *,
    gammas: Sequence[float] | None = None,
    branches: int = 4,
    depth: int = 4,
    normalize_z: bool = True,
    **options: Any,
) -> tuple[float, dict[float, float]]:
    """Pick CLASS's gamma on held-out samples ``x``: the gamma (0.05 steps by default, :data:`GAMMA_GRID`) with the
    largest total of mean flips over ``budgets`` (the tables' "Total"); ties go to the smaller gamma.
    ``options`` are the attack options (``norm``, MI-FGSM settings).

    Returns:
        ``(best_gamma, {gamma: total mean flips})``.
    """
    grid = list(GAMMA_GRID) if gammas is None else [float(g) for g in gammas]
    if not grid or any(not 0.0 <= g <= 1.0 for g in grid):
        raise fail("search_gamma", "gammas", "a non-empty sequence in [0, 1]", gammas)
    engine = SubsetAttack(model, **options).engine
    kw = {"branches": branches, "depth": depth, "normalize_z": normalize_z}
    totals = _gamma_totals(engine, x, budgets, profile, correlations, grid, **kw)
    return _best_gamma(totals), totals


_SEARCHES: dict[tuple, tuple[float, dict[float, float], tuple]] = {}


@ATTACKS.register(
    "class-auto",
    params=_CLASS_PARAMS[1:],
    fixed={"normalize_z": True},
    label=lambda p: _class_label({**p, "gamma": "auto"}),
    description="CLASS with gamma chosen on held-out samples in 0.05 steps (the paper's search); normalised Z",
)
@ATTACKS.register(
    "class-raw-auto",
    params=_CLASS_PARAMS[1:],
    fixed={"normalize_z": False},
    label=lambda p: _class_label({**p, "gamma": "auto", "normalize_z": False}),
    description="CLASS with raw Z sums and gamma chosen on held-out samples in 0.05 steps",
)
class ClassAutoAttack(ClassAttack):
    """CLASS whose gamma is chosen on held-out samples (the paper's 0.05-step search, seed §VI): for the budgets
    of a call, the gamma of :data:`GAMMA_GRID` with the largest total mean flips on ``heldout`` (ties: the
    smaller gamma), then CLASS with it on the samples. The chosen gamma and every gamma's total are in
    ``result.extra["gamma"]`` and ``["gamma_totals"]``. The search runs once per list of budgets (cached while
    the same model, profile, correlations and held-out inputs are used).

    Args:
        heldout: held-out inputs ``(M, ...)``, disjoint from the evaluation samples (studies and the CLI use the
            flip profile's probe samples).
        **kwargs: as :class:`ClassAttack` (no ``gamma``).
    """

    requires = frozenset({"profile", "correlations", "heldout"})

    def __init__(
        self,
        model: nn.Module | MultiLabelModel,
        profile: FlipEstimate,
        correlations: Any,
        heldout: Tensor,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, profile, correlations, gamma=0.0, **kwargs)
        if not isinstance(heldout, Tensor) or heldout.ndim < 2 or heldout.shape[0] == 0:
            raise fail("ClassAutoAttack", "heldout", "a batch of held-out inputs (M, ...)", heldout)
        self.heldout = heldout

    def __repr__(self) -> str:
        return f"ClassAutoAttack(b={self.branches}, d={self.depth}, normalize_z={self.normalize_z})"

    def choose_gamma(self, budgets: Sequence[float]) -> tuple[float, dict[float, float]]:
        """``(gamma, {gamma: total})`` for these budgets, searched on the held-out inputs (cached)."""
        objs = (self.model, self.profile, self.correlations, self.heldout)
        key = (*map(id, objs), tuple(budgets), repr(self.engine), self.branches, self.depth, self.normalize_z)
        if key not in _SEARCHES:
            kw = {"branches": self.branches, "depth": self.depth, "normalize_z": self.normalize_z}
            totals = _gamma_totals(
                self.engine, self.heldout, budgets, self.profile, self.correlations, GAMMA_GRID, **kw
            )
            if len(_SEARCHES) >= 16:
                _SEARCHES.pop(next(iter(_SEARCHES)))
            _SEARCHES[key] = (_best_gamma(totals), totals, objs)  # objs keep the ids valid while cached
        gamma, totals, _ = _SEARCHES[key]
        return gamma, dict(totals)

    def select(self, batch: Batch, budgets: list[float]) -> tuple[Tensor, list[int]]:
        self.gamma, totals = self.choose_gamma(budgets)
        batch.info.update({"gamma": self.gamma, "gamma_totals": totals, "heldout_samples": int(self.heldout.shape[0])})
        return super().select(batch, budgets)
