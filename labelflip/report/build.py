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
from labelflip.report.ensemble import ensemble_sections
from labelflip.report.figures import (
    plot_adversarial_grid,
    plot_attackability,
    plot_confidence_histograms,
    plot_correlations,
    plot_flips_vs_budget,
    plot_profile,
)
from labelflip.report.html import Figure, Section, Table, render_report
from labelflip.report.marks import full_subset_cells
from labelflip.report.quality import quality_html, quality_markdown, quality_table
from labelflip.report.robust import build_robust_report, is_robust_study
from labelflip.report.statistics import StudyTable, compare_methods
from labelflip.report.table7 import table7_sections
from labelflip.report.tables import attackability_html, eps_text, to_csv, to_html, to_latex, to_markdown
from labelflip.study.spec import StudySpec, spec_from_dict
from labelflip.study.store import ResultsStore, decode_array

__all__ = ["GUIDE", "build_report", "open_study", "study_tables"]

TABLE_CAPTION = "Flips per method and budget (the layout of the paper's Tables IV-VI)"

log = logging.getLogger(__name__)

GUIDE = """This report shows how many labels each attack flips on the study's samples, for each model and budget.
A flip is a label whose prediction (confidence > threshold) differs from the clean prediction; the maximum is the
number of labels K. Budgets are L-inf (or L2) radii in pixel units (pixel values in [0, 1]); L-inf budgets are also
given in the usual n/255 (8/255 = 0.0314). When the study gives budgets as fractions (5%, 10%, ...) they are fractions
of the model's eps_max, the budget at which its flip profile saturates; eps_max depends on the probe images, so it is
reported with the probe size n (and its bootstrap interval when the profile has one), and every table header and
figure axis gives the absolute eps as well.

Tables follow the layout of the seed paper's Tables IV-VI: rows are methods, columns budgets, cells the mean ±
population standard deviation (ddof = 0) of flips per sample. Total is the per-sample sum over the budget columns,
so its mean is the sum of the column means: a summary of a method over the whole grid, not a budget. Each method is
compared with the baseline on the same samples by a paired two-sided t-test, Holm-corrected across the table;
† marks a significant difference, bold the best method of a column where that is significant, and * a cell where a
subset attack (CLASS, random subsets) targets every label (k = K from the flip profile), so it is exactly the
baseline there (the paper's *). The CSV tables add 95 % confidence intervals, effect sizes (Cohen's d_z), the raw
and adjusted p-values, the absolute eps and the * flag. A second table per model gives its quality against the
ground truth (mAP, micro- and macro-F1), clean and under each attack and budget.

Figures: mean flips against the absolute budget (top axis: % of eps_max; band: ± population std; dotted line: K);
confidence histograms before and after the attack (labels to flip up and down separately, threshold dashed, shared
count axis per row); the flip profile with its fitted polynomial; the label correlation heatmaps (rows: attacked
label, columns: affected label) next to the training co-occurrence; per-label attackability with the number of
images behind each bar; adversarial examples with the amplified perturbation, the ground truth, the clean
prediction and the flipped labels. Every per-sample result is in results.sqlite (export with `labelflip study
export`)."""


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


def _seeds(spec: StudySpec, method: object) -> list[int]:
    return spec.seeds if attack_info(method)["stochastic"] else spec.seeds[:1]


def _method_flips(store: ResultsStore, spec: StudySpec, model: str) -> dict[str, np.ndarray]:
    """Method label -> per-sample flips ``(B, N)`` (stochastic methods: mean over the seeds)."""
    return {
        m.label: np.mean([store.array(model, str(m), s) for s in _seeds(spec, m)], axis=0) for m in spec.method_specs
    }


def study_tables(store: ResultsStore, spec: StudySpec) -> dict[str, StudyTable]:
    """One :class:`StudyTable` per model from the stored per-sample flips."""
    tables: dict[str, StudyTable] = {}
    for entry in spec.models:
        info = store.get_artefact(entry.name, "model")
        if info is None:
            raise fail("study_tables", "store", f"results for model {entry.name!r}", str(store.path), "run the study.")
        flips = _method_flips(store, spec, entry.name)
        n = spec.samples["count"]
        title = f"{entry.name}: mean ± std flips per sample over {n} samples ({spec.norm})"
        chosen = [
            f"{m.label} chose γ = {g['gamma']:g} on held-out samples"
            for m in spec.method_specs
            if (g := store.get_artefact(entry.name, f"gamma:{m}")) is not None
        ]
        if chosen:
            title += "; " + "; ".join(chosen)
        tables[entry.name] = compare_methods(
            flips, _columns(spec, info["budgets"]), baseline=spec.baseline_label, title=title
        )
    return tables


