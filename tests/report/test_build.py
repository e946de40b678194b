"""The study report built from a store: the k = K ``*`` cells, absolute eps in every header, model quality against
the ground truth (and a note when a store has none), example captions, and table cells that never wrap in
Chromium. The store is written directly (no model runs), with confidences and flips that agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelflip.analysis import Profile
from labelflip.attacks import ALPHA_LINF, parse_attack
from labelflip.report.build import build_report
from labelflip.report.marks import full_subset_cells
from labelflip.report.quality import METRICS, quality_html, quality_markdown, quality_metrics, quality_table
from labelflip.study import load_spec
from labelflip.study.store import ResultRow, ResultsStore, encode_array
from tests.chromium_support import run_chromium
from tests.study.test_study import tiny_spec

K, N = 8, 8
FRACTIONS = [0.1, 0.5, 0.8, 1.0]
EPS_MAX = 0.2
BUDGETS = [f * EPS_MAX for f in FRACTIONS]
METHODS = ["bce", "random", "class:0"]
#: E(eps) = K eps / eps_max: k = subset_length(E, K) is 1, 6, 8, 8 on the grid, so 80 % and 100 % are k = K.
STARRED = ["80%", "100%"]


def _profile() -> Profile:
    return Profile(
        coefficients=[0.0, K / EPS_MAX],
        eps=[0.0, 0.1, 0.2],
        flips=[0.0, 4.0, 8.0],
        flips_bce=[0.0, 4.0, 8.0],
        flips_linear=[0.0, 3.0, 7.0],
        eps_max=EPS_MAX,
        order=1,
        interval=10,
        alpha=ALPHA_LINF,
        curve="max",
        norm="linf",
        rel_tol=0.01,
        num_labels=K,
        num_samples=40,
        stop_reason="converged",
    )


def _write_store(tmp: Path, *, with_labels: bool) -> tuple[Path, dict]:
    spec = load_spec(
        tiny_spec(
            tmp,
            out="run",
            samples={"count": N, "seed": 1},
            methods=METHODS,
            seeds=[0],
            budgets={"fractions": FRACTIONS},
        )
    )
    out = Path(spec.output)
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    clean = rng.random((N, K)).astype(np.float32)
    labels = (clean > 0.5).astype(int)
    labels[:, 0] = 1 - labels[:, 0]  # the model is wrong on label 0: clean quality is not perfect
    adv = {
        m: [
            np.clip(clean + rng.normal(0, 0.1 * (b + 1), clean.shape), 0, 1).astype(np.float32)
            for b in range(len(BUDGETS))
        ]
        for m in METHODS
    }
    for m in METHODS[1:]:  # k = K: exactly the baseline
        for b in (2, 3):
            adv[m][b] = adv["bce"][b]
    with ResultsStore(out / "results.sqlite") as store:
        store.init_manifest({"study": "tiny", "spec": spec.to_dict()}, spec.config_hash())
        store.put_artefact(
            "",
            "dataset",
            {
                "label_names": [f"label{j}" for j in range(K)],
                "cooccurrence": np.eye(K).tolist(),
                "split": "test",
                "indices": list(range(N)),
                **({"labels": labels.tolist()} if with_labels else {}),
            },
        )
        store.put_artefact(
            "tiny",
            "model",
            {
                "metrics": {"test_map": 0.75},
                "threshold": [0.5] * K,
                "budgets": BUDGETS,
                "fingerprint": "f",
                "device": "cpu",
                "dtype": "float32",
            },
        )
        store.put_artefact("tiny", "profile", _profile().to_dict())
        rows = []
        for m in METHODS:
            for b, eps in enumerate(BUDGETS):
                for s in range(N):
                    before, after = clean[s] > 0.5, adv[m][b][s] > 0.5
                    up, down = int((~before & after).sum()), int((before & ~after).sum())
                    rows.append(
                        ResultRow(
                            "tiny",
                            parse_attack(m).__str__(),
                            0,
                            b,
                            s,
                            eps,
                            s,
                            10,
                            up + down,
                            up,
                            down,
                            eps,
                            eps,
                            clean[s].tobytes(),
                            adv[m][b][s].tobytes(),
                            0.01,
                        )
                    )
        images = rng.random((4, 3, 8, 8)).astype(np.float32)
        adv_images = np.stack([np.clip(images + 0.01 * (b + 1), 0, 1) for b in range(len(BUDGETS))])
        examples = {
            "method": "bce",
            "sample_index": [0, 1, 2, 3],
            "clean": encode_array(images),
            "adv": encode_array(adv_images),
        }
        store.write_unit(rows, artefacts={("tiny", "examples"): examples})
    return out, {"clean": clean, "adv": adv, "labels": labels}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out, data = _write_store(tmp_path_factory.mktemp("with-labels"), with_labels=True)
    return build_report(out), data


def test_star_cells_headers_and_total(report) -> None:
    path, _ = report
    out = path.parent
    html = path.read_text(encoding="utf-8")
    table = html[html.index('<table class="labelflip-study">') : html.index("</table>")]
    rows = {re.search(r'scope="row">([^<]+)<', r)[1]: r for r in table.split("<tr>") if 'scope="row"' in r}
    for label in ("Random", "CLASS(γ=0)"):
        cells = re.findall(r"<td>(.*?)</td>", rows[label])
        starred = ['class="star"' in c for c in cells]
        assert starred == [False, False, True, True, False], (label, cells)  # 80 %, 100 %; not Total
    assert 'class="star"' not in rows["BCE"]
    assert "k = K" in table and "exactly BCE" in table and "Total = the per-sample sum" in table
    for f, eps in zip(FRACTIONS, BUDGETS, strict=True):
        assert (
            f'{f * 100:g}%<br><span class="sub">{eps:.4g}</span><br><span class="sub">{eps * 255:.3g}/255</span>'
            in table
        )
    md = (out / "tables" / "tiny.md").read_text()
    assert "| 80% (eps 0.16 = 40.8/255) |" in md and "* = the subset attack targets every label" in md
    csv_rows = (out / "tables" / "tiny.csv").read_text().splitlines()
    assert csv_rows[0].endswith(",best,eps,targets_every_label")
    assert sum(line.endswith(",True") for line in csv_rows) == 4
    assert "eps_max = 0.2 = 51/255 (converged; probe size n = 40 images)" in html


def test_quality_table_against_ground_truth(report) -> None:
    path, data = report
    html = path.read_text(encoding="utf-8")
    quality = html[html.index('<table class="labelflip-quality">') :]
    quality = quality[: quality.index("</table>")]
    clean = quality_metrics(data["clean"], data["labels"], 0.5)
    assert 0 < clean["micro_f1"] < 1
    for key, name in METRICS.items():
        assert f'rowspan="3">{name}</th>' in quality
        assert f'<td class="clean" rowspan="3">{clean[key]:.3f}</td>' in quality
    attacked = quality_metrics(data["adv"]["random"][1], data["labels"], 0.5)
    random_rows = [r for r in quality.split("<tr>") if 'scope="row">Random<' in r]
    assert f"<td>{attacked['macro_f1']:.3f}</td>" in random_rows[2]
    assert "test_map = 0.750" in html
    assert (path.parent / "tables" / "tiny-quality.md").read_text().startswith("| metric | method | clean |")
    assert "ground truth, the clean prediction and the flipped labels" in html
    assert "Ground truth: not in" not in html


def test_report_without_ground_truth_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from labelflip.report import build

    def stub(*args: object, formats: tuple[str, ...], **kwargs: object) -> list[Path]:
        path = Path(str(args[3] if len(args) > 3 else args[1]))  # figures not under test here: a 1x1 PNG
        out = [path.with_suffix("." + f) for f in formats]
        Image.new("RGB", (1, 1)).save(out[0])
        out[1].write_text("<svg></svg>")
        return out

    for name in ("plot_flips_vs_budget", "plot_confidence_histograms", "plot_profile"):
        monkeypatch.setattr(build, name, stub)
    out, _ = _write_store(tmp_path, with_labels=False)
    with ResultsStore(out / "results.sqlite") as store:
        assert "labels" not in store.get_artefact("", "dataset")
    html = build_report(out).read_text(encoding="utf-8")
    assert "no ground truth for the samples in this study" in html and "(no ground truth stored)" in html
    assert "Ground truth: not in this study" in html
    assert 'class="labelflip-quality"' not in html


_MEASURE = """<script>
const wrapped = [];
let checked = 0;
for (const cell of document.querySelectorAll("table td:not(.legend), table th")) {
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.textContent.trim()) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
    checked += 1;
    if (lines.size > 1) wrapped.push(node.textContent);
  }
}
document.body.setAttribute("data-measured", JSON.stringify({checked, wrapped}));
</script></body>"""


def _wrapped_cells(chromium: str, html: str, tmp: Path, name: str) -> dict:
    page = tmp / f"{name}.html"
    page.write_text(html.replace("</body>", _MEASURE), encoding="utf-8")
    dom = run_chromium(chromium, tmp / f"profile-{name}", "--window-size=640,900", "--dump-dom", url=page.as_uri())
    found = re.search(r'data-measured="([^"]*)"', dom.stdout)
    assert found, "the measuring script did not run"
    return json.loads(found[1].replace("&quot;", '"').replace("&amp;", "&"))


def test_table_cells_never_wrap_in_chromium(report, chromium: str, tmp_path: Path) -> None:
    """In a narrow window no cell text breaks over two lines; without the nowrap rule the same page wraps (so the
    measurement can see wrapping)."""
    path, _ = report
    html = path.read_text(encoding="utf-8")
    measured = _wrapped_cells(chromium, html, tmp_path, "report")
    assert measured["checked"] > 50
    assert measured["wrapped"] == []
    unstyled = _wrapped_cells(chromium, html.replace(" white-space: nowrap;", ""), tmp_path, "unstyled")
    assert unstyled["wrapped"], "the check cannot see wrapping at this width"


def test_full_subset_cells_from_the_profile() -> None:
    methods = [parse_attack(m) for m in ("bce", "slam", "random", "class:0.5", "top-n:3")]
    base = np.arange(8.0).reshape(4, 2)
    flips = {
        "BCE": base,
        "SLAM": base + 1,
        "Random": base.copy(),
        "CLASS(γ=0.5)": base + np.array([[0, 0]] * 3 + [[1, 0]]),
    }
    flips["Top-3"] = base.copy()
    stars, notes = full_subset_cells(methods, "BCE", _profile(), BUDGETS, ["10%", "50%", "80%", "100%"], flips)
    assert stars == {"Random": STARRED, "CLASS(γ=0.5)": ["80%"], "Top-3": []}  # k = 3 < K: never, equal or not
    assert notes == ["CLASS(γ=0.5) targets every label (k = K) at 100% but its flips differ from BCE."]


def test_quality_renderers() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random((6, 4)) > 0.5).astype(int)
    conf = rng.random((6, 4))
    qt = quality_table("m", conf, {"BCE": [[conf, 1 - conf]]}, y, 0.5, columns=["5%", "10%"], eps=[0.01, 0.02])
    assert qt.attacked["BCE"]["micro_f1"][0] == qt.clean["micro_f1"]
    html = quality_html(qt)
    assert '<br><span class="sub">2.55/255</span>' in html and html.count("<tr>") == 1 + 3
    md = quality_markdown(qt)
    assert "| mAP | BCE |" in md and "5% (eps 0.01 = 2.55/255)" in md and "No quality metrics were recorded" in md


def test_chosen_gamma_of_class_auto_is_in_the_table_caption(tmp_path: Path) -> None:
    """Issue 8 item 14: the gamma class-auto chose on held-out samples is shown in the table caption."""
    from labelflip.attacks import parse_attack
    from labelflip.report.build import open_study, study_tables
    from labelflip.study.store import ResultsStore

    out, _ = _write_store(tmp_path, with_labels=True)
    method = str(parse_attack(METHODS[-1]))
    with ResultsStore(out / "results.sqlite") as store:
        store.put_artefact("tiny", f"gamma:{method}", {"gamma": 0.35, "totals": {}})
    store, spec = open_study(out)
    with store:
        title = study_tables(store, spec)["tiny"].title
    assert "chose γ = 0.35 on held-out samples" in title
