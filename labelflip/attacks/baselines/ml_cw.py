"""ML-CW: the multi-label Carlini-Wagner attack (Song et al., ICDM 2018; SPEC-related-methods §3.2,
SPEC-reference-code §9; seed App. J eq. 13).

Change of variables (the iterate always lies in the bounds ``[lo, hi]``)::

    x'(w) = lo + (hi - lo) (tanh(w + w0) + 1) / 2,     w0 = artanh(0.999999 (2 (x - lo) / (hi - lo) - 1)),  w = 0

Objective per sample, minimised over ``w`` with Adam (lr 0.01)::

    D(x' - x) + c * sum_j v_j max(0, kappa - s_j (z_j(x') - theta_j))

with ``s_j = 2 t_j - 1``, ``z`` the logits, ``theta_j = logit(threshold_j)`` (the hinge on the threshold, on logits
relative to the threshold's logit; the published code used probabilities minus 0.5), ``v_j`` the label weight
(1 for every label by default), ``kappa = confidence`` (published 0) and ``D`` the squared L2 distance
(``objective="l2"``, published) or the L-inf distance ``max |x' - x|`` (``objective="linf"``, the seed's appendix
and code). ``objective="auto"`` follows ``norm``.

Binary search on ``c`` per sample (published: 10 outer steps, ``c0 = 1e5``): after an outer step that reached the
target, ``ub = min(ub, c)`` and ``c = (lb + ub) / 2``; otherwise ``lb = max(lb, c)`` and ``c = (lb + ub) / 2``
if ``ub < 1e9``, else ``c *= 10``. Every outer step restarts from ``w = 0`` with a fresh Adam state. Early abort
(published): every ``steps // 10`` iterations a sample whose objective exceeds 0.9999x its value at the previous
check stops for the rest of that outer step. The best iterate over all steps is kept by (labels on target, then
the smaller perturbation in ``norm``); the clean input is the starting best, so a sample that never improves
returns zero perturbation.

Everything is batched: one Adam state (moments) per pixel of each sample, per-sample ``c``, bounds and
bookkeeping, one forward+backward per iteration for the whole batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from labelflip._registry import Param
from labelflip._validation import check_choice, check_float, check_int
from labelflip.attacks.base import Batch, MinimumNormAttack
from labelflip.attacks.baselines.ml_deepfool import (
    BestIterate,
    attacked_labels,
    on_target,
    record_outcome,
    threshold_logits,
)
from labelflip.attacks.registry import ATTACKS
from labelflip.models import MultiLabelModel

__all__ = ["MLCarliniWagner"]

_OWNER = "MLCarliniWagner"
_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
_UPPER = 1e10  # "no upper bound yet" for c


@ATTACKS.register(
    "ml-cw",
    params=[
        Param("steps", int, 50, "Adam iterations per binary-search step (published: 1000)", low=1),
        Param("binary_steps", int, 3, "binary-search steps on c (published: 10; the seed's code: 1)", low=1),
        Param("const", float, 10.0, "initial trade-off constant c (published: 1e5)", low=0.0),
        Param("lr", float, 0.01, "Adam learning rate (published: 0.01)", low=0.0),
        Param("confidence", float, 0.0, "hinge margin kappa in logits (published: 0)", low=0.0),
        Param("objective", str, "auto", "distance term: auto (follows norm), l2 (squared, published), linf (seed)"),
    ],
    label="ML-CW",
    description="ML-CW: Carlini-Wagner with a hinge on every label's threshold, binary search on c (min-norm)",
)
class MLCarliniWagner(MinimumNormAttack):
    """The multi-label Carlini-Wagner attack (see the module docstring), a minimum-norm attack.

    Example::

        attack = MLCarliniWagner(model, norm="l2")     # published squared-L2 objective
        res = attack(x, eps=[0.5, 100.0])               # perturbation clipped to each budget
        res.min_norm, res.extra["status"]

    Args:
        model: the classifier (logits).
        steps: Adam iterations per binary-search step (published 1000; default 50 for speed).
        binary_steps: outer steps on the constant ``c`` (published 10; default 3 for speed).
        const: initial ``c`` (published 1e5, for a hinge on probabilities; 10 suits the logit hinge).
        lr: Adam learning rate.
        confidence: hinge margin ``kappa`` (logits).
        objective: ``"auto"`` (``norm``), ``"l2"`` (squared L2, published) or ``"linf"`` (seed App. J).
        norm, batch_size, return_adv: see :class:`~labelflip.attacks.Attack`.

    ``result.extra``: per-sample ``status``, ``stop_reason``, ``labels_on_target``, ``const`` (final ``c``).
    """

    def __init__(
        self,
        model: nn.Module | MultiLabelModel,
        *,
        steps: int = 50,
        binary_steps: int = 3,
        const: float = 10.0,
        lr: float = 0.01,
        confidence: float = 0.0,
        objective: str = "auto",
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.steps = check_int(_OWNER, "steps", steps, low=1)
        self.binary_steps = check_int(_OWNER, "binary_steps", binary_steps, low=1)
        self.const = check_float(_OWNER, "const", const, low=0.0, low_inclusive=False)
        self.lr = check_float(_OWNER, "lr", lr, low=0.0, low_inclusive=False)
        self.confidence = check_float(_OWNER, "confidence", confidence, low=0.0)
        obj = check_choice(_OWNER, "objective", objective, ("auto", "l2", "linf"))
        self.objective = self.norm if obj == "auto" else obj

    def __repr__(self) -> str:
        return (
            f"MLCarliniWagner(steps={self.steps}, binary_steps={self.binary_steps}, const={self.const:g}, "
            f"lr={self.lr:g}, confidence={self.confidence:g}, objective={self.objective!r}, norm={self.norm!r})"
        )

    def _distance(self, delta: Tensor) -> Tensor:
        flat = delta.flatten(1)
        return flat.square().sum(dim=1) if self.objective == "l2" else flat.abs().amax(dim=1)

    def run(self, batch: Batch) -> Tensor:
        model, x0 = self.model, batch.x
        n, k = batch.clean_pred.shape
        low, high = model.bounds
        view = (-1,) + (1,) * (x0.ndim - 1)
        mask = attacked_labels(batch)
        weight = mask.to(x0.dtype) if batch.weights is None else batch.weights.to(x0.dtype)
        sign = 2 * batch.target - 1
        theta = threshold_logits(model, k, x0)
        needed = mask.sum(dim=1)
        clean_score = on_target(batch.clean_pred, batch, mask)
        best = BestIterate.start(x0, clean_score, self.norm)
        todo = clean_score < needed  # samples already on target are not optimised (zero perturbation)
        w0 = torch.atanh(0.999999 * (2 * (x0 - low) / (high - low) - 1))
        c = torch.full((n,), self.const, dtype=torch.float64, device=x0.device)
        lb = torch.zeros_like(c)
        ub = torch.full_like(c, _UPPER)
        check_every = max(1, self.steps // 10)
        broken = torch.zeros(n, dtype=torch.bool, device=x0.device)  # a non-finite loss or gradient was seen
        for _ in range(self.binary_steps):
            w = torch.zeros_like(x0)
            m1, m2 = torch.zeros_like(x0), torch.zeros_like(x0)
            running = todo.clone()
            reached = torch.zeros(n, dtype=torch.bool, device=x0.device)
            previous = torch.full((n,), math.inf, dtype=torch.float64, device=x0.device)
            for it in range(self.steps):
                if not bool(running.any()):
                    break
                wg = w.detach().requires_grad_(True)
                with torch.enable_grad():
                    xa = low + (high - low) * (torch.tanh(wg + w0) + 1) / 2
                    z = model(xa)
                    hinge = (self.confidence - sign * (z - theta)).clamp_min(0) * weight
                    loss = self._distance(xa - x0) + c.to(x0.dtype) * hinge.sum(dim=1)
                    (grad,) = torch.autograd.grad(loss.sum(), wg)
                with torch.no_grad():
                    xa, loss = xa.detach(), loss.detach().double()
                    finite = torch.isfinite(loss) & torch.isfinite(grad.flatten(1)).all(dim=1)
                    broken |= running & ~finite
                    running &= finite
                    pred = model.predict_from_probabilities(torch.sigmoid(z.detach()))
                    score = on_target(pred, batch, mask)
                    reached |= running & (score == needed)
                    live = running.nonzero().flatten()
                    best.update(live, xa[live], x0[live], score[live])
                    if it % check_every == 0 and it > 0:  # published early abort, per sample
                        running &= ~(loss > 0.9999 * previous)
                        previous = torch.where(running, loss, previous)
                    elif it == 0:
                        previous = loss
                    # Adam, one state per sample and pixel; frozen samples keep their iterate and moments
                    t = it + 1
                    upd = running.view(view)
                    g = torch.where(upd, grad, torch.zeros_like(grad))
                    m1 = torch.where(upd, _BETAS[0] * m1 + (1 - _BETAS[0]) * g, m1)
                    m2 = torch.where(upd, _BETAS[1] * m2 + (1 - _BETAS[1]) * g * g, m2)
                    mhat = m1 / (1 - _BETAS[0] ** t)
                    vhat = m2 / (1 - _BETAS[1] ** t)
                    w = torch.where(upd, w - self.lr * mhat / (vhat.sqrt() + _ADAM_EPS), w)
            # binary search on c, per sample (only samples still being optimised)
            ub = torch.where(todo & reached, torch.minimum(ub, c), ub)
            lb = torch.where(todo & ~reached, torch.maximum(lb, c), lb)
            mid = (lb + ub) / 2
            c = torch.where(todo & reached, mid, torch.where(todo & (ub < 1e9), mid, torch.where(todo, c * 10, c)))
        reasons = [
            "on_target" if s == m else "non_finite" if b else "max_iterations"
            for s, m, b in zip(best.score.tolist(), needed.tolist(), broken.tolist(), strict=True)
        ]
        record_outcome(batch, best.score, clean_score, needed, reasons, const=c)
        return best.adv
