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
(at most a few ulps after hundreds of steps). ``clip="step"`` clamps to the bounds and the eps-box after every
step instead.

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
import numbers
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from labelflip._validation import LabelflipError, check_choice, check_float, check_int, fail
from labelflip.attacks.result import AttackResult, count_flips
from labelflip.losses import AttackLoss, create_loss
from labelflip.model import MultiLabelModel, as_model

__all__ = ["ALPHA_LINF", "MIFGSM", "num_steps"]

ALPHA_LINF = 1.0 / 2560.0
"""The authors' fixed L-inf step, ``(1/256) / 10`` (SPEC-reference-code §1.1)."""

_OWNER = "MIFGSM"
_PER_SAMPLE_KEYS = ("clean_probs", "clean_pred", "target")


def num_steps(eps: float, alpha: float) -> int:
    """``n = floor(eps / alpha + 1e-9)``: the SPEC's step count (the 1e-9 absorbs float noise such as
    ``6 * m = 0.018750000000000003``)."""
    return math.floor(eps / alpha + 1e-9)


class _Trajectory:
    """One MI-FGSM trajectory over a batch: state ``x`` (unclamped, as the authors) and momentum ``g``.

    Used by :class:`MIFGSM` and by the flip-profile probe, which needs to step two trajectories in lock-step
    and look at them every ``interval`` steps.
    """

    def __init__(
        self,
        attack: MIFGSM,
        x0: Tensor,
        target: Tensor,
        weight: Tensor | None,
        loss_eps: Tensor | None,
        radius: Tensor,
        alpha: float,
    ) -> None:
        self.attack = attack
        self.x0 = x0
        self.x = x0.clone()
        self.g = torch.zeros_like(x0)
        self.target = target
        self.weight = weight
        self.loss_eps = loss_eps
        self.radius = radius.to(x0.dtype).view((-1,) + (1,) * (x0.ndim - 1))
        self.alpha = alpha
        self.k = 0

    def _normalise(self, v: Tensor, kind: str) -> Tensor:
        flat = v.flatten(1)
        denom = flat.abs().sum(dim=1) if kind == "l1" else flat.norm(dim=1)
        if self.attack.normalize == "batch":
            denom = (flat.abs().sum() if kind == "l1" else flat.norm()).expand(flat.shape[0])
        denom = torch.where(denom > 0, denom, torch.ones_like(denom))  # zero gradient -> zero step, no NaN
        return v / denom.view((-1,) + (1,) * (v.ndim - 1))

    def step(self) -> None:
        att = self.attack
        x = self.x.detach().requires_grad_(True)
        logits = att.model(x)
        loss = att.loss(logits, self.target, self.weight, self.loss_eps).sum()
        (grad,) = torch.autograd.grad(loss, x)
        grad = grad.detach()
        with torch.no_grad():
            ghat = self._normalise(grad, "l1" if att.norm == "linf" else "l2")
            # g = mu * g + ghat, in place (same two roundings; mu = 1 makes the product exact)
            self.g.mul_(att.mu).add_(ghat)
            if att.norm == "linf":
                # x - alpha * sign(g) in one kernel: alpha * (+-1, 0) is exact, so the bits are the same
                x_new = self.x.sub(torch.sign(self.g), alpha=self.alpha)
            elif att.l2_mode == "paper":
                x_new = self.x.sub(self.g, alpha=self.alpha)
            else:
                x_new = self.x.sub(self._normalise(self.g, "l2"), alpha=self.alpha)
            if att.clip == "step":
                x_new = self._clamp(x_new)
            self.x = x_new
        self.k += 1

    @staticmethod
    def _project_l2(delta: Tensor, radius: Tensor) -> Tensor:
        """Scale each sample's ``delta`` onto the L2 ball of its ``radius`` (``(N, 1, ...)``) if outside."""
        norms = delta.flatten(1).norm(dim=1).view(radius.shape)
        return delta * torch.where(norms > radius, radius / norms.clamp_min(1e-30), torch.ones_like(norms))

    def _clamp(self, x: Tensor, radius: Tensor | None = None) -> Tensor:
        """Project onto the eps-ball around ``x0`` (L-inf box or L2 ball), then clamp to the bounds."""
        att = self.attack
        r = self.radius if radius is None else radius.to(self.x0.dtype).view(self.radius.shape)
        if att.norm == "linf":
            x = torch.minimum(torch.maximum(x, self.x0 - r), self.x0 + r)
        elif att.l2_mode == "project":
            x = self.x0 + self._project_l2(x - self.x0, r)
        low, high = att.model.bounds
        return x.clamp(low, high)

    def final(self, radius: Tensor | None = None) -> Tensor:
        """The adversarial input at the current step: projected to the budget and clamped to the bounds."""
        with torch.no_grad():
            return self._clamp(self.x, radius)


