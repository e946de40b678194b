"""Model flip profiles ``E(eps)`` (seed paper §V-C and App. L; SPEC.md "Flip profile").

A profile estimates how many labels an attack can flip on average at budget ``eps``. It is measured by
probing: two MI-FGSM trajectories (BCE and Linear, all labels, ``t = 1 - clean prediction``) are stepped in
lock-step and the mean flips on the clamped iterate are recorded every ``interval`` steps, i.e. at
``eps_j = j * interval * alpha``. Iteration ``k`` of a trajectory equals a separate attack with ``eps = k *
alpha`` (prefix property), so one run gives the whole curve.

Stopping rule (authors' code): with increments ``delta_j = f_j - f_(j-1)`` of the fitted curve, stop as soon
as ``delta_last / delta_ref < rel_tol`` (1 %), where ``delta_ref`` is the first increment. Guards the authors
lack: a zero first increment does not divide by zero (the first *positive* increment becomes the reference),
a negative dip stops the probe (the curve has peaked), and ``max_steps`` caps the probe. ``eps_max`` is the eps
at which the rule **first fired** (SPEC.md), as the authors' probe, which stops there; ``min_points`` extra
probe points after it (default ``order + 2`` in all) only feed the polynomial fit.

The cap is a number of MI-FGSM steps (default :data:`DEFAULT_MAX_STEPS` = 2000), so it means the same for L-inf
(step 1/2560: eps 0.78) and L2 (step ``alpha * sqrt(H*W)``: eps 25 at 32x32, 350 at 448x448); the built-in models
converge after 500-800 L-inf steps. A profile that stopped at the cap (``stop_reason="cap"``) has an ``eps_max``
that says nothing about saturation: SLAM, CLASS, random subsets and budget grids refuse it (:func:`check_profile`,
:meth:`Profile.accept_cap` to use it knowingly).

The curve fitted is ``max(BCE, Linear)`` (``curve="max"``, the paper) or BCE alone (``curve="bce"``, the
authors' code, which computes the Linear curve and throws it away; labelflip then skips it). The fit is an
ordinary least-squares polynomial of order 4 (or 3) through all points including the origin, coefficients in
increasing degree (``numpy.polynomial.polynomial.polyfit``).

The probe keeps every image's flip count at every point (``image_flips_bce`` / ``image_flips_linear``), from
which ``eps_max_ci``, a 95 % percentile-bootstrap interval of ``eps_max`` over the probe images, is computed
(:mod:`labelflip.analysis.profile_ci`: what it covers and what it does not).
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from labelflip._validation import LabelflipWarning, check_choice, check_float, check_int, fail
from labelflip.analysis.artefact import Artefact
from labelflip.analysis.profile_ci import BOOTSTRAP_RESAMPLES, CI_LEVEL, bootstrap_eps_max
from labelflip.attacks import MIFGSM, clean_pass, count_flips, prepare_inputs
from labelflip.estimate import polynomial_estimate
from labelflip.losses import check_flip_estimate
from labelflip.models import MultiLabelModel

__all__ = [
    "DEFAULT_MAX_STEPS",
    "PAPER_FRACTIONS",
    "Profile",
    "check_profile",
    "fit_profile_polynomial",
    "probe_profile",
    "stopping_rule",
]

log = logging.getLogger(__name__)
_OWNER = "probe_profile"
_FORMAT = "labelflip.profile/1"

PAPER_FRACTIONS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
"""The paper's budget grid as fractions of ``eps_max`` (SPEC-reference-code §8)."""

DEFAULT_MAX_STEPS = 2000
"""Default probe cap in MI-FGSM steps (L-inf: eps 0.78; never binds for the built-in models, which converge after
500-800 steps; the paper's profiles stop after 80-600 steps)."""


