"""Metrics: mAP against hand-computed values and a brute-force reference; F1 on hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labelflip._validation import LabelflipError
from labelflip.metrics import average_precision, classification_metrics, f1_scores, mean_average_precision


def _reference_ap(scores: np.ndarray, y: np.ndarray) -> float:
    """Brute force: for every distinct threshold (high to low) compute precision/recall from scratch."""
    n_pos = y.sum()
    ap, prev_recall = 0.0, 0.0
    for thr in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= thr
        tp = float((predicted & y).sum())
        precision = tp / predicted.sum()
        recall = tp / n_pos
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def test_ap_hand_computed_example() -> None:
    # ranking: 0.9(+) 0.8(-) 0.7(+) 0.1(-): precision at the positives 1 and 2/3 -> AP = (1 + 2/3) / 2
    scores = np.array([0.1, 0.9, 0.7, 0.8])
    y = np.array([0, 1, 1, 0], dtype=bool)
    assert average_precision(scores, y) == pytest.approx((1 + 2 / 3) / 2)


def test_ap_ties_form_one_threshold() -> None:
    # all scores tied: one threshold, precision = prevalence, recall jumps 0 -> 1 (sklearn gives 0.5)
    assert average_precision(np.zeros(4), np.array([1, 0, 1, 0], dtype=bool)) == pytest.approx(0.5)
    # (+ at 0.9), then a tie {+, -} at 0.5: AP = 0.5 * 1 + 0.5 * 2/3
    scores = np.array([0.9, 0.5, 0.5])
    assert average_precision(scores, np.array([1, 1, 0], dtype=bool)) == pytest.approx(0.5 + 1 / 3)


def test_map_matches_brute_force_reference() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n, k = int(rng.integers(2, 40)), int(rng.integers(1, 6))
        scores = rng.integers(0, 6, size=(n, k)).astype(float)  # many ties on purpose
        y = rng.random((n, k)) < 0.4
        valid = [j for j in range(k) if y[:, j].any()]
        got = mean_average_precision(torch.tensor(scores), torch.tensor(y))
        if not valid:
            assert np.isnan(got)
            continue
        want = np.mean([_reference_ap(scores[:, j], y[:, j]) for j in valid])
        assert got == pytest.approx(want, abs=1e-12)


def test_map_skips_labels_without_positives_and_is_order_invariant() -> None:
    scores = torch.tensor([[0.9, 0.2], [0.1, 0.8], [0.5, 0.3]])
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert mean_average_precision(scores, y) == pytest.approx(1.0)
    perm = torch.tensor([2, 0, 1])
    assert mean_average_precision(scores[perm], y[perm]) == pytest.approx(1.0)


def test_f1_micro_and_macro_hand_checked() -> None:
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    pred = np.array([[1, 0], [0, 1], [1, 0], [0, 0]], dtype=bool)
    # label 0: TP 1 FP 1 FN 1 -> 0.5;  label 1: TP 1 FP 0 FN 1 -> 2/3;  micro: TP 2 FP 1 FN 2 -> 4/7
    micro, macro = f1_scores(pred, y)
    assert micro == pytest.approx(4 / 7)
    assert macro == pytest.approx((0.5 + 2 / 3) / 2)


def test_f1_zero_division_convention() -> None:
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    pred = torch.tensor([[True, False], [True, False]])
    assert f1_scores(pred, y) == (pytest.approx(1.0), pytest.approx(0.5))  # label 1 is 0/0 -> 0
    assert f1_scores(pred, y, zero_division=1.0)[1] == pytest.approx(1.0)
    assert f1_scores(torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2)) == (0.0, 0.0)


def test_classification_metrics_thresholds_logits() -> None:
    logits = torch.tensor([[3.0, -2.0], [-1.0, 0.5]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    m = classification_metrics(logits, y)
    assert m == {"map": pytest.approx(1.0), "micro_f1": pytest.approx(1.0), "macro_f1": pytest.approx(1.0)}


@pytest.mark.parametrize(
    ("call", "param"),
    [
        (lambda: mean_average_precision(torch.zeros(3), torch.zeros(3)), "scores"),
        (lambda: mean_average_precision(torch.zeros(3, 2), torch.zeros(3, 3)), "y"),
        (lambda: mean_average_precision(torch.zeros(3, 2), torch.full((3, 2), 0.5)), "y"),
        (lambda: mean_average_precision(torch.full((3, 2), float("nan")), torch.zeros(3, 2)), "scores"),
        (lambda: f1_scores(torch.full((2, 2), 0.3), torch.zeros(2, 2)), "pred"),
        (lambda: f1_scores(torch.zeros(2, 2), torch.zeros(2, 2), zero_division=2.0), "zero_division"),
    ],
)
def test_bad_inputs_name_the_parameter(call, param: str) -> None:
    with pytest.raises(LabelflipError, match=f"'{param}'"):
        call()
