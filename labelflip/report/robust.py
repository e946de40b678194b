"""The report of a robust study (SAE paper, seed 004, §5): Tables 2-4 (and the Fig. 1 demo table) with their
figures, from the study's results store only (no model is run).

* **Table 2**: GASE ``C_a`` and SAE (mean and median over the test samples) for each nuclear-norm strength;
  Spearman between SAE and GASE across the strengths (exact permutation p-value, as few models are compared) and
  over every test instance of every strength (asymptotic p-value).
* **Table 3**: clean and attacked Micro/Macro-F1 of each regulariser at the study's two budgets (best attacked
  value of each column bold).
* **Table 4**: ``phi_align`` and clean/attacked F1 over the ARM-SAE strength lambda.
* **Fig. 1 table** (``fig1``): undefended and regularised models on synthetic data with weakly and strongly
  correlated labels: ``phi_align``, SAE and GASE.

Written under ``<output>/``: ``tables/robust-<table>.{md,csv,tex}``, ``figures/robust-*.{png,svg}`` and
``report.html``. With several seeds each cell is the mean over seeds ``± std`` (population).
"""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from labelflip._validation import fail
from labelflip.report.figures.robust import plot_sae_vs_gase, plot_tradeoff
from labelflip.report.html import Figure, Section, Table, render_report
from labelflip.report.robust_tables import ScalarTable, scalar_csv, scalar_html, scalar_latex, scalar_markdown
from labelflip.study.robust_plan import BUDGETS_KIND, UNIT_KIND, gase_component, table_eps, table_units
from labelflip.study.robust_spec import RobustSpec, regulariser_label, spec_from_manifest
from labelflip.study.store import ResultsStore

__all__ = ["GUIDE", "build_robust_report", "is_robust_study", "open_robust_study", "robust_tables"]

log = logging.getLogger(__name__)
_OWNER = "build_robust_report"

GUIDE = """This report reproduces the evaluation of "Characterizing the evasion attackability of multi-label
classifiers via attack transferability" (SAE paper, §5) on one dataset. Every number comes from the study's store.

SAE is the budget-free Soft Attackability Estimator (Eq. 12, Algorithm 1; y = the clean prediction; margins clamped
at a small delta). Its absolute value depends on the input scale and, per sample, on labels close to the boundary
(1 / margin), so the mean is heavy-tailed; the median is given too. GASE C_a is the mean number of labels flipped
within an L2 budget by Greedy Attack Space Expansion, a reconstruction of the AAAI-21 algorithm (exact min-norm
oracle for linear models, a budgeted attack otherwise). Only rank orders are compared (Spearman), as in the paper.

Micro-F1 and Macro-F1 are against the ground truth, on the clean test samples and under an attack that pushes every
label to its wrong side within each budget. The budgets, their rule and the attack are stated in the first section.
phi_align is the mean |cos| between the rows of the last linear layer (1/m at the least, 1 when all align)."""


_ABOUT = {
    "table2": "Does the budget-free SAE rank the models as the budgeted GASE does? One model per strength of the "
    "nuclear-norm regulariser; the paper reports Spearman CC = 1 on its three datasets (Table 2).",
    "table3": "The six training regimes side by side, clean and under attack at the study's two budgets; the paper "
    "finds every regulariser helps under attack and ARM-SAE helps most (Table 3).",
    "table4": "The trade-off over the ARM-SAE strength λ: the paper finds φ_align and clean F1 falling while attacked "
    "F1 rises (Table 4, Remark 1).",
    "fig1": "The paper's Fig. 1 on data whose label correlation is a knob: aligned decision boundaries (high "
    "φ_align) should make a model more attackable (higher SAE and GASE C_a); ARM-SAE should lower both.",
}


def is_robust_study(out: str | Path) -> bool:
    """Whether ``out`` holds a robust study's store (its manifest says ``kind: robust``)."""
    db = Path(out) / "results.sqlite"
    if not db.is_file():
        return False
    with ResultsStore(db, readonly=True) as store:
        return store.manifest().get("kind") == "robust"


def open_robust_study(out: str | Path) -> tuple[ResultsStore, RobustSpec]:
    """The read-only store of a robust study directory and the spec it ran with."""
    db = Path(out) / "results.sqlite"
    if not db.is_file():
        raise fail(_OWNER, "out", "a study output directory with results.sqlite", str(out), "run the study first.")
    store = ResultsStore(db, readonly=True)
    manifest = store.manifest()
    if manifest.get("kind") != "robust" or store.get_artefact("", BUDGETS_KIND) is None:
        store.close()
        raise fail(_OWNER, "out", "a robust study directory with stored budgets", str(out), "run the study first.")
    return store, spec_from_manifest(manifest["spec"])


