"""The ``labelflip`` command line (typer). One subcommand per user task.

* ``labelflip attack``: attack a built-in model at a list of budgets with one or more methods (BCE, Linear,
  SLAM, random subsets, CLASS, top-n) and print a table of mean ± std flips.
* ``labelflip profile`` / ``correlations`` / ``attackability`` / ``targets-vs-flips``: the analyses of seed §IV-V
  (flip profile, Alg. 1 matrices, Table II, Fig. 7), each saved as an artefact with its plot.
* ``labelflip study run SPEC`` / ``study export``: a whole, resumable evaluation from one YAML file.
* ``labelflip demo``: the built-in study (``labelflip/study/demo.yaml``) on both built-in models.
* ``labelflip models``: the built-in models.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from labelflip._validation import LabelflipError, check_choice, check_int, fail
from labelflip.attackability import label_attackability
from labelflip.attacks.result import AttackResult
from labelflip.correlation import Correlations, measure_correlations
from labelflip.methods import MethodSpec, build_attack, parse_method
from labelflip.model import MultiLabelModel
from labelflip.plots import plot_attackability, plot_correlations, plot_profile, plot_targets_vs_flips
from labelflip.profile import PAPER_FRACTIONS, Profile, probe_profile
from labelflip.tables import FlipTable, flip_table
from labelflip.targets_vs_flips import targets_vs_flips

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multi-label maximum-flip attacks (SLAM/CLASS).")
# Off a terminal (logs, CI, pipes) rich would wrap tables at 80 columns; give them room instead.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    )


def _load_builtin(name: str, retrain: bool = False):
    from labelflip import zoo

    with _progress() as prog:
        task = prog.add_task(f"{name}: load or train", total=None)

        def on_progress(*args: object) -> None:
            prog.advance(task)

        model = zoo.load_builtin(name, retrain=retrain, progress=on_progress)
    if not err_console.is_terminal:
        err_console.print(f"{name}: ready ({model.fingerprint})")
    return model


def _samples(split, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` samples of a seeded permutation of a split (seeded generator, no global RNG)."""
    if n > len(split):
        raise fail("labelflip", "--samples", f"at most the split size {len(split)}", n)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=gen)[:n]
    return split.x[idx], split.y[idx]


def _budget_spec(text: str) -> list[tuple[float, bool]]:
    """Parse ``--budgets`` before any work: ``[(value, is_percent)]``. ``"paper"`` = 5..100 % of eps_max."""
    if text.strip() == "paper":
        return [(f * 100, True) for f in PAPER_FRACTIONS]
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise fail("labelflip", "--budgets", "a comma-separated list", text, "e.g. --budgets 0.002,0.01 or 5%,10%")
    spec = []
    for it in items:
        pct = it.endswith("%")
        try:
            value = float(it[:-1] if pct else it)
        except ValueError as exc:
            raise fail("labelflip", "--budgets", "numbers or percentages", it, "e.g. 0.002 or 5%.") from exc
        if not value >= 0 or value == float("inf"):
            raise fail("labelflip", "--budgets", "finite and non-negative", it)
        spec.append((value, pct))
    return spec


def _resolve_budgets(spec: list[tuple[float, bool]], profile: Profile | None) -> tuple[list[float], list[str]]:
    """Absolute budgets and column labels; percentages are fractions of the profile's ``eps_max``."""
    budgets, labels = [], []
    for value, pct in spec:
        if pct:
            if profile is None:  # pragma: no cover - callers probe a profile whenever a % budget is present
                raise fail("labelflip", "--budgets", "absolute when no profile is available", f"{value}%")
            eps = value / 100 * profile.eps_max
            budgets.append(eps)
            labels.append(f"{value:g}%: {eps:.4f}")
        else:
            budgets.append(value)
            labels.append(f"{value:.4g}")
    return budgets, labels


