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

``stack=True`` (the default) runs the trajectories that cannot share (SLAM's budgets, ``clip="step"``, the distinct
subsets of the subset attacks) as one stacked batch of ``budgets x samples`` rows instead of one small batch after
another (:func:`labelflip.attacks.trajectory.run_lanes`; at most ``max_rows`` rows per batch): the same rows are
stepped, in fewer and larger batches, with results equal to the per-budget runs up to the rounding of batched kernels
(bit-identical on the built-in study: all 3920 stored rows of the 40-sample demo).

``reuse=True`` keeps the captured iterates of weight-free trajectories of eps-independent losses (BCE's whole grid;
a subset attack's budgets whose subset is every label, weight 1 being exact) in a small process-wide cache
(:data:`CAPTURES`) keyed by the model's state, the settings, the loss and the exact bytes of the inputs, target and
clean confidences: a later call on the same chunk (a study's CLASS and random units after its BCE unit) takes them
from there instead of recomputing the same trajectory. Bit-identical by construction (same key, same computation).
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections import OrderedDict
from typing import Literal

import torch
from torch import Tensor, nn

from labelflip._registry import Param
from labelflip._validation import LabelflipError, check_choice, check_float, check_int, fail
from labelflip.attacks.base import Batch, FixedBudgetAttack, prepare_inputs
from labelflip.attacks.registry import ATTACKS
from labelflip.attacks.trajectory import ALPHA_LINF, Lane, StepRule, Trajectory, num_steps, run_lanes
from labelflip.estimate import FlipEstimate
from labelflip.losses import AttackLoss, SLAMLoss, check_flip_estimate, create_loss
from labelflip.models import MultiLabelModel

__all__ = ["ALPHA_LINF", "CAPTURES", "MIFGSM", "CaptureCache", "num_steps"]

_OWNER = "MIFGSM"


def _digest(t: Tensor) -> str:
    a = t.detach().cpu().contiguous()
    return hashlib.blake2b(f"{a.dtype}{tuple(a.shape)}".encode() + a.numpy().tobytes(), digest_size=16).hexdigest()


class CaptureCache:
    """Captured iterates ``{(steps, radius): x_adv (N, ...)}`` of weight-free trajectories, least recently used
    first out, at most ``max_entries`` trajectories and ``max_bytes`` of tensors (on their device).

    An entry is found only for the very model object that computed it (a weak reference is checked, so a new model
    that happens to get a dead one's ``id`` and storage addresses never matches) with the same parameter and buffer
    storages at the same in-place version counters (an optimiser step or ``load_state_dict`` changes them).
    """

    def __init__(self, max_entries: int = 64, max_bytes: int = 256 * 2**20) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[tuple, tuple[weakref.ref, dict[tuple[int, float], Tensor]]] = OrderedDict()
        self.hits = 0

    def key(self, attack: MIFGSM, batch: Batch, rule: StepRule) -> tuple:
        """What a trajectory's captures depend on: the model (identity, every parameter and buffer's storage and
        version counter, runtime), the update rule, the loss, and the bytes of ``x``, target and clean confidences."""
        model = attack.model
        state = tuple((t.data_ptr(), t._version) for t in model.state_dict(keep_vars=True).values())
        runtime = repr(getattr(model, "runtime", None))
        data = tuple(_digest(t) for t in (batch.x, batch.target, batch.clean_probs))
        return (id(model), state, runtime, rule, type(attack.loss).__name__, repr(attack.loss), data)

    def get(self, key: tuple, captures: list[tuple[int, float]], model: nn.Module) -> list[Tensor] | None:
        """The captures of ``key``'s trajectory computed by ``model``, or None when any is missing."""
        ref, entry = self._entries.get(key, (None, {}))
        if ref is None or ref() is not model or any(c not in entry for c in captures):
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return [entry[c] for c in captures]

    def put(self, key: tuple, captured: dict[tuple[int, float], Tensor], model: nn.Module) -> None:
        """Keep ``captured`` under ``key`` (merged with the captures already kept for ``model``'s trajectory)."""
        ref, entry = self._entries.get(key, (None, {}))
        if ref is None or ref() is not model:
            ref, entry = weakref.ref(model), {}
        entry.update(captured)
        self._entries[key] = (ref, entry)
        self._entries.move_to_end(key)
        size = lambda: sum(t.numel() * t.element_size() for _, e in self._entries.values() for t in e.values())  # noqa: E731
        while self._entries and (len(self._entries) > self.max_entries or size() > self.max_bytes):
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()


CAPTURES = CaptureCache()
"""The process-wide cache of ``MIFGSM(reuse=True)``."""


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
        stack: run the trajectories of a chunk that cannot share a prefix (eps-dependent loss, ``clip="step"``,
            per-budget weights) stacked in one batch (default; see the module docstring). With ``normalize="batch"``
            (parity mode) nothing is stacked: the batch-global norm would couple the stacked rows.
        max_rows: the most rows (samples x stacked trajectories) one stacked batch holds (memory); a trajectory
            of more samples than this runs alone.
        reuse: take weight-free trajectories of eps-independent losses from :data:`CAPTURES` when an earlier call
            computed them on the same inputs (and keep them there); see the module docstring.
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
        stack: bool = True,
        max_rows: int = 256,
        reuse: bool = False,
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
        if not isinstance(stack, bool):
            raise fail(_OWNER, "stack", "a bool", stack)
        self.stack = stack and self.normalize == "sample"
        self.max_rows = check_int(_OWNER, "max_rows", max_rows, low=1)
        if not isinstance(reuse, bool):
            raise fail(_OWNER, "reuse", "a bool", reuse)
        self.reuse = reuse

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

    def stack_factor(self, budgets: list[float], *, per_budget_weights: bool = False) -> int:
        """Copies of each sample in one stacked batch: the budgets that cannot share a trajectory (at most); 1 when
        every budget shares one (an eps-independent loss, final clipping and the same weights for every budget)."""
        separate = per_budget_weights or self.loss.depends_on_eps or self.clip == "step"
        return len(budgets) if self.stack and separate else 1

    # ------------------------------------------------------------------ the attack
    def run(self, batch: Batch, budgets: list[float]) -> Tensor:
        x0, t = batch.x, batch.target
        rule = self.rule(x0)
        steps = self.steps_for(budgets, x0)
        adv: list[Tensor] = [x0] * len(budgets)
        shareable = not self.loss.depends_on_eps and self.clip != "step"
        groups = self._groups(budgets, batch.weights)
        key = CAPTURES.key(self, batch, rule) if self.reuse and shareable else None
        if key is not None:
            groups = [g for g in groups if not self._from_cache(key, g, budgets, steps, adv, self.model)]
        if self.stack and len(groups) > 1:
            self._run_stacked(batch, budgets, steps, groups, shareable, adv)
        else:
            for group, wg in groups:
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
                    traj = Trajectory(
                        self.model, self.loss, x0, t, weights=wg, loss_eps=loss_eps, radius=radius, rule=rule
                    )
                    adv[b] = traj.run_to(steps[b]).final()
        if key is not None:
            for group, wg in groups:
                if _weight_free(wg):
                    CAPTURES.put(key, {(steps[b], budgets[b]): adv[b] for b in group}, self.model)
        return torch.stack(adv)  # (B, N, ...)

    @staticmethod
    def _from_cache(
        key: tuple,
        group: tuple[list[int], Tensor | None],
        budgets: list[float],
        steps: list[int],
        adv: list[Tensor],
        model: nn.Module,
    ) -> bool:
        """Fill ``adv`` for a weight-free group found in :data:`CAPTURES`; whether it was."""
        members, wg = group
        if not _weight_free(wg):
            return False
        found = CAPTURES.get(key, [(steps[b], budgets[b]) for b in members], model)
        if found is None:
            return False
        for b, a in zip(members, found, strict=True):
            adv[b] = a
        return True

    def _run_stacked(
        self,
        batch: Batch,
        budgets: list[float],
        steps: list[int],
        groups: list[tuple[list[int], Tensor | None]],
        shareable: bool,
        adv: list[Tensor],
    ) -> None:
        """:meth:`run` with the groups' trajectories stacked into ``adv``: one lane per group (:func:`run_lanes`),
        capturing each of its budgets at its step count (the same captures, radii and loss budgets as the per-group
        runs)."""
        lanes = []
        for group, wg in groups:
            order = sorted(group, key=lambda b: steps[b])
            captures = tuple((steps[b], budgets[b]) for b in order)
            loss_eps = None if shareable else budgets[group[0]]
            lanes.append((order, Lane(captures, wg, loss_eps, max(budgets[b] for b in group))))
        x0 = batch.x
        outs = run_lanes(
            self.model, self.loss, x0, batch.target, [lane for _, lane in lanes], rule=self.rule(x0),
            max_rows=self.max_rows,
        )  # fmt: skip
        for (order, _), out in zip(lanes, outs, strict=True):
            for b, a in zip(order, out, strict=True):
                adv[b] = a

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


def _weight_free(weights: Tensor | None) -> bool:
    """No weights, or every weight exactly 1 (``t * 1.0`` is exact: the same bits as no weights)."""
    return weights is None or bool((weights == 1).all())


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
