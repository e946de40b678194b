"""Turn a study's results store into statistics, tables (Markdown, CSV, LaTeX), figures and one HTML report.

Data flow: ``<output>/results.sqlite`` (rows, manifest, artefacts) -> :func:`study_tables` (per model,
:func:`labelflip.report.statistics.compare_methods`) -> tables and figures -> :func:`labelflip.report.html.
render_report`. The report reads **only** the store: it runs no model and no attack (the adversarial examples
were stored by the runner with the unit they belong to). Everything is written under ``<output>/``:
``tables/<model>.{md,csv,tex}``, ``figures/<model>-*.{png,svg}`` and ``report.html``.

Stochastic methods (random subsets) ran once per seed; their per-sample flips are averaged over the seeds
before the paired test (still paired by sample).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from labelflip._validation import fail
from labelflip.analysis import Attackability, Correlations, Profile
from labelflip.attacks import attack_info
from labelflip.report.figures import (
    plot_adversarial_grid,
    plot_attackability,
    plot_confidence_histograms,
    plot_correlations,
    plot_flips_vs_budget,
    plot_profile,
)
from labelflip.report.html import Figure, Section, Table, render_report
from labelflip.report.statistics import StudyTable, compare_methods
from labelflip.report.tables import attackability_html, to_csv, to_html, to_latex, to_markdown
from labelflip.study.spec import StudySpec, spec_from_dict
from labelflip.study.store import ResultsStore, decode_array

__all__ = ["GUIDE", "build_report", "open_study", "study_tables"]

TABLE_CAPTION = "Flips per method and budget (the layout of the paper's Tables IV-VI)"

log = logging.getLogger(__name__)

GUIDE = """This report shows how many labels each attack flips on the study's samples, for each model and budget.
A flip is a label whose prediction (confidence > threshold) differs from the clean prediction; the maximum is the
number of labels K. Budgets are L-inf (or L2) radii in pixel units; when given as fractions they are fractions of
the model's eps_max, the budget at which its flip profile saturates.