class MIFGSM:
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
            (one norm over the whole batch, the authors' batched behaviour; for parity only).
        clip: ``"final"`` (one clamp at the end, as the authors) or ``"step"`` (clamp and project every step).
        l2_mode: ``"project"`` (true L2 bound) or ``"paper"`` (authors' unprojected raw momentum).
        batch_size: process samples in chunks of this size (memory); results do not depend on it.
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
        clip: Literal["final", "step"] = "final",
        l2_mode: Literal["project", "paper"] = "project",
        batch_size: int | None = None,
        return_adv: bool = False,
    ) -> None:
        self.model = as_model(model)
        self.loss = create_loss(loss)
        self.norm = check_choice(_OWNER, "norm", norm, ("linf", "l2"))
        self.alpha = None if alpha is None else check_float(_OWNER, "alpha", alpha, low=0.0, low_inclusive=False)
        self.mu = check_float(_OWNER, "mu", mu, low=0.0)
        self.normalize = check_choice(_OWNER, "normalize", normalize, ("sample", "batch"))
        self.clip = check_choice(_OWNER, "clip", clip, ("final", "step"))
        self.l2_mode = check_choice(_OWNER, "l2_mode", l2_mode, ("project", "paper"))
        self.batch_size = None if batch_size is None else check_int(_OWNER, "batch_size", batch_size, low=1)
        if not isinstance(return_adv, bool):
            raise fail(_OWNER, "return_adv", "a bool", return_adv)
        self.return_adv = return_adv

    def __repr__(self) -> str:
        return (
            f"MIFGSM(loss={self.loss!r}, norm={self.norm!r}, alpha={self.alpha}, mu={self.mu}, "
            f"normalize={self.normalize!r}, clip={self.clip!r}, l2_mode={self.l2_mode!r})"
        )

    # ------------------------------------------------------------------ helpers
    def step_size(self, x: Tensor) -> float:
        """The step alpha used for inputs shaped like ``x``."""
        if self.alpha is not None:
            return self.alpha
        if self.norm == "linf":
            return ALPHA_LINF
        spatial = math.prod(x.shape[2:]) if x.ndim >= 3 else x.shape[1]
        return ALPHA_LINF * math.sqrt(spatial)

    def _validate_eps(self, eps: Any) -> list[float]:
        values = eps
        if isinstance(eps, (Tensor, np.ndarray, np.generic)):
            values = np.asarray(eps.detach().cpu() if isinstance(eps, Tensor) else eps).ravel().tolist()
        elif isinstance(eps, numbers.Real) and not isinstance(eps, bool):
            values = [eps]
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise fail(
                _OWNER,
                "eps",
                "a float >= 0 or a non-empty list of them",
                eps,
                "budgets are in pixel units, e.g. eps=0.01 or eps=[0.002, 0.01].",
            )
        return [
            check_float(
                _OWNER,
                "eps",
                float(e) if isinstance(e, numbers.Real) and not isinstance(e, bool) else e,
                low=0.0,
                fix="budgets are non-negative pixel-unit radii, e.g. 0.01.",
            )
            for e in values
        ]

    def _prepare_weights(self, weights: Any, n: int, n_budgets: int) -> Tensor | None:
        if weights is None:
            return None
        k = self.model.num_labels
        if not isinstance(weights, Tensor):
            try:
                weights = torch.as_tensor(weights, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise fail(_OWNER, "weights", "a tensor or nested sequence of floats in [0, 1]", weights) from exc
        w = weights.float()
        shapes_ok = (
            (w.ndim == 1 and w.shape[0] == k)
            or (w.ndim == 2 and tuple(w.shape) == (n, k))
            or (w.ndim == 3 and tuple(w.shape) == (n_budgets, n, k))
        )
        if not shapes_ok:
            raise fail(
                _OWNER,
                "weights",
                f"of shape ({k},), ({n}, {k}) or ({n_budgets}, {n}, {k}) (labels, samples x labels, or one "
                "matrix per budget)",
                weights,
                "subsets are targeted with 0/1 weights per label.",
            )
        if not bool(torch.isfinite(w).all()) or not bool(((w >= 0) & (w <= 1)).all()):
            raise fail(_OWNER, "weights", "within [0, 1]", weights)
        if w.ndim == 1:
            w = w.expand(n, k)
        return w

    # ------------------------------------------------------------------ main entry
    def __call__(
        self,
        x: Tensor,
        eps: float | Sequence[float] | Tensor,
        *,
        target: Tensor | None = None,
        weights: Tensor | Sequence[float] | None = None,
    ) -> AttackResult:
        """Attack ``x`` ``(N, ...)`` at every budget in ``eps``.

        Args:
            x: inputs in the model's bounds (pixel units), ``(N, C, H, W)`` or ``(N, D)``.
            eps: one budget or a list (L-inf radius or L2 radius, per ``norm``).
            target: ``(N, K)`` in {0, 1}; default ``1 - clean prediction`` (flip every label).
            weights: per-label weights in [0, 1]: ``(K,)``, ``(N, K)`` or ``(B, N, K)`` (one per budget).
                0/1 weights target a subset (seed §IV-C); the target vector stays complete.

        Returns:
            An :class:`AttackResult` with ``B = len(eps)`` budgets in the order given.
        """
        start = time.perf_counter()
        model = self.model
        budgets = self._validate_eps(eps)
        x = model.validate_inputs(x, owner=_OWNER)
        model.ensure_checked(x, owner=_OWNER)
        device = model.device
        x = x.detach().to(device=device, dtype=model.dtype)
        n = x.shape[0]
        if target is not None:
            target = model.validate_labels(target, n, owner=_OWNER, param="target").to(device)
        w = self._prepare_weights(weights, n, len(budgets))
        if w is not None:
            w = w.to(device)
        alpha = self.step_size(x)
        steps = [num_steps(e, alpha) for e in budgets]
        chunk = self.batch_size or n

        parts: list[dict[str, Tensor]] = []
        with model.eval_mode():
            for lo in range(0, n, chunk):
                sl = slice(lo, min(n, lo + chunk))
                wc = None if w is None else (w[:, sl] if w.ndim == 3 else w[sl])
                tc = None if target is None else target[sl]
                parts.append(self._attack_chunk(x[sl], budgets, steps, alpha, tc, wc))
        # Per-sample tensors are concatenated on dim 0, per-budget ones (B, N, ...) on dim 1.
        merged = {key: torch.cat([p[key] for p in parts], dim=0 if key in _PER_SAMPLE_KEYS else 1) for key in parts[0]}
        total, up, down = count_flips(merged["clean_pred"], merged["adv_pred"])
        return AttackResult(
            eps=torch.tensor(budgets, dtype=torch.float64),
            steps=torch.tensor(steps, dtype=torch.int64),
            flips=total,
            flips_up=up,
            flips_down=down,
            clean_probs=merged["clean_probs"],
            clean_pred=merged["clean_pred"],
            adv_probs=merged["adv_probs"],
            adv_pred=merged["adv_pred"],
            target=merged["target"],
            weights=None if w is None else w.cpu(),
            linf=merged["linf"],
            l2=merged["l2"],
            norm=self.norm,
            loss=repr(self.loss),
            x_adv=merged.get("x_adv"),
            elapsed_s=time.perf_counter() - start,
        )

    def _attack_chunk(
        self,
        x0: Tensor,
        budgets: list[float],
        steps: list[int],
        alpha: float,
        target: Tensor | None,
        weights: Tensor | None,
    ) -> dict[str, Tensor]:
        model = self.model
        with torch.no_grad():
            clean_probs = torch.sigmoid(model(x0))
        clean_pred = model.predict_from_probabilities(clean_probs)
        t = (~clean_pred).to(x0.dtype) if target is None else target.to(x0.dtype)
        n_b = len(budgets)
        adv: list[Tensor | None] = [None] * n_b
        shareable = not self.loss.depends_on_eps and self.clip == "final"
        for group, wg in self._groups(budgets, weights):
            if shareable:
                # One trajectory for the group; checkpoint at each step count (prefix property).
                traj = _Trajectory(self, x0, t, wg, None, self._radius(max(budgets[b] for b in group), x0), alpha)
                for b in sorted(group, key=lambda b: steps[b]):
                    while traj.k < steps[b]:
                        traj.step()
                    adv[b] = traj.final(self._radius(budgets[b], x0))
            else:
                (b,) = group
                loss_eps = torch.full((x0.shape[0],), budgets[b], dtype=torch.float64)
                traj = _Trajectory(self, x0, t, wg, loss_eps, self._radius(budgets[b], x0), alpha)
                while traj.k < steps[b]:
                    traj.step()
                adv[b] = traj.final()
        x_adv = torch.stack(adv)  # (B, N, ...)
        with torch.no_grad():  # one forward per budget: same batch as a separate call, so bit-identical
            adv_probs = torch.stack([torch.sigmoid(model(xb)) for xb in x_adv])
        adv_pred = model.predict_from_probabilities(adv_probs)
        delta = (x_adv.double() - x0.double().unsqueeze(0)).flatten(2)
        out = {
            "clean_probs": clean_probs.float().cpu(),
            "clean_pred": clean_pred.cpu(),
            "target": t.float().cpu(),
            "adv_probs": adv_probs.float().cpu(),
            "adv_pred": adv_pred.cpu(),
            "linf": delta.abs().amax(dim=2).cpu() if delta.shape[2] else torch.zeros(delta.shape[:2]),
            "l2": delta.norm(dim=2).cpu(),
        }
        if self.return_adv:
            out["x_adv"] = x_adv.detach().cpu()
        return out

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

    def _radius(self, eps: float, x0: Tensor) -> Tensor:
        return torch.full((x0.shape[0],), eps, device=x0.device)

    def trajectory(
        self, x: Tensor, *, target: Tensor, weights: Tensor | None = None, eps: float | None = None
    ) -> _Trajectory:
        """A stateful trajectory over a batch (advanced use: profiles step it and inspect it).

        ``eps`` is passed to eps-dependent losses and is the projection radius (default: unbounded).
        Call ``.step()`` to advance one iteration and ``.final()`` for the clamped adversarial input.
        """
        x = self.model.validate_inputs(x, owner=_OWNER).detach().to(self.model.device, self.model.dtype)
        r = math.inf if eps is None else eps
        radius = torch.full((x.shape[0],), r, device=x.device)
        loss_eps = None if eps is None else torch.full((x.shape[0],), eps, dtype=torch.float64)
        if self.loss.depends_on_eps and eps is None:
            raise LabelflipError("MIFGSM.trajectory: this loss depends on eps. Fix: pass eps=...")
        return _Trajectory(self, x, target.to(x), weights, loss_eps, radius, self.step_size(x))
