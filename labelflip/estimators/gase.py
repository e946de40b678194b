"""GASE: Greedy Attack Space Expansion, estimating ``C*(x)``, the number of labels flippable within a budget.

**A reconstruction.** GASE is from Yang, Han & Zhang, "Characterizing the evasion attackability of multi-label
classifiers" (AAAI-21, arXiv 2012.09427), used by the SAE paper (seed 004, §5.1-5.2, Table 2) as its
attackability baseline ``C_a = mean_x C*(x)``. Neither the AAAI paper's algorithm box nor any public code could
be obtained; this module follows the reconstruction of SPEC-related-methods §1.3-1.5, which keeps every verified
property: greedy expansion of the attacked label set, a cheap marginal-gain estimate, a pluggable
(attack-agnostic) feasibility oracle, and a stop rule at the budget.

Per sample, with labels ``y`` (default: the clean prediction) and the attacked set ``S``::

    S <- labels already flipped; r <- 0
    loop:
        at x + r: margins ρ_j = y_j h_j(x + r), v_j = y_j ∇h_j(x + r); absorb labels flipped for free into S
        Δ_j = max(ρ_j, 0)² / ‖P⊥_S v_j‖² for j ∉ S        # marginal squared-norm cost (§1.4)
        for the k_try labels with the smallest finite Δ_j:
            r' <- oracle(S ∪ {j})                           # min-norm (linear) or budgeted attack (deep)
            if r' exists and ‖r'‖ <= eps: S <- S ∪ {j}; r <- r'; next loop
        stop when no candidate is accepted
    C(x) = number of labels whose prediction at x + r differs from y

``P⊥_S`` projects out the span of the constraints of ``S`` that are tight at ``x + r`` (the Schur-complement gain
of adding label ``j`` to the min-norm problem): the numerator is the margin, the denominator the part of ``v_j``
not aligned with the labels already attacked, so the estimate captures both factors the SAE paper names (margin
and transferability). Labels that flip for free are absorbed into ``S`` (our choice [R]: the count never
decreases along the greedy).

Oracles: ``"exact"`` for linear models (:func:`labelflip.estimators.exact.min_norm_linear`: NNLS least-distance
program for L2, HiGHS LP for L-inf); ``"attack"`` for any model: a budgeted attack from the registry
(:func:`labelflip.attacks.create_attack`, default ``"bce"``: MI-FGSM) with 0/1 label weights on ``S ∪ {j}``,
accepted when every label of the set flips; it is batched over samples and has no warm start.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from labelflip._validation import check_choice, check_float, check_int, fail
from labelflip.attacks import create_attack
from labelflip.attacks.base import prepare_inputs
from labelflip.estimators.exact import flipped_labels, min_norm_linear, perturb_norm
from labelflip.estimators.gradients import decision_offsets, label_gradients
from labelflip.models import MultiLabelModel

__all__ = ["GASEResult", "gase", "label_subset_model", "linear_parameters", "marginal_costs"]

_OWNER = "gase"


@dataclass
class GASEResult:
    """GASE per sample. ``N`` samples, ``m`` labels (after ``labels=`` restriction).

    Attributes:
        flips: ``(N,)`` int64 labels whose prediction at ``x + r`` differs from ``y`` (the estimate of ``C*(x)``).
        flipped: ``(N, m)`` bool, those labels. selected: ``(N, m)`` bool, the greedy's attacked set ``S``.
        perturbation: ``(N, ...)`` float32 ``r`` (``‖r‖ <= eps``; ``x + r`` within the model's bounds).
        norms: ``(N,)`` float64 ``‖r‖``. oracle_calls: ``(N,)`` int64. eps, norm, oracle: the settings.
        seconds: wall time of the call.
    """

    flips: Tensor
    flipped: Tensor
    selected: Tensor
    perturbation: Tensor
    norms: Tensor
    oracle_calls: Tensor
    eps: float
    norm: str
    oracle: str
    seconds: float = 0.0

    def mean(self) -> float:
        """``C_a``: the mean number of flipped labels (seed 004, §5.1)."""
        return float(self.flips.double().mean()) if self.flips.numel() else float("nan")


def linear_parameters(model: nn.Module, x_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(W (m, d), b (m,))`` float64 of a linear model in input units, or ``None`` if it is not linear.

    Recognised: a module with a ``linear_parameters()`` method returning ``(W, b)``, an ``nn.Linear``, or an
    ``nn.Sequential`` of ``Flatten``/``Identity`` layers and one ``nn.Linear``. The wrapper's mean/std
    normalisation is folded in and ``b`` is a decision score offset: ``logit(threshold)`` is subtracted.
    """
    wrapped = model.module if isinstance(model, MultiLabelModel) else model
    layer = wrapped
    if isinstance(wrapped, nn.Sequential):
        core = [c for c in wrapped if not isinstance(c, (nn.Flatten, nn.Identity))]
        layer = core[0] if len(core) == 1 else None
    if hasattr(wrapped, "linear_parameters"):
        w, b = wrapped.linear_parameters()
    elif isinstance(layer, nn.Linear):
        w = layer.weight
        b = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
    else:
        return None
    w = w.detach().cpu().to(torch.float64).numpy()
    b = b.detach().cpu().to(torch.float64).numpy().copy()
    d = math.prod(x_shape)
    if w.shape[1] != d:
        return None
    if isinstance(model, MultiLabelModel) and model._normalise:
        per = d // model.mean.numel()
        mean = np.repeat(model.mean.detach().cpu().double().numpy(), per)
        std = np.repeat(model.std.detach().cpu().double().numpy(), per)
        w = w / std
        b = b - w @ mean
    b -= decision_offsets(model, w.shape[0]).cpu().numpy()
    return w, b


class _Select(nn.Module):
    def __init__(self, model: nn.Module, labels: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("labels", labels, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)[:, self.labels]


def label_subset_model(model: MultiLabelModel, labels: list[int]) -> MultiLabelModel:
    """A wrapper whose outputs are the logits of ``labels`` only (same bounds, normalisation and thresholds)."""
    k = model.num_labels
    if not labels or any(not isinstance(j, int) or not 0 <= j < (k or 10**9) for j in labels):
        raise fail(_OWNER, "labels", f"a non-empty list of label indices in [0, {k})", labels)
    idx = torch.tensor(labels, dtype=torch.long, device=model.device)
    th = model.threshold if model.threshold.ndim == 0 else model.threshold[idx.to(model.threshold.device)]
    sub = MultiLabelModel(
        _Select(model, idx), num_labels=len(labels), bounds=model.bounds, threshold=th, output_kind="logits"
    )
    sub._checked = True
    return sub


def marginal_costs(v: Tensor, rho: Tensor, tight: Tensor, candidates: Tensor) -> Tensor:
    """The marginal squared-norm cost ``Δ_j = max(ρ_j, 0)² / ‖P⊥ v_j‖²`` of adding label ``j`` (§1.4), batched.

    Args:
        v: ``(n, m, d)`` ``y_j ∇h_j`` at the current point. rho: ``(n, m)`` margins there.
        tight: ``(n, m)`` bool, the constraints spanning the projection. candidates: ``(n, m)`` bool.

    Returns:
        ``(n, m)`` float64; ``inf`` for non-candidates and for candidates aligned with the span but not yet flipped.
    """
    v = v.to(torch.float64)
    gram = v @ v.transpose(1, 2)
    outside = ~tight
    g_a = gram.masked_fill(outside.unsqueeze(1) | outside.unsqueeze(2), 0.0)
    g_a = g_a + torch.diag_embed(outside.to(torch.float64))  # identity on the inactive block
    cross = gram.masked_fill(outside.unsqueeze(2), 0.0)  # (n, m_tight, m): g_j = V_S v_j
    solved = torch.linalg.pinv(g_a, hermitian=True) @ cross
    own = gram.diagonal(dim1=1, dim2=2)
    perp = (own - (cross * solved).sum(dim=1)).clamp_min(0.0)
    rho_pos = rho.to(torch.float64).clamp_min(0.0)
    tiny = perp <= 1e-10 * own.clamp_min(1e-30)
    cost = torch.where(tiny, torch.where(rho_pos > 0, math.inf, 0.0), rho_pos**2 / perp.clamp_min(1e-300))
    return cost.masked_fill(~candidates, math.inf)


def _costs_np(gram: np.ndarray, own: np.ndarray, rho: np.ndarray, tight: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """:func:`marginal_costs` for one sample in numpy (the exact path: small matrices, no torch overhead)."""
    perp = own.copy()
    if tight.size:
        cross = gram[tight]  # (|A|, m)
        perp = np.maximum(
            own - (cross * (np.linalg.pinv(gram[np.ix_(tight, tight)], hermitian=True) @ cross)).sum(0), 0
        )
    rho_pos = np.maximum(rho, 0.0)
    tiny = perp <= 1e-10 * np.maximum(own, 1e-30)
    with np.errstate(divide="ignore"):
        cost = np.where(tiny, np.where(rho_pos > 0, np.inf, 0.0), rho_pos**2 / np.maximum(perp, 1e-300))
    return np.where(cand, cost, np.inf)


def _linear_gase(
    w: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    norm: str,
    kappa: float,
    k_try: int,
    lower: np.ndarray | None,
    upper: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """GASE with the exact oracle on one sample: ``(r (d,), selected (m,) bool, oracle calls)``."""
    v = y[:, None] * w
    mu = y * (w @ x + b)
    gram = v @ v.T  # constant for a linear model
    own = np.diag(gram)
    selected = np.zeros(w.shape[0], dtype=bool)
    r = np.zeros_like(x)
    calls = 0
    tol = eps * (1 + 1e-9) + 1e-12
    while True:
        rho = mu + v @ r
        selected |= flipped_labels(v, mu, r, y)
        cand = ~selected
        if not cand.any():
            break
        tight = np.flatnonzero(selected & (np.abs(rho + kappa) <= 1e-6 * (1 + np.abs(mu))))
        cost = _costs_np(gram, own, rho, tight, cand)
        order = [j for j in np.argsort(cost, kind="stable")[:k_try] if np.isfinite(cost[j])]
        accepted = False
        for j in order:
            trial = selected.copy()
            trial[j] = True
            calls += 1
            r_new = min_norm_linear(v[trial], mu[trial], norm=norm, kappa=kappa, lower=lower, upper=upper)
            if r_new is not None and perturb_norm(r_new, norm) <= tol:
                selected, r, accepted = trial, r_new, True
                break
        if not accepted:
            break
    return r, selected, calls


def gase(
    model: nn.Module | MultiLabelModel,
    x: Tensor,
    eps: float,
    *,
    norm: str = "l2",
    y: Tensor | None = None,
    labels: list[int] | None = None,
    oracle: str = "auto",
    attack: str = "bce",
    attack_options: dict[str, Any] | None = None,
    k_try: int = 3,
    kappa: float = 1e-4,
    batch_size: int = 64,
) -> GASEResult:
    """Greedy Attack Space Expansion (reconstruction, see the module docstring): labels flippable within ``eps``.

    Args:
        model: a :class:`MultiLabelModel` (tabular models need suitable ``bounds``).
        x: inputs ``(N, ...)``. eps: the budget radius (input units), >= 0.
        norm: ``"l2"`` (the paper) or ``"linf"``.
        y: ``(N, K)`` labels in {0, 1} counted against (Eq. 1 uses the ground truth; then labels already wrong
            count as flipped); default: the clean prediction (flips, as the rest of labelflip counts them).
        labels: restrict the problem to these label indices (others are neither attacked nor counted).
        oracle: ``"exact"`` (linear models only), ``"attack"`` or ``"auto"`` (exact when the model is linear).
        attack, attack_options: the registry attack of the ``"attack"`` oracle and its options (e.g. ``alpha``).
        k_try: candidates tried per greedy step (1: plain greedy). kappa: flip margin for the exact oracle.
        batch_size: samples per gradient / attack call (attack oracle).
    """
    start = time.perf_counter()
    eps = check_float(_OWNER, "eps", eps, low=0.0, fix="a budget radius in input units, e.g. 0.5.")
    check_choice(_OWNER, "norm", norm, ("l2", "linf"))
    check_choice(_OWNER, "oracle", oracle, ("auto", "exact", "attack"))
    check_int(_OWNER, "k_try", k_try, low=1, fix="e.g. k_try=3 (1: plain greedy).")
    kappa = check_float(_OWNER, "kappa", kappa, low=0.0, fix="e.g. kappa=1e-4.")
    check_int(_OWNER, "batch_size", batch_size, low=1)
    model, x = prepare_inputs(model, x, _OWNER)
    n, k = x.shape[0], int(model.num_labels or 0)
    if y is not None:
        y = model.validate_labels(y, n, owner=_OWNER, param="y")
    params = linear_parameters(model, tuple(x.shape[1:]))
    if labels is not None:
        labels = list(labels)
        model = label_subset_model(model, labels)
        y = None if y is None else y[:, labels]
        params = None if params is None else (params[0][labels], params[1][labels])
        k = len(labels)
    if oracle == "exact" and params is None:
        raise fail(
            _OWNER,
            "oracle",
            "'attack' or 'auto' for a non-linear model",
            oracle,
            "the exact oracle needs a linear model (nn.Linear or linear_parameters()).",
        )
    use_exact = oracle == "exact" or (oracle == "auto" and params is not None)
    with torch.no_grad(), model.eval_mode():
        decision = model(x).double() - decision_offsets(model, k, device=x.device)
    y_pm = (decision > 0).double() * 2 - 1 if y is None else y.to(x.device).double() * 2 - 1
    if use_exact:
        r, selected, calls = _run_exact(model, x, y_pm, eps, norm, kappa, k_try, params)
    else:
        r, selected, calls = _run_attack(model, x, y_pm, eps, norm, k_try, attack, attack_options or {}, batch_size)
    with torch.no_grad(), model.eval_mode():
        adv = (model(x + r) - decision_offsets(model, k, device=x.device).to(x.dtype)) > 0
    flipped = adv.cpu() != (y_pm.cpu() > 0)
    flat = r.detach().flatten(1).double().cpu()
    norms = flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)
    return GASEResult(
        flipped.sum(1),
        flipped,
        selected.cpu() | flipped,
        r.detach().cpu(),
        norms,
        calls,
        eps,
        norm,
        "exact" if use_exact else f"attack:{attack}",
        time.perf_counter() - start,
    )


def _run_exact(
    model: MultiLabelModel,
    x: Tensor,
    y_pm: Tensor,
    eps: float,
    norm: str,
    kappa: float,
    k_try: int,
    params: tuple[np.ndarray, np.ndarray],
) -> tuple[Tensor, Tensor, Tensor]:
    w, b = params
    xs = x.detach().flatten(1).double().cpu().numpy()
    ys = y_pm.cpu().numpy()
    low, high = model.bounds
    rs, sel, calls = [], [], []
    for i in range(xs.shape[0]):
        # box constraints only where the ball can leave the bounds (an L2 ball lies in the L-inf box of radius eps)
        boxed = bool((xs[i] - eps < low).any() or (xs[i] + eps > high).any())
        lower, upper = (low - xs[i], high - xs[i]) if boxed else (None, None)
        r, s, c = _linear_gase(w, b, xs[i], ys[i], eps, norm, kappa, k_try, lower, upper)
        rs.append(r)
        sel.append(s)
        calls.append(c)
    r = torch.from_numpy(np.stack(rs)).to(x.dtype).view_as(x)
    return r, torch.from_numpy(np.stack(sel)), torch.tensor(calls, dtype=torch.int64)


def _run_attack(
    model: MultiLabelModel,
    x: Tensor,
    y_pm: Tensor,
    eps: float,
    norm: str,
    k_try: int,
    attack: str,
    options: dict[str, Any],
    batch_size: int,
) -> tuple[Tensor, Tensor, Tensor]:
    n, k = y_pm.shape
    try:
        runner = create_attack(attack, model, norm=norm, return_adv=True, **options)
    except TypeError as exc:
        raise fail(_OWNER, "attack_options", f"options accepted by attack {attack!r}", options, str(exc)) from exc
    target = (y_pm < 0).to(x.dtype)  # the flipped state of every label
    selected = torch.zeros(n, k, dtype=torch.bool)
    r = torch.zeros_like(x)
    calls = torch.zeros(n, dtype=torch.int64)
    done = torch.zeros(n, dtype=torch.bool)
    offsets = decision_offsets(model, k, device=x.device)
    while not bool(done.all()):
        idx = (~done).nonzero().flatten()
        rho_parts, v_parts = [], []
        with model.eval_mode():
            for s in range(0, idx.numel(), batch_size):
                ii = idx[s : s + batch_size]
                logits, grads = label_gradients(model, x[ii] + r[ii])
                yy = y_pm[ii.to(y_pm.device)]
                rho_parts.append((yy * (logits.detach().double() - offsets)).cpu())
                v_parts.append((yy.unsqueeze(2) * grads.detach().flatten(2).double()).cpu())
        rho, v = torch.cat(rho_parts), torch.cat(v_parts)
        y_sub = y_pm[idx.to(y_pm.device)].cpu()
        flipped_now = torch.where(y_sub > 0, rho <= 0, rho < 0)
        selected[idx] |= flipped_now
        cand = ~selected[idx]
        cost = marginal_costs(v, rho, selected[idx], cand)
        order = cost.argsort(dim=1, stable=True)
        accepted = torch.zeros(idx.numel(), dtype=torch.bool)
        for t in range(min(k_try, k)):
            j = order[:, t]
            valid = torch.isfinite(cost.gather(1, j[:, None])[:, 0]) & ~accepted
            if not bool(valid.any()):
                continue
            rows = idx[valid]
            trial = selected[rows].clone()
            trial[torch.arange(rows.numel()), j[valid]] = True
            dev_rows = rows.to(x.device)
            res = runner(x[dev_rows], eps, target=target[dev_rows], weights=trial.to(x.device, x.dtype))
            calls[rows] += 1
            reached = (res.adv_pred[0].cpu() == target[dev_rows].bool().cpu()) | ~trial
            ok = reached.all(dim=1)
            good = rows[ok]
            selected[good] = trial[ok]
            r[good.to(x.device)] = res.x_adv[0][ok.to(x.device)] - x[good.to(x.device)]
            accepted[valid.nonzero().flatten()[ok]] = True
        done[idx[~accepted]] = True
        done[idx[~cand.any(dim=1)]] = True
    return r, selected, calls
