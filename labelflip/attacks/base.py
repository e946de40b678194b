"""The attack protocol: one ``__call__`` with the shared preamble, two kinds of attack behind it.

Pattern: foolbox 3's final ``__call__`` with ``FixedEpsilonAttack`` vs ``MinimizationAttack``. Every attack is
called the same way and fills the same ``(budgets x samples)`` :class:`AttackResult`::

    result = attack(x, eps=[0.002, 0.01], target=None, weights=None)

:meth:`Attack.__call__` does, once for every attack: budget validation, input validation (shape, bounds, NaN),
the one-off model checks (:func:`labelflip.models.ensure_checked`), device and dtype, eval mode with every
submodule's flag restored afterwards (also on error), chunking (``batch_size``, else the model's runtime's; halved
and retried on out-of-memory: :class:`labelflip.models.chunking.ChunkPlan`), the clean pass (confidences and
predictions), the default target ``1 - clean prediction``, and the evaluation of the adversarial inputs (one
forward per budget, flips against the clean prediction, achieved L-inf/L2 norms). A subclass implements ``run``:

* :class:`FixedBudgetAttack` (MI-FGSM and its losses, the subset attacks): ``run(batch, budgets)`` returns one
  adversarial input per budget ``(B, N, ...)``.
* :class:`MinimumNormAttack` (the ML-CW / ML-DeepFool / MLA-LP baselines): ``run(batch)`` returns one
  perturbation per sample, the smallest it found that reaches the target; the protocol evaluates it at every
  requested budget after clipping it to that budget (L-inf box or L2 ball, then the bounds) and records the
  norm each sample needed in ``result.min_norm``.

Attacks declare what they need (``requires``: ``"profile"``, ``"correlations"``) and whether they draw random
numbers (``stochastic``); studies ask these, they never special-case names. :func:`prepare_inputs` and
:func:`clean_pass` are the same preamble for the analyses.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from labelflip._validation import LabelflipWarning, check_choice, check_float, fail
from labelflip.attacks.result import AttackResult, count_flips
from labelflip.models import MultiLabelModel, as_model, ensure_checked
from labelflip.models.chunking import ChunkPlan
from labelflip.models.runtime import check_batch_size

__all__ = [
    "LARGE_LINF_BUDGET",
    "Attack",
    "Batch",
    "FixedBudgetAttack",
    "MinimumNormAttack",
    "clean_pass",
    "prepare_inputs",
    "validate_budgets",
    "work_dtype",
]

_PER_SAMPLE_KEYS = ("clean_probs", "clean_pred", "target", "min_norm", "sample_ids")


LARGE_LINF_BUDGET = 0.3
"""L-inf budgets above this fraction of the input range (0.3 for [0, 1] images; 8/255 = 0.031 is usual) warn: a
unit mistake (0-255 budgets) or labels passed where ``eps`` goes. Fixed-budget attacks only: a minimum-norm attack's
budget only clips its perturbation, and ``eps`` = the input range is how its unclipped example is asked for."""


def validate_budgets(
    eps: Any, owner: str, *, norm: str | None = None, bounds: tuple[float, float] | None = None
) -> list[float]:
    """``eps`` (a float, a sequence, a 1-D tensor or array) as a non-empty list of finite floats >= 0.

    A 2-D or deeper tensor/array or a nested sequence is refused, naming ``eps`` as the second argument and
    ``target=`` as where labels go: it is almost always a label matrix passed positionally (``attack(x, y)``).
    With ``norm="linf"`` and ``bounds``, budgets above :data:`LARGE_LINF_BUDGET` of the range warn once per call.
    """
    values = eps
    if isinstance(eps, (Tensor, np.ndarray, np.generic)):
        values = np.asarray(eps.detach().cpu() if isinstance(eps, Tensor) else eps)
        values = values.tolist() if values.ndim <= 1 else [values.tolist()]  # >= 2-D: refused below
        values = values if isinstance(values, list) else [values]
    elif isinstance(eps, numbers.Real) and not isinstance(eps, bool):
        values = [eps]
    if not isinstance(values, (list, tuple)) or len(values) == 0:
        raise fail(owner, "eps", "a float >= 0 or a non-empty list of them", eps,
                   "budgets are in pixel units, e.g. eps=0.01 or eps=[0.002, 0.01].")  # fmt: skip
    size = lambda v: v.numel() if isinstance(v, Tensor) else np.asarray(v).size  # noqa: E731
    if any(isinstance(v, (list, tuple)) or (isinstance(v, (Tensor, np.ndarray)) and size(v) != 1) for v in values):
        raise fail(owner, "eps", "a float >= 0 or a 1-D sequence of them (the second argument of attack(x, eps))",
                   eps, "budgets are pixel-unit radii, e.g. attack(x, [0.002, 0.01]); a label matrix (targets) goes "
                   "in target=..., e.g. attack(x, 0.01, target=y).")  # fmt: skip
    fix = "budgets are non-negative pixel-unit radii, e.g. 0.01."
    real = [float(e) if isinstance(e, numbers.Real) and not isinstance(e, bool) else e for e in values]
    budgets = [check_float(owner, "eps", e, low=0.0, fix=fix) for e in real]
    limit = LARGE_LINF_BUDGET * (bounds[1] - bounds[0]) if norm == "linf" and bounds is not None else math.inf
    if any(b > limit for b in budgets):
        warnings.warn(f"{owner}: L-inf budget(s) {', '.join(f'{b:g}' for b in budgets if b > limit)} exceed {limit:g} "
                      f"({LARGE_LINF_BUDGET:g} of the input range {bounds}): budgets are in the inputs' units (8/255 = "
                      "0.031 for [0, 1] images); labels passed positionally go in target=...", LabelflipWarning,
                      stacklevel=3)  # fmt: skip
    return budgets


def work_dtype(model: MultiLabelModel, x: Tensor) -> torch.dtype:
    """The dtype attacks keep the perturbation, the clamp and the norms in (:meth:`MultiLabelModel.work_dtype`):
    the widest of ``x``'s dtype, float32 and the network's. A float16/bfloat16 network never narrows ``x``; only its
    forward casts, so ``||x_adv - x|| <= eps`` holds exactly against the caller's input. Float32: no cast at all."""
    return model.work_dtype(x.dtype)