def _examples_figure(
    store: ResultsStore,
    spec: StudySpec,
    model: str,
    budget_index: int,
    column: str,
    label_names: list[str],
    labels: np.ndarray | None,
    path: Path,
) -> tuple[Path, str] | None:
    """The stored adversarial examples of ``model`` at one budget with ground truth, clean prediction and flips;
    examples with 0 flips are left out (and counted in the caption) unless every one has 0 flips."""
    ex = store.get_artefact(model, "examples")
    if ex is None:
        return None
    clean, adv = decode_array(ex["clean"]), decode_array(ex["adv"])[budget_index]
    info = store.get_artefact(model, "model")
    threshold = np.asarray(info["threshold"], dtype=np.float32)
    clean_conf, adv_conf = store.confidences(model, ex["method"], spec.seeds[0], budget_index)
    label = next(m.label for m in spec.method_specs if str(m) == ex["method"])
    eps = info["budgets"][budget_index]
    names = label_names if len(label_names) == clean_conf.shape[1] else [str(j) for j in range(clean_conf.shape[1])]
    rows = []
    for i, s in enumerate(ex.get("sample_index", range(clean.shape[0]))):
        before, after = clean_conf[s] > threshold, adv_conf[s] > threshold
        rows.append(
            {
                "i": i,
                "name": f"sample {s}",
                "up": [names[j] for j in np.flatnonzero(~before & after)],
                "down": [names[j] for j in np.flatnonzero(before & ~after)],
                "pred": [names[j] for j in np.flatnonzero(before)],
                "truth": [names[j] for j in np.flatnonzero(labels[s] > 0.5)] if labels is not None else None,
            }
        )
    shown = [r for r in rows if r["up"] or r["down"]] or rows
    keep = [r["i"] for r in shown]
    png, _svg = plot_adversarial_grid(
        clean[keep],
        adv[keep],
        [(r["up"], r["down"]) for r in shown],
        path,
        titles=[r["name"] for r in shown],
        truth=[r["truth"] for r in shown] if labels is not None else None,
        predicted=[r["pred"] for r in shown],
        title=f"{model}: {label} at {column}, eps = {eps_text(eps, spec.norm)}",
        eps_label="/255" if spec.norm == "linf" else None,
        formats=("png", "svg"),
    )
    caption = (
        f"Adversarial examples of {label} at {column} (eps = {eps_text(eps, spec.norm)}): clean image, adversarial "
        "image, amplified perturbation, then the ground truth, the clean prediction and the flipped labels (+ flipped "
        "up, − flipped down) (Fig. 1)."
    )
    skipped = len(rows) - len(shown)
    if skipped:
        caption += f" {skipped} of the {len(rows)} stored examples had 0 flips at this budget and are not shown."
    elif not any(r["up"] or r["down"] for r in rows):
        caption += " No stored example has a flip at this budget (each is marked 'prediction unchanged')."
    if labels is None:
        caption += " Ground truth: not in this study's store (studies run by older labelflip versions lack it)."
    return png, caption


def _quality(store: ResultsStore, spec: StudySpec, name: str, info: dict, cols: list[str], out: Path) -> Table:
    """The model-quality table (also written to ``tables/<model>-quality.md``), or a note without ground truth."""
    labels = (store.get_artefact("", "dataset") or {}).get("labels")
    reference = {k: float(v) for k, v in (info.get("metrics") or {}).items()}
    if labels is None:
        ref = ", ".join(f"{k} = {v:.3f}" for k, v in reference.items() if k != "train_seconds") or "none recorded"
        note = (
            f"Model quality of {name}: no ground truth for the samples in this study's store (older labelflip "
            f"versions did not store it; rerun into a new directory to add it). Recorded with the model: {ref}."
        )
        return Table(note, '<p class="note">(no ground truth stored)</p>')
    clean, _ = store.confidences(name, spec.baseline, spec.seeds[0], 0)
    adversarial = {
        m.label: [[store.confidences(name, str(m), s, b)[1] for b in range(len(cols))] for s in _seeds(spec, m)]
        for m in spec.method_specs
    }
    y = np.asarray(labels, dtype=np.float64)
    threshold = np.asarray(info["threshold"], dtype=np.float64)
    qt = quality_table(
        name, clean, adversarial, y, threshold, columns=cols, eps=info["budgets"], norm=spec.norm, reference=reference
    )
    (out / "tables" / f"{name}-quality.md").write_text(quality_markdown(qt))
    return Table(
        f"Model quality of {name} against the ground truth, clean and under attack. {qt.note}", quality_html(qt)
    )


