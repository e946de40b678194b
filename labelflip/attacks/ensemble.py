"""The worst-case ensemble (issue 13, item 2): a fixed, parameter-free ensemble of labelflip's attacks whose
per-sample maximum of flips is the number to report, as AutoAttack is for single-label robustness.

Members, in the order they run, with their forward+backward passes per sample for a budget grid
``eps_1 < ... < eps_B``, ``n_b = floor(eps_b / alpha)`` (MI-FGSM's count; ``alpha = 1/2560`` for L-inf)::

    bce          MI-FGSM, BCE on every label          max_b n_b   (one trajectory shared by the budgets)
    linear       MI-FGSM, Linear loss (seed eq. 5)    max_b n_b
    maxflip      labelflip's max-flip attack          sum_b (n_b - 1)  (+1 forward-only pass per budget)
    slam         MI-FGSM, SLAM loss (seed eq. 6-7)    sum_b n_b   (needs the flip profile)
    class:0      CLASS, gamma = 0 (Alg. 3)            sum over the distinct subset lengths k (profile, correlations)
    ml-deepfool  minimum-norm baseline, clipped       <= 20 iterations x K vector-Jacobian products (budget-free)

The order is fixed, not recomputed per call: cheapest first at the usual single budgets (at 8/255, n = 80: BCE
and Linear 80, MaxFlip 79, SLAM 80 + its profile, CLASS 80 + its subset search, ML-DeepFool up to 20 x K = 480 for
K = 24). On a grid of budgets SLAM and MaxFlip cost ``sum_b n_b`` while ML-DeepFool's cost does not grow, so there
it may be cheaper than they are; the fixed order keeps the attribution of ties reproducible.

CLASS runs with gamma = 0, the value that was best or tied-best at every budget on both built-in models
(docs/benchmarks.md, "MaxFlip vs the paper's attacks"); ML-DeepFool is the cheapest of the three minimum-norm
baselines (ML-CW needs a binary search, MLA-LP a linear program per step); its one perturbation per sample is
clipped to every budget (L-inf box or L2 ball) by the protocol.

Algorithm, per chunk of samples (``score`` = labels at their target, which is the number of flips for the default
target ``1 - clean prediction``; ``K`` = every label targeted)::

    best[b, i] = x_i, score[b, i] = clean score, winner[b, i] = none
    open[b, i] = eps_b > 0 and score[b, i] < K              # a zero budget or a finished sample is done
    for member m in order:
        fixed-budget m: for each distinct set G of open budgets, with the samples S open at exactly G:
                            run m on the samples S at the budgets G
        minimum-norm m: run m once on the samples open at any budget (every open budget is clipped from it)
        for each open (b, i) run: if score_m[b, i] > score[b, i]: best, score, winner <- x_m, score_m, m
        open[b, i] = open[b, i] and score[b, i] < K
    x_adv[b, i] = best[b, i]

So the result is, per sample and budget, the input with the most flips any member found (ties: the earlier,
cheaper member), and a fixed-budget member never runs on a (sample, budget) that is already done (the minimum-norm
member's one budget-free run serves every budget, so it runs on each sample open at some budget). Grouping the
samples by their open budgets makes each member's passes the least possible: a sample runs to its largest open
budget on a shared trajectory (BCE, Linear), or once per open budget (SLAM, MaxFlip). The budget is a hard bound
because every member's is. Members are deterministic, so the ensemble is (no seed).

**What it needs.** SLAM and CLASS need a flip profile and CLASS a correlation matrix, so the ensemble
``requires`` both and refuses to run without them (:func:`~labelflip.attacks.create_attack` names the missing one).
It does not drop those members when they are missing: a worst case over fewer members is a weaker, different
number, and numbers reported under the same name must be comparable across models.

**Cost.** A forward hook on the model counts sample-passes while each member runs: a forward with gradient is one
forward+backward pass (MI-FGSM, SLAM, CLASS, MaxFlip), except ML-DeepFool's Jacobian forward, which is followed by
K vector-Jacobian products and counts as K passes; forwards without gradient (MaxFlip's last check, ML-DeepFool's
last iterate) are counted apart, and so are the ensemble's own forwards that score each member's output (one per
budget and sample run). ``cost_multiple`` is the total forward+backward passes over the passes of one BCE run on
the same samples and budgets (``N * max_b n_b``).

``result.extra``: ``members`` (labels, in order), ``member_specs``, ``winner`` (``B`` lists of ``N`` member
indices, -1 where no member flipped anything), ``wins`` (per budget: member label -> samples won, ``"none"``),
``runs`` (per member: (sample, budget) pairs it ran on), ``samples_run`` (per member), ``passes`` (per member:
forward+backward sample-passes), ``forward_passes`` (per member: forward-only sample-passes),
``scoring_forwards``, ``bce_reference_passes``, ``cost_multiple`` and ``member_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from labelflip._validation import fail
from labelflip.attacks.base import Attack, Batch, FixedBudgetAttack
from labelflip.attacks.maxflip import success_counts
from labelflip.attacks.registry import ATTACKS, create_attack, parse_attack
from labelflip.models import MultiLabelModel

__all__ = ["MEMBERS", "WorstCaseEnsemble"]

_OWNER = "WorstCaseEnsemble"

MEMBERS: tuple[str, ...] = ("bce", "linear", "maxflip", "slam", "class:0", "ml-deepfool")
"""The ensemble's members (method specs), in the order they run."""

