"""AttackResult: what one attack call returns for a list of budgets (budgets x samples)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["AttackResult", "count_flips"]


def count_flips(clean_pred: Tensor, adv_pred: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Flips against the clean prediction (SPEC.md Conventions), summed over labels.

    Args:
        clean_pred: ``(N, K)`` bool clean predictions.
        adv_pred: ``(..., N, K)`` bool predictions on perturbed inputs.

    Returns:
        ``(total, up, down)``, each ``(..., N)`` int64: ``total = sum XOR``, ``up`` = 0 -> 1, ``down`` = 1 -> 0.
    """
    up = (~clean_pred & adv_pred).sum(dim=-1)
    down = (clean_pred & ~adv_pred).sum(dim=-1)
    return up + down, up, down


@dataclass
class AttackResult:
    """Per-budget, per-sample outcome of an attack. ``B`` budgets, ``N`` samples, ``K`` labels.

    Attributes:
        eps: ``(B,)`` float64, the budgets as requested (pixel units; L-inf or L2 radius per ``norm``).
        steps: ``(B,)`` int64, iterations run for each budget (MI-FGSM: ``floor(eps / alpha)``; 0 if n/a).
        flips, flips_up, flips_down: ``(B, N)`` int64 flips against the clean prediction.
        clean_probs: ``(N, K)`` float32 clean sigmoid confidences; ``clean_pred`` ``(N, K)`` bool.
        adv_probs: ``(B, N, K)`` float32 confidences on the adversarial inputs; ``adv_pred`` bool.
        target: ``(N, K)`` float32 target in {0, 1} (default ``1 - clean_pred``).
        weights: ``(N, K)`` or ``(B, N, K)`` float32 label weights, or ``None`` (all labels).
        linf, l2: ``(B, N)`` float64 achieved perturbation norms ``||x_adv - x||``.
        x_adv: ``(B, N, ...)`` adversarial inputs, only when requested (``return_adv=True``).
        min_norm: ``(N,)`` float64, minimum-norm attacks only: the norm (``norm``) of the perturbation each
            sample needed before it was clipped to the budgets.
        norm, loss: descriptions of the attack; ``elapsed_s`` wall time of the call.
    """

    eps: Tensor
    steps: Tensor
    flips: Tensor
    flips_up: Tensor
    flips_down: Tensor
    clean_probs: Tensor
    clean_pred: Tensor
    adv_probs: Tensor
    adv_pred: Tensor
    target: Tensor
    weights: Tensor | None
    linf: Tensor
    l2: Tensor
    norm: str
    loss: str
    x_adv: Tensor | None = None
    min_norm: Tensor | None = None
    elapsed_s: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def num_budgets(self) -> int:
        return int(self.eps.numel())

    @property
    def num_samples(self) -> int:
        return int(self.clean_pred.shape[0])

    def mean_flips(self) -> Tensor:
        """``(B,)`` float64 mean flips per budget."""
        return self.flips.double().mean(dim=1)

    def std_flips(self, ddof: int = 0) -> Tensor:
        """``(B,)`` float64 std of flips per budget; ``ddof=0`` is the population std the paper uses."""
        f = self.flips.double()
        if f.shape[1] - ddof <= 0:
            return torch.full((f.shape[0],), float("nan"), dtype=torch.float64)
        return f.std(dim=1, correction=ddof)

    def summary(self) -> list[dict[str, float]]:
        """One dict per budget: eps, steps, mean/std (population) flips, up/down means, max L-inf/L2."""
        mean, std = self.mean_flips(), self.std_flips()
        return [
            {
                "eps": float(self.eps[b]),
                "steps": int(self.steps[b]),
                "mean_flips": float(mean[b]),
                "std_flips": float(std[b]),
                "mean_up": float(self.flips_up[b].double().mean()),
                "mean_down": float(self.flips_down[b].double().mean()),
                "max_linf": float(self.linf[b].max()),
                "max_l2": float(self.l2[b].max()),
            }
            for b in range(self.num_budgets)
        ]
