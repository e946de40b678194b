"""The report's Table VII section (seed §VI-D, Table VII, Fig. 1), from the stage's stored artefacts only.

Per model one table, rendered by :mod:`labelflip.report.tables` (Markdown, CSV, LaTeX, HTML) from a
:class:`~labelflip.report.statistics.StudyTable`: the paper's Table VII transposed, one **column per baseline**
(its header gives the mean ± population std of the norm its examples needed, the budget every method got per
sample) and one **row per attack**: the baseline's own examples first (the reference row), then each budgeted
method at those norms. Cells are flips per sample, mean ± population std over the same N samples; each method is
compared with the baseline's own examples by a paired two-sided t-test (the exact sign test for a constant
difference), Holm-corrected across the table (:func:`~labelflip.report.statistics.compare_methods`). ``Total`` is
the per-sample sum over the baseline columns. Figures: the paper's Fig. 1 for the stored example samples
(:func:`~labelflip.report.figures.table7.plot_budget_examples`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from labelflip.report.figures.table7 import plot_budget_examples
from labelflip.report.html import Figure, Section, Table
from labelflip.report.statistics import StudyTable, compare_methods
from labelflip.report.tables import to_csv, to_html, to_latex, to_markdown
from labelflip.study.spec import StudySpec
from labelflip.study.store import ResultsStore, decode_array
from labelflip.study.table7 import artefact_kind

__all__ = ["OWN", "table7_results", "table7_sections", "table7_table"]

OWN = "baseline's own example"
"""The reference row: each baseline's unclipped adversarial examples."""


def table7_results(store: ResultsStore, spec: StudySpec) -> dict[str, dict[str, dict[str, Any]]]:
    """Model -> baseline label -> its stored Table VII artefact (models and baselines without one left out)."""
    baselines = (getattr(spec, "compare", None) or {}).get("baselines", [])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in spec.models:
        found = {a["label"]: a for b in baselines if (a := store.get_artefact(entry.name, artefact_kind(b)))}
        if found:
            out[entry.name] = found
    return out


def _norm_name(norm: str) -> str:
    return "L∞" if norm == "linf" else "L2"


def table7_table(results: Mapping[str, Mapping[str, Any]], *, title: str = "") -> StudyTable:
    """The :class:`StudyTable` of one model's Table VII: rows = the baselines' own examples, then each method;
    columns = the baselines, labelled with the mean ± std norm of their examples (see the module docstring)."""
    first = next(iter(results.values()))
    methods = list(first["methods"])
    columns, flips = [], {OWN: [], **{m: [] for m in methods}}
    for label, art in results.items():
        e = np.asarray(art["norms"], dtype=float)
        columns.append(f"{label} ({_norm_name(art['norm'])} {e.mean():.3f} ± {e.std():.3f})")
        flips[OWN].append(art["baseline_flips"])
        for m in methods:
            flips[m].append(art["flips"][m])
    arrays = {name: np.asarray(rows, dtype=float) for name, rows in flips.items()}
    return compare_methods(arrays, columns, baseline=OWN, title=title)


