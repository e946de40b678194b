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

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from labelflip._artefacts import read_json, write_json
from labelflip._validation import LabelflipError, check_float, check_int, fail
from labelflip.attacks.mifgsm import MIFGSM, num_steps
from labelflip.model import MultiLabelModel, as_model

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
class Attackability:
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

    def table_markdown(self, method: str = "pearson") -> str:
        """Table II layout: rows = correlation, one column (this model); ``*`` = p > 0.05."""
        c = self.correlations()
        lines = [f"| {method} correlation | value |", "|---|---|"]
        for d in ("up", "down"):
            lines.append(f"| **flip {d}**: attackability vs confidence | {c[d]['RxC'].mark(method=method)} |")
            lines.append(f"| flip {d}: frequency vs confidence | {c[d]['FxC'].mark(method=method)} |")
            lines.append(f"| flip {d}: frequency vs attackability | {c[d]['FxR'].mark(method=method)} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attackability:
        fields = {k: v for k, v in data.items() if k != "format"}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise LabelflipError(f"Attackability: malformed artefact ({exc}). Fix: re-create it.") from exc

    def save(self, path: str | Path) -> Path:
        """Write the artefact as JSON (atomically) and return the path."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Attackability:
        hint = "create one with `labelflip attackability` or label_attackability(...).save(path)."
        return cls.from_dict(read_json(path, owner="Attackability.load", fmt=_FORMAT, create_hint=hint))

    def table_html(self) -> str:
        """Table II for one model: Pearson and Spearman coefficients with p-values (``*`` = p > 0.05)."""
        c = self.correlations()
        names = {
            "RxC": "attackability vs confidence",
            "FxC": "frequency vs confidence",
            "FxR": "frequency vs attackability",
        }
        rows = []
        for d in ("up", "down"):
            for key, label in names.items():
                st = c[d][key]
                rows.append(
                    f"<tr><th scope='row'>flip {d}: {html.escape(label)}</th><td>{st.mark()}</td>"
                    f"<td>{st.pearson_p:.3g}</td><td>{st.mark(method='spearman')}</td><td>{st.spearman_p:.3g}</td>"
                    f"<td>{st.n}</td></tr>"
                )
        head = "<tr><th>correlation</th><th>Pearson r</th><th>p</th><th>Spearman ρ</th><th>p</th><th>labels</th></tr>"
        return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


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
    m = as_model(model)
    eps = check_float(_OWNER, "eps", eps, low=0.0, low_inclusive=False)
    limit = check_int(_OWNER, "n_per_label", n_per_label, low=1)
    batch_size = check_int(_OWNER, "batch_size", batch_size, low=1)
    x = m.validate_inputs(x, owner=_OWNER)
    m.ensure_checked(x, owner=_OWNER)
    n = x.shape[0]
    gt = m.validate_labels(y, n, owner=_OWNER, param="y").bool().cpu()
    k = gt.shape[1]
    if frequency is not None:
        freq = torch.as_tensor(frequency, dtype=torch.float64).flatten()
        if freq.numel() != k:
            raise fail(_OWNER, "frequency", f"{k} values (one per label)", frequency)
    names = list(label_names) if label_names is not None else [str(i) for i in range(k)]
    x = x.detach().to(m.device, m.dtype)
    attack = MIFGSM(m, "bce")
    steps = num_steps(eps, attack.step_size(x))
    with m.eval_mode():
        with torch.no_grad():
            probs = torch.sigmoid(m(x)).cpu()
        pred = m.predict_from_probabilities(probs)
        results = {}
        for direction, want in (("up", False), ("down", True)):
            pairs = _eligible_pairs(gt, pred, want, limit)
            flipped = torch.zeros(pairs.shape[0], dtype=torch.bool)
            for lo in range(0, pairs.shape[0], batch_size):
                chunk = pairs[lo : lo + batch_size]
                rows = torch.arange(chunk.shape[0])
                w = torch.zeros(chunk.shape[0], k, dtype=x.dtype)
                w[rows, chunk[:, 1]] = 1.0
                t = (~pred[chunk[:, 0]]).to(x.dtype)
                traj = attack.trajectory(x[chunk[:, 0]], target=t.to(x.device), weights=w.to(x.device), eps=eps)
                for _ in range(steps):
                    traj.step()
                with torch.no_grad():
                    adv = m.predict_from_probabilities(torch.sigmoid(m(traj.final()))).cpu()
                flipped[lo : lo + chunk.shape[0]] = adv[rows, chunk[:, 1]] != pred[chunk[:, 0], chunk[:, 1]]
                if progress is not None:
                    progress(lo + chunk.shape[0], pairs.shape[0])
            counts = torch.bincount(pairs[:, 1], minlength=k)
            flips = torch.zeros(k).index_add_(0, pairs[:, 1], flipped.float())
            conf = torch.zeros(k, dtype=torch.float64).index_add_(
                0, pairs[:, 1], probs[pairs[:, 0], pairs[:, 1]].double()
            )
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