def prepare_inputs(model: nn.Module | MultiLabelModel, x: Any, owner: str) -> tuple[MultiLabelModel, Tensor]:
    """The shared preamble: wrap the model, validate ``x`` ``(N, ...)``, run the one-off model checks, and move
    ``x`` (detached) to the model's device, in :func:`work_dtype` (float32 at least, whatever the network's
    dtype). Returns ``(wrapped model, x)``."""
    m = as_model(model)
    x = m.validate_inputs(x, owner=owner)
    ensure_checked(m, x, owner=owner)
    return m, x.detach().to(m.device, work_dtype(m, x))


def clean_pass(model: MultiLabelModel, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(probs, pred)``: clean sigmoid confidences ``(N, K)`` and boolean predictions (call in eval mode)."""
    with torch.no_grad():
        probs = torch.sigmoid(model(x))
    return probs, model.predict_from_probabilities(probs)


@dataclass
class Batch:
    """One chunk of an attack call, as ``run`` sees it (tensors on the model's device).

    Attributes:
        x: clean inputs ``(N, ...)`` in the model's bounds, in :func:`work_dtype` (float32 at least, also for a
            float16/bfloat16 network: the wrapper casts inside its forward).
        clean_probs: ``(N, K)`` clean confidences; ``clean_pred`` ``(N, K)`` bool.
        target: ``(N, K)`` in {0, 1}, in the inputs' dtype (default ``1 - clean_pred``).
        weights: ``None``, ``(N, K)`` or ``(B, N, K)`` label weights in [0, 1].
        sample_ids: ``(N,)`` int64 identities of the samples (positions in the call unless the caller gave
            dataset indices): what per-sample randomness is derived from, so it never depends on chunking.
        info: facts the attack reports about this call, merged into ``AttackResult.extra``.

    An attack that chooses label weights itself (the subset attacks) sets ``weights`` before it returns, so the
    result reports the weights that were used.
    """

    x: Tensor
    clean_probs: Tensor
    clean_pred: Tensor
    target: Tensor
    weights: Tensor | None
    sample_ids: Tensor
    info: dict[str, Any] = field(default_factory=dict)


class Attack(ABC):
    """Base of every attack. Subclass :class:`FixedBudgetAttack` or :class:`MinimumNormAttack`, not this.

    Args:
        model: a :class:`MultiLabelModel` or an ``nn.Module`` returning logits (wrapped with defaults).
        norm: ``"linf"`` or ``"l2"``: the threat model budgets are radii of.
        batch_size: samples per chunk (memory); ``None`` = the model's ``runtime.batch_size`` (default: all at
            once); ``"auto"`` = sized from free GPU memory. An out-of-memory chunk is halved and retried.
        return_adv: keep the adversarial inputs in the result (``(B, N, ...)``; memory).

    Class attributes a subclass sets:
        kind: ``"fixed-budget"`` or ``"minimum-norm"``.
        requires: analysis artefacts the constructor needs: ``"profile"`` and/or ``"correlations"``.
        stochastic: whether results depend on a ``seed`` argument (studies run such attacks once per seed).
    """

    kind: ClassVar[Literal["fixed-budget", "minimum-norm"]]
    requires: ClassVar[frozenset[str]] = frozenset()
    stochastic: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module | MultiLabelModel,
        *,
        norm: Literal["linf", "l2"] = "linf",
        batch_size: int | Literal["auto"] | None = None,
        return_adv: bool = False,
    ) -> None:
        owner = type(self).__name__
        self.model = as_model(model)
        self.norm = check_choice(owner, "norm", norm, ("linf", "l2"))
        self.batch_size = check_batch_size(owner, "batch_size", batch_size)
        if not isinstance(return_adv, bool):
            raise fail(owner, "return_adv", "a bool", return_adv)
        self.return_adv = return_adv

    # ------------------------------------------------------------------ hooks
    def steps_for(self, budgets: list[float], x: Tensor) -> list[int]:
        """Iterations run for each budget (reported in ``AttackResult.steps``); 0 where not meaningful."""
        return [0] * len(budgets)

    def describe(self) -> str:
        """A short description stored in ``AttackResult.loss`` (the loss or method)."""
        return repr(self)

    def stack_factor(self, budgets: list[float]) -> int:
        """Copies of each sample one forward of ``run`` holds (stacked trajectories: more); sizes ``"auto"`` chunks."""
        return 1

    @abstractmethod
    def _run_batch(self, batch: Batch, budgets: list[float]) -> tuple[Tensor, Tensor | None]:
        """``(x_adv (B, N, ...), min_norm (N,) or None)`` for one chunk."""

    # ------------------------------------------------------------------ the protocol
    def __call__(
        self,
        x: Tensor,
        eps: float | Sequence[float] | Tensor,
        *,
        target: Tensor | None = None,
        weights: Tensor | Sequence[float] | None = None,
        sample_ids: Tensor | Sequence[int] | None = None,
    ) -> AttackResult:
        """Attack ``x`` ``(N, ...)`` at every budget in ``eps``.

        Args:
            x: inputs in the model's bounds (pixel units), ``(N, C, H, W)`` or ``(N, D)``.
            eps: one budget or a list (L-inf or L2 radius, per ``norm``), each >= 0.
            target: ``(N, K)`` in {0, 1}; default ``1 - clean prediction`` (flip every label).
            weights: per-label weights in [0, 1]: ``(K,)``, ``(N, K)`` or ``(B, N, K)`` (one per budget; fixed-budget
                attacks only). 0/1 weights target a subset (seed §IV-C); the target vector stays complete.
            sample_ids: ``(N,)`` integer identities of the samples (e.g. dataset indices) from which stochastic
                attacks derive each sample's randomness; default ``0..N-1``.

        Returns:
            An :class:`AttackResult` with ``B = len(eps)`` budgets in the order given.
        """
        owner = type(self).__name__
        start = time.perf_counter()
        guard = self.model.bounds if self.kind == "fixed-budget" else None  # min-norm: eps only clips (no warning)
        budgets = validate_budgets(eps, owner, norm=self.norm, bounds=guard)
        model, x = prepare_inputs(self.model, x, owner)
        n = x.shape[0]
        if target is not None:
            target = model.validate_labels(target, n, owner=owner, param="target").to(x.device)
        w = self._prepare_weights(weights, n, len(budgets), owner)
        ids = self._prepare_ids(sample_ids, n, owner)
        info: dict[str, Any] = {}

        def chunk(sl: slice) -> dict[str, Tensor]:
            probs, pred = clean_pass(model, x[sl])
            t = (~pred).to(x.dtype) if target is None else target[sl].to(x.dtype)
            wc = None if w is None else (w[:, sl] if w.ndim == 3 else w[sl]).to(x.device)
            batch = Batch(x[sl], probs, pred, t, wc, ids[sl], info)
            return self._evaluate(batch, *self._run_batch(batch, budgets))

        with model.eval_mode():
            parts = ChunkPlan.for_attack(self, model, x, budgets).run(n, chunk, info)
        # Per-sample tensors are concatenated on dim 0, per-budget ones (B, N, ...) on dim 1.
        merged = {
            key: torch.cat(
                [p[key] for p in parts],
                dim=0 if key in _PER_SAMPLE_KEYS or (key == "weights" and parts[0][key].ndim == 2) else 1,
            )
            for key in parts[0]
        }
        total, up, down = count_flips(merged["clean_pred"], merged["adv_pred"])
        return AttackResult(
            eps=torch.tensor(budgets, dtype=torch.float64),
            steps=torch.tensor(self.steps_for(budgets, x), dtype=torch.int64),
            flips=total,
            flips_up=up,
            flips_down=down,
            clean_probs=merged["clean_probs"],
            clean_pred=merged["clean_pred"],
            adv_probs=merged["adv_probs"],
            adv_pred=merged["adv_pred"],
            target=merged["target"],
            weights=merged.get("weights"),
            linf=merged["linf"],
            l2=merged["l2"],
            norm=self.norm,
            loss=self.describe(),
            x_adv=merged.get("x_adv"),
            min_norm=merged.get("min_norm"),
            elapsed_s=time.perf_counter() - start,
            extra=info,
        )

    def _evaluate(self, batch: Batch, x_adv: Tensor, min_norm: Tensor | None) -> dict[str, Tensor]:
        """Flips and norms of ``x_adv`` ``(B, N, ...)``: one forward per budget (the same batch as a separate
        call, so results are bit-identical to one call per budget)."""
        model, x0 = self.model, batch.x
        with torch.no_grad():
            adv_probs = torch.stack([torch.sigmoid(model(xb)) for xb in x_adv])
        adv_pred = model.predict_from_probabilities(adv_probs)
        xa, xc = (x_adv, x0) if x0.device.type != "mps" else (x_adv.cpu(), x0.cpu())  # MPS has no float64
        delta = (xa.double() - xc.double().unsqueeze(0)).flatten(2)
        out = {
            "clean_probs": batch.clean_probs.float().cpu(),
            "clean_pred": batch.clean_pred.cpu(),
            "target": batch.target.float().cpu(),
            "adv_probs": adv_probs.float().cpu(),
            "adv_pred": adv_pred.cpu(),
            "linf": delta.abs().amax(dim=2).cpu() if delta.shape[2] else torch.zeros(delta.shape[:2]),
            "l2": delta.norm(dim=2).cpu(),
        }
        if batch.weights is not None:
            out["weights"] = batch.weights.float().cpu()
        if min_norm is not None:
            out["min_norm"] = min_norm.cpu().double()
        if self.return_adv:
            out["x_adv"] = x_adv.detach().cpu()
        return out

    def _prepare_weights(self, weights: Any, n: int, n_budgets: int, owner: str) -> Tensor | None:
        if weights is None:
            return None
        k = self.model.num_labels
        if not isinstance(weights, Tensor):
            try:
                weights = torch.as_tensor(weights, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise fail(owner, "weights", "a tensor or nested sequence of floats in [0, 1]", weights) from exc
        w = weights.float()
        per_budget = self.kind == "fixed-budget"
        shapes_ok = (
            (w.ndim == 1 and w.shape[0] == k)
            or (w.ndim == 2 and tuple(w.shape) == (n, k))
            or (per_budget and w.ndim == 3 and tuple(w.shape) == (n_budgets, n, k))
        )
        if not shapes_ok:
            shapes = f"({k},), ({n}, {k})" + (f" or ({n_budgets}, {n}, {k})" if per_budget else "")
            raise fail(
                owner,
                "weights",
                f"of shape {shapes} (labels, samples x labels" + (", or one matrix per budget)" if per_budget else ")"),
                weights,
                "subsets are targeted with 0/1 weights per label.",
            )
        if not bool(torch.isfinite(w).all()) or not bool(((w >= 0) & (w <= 1)).all()):
            raise fail(owner, "weights", "within [0, 1]", weights)
        if w.ndim == 1:
            w = w.expand(n, k)
        return w

    @staticmethod
    def _prepare_ids(sample_ids: Any, n: int, owner: str) -> Tensor:
        if sample_ids is None:
            return torch.arange(n)
        try:
            ids = torch.as_tensor(sample_ids)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise fail(owner, "sample_ids", f"{n} integers", sample_ids) from exc
        if ids.shape != (n,) or ids.is_floating_point() or ids.dtype == torch.bool:
            raise fail(owner, "sample_ids", f"a 1-D integer sequence of length {n} (one id per sample)", sample_ids)
        return ids.long().cpu()


class FixedBudgetAttack(Attack):
    """An attack that takes the budget as an input (MI-FGSM, subset attacks): one adversarial input per budget."""

    kind: ClassVar[Literal["fixed-budget", "minimum-norm"]] = "fixed-budget"

    @abstractmethod
    def run(self, batch: Batch, budgets: list[float]) -> Tensor:
        """Adversarial inputs ``(B, N, ...)``, one per budget, each within its budget and the model's bounds."""

    def _run_batch(self, batch: Batch, budgets: list[float]) -> tuple[Tensor, Tensor | None]:
        return self.run(batch, budgets), None


