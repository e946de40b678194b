"""ML-DeepFool (Song et al., ICDM 2018; SPEC-related-methods §3.3, SPEC-reference-code §9; seed App. J eq. 16).

Each iteration linearises the labels' decision boundaries at the current iterate ``x_k`` and takes the
minimum-L2 step onto the intersection of the linearised boundaries (the pseudo-inverse of the Jacobian rows)::

    A = J[U]  (rows of the labels in U, (|U|, d)),   b = theta[U] - z[U]      (logits; theta = logit(threshold))
    delta = A^T (A A^T)^+ b                         (minimum-norm solution of A delta = b)
    r_tot += delta;  x_k+1 = clip(x + (1 + overshoot) r_tot, bounds)

Default (``published=False``): logits relative to each label's threshold logit, ``U`` = the attacked labels not
yet on target, overshoot 0.02 (DeepFool's). ``published=True`` reproduces the published algorithm: sigmoid
probabilities (``b = threshold - f``, ``A = J_f``), ``U`` = every attacked label (labels already on target are
pulled back *onto* the threshold, which is why it produces large perturbations and few flips), no overshoot, and a
singular ``A A^T`` stops the sample. All-zero Jacobian rows are dropped in both.

The best iterate is kept by (labels on target, then smaller perturbation norm ``||x_k - x||``). **Fix**: the
published code broke ties by the norm of the *image* ``||x_k||`` instead of the perturbation; labelflip always
compares perturbation norms (also with ``published=True``). A rank-deficient system (e.g. two labels with parallel
gradients) takes the least-squares minimum-norm step (``pinv``) and is counted in ``result.extra["singular_steps"]``.

The step is the L2 pseudo-inverse for both norms (as published); ``norm`` selects the norm in which the result is
measured, clipped to budgets and reported (``result.min_norm``). All K per-label Jacobians of a batch come from
one batched backward pass (:func:`label_jacobian`).

This module also holds the helpers the three baselines share (:func:`label_jacobian`, :func:`threshold_logits`,
:func:`attacked_labels`, :func:`record_outcome`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from labelflip._registry import Param
from labelflip._validation import check_float, check_int, fail
from labelflip.attacks.base import Batch, MinimumNormAttack
from labelflip.attacks.registry import ATTACKS
from labelflip.models import MultiLabelModel

__all__ = [
    "BestIterate",
    "MLDeepFool",
    "attacked_labels",
    "label_jacobian",
    "min_norm_step",
    "record_outcome",
    "threshold_logits",
]

_OWNER = "MLDeepFool"
_PINV_RTOL = 1e-10  # eigenvalues of A A^T below this fraction of the largest count as zero (rank deficiency)


# ----------------------------------------------------------------------------- shared helpers
def label_jacobian(model: MultiLabelModel, x: Tensor) -> tuple[Tensor, Tensor]:
    """Logits ``(N, K)`` and the Jacobian ``d logits / d x`` ``(N, K, ...)`` at ``x`` ``(N, ...)``.

    One forward and one batched backward pass (``torch.autograd.grad(..., is_grads_batched=True)``, i.e. the K
    vector-Jacobian products under ``vmap``); models with an operation ``vmap`` does not support fall back to K
    backward passes through the same graph. Only ``x`` receives gradients (never the parameters).
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z = model(xg)
        k = z.shape[1]
        eye = torch.eye(k, dtype=z.dtype, device=z.device).unsqueeze(1).expand(k, *z.shape)
        try:
            (jac,) = torch.autograd.grad(z, xg, grad_outputs=eye, is_grads_batched=True, retain_graph=True)
        except RuntimeError:  # pragma: no cover - an op without a batching rule
            jac = torch.stack([torch.autograd.grad(z, xg, grad_outputs=e, retain_graph=True)[0] for e in eye])
    return z.detach(), jac.detach().movedim(0, 1)


def threshold_logits(model: MultiLabelModel, k: int, like: Tensor) -> Tensor:
    """The decision threshold as logits ``(K,)`` in ``like``'s dtype/device: ``logit(threshold)`` per label."""
    th = model.threshold.to(device=like.device, dtype=torch.float64).expand(k)
    return torch.logit(th).to(like.dtype)


def attacked_labels(batch: Batch) -> Tensor:
    """``(N, K)`` bool: the labels the attack must bring to their target (weight > 0; all without weights)."""
    if batch.weights is None:
        return torch.ones_like(batch.clean_pred)
    return batch.weights > 0


def on_target(pred: Tensor, batch: Batch, mask: Tensor) -> Tensor:
    """``(N,)`` int64: attacked labels whose prediction equals the target."""
    return ((pred == batch.target.bool()) & mask).sum(dim=1)