def _render(table: FlipTable, title: str) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("method", style="bold")
    for label in table.column_labels:
        t.add_column(label, justify="right")
    t.add_column("Total", justify="right")
    best = [max(row[1][c][0] for row in table.rows) for c in range(len(table.budgets))]
    for name, cells, total in table.rows:
        rendered = []
        for c, (m, s) in enumerate(cells):
            txt = f"{m:.2f} ± {s:.2f}"
            rendered.append(f"[bold green]{txt}[/]" if m == best[c] and len(table.rows) > 1 else txt)
        t.add_row(name, *rendered, f"{total:.2f}")
    t.caption = "std: population (ddof=0). Green: highest mean of the column (no test; `labelflip study` tests)."
    return t


def _run_methods(
    model: MultiLabelModel,
    x: torch.Tensor,
    budgets: list[float],
    methods: list[MethodSpec],
    prog: Progress,
    label: str,
    *,
    profile: Profile | None = None,
    correlations: Correlations | None = None,
    seed: int = 0,
    **mifgsm: object,
) -> dict[str, AttackResult]:
    results: dict[str, AttackResult] = {}
    task = prog.add_task(f"{label}: attacks", total=len(methods))
    for spec in methods:
        attack = build_attack(spec, model, profile=profile, correlations=correlations, seed=seed, **mifgsm)
        results[spec.label] = attack(x, budgets)
        prog.advance(task)
        if not err_console.is_terminal:
            err_console.print(f"{label}: {spec.label} done")
    return results


def _parse_methods(text: str) -> list[MethodSpec]:
    specs = [parse_method(t) for t in text.split(",") if t.strip()]
    if not specs:
        raise fail("labelflip", "--methods", "a comma-separated list of methods", text, "e.g. bce,slam,class:0")
    return specs


def _analysis_inputs(
    data: Any,
    model: MultiLabelModel,
    fingerprint: str,
    methods: list[MethodSpec],
    budget_spec: list[tuple[float, bool]],
    *,
    norm: str,
    seed: int,
    profile_path: Path | None,
    correlations_path: Path | None,
    eps_corr: float,
    samples: int = 100,
) -> tuple[Profile | None, Correlations | None]:
    """Load, or measure on the validation split, the profile and correlations the methods and budgets need."""
    prof = Profile.load(profile_path) if profile_path is not None else None
    if prof is None and (any(m.needs_profile for m in methods) or any(pct for _, pct in budget_spec)):
        xv, _ = _samples(data.val, min(samples, len(data.val)), seed)
        prof = probe_profile(model, xv, norm=norm, model_fingerprint=fingerprint, seed=seed)
    corr = Correlations.load(correlations_path) if correlations_path is not None else None
    if corr is None and any(m.needs_correlations for m in methods):
        xc, _ = _samples(data.val, min(samples, len(data.val)), seed + 1)
        names = list(getattr(data, "label_names", []) or [])
        corr = measure_correlations(
            model, xc, eps=eps_corr, label_names=names, model_fingerprint=fingerprint, seed=seed + 1
        )
    return prof, corr


def _fail_cleanly(exc: Exception) -> None:
    err_console.print(f"[red]error:[/] {exc}", soft_wrap=True, markup=True, highlight=False)
    raise typer.Exit(code=2)


