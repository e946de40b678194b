"""Per-cell statistics of a study, laid out like the seed paper's Tables IV-VI.

Rows are methods, columns are budgets plus a ``Total`` column. Every cell holds the mean and the spread of
per-sample flip counts, a 95% t-interval of the mean and, for every method but the baseline, a **paired**
two-sided t-test against the baseline on the same samples (``scipy.stats.ttest_rel``), Holm-corrected across
the whole table (SPEC "Evaluation protocol"; SPEC-reference-code §8 "Statistics").

Conventions (documented choices):

* ``std_pop`` is the population std (``ddof=0``), what the paper prints; ``std_sample`` uses ``ddof=1``
  and is the one behind the t-intervals and the tests.
* ``Total`` per sample is the sum over the budget columns, so the Total mean equals the sum of the column
  means (the paper's Total); its std is the std of the per-sample totals (the paper prints none).
* Degenerate paired differences, where ``ttest_rel`` returns nan:

  - all differences exactly 0 (the method equals the baseline on every sample, the paper's "*" cells):
    ``t = 0``, ``p = 1``, ``effect_dz = 0``, difference interval ``[0, 0]``;
  - all differences equal to the same nonzero constant ``c`` (a deterministic shift): the t-test is undefined
    (``t = ±inf``, ``effect_dz = ±inf``, the sign of ``c``), so ``p`` is the exact two-sided **sign test**,
    ``p = 2 * 0.5**N`` (never 0: N = 2 gives 0.5), difference interval ``[c, c]`` (SPEC.md, Evaluation).

  Likewise a cell whose samples are all equal gets the point interval ``[mean, mean]``.
* Holm's step-down correction runs over every test of the table: each non-baseline method times each
  column, ``Total`` included.
* ``best`` per column: the method with the largest mean, marked only where significant. A non-baseline best
  is marked iff its test against the baseline is significant after Holm; a baseline best is marked iff every
  other method is significantly worse (``p_holm < alpha`` and ``diff < 0``). Otherwise ``None``; also
  ``None`` when the largest mean is shared by several methods (a tie) or when the table has no method
  besides the baseline (nothing to compare).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from labelflip._validation import fail

__all__ = ["CONFIDENCE", "TOTAL", "CellStats", "StudyTable", "compare_methods", "holm_adjust"]

#: Confidence level of every interval in a :class:`StudyTable`.
CONFIDENCE = 0.95
#: Label of the per-sample sum column appended after the budget columns.
TOTAL = "Total"

_OWNER = "compare_methods"


@dataclass
class CellStats:
    """Statistics of one (method, column) cell; the test fields are ``None`` on the baseline row."""

    method: str
    column: str
    n: int
    mean: float
    std_pop: float
    std_sample: float
    ci_low: float
    ci_high: float
    diff: float | None
    diff_ci_low: float | None
    diff_ci_high: float | None
    t: float | None
    p: float | None
    p_holm: float | None
    effect_dz: float | None
    significant: bool


@dataclass
class StudyTable:
    """A study's table: ``cells[method][column]`` over ``methods`` x ``columns`` (``"Total"`` last)."""

    title: str
    baseline: str
    alpha: float
    methods: list[str]
    columns: list[str]
    cells: dict[str, dict[str, CellStats]]
    best: dict[str, str | None]
    notes: list[str] = field(default_factory=list)