@dataclass
class Profile(Artefact):
    """A model's flip profile: polynomial ``E(eps)`` plus the measured points it was fitted to. A
    :class:`~labelflip.estimate.FlipEstimate` (SLAM, CLASS and random subsets read it).

    Attributes:
        coefficients: polynomial coefficients, **increasing** degree (``E(eps) = sum c_k eps^k``).
        eps: probe budgets ``eps_j`` (pixel units), starting at 0.
        flips: the fitted curve's mean flips at ``eps`` (max of BCE and Linear, or BCE).
        flips_bce, flips_linear: the two measured curves (``flips_linear`` empty for ``curve="bce"``).
        eps_max: where the stopping rule first fired (flips saturate); SLAM uses ``p = 1`` from there on.
            Points after it (``min_points``) only feed the fit.
        order, interval, alpha, curve, norm, rel_tol: how the profile was measured.
        num_labels, num_samples: K and the number of probe samples.
        stop_reason: ``"converged"``, ``"dip"`` or ``"cap"`` (the probe hit ``max_steps``: refused by the
            attacks and budget grids unless :meth:`accept_cap` is called).
        model_fingerprint, seed: provenance, when known.
        max_steps: the probe's cap in steps (``None`` in profiles saved before it was recorded).
        image_flips_bce, image_flips_linear: ``(points, images)`` flips of every probe image at every point
            (``None`` in profiles saved before they were recorded; ``image_flips_linear`` ``None`` for ``"bce"``).
        eps_max_ci: 95 % percentile-bootstrap interval ``(low, high)`` of ``eps_max`` over the ``num_samples``
            probe images (:meth:`bootstrap_eps_max`), ``None`` when unknown; ``ci_resamples``: its resamples.
    """

    coefficients: list[float]
    eps: list[float]
    flips: list[float]
    flips_bce: list[float]
    flips_linear: list[float]
    eps_max: float
    order: int
    interval: int
    alpha: float
    curve: str
    norm: str
    rel_tol: float
    num_labels: int
    num_samples: int
    stop_reason: str
    model_fingerprint: str | None = None
    seed: int | None = None
    notes: list[str] = field(default_factory=list)
    max_steps: int | None = None
    image_flips_bce: list[list[int]] | None = None
    image_flips_linear: list[list[int]] | None = None
    eps_max_ci: tuple[float, float] | None = None
    ci_resamples: int | None = None

    FORMAT: ClassVar[str] = _FORMAT
    CREATE_HINT: ClassVar[str] = "create one with `labelflip profile` or probe_profile(...).save(path)."

    def __post_init__(self) -> None:
        if self.eps_max_ci is not None:  # JSON stores a list
            self.eps_max_ci = (float(self.eps_max_ci[0]), float(self.eps_max_ci[1]))

    def bootstrap_eps_max(
        self, *, resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL, seed: int | None = None
    ) -> tuple[float, float]:
        """Percentile-bootstrap interval ``(low, high)`` of ``eps_max`` over the probe images (resampled with
        replacement, the stopping rule re-applied; :func:`~labelflip.analysis.profile_ci.bootstrap_eps_max`).
        ``seed`` defaults to the profile's probe seed (0 if unknown); refused for a profile saved without the
        per-image flips."""
        if self.image_flips_bce is None:
            raise fail(
                "Profile.bootstrap_eps_max",
                "profile",
                "a profile with per-image flips (probed by this labelflip version)",
                "a profile without them",
                "re-probe the profile (`labelflip profile`).",
            )
        mats = [self.image_flips_bce] + ([self.image_flips_linear] if self.image_flips_linear else [])
        seed = (self.seed or 0) if seed is None else seed
        ci, _, _ = bootstrap_eps_max(self.eps, mats, rel_tol=self.rel_tol, resamples=resamples, level=level, seed=seed)
        return ci

    def eps_max_text(self) -> str:
        """``eps_max = 0.234 (95% CI 0.168-0.234, 40 probe images)`` (the interval left out when unknown)."""
        ci = f"95% CI {self.eps_max_ci[0]:.3g}-{self.eps_max_ci[1]:.3g}, " if self.eps_max_ci is not None else ""
        return f"eps_max = {self.eps_max:.3g} ({ci}{self.num_samples} probe images)"

    def estimate(self, eps: float | Sequence[float] | np.ndarray) -> np.ndarray | float:
        """``E(eps)``: estimated mean flips (unclipped polynomial value)."""
        return polynomial_estimate(self.coefficients, eps)

    def budgets(self, fractions: Sequence[float] = PAPER_FRACTIONS) -> list[float]:
        """Budgets at fractions of ``eps_max`` (the paper's grid: 5-100 %, SPEC-reference-code §8).

        Refuses a profile that stopped at its cap (see :meth:`accept_cap`)."""
        check_profile(self, owner="Profile.budgets")
        return [float(f) * self.eps_max for f in fractions]

    @property
    def cap_accepted(self) -> bool:
        """Whether :meth:`accept_cap` marked this (capped) profile as usable (not saved with the artefact)."""
        return bool(getattr(self, "_cap_accepted", False))

    def accept_cap(self) -> Profile:
        """A copy that SLAM, CLASS, random subsets and budget grids use although the probe stopped at its cap
        (``stop_reason="cap"``): its ``eps_max`` is then the cap, not where flips saturate. Prefer re-probing
        with a larger ``max_steps``."""
        out = replace(self, notes=list(self.notes))
        out._cap_accepted = True  # type: ignore[attr-defined]
        return out


