"""Asymmetric loss (ASL, Ridnik et al., ICCV 2021) on logits, used to train the built-in models.

For logit ``z``, ``p = sigmoid(z)``, target ``y`` in {0, 1}:

- positives: ``L+ = (1 - p)^gamma_pos * log(p)``
- negatives: ``p_m = max(p - clip, 0)`` (probability shifting: easy negatives with ``p <= clip`` get zero
  loss), ``L- = p_m^gamma_neg * log(1 - p_m)``
- loss ``= -(y * L+ + (1 - y) * L-)``, with the logs clamped below at ``log(eps)`` as in the reference code.

``clip=0`` gives the "simplified" ASL used by Query2Label (focusing only, no easy-negative nullification).
The logs are computed with ``logsigmoid`` where possible, so huge logits never give inf or NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from labelflip._validation import check_choice, check_float, fail

__all__ = ["AsymmetricLoss", "asymmetric_loss"]


def asymmetric_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    gamma_neg: float = 4.0,
    gamma_pos: float = 0.0,
    clip: float = 0.05,
    eps: float = 1e-8,
    reduction: str = "mean",
) -> torch.Tensor:
    """Asymmetric loss of ``logits`` ``(N, K)`` against ``targets`` ``(N, K)`` in ``[0, 1]``.

    Args:
        gamma_neg, gamma_pos: focusing exponents (>= 0) for negatives and positives.
        clip: probability margin in ``[0, 1)`` subtracted from negatives' probabilities (0 disables it).
        eps: lower clamp for the probabilities inside the logs.
        reduction: ``"mean"`` (per-sample sum over labels, averaged over samples), ``"sum"`` (over
            everything, as the ASL reference code), or ``"none"`` (per-element ``(N, K)``).

    Returns:
        A non-negative scalar, or ``(N, K)`` for ``reduction="none"``.
    """
    owner = "asymmetric_loss"
    if logits.dim() != 2:
        raise fail(owner, "logits", "an (N, K) tensor", logits)
    if targets.shape != logits.shape:
        raise fail(owner, "targets", f"a tensor of the logits' shape {tuple(logits.shape)}", targets)
    check_float(owner, "gamma_neg", gamma_neg, low=0.0, fix="e.g. gamma_neg=4.")
    check_float(owner, "gamma_pos", gamma_pos, low=0.0, fix="e.g. gamma_pos=0.")
    check_float(owner, "clip", clip, low=0.0, high=1.0, high_inclusive=False, fix="e.g. clip=0.05 or 0.")
    check_float(owner, "eps", eps, low=0.0, low_inclusive=False, high=1.0, high_inclusive=False, fix="1e-8.")
    check_choice(owner, "reduction", reduction, ("mean", "sum", "none"))
    y = targets.to(logits.dtype)
    log_eps = math.log(eps)
    p = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits).clamp(min=log_eps)
    if clip > 0:
        p_neg = (p - clip).clamp(min=0.0)
        log_1m_pneg = torch.log1p(-p_neg).clamp(min=log_eps)  # p_neg <= 1 - clip, so finite
    else:
        p_neg = p
        log_1m_pneg = F.logsigmoid(-logits).clamp(min=log_eps)
    loss_pos = log_p
    loss_neg = log_1m_pneg
    if gamma_pos > 0:
        loss_pos = loss_pos * (1.0 - p).pow(gamma_pos)
    if gamma_neg > 0:
        loss_neg = loss_neg * p_neg.pow(gamma_neg)
    loss = -(y * loss_pos + (1.0 - y) * loss_neg)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum(dim=1).mean()


class AsymmetricLoss(nn.Module):
    """Module form of :func:`asymmetric_loss`; ``AsymmetricLoss(clip=0)`` is the simplified variant."""

    def __init__(
        self,
        gamma_neg: float = 4.0,
        gamma_pos: float = 0.0,
        clip: float = 0.05,
        eps: float = 1e-8,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return asymmetric_loss(
            logits,
            targets,
            gamma_neg=self.gamma_neg,
            gamma_pos=self.gamma_pos,
            clip=self.clip,
            eps=self.eps,
            reduction=self.reduction,
        )
