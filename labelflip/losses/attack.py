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

**BCE formulations** (``formulation=``; SPEC-reference-code §2, §11). ``"stable"`` (default) computes BCE on the
logits: finite everywhere, gradient ``P - t`` in the logit, so a label keeps being pushed however saturated it
is. ``"authors"`` is the authors' ``torch.nn.BCELoss`` on ``P = sigmoid(z)`` (each log clamped at ``-100``): once
``sigmoid`` rounds to exactly 1 in float32 (``z`` above about 17) the gradient is **zero**, and below
``z`` of about -27.6 it vanishes (``log`` clamped), so such labels are no longer pushed. On a saturated model this
changes flips (the issue's example: 2.00 authors vs 1.78 stable at eps 0.002). The ``paper`` preset selects it
(``MIFGSM(..., bce_formulation="authors")`` applies it to the BCE terms of BCE, SLAM and the subset attacks).
"""

from __future__ import annotations

import copy
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
    "check_flip_estimate",
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

    def with_bce(self, formulation: str) -> AttackLoss:
        """This loss with its BCE terms in ``formulation`` (``"stable"`` or ``"authors"``); losses without BCE
        terms return themselves."""
        _check_formulation(type(self).__name__, formulation)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


BCE_FORMULATIONS = ("stable", "authors")


def _check_formulation(owner: str, formulation: str) -> str:
    if formulation not in BCE_FORMULATIONS:
        raise fail(
            owner,
            "formulation",
            "'stable' (BCE on logits) or 'authors' (BCE on probabilities, as the authors' code)",
            formulation,
        )
    return formulation


def _bce_terms(logits: Tensor, target: Tensor, formulation: str = "stable") -> Tensor:
    if formulation == "authors":
        # torch.nn.BCELoss on sigmoid outputs (logs clamped at -100): zero gradient once sigmoid rounds to 1.
        return F.binary_cross_entropy(torch.sigmoid(logits), target, reduction="none")
    # -[t log s(z) + (1-t) log(1-s(z))] = t softplus(-z) + (1-t) softplus(z): finite for every logit.
    return target * F.softplus(-logits) + (1 - target) * F.softplus(logits)


def _linear_terms(logits: Tensor, target: Tensor) -> Tensor:
    p = torch.sigmoid(logits)
    return target * (1 - p) + (1 - target) * p


@LOSSES.register(
    "bce",
    params=[Param("formulation", str, "stable", "'stable' (on logits) or 'authors' (on probabilities, log >= -100)")],
)
class BCELoss(AttackLoss):
    """Binary cross-entropy (seed eq. 2). ``formulation="stable"`` (default): on logits, never Inf, gradient
    ``P - t``. ``"authors"``: the authors' BCE on probabilities (see the module docstring: zero gradient once
    ``sigmoid`` rounds to 1)."""

    name = "bce"

    def __init__(self, formulation: str = "stable") -> None:
        self.formulation = _check_formulation("BCELoss", formulation)

    def terms(self, logits: Tensor, target: Tensor, eps: Tensor | None = None) -> Tensor:
        return _bce_terms(logits, target, self.formulation)

    def with_bce(self, formulation: str) -> AttackLoss:
        return BCELoss(formulation)

    def __repr__(self) -> str:
        return "BCELoss()" if self.formulation == "stable" else f"BCELoss(formulation={self.formulation!r})"


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
        formulation: the BCE term's formulation, ``"stable"`` or ``"authors"`` (see :class:`BCELoss`).

    A measured profile is checked (:func:`check_flip_estimate`): one that stopped at its probe cap is refused, and
    the logits must have the profile's K labels.
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
        formulation: str = "stable",
    ) -> None:
        self.formulation = _check_formulation("SLAMLoss", formulation)
        if profile is not None:
            if coefficients is not None or eps_max is not None:
                raise fail("SLAMLoss", "profile", "given alone (not with coefficients/eps_max)", profile)
            check_flip_estimate("SLAMLoss", profile)
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
        check_flip_estimate("SLAMLoss", self.profile, num_labels=k)
        cache: dict[float, float] = {}
        mix = [cache.setdefault(e, self.mix_weight(e, k)) for e in eps.tolist()]
        w = torch.tensor(mix, dtype=logits.dtype, device=logits.device).unsqueeze(1)
        return (1 - w) * _linear_terms(logits, target) + w * _bce_terms(logits, target, self.formulation)

    def with_bce(self, formulation: str) -> AttackLoss:
        out = copy.copy(self)
        out.formulation = _check_formulation("SLAMLoss", formulation)
        return out

    def __repr__(self) -> str:
        coefs = getattr(self.profile, "coefficients", None)
        order = f", order={len(coefs) - 1}" if coefs is not None else ""
        form = f", formulation={self.formulation!r}" if self.formulation != "stable" else ""
        return f"SLAMLoss(eps_max={self.eps_max:.6g}, q={self.q}{order}{form})"


def check_flip_estimate(
    owner: str, profile: Any, *, num_labels: int | None = None, norm: str | None = None, param: str = "profile"
) -> Any:
    """Check a flip estimate before SLAM, CLASS or random subsets use it; returns it.

    Refuses (naming the artefact and the fix): anything that is not a :class:`FlipEstimate`; a measured profile
    that stopped at its probe cap (``stop_reason == "cap"``) unless it was accepted knowingly
    (``Profile.accept_cap()``); a profile of a model with another number of labels than ``num_labels`` (the
    model's K); a profile probed under another norm than ``norm``. Bare estimates (:class:`PolynomialEstimate`)
    carry none of these facts and pass. ``param`` names the artefact in errors (``"--profile"``).
    """
    if not isinstance(profile, FlipEstimate):
        raise fail(
            owner,
            param,
            "a flip estimate (a Profile, or anything with eps_max and estimate(eps))",
            profile,
            "build one with labelflip.analysis.probe_profile(...), load one with Profile.load(path), or pass "
            "coefficients=[c0, c1, ...] and eps_max=... instead.",
        )
    if getattr(profile, "stop_reason", None) == "cap" and not getattr(profile, "cap_accepted", False):
        cap = getattr(profile, "max_steps", None)
        raise fail(
            owner,
            param,
            "a profile whose probe converged (its eps_max is where flips saturate)",
            f"a profile that stopped at its cap ({f'max_steps={cap}, ' if cap else ''}eps_max={profile.eps_max:.5g})",
            "re-probe with a larger cap (probe_profile(max_steps=...), `--max-steps`, study profile.max_steps), or "
            "use it knowingly: profile.accept_cap(), `--allow-capped-profile`, study profile.allow_capped: true.",
        )
    k = getattr(profile, "num_labels", None)
    if num_labels is not None and isinstance(k, int) and k != num_labels:
        raise fail(
            owner,
            param,
            f"a profile of a model with K = {num_labels} labels (this model)",
            f"a profile of a model with K = {k}",
            "probe the profile of this model (probe_profile(model, x_heldout) or `labelflip profile`).",
        )
    pnorm = getattr(profile, "norm", None)
    if norm is not None and isinstance(pnorm, str) and pnorm != norm:
        raise fail(
            owner,
            param,
            f"a profile probed with norm={norm!r} (the attack's norm)",
            f"a {pnorm} profile",
            f"probe it with norm={norm!r} (`labelflip profile --norm {norm}`), or attack with norm={pnorm!r}.",
        )
    return profile


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