def check_profile(
    profile: Profile,
    *,
    owner: str,
    name: str = "profile",
    num_labels: int | None = None,
    norm: str | None = None,
    fingerprint: str | None = None,
    allow_capped: bool = False,
) -> Profile:
    """Check a profile against what it is used for; errors name the artefact ``name`` and the fix. Returns the
    profile (a copy marked by :meth:`Profile.accept_cap`, with a warning, when a capped one is allowed).

    * ``fingerprint``: when both the profile and the caller know the model's fingerprint, they must match;
    * ``num_labels`` (the model's K) and ``norm`` (the attack's) must be the profile's;
    * ``stop_reason == "cap"`` is refused unless ``allow_capped`` (or an earlier :meth:`Profile.accept_cap`).
    """
    if not isinstance(profile, Profile):
        raise fail(owner, name, "a Profile", type(profile).__name__, Profile.CREATE_HINT)
    if fingerprint is not None and profile.model_fingerprint is not None and profile.model_fingerprint != fingerprint:
        raise fail(
            owner,
            name,
            f"a profile of this model (fingerprint {fingerprint})",
            f"a profile of model {profile.model_fingerprint}",
            "probe the profile of this model (`labelflip profile --model ...`), or load the matching file.",
        )
    if allow_capped and profile.stop_reason == "cap" and not profile.cap_accepted:
        warnings.warn(
            f"{owner}: {name} stopped at its cap (eps_max = {profile.eps_max:.5g}) and is used as allowed: budgets, "
            "SLAM's p and CLASS's k rest on an eps_max that is not where flips saturate.",
            LabelflipWarning,
            stacklevel=2,
        )
        profile = profile.accept_cap()
    return check_flip_estimate(owner, profile, num_labels=num_labels, norm=norm, param=name)


def fit_profile_polynomial(eps: Sequence[float], flips: Sequence[float], order: int = 4) -> np.ndarray:
    """Least-squares polynomial through ``(eps_j, flips_j)``, coefficients in increasing degree.

    Raises a clear error when there are fewer than ``order + 1`` points (the fit would be underdetermined).
    """
    order = check_int("fit_profile_polynomial", "order", order, low=1)
    e = np.asarray(eps, dtype=np.float64)
    f = np.asarray(flips, dtype=np.float64)
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(f))):
        raise fail("fit_profile_polynomial", "flips", "finite (no NaN/Inf in eps or flips)", f)
    if e.shape != f.shape or e.ndim != 1:
        raise fail("fit_profile_polynomial", "flips", f"a 1-D sequence matching eps ({e.shape})", f.shape)
    if e.size < order + 1:
        raise fail(
            "fit_profile_polynomial",
            "eps",
            f"at least order + 1 = {order + 1} points",
            e.size,
            "probe with a smaller interval or fit a lower order.",
        )
    return np.polynomial.polynomial.polyfit(e, f, order)


