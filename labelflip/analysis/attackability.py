"""Per-label attackability (seed §IV-A, Fig. 4, Table II; SPEC-reference-code §7).

For each label ``j`` and direction:

* **flip-up**: images whose ground truth lacks ``j`` and whose clean prediction of ``j`` is 0;
* **flip-down**: images whose ground truth contains ``j`` and whose clean prediction of ``j`` is 1;

take the first ``n_per_label`` such images (in the given order), attack label ``j`` alone (BCE weight ``e_j``,
target ``1 - clean prediction``) at ``eps`` and record whether ``j`` flipped. The flip ratio is the label's
attackability; the mean clean confidence of ``j`` over the **same** images is its confidence (the authors'
analysis averaged zero-padded arrays: not reproduced); its training-set frequency comes from the caller.
Pearson (the paper) and Spearman (the authors' script) correlations with two-sided p-values are reported for
attackability vs confidence (R x C), frequency vs confidence (F x C) and frequency vs attackability (F x R);
``*`` marks p > 0.05 as in Table II. Labels with no eligible image are NaN and left out of the correlations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from labelflip._validation import check_float, check_int, fail
from labelflip.analysis.artefact import Artefact
from labelflip.analysis.single_label import attack_single_labels
from labelflip.attacks import clean_pass, prepare_inputs
from labelflip.models import MultiLabelModel

__all__ = ["Attackability", "CorrelationStat", "label_attackability"]

_OWNER = "label_attackability"
_FORMAT = "labelflip.attackability/1"


@dataclass
class CorrelationStat:
    """Pearson and Spearman coefficients with two-sided p-values over ``n`` labels."""

    pearson: float
    pearson_p: float
    spearman: float
    spearman_p: float
    n: int

    def mark(self, alpha: float = 0.05, method: str = "pearson") -> str:
        """``"0.76"`` or ``"-0.05*"`` (Table II style: ``*`` = not significant at ``alpha``)."""
        r, p = (self.pearson, self.pearson_p) if method == "pearson" else (self.spearman, self.spearman_p)
        if math.isnan(r):
            return "n/a"
        return f"{r:.2f}" + ("*" if not p < alpha else "")


def _corr(a: np.ndarray, b: np.ndarray) -> CorrelationStat:
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return CorrelationStat(math.nan, math.nan, math.nan, math.nan, int(a.size))
    pr = stats.pearsonr(a, b)
    sr = stats.spearmanr(a, b)
    return CorrelationStat(float(pr.statistic), float(pr.pvalue), float(sr.statistic), float(sr.pvalue), int(a.size))


@dataclass
class Attackability(Artefact):
    """Per-label attackability in both directions (K labels).

    Attributes:
        up_ratio, down_ratio: flip ratio per label (NaN where no eligible image).
        up_samples, down_samples: images attacked per label.
        up_confidence, down_confidence: mean clean confidence of the label over those images.
        frequency: training-set occurrence frequency per label (fraction of images), if given.
    """

    eps: float
    label_names: list[str]
    up_ratio: list[float]
    up_samples: list[int]
    up_confidence: list[float]
    down_ratio: list[float]
    down_samples: list[int]
    down_confidence: list[float]
    frequency: list[float] | None = None
    model_fingerprint: str | None = None
    notes: list[str] = field(default_factory=list)

    FORMAT: ClassVar[str] = _FORMAT
    CREATE_HINT: ClassVar[str] = "create one with `labelflip attackability` or label_attackability(...).save(path)."

    def correlations(self) -> dict[str, dict[str, CorrelationStat]]:
        """``{"up"|"down": {"RxC", "FxC", "FxR"}}`` with R = attackability, C = confidence, F = frequency."""
        out: dict[str, dict[str, CorrelationStat]] = {}
        freq = np.asarray(self.frequency if self.frequency is not None else [math.nan] * len(self.up_ratio))
        for d, ratio, conf in (
            ("up", self.up_ratio, self.up_confidence),
            ("down", self.down_ratio, self.down_confidence),
        ):
            r, c = np.asarray(ratio, dtype=float), np.asarray(conf, dtype=float)
            out[d] = {"RxC": _corr(r, c), "FxC": _corr(freq, c), "FxR": _corr(freq, r)}
        return out


def _eligible_pairs(gt: Tensor, pred: Tensor, want_gt: bool, limit: int) -> Tensor:
    """``(R, 2)`` (image, label) pairs: for each label the first ``limit`` images with ``gt == want_gt`` and
    ``pred == want_gt`` (absent & predicted 0 for flip-up, present & predicted 1 for flip-down)."""
    ok = (gt == want_gt) & (pred == want_gt)  # (N, K)
    rank = ok.long().cumsum(dim=0)  # 1-based rank of each eligible image within its label column
    ok &= rank <= limit
    img, lab = torch.nonzero(ok, as_tuple=True)
    order = torch.argsort(lab * gt.shape[0] + img)  # label-major
    return torch.stack([img[order], lab[order]], dim=1)


def label_attackability(
    model: nn.Module | MultiLabelModel,
    x: Tensor,
    y: Tensor,
    *,
    eps: float = 0.004,
    n_per_label: int = 100,
    frequency: Sequence[float] | Tensor | None = None,
    label_names: Sequence[str] | None = None,
    batch_size: int = 256,
    model_fingerprint: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Attackability:
    """Single-label flip-up and flip-down attackability per label (seed §IV-A, Table II).

    Args:
        x, y: images in the model's bounds and their ground truth ``(N, K)`` (training images in the paper).
        eps: attack budget (the authors: 0.004 for flip-up, 0.008 for flip-down; one value here).
        n_per_label: at most this many images per label and direction (100 in the paper).
        frequency: training-set occurrence frequency per label ``(K,)`` for the F x C / F x R correlations.
    """
    eps = check_float(_OWNER, "eps", eps, low=0.0, low_inclusive=False)
    limit = check_int(_OWNER, "n_per_label", n_per_label, low=1)
    batch_size = check_int(_OWNER, "batch_size", batch_size, low=1)
    m, x = prepare_inputs(model, x, _OWNER)
    n = x.shape[0]
    gt = m.validate_labels(y, n, owner=_OWNER, param="y").bool().cpu()
    k = gt.shape[1]
    if frequency is not None:
        freq = torch.as_tensor(frequency, dtype=torch.float64).flatten()
        if freq.numel() != k:
            raise fail(_OWNER, "frequency", f"{k} values (one per label)", frequency)
    names = list(label_names) if label_names is not None else [str(i) for i in range(k)]
    with m.eval_mode():
        probs, _ = clean_pass(m, x)
    probs = probs.cpu()
    pred = m.predict_from_probabilities(probs)
    results = {}
    for direction, want in (("up", False), ("down", True)):
        pairs = _eligible_pairs(gt, pred, want, limit)
        targets = (~pred[pairs[:, 0]]).float()
        adv = attack_single_labels(m, x, pairs, targets, eps, batch_size=batch_size, progress=progress)
        rows = torch.arange(pairs.shape[0])
        adv_pred = m.predict_from_probabilities(adv)
        flipped = adv_pred[rows, pairs[:, 1]] != pred[pairs[:, 0], pairs[:, 1]]
        counts = torch.bincount(pairs[:, 1], minlength=k)
        flips = torch.zeros(k).index_add_(0, pairs[:, 1], flipped.float())
        conf = torch.zeros(k, dtype=torch.float64).index_add_(0, pairs[:, 1], probs[pairs[:, 0], pairs[:, 1]].double())
        denom = counts.clamp_min(1).double()
        ratio = torch.where(counts > 0, flips.double() / denom, torch.full((k,), math.nan, dtype=torch.float64))
        mean_conf = torch.where(counts > 0, conf / denom, torch.full((k,), math.nan, dtype=torch.float64))
        results[direction] = (ratio.tolist(), counts.tolist(), mean_conf.tolist())
    notes = []
    for d in ("up", "down"):
        short = [names[j] for j, c in enumerate(results[d][1]) if c < limit]
        if short:
            notes.append(f"flip-{d}: {len(short)} labels had fewer than {limit} eligible images")
    return Attackability(
        eps=eps,
        label_names=names,
        up_ratio=results["up"][0],
        up_samples=results["up"][1],
        up_confidence=results["up"][2],
        down_ratio=results["down"][0],
        down_samples=results["down"][1],
        down_confidence=results["down"][2],
        frequency=None if frequency is None else freq.tolist(),
        model_fingerprint=model_fingerprint,
        notes=notes,
    )
