"""``labelflip study run|export|report`` and ``labelflip demo`` (the packaged demo study)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from labelflip._validation import LabelflipError, check_choice, fail
from labelflip.cli.common import LineProgress, app, console, err_console, fail_cleanly, study_app
from labelflip.report import to_rich
from labelflip.report.build import build_report, open_study, study_tables
from labelflip.study import DEMO_SPEC, ResultsStore, load_spec, run_study

__all__ = ["demo", "study_export", "study_report", "study_run"]


def _overrides(out: str | None, samples: int | None, models: str | None, methods: str | None) -> dict[str, Any]:
    from labelflip.attacks import split_method_list

    overrides: dict[str, Any] = {"output": out}
    if samples is not None:
        overrides["samples"] = {"count": samples}
    if models is not None:
        overrides["models"] = [m.strip() for m in models.split(",") if m.strip()]
    if methods is not None:
        overrides["methods"] = split_method_list(methods)
    return overrides


def _print_tables(out: Path) -> None:
    store, spec = open_study(out)
    with store:
        tables = study_tables(store, spec)
        for name, table in tables.items():
            info = store.get_artefact(name, "model") or {}
            m = info.get("metrics", {})
            prof = store.get_artefact(name, "profile") or {}
            console.print(
                f"\n[bold]{name}[/]: test mAP {m.get('test_map', float('nan')):.3f}, micro-F1 "
                f"{m.get('test_micro_f1', float('nan')):.3f}, macro-F1 {m.get('test_macro_f1', float('nan')):.3f}; "
                f"flip profile eps_max = {prof.get('eps_max', float('nan')):.5f} ({prof.get('stop_reason')}), "
                f"E(eps_max) = {(prof.get('flips') or [float('nan')])[-1]:.2f} of {prof.get('num_labels')} labels"
            )
            console.print(to_rich(table))


def _run(spec_path: Path | None, overrides: dict[str, Any], sets: list[str], *, report: bool, tables: bool) -> None:
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    try:
        spec = load_spec(spec_path, overrides=overrides, sets=sets)
        console.print(f"study [bold]{spec.name}[/] -> {spec.output} (config hash {spec.config_hash()})")
        with LineProgress() as prog:
            run_study(spec, progress=prog)
        if tables:
            _print_tables(Path(spec.output))
        if report:
            console.print(f"report: {build_report(spec.output)}")
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    except KeyboardInterrupt:
        err_console.print("interrupted: every finished unit is stored; run the same command again to resume.")
        raise typer.Exit(code=130) from None
    console.print(f"finished in {time.perf_counter() - start:.1f} s")


@app.command()
def demo(
    samples: Annotated[int | None, typer.Option(help="test samples attacked per model (demo.yaml: 40)")] = None,
    models_: Annotated[str | None, typer.Option("--models", help="comma-separated models")] = None,
    methods: Annotated[str | None, typer.Option(help="methods (see `labelflip methods`)")] = None,
    out: Annotated[str | None, typer.Option(help="output directory (demo.yaml: labelflip-runs/demo)")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override any spec key, e.g. profile.samples=60")
    ] = None,
) -> None:
    """The built-in study (labelflip/study/demo.yaml): train-if-needed both built-in models, probe profiles and
    correlations, run BCE, Linear, SLAM, random subsets and CLASS (gamma 0 / 0.5 / 1) over the paper's budget grid
    (5-100 % of eps_max), with statistics, tables, figures and an HTML report. Resumable like any study."""
    _run(DEMO_SPEC, _overrides(out, samples, models_, methods), set_ or [], report=True, tables=True)


@study_app.command("run")
def study_run(
    spec_path: Annotated[Path | None, typer.Argument(help="study spec YAML (defaults apply to missing keys)")] = None,
    out: Annotated[str | None, typer.Option(help="output directory (overrides the spec)")] = None,
    samples: Annotated[int | None, typer.Option(help="number of samples (overrides samples.count)")] = None,
    models_: Annotated[str | None, typer.Option("--models", help="comma-separated models")] = None,
    methods: Annotated[str | None, typer.Option(help="comma-separated methods (overrides the spec)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override any key: --set profile.samples=50")] = None,
    report: Annotated[bool, typer.Option(help="write statistics, tables, figures and the HTML report")] = True,
) -> None:
    """Run (or resume) a study; an interrupted run continues where it stopped when run again."""
    _run(spec_path, _overrides(out, samples, models_, methods), set_ or [], report=report, tables=False)


@study_app.command("report")
def study_report(out: Annotated[Path, typer.Argument(help="the study's output directory")]) -> None:
    """(Re)build the tables, figures and HTML report of a study from its results store."""
    try:
        path = build_report(out)
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    console.print(f"report: {path}")


@study_app.command("export")
def study_export(
    out: Annotated[Path, typer.Argument(help="the study's output directory")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
) -> None:
    """Export every stored row (one per sample x budget x method x seed) to CSV or Parquet."""
    try:
        check_choice("labelflip study export", "--format", fmt, ("csv", "parquet"))
        db = out / "results.sqlite"
        if not db.is_file():
            raise fail("labelflip study export", "out", "a study output directory with results.sqlite", str(out))
        with ResultsStore(db, readonly=True) as store:
            path = (
                store.export_csv(out / "results.csv") if fmt == "csv" else store.export_parquet(out / "results.parquet")
            )
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    console.print(f"written {path}")