Tables follow the layout of the seed paper's Tables IV-VI: rows are methods, columns budgets, cells the mean ±
population standard deviation (ddof = 0) of flips per sample, and Total the sum of the column means. Each method is
compared with the baseline on the same samples by a paired two-sided t-test, Holm-corrected across the table;
† marks a significant difference, bold the best method of a column where that is significant. The CSV tables add
95 % confidence intervals, effect sizes (Cohen's d_z) and the raw and adjusted p-values.

Figures: flips against the budget with ± std bands; confidence histograms before and after the attack (labels to
flip up and down separately, threshold dashed); the flip profile with its fitted polynomial; the label correlation
heatmaps next to the training co-occurrence; adversarial examples with the amplified perturbation and the flipped
labels. Every per-sample result is in results.sqlite (export with `labelflip study export`)."""


def open_study(out: str | Path) -> tuple[ResultsStore, StudySpec]:
    """The store of a study directory and the spec it was run with (from its manifest)."""
    db = Path(out) / "results.sqlite"
    if not db.is_file():
        raise fail("build_report", "out", "a study output directory with results.sqlite", str(out))
    store = ResultsStore(db, readonly=True)
    manifest = store.manifest()
    if "spec" not in manifest:
        store.close()
        raise fail("build_report", "out", "a study directory with stored results", str(out), "run the study first.")
    return store, spec_from_dict(manifest["spec"])


def _columns(spec: StudySpec, budgets: list[float]) -> list[str]:
    if "fractions" in spec.budgets:
        return [f"{f * 100:g}%" for f in spec.budgets["fractions"]]
    return [f"{e:.4g}" for e in budgets]


def study_tables(store: ResultsStore, spec: StudySpec) -> dict[str, StudyTable]:
    """One :class:`StudyTable` per model from the stored per-sample flips."""
    tables: dict[str, StudyTable] = {}
    for entry in spec.models:
        info = store.get_artefact(entry.name, "model")
        if info is None:
            raise fail("study_tables", "store", f"results for model {entry.name!r}", str(store.path), "run the study.")
        flips: dict[str, np.ndarray] = {}
        for method in spec.method_specs:
            seeds = spec.seeds if attack_info(method)["stochastic"] else spec.seeds[:1]
            flips[method.label] = np.mean([store.array(entry.name, str(method), s) for s in seeds], axis=0)
        eps = ", ".join(f"{e:.4g}" for e in info["budgets"])
        n = spec.samples["count"]
        title = f"{entry.name}: mean ± std flips over {n} samples ({spec.norm}; eps = {eps})"
        tables[entry.name] = compare_methods(
            flips, _columns(spec, info["budgets"]), baseline=spec.baseline_label, title=title
        )
    return tables


def _examples_figure(
    store: ResultsStore, spec: StudySpec, model: str, budget_index: int, label_names: list[str], path: Path
) -> Path | None:
    """The stored adversarial examples of ``model`` at one budget, with the labels their attack flipped."""
    ex = store.get_artefact(model, "examples")
    if ex is None:
        return None
    clean, adv = decode_array(ex["clean"]), decode_array(ex["adv"])[budget_index]
    threshold = np.asarray(store.get_artefact(model, "model")["threshold"], dtype=np.float32)
    clean_conf, adv_conf = store.confidences(model, ex["method"], spec.seeds[0], budget_index)
    label = next(m.label for m in spec.method_specs if str(m) == ex["method"])
    eps = store.get_artefact(model, "model")["budgets"][budget_index]
    flipped, titles = [], []
    for i in range(clean.shape[0]):
        before, after = clean_conf[i] > threshold, adv_conf[i] > threshold
        up = [label_names[j] for j in np.flatnonzero(~before & after)]
        down = [label_names[j] for j in np.flatnonzero(before & ~after)]
        flipped.append((up, down))
        titles.append(f"{label}, eps = {eps:.4f}: {len(up) + len(down)} flips")
    png, _svg = plot_adversarial_grid(clean, adv, flipped, path, titles=titles, formats=("png", "svg"))
    return png


def _model_section(store: ResultsStore, spec: StudySpec, name: str, table: StudyTable, out: Path) -> Section:
    figdir = out / "figures"
    info = store.get_artefact(name, "model")
    dataset = store.get_artefact("", "dataset") or {}
    label_names = list(dataset.get("label_names", []))
    budgets = info["budgets"]
    (out / "tables" / f"{name}.md").write_text(to_markdown(table) + "\n")
    (out / "tables" / f"{name}.csv").write_text(to_csv(table))
    (out / "tables" / f"{name}.tex").write_text(to_latex(table) + "\n")
    cols = table.columns[:-1]
    means = {m: [table.cells[m][c].mean for c in cols] for m in table.methods}
    stds = {m: [table.cells[m][c].std_pop for c in cols] for m in table.methods}
    xlabel = "eps (L-inf)" if spec.norm == "linf" else "eps (L2)"
    png, _svg = plot_flips_vs_budget(
        budgets, means, stds, figdir / f"{name}-flips.png", budget_labels=cols, xlabel=xlabel, formats=("png", "svg")
    )
    figs = [Figure("Mean flips against the budget (band = ± population std).", png)]
    mid = min(2, len(cols) - 1)  # the 20 % budget of the paper's grid
    clean, adv = store.confidences(name, spec.baseline, spec.seeds[0], mid)
    target = (clean <= np.asarray(info["threshold"], dtype=np.float32)).astype(np.float32)  # 1 - clean prediction
    hist, _ = plot_confidence_histograms(
        clean,
        adv,
        target,
        figdir / f"{name}-confidences.png",
        title=f"{table.baseline} at {cols[mid]}",
        formats=("png", "svg"),
    )
    figs.append(Figure(f"Confidences before and after the {table.baseline} attack at {cols[mid]} (Fig. 2).", hist))
    prof = Profile.from_dict(store.get_artefact(name, "profile"))
    png, _svg = plot_profile(prof, figdir / f"{name}-profile.png", formats=("png", "svg"))
    figs.append(Figure("Flip profile: probe points and fitted polynomial (Fig. 20).", png))
    corr_data = store.get_artefact(name, "correlations")
    if corr_data is not None:
        cooc = np.asarray(dataset["cooccurrence"]) if "cooccurrence" in dataset else None
        png, _svg = plot_correlations(
            Correlations.from_dict(corr_data),
            figdir / f"{name}-correlations.png",
            cooccurrence=cooc,
            formats=("png", "svg"),
        )
        figs.append(Figure("Label correlations next to the training co-occurrence (Fig. 5, 14).", png))
    att_tables = []
    att_data = store.get_artefact(name, "attackability")
    if att_data is not None:
        att = Attackability.from_dict(att_data)
        png, _svg = plot_attackability(att, figdir / f"{name}-attackability.png", formats=("png", "svg"))
        figs.append(Figure(f"Per-label attackability at eps = {att.eps:g} (Fig. 4).", png))
        caption = f"Per-label attackability correlations at eps = {att.eps:g} (Table II; * = p > 0.05)."
        att_tables.append(Table(caption, attackability_html(att)))
    if int(spec.report.get("examples", 4)) > 0:
        grid = _examples_figure(store, spec, name, mid, label_names, figdir / f"{name}-examples.png")
        if grid is not None:
            figs.append(
                Figure("Adversarial examples: clean, adversarial, amplified perturbation, flips (Fig. 1).", grid)
            )
    text = (
        f"Flip profile: eps_max = {prof.eps_max:.5f} ({prof.stop_reason}), E(eps_max) = "
        f"{prof.flips[-1]:.2f} of {prof.num_labels} labels. Budgets: "
        + ", ".join(f"{c} = {e:.5f}" for c, e in zip(cols, budgets, strict=True))
        + ".\n\n"
        + "\n".join(table.notes)
    )
    return Section(
        title=f"Model {name}", text=text, tables=[Table(TABLE_CAPTION, to_html(table)), *att_tables], figures=figs
    )


def build_report(out: str | Path) -> Path:
    """Write tables, figures and ``report.html`` for the study in ``out``; returns the report's path."""
    out = Path(out)
    (out / "tables").mkdir(exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    store, spec = open_study(out)
    with store:
        manifest = {k: v for k, v in store.manifest().items() if k != "spec"}
        tables = study_tables(store, spec)
        sections = [_model_section(store, spec, entry.name, tables[entry.name], out) for entry in spec.models]
    path = render_report(
        out / "report.html", title=f"labelflip study: {spec.name}", manifest=manifest, sections=sections, guide=GUIDE
    )
    log.info("report written to %s", path)
    return path
