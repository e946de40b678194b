"""Statistics and renderers of a study table (labelflip.report): checked against scipy/numpy on fixed data."""

from __future__ import annotations

import csv
import io
import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from labelflip._validation import LabelflipError
from labelflip.report.statistics import TOTAL, StudyTable, compare_methods, holm_adjust
from labelflip.report.tables import latex_escape, to_csv, to_html, to_latex, to_markdown

LABELS = ["5%", "50%", "100%"]
N = 12


def _study_flips() -> dict[str, np.ndarray]:
    """Fixed paired data: SLAM clearly better, Noisy a zero-mean wobble, CLASS identical to BCE at 5% ("*")."""
    rng = np.random.default_rng(1234)
    bce = rng.integers(0, 20, size=(3, N))
    slam = bce + rng.integers(1, 5, size=(3, N))
    wobble = np.array([1, -1] * (N // 2))
    noisy = bce + np.stack([rng.permutation(wobble) for _ in range(3)])
    klass = bce.copy()
    klass[1:] += rng.integers(-1, 3, size=(2, N))
    return {"BCE": bce, "SLAM": slam, "Noisy": noisy, "CLASS(γ=0.5)": klass}


@pytest.fixture(scope="module")
def flips() -> dict[str, np.ndarray]:
    return _study_flips()


@pytest.fixture(scope="module")
def table(flips: dict[str, np.ndarray]) -> StudyTable:
    return compare_methods(flips, LABELS, title="ASL-COCO")


def _column(arr: np.ndarray, col: str) -> np.ndarray:
    return arr.sum(axis=0).astype(float) if col == TOTAL else arr[LABELS.index(col)].astype(float)


# --- per-cell numbers against scipy / numpy -------------------------------------------------------------


def test_layout(table: StudyTable, flips: dict[str, np.ndarray]) -> None:
    assert table.methods == list(flips)
    assert table.columns == [*LABELS, TOTAL]
    assert table.baseline == "BCE"
    assert table.alpha == 0.05
    assert set(table.cells) == set(flips)
    assert all(list(table.cells[m]) == table.columns for m in table.methods)
    assert all(table.cells[m][c].n == N for m in table.methods for c in table.columns)
    assert any("ddof=0" in note for note in table.notes)
    assert any("Holm" in note for note in table.notes)


def test_t_and_p_equal_scipy_ttest_rel(table: StudyTable, flips: dict[str, np.ndarray]) -> None:
    checked = 0
    for m in table.methods:
        if m == "BCE" or m == "CLASS(γ=0.5)":
            continue
        for col in table.columns:
            ref = stats.ttest_rel(_column(flips[m], col), _column(flips["BCE"], col))
            cell = table.cells[m][col]
            assert cell.t == pytest.approx(ref.statistic, rel=1e-12)
            assert cell.p == pytest.approx(ref.pvalue, rel=1e-12)
            checked += 1
    # CLASS: every column but the identical "*" one goes through scipy too
    for col in ["50%", "100%", TOTAL]:
        ref = stats.ttest_rel(_column(flips["CLASS(γ=0.5)"], col), _column(flips["BCE"], col))
        assert table.cells["CLASS(γ=0.5)"][col].p == pytest.approx(ref.pvalue, rel=1e-12)
        checked += 1
    assert checked == 2 * 4 + 3


def test_intervals_equal_scipy_t_interval(table: StudyTable, flips: dict[str, np.ndarray]) -> None:
    for m in table.methods:
        for col in table.columns:
            x = _column(flips[m], col)
            cell = table.cells[m][col]
            lo, hi = stats.t.interval(0.95, N - 1, loc=x.mean(), scale=stats.sem(x))
            assert (cell.ci_low, cell.ci_high) == pytest.approx((lo, hi), rel=1e-12)
            assert cell.ci_low < cell.mean < cell.ci_high
            if m in ("BCE",) or (m == "CLASS(γ=0.5)" and col == "5%"):
                continue
            d = x - _column(flips["BCE"], col)
            lo, hi = stats.t.interval(0.95, N - 1, loc=d.mean(), scale=stats.sem(d))
            assert (cell.diff_ci_low, cell.diff_ci_high) == pytest.approx((lo, hi), rel=1e-12)
            assert cell.diff == pytest.approx(d.mean(), rel=1e-12, abs=1e-12)


def test_population_vs_sample_std_and_dz(table: StudyTable, flips: dict[str, np.ndarray]) -> None:
    for m in table.methods:
        for col in table.columns:
            x = _column(flips[m], col)
            cell = table.cells[m][col]
            assert cell.mean == pytest.approx(x.mean(), rel=1e-12)
            assert cell.std_pop == pytest.approx(np.std(x, ddof=0), rel=1e-12)
            assert cell.std_sample == pytest.approx(np.std(x, ddof=1), rel=1e-12)
            assert cell.std_pop < cell.std_sample  # the two are really different numbers
    for col in table.columns:
        d = _column(flips["SLAM"], col) - _column(flips["BCE"], col)
        dz = (sum(d) / N) / math.sqrt(sum((v - d.mean()) ** 2 for v in d) / (N - 1))
        assert table.cells["SLAM"][col].effect_dz == pytest.approx(dz, rel=1e-12)


def test_baseline_row_has_no_test(table: StudyTable) -> None:
    for col in table.columns:
        cell = table.cells["BCE"][col]
        assert (cell.diff, cell.t, cell.p, cell.p_holm, cell.effect_dz) == (None, None, None, None, None)
        assert cell.diff_ci_low is None and cell.diff_ci_high is None
        assert cell.significant is False


def test_total_is_sum_of_column_means(table: StudyTable) -> None:
    for m in table.methods:
        total = table.cells[m][TOTAL].mean
        assert total == pytest.approx(sum(table.cells[m][c].mean for c in LABELS), rel=1e-12)
        diff = table.cells[m][TOTAL].diff
        if diff is not None:
            assert diff == pytest.approx(sum(table.cells[m][c].diff for c in LABELS), rel=1e-12, abs=1e-12)


# --- Holm ----------------------------------------------------------------------------------------------


def test_holm_hand_example() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone max 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    # capped at 1: 0.6*2 = 1.2 -> 1, then max(1.2, 0.7) -> 1
    assert holm_adjust([0.7, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm_adjust([0.02]) == pytest.approx([0.02])
    assert holm_adjust([]).shape == (0,)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=15))
def test_holm_is_monotone_bounded_and_matches_definition(p: list[float]) -> None:
    adj = holm_adjust(p)
    raw = np.asarray(p)
    assert np.all(adj >= raw - 1e-15) and np.all(adj <= 1.0)
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(adj[order]) >= 0)
    m = len(p)
    s = sorted(p)
    for i, pi in enumerate(p):
        rank = sorted(range(m), key=lambda k: (p[k], k)).index(i)
        expected = min(1.0, max((m - j) * s[j] for j in range(rank + 1)))
        assert adj[i] == pytest.approx(expected, rel=1e-12, abs=1e-15), pi


def test_holm_family_is_the_whole_table(table: StudyTable) -> None:
    family = [(m, c) for m in table.methods if m != "BCE" for c in table.columns]
    assert len(family) == 3 * 4
    expected = holm_adjust([table.cells[m][c].p for m, c in family])
    got = [table.cells[m][c].p_holm for m, c in family]
    assert got == pytest.approx(expected.tolist(), rel=1e-12)
    for m, c in family:
        cell = table.cells[m][c]
        assert cell.significant == (cell.p_holm < 0.05)
    # a per-method or per-column family would adjust less: at least one p_holm exceeds 4x its raw p
    assert any(table.cells[m][c].p_holm > 4 * table.cells[m][c].p for m, c in family if table.cells[m][c].p > 0)


# --- edge cases ---------------------------------------------------------------------------------------


def test_star_cell_identical_to_baseline(table: StudyTable) -> None:
    cell = table.cells["CLASS(γ=0.5)"]["5%"]
    assert (cell.t, cell.p, cell.p_holm) == (0.0, 1.0, 1.0)
    assert cell.effect_dz == 0.0
    assert (cell.diff, cell.diff_ci_low, cell.diff_ci_high) == (0.0, 0.0, 0.0)
    assert cell.significant is False


def test_identical_leaders_are_not_marked_best() -> None:
    base = np.array([[5, 6, 7, 8, 9, 10]])
    flips = {"BCE": base, "CLASS": base.copy(), "Worse": base - np.array([[1, 2, 1, 2, 1, 3]])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scipy RuntimeWarning leaks from the constant differences
        table = compare_methods(flips, ["5%"])
    assert table.cells["CLASS"]["5%"].p == 1.0
    assert table.cells["Worse"]["5%"].significant
    assert table.best == {"5%": None, TOTAL: None}


def test_tied_significant_leaders_are_not_marked_best() -> None:
    base = np.arange(5, 15)[None]  # N = 10: a constant +1 shift has sign-test p = 2 * 0.5**10
    table = compare_methods({"BCE": base, "A": base + 1, "B": base + 1}, ["5%"])
    assert table.cells["A"]["5%"].significant and table.cells["B"]["5%"].significant
    assert table.best["5%"] is None


def test_deterministic_shift() -> None:
    base = np.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = compare_methods({"BCE": base, "Up": base + 2, "Down": base - 1}, ["10%"])
    up, down = table.cells["Up"]["10%"], table.cells["Down"]["10%"]
    # t is undefined for a constant shift: the exact two-sided sign test, p = 2 * 0.5**N (issue 8), never 0
    assert (up.t, up.p, up.effect_dz, up.diff) == (math.inf, 2 * 0.5**8, math.inf, 2.0)
    assert (up.diff_ci_low, up.diff_ci_high) == (2.0, 2.0)
    assert (down.t, down.p, down.effect_dz) == (-math.inf, 2 * 0.5**8, -math.inf)
    assert up.significant and down.significant
    assert table.best["10%"] == "Up"


def test_constant_samples_give_point_interval() -> None:
    zeros = np.zeros((1, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = compare_methods({"BCE": zeros, "SLAM": zeros + np.array([[0, 1, 0, 2, 0]])}, ["5%"])
    cell = table.cells["BCE"]["5%"]
    assert (cell.mean, cell.std_pop, cell.std_sample, cell.ci_low, cell.ci_high) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert 0.0 < table.cells["SLAM"]["5%"].p < 1.0


def test_constant_float_column_is_exact_point() -> None:
    base = np.array([[0.1, 0.1, 0.1], [1.0, 2.0, 4.0]])  # np.mean([0.1] * 3) != 0.1 in floating point
    table = compare_methods({"BCE": base, "SLAM": base + np.array([[0.0, 0.0, 0.0], [1, 2, 2]])}, ["5%", "10%"])
    cell = table.cells["BCE"]["5%"]
    assert (cell.mean, cell.std_sample, cell.ci_low, cell.ci_high) == (0.1, 0.0, 0.1, 0.1)
    assert table.cells["SLAM"]["5%"].p == 1.0


# --- best marking ---------------------------------------------------------------------------------------


def test_best_marks_significant_leader(table: StudyTable) -> None:
    for col in table.columns:
        assert table.cells["SLAM"][col].significant
        assert table.best[col] == "SLAM"


def test_best_not_marked_when_leader_not_significant() -> None:
    base = np.arange(12, dtype=float)[None, :]
    tiny = base + np.array([[1, -1] * 5 + [1, 0]])  # mean +1/12, far from significant
    table = compare_methods({"BCE": base, "Tiny": tiny}, ["5%"])
    assert table.cells["Tiny"]["5%"].mean > table.cells["BCE"]["5%"].mean
    assert not table.cells["Tiny"]["5%"].significant
    assert table.best["5%"] is None


def test_baseline_marked_only_if_every_other_is_significantly_worse() -> None:
    base = np.array([[10, 12, 9, 14, 11, 13, 10, 15]])
    worse = base - np.array([[2, 3, 2, 4, 3, 2, 3, 4]])
    much_worse = base - np.array([[5, 6, 5, 7, 6, 5, 6, 8]])
    barely = base - np.array([[1, -1, 1, -1, 1, -1, 1, 0]])  # mean -1/8: not significant
    marked = compare_methods({"BCE": base, "Worse": worse, "MuchWorse": much_worse}, ["5%"])
    assert marked.best["5%"] == "BCE"
    unmarked = compare_methods({"BCE": base, "Worse": worse, "Barely": barely}, ["5%"])
    assert unmarked.cells["Worse"]["5%"].significant and not unmarked.cells["Barely"]["5%"].significant
    assert unmarked.best["5%"] is None


def test_only_baseline_marks_nothing() -> None:
    table = compare_methods({"BCE": np.array([[1, 2, 3]])}, ["5%"])
    assert table.best == {"5%": None, TOTAL: None}


# --- bad inputs -------------------------------------------------------------------------------------------


def _good() -> dict[str, np.ndarray]:
    return {"BCE": np.ones((2, 4)), "SLAM": np.full((2, 4), 2.0)}


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"flips": {"SLAM": np.ones((2, 4))}}, "baseline"),
        ({"flips": {}}, "flips"),
        ({"flips": {"BCE": np.ones((2, 4)), "SLAM": np.ones((2, 5))}}, "flips['SLAM']"),
        ({"flips": {"BCE": np.ones((2, 4)), "SLAM": np.array([[1, 2, np.nan, 4], [1, 2, 3, 4]])}}, "flips['SLAM']"),
        ({"flips": {"BCE": np.ones((2, 4)), "SLAM": np.ones((2, 4), dtype=bool)}}, "flips['SLAM']"),
        ({"flips": {"BCE": np.ones(4), "SLAM": np.ones(4)}}, "flips['BCE']"),
        ({"flips": {"BCE": np.ones((2, 1)), "SLAM": np.ones((2, 1))}}, "flips"),
        ({"column_labels": ["5%"]}, "column_labels"),
        ({"column_labels": ["5%", "5%"]}, "column_labels"),
        ({"column_labels": ["5%", "Total"]}, "column_labels"),
        ({"column_labels": "ab"}, "column_labels"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": 0}, "alpha"),
        ({"baseline": "bce"}, "baseline"),
        ({"title": None}, "title"),
    ],
)
def test_bad_inputs_name_the_parameter(kwargs: dict, param: str) -> None:
    args = {"flips": _good(), "column_labels": ["5%", "10%"], **kwargs}
    flips, labels = args.pop("flips"), args.pop("column_labels")
    with pytest.raises(LabelflipError, match=re.escape(f"'{param}' parameter of compare_methods")):
        compare_methods(flips, labels, **args)


def test_bad_renderer_and_holm_inputs(table: StudyTable) -> None:
    with pytest.raises(LabelflipError, match="'pvalues'"):
        holm_adjust([0.1, 1.5])
    with pytest.raises(LabelflipError, match="'pvalues'"):
        holm_adjust([0.1, float("nan")])
    for render in (to_markdown, to_latex, to_html):
        with pytest.raises(LabelflipError, match="'digits'"):
            render(table, digits=-1)
    with pytest.raises(LabelflipError, match="'table'"):
        to_csv({"BCE": 1})  # type: ignore[arg-type]


# --- renderers ------------------------------------------------------------------------------------------


def test_markdown(table: StudyTable) -> None:
    md = to_markdown(table)
    lines = md.splitlines()
    assert "| method | 5% | 50% | 100% | Total |" in lines
    slam = table.cells["SLAM"]["5%"]
    assert f"**{slam.mean:.2f} ± {slam.std_pop:.2f}**†" in md
    bce = table.cells["BCE"]["50%"]
    bce_row = next(line for line in lines if line.startswith("| BCE |"))
    assert f"{bce.mean:.2f} ± {bce.std_pop:.2f}" in bce_row  # population std, not the sample std
    assert "†" not in bce_row and "**" not in bce_row
    star = table.cells["CLASS(γ=0.5)"]["5%"]
    star_row = next(line for line in lines if line.startswith("| CLASS(γ=0.5) |"))
    assert star_row.split("|")[2].strip() == f"{star.mean:.2f} ± {star.std_pop:.2f}"  # no marker, not bold
    legend = lines[-1]
    for phrase in ("population std (ddof=0", "paired two-sided t-test vs BCE", "Holm", "alpha = 0.05", "†", "bold"):
        assert phrase in legend
    assert to_markdown(table, digits=3).count(f"{slam.mean:.3f}") >= 1


def test_csv_round_trip(table: StudyTable) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert len(rows) == len(table.methods) * len(table.columns)
    for row in rows:
        cell = table.cells[row["method"]][row["column"]]
        assert int(row["n"]) == cell.n
        for name in (
            "mean",
            "std_pop",
            "std_sample",
            "ci_low",
            "ci_high",
            "diff",
            "diff_ci_low",
            "diff_ci_high",
            "t",
            "p",
            "p_holm",
            "effect_dz",
        ):
            value = getattr(cell, name)
            assert (row[name] == "") if value is None else float(row[name]) == value, name
        assert row["significant"] == str(cell.significant)
        assert row["best"] == str(table.best[row["column"]] == row["method"])


def test_latex_escapes_and_balances() -> None:
    base = np.stack([np.arange(1, 11), np.arange(2, 12)])  # N = 10 (constant shifts: sign test, p = 2 * 0.5**N)
    names = {"BCE": base, "CLASS(γ=0.5)": base + 1, "rand_subset & #1 {x} 50%": base + np.array([[1, 0] * 5] * 2)}
    table = compare_methods(names, ["5%", "100%"])
    tex = to_latex(table)
    assert r"CLASS($\gamma$=0.5)" in tex
    assert r"rand\_subset \& \#1 \{x\} 50\%" in tex
    assert r"5\% & 100\% & Total" in tex
    assert "γ" not in tex
    for cmd in (r"\begin{tabular}{lrrr}", r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}", r"$\pm$"):
        assert cmd in tex
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    assert r"\textbf{" in body and r"$^\dagger$" in body
    unescaped = re.sub(r"\\[{}%&#_$]", "", body)
    assert unescaped.count("{") == unescaped.count("}")
    assert not re.search(r"[%#_]", unescaped), "an unescaped special character"
    n_cols = len(table.columns) + 1
    assert all(line.count("&") == n_cols - 1 for line in unescaped.splitlines() if line.endswith("\\\\"))
    assert latex_escape("a_b%c&d#e~f^g\\h") == r"a\_b\%c\&d\#e\textasciitilde{}f\textasciicircum{}g\textbackslash{}h"


def test_html_escapes(table: StudyTable) -> None:
    base = np.arange(1, 11)[None]
    evil = "<script>alert('x')</script>"
    doc = to_html(compare_methods({"BCE": base, evil: base + 1}, ["5%"], title="A & B"))
    assert "<script>" not in doc
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in doc
    assert "<caption>A &amp; B</caption>" in doc
    assert "<strong>" in doc and '<span class="sig">†</span>' in doc
    assert doc.startswith("<table") and doc.rstrip().endswith("</table>")
    main = to_html(table)
    slam = table.cells["SLAM"]["5%"]
    assert f'<td><strong>{slam.mean:.2f} ± {slam.std_pop:.2f}</strong><span class="sig">†</span></td>' in main
    assert "<caption>ASL-COCO</caption>" in main