@app.command()
def attack(
    model: Annotated[str, typer.Option(help="built-in model name (see `labelflip models`)")] = "asl-cnn",
    split: Annotated[str, typer.Option(help="dataset split: train, val or test")] = "test",
    samples: Annotated[int, typer.Option(help="number of samples (seeded selection)")] = 64,
    budgets: Annotated[str, typer.Option(help="e.g. 0.002,0.01 or 5%,10%,100% or 'paper'")] = "paper",
    methods: Annotated[
        str | None,
        typer.Option(
            help="comma-separated: bce, linear, hinge, mse, slam[:q], random, class:<gamma>, "
            "class-raw:<gamma>, top-n:<n>"
        ),
    ] = None,
    loss: Annotated[str | None, typer.Option(help="alias of --methods")] = None,
    norm: Annotated[str, typer.Option(help="linf or l2")] = "linf",
    profile: Annotated[Path | None, typer.Option(help="flip profile JSON (else probed on the val split)")] = None,
    correlations: Annotated[Path | None, typer.Option(help="correlations JSON (else measured on val)")] = None,
    eps_corr: Annotated[float, typer.Option(help="budget of the correlation attacks")] = 0.005,
    seed: Annotated[int, typer.Option(help="sample-selection and random-subset seed")] = 0,
    batch_size: Annotated[int | None, typer.Option(help="attack batch size (memory)")] = None,
    markdown: Annotated[Path | None, typer.Option(help="also write the table as Markdown here")] = None,
) -> None:
    """Attack a model at a list of budgets and print mean ± std flips per method."""
    try:
        # Validate every option before loading (or training) a model.
        specs = _parse_methods(methods or loss or "bce,linear,slam")
        check_choice("labelflip attack", "--split", split, ("train", "val", "test"))
        check_choice("labelflip attack", "--norm", norm, ("linf", "l2"))
        check_int("labelflip attack", "--samples", samples, low=1)
        spec = _budget_spec(budgets)
        built = _load_builtin(model)
        data = _dataset()
        wrapped = MultiLabelModel(built.module)
        prof, corr = _analysis_inputs(
            data,
            wrapped,
            built.fingerprint,
            specs,
            spec,
            norm=norm,
            seed=seed,
            profile_path=profile,
            correlations_path=correlations,
            eps_corr=eps_corr,
        )
        eps, labels = _resolve_budgets(spec, prof)
        x, _ = _samples(getattr(data, split), samples, seed)
        with _progress() as prog:
            results = _run_methods(
                wrapped,
                x,
                eps,
                specs,
                prog,
                model,
                profile=prof,
                correlations=corr,
                seed=seed,
                norm=norm,
                batch_size=batch_size,
            )
        table = flip_table(results, column_labels=labels)
    except LabelflipError as exc:
        _fail_cleanly(exc)
        return
    console.print(_render(table, f"{model}: mean ± std flips over {samples} {split} samples ({norm})"))
    if markdown is not None:
        markdown.write_text(table.to_markdown() + "\n")


@app.command("profile")
def profile_cmd(
    model: Annotated[str, typer.Option(help="built-in model name")] = "asl-cnn",
    samples: Annotated[int, typer.Option(help="probe samples from the validation split")] = 100,
    interval: Annotated[int, typer.Option(help="steps between measurements")] = 10,
    order: Annotated[int, typer.Option(help="polynomial order (4 or 3)")] = 4,
    curve: Annotated[str, typer.Option(help="max (paper) or bce (authors' code)")] = "max",
    norm: Annotated[str, typer.Option(help="linf or l2")] = "linf",
    seed: Annotated[int, typer.Option(help="sample-selection seed")] = 0,
    out: Annotated[Path, typer.Option(help="where to write the profile JSON")] = Path("profile.json"),
) -> None:
    """Measure a model's flip profile E(eps) and save it as JSON."""
    try:
        built = _load_builtin(model)
        xv, _ = _samples(_dataset().val, samples, seed)
        prof = probe_profile(
            MultiLabelModel(built.module),
            xv,
            interval=interval,
            order=order,
            curve=curve,
            norm=norm,
            model_fingerprint=built.fingerprint,
            seed=seed,
        )
    except LabelflipError as exc:
        _fail_cleanly(exc)
        return
    prof.save(out)
    plot_profile(prof, out.with_suffix(".png"))
    console.print(
        f"{model}: eps_max = {prof.eps_max:.5f} ({prof.stop_reason}), E(eps_max) = {prof.flips[-1]:.2f} of "
        f"{prof.num_labels} labels; written to {out} (plot: {out.with_suffix('.png')})"
    )


@app.command()
def models() -> None:
    """List the built-in models."""
    from labelflip import zoo

    for name in zoo.list_models():
        console.print(name)


def _dataset():
    from labelflip import zoo

    return zoo.default_dataset()


