"""The Soft Attackability Estimator (SAE) of "Characterizing the Evasion Attackability of Multi-label Classifiers
via Attack Transferability" (seed 004, §4.1, Eqs. 9-12, Algorithm 1), and the alignment diagnostic of its Table 4.

For an input ``x`` with decision scores ``h_j(x)`` (logits minus ``logit(threshold)``) and labels ``y_j ∈ {±1}``:

* ``a_j = -∇h_j(x) / h_j(x) = -y_j ∇h_j(x) / μ_j`` with the margin ``μ_j = y_j h_j(x)`` (Eq. 9 ff.): the
  margin-decreasing direction of label ``j`` scaled by 1 / margin, i.e. the first-order number of budget units
  label ``j`` consumes along a unit direction;
* ``φ_{h,x} = max_{‖r̃‖_p = 1} Σ_j max(a_jᵀ r̃, 0) = max_{b ∈ {0,1}^m} ‖Σ_j b_j a_j‖_q`` (Eqs. 11-12), ``1/p + 1/q
  = 1``, approximated by the paper's greedy (Algorithm 1), which on the Gram matrix ``Γ = A Aᵀ`` never touches the
  d-dimensional vectors (L2). For an L-inf budget (``q = 1``) the greedy runs on the vectors.

Conventions (SPEC-related-methods §2.1, [A]): ``h_j`` are logits (never probabilities); for evaluation ``y`` is
the clean **prediction**, so every label is "correctly classified"; margins are clamped to ``μ_j >= delta``
(default 1e-3) so labels at the boundary do not blow the score up (a label on the wrong side of a given
ground-truth ``y`` is treated as sitting on the boundary). The absolute value of SAE depends on the input
scale; only its rank order across models sharing an input space is meaningful (the paper uses Spearman).

Cost: one forward pass and one batched backward pass over the m logits (:func:`label_gradients`), an m×m Gram
per sample and an O(m²) greedy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from labelflip._validation import check_choice, check_float, check_int, fail
from labelflip.attacks.base import prepare_inputs
from labelflip.estimators.gradients import decision_offsets, greedy_gram, greedy_vectors, label_gradients
from labelflip.models import MultiLabelModel

__all__ = ["SAEResult", "phi_align", "sae", "sae_from_gradients"]

_OWNER = "sae"


@dataclass
class SAEResult:
    """Per-sample SAE scores.

    Attributes:
        scores: ``(N,)`` float64 ``φ_{h,x}`` (greedy value of Eq. 12), >= 0.
        selected: ``(N, m)`` bool, the label set ``S`` the greedy selected (the most transferable labels).
        margins: ``(N, m)`` float64 ``μ_j = y_j h_j(x)`` before clamping (decision-score units).
        norm: the budget norm (``"l2"``: q = 2; ``"linf"``: q = 1).
    """

    scores: Tensor
    selected: Tensor
    margins: Tensor
    norm: str

    def mean(self) -> float:
        """The per-dataset score: the mean of the per-sample scores."""
        return float(self.scores.mean()) if self.scores.numel() else float("nan")

    def median(self) -> float:
        return float(self.scores.median()) if self.scores.numel() else float("nan")


def sae_from_gradients(
    decision: Tensor, grads: Tensor, y: Tensor, *, norm: str = "l2", delta: float = 1e-3
) -> tuple[Tensor, Tensor, Tensor]:
    """SAE from decision scores, their input gradients and ±1 labels (the core of :func:`sae`).

    Args:
        decision: ``(N, m)`` decision scores ``h_j(x)``. grads: ``(N, m, ...)`` ``∇_x h_j(x)``.
        y: ``(N, m)`` labels in ``{-1, +1}``. norm: ``"l2"`` or ``"linf"``. delta: the margin clamp (> 0).

    Returns:
        ``(scores (N,), selected (N, m) bool, margins (N, m))``, float64.
    """
    margins = (y.to(torch.float64) * decision.detach().to(torch.float64)).clone()
    coef = -y.to(torch.float64) / margins.clamp_min(delta)  # a_j = coef_j * grad_j
    jac = grads.detach().flatten(2).to(torch.float64)
    if norm == "l2":
        gram = coef.unsqueeze(2) * coef.unsqueeze(1) * (jac @ jac.transpose(1, 2))
        scores, selected = greedy_gram(gram)
    else:
        scores, selected = greedy_vectors(coef.unsqueeze(2) * jac, q=1.0)
    return scores, selected, margins


def sae(
    model: nn.Module | MultiLabelModel,
    x: Tensor,
    *,
    y: Tensor | None = None,
    norm: str = "l2",
    delta: float = 1e-3,
    batch_size: int = 64,
) -> SAEResult:
    """Soft Attackability Estimator per sample (seed 004, Eq. 12, Algorithm 1).

    Args:
        model: a :class:`MultiLabelModel` (or a module returning logits; wrapped with default bounds [0, 1]).
        x: inputs ``(N, ...)`` within the model's bounds.
        y: ``(N, m)`` labels in ``{0, 1}`` to measure against; default (``None``): the clean prediction.
        norm: the attack budget's norm, ``"l2"`` (the paper) or ``"linf"`` (dual ``q = 1``).
        delta: lower clamp of the margins ``μ_j`` (decision-score units).
        batch_size: samples per batched backward pass (memory: ``batch_size × m × d`` gradients).

    Returns:
        :class:`SAEResult`; ``result.mean()`` is the per-dataset score.
    """
    check_choice(_OWNER, "norm", norm, ("l2", "linf"))
    delta = check_float(_OWNER, "delta", delta, low=0.0, low_inclusive=False, fix="e.g. delta=1e-3.")
    check_int(_OWNER, "batch_size", batch_size, low=1, fix="e.g. batch_size=64.")
    model, x = prepare_inputs(model, x, _OWNER)
    if y is not None:
        y = model.validate_labels(y, x.shape[0], owner=_OWNER, param="y").to(x.device)
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    with model.eval_mode():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            logits, grads = label_gradients(model, xb)
            decision = logits.detach().to(torch.float64) - decision_offsets(model, logits.shape[1], device=x.device)
            yb = (decision > 0).to(torch.float64) if y is None else y[start : start + batch_size].to(torch.float64)
            parts.append(sae_from_gradients(decision, grads, 2 * yb - 1, norm=norm, delta=delta))
    scores, selected, margins = (torch.cat(t).cpu() for t in zip(*parts, strict=True))
    return SAEResult(scores, selected, margins, norm)


def phi_align(weight: Tensor) -> float:
    """Mean absolute cosine between the rows of a label weight matrix (seed 004, Table 4):
    ``φ_align = (1/m²) Σ_{j,k} |cos⟨w_j, w_k⟩|`` (diagonal included, so the minimum is ``1/m``).

    Args:
        weight: ``(m, d)`` the per-label weight vectors (a linear model's ``W`` or a network's last layer).
    """
    if not isinstance(weight, Tensor) or weight.ndim != 2 or weight.shape[0] < 1:
        raise fail("phi_align", "weight", "an (m, d) tensor of per-label weight vectors", weight)
    w = weight.detach().to(torch.float64)
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return float((w @ w.T).abs().mean())