def holm_adjust(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order.

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted value of the ``i``-th
    is ``min(1, max_{j <= i} (m - j + 1) p_(j))``: monotone in the sorted order and capped at 1. Reject
    ``H_i`` at level ``alpha`` iff the adjusted value is ``< alpha``. Ties keep their input order (stable).

    >>> holm_adjust([0.01, 0.04, 0.03, 0.005]).round(6).tolist()
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise fail(
            "holm_adjust",
            "pvalues",
            "a 1-D sequence of finite p-values in [0, 1]",
            pvalues,
            "pass the raw p-values of the tests in one family.",
        )
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty(m, dtype=float)
    out[order] = adjusted_sorted
    return out


def _interval(values: np.ndarray) -> tuple[float, float, float, float]:
    """Return ``(mean, std_sample, ci_low, ci_high)``; the point interval when the values are all equal."""
    if np.all(values == values[0]):
        return float(values[0]), 0.0, float(values[0]), float(values[0])
    n = values.size
    mean = float(np.mean(values))
    sd = float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2.0, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def _paired(method: np.ndarray, baseline: np.ndarray) -> dict[str, float]:
    """Paired two-sided t-test of ``method - baseline`` with the documented degenerate cases."""
    d = method - baseline
    diff, sd, lo, hi = _interval(d)
    t = p = math.nan
    if sd > 0.0:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.ttest_rel(method, baseline)
        t, p = float(res.statistic), float(res.pvalue)
    if math.isfinite(t) and math.isfinite(p):
        return {"diff": diff, "diff_ci_low": lo, "diff_ci_high": hi, "t": t, "p": p, "effect_dz": diff / sd}
    # Constant differences (or a variance lost to round-off): no sampling noise, a point interval.
    if diff == 0.0:
        t, p, dz = 0.0, 1.0, 0.0
    else:  # exact two-sided sign test on the nonzero differences (all one sign for a constant shift)
        pos, neg = int((d > 0).sum()), int((d < 0).sum())
        p = min(1.0, 2.0 * float(stats.binom.cdf(min(pos, neg), pos + neg, 0.5)))
        t, dz = math.copysign(math.inf, diff), math.copysign(math.inf, diff)
    return {"diff": diff, "diff_ci_low": diff, "diff_ci_high": diff, "t": t, "p": p, "effect_dz": dz}


def _validate(
    flips: Mapping[str, np.ndarray], column_labels: Sequence[str], baseline: str, alpha: float, title: str
) -> tuple[dict[str, np.ndarray], list[str]]:
    if not isinstance(flips, Mapping) or len(flips) == 0:
        raise fail(
            _OWNER,
            "flips",
            "a non-empty mapping method name -> array (B, N)",
            flips,
            "pass e.g. {'BCE': flips_bce, 'SLAM': flips_slam}.",
        )
    if not isinstance(baseline, str) or baseline not in flips:
        raise fail(
            _OWNER,
            "baseline",
            f"one of the methods in 'flips' ({', '.join(map(repr, flips))})",
            baseline,
            "name the baseline row (default 'BCE') or add its flips to 'flips'.",
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0.0 < float(alpha) < 1.0):
        raise fail(_OWNER, "alpha", "a float in (0, 1)", alpha, "use the usual alpha=0.05.")
    if not isinstance(title, str):
        raise fail(_OWNER, "title", "a str", title, "pass a caption such as 'ASL-COCO'.")
    arrays: dict[str, np.ndarray] = {}
    for name, value in flips.items():
        if not isinstance(name, str) or not name:
            raise fail(_OWNER, "flips", "keyed by non-empty method names (str)", name, "use names such as 'SLAM'.")
        try:
            raw = np.asarray(value)
        except Exception as exc:  # pragma: no cover - exotic array-likes
            raise fail(_OWNER, f"flips[{name!r}]", "an array-like of numbers", value, str(exc)) from exc
        if raw.dtype.kind not in "iuf":
            raise fail(
                _OWNER,
                f"flips[{name!r}]",
                "an int or float array (flip counts)",
                value,
                "pass the per-sample flip counts, not booleans or objects.",
            )
        arr = raw.astype(float)
        if arr.ndim != 2:
            raise fail(
                _OWNER,
                f"flips[{name!r}]",
                "a 2-D array of shape (B budgets, N samples)",
                value,
                "stack the per-budget rows: np.stack([flips_at_eps1, flips_at_eps2, ...]).",
            )
        if not np.all(np.isfinite(arr)):
            raise fail(_OWNER, f"flips[{name!r}]", "finite (no nan/inf)", value, "drop or recompute broken samples.")
        arrays[name] = arr
    shape = arrays[baseline].shape
    for name, arr in arrays.items():
        if arr.shape != shape:
            raise fail(
                _OWNER,
                f"flips[{name!r}]",
                f"of shape {shape}, as the baseline {baseline!r} (paired samples)",
                arr.shape,
                "run every method on the same budgets and the same samples in the same order.",
            )
    if shape[1] < 2:
        raise fail(
            _OWNER, "flips", "arrays with N >= 2 samples (axis 1)", shape, "a t-test needs at least two paired samples."
        )
    if isinstance(column_labels, str) or not isinstance(column_labels, Sequence):
        raise fail(
            _OWNER, "column_labels", "a sequence of str, one per budget", column_labels, "pass e.g. ['5%', '10%', ...]."
        )
    labels = list(column_labels)
    if len(labels) != shape[0]:
        raise fail(
            _OWNER,
            "column_labels",
            f"{shape[0]} labels (one per budget row of 'flips')",
            column_labels,
            "give exactly one label per budget.",
        )
    if not all(isinstance(c, str) and c for c in labels) or len(set(labels)) != len(labels) or TOTAL in labels:
        raise fail(
            _OWNER,
            "column_labels",
            f"distinct non-empty str, none equal to {TOTAL!r}",
            column_labels,
            f"rename the duplicates; the {TOTAL!r} column is added automatically.",
        )
    return arrays, labels


def _best(column: str, methods: list[str], baseline: str, cells: dict[str, dict[str, CellStats]]) -> str | None:
    """The documented best-marking rule for one column."""
    if len(methods) < 2:
        return None
    means = {m: cells[m][column].mean for m in methods}
    top = max(means.values())
    leaders = [m for m in methods if math.isclose(means[m], top, rel_tol=1e-12, abs_tol=1e-12)]
    if len(leaders) != 1:
        return None
    leader = leaders[0]
    if leader != baseline:
        return leader if cells[leader][column].significant else None
    others = [cells[m][column] for m in methods if m != baseline]
    if all(c.significant and c.diff is not None and c.diff < 0 for c in others):
        return baseline
    return None


def compare_methods(
    flips: Mapping[str, np.ndarray],
    column_labels: Sequence[str],
    *,
    baseline: str = "BCE",
    alpha: float = 0.05,
    title: str = "",
) -> StudyTable:
    """Build a :class:`StudyTable` from per-sample flip counts.

    Args:
        flips: ``flips[method]`` of shape ``(B, N)``: flips per budget column and sample. Every method must
            cover the same ``N`` samples in the same order (the tests are paired). Rows keep this order.
        column_labels: one label per budget row, e.g. ``["5%", "10%", ..., "100%"]``; ``"Total"`` is appended.
        baseline: the method every other one is tested against (``diff = method - baseline``).
        alpha: family-wise error rate of the Holm-corrected tests.
        title: caption carried to the renderers.

    Returns:
        The table; see the module docstring for the std, the degenerate tests and the ``best`` rule.

    Raises:
        LabelflipError: naming the bad parameter (missing baseline, mismatched shapes, non-finite values,
            ``N < 2``, wrong number of labels, alpha outside (0, 1)).
    """
    arrays, labels = _validate(flips, column_labels, baseline, alpha, title)
    alpha = float(alpha)
    methods = list(arrays)
    columns = [*labels, TOTAL]
    n = arrays[baseline].shape[1]

    def column_values(arr: np.ndarray, j: int) -> np.ndarray:
        return arr.sum(axis=0) if j == len(labels) else arr[j]

    raw: dict[str, dict[str, dict]] = {}
    for m in methods:
        raw[m] = {}
        for j, col in enumerate(columns):
            x = column_values(arrays[m], j)
            mean, sd, lo, hi = _interval(x)
            entry: dict = {
                "method": m,
                "column": col,
                "n": n,
                "mean": mean,
                "std_pop": float(np.std(x)),
                "std_sample": sd,
                "ci_low": lo,
                "ci_high": hi,
            }
            if m == baseline:
                entry.update(diff=None, diff_ci_low=None, diff_ci_high=None, t=None, p=None, effect_dz=None)
            else:
                entry.update(_paired(x, column_values(arrays[baseline], j)))
            raw[m][col] = entry

    family = [(m, col) for m in methods if m != baseline for col in columns]
    adjusted = holm_adjust([raw[m][col]["p"] for m, col in family]) if family else np.empty(0)
    for (m, col), ph in zip(family, adjusted, strict=True):
        raw[m][col]["p_holm"] = float(ph)
    cells: dict[str, dict[str, CellStats]] = {}
    for m in methods:
        cells[m] = {}
        for col in columns:
            entry = raw[m][col]
            ph = entry.get("p_holm")
            cells[m][col] = CellStats(**{**entry, "p_holm": ph, "significant": ph is not None and ph < alpha})

    best = {col: _best(col, methods, baseline, cells) for col in columns}
    notes = [
        "mean ± std over the N paired samples; std = population std (ddof=0), as printed by the paper; "
        "std_sample (ddof=1) drives the intervals and tests.",
        f"{TOTAL} per sample = sum over the {len(labels)} budget columns, so its mean = the sum of the column means.",
        f"{int(CONFIDENCE * 100)}% t-intervals (ddof=1) of the mean and of the paired difference method - {baseline}.",
        f"test: paired two-sided t-test (scipy.stats.ttest_rel) vs {baseline} on the same N={n} samples; "
        "all-zero differences give t=0, p=1; a constant nonzero difference (t undefined) gets the exact two-sided "
        f"sign test, p = 2 * 0.5^N = {min(1.0, 2 * 0.5**n):.3g}.",
        f"Holm step-down correction across all {len(family)} tests of the table "
        f"(non-baseline methods x columns incl. {TOTAL}) at alpha={alpha:g}.",
        "effect size: Cohen's d_z = mean(diff) / std(diff, ddof=1) (0 for identical rows, ±inf for a constant shift).",
        "best: the largest mean of a column, marked only if significant (non-baseline: vs the baseline after Holm; "
        "baseline: every other method significantly worse); ties or no significance: not marked.",
    ]
    return StudyTable(
        title=title,
        baseline=baseline,
        alpha=alpha,
        methods=methods,
        columns=columns,
        cells=cells,
        best=best,
        notes=notes,
    )
