"""Targets-vs-flips study (seed §IV-C, Fig. 7): flips as a function of the number of targeted labels.

For each budget and each ``n``, BCE MI-FGSM targets the ``n`` labels whose clean confidence is closest to the
threshold (weights 1 on them, 0 elsewhere; the target vector stays ``1 - clean prediction``). The paper finds
that the best number of targets ``t_opt`` exceeds the flips it achieves: ``flips_opt ≈ 0.6 · t_opt``, which is
where CLASS's subset factor 1/0.6 = 1.66 comes from. Budgets share one trajectory per ``n`` (fixed weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from labelflip._validation import check_int, fail
from labelflip.attacks.mifgsm import MIFGSM
from labelflip.attacks.subsets import closest_subsets
from labelflip.model import MultiLabelModel, as_model

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

    def to_markdown(self) -> str:
        head = "| eps | " + " | ".join(str(n) for n in self.n_targets) + " | t_opt | flips_opt | ratio |"
        lines = [head, "|---" * (len(self.n_targets) + 4) + "|"]
        for b, eps in enumerate(self.budgets):
            t, f = self.optimum(b)
            cells = " | ".join(f"{v:.2f}" for v in self.mean_flips[b])
            ratio = f / t if t else float("nan")
            lines.append(f"| {eps:.4g} | {cells} | {t} | {f:.2f} | {ratio:.2f} |")
        return "\n".join(lines)


def targets_vs_flips(
    model: nn.Module | MultiLabelModel,
    x: Tensor,
    budgets: Sequence[float],
    n_targets: Sequence[int] | None = None,
    *,
    batch_size: int | None = None,
) -> TargetsVsFlips:
    """Mean flips for every (budget, number of closest targets) pair; ``n_targets`` defaults to 0..K."""
    m = as_model(model)
    x = m.validate_inputs(x, owner="targets_vs_flips")
    m.ensure_checked(x, owner="targets_vs_flips")
    with m.eval_mode(), torch.no_grad():
        probs = torch.sigmoid(m(x.to(m.device, m.dtype))).cpu()
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
