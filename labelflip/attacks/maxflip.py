"""MaxFlip: labelflip's own budget-aware maximum-label-flip attack (issue 13, item 1). Needs no flip profile, no
correlation matrix and no gamma.

Design, from the seed paper's analysis (§IV) and single-label practice (APGD, Croce & Hein 2020):

* **Use the whole budget early, then refine** (APGD's step-size schedule). MI-FGSM moves every pixel by
  ``alpha = 1/2560`` per step, so a pixel only reaches the edge of the eps-box if its gradient sign never
  changes. MaxFlip takes projected steps of size ``eta0 * eps`` and halves the step ``phases - 1`` times, at
  fixed fractions of the run; the iterate is projected onto the eps-ball and the bounds after every step.
* **Re-select the targets at every step from the labels within reach** (§IV-C: budget spread over labels that
  end just short of the threshold is wasted; §IV-A: labels differ in attackability). A label's *margin* is its
  logit distance to the threshold in the target direction; its *velocity* is how fast that margin shrank over
  the last ``window`` steps, per unit of step size. A label stays targeted while its margin is within
  ``slack`` times the distance its velocity covers with the step sizes still to come; labels that stopped
  making progress drop out, and an untargeted label that a correlated one dragged within reach (§IV-B) joins
  again. Labels already at their target stay in the loss (their BCE term fades as they move past the
  threshold), so they are kept, not pushed further at the others' expense.
* **Checkpoint the best iterate** (APGD): the iterate with the most labels at their target is returned.

Algorithm, per sample and budget (each budget runs its own trajectory; samples never interact)::

    n      = floor(eps / alpha + 1e-9)                      # the MI-FGSM pass count for this budget
    s      = n - 1 if n >= 2 else 1                         # gradient steps; the n-th pass is forward-only
    eta_k  = eta0 * eps * 0.5 ** floor(phases * k / s)      # k = 0 .. s-1
    theta  = logit(threshold)                               # (K,)
    x_0 = x, g = 0, best = x_0
    for k = 0 .. s-1:                                       # one forward+backward pass each
        z = F(x_k);  m = (2t - 1) * (theta - z)             # margins (N, K); <= 0: label at its target
        c = #{labels j with w_j > 0 and pred_j(x_k) = t_j}  # flips for the default target
        best <- x_k if c > c(best)
        if k >= 2:                                          # velocity needs two past iterates
            l    = min(window, k)
            v    = (m_{k-l} - m_k) / (eta_{k-l} + ... + eta_{k-1})
            sel  = (m <= 0) or (m <= slack * max(v, 0) * (eta_k + ... + eta_{s-1}))
            if no label with m > 0 is selected: select the one with the smallest m - reach
        else: sel = every label
        grad = d/dx sum_j sel_j * w_j * softplus(m_j)       # BCE on the threshold-shifted logit
        g    = mu * g + grad / ||grad||_1                   # (L2: / ||grad||_2)
        x_k+1 = P(x_k - eta_k * sign(g))                    # (L2: - eta_k * g / ||g||_2)
    x_adv = x_s if n < 2 or c(x_s) >= c(best) else best    # n >= 2: one forward pass at x_s
    P = projection onto the L-inf box (L2 ball) of radius eps around x, then the clamp to the model's bounds.

So at budget eps MaxFlip makes ``n`` forward and ``n - 1`` backward passes (``n = 1``: one of each), never more
than MI-FGSM's ``n`` forward+backward passes (``steps_for`` reports ``n``); the budget is a hard bound (every
iterate is projected). The loss term ``softplus(m)`` is the seed paper's BCE (eq. 2) with the logit measured from
the threshold logit (equal to it for threshold 0.5), i.e. a smooth margin loss whose weight ``sigmoid(m)`` fades
once a label is past its threshold. L2 uses MI-FGSM's L2 step
``alpha_l2 = alpha_linf * sqrt(H * W)`` only to count passes (``n = floor(eps / alpha_l2)``); its step sizes are
``eta0 * eps`` halved as above.

Parameters (registry spec ``maxflip:slack=2,window=8``; defaults in brackets): ``eta0`` [1.0] first step as a
multiple of eps; ``phases`` [3] number of step-size levels (``phases - 1`` halvings); ``mu`` [0.75] momentum
decay; ``window`` [4] steps over which velocity is measured; ``slack`` [1.5] how far beyond its projected reach a
label is still targeted; ``select`` [true] the re-selection itself (false: every label at every step, i.e. BCE
with the schedule and the checkpoint; the ablation). No restarts: with a fixed pass budget a
restart halves the passes of each run, and in prototype runs APGD's adaptive halving with restarts from the
checkpoint was no better than this fixed schedule (docs/benchmarks.md, "MaxFlip vs the paper's attacks").
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labelflip._registry import Param
from labelflip._validation import check_float, check_int, fail
from labelflip.attacks.base import Batch, FixedBudgetAttack
from labelflip.attacks.registry import ATTACKS
from labelflip.attacks.trajectory import ALPHA_LINF, num_steps
from labelflip.models import MultiLabelModel

__all__ = ["MaxFlip", "reach_selection", "step_sizes", "success_counts", "target_margins"]

_OWNER = "MaxFlip"


def _view(v: Tensor, ndim: int) -> Tensor:
    return v.view((-1,) + (1,) * (ndim - 1))


def step_sizes(eps: float, steps: int, *, eta0: float = 1.0, phases: int = 3) -> list[float]:
    """The step-size schedule ``eta_k = eta0 * eps * 0.5 ** floor(phases * k / steps)``, ``k = 0 .. steps-1``:
    ``phases`` equal-length levels, each half the previous (APGD halves at checkpoints; here they are fixed)."""
    return [eta0 * eps * 0.5 ** math.floor(phases * k / steps) for k in range(steps)]


def target_margins(logits: Tensor, target: Tensor, theta: Tensor) -> Tensor:
    """Margins ``(2t - 1) * (theta - z)`` ``(N, K)`` in logit units: the distance each label still has to travel
    to cross its threshold logit ``theta`` ``(K,)`` in the direction of its target ``t`` ``(N, K)`` in {0, 1}.
    ``<= 0`` means the label is at (or on) its target side; ``softplus(margin)`` is BCE when ``theta = 0``."""
    return (2 * target - 1) * (theta - logits)


def success_counts(pred: Tensor, target: Tensor, counted: Tensor) -> Tensor:
    """Labels at their target per sample ``(N,)``: ``pred`` ``(N, K)`` bool, ``target`` ``(N, K)`` in {0, 1},
    ``counted`` ``(N, K)`` bool (labels with weight > 0). With the default target (``1 - clean prediction``) this
    is the number of flips."""
    return ((pred == target.bool()) & counted).sum(dim=1)


def reach_selection(
    margin: Tensor, past_margin: Tensor, moved: Tensor | float, to_move: Tensor | float, slack: float
) -> Tensor:
    """The labels to target ``(N, K)`` bool: those at their target (``margin <= 0``) and those whose margin is
    within ``slack`` times their reach.

    ``velocity = (past_margin - margin) / moved`` is the margin decrease per unit of step size over the last
    steps (``moved`` = the sum of those step sizes), ``reach = max(velocity, 0) * to_move`` (``to_move`` = the
    sum of the step sizes still to come). A sample with unfinished labels but none within reach keeps the one
    closest to reach (the smallest ``margin - slack * reach``), so the attack never idles.
    """
    reach = slack * (past_margin - margin).clamp_min(0) * (to_move / moved)
    sel = (margin <= 0) | (margin <= reach)
    open_ = margin > 0
    stuck = open_.any(dim=1) & ~(sel & open_).any(dim=1)
    if bool(stuck.any()):
        gap = torch.where(open_, margin - reach, torch.full_like(margin, math.inf))
        nearest = F.one_hot(gap.argmin(dim=1), margin.shape[1]).bool()
        sel = sel | (nearest & stuck.unsqueeze(1))
    return sel


@ATTACKS.register(
    "maxflip",
    params=[
        Param("slack", float, 1.5, "a label stays targeted while its margin <= slack x its projected reach", 0.0),
        Param("window", int, 4, "steps over which each label's velocity is measured", 1),
        Param("eta0", float, 1.0, "first step size as a multiple of eps", 0.0),
        Param("phases", int, 3, "step-size levels (phases - 1 halvings)", 1),
        Param("mu", float, 0.75, "momentum decay", 0.0),
        Param("select", bool, True, "re-select targets by reach (false: every label, an ablation)"),
    ],
    label="MaxFlip",
    description="labelflip's budget-aware max-flip attack: stepsize schedule, reach-based targets, best checkpoint",
)
class MaxFlip(FixedBudgetAttack):
    """Budget-aware maximum-flip attack (see the module docstring for the algorithm), L-inf or L2.

    Example::

        attack = MaxFlip(model)                  # or create_attack("maxflip", model)
        result = attack(x, eps=[0.005, 0.01])    # (2 budgets x N samples); no profile, correlations or gamma
        result.mean_flips(), result.steps        # passes per budget: floor(eps / alpha), as MI-FGSM

    Args:
        model: a :class:`MultiLabelModel` or an ``nn.Module`` returning logits.
        slack, window, eta0, phases, mu: see the module docstring (defaults 1.5, 4, 1.0, 3, 0.75).
        select: ``False`` targets every label at every step (BCE with MaxFlip's schedule and checkpoint; the
            ablation that isolates the target re-selection).
        alpha: the step that fixes the pass count ``n = floor(eps / alpha)``; default MI-FGSM's ``1/2560``
            (L-inf) or ``alpha_linf * sqrt(H*W)`` (L2).
        norm, batch_size, return_adv: see :class:`~labelflip.attacks.base.Attack`.

    Weights ``(N, K)`` or ``(B, N, K)`` scale each label's loss term; labels of weight 0 are neither attacked nor
    counted by the checkpoint. ``result.extra["best_from_checkpoint"]`` counts, per budget, the samples whose
    returned input is an earlier iterate rather than the last.
    """

    def __init__(
        self,
        model: nn.Module | MultiLabelModel,
        *,
        slack: float = 1.5,
        window: int = 4,
        eta0: float = 1.0,
        phases: int = 3,
        mu: float = 0.75,
        select: bool = True,
        alpha: float | None = None,
        norm: Literal["linf", "l2"] = "linf",
        batch_size: int | None = None,
        return_adv: bool = False,
    ) -> None:
        super().__init__(model, norm=norm, batch_size=batch_size, return_adv=return_adv)
        self.slack = check_float(_OWNER, "slack", slack, low=0.0, fix="e.g. slack=1.5.")
        self.window = check_int(_OWNER, "window", window, low=1, fix="e.g. window=4.")
        self.eta0 = check_float(_OWNER, "eta0", eta0, low=0.0, low_inclusive=False, fix="e.g. eta0=1.0.")
        self.phases = check_int(_OWNER, "phases", phases, low=1, fix="e.g. phases=3.")
        self.mu = check_float(_OWNER, "mu", mu, low=0.0, fix="e.g. mu=0.75.")
        if not isinstance(select, bool):
            raise fail(_OWNER, "select", "a bool", select, "select=False targets every label (ablation).")
        self.select = select
        self.alpha = None if alpha is None else check_float(_OWNER, "alpha", alpha, low=0.0, low_inclusive=False)

    def __repr__(self) -> str:
        return (
            f"MaxFlip(slack={self.slack}, window={self.window}, eta0={self.eta0}, phases={self.phases}, "
            f"mu={self.mu}, select={self.select}, norm={self.norm!r}, alpha={self.alpha})"
        )

    def describe(self) -> str:
        return repr(self)

    def step_size(self, x: Tensor) -> float:
        """MI-FGSM's step for inputs shaped like ``x``: it fixes the pass count, not MaxFlip's step sizes."""
        if self.alpha is not None:
            return self.alpha
        if self.norm == "linf":
            return ALPHA_LINF
        spatial = math.prod(x.shape[2:]) if x.ndim >= 3 else x.shape[1]
        return ALPHA_LINF * math.sqrt(spatial)

    def steps_for(self, budgets: list[float], x: Tensor) -> list[int]:
        """Forward+backward passes per budget: ``n = floor(eps / alpha)`` (MI-FGSM's count; the last of them is
        forward-only when ``n >= 2``)."""
        alpha = self.step_size(x)
        return [num_steps(e, alpha) for e in budgets]

    # ------------------------------------------------------------------ the attack
    def run(self, batch: Batch, budgets: list[float]) -> Tensor:
        x0 = batch.x
        passes = self.steps_for(budgets, x0)
        out: list[Tensor] = []
        restored: list[int] = []
        for b, (eps, n) in enumerate(zip(budgets, passes, strict=True)):
            w = batch.weights[b] if batch.weights is not None and batch.weights.ndim == 3 else batch.weights
            x_adv, from_best = self._attack(x0, batch.target, w, eps, n)
            out.append(x_adv)
            restored.append(int(from_best.sum()))
        info = batch.info.setdefault("best_from_checkpoint", [0] * len(budgets))
        batch.info["best_from_checkpoint"] = [a + r for a, r in zip(info, restored, strict=True)]
        return torch.stack(out)

    def _project(self, x: Tensor, x0: Tensor, eps: float) -> Tensor:
        """Onto the L-inf box / L2 ball of radius ``eps`` around ``x0``, then the model's bounds."""
        if self.norm == "linf":
            x = torch.minimum(torch.maximum(x, x0 - eps), x0 + eps)
        else:
            delta = x - x0
            norms = _view(delta.flatten(1).norm(dim=1), x.ndim)
            x = x0 + delta * torch.where(norms > eps, eps / norms.clamp_min(1e-30), torch.ones_like(norms))
        low, high = self.model.bounds
        return x.clamp(low, high)

    def _direction(self, g: Tensor) -> Tensor:
        if self.norm == "linf":
            return torch.sign(g)
        return g / _view(g.flatten(1).norm(dim=1).clamp_min(1e-30), g.ndim)

    def _normalise(self, grad: Tensor) -> Tensor:
        flat = grad.flatten(1)
        denom = flat.abs().sum(dim=1) if self.norm == "linf" else flat.norm(dim=1)
        return grad / _view(torch.where(denom > 0, denom, torch.ones_like(denom)), grad.ndim)

    def _attack(self, x0: Tensor, target: Tensor, weights: Tensor | None, eps: float, n: int) -> tuple[Tensor, Tensor]:
        """One budget: ``(x_adv (N, ...), from_checkpoint (N,) bool)``."""
        model = self.model
        nsamp = x0.shape[0]
        if n == 0 or eps == 0.0:
            return x0.clone(), torch.zeros(nsamp, dtype=torch.bool)
        steps = n - 1 if n >= 2 else 1
        etas = step_sizes(eps, steps, eta0=self.eta0, phases=self.phases)
        suffix = [sum(etas[k:]) for k in range(steps)]  # the step sizes still to come
        thr = model.threshold.to(device=x0.device, dtype=x0.dtype)
        theta = torch.log(thr) - torch.log1p(-thr)
        t = target.to(x0.dtype)
        counted = torch.ones_like(t, dtype=torch.bool) if weights is None else weights > 0
        wl = None if weights is None else weights.to(x0.dtype)
        x, g = x0.clone(), torch.zeros_like(x0)
        best, best_count = x0.clone(), torch.full((nsamp,), -1, dtype=torch.long, device=x0.device)
        history: list[Tensor] = []
        for k in range(steps):
            xr = x.detach().requires_grad_(True)
            logits = model(xr)
            margin = target_margins(logits, t, theta)
            with torch.no_grad():
                m = margin.detach()
                count = success_counts(model.predict_from_probabilities(torch.sigmoid(logits.detach())), t, counted)
                better = count > best_count
                best = torch.where(_view(better, x.ndim), x, best)
                best_count = torch.where(better, count, best_count)
                history = [*history, m][-(self.window + 1) :]  # margins at x_{k-window} .. x_k
                if k >= 2 and self.select:
                    lag = min(self.window, k)
                    sel = reach_selection(m, history[-lag - 1], sum(etas[k - lag : k]), suffix[k], self.slack)
                else:
                    sel = torch.ones_like(m, dtype=torch.bool)
            terms = F.softplus(margin) * sel.to(margin.dtype)
            if wl is not None:
                terms = terms * wl
            (grad,) = torch.autograd.grad(terms.sum(), xr)
            with torch.no_grad():
                g = g.mul_(self.mu).add_(self._normalise(grad))
                x = self._project(x - etas[k] * self._direction(g), x0, eps)
        if n < 2:
            return x, torch.zeros(nsamp, dtype=torch.bool)
        with torch.no_grad():
            final = success_counts(model.predict_from_probabilities(torch.sigmoid(model(x))), t, counted)
        from_best = best_count > final
        return torch.where(_view(from_best, x.ndim), best, x), from_best.cpu()
