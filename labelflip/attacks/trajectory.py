"""One MI-FGSM trajectory over a batch (seed App. I, Algorithm 2; SPEC.md "MI-FGSM"): the update rule, once.

:class:`MIFGSM` runs trajectories to the step count of each budget; the analyses step them directly (the flip
profile steps two in lock-step and looks every ``interval`` steps; correlations and attackability attack one label
per row). Update, per sample (``normalize="sample"``)::

    grad  = d loss(F(x_k), t; w, eps) / d x_k
    g     = mu * g + grad / ||grad||_1          (L2: / ||grad||_2)
    x_k+1 = x_k - alpha * sign(g)               (L2 project: x_k - alpha * g / ||g||_2;  L2 paper: x_k - alpha * g)
    clip="step": x_k+1 <- clamp(project_eps(x_k+1), bounds)

``clip="final"`` (default) projects the final iterate onto the eps-ball and clamps it to the bounds. For L-inf the
box only removes float32 drift: ``n * alpha`` accumulated over ``n`` steps can exceed eps by a few ulps when eps is
an exact multiple of alpha (most paper budgets), and the box then changes such pixels by up to about 2e-6.
``clip="bounds"`` (the ``paper`` preset) is the authors' exact final step, a clamp to the bounds only (L-inf; L2
behaves as ``"final"``).

The state ``x`` is kept unclamped as the authors' code does; :meth:`Trajectory.final` projects to the budget and
clamps to the bounds. A zero gradient never produces NaN: a sample whose loss gradient is exactly zero is
**frozen** from that step on (no further steps, momentum included), as SPEC.md says and as the authors' code behaves
(their ``0/0`` gives NaN and ``sign(NaN) = 0``, so the image never moves again). With ``normalize="batch"`` (the
authors' batch-global norm, parity only) a step is frozen for the whole batch exactly when the whole batch's
gradient is zero, as theirs; a single sample's zero gradient then leaves its momentum running, as theirs does.

**Stacked lanes** (:func:`run_lanes`): with per-sample normalisation every row of a trajectory moves independently of
the others, so several trajectories of the same ``N`` samples (a *lane* each: one budget of SLAM, one subset of a
subset attack, or a group of budgets sharing a prefix) run as one ``(L * N)``-row batch with per-row target,
weights, loss budget and radius. Each lane's iterate is captured at its own step counts and the lane then leaves the
batch, so the rows stepped are exactly those of separate runs (``sum_lanes n_lane * N``), in fewer, larger batches.
The result equals separate runs up to the float rounding of batched kernels (a GEMM or a vectorised ``exp`` may round
one row differently at another batch size; on the built-in models at chunk sizes of 20 and their multiples they
round identically).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from labelflip._validation import fail
from labelflip.losses import AttackLoss
from labelflip.models import MultiLabelModel

__all__ = ["ALPHA_LINF", "Lane", "StepRule", "Trajectory", "num_steps", "run_lanes"]

ALPHA_LINF = 1.0 / 2560.0
"""The authors' fixed L-inf step, ``(1/256) / 10`` (SPEC-reference-code §1.1)."""


def num_steps(eps: float, alpha: float) -> int:
    """``n = floor(eps / alpha + 1e-9)``: the SPEC's step count (the 1e-9 absorbs float noise such as
    ``6 * m = 0.018750000000000003``)."""
    return math.floor(eps / alpha + 1e-9)


@dataclass(frozen=True)
class StepRule:
    """The MI-FGSM update settings (see :class:`labelflip.attacks.MIFGSM` for their meaning)."""

    norm: Literal["linf", "l2"] = "linf"
    alpha: float = ALPHA_LINF
    mu: float = 1.0
    normalize: Literal["sample", "batch"] = "sample"
    clip: Literal["final", "step", "bounds"] = "final"
    l2_mode: Literal["project", "paper"] = "project"