def _lam(value: float) -> str:
    return "0" if value == 0 else f"{value:g}"


class _Reader:
    """Unit components of one table, averaged over the seeds."""

    def __init__(self, store: ResultsStore, spec: RobustSpec, budgets: list[float]) -> None:
        self.store, self.spec, self.budgets = store, spec, budgets

    def columns(self, table: str) -> list[tuple[Any, list[dict[str, Any]]]]:
        """``(column value, [unit artefact per seed])`` in table order; a missing unit is an error."""
        groups: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
        for value, unit in table_units(self.spec, table, self.budgets):
            stored = self.store.get_artefact(unit.key, UNIT_KIND)
            if stored is None or not unit.needs <= set(stored):
                raise fail(
                    _OWNER,
                    "store",
                    f"every unit of {table} computed",
                    f"{unit.key} incomplete",
                    "run the study again: it resumes where it stopped.",
                )
            groups.setdefault(repr(value), (value, []))[1].append(stored)
        return list(groups.values())

    @staticmethod
    def stat(units: list[dict[str, Any]], get: Any) -> tuple[float, float]:
        values = np.asarray([float(get(u)) for u in units], dtype=float)
        return float(values.mean()), float(values.std()) if len(values) > 1 else math.nan


def _exact_spearman(a: list[float], b: list[float]) -> tuple[float, float]:
    """Spearman's rho of two short sequences and its exact two-sided permutation p-value (n <= 8)."""
    rho = float(stats.spearmanr(a, b).statistic)
    if len(a) > 8 or math.isnan(rho):
        return rho, float(stats.spearmanr(a, b).pvalue)
    ra, rb = stats.rankdata(a), stats.rankdata(b)
    perms = [float(stats.spearmanr(ra, [rb[i] for i in p]).statistic) for p in itertools.permutations(range(len(b)))]
    return rho, float(np.mean([abs(r) >= abs(rho) - 1e-12 for r in perms]))


def _build(
    reader: _Reader, rows: list[tuple[str, Any]], groups: list[tuple[Any, list[dict[str, Any]]]], **kw: Any
) -> ScalarTable:
    """A table with one column per ``groups`` entry (:meth:`_Reader.columns`) and one row per ``(label, getter)``."""
    table_rows, spread = [], {}
    for label, get in rows:
        cells = [reader.stat(units, get) for _, units in groups]
        table_rows.append((label, [c[0] for c in cells]))
        if len(reader.spec.seeds) > 1:
            spread[label] = [c[1] for c in cells]
    return ScalarTable(rows=table_rows, spread=spread, **kw)


def _f1_rows(budgets: list[float]) -> list[tuple[str, Any]]:
    rows = [
        ("Micro-F1 clean", lambda u: u["f1"]["clean_micro_f1"]),
        ("Macro-F1 clean", lambda u: u["f1"]["clean_macro_f1"]),
    ]
    for b, eps in enumerate(budgets):
        rows.append((f"Micro-F1 ε = {eps:g}", lambda u, b=b: u["f1"]["micro_f1"][b]))
        rows.append((f"Macro-F1 ε = {eps:g}", lambda u, b=b: u["f1"]["macro_f1"][b]))
    return rows


def table2(reader: _Reader) -> tuple[ScalarTable, dict[str, Any]]:
    t = reader.spec.tables["table2"]
    eps = table_eps(t["eps"], reader.budgets)
    comp = gase_component(eps)
    cols = reader.columns("table2")
    rows = [
        (f"GASE C_a (ε = {eps:g})", lambda u: u[comp]["mean"]),
        ("SAE mean", lambda u: u["sae"]["mean"]),
        ("SAE median", lambda u: u["sae"]["median"]),
        ("Micro-F1 clean", lambda u: u["f1"]["clean_micro_f1"]),
    ]
    table = _build(reader, rows, cols, title="", corner=f"{t['regulariser']} λ", columns=[_lam(v) for v, _ in cols])
    gase_means, sae_means, sae_medians = (table.rows[i][1] for i in range(3))
    rho, p = _exact_spearman(sae_means, gase_means)
    rho_med, p_med = _exact_spearman(sae_medians, gase_means)
    pooled_s = [s for _, units in cols for u in units for s in u["sae"]["scores"]]
    pooled_g = [g for _, units in cols for u in units for g in u[comp]["flips"]]
    inst = stats.spearmanr(pooled_s, pooled_g)
    n = len(cols[0][1][0]["sae"]["scores"])
    result = {
        "rho": rho,
        "p": p,
        "rho_median": rho_med,
        "p_median": p_med,
        "rho_instances": float(inst.statistic),
        "p_instances": float(inst.pvalue),
        "eps": eps,
        "labels": table.columns,
        "gase": gase_means,
        "sae_mean": sae_means,
        "sae_median": sae_medians,
    }
    m = cols[0][1][0][comp]["num_labels"]
    table.title = (
        f"Table 2: attackability by GASE and SAE over {t['regulariser']}-norm strengths ({n} test samples, "
        f"m = {m} labels, L2 ε = {eps:g} for GASE)"
    )
    table.notes = [
        f"Spearman across the {len(cols)} strengths: SAE mean vs GASE CC = {rho:.3f} (exact permutation p = {p:.3g}); "
        f"SAE median vs GASE CC = {rho_med:.3f} (p = {p_med:.3g}).",
        f"Spearman over all {len(pooled_s)} (test instance, strength) pairs: CC = {inst.statistic:.3f} "
        f"(p = {inst.pvalue:.3g}).",
    ]
    return table, result


