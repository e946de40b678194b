"""Attack losses: per-sample sums of per-label terms on logits, with optional per-label weights.

Every loss maps logits ``z (N, K)``, a target ``t (N, K)`` in {0, 1} and optional weights ``w`` (``(K,)`` or
``(N, K)``, values in ``[0, 1]``) to a per-sample loss ``(N,)`` that the attack *descends* (the loss is small
when the prediction matches the target). Per-sample sums keep samples independent in a batch; the authors'
mean reduction differs by a constant factor that the attack's gradient normalisation removes
(SPEC-reference-code §2, SPEC.md "Losses").

=========  ===================================================================  ==========================
name       per-label term, ``P = sigmoid(z)``                                   source
=========  ===================================================================  ==========================
bce        ``-[t log P + (1-t) log(1-P)]`` (stable: ``t softplus(-z) + (1-t) softplus(z)``)  seed eq. 2
linear     ``t (1-P) + (1-t) P``  (eq. 5 as the authors' code has it; the paper's sign is a typo)    seed eq. 5
slam       ``(1 - q p) linear + q p bce``, ``p`` from the flip profile ``E(eps)``                    seed eq. 6-7
hinge      ``t max(0, m - P) + (1-t) max(0, P - m)``, ``m = 0.5``                  authors' code
mse        ``t (1-P)^2 + (1-t) P^2``                                             authors' code
=========  ===================================================================  ==========================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from labelflip._registry import Param, Registry
from labelflip._validation import LabelflipError, check_float, fail
from labelflip.estimate import FlipEstimate, PolynomialEstimate

__all__ = [
    "LOSSES",
    "AttackLoss",
    "BCELoss",
    "HingeLoss",
    "LinearLoss",
    "MSELoss",
    "SLAMLoss",
    "create_loss",
    "list_losses",
]


LOSSES: Registry[Any] = Registry("loss")
"""The attack losses by name (``list_losses()``, ``create_loss("slam", profile=...)``)."""


class AttackLoss:
    """Base class. Subclasses implement :meth:`terms` (the per-label terms ``(N, K)``).

    ``depends_on_eps`` tells the engine whether the loss changes with the budget; losses that do not
    (BCE, Linear, Hinge, MSE) let the engine share one trajectory across a list of budgets.
    """

    name: str = "loss"
    depends_on_eps: bool = False

    def terms(self, logits: Tensor, target: Tensor, eps: Tensor | None = None) -> Tensor:
        """Per-label loss terms ``(N, K)``. ``eps`` is a per-sample budget ``(N,)`` (only SLAM reads it)."""
        raise NotImplementedError

    def __call__(
        self,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        eps: Tensor | float | None = None,
    ) -> Tensor:
        """Per-sample loss ``(N,)``: the (weighted) sum of :meth:`terms` over labels."""
        if eps is not None and not isinstance(eps, Tensor):
            eps = torch.full((logits.shape[0],), float(eps), dtype=torch.float64)
        t = self.terms(logits, target.to(logits.dtype), eps)
        if weight is not None:
            t = t * weight.to(t.dtype)
        return t.sum(dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _bce_terms(logits: Tensor, target: Tensor) -> Tensor:
    # -[t log s(z) + (1-t) log(1-s(z))] = t softplus(-z) + (1-t) softplus(z): finite for every logit.
    return target * F.softplus(-logits) + (1 - target) * F.softplus(logits)


def _linear_terms(logits: Tensor, target: Tensor) -> Tensor:
    p = torch.sigmoid(logits)
    return target * (1 - p) + (1 - target) * p


@LOSSES.register("bce")
class BCELoss(AttackLoss):
    """Binary cross-entropy on logits (seed eq. 2), numerically stable: never Inf, gradient ``P - t``."""

    name = "bce"

    def terms(self, logits: Tensor, target: Tensor, eps: Tensor | None = None) -> Tensor:
        return _bce_terms(logits, target)


@LOSSES.register("linear")
class LinearLoss(AttackLoss):
    """Linear loss ``t (1-P) + (1-t) P`` (seed eq. 5, sign as in the authors' code).

    Its gradient in the logit is ``-/+ P(1-P)``: largest at ``P = 0.5``, so labels close to the threshold get
    the most budget (the greedy behaviour the paper wants at small budgets).
    """

    name = "linear"

    def terms(self, logits: Tensor, target: Tensor, eps: Tensor | None = None) -> Tensor:
        return _linear_terms(logits, target)


@LOSSES.register(
    "hinge", params=[Param("margin", float, 0.5, "the probability a label must cross, in (0, 1)", 0.0, 1.0)]
)
class HingeLoss(AttackLoss):
    """``t max(0, m - P) + (1-t) max(0, P - m)``: zero once a label crossed ``margin`` (authors' code)."""

    name = "hinge"

    def __init__(self, margin: float = 0.5) -> None:
        self.margin = check_float(
            "HingeLoss", "margin", margin, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False
        )

    def terms(self, logits: Tensor, target: Tensor, eps: Tensor | None = None) -> Tensor:
        p = torch.sigmoid(logits)
        return target * (self.margin - p).clamp_min(0) + (1 - target) * (p - self.margin).clamp_min(0)

    def __repr__(self) -> str:
        return f"HingeLoss(margin={self.margin})"


@LOSSES.register("mse")
class MSELoss(AttackLoss):
    """Squared error on probabilities ``t (1-P)^2 + (1-t) P^2`` (authors' code)."""

    name = "mse"

    def terms(self, logits: Tensor, target: Tensor, eps: Tensor | None = None) -> Tensor:
        p = torch.sigmoid(logits)
        return target * (1 - p).square() + (1 - target) * p.square()


@LOSSES.register("slam", params=[Param("q", float, 0.5, "the maximum BCE share in [0, 1]", 0.0, 1.0)])
class SLAMLoss(AttackLoss):
    """SLAM (seed eq. 6-7): ``(1 - q p) * Linear + q p * BCE``, with weights applied to both terms.

    ``p = 1`` if ``eps >= eps_max`` (the authors' ``>=``; the paper writes ``>``), else
    ``p = clip(E(eps), 0, K) / K`` where ``E(eps) = sum_k coefficients[k] * eps**k`` is the model's flip
    profile (coefficients in **increasing** degree, as ``numpy.polynomial.polynomial.polyval``). The paper's
    "p = 0 for eps <= 0" follows from the clip only when ``E(0) <= 0``; at ``eps = 0`` the attack makes no step
    anyway. K is the number of labels of the logits the loss sees.

    Build it from a :class:`labelflip.profile.Profile` (``SLAMLoss(profile=prof)``) or from explicit
    ``coefficients`` and ``eps_max``.

    Args:
        profile: an object with ``coefficients`` and ``eps_max`` attributes (a flip profile).
        coefficients: polynomial coefficients of ``E``, increasing degree.
        eps_max: budget at which the profile saturates; ``p = 1`` from there on.
        q: maximum BCE share in the mix, in ``[0, 1]`` (paper: 0.5; Table IX: 0.25-1).
    """

    name = "slam"
    depends_on_eps = True

    def __init__(
        self,
        profile: FlipEstimate | None = None,
        *,
        coefficients: Sequence[float] | np.ndarray | None = None,
        eps_max: float | None = None,
        q: float = 0.5,
    ) -> None:
        if profile is not None:
            if coefficients is not None or eps_max is not None:
                raise fail("SLAMLoss", "profile", "given alone (not with coefficients/eps_max)", profile)
            if not isinstance(profile, FlipEstimate):
                raise fail(
                    "SLAMLoss",
                    "profile",
                    "a flip estimate (a Profile, or anything with eps_max and estimate(eps))",
                    profile,
                    "build one with labelflip.analysis.probe_profile(...), load one with Profile.load(path), or pass "
                    "coefficients=[c0, c1, ...] and eps_max=... instead.",
                )
        else:
            if coefficients is None or eps_max is None:
                raise fail(
                    "SLAMLoss",
                    "profile",
                    "given, or both coefficients and eps_max",
                    profile,
                    "SLAM needs the model's flip profile E(eps): pass profile=..., or coefficients=[c0, c1, ...] "
                    "(increasing degree) and eps_max=...",
                )
            try:
                coefs = np.asarray(coefficients, dtype=np.float64).ravel()
            except (TypeError, ValueError) as exc:
                raise fail(
                    "SLAMLoss", "coefficients", "a sequence of floats (increasing degree)", coefficients
                ) from exc
            if coefs.size == 0 or not np.all(np.isfinite(coefs)):
                raise fail("SLAMLoss", "coefficients", "a non-empty sequence of finite floats", coefficients)
            profile = PolynomialEstimate(tuple(float(c) for c in coefs), float(eps_max))
        self.profile: FlipEstimate = profile
        self.eps_max = check_float("SLAMLoss", "eps_max", profile.eps_max, low=0.0, low_inclusive=False)
        self.q = check_float("SLAMLoss", "q", q, low=0.0, high=1.0)

    def flip_estimate(self, eps: float) -> float:
        """``E(eps)``: the profile's estimate of the achievable mean flips at budget ``eps``."""
        return float(self.profile.estimate(float(eps)))

    def mix_weight(self, eps: float, num_labels: int) -> float:
        """``q * p`` (seed eq. 6-7), the BCE share at budget ``eps`` for a model with ``num_labels`` labels."""
        p = 1.0 if eps >= self.eps_max else min(1.0, max(0.0, self.flip_estimate(eps)) / num_labels)
        return self.q * p

    def terms(self, logits: Tensor, target: Tensor, eps: Tensor | None = None) -> Tensor:
        if eps is None:
            raise LabelflipError(
                "SLAMLoss needs the attack budget eps (its BCE/Linear mix depends on it). Fix: call it "
                "through an attack (MIFGSM passes eps), or pass eps=... explicitly."
            )
        k = logits.shape[1]
        cache: dict[float, float] = {}
        mix = [cache.setdefault(e, self.mix_weight(e, k)) for e in eps.tolist()]
        w = torch.tensor(mix, dtype=logits.dtype, device=logits.device).unsqueeze(1)
        return (1 - w) * _linear_terms(logits, target) + w * _bce_terms(logits, target)

    def __repr__(self) -> str:
        coefs = getattr(self.profile, "coefficients", None)
        order = f", order={len(coefs) - 1}" if coefs is not None else ""
        return f"SLAMLoss(eps_max={self.eps_max:.6g}, q={self.q}{order})"


def list_losses(pattern: str = "*") -> list[str]:
    """Names of the registered losses matching a glob ``pattern``."""
    return LOSSES.list(pattern)


def create_loss(loss: str | AttackLoss, **kwargs: Any) -> AttackLoss:
    """A loss by spec (``"bce"``, ``"linear"``, ``"hinge:margin=0.6"``, ``"slam"`` with ``profile=``) or an
    instance as is."""
    if isinstance(loss, AttackLoss):
        if kwargs:
            raise fail("create_loss", "kwargs", "empty when a loss instance is given", kwargs)
        return loss
    if not isinstance(loss, str):
        raise fail("create_loss", "loss", "a registered loss name or an AttackLoss", loss, "see list_losses().")
    return LOSSES.create(loss, **kwargs)
