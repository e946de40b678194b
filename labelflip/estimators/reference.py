"""The exact maximum number of flips of a **linear** model on a batch of inputs: the reference that GASE and any
attack are measured against (SPEC-related-methods §1.6).

``method="milp"`` solves the L-inf problem exactly as a MILP (HiGHS, :func:`~labelflip.estimators.exact.
milp_max_flips`); ``method="enumerate"`` enumerates label sets with Apriori pruning and the exact min-norm oracle
(:func:`~labelflip.estimators.exact.enumerate_max_flips`; any norm, small ``m``); ``"auto"`` takes the MILP for
L-inf and the enumeration for L2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from labelflip._validation import check_choice, check_float, check_int, fail
from labelflip.attacks.base import prepare_inputs
from labelflip.estimators.exact import enumerate_max_flips, milp_max_flips
from labelflip.estimators.gase import linear_parameters
from labelflip.models import MultiLabelModel

__all__ = ["ExactResult", "exact_max_flips"]

_OWNER = "exact_max_flips"


@dataclass
class ExactResult:
    """Exact maxima per sample: ``flips`` ``(N,)`` int64, ``flipped`` ``(N, m)`` bool, ``perturbation`` ``(N, ...)``,
    ``oracle_calls`` ``(N,)`` int64 (min-norm problems solved; 1 per MILP), the settings and the wall time."""

    flips: Tensor
    flipped: Tensor
    perturbation: Tensor
    oracle_calls: Tensor
    eps: float
    norm: str
    method: str
    seconds: float = 0.0

    def mean(self) -> float:
        """The exact ``C*`` averaged over the samples."""
        return float(self.flips.double().mean()) if self.flips.numel() else float("nan")


def exact_max_flips(
    model: nn.Module | MultiLabelModel,
    x: Tensor,
    eps: float,
    *,
    norm: str = "l2",
    y: Tensor | None = None,
    labels: list[int] | None = None,
    method: str = "auto",
    kappa: float = 1e-4,
    max_labels: int = 16,
    time_limit: float | None = None,
) -> ExactResult:
    """The exact maximum number of labels of a linear model flippable within ``‖r‖ <= eps``, per sample.

    Args:
        model: a linear :class:`MultiLabelModel` (see :func:`~labelflip.estimators.linear_parameters`).
        x: inputs ``(N, ...)``. eps: the budget (input units). norm: ``"l2"`` or ``"linf"``.
        y: ``(N, K)`` labels in {0, 1} counted against; default the clean prediction.
        labels: restrict the problem to these label indices (enumeration is exponential in their number).
        method: ``"auto"``, ``"milp"`` (L-inf only) or ``"enumerate"``.
        kappa: flip margin (decision-score units). max_labels: enumeration refuses more labels than this.
        time_limit: per-sample MILP time limit in seconds (``None``: solve to proven optimality).
    """
    start = time.perf_counter()
    eps = check_float(_OWNER, "eps", eps, low=0.0)
    check_choice(_OWNER, "norm", norm, ("l2", "linf"))
    check_choice(_OWNER, "method", method, ("auto", "milp", "enumerate"))
    check_int(_OWNER, "max_labels", max_labels, low=1)
    if method == "milp" and norm != "linf":
        raise fail(_OWNER, "method", "'enumerate' or 'auto' for an L2 budget", method, "the MILP is for L-inf only.")
    model, x = prepare_inputs(model, x, _OWNER)
    params = linear_parameters(model, tuple(x.shape[1:]))
    if params is None:
        raise fail(_OWNER, "model", "a linear model (nn.Linear, or a module with linear_parameters())", model)
    w, b = params
    xs = x.detach().flatten(1).double().cpu().numpy()
    decision = xs @ w.T + b
    if y is None:
        y_pm = np.where(decision > 0, 1.0, -1.0)
    else:
        y_pm = model.validate_labels(y, xs.shape[0], owner=_OWNER, param="y").cpu().double().numpy() * 2 - 1
    if labels is not None:
        labels = list(labels)
        w, b, decision, y_pm = w[labels], b[labels], decision[:, labels], y_pm[:, labels]
    use = ("milp" if norm == "linf" else "enumerate") if method == "auto" else method
    low, high = model.bounds
    rs, flipped, calls = [], [], []
    for i in range(xs.shape[0]):
        boxed = bool((xs[i] - eps < low).any() or (xs[i] + eps > high).any())
        lower, upper = (low - xs[i], high - xs[i]) if boxed else (None, None)
        v = y_pm[i][:, None] * w
        mu = y_pm[i] * decision[i]
        if use == "milp":
            res = milp_max_flips(v, mu, y_pm[i], eps, kappa=kappa, lower=lower, upper=upper, time_limit=time_limit)
        else:
            res = enumerate_max_flips(
                v, mu, y_pm[i], eps, norm=norm, kappa=kappa, lower=lower, upper=upper, max_labels=max_labels
            )
        mask = np.zeros(w.shape[0], dtype=bool)
        mask[list(res.subset)] = True
        rs.append(res.perturbation)
        flipped.append(mask)
        calls.append(res.oracle_calls)
    flipped_t = torch.from_numpy(np.stack(flipped)) if flipped else torch.zeros(0, w.shape[0], dtype=torch.bool)
    r = torch.from_numpy(np.stack(rs)).to(x.dtype).view_as(x).cpu() if rs else torch.zeros_like(x).cpu()
    return ExactResult(
        flipped_t.sum(1),
        flipped_t,
        r,
        torch.tensor(calls, dtype=torch.int64),
        eps,
        norm,
        use,
        time.perf_counter() - start,
    )