@app.command("correlations")
def correlations_cmd(
    model: Annotated[str, typer.Option(help="built-in model name")] = "asl-cnn",
    samples: Annotated[int, typer.Option(help="validation images (the paper: 100)")] = 100,
    eps: Annotated[float, typer.Option(help="budget of the single-label attacks")] = 0.005,
    flipdown: Annotated[bool, typer.Option(help="also measure the flip-down matrix")] = False,
    seed: Annotated[int, typer.Option(help="sample-selection seed")] = 0,
    out: Annotated[Path, typer.Option(help="correlations JSON (a heatmap PNG is written beside it)")] = Path(
        "correlations.json"
    ),
) -> None:
    """Measure the flip-up correlation matrix (Alg. 1), save it and plot it next to the co-occurrence."""
    from labelflip.data import cooccurrence_matrix

    try:
        check_int("labelflip correlations", "--samples", samples, low=1)
        built = _load_builtin(model)
        data = _dataset()
        xv, yv = _samples(data.val, samples, seed)
        corr = measure_correlations(
            MultiLabelModel(built.module),
            xv,
            eps=eps,
            y=yv,
            measure_flipdown=flipdown,
            label_names=list(data.label_names),
            model_fingerprint=built.fingerprint,
            seed=seed,
        )
    except LabelflipError as exc:
        _fail_cleanly(exc)
        return
    corr.save(out)
    png = plot_correlations(corr, out.with_suffix(".png"), cooccurrence=cooccurrence_matrix(data.train.y))
    diag = corr.flipup.diagonal()
    console.print(
        f"{model}: flip-up matrix {corr.num_labels}x{corr.num_labels} at eps={eps} over {samples} images; attacked "
        f"label rises by {float(diag.mean()):.3f} on average; written to {out} (heatmap: {png})"
    )


@app.command("attackability")
def attackability_cmd(
    model: Annotated[str, typer.Option(help="built-in model name")] = "asl-cnn",
    eps: Annotated[float, typer.Option(help="budget of the single-label attacks")] = 0.01,
    per_label: Annotated[int, typer.Option(help="images per label and direction (the paper: 100)")] = 100,
    images: Annotated[int, typer.Option(help="training images scanned for eligible ones")] = 2000,
    out: Annotated[Path, typer.Option(help="attackability JSON (a bar plot PNG is written beside it)")] = Path(
        "attackability.json"
    ),
) -> None:
    """Per-label flip-up / flip-down attackability and its correlations with confidence and frequency (Table II)."""
    try:
        check_int("labelflip attackability", "--images", images, low=1)
        built = _load_builtin(model)
        data = _dataset()
        n = min(images, len(data.train))
        att = label_attackability(
            MultiLabelModel(built.module),
            data.train.x[:n],
            data.train.y[:n],
            eps=eps,
            n_per_label=per_label,
            frequency=data.train.label_frequencies(),
            label_names=list(data.label_names),
            model_fingerprint=built.fingerprint,
        )
    except LabelflipError as exc:
        _fail_cleanly(exc)
        return
    att.save(out)
    png = plot_attackability(att, out.with_suffix(".png"))
    console.print(f"[bold]{model}[/]: per-label attackability at eps={eps} (Table II; * = p > 0.05)")
    console.print(att.table_markdown("pearson"))
    console.print(att.table_markdown("spearman"))
    for note in att.notes:
        console.print(f"note: {note}")
    console.print(f"written to {out} (plot: {png})")


@app.command("targets-vs-flips")
def targets_vs_flips_cmd(
    model: Annotated[str, typer.Option(help="built-in model name")] = "asl-cnn",
    samples: Annotated[int, typer.Option(help="test samples")] = 32,
    fractions: Annotated[str, typer.Option(help="budgets as fractions of eps_max")] = "0.1,0.3,0.6",
    step: Annotated[int, typer.Option(help="step between numbers of targets")] = 2,
    seed: Annotated[int, typer.Option(help="sample-selection seed")] = 0,
    out: Annotated[Path, typer.Option(help="plot PNG (a Markdown table is written beside it)")] = Path(
        "targets-vs-flips.png"
    ),
) -> None:
    """Flips vs number of closest-to-threshold targets at several budgets (Fig. 7); prints flips_opt / t_opt."""
    try:
        fr = [float(f) for f in fractions.split(",") if f.strip()] if _is_number_list(fractions) else None
        if not fr or any(f <= 0 for f in fr):
            raise fail("labelflip targets-vs-flips", "--fractions", "comma-separated positive numbers", fractions)
        check_int("labelflip targets-vs-flips", "--step", step, low=1)
        built = _load_builtin(model)
        data = _dataset()
        wrapped = MultiLabelModel(built.module)
        xv, _ = _samples(data.val, min(100, len(data.val)), seed)
        prof = probe_profile(wrapped, xv, model_fingerprint=built.fingerprint, seed=seed)
        x, _ = _samples(data.test, samples, seed)
        k = data.train.num_labels
        tvf = targets_vs_flips(wrapped, x, [f * prof.eps_max for f in fr], list(range(0, k + 1, step)))
    except LabelflipError as exc:
        _fail_cleanly(exc)
        return
    plot_targets_vs_flips(tvf, out)
    out.with_suffix(".md").write_text(tvf.to_markdown() + "\n")
    console.print(tvf.to_markdown())
    console.print(f"flips_opt / t_opt per budget: {', '.join(f'{r:.2f}' for r in tvf.ratios())} (paper: about 0.6)")