def stopping_rule(flips: Sequence[float], *, rel_tol: float = 0.01, min_points: int = 2) -> str | None:
    """Decide whether a profile probe stops after its latest measurement (seed App. L, with guards).

    ``flips`` is the curve measured so far, ``f_0 = flips[0]`` at eps 0. With increments ``d_j = f_j -
    f_(j-1)`` and the reference ``d_ref`` = the first **positive** increment (the authors use ``d_1`` and
    divide by zero when it is 0), return ``"dip"`` when the last increment is negative, ``"converged"`` when
    ``d_last / d_ref < rel_tol``, else ``None`` (keep probing). Never stops before ``min_points`` points or
    before a positive increment was seen.
    """
    if len(flips) < max(2, min_points):
        return None
    deltas = [b - a for a, b in itertools.pairwise(flips)]
    ref = next((d for d in deltas if d > 0), None)
    if ref is None:
        return None
    last = deltas[-1]
    if last < 0:
        return "dip"
    if last / ref < rel_tol:
        return "converged"
    return None


@torch.no_grad()
def _image_flips(model: MultiLabelModel, x_adv: Tensor, clean_pred: Tensor) -> Tensor:
    """Flips per image ``(N,)`` int64 of the iterate ``x_adv``."""
    pred = model.predict_from_probabilities(torch.sigmoid(model(x_adv)))
    return count_flips(clean_pred, pred)[0].cpu()