def table3(reader: _Reader) -> ScalarTable:
    cols = reader.columns("table3")
    rows = [*_f1_rows(reader.budgets), ("SAE median", lambda u: u["sae"]["median"])]
    wide = _build(reader, rows, cols, title="", corner="", columns=[regulariser_label(v) for v, _ in cols])
    table = _transpose(
        wide,
        f"Table 3: clean and attacked Micro/Macro-F1 of each regulariser ({_samples(cols)} test samples)",
        "regulariser",
    )
    for c, name in enumerate(table.columns):
        if "ε" in name and "F1" in name:
            best = max(range(len(table.rows)), key=lambda r: table.rows[r][1][c])
            table.bold.add((best, c))
    table.notes = ["Bold: the best attacked F1 of each column (the paper's bold); SAE median: lower = less attackable."]
    return table


def table4(reader: _Reader) -> ScalarTable:
    t = reader.spec.tables["table4"]
    cols = reader.columns("table4")
    rows = [
        ("φ_align", lambda u: u["f1"]["phi_align"]),
        *_f1_rows(reader.budgets),
        ("SAE median", lambda u: u["sae"]["median"]),
    ]
    title = f"Table 4: the trade-off between clean and attacked F1 over the {t['regulariser']} strength λ"
    return _build(
        reader,
        rows,
        cols,
        title=f"{title} ({_samples(cols)} test samples)",
        corner="λ",
        columns=[_lam(v) for v, _ in cols],
    )


def fig1_table(reader: _Reader) -> ScalarTable:
    t = reader.spec.tables["fig1"]
    eps = table_eps(t["eps"], reader.budgets)
    comp, cols = gase_component(eps), reader.columns("fig1")
    rows = [
        ("φ_align", lambda u: u["f1"]["phi_align"]),
        ("Micro-F1 clean", lambda u: u["f1"]["clean_micro_f1"]),
        ("SAE mean", lambda u: u["sae"]["mean"]),
        ("SAE median", lambda u: u["sae"]["median"]),
        (f"GASE C_a (ε = {eps:g})", lambda u: u[comp]["mean"]),
        (f"Micro-F1 ε = {reader.budgets[-1]:g}", lambda u: u["f1"]["micro_f1"][-1]),
    ]
    wide = _build(
        reader, rows, cols, title="", corner="", columns=[f"ρ = {c:g}, {regulariser_label(r)}" for (c, r), _ in cols]
    )
    title = (
        f"Fig. 1 (the paper's toy example, measured): label correlation ρ, alignment, SAE and GASE "
        f"({_samples(cols)} test samples)"
    )
    notes = [
        "ρ: expected cosine between the true decision directions of two labels (synthetic-tabular); aligned "
        "boundaries should give higher SAE and GASE (Fig. 1), the regulariser should lower both."
    ]
    return _transpose(wide, title, "labels, training", notes)


def _transpose(wide: ScalarTable, title: str, corner: str, notes: list[str] | None = None) -> ScalarTable:
    """``wide`` with rows and columns swapped (one row per model, one column per measurement)."""
    return ScalarTable(
        title=title,
        corner=corner,
        columns=[label for label, _ in wide.rows],
        rows=[(c, [values[j] for _, values in wide.rows]) for j, c in enumerate(wide.columns)],
        spread={c: [wide.spread[label][j] for label, _ in wide.rows] for j, c in enumerate(wide.columns)}
        if wide.spread
        else {},
        notes=list(notes or []),
    )


def _samples(cols: list[tuple[Any, list[dict[str, Any]]]]) -> int:
    return int(cols[0][1][0]["f1"]["samples"])