def _is_number_list(text: str) -> bool:
    try:
        [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        return False
    return True


def _render_study(table) -> Table:
    """A StudyTable in the terminal: mean ± std (population), bold = best where significant, † = significant."""
    t = Table(title=table.title, title_justify="left")
    t.add_column("method", style="bold")
    for col in table.columns:
        t.add_column(col, justify="right")
    for method in table.methods:
        cells = []
        for col in table.columns:
            c = table.cells[method][col]
            txt = f"{c.mean:.2f} ± {c.std_pop:.2f}" + ("†" if c.significant else "")
            cells.append(f"[bold green]{txt}[/]" if table.best.get(col) == method else txt)
        t.add_row(method, *cells)
    t.caption = (
        f"std: population (ddof=0). †: paired two-sided t-test vs {table.baseline}, Holm-corrected, "
        f"p < {table.alpha}. Green: best where significant."
    )
    return t


@app.command()
def demo(
    samples: Annotated[int | None, typer.Option(help="test samples attacked per model (demo.yaml: 40)")] = None,
    models_: Annotated[str | None, typer.Option("--models", help="comma-separated built-in models")] = None,
    methods: Annotated[str | None, typer.Option(help="methods (see `labelflip attack --help`)")] = None,
    out: Annotated[str | None, typer.Option(help="output directory (demo.yaml: labelflip-runs/demo)")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override any spec key, e.g. profile.samples=60")
    ] = None,
) -> None:
    """The built-in study (labelflip/study/demo.yaml): train-if-needed both built-in models, probe profiles and
    correlations, run BCE, Linear, SLAM, random subsets and CLASS (gamma 0 / 0.5 / 1) over the paper's budget grid
    (5-100 % of eps_max), with statistics, tables, figures and an HTML report. Resumable like any study."""
    from labelflip.report.study_report import build_report, study_tables
    from labelflip.study import DEMO_SPEC, load_spec
    from labelflip.study.runner import run_study
    from labelflip.study.store import ResultsStore

    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    overrides: dict[str, object] = {"output": out}
    if samples is not None:
        overrides["samples"] = {"count": samples}
    if models_ is not None:
        overrides["models"] = [m.strip() for m in models_.split(",") if m.strip()]
    if methods is not None:
        overrides["methods"] = [m.strip() for m in methods.split(",") if m.strip()]
    try:
        spec = load_spec(DEMO_SPEC, overrides=overrides, sets=set_ or [])
        console.print(f"demo study -> {spec.output} (spec {DEMO_SPEC.name}, config hash {spec.config_hash()})")
        with _LineProgress() as prog:
            ctx = run_study(spec, progress=prog)
        with ResultsStore(ctx.out / "results.sqlite") as store:
            tables = study_tables(ctx, store)
        for name, table in tables.items():
            m, prof = ctx.model_metrics.get(name, {}), ctx.profiles[name]
            console.print(
                f"\n[bold]{name}[/]: test mAP {m.get('test_map', float('nan')):.3f}, micro-F1 "
                f"{m.get('test_micro_f1', float('nan')):.3f}, macro-F1 {m.get('test_macro_f1', float('nan')):.3f}; "
                f"flip profile eps_max = {prof.eps_max:.5f} ({prof.stop_reason}), E(eps_max) = {prof.flips[-1]:.2f} "
                f"of {prof.num_labels} labels"
            )
            console.print(_render_study(table))
        report = build_report(ctx)
    except LabelflipError as exc:
        _fail_cleanly(exc)
        return
    except KeyboardInterrupt:
        err_console.print("interrupted: every finished unit is stored; run `labelflip demo` again to resume.")
        raise typer.Exit(code=130) from None
    console.print(f"\ndemo finished in {time.perf_counter() - start:.1f} s; report: {report}")


study_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Run a whole study from one YAML spec.")
app.add_typer(study_app, name="study")


class _LineProgress:
    """Progress that is a rich bar on a terminal and one plain line per unit of work elsewhere."""

    def __init__(self) -> None:
        self.prog = _progress()
        self.tasks: dict[str, object] = {}

    def __enter__(self) -> _LineProgress:
        self.prog.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.prog.__exit__(*exc)

    def __call__(self, label: str, done: int, total: int) -> None:
        if err_console.is_terminal:
            if label not in self.tasks:
                self.tasks[label] = self.prog.add_task(label, total=total)
            self.prog.update(self.tasks[label], completed=done)
        else:
            err_console.print(f"{label}: {done}/{total}", highlight=False)


@study_app.command("run")
def study_run(
    spec_path: Annotated[Path | None, typer.Argument(help="study spec YAML (defaults apply to missing keys)")] = None,
    out: Annotated[str | None, typer.Option(help="output directory (overrides the spec)")] = None,
    samples: Annotated[int | None, typer.Option(help="number of samples (overrides samples.count)")] = None,
    models_: Annotated[str | None, typer.Option("--models", help="comma-separated built-in models")] = None,
    methods: Annotated[str | None, typer.Option(help="comma-separated methods (overrides the spec)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override any key: --set profile.samples=50")] = None,
    report: Annotated[bool, typer.Option(help="write statistics, tables, figures and the HTML report")] = True,
) -> None:
    """Run (or resume) a study; an interrupted run continues where it stopped when run again."""
    from labelflip.study import load_spec
    from labelflip.study.runner import run_study

    logging.basicConfig(level=logging.WARNING)
    overrides: dict[str, object] = {"output": out}
    if samples is not None:
        overrides["samples"] = {"count": samples}
    if models_ is not None:
        overrides["models"] = [m.strip() for m in models_.split(",") if m.strip()]
    if methods is not None:
        overrides["methods"] = [m.strip() for m in methods.split(",") if m.strip()]
    start = time.perf_counter()
    try:
        spec = load_spec(spec_path, overrides=overrides, sets=set_ or [])
        console.print(f"study [bold]{spec.name}[/] -> {spec.output} (config hash {spec.config_hash()})")
        with _LineProgress() as prog:
            ctx = run_study(spec, progress=prog)
        if report:
            from labelflip.report.study_report import build_report

            path = build_report(ctx)
            console.print(f"report: {path}")
    except LabelflipError as exc:
        _fail_cleanly(exc)
        return
    except KeyboardInterrupt:
        err_console.print("interrupted: every finished unit is stored; run the same command again to resume.")
        raise typer.Exit(code=130) from None
    console.print(f"study finished in {time.perf_counter() - start:.1f} s")


@study_app.command("export")
def study_export(
    out: Annotated[Path, typer.Argument(help="the study's output directory")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
) -> None:
    """Export every stored row (one per sample x budget x method x seed) to CSV or Parquet."""
    from labelflip.study.store import ResultsStore

    try:
        check_choice("labelflip study export", "--format", fmt, ("csv", "parquet"))
        db = out / "results.sqlite"
        if not db.is_file():
            raise fail("labelflip study export", "out", "a study output directory with results.sqlite", str(out))
        with ResultsStore(db) as store:
            path = (
                store.export_csv(out / "results.csv") if fmt == "csv" else store.export_parquet(out / "results.parquet")
            )
    except LabelflipError as exc:
        _fail_cleanly(exc)
        return
    console.print(f"written {path}")


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])
