"""The robust study's report (SAE paper, Tables 2-4): tables in every format from the store only, the exact Spearman
p-value, and the two figures (PNG >= 200 dpi + SVG, labelled axes, no overlapping texts, bad inputs refused)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelflip import LabelflipError
from labelflip.report import robust as report_module
from labelflip.report.build import build_report
from labelflip.report.figures import robust as figures_module
from labelflip.report.figures.robust import plot_sae_vs_gase, plot_tradeoff
from labelflip.report.robust import (
    _exact_spearman,
    build_robust_report,
    is_robust_study,
    open_robust_study,
    robust_tables,
)
from labelflip.report.robust_tables import ScalarTable, scalar_csv, scalar_html, scalar_latex, scalar_markdown
from labelflip.study import robust_runner as runner_module
from labelflip.study import run_robust_study
from tests.report.figure_layout import capture, legend_covers_axes, overlaps, text_boxes
from tests.study.test_robust_study import tiny_spec

STRENGTHS = ["0", "0.001", "0.01", "0.1", "1"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("robust-report") / "s"
    tables = {"table2": {"strengths": [0, 0.3, 3.0]}, "table3": {"regularisers": ["none", "l2:0.1", "arm-sae:0.3"]},
              "table4": {"lambdas": [0, 0.3]}, "fig1": {"correlations": [0.0, 0.9]}}  # fmt: skip
    run_robust_study(tiny_spec(out, seeds=[0, 1], tables=tables))
    return out


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list:
    return capture(monkeypatch, (figures_module,))


def _assert_png_svg(paths: list[Path]) -> None:
    png, svg = paths
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and min(Image.open(png).info["dpi"]) >= 199.5
    assert svg.read_bytes().rstrip().endswith(b"</svg>")


def _assert_layout(fig) -> list:
    boxes = text_boxes(fig)
    assert not overlaps(boxes), overlaps(boxes)[:6]
    assert not legend_covers_axes(fig)
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), "every panel labels both axes"
    return boxes


def test_report_from_the_store_only(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_data(*args, **kwargs):
        raise AssertionError("the report must not open the dataset or train")

    monkeypatch.setattr(runner_module, "open_robust_dataset", no_data)
    monkeypatch.setattr(runner_module, "train_robust", no_data)
    assert is_robust_study(study) and not is_robust_study(study / "nowhere")
    path = build_report(study)  # the generic entry point dispatches on the manifest's kind
    html = path.read_text()
    for needle in (
        "Table 2",
        "Table 3",
        "Table 4",
        "Fig. 1",
        "Spearman",
        "GASE C_a",
        "Budgets",
        "GASE&#39;s perturbation",
    ):
        assert needle in html, needle
    for name in ("table2", "table3", "table4", "fig1"):
        for suffix in ("md", "csv", "tex"):
            assert (study / "tables" / f"robust-{name}.{suffix}").stat().st_size > 0
    for stem in ("robust-sae-gase", "robust-tradeoff"):
        _assert_png_svg([study / "figures" / f"{stem}.png", study / "figures" / f"{stem}.svg"])


def test_tables_match_the_stored_units_averaged_over_seeds(study: Path) -> None:
    store, spec = open_robust_study(study)
    with store:
        tables = robust_tables(store, spec)
        units = [store.get_artefact(f"none|seed={s}", "robust:unit") for s in (0, 1)]
    t3 = tables["table3"]
    assert [r[0] for r in t3.rows] == ["none", "l2 λ=0.1", "arm-sae λ=0.3"]
    clean = [u["f1"]["clean_micro_f1"] for u in units]
    assert t3.rows[0][1][0] == pytest.approx(np.mean(clean))
    assert t3.spread["none"][0] == pytest.approx(np.std(clean))  # population std over the two seeds
    assert "±" in scalar_markdown(t3)
    t2 = tables["table2"]
    assert t2.columns == ["0", "0.3", "3"] and t2.rows[0][0] == "GASE C_a (ε = 1)"
    assert t2.rows[0][1][0] == pytest.approx(np.mean([u["gase@1.0"]["mean"] for u in units]))
    assert any("Spearman across the 3 strengths" in n for n in t2.notes)
    attacked = [c for c, name in enumerate(t3.columns) if "ε" in name]
    assert {c for _, c in t3.bold} == set(attacked)  # one best per attacked column


def test_incomplete_store_is_refused(study: Path, tmp_path: Path) -> None:
    with pytest.raises(LabelflipError, match=r"results\.sqlite"):
        build_robust_report(tmp_path)


def test_exact_spearman_p_value() -> None:
    rho, p = _exact_spearman([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert rho == pytest.approx(1.0) and p == pytest.approx(2 / 120)  # the identity and the reversal
    rho, p = _exact_spearman([1, 2, 3, 4, 5], [2, 1, 3, 4, 5])
    assert rho == pytest.approx(0.9) and 0.05 < p < 0.2


def test_scalar_renderers_escape_and_mark() -> None:
    t = ScalarTable("T: a|b & c_1", "λ", ["x_1", "50%"], [("r|1", [0.5, math.nan]), ("r2", [0.25, 1.0])],
                    bold={(1, 0)}, notes=["note <b>"])  # fmt: skip
    md = scalar_markdown(t)
    assert "r\\|1" in md and "| – |" in md and "**0.250**" in md and "note <b>" in md
    assert "\\textbf{0.250}" in scalar_latex(t) and "x\\_1" in scalar_latex(t) and "50\\%" in scalar_latex(t)
    html = scalar_html(t)
    assert "&lt;b&gt;" in html and "<strong>0.250</strong>" in html and "a|b &amp; c_1" in html
    assert scalar_csv(t).splitlines()[1] == "r|1,x_1,0.5,,False"
    with pytest.raises(LabelflipError, match="rows"):
        ScalarTable("t", "c", ["a", "b"], [("r", [1.0])])


def test_sae_vs_gase_figure(tmp_path: Path, figures: list) -> None:
    paths = plot_sae_vs_gase(STRENGTHS, [10.8, 10.1, 9.3, 8.5, 4.9], [157.6, 127.3, 77.6, 69.1, 61.0],
                             tmp_path / "f.png", sae_median=[50, 40, 30, 20, 10], eps=10.0,
                             title="Spearman 1.00 (p = 0.017)", formats=("png", "svg"))  # fmt: skip
    _assert_png_svg(paths)
    boxes = _assert_layout(figures[-1])
    texts = {b.text for b in boxes}
    assert "GASE C_a (mean flips, ε = 10)" in texts and set(STRENGTHS) <= texts
    assert plot_sae_vs_gase(STRENGTHS, [1] * 5, [2] * 5, tmp_path / "g.svg").suffix == ".svg"


def test_tradeoff_figure(tmp_path: Path, figures: list) -> None:
    f1 = {
        "Micro-F1 clean": [0.76, 0.76, 0.75, 0.72, 0.70],
        "Macro-F1 clean": [0.66, 0.63, 0.56, 0.5, 0.46],
        "Micro-F1 ε = 0.05": [0.34, 0.35, 0.39, 0.44, 0.53],
        "Macro-F1 ε = 0.05": [0.33, 0.33, 0.35, 0.4, 0.42],
    }
    labels = ["0", "1e-07", "1e-06", "1e-05", "0.0001"]
    paths = plot_tradeoff(
        labels, f1, tmp_path / "t.png", phi_align=[0.23, 0.22, 0.2, 0.15, 0.12], formats=("png", "svg")
    )
    _assert_png_svg(paths)
    boxes = _assert_layout(figures[-1])
    assert {"Micro-F1 clean", "Macro-F1 ε = 0.05"} <= {b.text for b in boxes if b.role == "legend"}
    plot_tradeoff(labels, {"Micro-F1 clean": [0.5] * 5}, tmp_path / "one.png")  # one panel, no phi_align
    _assert_layout(figures[-1])


@pytest.mark.parametrize(
    ("call", "param"),
    [
        (lambda p: plot_sae_vs_gase(STRENGTHS, [1, 2], [1] * 5, p), "gase"),
        (lambda p: plot_sae_vs_gase([], [], [], p), "labels"),
        (lambda p: plot_sae_vs_gase(STRENGTHS, [1, 2, 3, 4, math.nan], [1] * 5, p), "gase"),
        (lambda p: plot_tradeoff(STRENGTHS, {}, p), "f1"),
        (lambda p: plot_tradeoff(STRENGTHS, {"a": [1] * 5}, p, phi_align=[1]), "phi_align"),
        (lambda p: plot_tradeoff(STRENGTHS, {"a": [1] * 5}, str(p).replace(".png", ".txt")), "path"),
    ],
)
def test_figures_refuse_bad_inputs(tmp_path: Path, call, param: str) -> None:
    with pytest.raises(LabelflipError, match=f"'{param}"):
        call(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_report_module_reads_no_model(study: Path) -> None:
    source = Path(report_module.__file__).read_text()
    for forbidden in (r"\btrain_robust\b", r"\bevaluate_robustness\b", r"import torch", r"[^_]gase\(", r"\bsae\("):
        assert not re.search(forbidden, source), forbidden