def _notes(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What each column's numbers rest on: outcomes, the methods' achieved norms, wall times."""
    lines = []
    for label, art in results.items():
        e = np.asarray(art["norms"], dtype=float)
        status = ", ".join(f"{n} {s}" for s, n in Counter(art.get("status", [])).most_common())
        achieved = "; ".join(
            f"{m} achieved {_norm_name(art['norm'])} {np.mean(a):.3f} (max excess over the budget "
            f"{float(np.max(np.asarray(a) - e)):.1e})"
            for m, a in art["achieved"].items()
        )
        times = ", ".join(f"{k} {v:.1f} s" for k, v in art.get("elapsed_s", {}).items())
        lines.append(
            f"{label} ({art['baseline']}): norms {e.min():.3f}-{e.max():.3f} over {art['num_samples']} samples; "
            f"outcomes: {status}; {achieved}; wall time: {times}."
        )
    return lines


def _figures(name: str, results: Mapping[str, Mapping[str, Any]], threshold: Any, names: list[str], out: Path) -> list:
    """One Fig. 1 per stored example sample of ``name`` (the examples every baseline stored)."""
    arts = [a for a in results.values() if a.get("examples")]
    if not arts:
        return []
    count = min(len(a["examples"]["sample_index"]) for a in arts)
    columns = [a["label"] for a in arts]
    methods = list(arts[0]["methods"])
    norm = arts[0]["norm"]
    k = len(arts[0]["examples"]["clean_probs"][0])
    labels = names if len(names) == k else None
    figs = []
    for i in range(count):
        clean = decode_array(arts[0]["examples"]["clean"])[i]
        panels = [{p["label"]: p for p in a["examples"]["panels"]} for a in arts]
        keys = [[a["label"] for a in arts], *[[m] * len(arts) for m in methods]]
        images = np.stack([[decode_array(panels[c][key[c]]["adv"])[i] for c in range(len(arts))] for key in keys])
        probs = np.asarray([[panels[c][key[c]]["probs"][i] for c in range(len(arts))] for key in keys])
        norms = np.asarray([[panels[c][key[c]]["norm"][i] for c in range(len(arts))] for key in keys])
        sample = arts[0]["examples"]["sample_index"][i]
        png, _svg = plot_budget_examples(
            clean,
            np.asarray(arts[0]["examples"]["clean_probs"][i]),
            threshold,
            columns,
            ["own example", *methods],
            images,
            probs,
            norms,
            out / "figures" / f"{name}-table7-{i}.png",
            label_names=labels,
            norm=norm,
            title=f"{name}: sample {sample} (dataset index {arts[0]['sample_ids'][sample]})",
            formats=("png", "svg"),
        )
        figs.append(
            Figure(
                f"{name}, sample {sample} (the paper's Fig. 1 and Appendix M): (a) the clean image with its predicted "
                "labels; top row: each baseline's own adversarial example; below: "
                + ", ".join(methods)
                + f" at the {_norm_name(norm)} norm of the baseline example in the same column. Under each image: "
                "flips (↑ up, ↓ down), the perturbation's norm, the clean prediction's top labels' confidences "
                "before → after, and how many other labels flipped.",
                png,
            )
        )
    return figs


def table7_sections(store: ResultsStore, spec: StudySpec, out: str | Path) -> list[Section]:
    """The report section of the Table VII stage (tables under ``out/tables``, figures under ``out/figures``);
    ``[]`` when the store has no Table VII artefact."""
    out = Path(out)
    found = table7_results(store, spec)
    if not found:
        return []
    dataset = store.get_artefact("", "dataset") or {}
    names = list(dataset.get("label_names", []))
    tables, figures, notes = [], [], []
    for name, results in found.items():
        first = next(iter(results.values()))
        n, norm = first["num_samples"], _norm_name(first["norm"])
        title = (
            f"{name}: flips per sample over {n} samples; each column's budget is the {norm} norm each baseline "
            "example needed (mean ± std in the header), given to every method per sample (Table VII)"
        )
        table = table7_table(results, title=title)
        (out / "tables").mkdir(parents=True, exist_ok=True)
        (out / "tables" / f"{name}-table7.md").write_text(to_markdown(table, norm=first["norm"]) + "\n")
        (out / "tables" / f"{name}-table7.csv").write_text(to_csv(table))
        (out / "tables" / f"{name}-table7.tex").write_text(to_latex(table, norm=first["norm"]) + "\n")
        tables.append(Table(title, to_html(table, norm=first["norm"])))
        notes += [f"{name}: " + line for line in _notes(results)]
        info = store.get_artefact(name, "model") or {}
        threshold = np.asarray(info.get("threshold", 0.5), dtype=float)
        figures += _figures(name, results, threshold, names, out)
    text = (
        "The seed paper's Table VII: each minimum-norm baseline (ML-CW, ML-DeepFool, MLA-LP) attacks the samples "
        "without a budget (target: flip every label); then each budgeted method (BCE = MI-FGSM with the BCE loss, "
        f"the paper's 'MI-FGSM'; SLAM) attacks the same samples at eps = the {norm} norm the baseline's example "
        "of that sample needed, so every column compares attacks at equal perturbation size. The reference row is "
        "the baselines' own examples; † marks a method whose flips differ from them significantly (paired two-sided "
        "t-test on the same samples, Holm-corrected across the table); Total sums the flips over the baseline "
        "columns. The paper (Q2L, MS-COCO, 80 labels): MI-FGSM and SLAM flip more labels than ML-DeepFool and "
        "MLA-LP at their norms, and ML-CW needs far larger perturbations (L∞ 0.32) for a few more flips.\n\n"
        + "\n".join(notes)
    )
    return [Section(title="Table VII: budgeted attacks at the baselines' norms", text=text, tables=tables,
                    figures=figures)]  # fmt: skip
