"""Turn a finished study into statistics, tables (Markdown, CSV, LaTeX), figures and one HTML report.

Data flow: results store -> :func:`labelflip.report.statistics.compare_methods` (per model) -> tables and
figures -> :func:`labelflip.report.html.render_report`. Everything is written under ``<output>/``:
``tables/<model>.{md,csv,tex}``, ``figures/<model>-*.{png,svg}`` and ``report.html``.

Stochastic methods (random subsets) ran once per seed; their per-sample flips are averaged over the seeds
before the paired test (still paired by sample).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from labelflip.attacks.result import count_flips
from labelflip.data import cooccurrence_matrix
from labelflip.methods import build_attack
from labelflip.plots import plot_attackability, plot_correlations, plot_profile
from labelflip.report.figures import plot_adversarial_grid, plot_confidence_histograms, plot_flips_vs_budget
from labelflip.report.html import Figure, Section, Table, render_report
from labelflip.report.statistics import StudyTable, compare_methods
from labelflip.report.tables import to_csv, to_html, to_latex, to_markdown
from labelflip.study.runner import StudyContext
from labelflip.study.store import ResultsStore

__all__ = ["GUIDE", "build_report", "study_tables"]

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


def _columns(ctx: StudyContext, model: str) -> list[str]:
    if "fractions" in ctx.spec.budgets:
        return [f"{f * 100:g}%" for f in ctx.spec.budgets["fractions"]]
    return [f"{e:.4g}" for e in ctx.budgets[model]]


def study_tables(ctx: StudyContext, store: ResultsStore) -> dict[str, StudyTable]:
    """One :class:`StudyTable` per model from the stored per-sample flips."""
    tables: dict[str, StudyTable] = {}
    for entry in ctx.spec.models:
        flips: dict[str, np.ndarray] = {}
        for method in ctx.spec.method_specs:
            seeds = ctx.spec.seeds if method.kind == "random" else ctx.spec.seeds[:1]
            flips[method.label] = np.mean([store.array(entry.name, str(method), s) for s in seeds], axis=0)
        eps = ", ".join(f"{e:.4g}" for e in ctx.budgets[entry.name])
        title = f"{entry.name}: mean ± std flips over {ctx.x.shape[0]} samples ({ctx.spec.norm}; eps = {eps})"
        tables[entry.name] = compare_methods(
            flips, _columns(ctx, entry.name), baseline=ctx.spec.baseline_label, title=title
        )
    return tables


def _adversarial_examples(ctx: StudyContext, model_name: str, budget_index: int, path: Path) -> Path:
    """Re-run SLAM (else the first method) on a few samples at one budget, keeping the images, and draw them."""
    spec = ctx.spec
    n = min(int(spec.report.get("examples", 4)), ctx.x.shape[0])
    model = ctx.models[model_name]
    method = next((m for m in spec.method_specs if m.kind == "slam"), spec.method_specs[0])
    attack = build_attack(
        method,
        model,
        profile=ctx.profiles[model_name],
        correlations=ctx.correlations[model_name],
        seed=spec.seeds[0],
        norm=spec.norm,
        return_adv=True,
    )
    res = attack(ctx.x[:n], [ctx.budgets[model_name][budget_index]])
    flipped = []
    for i in range(n):
        up = (~res.clean_pred[i] & res.adv_pred[0, i]).nonzero().flatten().tolist()
        down = (res.clean_pred[i] & ~res.adv_pred[0, i]).nonzero().flatten().tolist()
        flipped.append(([ctx.label_names[j] for j in up], [ctx.label_names[j] for j in down]))
    titles = [
        f"{method.label}, eps = {ctx.budgets[model_name][budget_index]:.4f}: {int(f)} flips"
        for f in count_flips(res.clean_pred, res.adv_pred[0])[0]
    ]
    png, _svg = plot_adversarial_grid(
        ctx.x[:n].numpy(), res.x_adv[0].numpy(), flipped, path, titles=titles, formats=("png", "svg")
    )
    return png


def build_report(ctx: StudyContext) -> Path:
    """Write tables, figures and ``report.html`` for a finished study; returns the report's path."""
    out = ctx.out
    (out / "tables").mkdir(exist_ok=True)
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    sections: list[Section] = []
    with ResultsStore(out / "results.sqlite") as store:
        manifest = {k: v for k, v in store.manifest().items() if k != "spec"}
        tables = study_tables(ctx, store)
        for entry in ctx.spec.models:
            name = entry.name
            table = tables[name]
            (out / "tables" / f"{name}.md").write_text(to_markdown(table) + "\n")
            (out / "tables" / f"{name}.csv").write_text(to_csv(table))
            (out / "tables" / f"{name}.tex").write_text(to_latex(table) + "\n")
            cols = table.columns[:-1]
            means = {m: [table.cells[m][c].mean for c in cols] for m in table.methods}
            stds = {m: [table.cells[m][c].std_pop for c in cols] for m in table.methods}
            figs = []
            xlabel = "eps (L-inf)" if ctx.spec.norm == "linf" else "eps (L2)"
            png, _svg = plot_flips_vs_budget(
                ctx.budgets[name],
                means,
                stds,
                figdir / f"{name}-flips.png",
                budget_labels=cols,
                xlabel=xlabel,
                formats=("png", "svg"),
            )
            figs.append(Figure("Mean flips against the budget (band = ± population std).", png))
            mid = min(2, len(cols) - 1)  # the 20 % budget of the paper's grid
            baseline = ctx.spec.baseline
            clean, adv = store.confidences(name, baseline, ctx.spec.seeds[0], mid)
            target = (clean <= ctx.models[name].threshold.cpu().numpy()).astype(np.float32)  # 1 - clean prediction
            title = f"{table.baseline} at {cols[mid]}"
            hist, _ = plot_confidence_histograms(
                clean, adv, target, figdir / f"{name}-confidences.png", title=title, formats=("png", "svg")
            )
            figs.append(
                Figure(f"Confidences before and after the {table.baseline} attack at {cols[mid]} (Fig. 2).", hist)
            )
            plot_profile(ctx.profiles[name], figdir / f"{name}-profile.svg")
            figs.append(
                Figure(
                    "Flip profile: probe points and fitted polynomial (Fig. 20).",
                    plot_profile(ctx.profiles[name], figdir / f"{name}-profile.png"),
                )
            )
            corr = ctx.correlations[name]
            if corr is not None:
                cooc = cooccurrence_matrix(ctx.train_labels)
                plot_correlations(corr, figdir / f"{name}-correlations.svg", cooccurrence=cooc)
                heat = plot_correlations(corr, figdir / f"{name}-correlations.png", cooccurrence=cooc)
                figs.append(Figure("Label correlations next to the training co-occurrence (Fig. 5, 14).", heat))
            att = ctx.attackability.get(name)
            att_tables = []
            if att is not None:
                plot_attackability(att, figdir / f"{name}-attackability.svg")
                bars = plot_attackability(att, figdir / f"{name}-attackability.png")
                figs.append(Figure(f"Per-label attackability at eps = {att.eps:g} (Fig. 4).", bars))
                att_tables.append(
                    Table(
                        f"Per-label attackability correlations at eps = {att.eps:g} (Table II; * = p > 0.05).",
                        att.table_html(),
                    )
                )
            if int(ctx.spec.report.get("examples", 4)) > 0:
                grid = _adversarial_examples(ctx, name, mid, figdir / f"{name}-examples.png")
                figs.append(
                    Figure("Adversarial examples: clean, adversarial, amplified perturbation, flips (Fig. 1).", grid)
                )
            prof = ctx.profiles[name]
            text = (
                f"Flip profile: eps_max = {prof.eps_max:.5f} ({prof.stop_reason}), E(eps_max) = "
                f"{prof.flips[-1]:.2f} of {prof.num_labels} labels. Budgets: "
                + ", ".join(f"{c} = {e:.5f}" for c, e in zip(cols, ctx.budgets[name], strict=True))
                + ".\n\n"
                + "\n".join(table.notes)
            )
            sections.append(
                Section(
                    title=f"Model {name}",
                    text=text,
                    tables=[Table(TABLE_CAPTION, to_html(table)), *att_tables],
                    figures=figs,
                )
            )
    path = render_report(
        out / "report.html",
        title=f"labelflip study: {ctx.spec.name}",
        manifest=manifest,
        sections=sections,
        guide=GUIDE,
    )
    log.info("report written to %s", path)
    return path