def robust_tables(store: ResultsStore, spec: RobustSpec) -> dict[str, ScalarTable]:
    """Every table of the study from its store, by table name (``table2``, ``table3``, ``table4``, ``fig1``)."""
    budgets = [float(b) for b in store.get_artefact("", BUDGETS_KIND)["budgets"]]
    reader = _Reader(store, spec, budgets)
    builders = {
        "table2": lambda: table2(reader)[0],
        "table3": lambda: table3(reader),
        "table4": lambda: table4(reader),
        "fig1": lambda: fig1_table(reader),
    }
    return {name: builders[name]() for name in ("fig1", "table2", "table3", "table4") if name in spec.tables}


def _budget_text(store: ResultsStore, spec: RobustSpec) -> str:
    b = store.get_artefact("", BUDGETS_KIND)
    budgets = ", ".join(f"{float(e):g}" for e in b["budgets"])
    attack = b.get("attack", spec.attack_name)
    how = (
        "GASE's perturbation (exact min-norm oracle; maximises the labels wrong against the ground truth)"
        if attack == "gase"
        else f"{attack} (registry attack, target = 1 - ground truth)"
    )
    text = f"Budgets ({b.get('norm', spec.norm)}): {budgets}. Source: {b['source']}; rule: {b['rule']}."
    if b["source"] == "rule":
        grid = ", ".join(f"{g:g}" for g in b["grid"])
        text += f" Grid: {grid}; calibrated on {b['calibration_samples']} validation samples."
    base = store.get_artefact(f"none|seed={spec.seeds[0]}", UNIT_KIND) or {}
    if "f1" in base:
        clean, attacked = base["f1"]["clean_micro_f1"], base["f1"]["micro_f1"][-1]
        text += (
            f" The undefended model (seed {spec.seeds[0]}) keeps {attacked:.3f} of its test Micro-F1 {clean:.3f} at "
            f"the larger budget ({100 * (1 - attacked / clean):.0f} % lost)."
        )
    ds = spec.dataset
    data = f"{ds['name']} (seed {ds['seed']}{', ' + str(ds['config']) if ds['config'] else ''})"
    model = f"{spec.model['family']} ({spec.arch}, loss {spec.model['loss']})"
    return (
        f"{text}\n\nAttack behind the attacked F1: {how}.\n\nDataset: {data}, split 50/30/20. Model: {model}; "
        f"training: {spec.train}; seeds: {spec.seeds}."
    )


def build_robust_report(out: str | Path) -> Path:
    """Write the tables, figures and ``report.html`` of the robust study in ``out``; returns the report's path."""
    out = Path(out)
    store, spec = open_robust_study(out)
    (out / "tables").mkdir(exist_ok=True)
    figdir = out / "figures"
    with store:
        manifest = {k: v for k, v in store.manifest().items() if k != "spec"}
        budgets = [float(e) for e in store.get_artefact("", BUDGETS_KIND)["budgets"]]
        reader = _Reader(store, spec, budgets)
        tables = robust_tables(store, spec)
        sections = [Section("Budgets, attack and data", _budget_text(store, spec))]
        for name, table in tables.items():
            for suffix, render in (("md", scalar_markdown), ("csv", scalar_csv), ("tex", scalar_latex)):
                (out / "tables" / f"robust-{name}.{suffix}").write_text(render(table))
            figures = []
            if name == "table2":
                _, r = table2(reader)
                png, _svg = plot_sae_vs_gase(
                    r["labels"],
                    r["gase"],
                    r["sae_mean"],
                    figdir / "robust-sae-gase.png",
                    sae_median=r["sae_median"],
                    eps=r["eps"],
                    xlabel=f"{spec.tables['table2']['regulariser']}-norm strength λ",
                    title=f"Spearman SAE mean vs GASE across strengths: {r['rho']:.2f} (p = {r['p']:.2g})",
                    formats=("png", "svg"),
                )
                figures.append(Figure("GASE C_a and SAE across the regularisation strengths (Table 2).", png))
            if name == "table4":
                f1 = {label: values for label, values in table.rows if "F1" in label}
                png, _svg = plot_tradeoff(
                    table.columns,
                    f1,
                    figdir / "robust-tradeoff.png",
                    phi_align=table.rows[0][1],
                    xlabel=f"{spec.tables['table4']['regulariser']} strength λ",
                    formats=("png", "svg"),
                )
                figures.append(Figure("Clean (solid) and attacked (dashed) F1 and φ_align across λ (Table 4).", png))
            head, _, caption = table.title.partition(": ")  # render_report numbers the tables itself
            html_table = Table(f"{caption} (the paper's {head})", scalar_html(table, caption=False))
            sections.append(Section(f"The paper's {head}", _ABOUT[name], [html_table], figures))
    path = render_report(
        out / "report.html",
        title=f"labelflip robust study: {spec.name}",
        manifest=manifest,
        sections=sections,
        guide=GUIDE,
    )
    log.info("robust report written to %s", path)
    return path