def _view(v: Tensor, ndim: int) -> Tensor:
    return v.view((-1,) + (1,) * (ndim - 1))


class Trajectory:
    """The state of one MI-FGSM run over a batch ``x0`` ``(N, ...)``: iterate ``x`` and momentum ``g``.

    Args:
        model: the wrapped classifier (inputs on its device and dtype).
        loss: the attack loss (descended toward ``target``).
        x0: clean inputs ``(N, ...)`` in the model's bounds.
        target: ``(N, K)`` in {0, 1}.
        weights: optional per-label weights ``(N, K)`` in [0, 1].
        loss_eps: per-sample budget ``(N,)`` passed to eps-dependent losses (SLAM), or ``None``.
        radius: per-sample projection radius ``(N,)`` (the budget); ``None`` = unbounded.
        rule: the update settings.

    ``k`` counts the steps taken; :meth:`step` advances one; :meth:`final` returns the adversarial input.
    """

    def __init__(
        self,
        model: MultiLabelModel,
        loss: AttackLoss,
        x0: Tensor,
        target: Tensor,
        *,
        weights: Tensor | None = None,
        loss_eps: Tensor | None = None,
        radius: Tensor | None = None,
        rule: StepRule = StepRule(),
    ) -> None:
        self.model = model
        self.loss = loss
        self.rule = rule
        self.x0 = x0
        self.x = x0.clone()
        self.g = torch.zeros_like(x0)
        self.target = target
        self.weights = weights
        self.loss_eps = loss_eps
        r = torch.full((x0.shape[0],), math.inf, device=x0.device) if radius is None else radius
        self.radius = _view(r.to(device=x0.device, dtype=x0.dtype), x0.ndim)
        self.frozen = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
        """``(N,)``: samples whose loss gradient was exactly zero at some step; they never move again."""
        self.k = 0

    def _norms(self, v: Tensor, kind: str) -> Tensor:
        """Per-sample L1 or L2 norms ``(N,)`` (one batch-global norm repeated with ``normalize="batch"``)."""
        flat = v.flatten(1)
        if self.rule.normalize == "batch":
            return (flat.abs().sum() if kind == "l1" else flat.norm()).expand(flat.shape[0])
        return flat.abs().sum(dim=1) if kind == "l1" else flat.norm(dim=1)

    def _normalise(self, v: Tensor, kind: str, denom: Tensor | None = None) -> Tensor:
        denom = self._norms(v, kind) if denom is None else denom
        denom = torch.where(denom > 0, denom, torch.ones_like(denom))  # a zero vector stays zero, no NaN
        return v / _view(denom, v.ndim)

    def gradient(self) -> Tensor:
        """``d loss / d x`` at the current iterate ``(N, ...)`` (the parameters get no gradient)."""
        x = self.x.detach().requires_grad_(True)
        logits = self.model(x)
        loss = self.loss(logits, self.target, self.weights, self.loss_eps).sum()
        (grad,) = torch.autograd.grad(loss, x)
        return grad.detach()

    def step(self) -> None:
        """One MI-FGSM iteration."""
        rule = self.rule
        grad = self.gradient()
        with torch.no_grad():
            kind = "l1" if rule.norm == "linf" else "l2"
            denom = self._norms(grad, kind)
            # A zero gradient freezes the sample for good (SPEC.md; the authors' NaN momentum never moves again).
            self.frozen |= denom == 0
            ghat = self._normalise(grad, kind, denom)
            # g = mu * g + ghat, in place (same two roundings; mu = 1 makes the product exact)
            self.g.mul_(rule.mu).add_(ghat)
            if rule.norm == "linf":
                # x - alpha * sign(g) in one kernel: alpha * (+-1, 0) is exact, so the bits are the same
                x_new = self.x.sub(torch.sign(self.g), alpha=rule.alpha)
            elif rule.l2_mode == "paper":
                x_new = self.x.sub(self.g, alpha=rule.alpha)
            else:
                x_new = self.x.sub(self._normalise(self.g, "l2"), alpha=rule.alpha)
            if rule.clip == "step":
                x_new = self._clamp(x_new)
            # frozen samples keep their iterate (bits of the others untouched: a select, no arithmetic)
            self.x = torch.where(_view(self.frozen, x_new.ndim), self.x, x_new)
        self.k += 1

    def run_to(self, steps: int) -> Trajectory:
        """Step until ``k == steps`` (no-op if already there); returns ``self``."""
        while self.k < steps:
            self.step()
        return self

    @staticmethod
    def _project_l2(delta: Tensor, radius: Tensor) -> Tensor:
        """Scale each sample's ``delta`` onto the L2 ball of its ``radius`` (``(N, 1, ...)``) if outside."""
        norms = delta.flatten(1).norm(dim=1).view(radius.shape)
        return delta * torch.where(norms > radius, radius / norms.clamp_min(1e-30), torch.ones_like(norms))

    def _clamp(self, x: Tensor, radius: Tensor | None = None, x0: Tensor | None = None) -> Tensor:
        """Project onto the eps-ball around ``x0`` (default: the trajectory's; L-inf box or L2 ball), then clamp to
        the bounds."""
        x0 = self.x0 if x0 is None else x0
        r = self.radius if radius is None else radius.to(x0.dtype).view((-1,) + (1,) * (x0.ndim - 1))
        if self.rule.norm == "linf" and self.rule.clip == "bounds":
            pass  # the authors' final clamp to the bounds only: no eps-box (float drift of n * alpha kept)
        elif self.rule.norm == "linf":
            x = torch.minimum(torch.maximum(x, x0 - r), x0 + r)
        elif self.rule.l2_mode == "project":
            x = x0 + self._project_l2(x - x0, r)
        low, high = self.model.bounds
        return x.clamp(low, high)

    def final(self, radius: Tensor | None = None) -> Tensor:
        """The adversarial input at the current step ``(N, ...)``: projected to ``radius`` (default: the
        trajectory's) and clamped to the bounds."""
        with torch.no_grad():
            return self._clamp(self.x, radius)

    def final_rows(self, rows: slice, radius: float) -> Tensor:
        """:meth:`final` of the rows ``rows`` only, projected to the budget ``radius`` (a lane of :func:`run_lanes`)."""
        with torch.no_grad():
            r = torch.full((rows.stop - rows.start,), radius, device=self.x0.device)
            return self._clamp(self.x[rows], r, self.x0[rows])

    def keep_rows(self, rows: slice) -> None:
        """Drop every row outside ``rows`` (a contiguous range) from the state; the kept rows continue unchanged."""
        for name in ("x0", "x", "g", "target", "weights", "loss_eps", "radius", "frozen"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[rows].clone())