def record_outcome(
    batch: Batch, best_score: Tensor, clean_score: Tensor, needed: Tensor, reasons: list[str], **per_sample: Any
) -> None:
    """Append this chunk's per-sample outcome to ``batch.info`` (-> ``result.extra``), in sample order.

    ``status``: ``"already_on_target"`` (zero perturbation), ``"success"`` (every attacked label on target),
    ``"partial"`` (more labels on target than clean), ``"failed"`` (no improvement: zero perturbation returned).
    ``stop_reason``: why the sample's run ended (``"on_target"``, ``"max_iterations"``, ``"stalled"``,
    ``"singular"``, ``"zero_gradient"``, ``"infeasible"``, ``"timeout"``, ``"solver_error"``, ``"non_finite"``).
    ``labels_on_target``: attacked labels on target in the returned input. Extra keyword lists are appended too.
    """
    status = []
    for best, clean, n in zip(best_score.tolist(), clean_score.tolist(), needed.tolist(), strict=True):
        if clean == n:
            status.append("already_on_target")
        elif best == n:
            status.append("success")
        else:
            status.append("partial" if best > clean else "failed")
    info = batch.info
    for key, values in {"status": status, "stop_reason": reasons, "labels_on_target": best_score.tolist()}.items():
        info.setdefault(key, []).extend(values)
    for key, values in per_sample.items():
        info.setdefault(key, []).extend(values.tolist() if isinstance(values, Tensor) else list(values))


def perturbation_norm(delta: Tensor, norm: str) -> Tensor:
    """``(N,)`` L-inf or L2 norm of ``delta`` ``(N, ...)``."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


@dataclass
class BestIterate:
    """Each sample's best iterate so far: most attacked labels on target, then the smallest perturbation
    ``||x_k - x||`` in ``kind`` (the published ML-DeepFool code compared the image norm ``||x_k||``: fixed here).
    Starts at the clean input (score = its labels on target, norm 0), so a sample that never improves returns it.

    Attributes: ``adv`` ``(N, ...)``, ``score`` ``(N,)`` int64, ``norm`` ``(N,)`` float64, ``kind`` (linf or l2).
    """

    adv: Tensor
    score: Tensor
    norm: Tensor
    kind: str

    @classmethod
    def start(cls, x0: Tensor, clean_score: Tensor, kind: str) -> BestIterate:
        return cls(
            x0.clone(), clean_score.clone(), torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device), kind
        )

    def update(self, idx: Tensor, xk: Tensor, x0: Tensor, score: Tensor) -> None:
        """Offer iterates ``xk`` ``(n, ...)`` with clean inputs ``x0`` and scores ``(n,)`` for samples ``idx``."""
        norm = perturbation_norm(xk.double() - x0.double(), self.kind)
        better = (score > self.score[idx]) | ((score == self.score[idx]) & (norm < self.norm[idx]))
        sel = idx[better]
        self.adv[sel], self.score[sel], self.norm[sel] = xk[better], score[better], norm[better]


def min_norm_step(a: Tensor, b: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-L2 solutions of ``A delta = b`` restricted to ``rows``, batched.

    Args:
        a: ``(N, K, d)`` rows (Jacobian rows), any float dtype (solved in float64).
        b: ``(N, K)`` right-hand sides.
        rows: ``(N, K)`` bool, the equations that apply (others are ignored).

    Returns:
        ``(delta (N, d) float64, singular (N,) bool)``: ``delta = A^T (A A^T)^+ b``, the minimum-norm solution when
        the system is consistent and the minimum-norm least-squares solution otherwise; ``singular`` marks samples
        whose active rows are linearly dependent (rank of ``A A^T`` below the number of rows).
    """
    m = rows.to(torch.float64)
    a64 = a.to(torch.float64) * m.unsqueeze(2)
    b64 = b.to(torch.float64) * m
    gram = a64 @ a64.transpose(1, 2)  # (N, K, K)
    scale = gram.diagonal(dim1=1, dim2=2).amax(dim=1).clamp_min(1e-300).view(-1, 1, 1)
    g = gram / scale  # scale-free tolerance
    pinv = torch.linalg.pinv(g, rtol=_PINV_RTOL, hermitian=True)
    lam = (pinv @ b64.unsqueeze(2)).squeeze(2) / scale.view(-1, 1)
    delta = (a64.transpose(1, 2) @ lam.unsqueeze(2)).squeeze(2)
    rank = torch.linalg.matrix_rank(g, rtol=_PINV_RTOL, hermitian=True)
    return delta, rank < rows.sum(dim=1)


