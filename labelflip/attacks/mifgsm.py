"""The MI-FGSM maximum-flip engine (seed paper App. I, Algorithm 2; SPEC.md "MI-FGSM").

L-inf (the paper's main attack)::

    alpha = 1/2560, n = floor(eps / alpha + 1e-9), mu = 1, g_0 = 0, x_0 = x
    repeat n times:
        grad  = d loss(F(x_k), t; w) / d x_k                 # loss descends toward the target t
        g     = mu * g + grad / ||grad||_1                   # L1 norm per sample (SPEC; "batch" for parity)
        x_k+1 = x_k - alpha * sign(g)
    x_adv = clamp(x_n, bounds)                               # clip="final": the only clamp (authors)

Each step moves every pixel by at most alpha, so ``||x_adv - x||_inf <= n * alpha <= eps`` without any
projection; the final result is additionally clamped to the eps-box, which only removes float32 rounding drift
but, when eps is an exact multiple of alpha (most paper budgets), changes such pixels by up to about 2e-6.
``clip="bounds"`` is the authors' exact final step (a clamp to the bounds only); ``clip="step"`` clamps to the
bounds and the eps-box after every step instead.

L2 (seed App. B): step ``alpha_l2 = alpha_linf * sqrt(H * W)`` (0.175 at 448x448), gradient L2-normalised per
sample, ``n = floor(eps / alpha_l2)``.

* ``l2_mode="project"`` (default): ``x <- x - alpha_l2 * g / ||g||_2`` and projection onto the L2 ball of
  radius eps, so eps is a true bound. With unit-norm steps and ``n * alpha_l2 <= eps`` the iterate cannot
  leave the ball before the last step, so with ``clip="final"`` the projection is applied once at the end
  (this keeps budget sharing bit-exact); ``clip="step"`` projects and clamps after every step.
* ``l2_mode="paper"``: the authors' raw-momentum update ``x <- x - alpha_l2 * g`` with no projection. Its
  perturbation is **not** bounded by eps: it can reach ``alpha_l2 * n (n + 1) / 2``; "eps" is only
  ``n * alpha_l2``. Use it to reproduce Table VIII, not as a threat model.

A **list of budgets** runs in one call. For losses that do not depend on eps (BCE, Linear, Hinge, MSE with
fixed weights) the trajectory of a smaller budget is a prefix of a larger one (alpha is fixed), so one run
checkpointed at every step count gives results bit-identical to separate runs (SPEC-reference-code §10).
With ``clip="step"`` the per-step projection radius is eps, so each budget then runs its own trajectory.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from labelflip._registry import Param
from labelflip._validation import LabelflipError, check_choice, check_float
from labelflip.attacks.base import Batch, FixedBudgetAttack, prepare_inputs
from labelflip.attacks.registry import ATTACKS
from labelflip.attacks.trajectory import ALPHA_LINF, StepRule, Trajectory, num_steps
from labelflip.estimate import FlipEstimate
from labelflip.losses import AttackLoss, SLAMLoss, check_flip_estimate, create_loss
from labelflip.models import MultiLabelModel

__all__ = ["ALPHA_LINF", "MIFGSM", "num_steps"]

_OWNER = "MIFGSM"


@ATTACKS.register("bce", fixed={"loss": "bce"}, label="BCE", description="MI-FGSM, BCE on every label (baseline)")
@ATTACKS.register("linear", fixed={"loss": "linear"}, label="Linear", description="MI-FGSM, Linear loss (seed eq. 5)")
@ATTACKS.register("hinge", fixed={"loss": "hinge"}, label="Hinge", description="MI-FGSM, hinge on P (authors' code)")
@ATTACKS.register("mse", fixed={"loss": "mse"}, label="MSE", description="MI-FGSM, squared error on P (authors' code)")
class MIFGSM(FixedBudgetAttack):
    """Momentum iterative FGSM for maximum label flips, L-inf or L2, over a list of budgets.

    Example::

        attack = MIFGSM(model, loss="bce")
        result = attack(x, eps=[0.002, 0.005, 0.01])      # (3 budgets x N samples)
        result.mean_flips()

    Args:
        model: a :class:`MultiLabelModel` or an ``nn.Module`` returning logits (wrapped with defaults).
        loss: a loss name (``"bce"``, ``"linear"``, ``"slam"``, ``"hinge"``, ``"mse"``) or an
            :class:`AttackLoss` (e.g. ``SLAMLoss(profile=...)``).
        norm: ``"linf"`` or ``"l2"``.
        alpha: step size; default ``1/2560`` (L-inf) or ``alpha_linf * sqrt(H*W)`` (L2; ``sqrt(D)`` for
            ``(N, D)`` vectors).
        mu: momentum decay (``1.0``: plain accumulation as the authors).
        normalize: ``"sample"`` (per-sample norm; equals the authors' batch-size-1 runs) or ``"batch"``
            (one norm over the whole batch, the authors' batched behaviour; for parity only: results then
            depend on ``batch_size``).
        clip: ``"final"`` (project to the eps-ball and clamp to the bounds once at the end), ``"step"`` (clamp and
            project every step) or ``"bounds"`` (L-inf: the authors' exact final clamp to the bounds only).
        bce_formulation: ``"stable"`` (BCE on logits) or ``"authors"`` (BCE on probabilities, as the authors'
            code; zero gradient once sigmoid rounds to 1): applied to the BCE terms of the loss (BCE, SLAM).
        l2_mode: ``"project"`` (true L2 bound) or ``"paper"`` (authors' unprojected raw momentum).
        batch_size: process samples in chunks of this size (memory).
        return_adv: keep the adversarial inputs in the result (``(B, N, ...)``; memory).
    """

    def __init__(
        self,
        model: MultiLabelModel | nn.Module,
        loss: str | AttackLoss = "bce",
        *,
        norm: Literal["linf", "l2"] = "linf",
        alpha: float | None = None,
        mu: float = 1.0,
        normalize: Literal["sample", "batch"] = "sample",
        clip: Literal["final", "step", "bounds"] = "final",
        l2_mode: Literal["project", "paper"] = "project",
        bce_formulation: Literal["stable", "authors"] = "stable",
        batch_size: int | None = None,
        return_adv: bool = False,
    ) -> None:
        super().__init__(model, norm=norm, batch_size=batch_size, return_adv=return_adv)
        self.loss = create_loss(loss)
        if bce_formulation != "stable":
            self.loss = self.loss.with_bce(bce_formulation)
        self.alpha = None if alpha is None else check_float(_OWNER, "alpha", alpha, low=0.0, low_inclusive=False)
        self.mu = check_float(_OWNER, "mu", mu, low=0.0)
        self.normalize = check_choice(_OWNER, "normalize", normalize, ("sample", "batch"))
        self.clip = check_choice(_OWNER, "clip", clip, ("final", "step", "bounds"))
        self.l2_mode = check_choice(_OWNER, "l2_mode", l2_mode, ("project", "paper"))

    def __repr__(self) -> str:
        return (
            f"MIFGSM(loss={self.loss!r}, norm={self.norm!r}, alpha={self.alpha}, mu={self.mu}, "
            f"normalize={self.normalize!r}, clip={self.clip!r}, l2_mode={self.l2_mode!r})"
        )

    def describe(self) -> str:
        return repr(self.loss)

    # ------------------------------------------------------------------ helpers
    def step_size(self, x: Tensor) -> float:
        """The step alpha used for inputs shaped like ``x``."""
        if self.alpha is not None:
            return self.alpha
        if self.norm == "linf":
            return ALPHA_LINF
        spatial = math.prod(x.shape[2:]) if x.ndim >= 3 else x.shape[1]
        return ALPHA_LINF * math.sqrt(spatial)

    def rule(self, x: Tensor) -> StepRule:
        """The update settings for inputs shaped like ``x``."""
        return StepRule(self.norm, self.step_size(x), self.mu, self.normalize, self.clip, self.l2_mode)

    def steps_for(self, budgets: list[float], x: Tensor) -> list[int]:
        alpha = self.step_size(x)
        return [num_steps(e, alpha) for e in budgets]

    # ------------------------------------------------------------------ the attack
    def run(self, batch: Batch, budgets: list[float]) -> Tensor:
        x0, t, weights = batch.x, batch.target, batch.weights
        rule = self.rule(x0)
        steps = self.steps_for(budgets, x0)
        adv: list[Tensor | None] = [None] * len(budgets)
        shareable = not self.loss.depends_on_eps and self.clip != "step"
        for group, wg in self._groups(budgets, weights):
            if shareable:
                # One trajectory for the group; checkpoint at each step count (prefix property).
                radius = self._radius(max(budgets[b] for b in group), x0)
                traj = Trajectory(self.model, self.loss, x0, t, weights=wg, radius=radius, rule=rule)
                for b in sorted(group, key=lambda b: steps[b]):
                    adv[b] = traj.run_to(steps[b]).final(self._radius(budgets[b], x0))
            else:
                (b,) = group
                loss_eps = torch.full((x0.shape[0],), budgets[b], dtype=torch.float64)
                radius = self._radius(budgets[b], x0)
                traj = Trajectory(self.model, self.loss, x0, t, weights=wg, loss_eps=loss_eps, radius=radius, rule=rule)
                adv[b] = traj.run_to(steps[b]).final()
        return torch.stack(adv)  # type: ignore[arg-type]  # (B, N, ...)

    def _groups(self, budgets: list[float], weights: Tensor | None) -> list[tuple[list[int], Tensor | None]]:
        """Budgets that can share one trajectory, with their weights.

        Sharing is exact only when no step depends on eps: an eps-dependent loss (SLAM) or ``clip="step"``
        (per-step projection radius) gives every budget its own run. Otherwise budgets with identical weights
        share (all of them without per-budget weights; e.g. the k = K "*" cells of a subset attack).
        """
        if self.loss.depends_on_eps or self.clip == "step":
            return [
                ([b], weights[b] if weights is not None and weights.ndim == 3 else weights) for b in range(len(budgets))
            ]
        if weights is None or weights.ndim == 2:
            return [(list(range(len(budgets))), weights)]
        groups: list[tuple[list[int], Tensor]] = []
        for b in range(len(budgets)):
            for members, w in groups:
                if torch.equal(w, weights[b]):
                    members.append(b)
                    break
            else:
                groups.append(([b], weights[b]))
        return groups

    @staticmethod
    def _radius(eps: float, x0: Tensor) -> Tensor:
        return torch.full((x0.shape[0],), eps, device=x0.device)

    def trajectory(
        self, x: Tensor, *, target: Tensor, weights: Tensor | None = None, eps: float | None = None
    ) -> Trajectory:
        """A :class:`Trajectory` over ``x`` with this attack's loss and settings (analyses step it directly).

        ``eps`` is passed to eps-dependent losses and is the projection radius (default: unbounded). The caller
        runs it in eval mode (``model.eval_mode()``).
        """
        model, x = prepare_inputs(self.model, x, _OWNER)
        if self.loss.depends_on_eps and eps is None:
            raise LabelflipError("MIFGSM.trajectory: this loss depends on eps. Fix: pass eps=...")
        radius = None if eps is None else torch.full((x.shape[0],), eps, device=x.device)
        loss_eps = None if eps is None else torch.full((x.shape[0],), eps, dtype=torch.float64)
        return Trajectory(
            model, self.loss, x, target.to(x), weights=weights, loss_eps=loss_eps, radius=radius, rule=self.rule(x)
        )


def _slam_label(params: dict) -> str:
    return "SLAM" if params["q"] == 0.5 else f"SLAM(q={params['q']:g})"


@ATTACKS.register(
    "slam",
    params=[Param("q", float, 0.5, "the maximum BCE share in [0, 1] (seed eq. 6-7; Table IX: 0.25-1)", 0.0, 1.0)],
    label=_slam_label,
    description="MI-FGSM, SLAM loss: Linear at small budgets, BCE share growing with E(eps)",
)
class SLAMAttack(MIFGSM):
    """MI-FGSM with the SLAM loss (seed eq. 6-7): ``SLAMAttack(model, profile, q=0.5)`` is
    ``MIFGSM(model, SLAMLoss(profile, q=q))``."""

    requires = frozenset({"profile"})

    def __init__(self, model: MultiLabelModel | nn.Module, profile: FlipEstimate, *, q: float = 0.5, **options) -> None:
        super().__init__(model, SLAMLoss(profile=profile, q=q), **options)
        check_flip_estimate("SLAMAttack", profile, norm=self.norm)