def _model_section(store: ResultsStore, spec: StudySpec, name: str, table: StudyTable, out: Path) -> Section:
    figdir = out / "figures"
    info = store.get_artefact(name, "model")
    dataset = store.get_artefact("", "dataset") or {}
    label_names = list(dataset.get("label_names", []))
    budgets = info["budgets"]
    cols = table.columns[:-1]
    prof_data = store.get_artefact(name, "profile")
    prof = Profile.from_dict(prof_data)
    flips = _method_flips(store, spec, name)
    stars, star_notes = full_subset_cells(spec.method_specs, spec.baseline_label, prof, budgets, cols, flips)
    kw = {"eps": budgets, "stars": stars}
    (out / "tables" / f"{name}.md").write_text(to_markdown(table, norm=spec.norm, **kw) + "\n")
    (out / "tables" / f"{name}.csv").write_text(to_csv(table, **kw))
    (out / "tables" / f"{name}.tex").write_text(to_latex(table, norm=spec.norm, **kw) + "\n")
    quality = _quality(store, spec, name, info, cols, out)
    means = {m: [table.cells[m][c].mean for c in cols] for m in table.methods}
    stds = {m: [table.cells[m][c].std_pop for c in cols] for m in table.methods}
    starred = sorted({c for cs in stars.values() for c in cs}, key=cols.index)
    fig_notes = (
        [f"At {', '.join(starred)} the subset attacks target every label (k = K) and coincide with {table.baseline}."]
        if starred
        else []
    )
    n = spec.samples["count"]
    png, _svg = plot_flips_vs_budget(
        budgets,
        means,
        stds,
        figdir / f"{name}-flips.png",
        norm=spec.norm,
        eps_max=prof.eps_max,
        num_labels=prof.num_labels,
        band="± population std",
        title=f"{name}: mean flips per sample ({n} samples, K = {prof.num_labels})",
        notes=fig_notes,
        formats=("png", "svg"),
    )
    figs = [
        Figure(
            f"{name}: mean flips per sample against the absolute budget (bottom axis; top axis: % of eps_max), one "
            f"line per method; band = ± population std (ddof = 0) over the {n} samples; dotted line: K = "
            f"{prof.num_labels}. Methods whose lines coincide are named in the note beside the legend.",
            png,
        )
    ]
    mid = min(2, len(cols) - 1)  # the 20 % budget of the paper's grid
    clean, adv = store.confidences(name, spec.baseline, spec.seeds[0], mid)
    threshold = np.asarray(info["threshold"], dtype=np.float32)
    target = (clean <= threshold).astype(np.float32)  # 1 - clean prediction
    mid_eps = eps_text(budgets[mid], spec.norm)
    hist, _ = plot_confidence_histograms(
        clean,
        adv,
        target,
        figdir / f"{name}-confidences.png",
        threshold=float(threshold.mean()) if threshold.size else 0.5,
        title=f"{name}: {table.baseline} at {cols[mid]} (eps = {mid_eps}), {clean.shape[0]} samples",
        formats=("png", "svg"),
    )
    figs.append(
        Figure(
            f"Confidences of all labels of the {clean.shape[0]} samples before and after the {table.baseline} attack "
            f"at {cols[mid]} (eps = {mid_eps}); rows: labels to flip up / down; both panels of a row share the count "
            "axis (Fig. 2).",
            hist,
        )
    )
    ci = prof_data.get("eps_max_ci") or getattr(prof, "eps_max_ci", None)
    png, _svg = plot_profile(prof, figdir / f"{name}-profile.png", eps_max_ci=ci, formats=("png", "svg"))
    figs.append(
        Figure(
            f"Flip profile of {name} on {prof.num_samples} probe images: probe points, fitted polynomial and eps_max "
            "(Fig. 20).",
            png,
        )
    )
    corr_data = store.get_artefact(name, "correlations")
    if corr_data is not None:
        corr = Correlations.from_dict(corr_data)
        cooc = np.asarray(dataset["cooccurrence"]) if "cooccurrence" in dataset else None
        png, _svg = plot_correlations(
            corr,
            figdir / f"{name}-correlations.png",
            cooccurrence=cooc,
            label_names=label_names or None,
            title=f"{name}: label correlations (eps = {corr.eps:.4g}, {corr.num_samples} images)",
            formats=("png", "svg"),
        )
        measured = (
            " The measured flip-down panel is the raw mean confidence change of each label when the row label alone "
            "is attacked downward on images that contain it (not normalised; blank rows: no such image); compare its "
            "pattern, not its scale, with 1 - U'."
            if corr.flipdown_measured is not None
            else ""
        )
        figs.append(
            Figure(
                "Label correlations (Fig. 5, 14): row = attacked label, column = affected label; U' = flip-up matrix "
                "(mean confidence change, global min-max normalised), 1 - U' = the flip-down matrix CLASS derives "
                f"from it; the training co-occurrence P(column | row) beside them.{measured}",
                png,
            )
        )
    att_tables = []
    att_data = store.get_artefact(name, "attackability")
    if att_data is not None:
        att = Attackability.from_dict(att_data)
        png, _svg = plot_attackability(
            att,
            figdir / f"{name}-attackability.png",
            title=f"{name}: per-label attackability (eps = {eps_text(att.eps, spec.norm)})",
            formats=("png", "svg"),
        )
        figs.append(
            Figure(
                f"Per-label attackability at eps = {eps_text(att.eps, spec.norm)} (Fig. 4): each label attacked alone "
                "on images where it is absent (flip-up) or present (flip-down) and correctly predicted; bottom panel: "
                "images attacked per label and direction.",
                png,
            )
        )
        caption = f"Per-label attackability correlations at eps = {att.eps:g} (Table II; * = p > 0.05)."
        att_tables.append(Table(caption, attackability_html(att)))
    if int(spec.report.get("examples", 4)) > 0:
        labels = dataset.get("labels")
        grid = _examples_figure(
            store,
            spec,
            name,
            mid,
            cols[mid],
            label_names,
            np.asarray(labels) if labels is not None else None,
            figdir / f"{name}-examples.png",
        )
        if grid is not None:
            figs.append(Figure(grid[1], grid[0]))
    e_max = float(np.interp(prof.eps_max, prof.eps, prof.flips)) if prof.eps else float("nan")
    ci_text = f", 95% bootstrap CI [{ci[0]:.4g}, {ci[1]:.4g}]" if ci is not None else ""
    budget_text = ", ".join(f"{c} = {eps_text(e, spec.norm)}" for c, e in zip(cols, budgets, strict=True))
    text = (
        f"Flip profile: eps_max = {eps_text(prof.eps_max, spec.norm)} ({prof.stop_reason}; probe size n = "
        f"{prof.num_samples} images{ci_text}), E(eps_max) = {e_max:.2f} of K = {prof.num_labels} labels. eps_max "
        "moves with the probe images, and the fractional budgets move with it. Budgets: "
        + budget_text
        + ".\n\n"
        + "\n".join([*table.notes, *star_notes])
    )
    tables = [Table(TABLE_CAPTION, to_html(table, norm=spec.norm, **kw)), quality, *att_tables]
    return Section(title=f"Model {name}", text=text, tables=tables, figures=figs)


def build_report(out: str | Path) -> Path:
    """Write tables, figures and ``report.html`` for the study in ``out``; returns the report's path."""
    out = Path(out)
    if is_robust_study(out):  # `kind: robust` (the SAE paper's Tables 2-4): report/robust.py
        return build_robust_report(out)
    (out / "tables").mkdir(exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    store, spec = open_study(out)
    with store:
        manifest = {k: v for k, v in store.manifest().items() if k != "spec"}
        tables = study_tables(store, spec)
        sections = [_model_section(store, spec, entry.name, tables[entry.name], out) for entry in spec.models]
        sections += ensemble_sections(store, spec, out)  # worst-case studies only (report/ensemble.py)
        sections += table7_sections(store, spec, out)  # studies with a `compare` stage only (report/table7.py)
    path = render_report(
        out / "report.html", title=f"labelflip study: {spec.name}", manifest=manifest, sections=sections, guide=GUIDE
    )
    log.info("report written to %s", path)
    return path