# ----------------------------------------------------------------------------- the attack
@ATTACKS.register(
    "ml-deepfool",
    params=[
        Param("steps", int, 20, "maximum iterations (published: 20)", low=1),
        Param("overshoot", float, 0.02, "r_tot is scaled by 1 + overshoot (published: 0)", low=0.0),
        Param("published", bool, False, "probabilities, every label's boundary, no overshoot (Song et al.)"),
    ],
    label="ML-DeepFool",
    description="ML-DeepFool: iterated pseudo-inverse steps onto the linearised label boundaries (min-norm)",
)
class MLDeepFool(MinimumNormAttack):
    """ML-DeepFool, a minimum-norm attack (see the module docstring for the algorithm and the tie-break fix).

    Example::

        attack = MLDeepFool(model)                 # flip every label (default target)
        res = attack(x, eps=[0.01, 1.0])           # flips of the perturbation clipped to each budget
        res.min_norm, res.extra["status"]          # the norm each sample needed; success/partial/failed

    Args:
        model: the classifier (logits).
        steps: maximum iterations (published 20).
        overshoot: the accumulated step is scaled by ``1 + overshoot`` (0.02; ``published=True`` forces 0).
        published: the published algorithm (probabilities, all attacked labels, no overshoot, a singular system
            stops the sample); the tie-break is fixed regardless.
        norm: ``"linf"`` or ``"l2"``: the norm results are measured and clipped in (the step is always L2).
        batch_size, return_adv: see :class:`~labelflip.attacks.Attack`.

    ``result.extra``: per-sample ``status``, ``stop_reason``, ``labels_on_target``, ``iterations``,
    ``singular_steps``.
    """

    def __init__(
        self,
        model: nn.Module | MultiLabelModel,
        *,
        steps: int = 20,
        overshoot: float = 0.02,
        published: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.steps = check_int(_OWNER, "steps", steps, low=1)
        self.overshoot = check_float(_OWNER, "overshoot", overshoot, low=0.0)
        if not isinstance(published, bool):
            raise fail(_OWNER, "published", "a bool", published)
        self.published = published

    def __repr__(self) -> str:
        return (
            f"MLDeepFool(steps={self.steps}, overshoot={self.overshoot}, published={self.published}, "
            f"norm={self.norm!r})"
        )

    def run(self, batch: Batch) -> Tensor:
        model, x0 = self.model, batch.x
        n, k = batch.clean_pred.shape
        low, high = model.bounds
        mask = attacked_labels(batch)
        target = batch.target.bool()
        needed = mask.sum(dim=1)
        theta = threshold_logits(model, k, x0)
        prob_th = model.threshold.to(x0).expand(k)
        scale = 1.0 if self.published else 1.0 + self.overshoot
        clean_score = on_target(batch.clean_pred, batch, mask)
        best = BestIterate.start(x0, clean_score, self.norm)
        r_tot = torch.zeros(x0.shape, dtype=torch.float64, device=x0.device)
        active = clean_score < needed
        reasons = ["on_target" if not a else "max_iterations" for a in active.tolist()]
        iterations = torch.zeros(n, dtype=torch.int64)
        singular = torch.zeros(n, dtype=torch.int64)
        for it in range(self.steps + 1):
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            xk = (x0[idx].double() + scale * r_tot[idx]).clamp(low, high).to(x0.dtype)
            if it < self.steps:
                z, jac = label_jacobian(model, xk)
            else:
                with torch.no_grad():
                    z, jac = model(xk), None
            pred = model.predict_from_probabilities(torch.sigmoid(z))
            score = ((pred == target[idx]) & mask[idx]).sum(dim=1)
            if it > 0:
                best.update(idx, xk, x0[idx], score)
            done = score == needed[idx]
            for i in idx[done].tolist():
                reasons[i] = "on_target"
            if jac is None:
                break
            iterations[idx[~done]] += 1
            a = jac.flatten(2)  # (n_active, K, d)
            if self.published:
                fz = torch.sigmoid(z)
                a = a * (fz * (1 - fz)).unsqueeze(2)
                b = prob_th - fz
                rows = mask[idx].clone()
            else:
                b = theta - z
                rows = mask[idx] & ~(pred == target[idx])
            rows &= a.abs().amax(dim=2) > 0  # drop all-zero gradient rows
            delta, sing = min_norm_step(a, b, rows)
            stop = done.clone()
            for j, i in enumerate(idx.tolist()):
                if done[j]:
                    continue
                if not bool(rows[j].any()):
                    reasons[i], stop[j] = "zero_gradient", True
                elif not bool(torch.isfinite(delta[j]).all()):
                    reasons[i], stop[j] = "non_finite", True
                elif bool(sing[j]):
                    singular[i] += 1
                    if self.published:  # the published code skips a sample whose system is singular
                        reasons[i], stop[j] = "singular", True
            go = ~stop
            r_tot[idx[go]] += delta[go].view((-1, *x0.shape[1:]))
            active[idx[stop]] = False
        record_outcome(batch, best.score, clean_score, needed, reasons, iterations=iterations, singular_steps=singular)
        return best.adv
