"""The report's Table VII section: the table (numbers, paired test, Holm) through every renderer, the Fig. 1-style
figure (PNG >= 200 dpi + SVG, texts present and never overlapping), and the section in ``report.html`` only when the
store holds Table VII artefacts. The store is written directly (no model runs)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from labelflip._validation import LabelflipError
from labelflip.report.build import build_report, open_study
from labelflip.report.figures import table7 as fig_module
from labelflip.report.figures.table7 import plot_budget_examples
from labelflip.report.table7 import OWN, table7_sections, table7_table
from labelflip.study.store import ResultsStore, encode_array
from labelflip.study.table7 import artefact_kind
from tests.report import test_build
from tests.report.figure_layout import capture, overlaps, text_boxes
from tests.report.test_figures import _assert_png, _assert_svg
from tests.study.test_study import tiny_spec

K, N, E = 8, 8, 2
RNG = np.random.default_rng(3)
CLEAN = RNG.random((E, 3, 8, 8)).astype(np.float32)
CLEAN_PROBS = RNG.random((E, K))


def _artefact(baseline: str, label: str, norms: list[float], base: list[int], bce: list[int]) -> dict:
    def panel(method: str, lab: str, eps: float) -> dict:
        adv = np.clip(CLEAN + eps * np.sign(RNG.standard_normal(CLEAN.shape)), 0, 1).astype(np.float32)
        return {"method": method, "label": lab, "adv": encode_array(adv), "probs": RNG.random((E, K)).tolist(),
                "norm": np.abs(adv - CLEAN).reshape(E, -1).max(1).tolist()}  # fmt: skip

    return {
        "baseline": baseline,
        "label": label,
        "norm": "linf",
        "num_samples": N,
        "sample_ids": list(range(10, 10 + N)),
        "norms": norms,
        "baseline_flips": base,
        "status": ["partial"] * N,
        "methods": {"BCE": "bce"},
        "flips": {"BCE": bce},
        "achieved": {"BCE": norms},
        "elapsed_s": {label: 1.0, "BCE": 2.0},
        "examples": {
            "sample_index": [0, 1],
            "clean": encode_array(CLEAN),
            "clean_probs": CLEAN_PROBS.tolist(),
            "panels": [panel(baseline, label, 0.3), panel("bce", "BCE", 0.3)],
        },
    }


#: ML-DeepFool: BCE flips 6 more on every sample (a constant shift: exact sign test, p = 2 * 0.5^8 = 0.0078);
#: MLA-LP: BCE flips exactly as many (p = 1).
DEEPFOOL = _artefact("ml-deepfool", "ML-DeepFool", [0.5] * 4 + [0.3] * 4, [1, 2] * 4, [7, 8] * 4)
MLALP = _artefact("mla-lp", "MLA-LP", [0.1] * N, [3] * N, [3] * N)


def test_table_columns_are_baselines_with_their_norms() -> None:
    table = table7_table({"ML-DeepFool": DEEPFOOL, "MLA-LP": MLALP}, title="t")
    assert table.methods == [OWN, "BCE"] and table.baseline == OWN
    assert table.columns == ["ML-DeepFool (L∞ 0.400 ± 0.100)", "MLA-LP (L∞ 0.100 ± 0.000)", "Total"]
    deepfool, lp = (table.cells["BCE"][c] for c in table.columns[:2])
    assert (deepfool.mean, deepfool.diff, lp.diff) == (7.5, 6.0, 0.0)
    assert deepfool.p == pytest.approx(2 * 0.5**N) and deepfool.significant  # Holm over 3 tests (2 columns, Total)
    assert deepfool.p_holm == pytest.approx(3 * 2 * 0.5**N) and not lp.significant and lp.p == 1.0
    assert table.cells[OWN][table.columns[0]].mean == 1.5


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("t7")
    mp = pytest.MonkeyPatch()
    compare = {"baselines": ["ml-deepfool", "mla-lp"], "methods": ["bce"]}
    mp.setattr(test_build, "tiny_spec", lambda t, **kw: tiny_spec(t, compare=compare, **kw))
    try:
        out, _ = test_build._write_store(tmp, with_labels=True)
    finally:
        mp.undo()
    with ResultsStore(out / "results.sqlite") as store:
        store.put_artefact("tiny", artefact_kind("ml-deepfool"), DEEPFOOL)
        store.put_artefact("tiny", artefact_kind("mla-lp"), MLALP)
    build_report(out)
    return out


def test_report_section_tables_and_figures(built: Path) -> None:
    html = (built / "report.html").read_text()
    assert "Table VII: budgeted attacks at the baselines" in html and "baseline&#x27;s own example" in html
    md = (built / "tables" / "tiny-table7.md").read_text()
    assert "| BCE | **7.50 ± 0.50**† | 3.00 ± 0.00 |" in md
    assert "| baseline's own example | 1.50 ± 0.50 | 3.00 ± 0.00 |" in md
    rows = list(csv.DictReader(io.StringIO((built / "tables" / "tiny-table7.csv").read_text())))
    assert {(r["method"], r["column"].split(" ")[0], r["significant"]) for r in rows if r["method"] == "BCE"} >= {
        ("BCE", "ML-DeepFool", "True"),
        ("BCE", "MLA-LP", "False"),
    }
    assert r"\toprule" in (built / "tables" / "tiny-table7.tex").read_text()
    for i in range(E):
        _assert_png(built / "figures" / f"tiny-table7-{i}.png")
        _assert_svg(built / "figures" / f"tiny-table7-{i}.svg")
        assert f"tiny-table7-{i}.png" in html or "data:image/png" in html


def test_no_section_without_table7_artefacts(tmp_path: Path) -> None:
    out, _ = test_build._write_store(tmp_path, with_labels=True)  # its spec has no compare stage
    store, spec = open_study(out)
    with store:
        assert table7_sections(store, spec, out) == []
        spec.compare = {"baselines": ["ml-deepfool"], "methods": ["bce"], "samples": None}
        assert table7_sections(store, spec, out) == []  # a stage whose artefacts are not stored (yet)
    assert not (out / "tables" / "tiny-table7.md").exists()


def _grid(rows: int = 3, cols: int = 3) -> dict:
    rng = np.random.default_rng(0)
    clean = rng.random((3, 16, 16)).astype(np.float32)
    images = np.clip(clean + rng.uniform(-0.3, 0.3, (rows, cols, 3, 16, 16)), 0, 1)
    probs = rng.random((rows, cols, 24))
    return {
        "clean": clean,
        "clean_probs": np.linspace(0.99, 0.01, 24),
        "threshold": 0.5,
        "columns": ["ML-CW", "ML-DeepFool", "MLA-LP"][:cols],
        "rows": ["own example", "BCE", "SLAM"][:rows],
        "images": images,
        "probs": probs,
        "norms": rng.random((rows, cols)),
        "label_names": [f"label_{j:02d}_name" for j in range(24)],
    }


def test_figure_texts_present_and_never_overlapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = capture(monkeypatch, (fig_module,))
    paths = plot_budget_examples(**_grid(), path=tmp_path / "f", title="asl-cnn: sample 0", formats=("png", "svg"))
    _assert_png(paths[0])
    _assert_svg(paths[1])
    boxes = text_boxes(figures[-1])
    hits = overlaps(boxes)
    assert not hits, f"overlapping texts: {hits[:6]}"
    texts = [b.text for b in boxes]
    assert "asl-cnn: sample 0" in texts and "(a) original" in texts and "(b) ML-CW" in texts
    assert "BCE at ML-DeepFool's norm" in texts
    labels = [b.text for b in boxes if b.role == "label"]
    assert len(labels) == 1 + 3 * 3  # the clean image's prediction and one caption per adversarial example
    assert all("L∞ = " in t and ("flips (" in t or "flip (" in t) for t in labels[1:])
    assert labels[0].startswith("predictions:\nlabel_00_name 99%")


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"images": np.zeros((2, 3, 3, 16, 16))}, "images"),
        ({"probs": np.zeros((3, 3, 5))}, "probs"),
        ({"norms": np.zeros((3, 2))}, "norms"),
        ({"clean": np.full((3, 16, 16), 2.0)}, "clean"),
        ({"label_names": ["a"]}, "label_names"),
        ({"columns": "ML-CW"}, "columns"),
    ],
)
def test_figure_rejects_bad_inputs(tmp_path: Path, change: dict, param: str) -> None:
    with pytest.raises(LabelflipError, match=f"'{param}' parameter of plot_budget_examples"):
        plot_budget_examples(**{**_grid(), **change}, path=tmp_path / "f.png")