_JACOBIAN_MEMBERS = frozenset({"ml-deepfool"})
"""Members whose gradient forward is followed by K vector-Jacobian products (one per label) instead of one."""


class _PassCounter:
    """A forward hook counting sample-passes: with gradient (forward+backward) and without (forward-only)."""

    def __init__(self) -> None:
        self.grad = 0
        self.plain = 0

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        n = int(inputs[0].shape[0]) if inputs and isinstance(inputs[0], Tensor) and inputs[0].ndim else 0
        if torch.is_grad_enabled() and isinstance(output, Tensor) and output.requires_grad:
            self.grad += n
        else:
            self.plain += n


@ATTACKS.register(
    "worst-case",
    label="Worst case",
    description="fixed ensemble (BCE, Linear, MaxFlip, SLAM, CLASS(γ=0), ML-DeepFool): per-sample most flips",
)
class WorstCaseEnsemble(FixedBudgetAttack):
    """Per sample and budget, the most flips any member of :data:`MEMBERS` finds (see the module docstring).

    Example::

        attack = create_attack("worst-case", model, profile=profile, correlations=correlations)
        res = attack(x, eps=[0.01, 8 / 255])     # (2 budgets x N samples): the worst case
        res.extra["winner"], res.extra["cost_multiple"]

    Args:
        model: a :class:`MultiLabelModel` or an ``nn.Module`` returning logits.
        profile: the model's flip profile (a :class:`~labelflip.estimate.FlipEstimate`), for SLAM and CLASS.
        correlations: the model's :class:`~labelflip.analysis.Correlations`, for CLASS.
        norm, batch_size, return_adv: see :class:`~labelflip.attacks.base.Attack`; the members get ``norm`` and
            work on the ensemble's chunks.

    Label ``weights`` are refused: the members (CLASS) choose their own subsets, and the worst case is over every
    label. A custom ``target`` is passed to every member; the score is then the labels at their target.
    """

    requires = frozenset({"profile", "correlations"})

    def __init__(
        self,
        model: nn.Module | MultiLabelModel,
        profile: Any,
        correlations: Any,
        *,
        norm: Literal["linf", "l2"] = "linf",
        batch_size: int | None = None,
        return_adv: bool = False,
    ) -> None:
        super().__init__(model, norm=norm, batch_size=batch_size, return_adv=return_adv)
        fix = "the ensemble needs both for SLAM and CLASS: pass profile= and correlations= (create_attack does)."
        if profile is None:
            raise fail(_OWNER, "profile", "a flip profile (probe_profile, `labelflip profile`)", None, fix)
        if correlations is None:
            raise fail(_OWNER, "correlations", "label correlations (measure_correlations)", None, fix)
        self.specs = [parse_attack(s) for s in MEMBERS]
        self.members: list[Attack] = [
            create_attack(s, self.model, profile=profile, correlations=correlations, norm=norm) for s in self.specs
        ]

    def __repr__(self) -> str:
        return f"WorstCaseEnsemble({', '.join(MEMBERS)}; norm={self.norm!r})"

    def describe(self) -> str:
        return repr(self)

    # ------------------------------------------------------------------ the attack
    def run(self, batch: Batch, budgets: list[float]) -> Tensor:
        if batch.weights is not None:  # before any member runs
            raise fail(
                _OWNER,
                "weights",
                "None: the worst case is over every label",
                "label weights",
                "attack a subset with a single member instead (e.g. create_attack('bce', ...)).",
            )
        x0, target = batch.x, batch.target
        n, nb = x0.shape[0], len(budgets)
        counted = torch.ones_like(target, dtype=torch.bool)
        needed = counted.sum(dim=1)  # (N,)
        clean = success_counts(batch.clean_pred, target, counted)
        best = x0.unsqueeze(0).expand(nb, *x0.shape).clone()
        score = clean.unsqueeze(0).expand(nb, n).clone()
        winner = torch.full((nb, n), -1, dtype=torch.long, device=x0.device)
        positive = torch.tensor([e > 0 for e in budgets], device=x0.device).unsqueeze(1)
        stats = self._new_stats()  # this chunk's counts, merged into batch.info only once it is done
        stats["bce_reference_passes"] = n * max(self.members[0].steps_for(budgets, x0), default=0)
        for m, member in enumerate(self.members):
            open_ = positive & (score < needed.unsqueeze(0))
            for group, samples in self._plan(member, open_):
                counter = _PassCounter()
                handle = self.model.register_forward_hook(counter)
                start = time.perf_counter()
                try:
                    sub = Batch(
                        x0[samples],
                        batch.clean_probs[samples],
                        batch.clean_pred[samples],
                        target[samples],
                        None,
                        batch.sample_ids[samples.cpu()],
                        {},
                    )
                    adv, _ = member._run_batch(sub, [budgets[b] for b in group])
                finally:
                    handle.remove()
                with torch.no_grad():  # score the member's inputs; keep each (budget, sample)'s best so far
                    for j, b in enumerate(group):
                        pred = self.model.predict_from_probabilities(torch.sigmoid(self.model(adv[j])))
                        got = success_counts(pred, sub.target, counted[samples])
                        better = (got > score[b, samples]) & open_[b, samples]
                        rows = samples[better]
                        best[b, rows] = adv[j][better]
                        score[b, rows] = got[better]
                        winner[b, rows] = m
                stats["scoring_forwards"] += len(group) * int(samples.numel())
                factor = self.model.num_labels if str(self.specs[m]) in _JACOBIAN_MEMBERS else 1
                stats["passes"][m] += counter.grad * factor
                stats["forward_passes"][m] += counter.plain
                stats["runs"][m] += len(group) * int(samples.numel())
                stats["samples_run"][m] += int(samples.numel())
                stats["member_seconds"][m] += time.perf_counter() - start
        self._record(batch.info, stats, winner)
        return best

    def _plan(self, member: Attack, open_: Tensor) -> list[tuple[list[int], Tensor]]:
        """``[(budget indices, sample indices)]`` to run ``member`` on, from ``open_`` ``(B, N)`` bool.

        Fixed-budget member: samples grouped by their set of open budgets, each group run at exactly those
        budgets. So no sample runs at a budget where it is done, and the passes are the least possible both for a
        member whose budgets share one trajectory (BCE, Linear: each sample runs to its largest open budget's
        ``n``) and for one that runs each budget apart (SLAM, MaxFlip: ``n_b`` per open (sample, budget)).
        Minimum-norm member (budget-free): one run on the samples open at any budget, clipped to every budget
        where one of them is open (the other cells of that run are not scored).
        """
        if member.kind == "minimum-norm":
            any_open = open_.any(dim=0)
            group = [b for b in range(open_.shape[0]) if bool(open_[b].any())]
            return [(group, any_open.nonzero().flatten())] if group else []
        plan: dict[tuple[int, ...], list[int]] = {}
        for i in range(open_.shape[1]):
            key = tuple(open_[:, i].nonzero().flatten().tolist())
            if key:
                plan.setdefault(key, []).append(i)
        return [(list(key), torch.tensor(ids, dtype=torch.long, device=open_.device)) for key, ids in plan.items()]

    def stack_factor(self, budgets: list[float]) -> int:
        """Copies of each sample held at once: the ``B`` best inputs plus what the busiest member holds."""
        return len(budgets) + max(getattr(m, "stack_factor", lambda b: 1)(budgets) for m in self.members)

    def _new_stats(self) -> dict[str, Any]:
        k = len(self.members)
        return {
            "runs": [0] * k,
            "samples_run": [0] * k,
            "passes": [0] * k,
            "forward_passes": [0] * k,
            "member_seconds": [0.0] * k,
            "scoring_forwards": 0,
            "bce_reference_passes": 0,
        }

    def _record(self, info: dict[str, Any], stats: dict[str, Any], winner: Tensor) -> None:
        """Merge a finished chunk into ``info`` (shared by the chunks of one call, in sample order): its winners
        appended, its counts added, the derived ``wins`` and ``cost_multiple`` refreshed."""
        if "members" not in info:
            info.update(members=[s.label for s in self.specs], member_specs=[str(s) for s in self.specs], winner=None)
            info.update(self._new_stats())
        for key, value in stats.items():
            info[key] = (
                [a + b for a, b in zip(info[key], value, strict=True)]
                if isinstance(value, list)
                else (info[key] + value)
            )
        rows = winner.cpu().tolist()
        info["winner"] = rows if info["winner"] is None else [a + r for a, r in zip(info["winner"], rows, strict=True)]
        info["wins"] = [win_counts(w, info["members"]) for w in info["winner"]]
        ref = info["bce_reference_passes"]
        info["cost_multiple"] = sum(info["passes"]) / ref if ref else None


def win_counts(winners: Sequence[int], members: Sequence[str]) -> dict[str, int]:
    """``{member label: samples it won, "none": samples no member flipped}`` for one budget's winner indices."""
    counts = {label: 0 for label in members}
    counts["none"] = 0
    for w in winners:
        counts["none" if w < 0 else members[w]] += 1
    return counts