@dataclass(frozen=True)
class Lane:
    """One trajectory of a chunk's ``N`` samples inside a stacked run (:func:`run_lanes`).

    Attributes:
        captures: ``(steps, radius)`` pairs, one output each: the iterate after ``steps`` steps, projected onto the
            ball of ``radius`` around the clean input and clamped to the bounds (one budget). Several captures are
            budgets sharing one trajectory (a loss that does not depend on eps: the prefix property).
        weights: ``(N, K)`` label weights in [0, 1], or ``None`` (every label weighs 1).
        loss_eps: the budget an eps-dependent loss (SLAM) is given, or ``None``.
        radius: the projection radius of the steps themselves (``clip="step"``); default: the largest capture radius.
    """

    captures: tuple[tuple[int, float], ...]
    weights: Tensor | None = None
    loss_eps: float | None = None
    radius: float | None = None

    @property
    def length(self) -> int:
        """The steps this lane runs (its last capture)."""
        return max(steps for steps, _ in self.captures)


def run_lanes(
    model: MultiLabelModel,
    loss: AttackLoss,
    x0: Tensor,
    target: Tensor,
    lanes: Sequence[Lane],
    *,
    rule: StepRule,
    max_rows: int | None = None,
) -> list[list[Tensor]]:
    """Run every lane over ``x0`` ``(N, ...)`` with ``target`` ``(N, K)``, stacked: lanes of similar length share one
    batch of at most ``max_rows`` rows (``max(1, max_rows // N)`` lanes; ``None``: all lanes in one batch).

    Every row follows the update of :class:`Trajectory` with its own lane's weights, loss budget and radius; a lane
    leaves the batch after its last capture, so the rows stepped equal those of separate runs. Requires per-sample
    normalisation (``rule.normalize == "sample"``): the batch-global norm would couple the lanes.

    Returns:
        ``out[lane][capture]``: the adversarial inputs ``(N, ...)`` of each capture, in the order given.
    """
    if rule.normalize != "sample":
        raise fail("run_lanes", "rule.normalize", "'sample' (stacked rows must not share a norm)", rule.normalize)
    if not lanes or any(not lane.captures for lane in lanes):
        raise fail("run_lanes", "lanes", "a non-empty sequence of lanes with at least one capture each", lanes)
    if len({lane.loss_eps is None for lane in lanes}) > 1:
        raise fail("run_lanes", "lanes", "loss_eps given for every lane or for none", lanes)
    n = x0.shape[0]
    per = len(lanes) if max_rows is None else max(1, max_rows // max(n, 1))
    order = sorted(range(len(lanes)), key=lambda i: lanes[i].length)  # stable: ties keep their order
    out: list[list[Tensor]] = [[x0] * len(lane.captures) for lane in lanes]
    for lo in range(0, len(order), per):
        _run_stack(model, loss, x0, target, lanes, order[lo : lo + per], rule, out)
    return out


def _run_stack(
    model: MultiLabelModel,
    loss: AttackLoss,
    x0: Tensor,
    target: Tensor,
    lanes: Sequence[Lane],
    members: list[int],
    rule: StepRule,
    out: list[list[Tensor]],
) -> None:
    """One stacked batch of ``members`` (lane indices, shortest first): rows ``[j * N, (j + 1) * N)`` are lane
    ``members[j]``; finished lanes are a prefix of the rows and are cut off after their last capture."""
    n, count = x0.shape[0], len(members)
    chosen = [lanes[i] for i in members]
    weighted = any(lane.weights is not None for lane in chosen)
    ones = torch.ones_like(target)  # weight 1 multiplies exactly: the same bits as no weights
    weights = torch.cat([ones if lane.weights is None else lane.weights for lane in chosen]) if weighted else None
    loss_eps = None
    if chosen[0].loss_eps is not None:
        loss_eps = torch.cat([torch.full((n,), float(lane.loss_eps), dtype=torch.float64) for lane in chosen])
    radius = torch.cat(
        [
            torch.full((n,), lane.radius if lane.radius is not None else max(r for _, r in lane.captures))
            for lane in chosen
        ]
    ).to(x0.device)
    traj = Trajectory(
        model,
        loss,
        x0.repeat((count,) + (1,) * (x0.ndim - 1)),
        target.repeat(count, 1),
        weights=weights,
        loss_eps=loss_eps,
        radius=radius,
        rule=rule,
    )
    first = 0  # members[first:] are still in the batch, at rows [(j - first) * N, ...)
    for steps in sorted({s for lane in chosen for s, _ in lane.captures}):
        traj.run_to(steps)
        for j in range(first, count):
            rows = slice((j - first) * n, (j - first + 1) * n)
            for c, (s, r) in enumerate(chosen[j].captures):
                if s == steps:
                    out[members[j]][c] = traj.final_rows(rows, r)
        done = first
        while done < count and chosen[done].length <= steps:
            done += 1
        if done == count:
            return
        if done > first:
            traj.keep_rows(slice((done - first) * n, None))
            first = done