def probe_profile(
    model: MultiLabelModel | nn.Module,
    x: Tensor,
    *,
    interval: int = 10,
    order: int = 4,
    curve: Literal["max", "bce"] = "max",
    rel_tol: float = 0.01,
    max_steps: int = DEFAULT_MAX_STEPS,
    norm: Literal["linf", "l2"] = "linf",
    alpha: float | None = None,
    min_points: int | None = None,
    engine: Mapping[str, Any] | None = None,
    model_fingerprint: str | None = None,
    seed: int | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> Profile:
    """Measure a model's flip profile on inputs ``x`` ``(N, ...)`` (seed §V-C, App. L).

    Args:
        model: the classifier (wrapped with defaults if a bare module).
        x: probe inputs in the model's bounds; 100 in the paper. Use held-out data, not the evaluation samples.
        interval: MI-FGSM steps between two measurements (10; the authors used 50 for Q2L x NUS-WIDE).
        order: polynomial order (4 default, 3 allowed; any >= 1 accepted).
        curve: ``"max"`` (paper: max of BCE and Linear curves) or ``"bce"`` (authors' code).
        rel_tol: stop when the last increment falls below ``rel_tol`` x the reference increment.
        max_steps: cap on the probe in MI-FGSM steps (the same meaning for L-inf and L2; default
            :data:`DEFAULT_MAX_STEPS`). A probe that reaches it gets ``stop_reason="cap"`` and a warning.
        norm, alpha: attack geometry (see :class:`MIFGSM`).
        min_points: points measured in all (past the stop, never past ``max_steps``) so the fit is
            overdetermined; default ``order + 2``. ``eps_max`` stays where the rule first fired.
        engine: further MI-FGSM settings of the probe trajectories (``mu``, ``normalize``, ``bce_formulation``,
            ...; see :class:`MIFGSM`), e.g. the ``paper`` preset's authors' BCE.
        model_fingerprint, seed: provenance recorded in the artefact.
        progress: optional callback ``(step, current_mean_flips)`` after each measurement.
    """
    interval = check_int(_OWNER, "interval", interval, low=1)
    order = check_int(_OWNER, "order", order, low=1)
    curve = check_choice(_OWNER, "curve", curve, ("max", "bce"))
    rel_tol = check_float(_OWNER, "rel_tol", rel_tol, low=0.0)
    max_steps = check_int(_OWNER, "max_steps", max_steps, low=1)
    norm = check_choice(_OWNER, "norm", norm, ("linf", "l2"))
    if max_steps < order * interval:
        raise fail(
            _OWNER,
            "max_steps",
            f"at least one interval per fitted coefficient, order x interval = {order * interval} steps",
            max_steps,
            "raise max_steps (the cap), or lower order or interval.",
        )
    min_pts = order + 2 if min_points is None else check_int(_OWNER, "min_points", min_points, low=2)
    m, x = prepare_inputs(model, x, _OWNER)

    opts = dict(engine or {})
    attacks = {"bce": MIFGSM(m, "bce", norm=norm, alpha=alpha, **opts)}
    if curve == "max":
        attacks["linear"] = MIFGSM(m, "linear", norm=norm, alpha=alpha, **opts)
    step = attacks["bce"].step_size(x)

    with m.eval_mode():
        _, clean_pred = clean_pass(m, x)
        target = (~clean_pred).to(x.dtype)
        trajs = {k: a.trajectory(x, target=target) for k, a in attacks.items()}
        per_image = {k: [_image_flips(m, t.final(), clean_pred)] for k, t in trajs.items()}
        curves = {k: [float(v[0].double().mean())] for k, v in per_image.items()}
        eps_points = [0.0]
        fitted = [max(c[0] for c in curves.values())]
        reason: str | None = None
        stop_at: int | None = None  # index of the point where the rule first fired
        k = 0
        while (reason is None or len(fitted) < min_pts) and k + interval <= max_steps:
            for _ in range(interval):
                for t in trajs.values():
                    t.step()
            k += interval
            for name, t in trajs.items():
                per_image[name].append(_image_flips(m, t.final(), clean_pred))
                curves[name].append(float(per_image[name][-1].double().mean()))
            eps_points.append(k * step)
            fitted.append(max(c[-1] for c in curves.values()))
            if progress is not None:
                progress(k, fitted[-1])
            if reason is None:
                reason = stopping_rule(fitted, rel_tol=rel_tol)
                stop_at = None if reason is None else len(fitted) - 1
        if reason is None:
            reason, stop_at = "cap", len(fitted) - 1

    notes: list[str] = []
    if not any(b > a for a, b in itertools.pairwise(fitted)):
        notes.append("no positive increment was observed: the model could not be attacked within max_steps")
    if reason == "cap":
        notes.append(f"stopped at the cap max_steps={max_steps} (eps {eps_points[-1]:.5g}) before converging")
    for note in notes:
        warnings.warn(f"probe_profile: {note}.", LabelflipWarning, stacklevel=2)
    coefs = fit_profile_polynomial(eps_points, fitted, order)
    eps_max = float(eps_points[stop_at])
    images = {k: torch.stack(v).tolist() for k, v in per_image.items()}  # (points, N) each
    ci, _, censored = bootstrap_eps_max(
        eps_points, list(images.values()), rel_tol=rel_tol, seed=0 if seed is None else seed
    )
    if censored > (1 - CI_LEVEL) / 2 and reason != "cap":  # a capped probe says so already
        notes.append(f"the stopping rule did not fire within the probe in {censored:.0%} of the bootstrap resamples")
    log.info("profile: eps_max=%.5g after %d steps (%s), E(eps_max)=%.2f", eps_max, k, reason, fitted[stop_at])
    return Profile(
        coefficients=[float(c) for c in coefs],
        eps=eps_points,
        flips=fitted,
        flips_bce=curves["bce"],
        flips_linear=curves.get("linear", []),
        eps_max=eps_max,
        order=order,
        interval=interval,
        alpha=step,
        curve=curve,
        norm=norm,
        rel_tol=rel_tol,
        num_labels=int(clean_pred.shape[1]),
        num_samples=int(x.shape[0]),
        stop_reason=reason,
        model_fingerprint=model_fingerprint,
        seed=seed,
        notes=notes,
        max_steps=max_steps,
        image_flips_bce=images["bce"],
        image_flips_linear=images.get("linear"),
        eps_max_ci=ci,
        ci_resamples=BOOTSTRAP_RESAMPLES,
    )