class MinimumNormAttack(Attack):
    """An attack that minimises the perturbation needed to reach the target (ML-CW, ML-DeepFool, MLA-LP).

    Its one run per sample is evaluated at every requested budget: the perturbation clipped to the budget (L-inf:
    clamped to the box; L2: scaled onto the ball), then to the model's bounds. ``result.min_norm`` holds the norm
    each sample's unclipped perturbation needed (in ``norm``); a sample whose run failed reports its best effort.
    """

    kind: ClassVar[Literal["fixed-budget", "minimum-norm"]] = "minimum-norm"

    @abstractmethod
    def run(self, batch: Batch) -> Tensor:
        """Adversarial inputs ``(N, ...)`` within the model's bounds: the smallest perturbation found."""

    def _run_batch(self, batch: Batch, budgets: list[float]) -> tuple[Tensor, Tensor | None]:
        if batch.weights is not None and batch.weights.ndim == 3:  # pragma: no cover - refused by _prepare_weights
            raise fail(type(self).__name__, "weights", "(K,) or (N, K) for a minimum-norm attack", batch.weights)
        x0 = batch.x
        adv = self.run(batch)
        delta = (adv - x0).detach()
        flat = delta.flatten(1)
        needed = flat.abs().amax(dim=1) if self.norm == "linf" else flat.norm(dim=1)
        low, high = self.model.bounds
        clipped = []
        for eps in budgets:
            if self.norm == "linf":
                d = delta.clamp(-eps, eps)
            else:
                scale = torch.where(needed > eps, eps / needed.clamp_min(1e-30), torch.ones_like(needed))
                d = delta * scale.view((-1,) + (1,) * (delta.ndim - 1))
            clipped.append((x0 + d).clamp(low, high))
        return torch.stack(clipped), needed
