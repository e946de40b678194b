"""Multi-label classification metrics against ground truth: mAP and micro/macro F1 (no sklearn needed).

All functions accept torch tensors or numpy arrays and compute in float64 numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.special import expit

from labelflip._validation import check_float, fail

__all__ = ["average_precision", "classification_metrics", "f1_scores", "mean_average_precision"]


def _as_2d(owner: str, param: str, value: Any, *, dtype: type = np.float64) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise fail(owner, param, "an (N, K) tensor or array", value) from exc
    if arr.ndim != 2:
        raise fail(owner, param, "a 2-D (N, K) tensor or array", value, "pass one row per sample.")
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.number):
        arr = arr.astype(dtype)
    else:
        raise fail(owner, param, "a numeric or bool (N, K) tensor or array", value)
    if dtype is np.float64 and not np.isfinite(arr).all():
        raise fail(owner, param, "finite values (no NaN or inf)", value, "check the model outputs.")
    return arr


def _labels(owner: str, y: Any, shape: tuple[int, ...], other: str) -> np.ndarray:
    arr = _as_2d(owner, "y", y)
    if arr.shape != shape:
        raise fail(
            owner,
            "y",
            f"an (N, K) array with the same shape as '{other}' {shape}",
            y,
            "pass one 0/1 ground-truth row per sample, aligned with the predictions.",
        )
    if not np.isin(arr, (0.0, 1.0)).all():
        raise fail(owner, "y", "binary labels in {0, 1}", y, "binarise the ground truth first.")
    return arr.astype(bool)


def average_precision(scores: np.ndarray, y: np.ndarray) -> float:
    """Average precision of one label, exactly as ``sklearn.metrics.average_precision_score``.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds in decreasing order (tied scores
    form one threshold), with ``R_0 = 0``. ``scores`` float ``(N,)`` (any monotone score: logits or
    probabilities), ``y`` bool ``(N,)``. Returns NaN when ``y`` has no positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], y[order]
    # last index of each group of tied scores
    ends = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tps = np.cumsum(t)[ends].astype(np.float64)
    fps = (ends + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores: Any, y: Any) -> float:
    """mAP: per-label :func:`average_precision` averaged over the labels with at least one positive.

    Args:
        scores: ``(N, K)`` real scores (logits or probabilities; only the order within a column matters).
        y: ``(N, K)`` ground truth in ``{0, 1}`` (bool or numeric).

    Returns:
        A float in ``[0, 1]``; NaN if no label has a positive.
    """
    s = _as_2d("mean_average_precision", "scores", scores)
    t = _labels("mean_average_precision", y, s.shape, "scores")
    aps = [average_precision(s[:, k], t[:, k]) for k in range(s.shape[1]) if t[:, k].any()]
    return float(np.mean(aps)) if aps else float("nan")


def f1_scores(pred: Any, y: Any, *, zero_division: float = 0.0) -> tuple[float, float]:
    """Micro and macro F1 of binary predictions.

    ``F1 = 2 TP / (2 TP + FP + FN)``. Micro pools TP/FP/FN over all labels; macro averages the per-label F1
    over all K labels. **0/0 convention**: a label with no positive in ``y`` and none predicted has
    ``2 TP + FP + FN = 0``; its F1 is ``zero_division`` (default 0.0, as scikit-learn's default). The same
    value is returned for micro F1 when nothing is positive anywhere.

    Args:
        pred: ``(N, K)`` predictions, bool or in ``{0, 1}``.
        y: ``(N, K)`` ground truth in ``{0, 1}``.
        zero_division: the F1 value used for 0/0, in ``[0, 1]``.

    Returns:
        ``(micro_f1, macro_f1)``, floats in ``[0, 1]``.
    """
    owner = "f1_scores"
    zero_division = check_float(owner, "zero_division", zero_division, low=0.0, high=1.0, fix="0.0 or 1.0.")
    p = _as_2d(owner, "pred", pred)
    if not np.isin(p, (0.0, 1.0)).all():
        raise fail(owner, "pred", "binary predictions (bool or 0/1)", pred, "threshold the scores first.")
    p = p.astype(bool)
    t = _labels(owner, y, p.shape, "pred")
    tp = (p & t).sum(axis=0).astype(np.float64)
    fp = (p & ~t).sum(axis=0).astype(np.float64)
    fn = (~p & t).sum(axis=0).astype(np.float64)
    denom = 2 * tp + fp + fn
    per_label = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1.0), zero_division)
    macro = float(per_label.mean()) if per_label.size else zero_division
    d = denom.sum()
    micro = float(2 * tp.sum() / d) if d > 0 else zero_division
    return micro, macro


def classification_metrics(logits: Any, y: Any, *, threshold: float = 0.5) -> dict[str, float]:
    """mAP, micro-F1 and macro-F1 of logits ``(N, K)`` against labels ``y`` ``(N, K)``.

    A label is predicted when ``sigmoid(logit) > threshold`` (strict). Returns
    ``{"map", "micro_f1", "macro_f1"}`` floats in ``[0, 1]``.
    """
    threshold = check_float("classification_metrics", "threshold", threshold, low=0.0, high=1.0)
    s = _as_2d("classification_metrics", "logits", logits)
    probs = expit(s)
    micro, macro = f1_scores(probs > threshold, y)
    return {"map": mean_average_precision(s, y), "micro_f1": micro, "macro_f1": macro}
