"""Targets-vs-flips study (seed §IV-C, Fig. 7): flips as a function of the number of targeted labels.

For each budget and each ``n``, BCE MI-FGSM targets the ``n`` labels whose clean confidence is closest to the
threshold (weights 1 on them, 0 elsewhere; the target vector stays ``1 - clean prediction``). The paper finds
that the best number of targets ``t_opt`` exceeds the flips it achieves: ``flips_opt ≈ 0.6 · t_opt``, which is
where CLASS's subset factor 1/0.6 = 1.66 comes from. Budgets share one trajectory per ``n`` (fixed weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from labelflip._validation import check_int, fail
from labelflip.attacks import MIFGSM, clean_pass, closest_subsets, prepare_inputs
from labelflip.models import MultiLabelModel

__all__ = ["TargetsVsFlips", "targets_vs_flips"]


@dataclass
class TargetsVsFlips:
    """``mean_flips[b][i]`` / ``std_flips[b][i]`` (population std): flips at ``budgets[b]`` targeting
    ``n_targets[i]`` closest labels."""

    budgets: list[float]
    n_targets: list[int]
    mean_flips: list[list[float]]
    std_flips: list[list[float]]
    num_samples: int

    def optimum(self, b: int) -> tuple[int, float]:
        """``(t_opt, flips_opt)`` at budget index ``b`` (the first ``n`` attaining the maximum)."""
        row = self.mean_flips[b]
        i = max(range(len(row)), key=lambda j: (row[j], -j))
        return self.n_targets[i], row[i]

    def ratios(self) -> list[float]:
        """``flips_opt / t_opt`` per budget (NaN where ``t_opt = 0``); the paper reports ≈ 0.6."""
        out = []
        for b in range(len(self.budgets)):
            t, f = self.optimum(b)
            out.append(f / t if t > 0 else float("nan"))
        return out


def targets_vs_flips(
    model: nn.Module | MultiLabelModel,
    x: Tensor,
    budgets: Sequence[float],
    n_targets: Sequence[int] | None = None,
    *,
    batch_size: int | None = None,
) -> TargetsVsFlips:
    """Mean flips for every (budget, number of closest targets) pair; ``n_targets`` defaults to 0..K."""
    m, x = prepare_inputs(model, x, "targets_vs_flips")
    with m.eval_mode():
        probs = clean_pass(m, x)[0].cpu()
    k = probs.shape[1]
    ns = (
        list(range(k + 1))
        if n_targets is None
        else [check_int("targets_vs_flips", "n_targets", n, low=0) for n in n_targets]
    )
    if any(n > k for n in ns):
        raise fail("targets_vs_flips", "n_targets", f"values <= K = {k}", n_targets)
    attack = MIFGSM(m, "bce", batch_size=batch_size)
    means: list[list[float]] = [[] for _ in budgets]
    stds: list[list[float]] = [[] for _ in budgets]
    for n in ns:
        res = attack(x, list(budgets), weights=closest_subsets(probs, n, m.threshold.cpu()))
        for b in range(len(budgets)):
            means[b].append(float(res.mean_flips()[b]))
            stds[b].append(float(res.std_flips()[b]))
    return TargetsVsFlips([float(e) for e in budgets], ns, means, stds, int(x.shape[0]))
