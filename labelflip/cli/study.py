"""``labelflip study run|export|report`` and ``labelflip demo`` (the packaged demo study)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from labelflip._validation import LabelflipError, check_choice, fail
from labelflip.cli.common import LineProgress, app, console, err_console, fail_cleanly, study_app
from labelflip.report import to_rich
from labelflip.report.build import build_report, open_study, study_tables
from labelflip.study import DEMO_SPEC, ResultsStore, StudySpec, load_spec, run_study
from labelflip.study.distributed import launched_by_torchrun, merge_shards
from labelflip.study.lock import study_lock

_SPEC = "study spec"

__all__ = ["demo", "study_export", "study_merge", "study_report", "study_run"]


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


def precheck(spec: StudySpec) -> None:
    """Check what the spec validation alone cannot, before any data is generated or model trained (issue 16):
    built-in model names, user factories (imported) and weights files, and, for the built-in dataset, every sample
    count against its split sizes (known from the config without generating it). Errors name the spec key."""
    from labelflip.attacks import attack_info
    from labelflip.cli.loading import check_model_name
    from labelflip.data import SyntheticConfig
    from labelflip.study.inputs import import_factory

    for entry in spec.models:
        if entry.factory is None:
            check_model_name(entry.name, _SPEC, "models")
        else:
            import_factory(entry.factory)
        ckpt, key = (entry.checkpoint, "checkpoint") if entry.checkpoint is not None else (entry.weights, "weights")
        if ckpt is not None and not Path(ckpt).expanduser().is_file():
            raise fail(_SPEC, f"models.{key}", "an existing checkpoint file", ckpt, "check the path "
                       "(relative paths in a YAML file are relative to the file).")  # fmt: skip
    if spec.dataset["name"] != "synthetic":
        return
    try:
        cfg = SyntheticConfig(**dict(spec.dataset.get("config") or {}))
    except TypeError as exc:
        fields = ", ".join(f.name for f in dataclasses.fields(SyntheticConfig))
        raise fail(_SPEC, "dataset.config", f"a mapping of the built-in dataset's settings ({fields})",
                   spec.dataset.get("config"), "check the spelling of each key.") from exc  # fmt: skip
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    split, count = spec.dataset["split"], spec.samples["count"]
    checks = [("samples.count", count, sizes[split]), ("profile.samples", spec.profile["samples"], sizes["val"])]
    if any("correlations" in attack_info(m)["requires"] for m in spec.methods):
        checks.append(("correlations.samples", spec.correlations["samples"], sizes["val"]))
    for key, n, size in checks:
        reserved = count if key != "samples.count" and split == "val" else 0  # probes skip the evaluation samples
        if n > size - reserved:
            minus = f" minus the {reserved} evaluation samples = {size - reserved}" if reserved else ""
            which = split if key == "samples.count" else "val"
            raise fail(
                _SPEC, key, f"at most the {which} split's size {size}{minus}", n, f"ask for {size - reserved} or fewer."
            )


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
        precheck(spec)
        rank = int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0  # torchrun: rank 0 speaks
        if rank == 0:
            console.print(f"study [bold]{spec.name}[/] -> {spec.output} (config hash {spec.config_hash()})")
        with LineProgress() as prog:
            run_study(spec, progress=prog if rank == 0 else None)
        if rank != 0:
            return
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
    samples: Annotated[
        int | None, typer.Option(help="test samples attacked per model (default: demo.yaml's 40)")
    ] = None,
    models_: Annotated[
        str | None, typer.Option("--models", help="comma-separated models (default: demo.yaml's asl-cnn, q2l-cnn)")
    ] = None,
    methods: Annotated[str | None, typer.Option(help="methods, see `labelflip methods` (default: demo.yaml's)")] = None,
    out: Annotated[str | None, typer.Option(help="output directory (default: labelflip-runs/demo)")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override any spec key, e.g. profile.samples=60 (default: none)")
    ] = None,
) -> None:
    """The built-in study (labelflip/study/demo.yaml): train-if-needed both built-in models, probe profiles and
    correlations, run BCE, Linear, SLAM, random subsets and CLASS (gamma 0 / 0.5 / 1) over the paper's budget grid
    (5-100 % of eps_max), with statistics, tables, figures and an HTML report. Resumable like any study."""
    _run(DEMO_SPEC, _overrides(out, samples, models_, methods), set_ or [], report=True, tables=True)


@study_app.command("run")
def study_run(
    spec_path: Annotated[Path | None, typer.Argument(help="study spec YAML (defaults apply to missing keys)")] = None,
    out: Annotated[str | None, typer.Option(help="output directory (default: the spec's output)")] = None,
    samples: Annotated[int | None, typer.Option(help="number of samples (default: the spec's samples.count)")] = None,
    models_: Annotated[
        str | None, typer.Option("--models", help="comma-separated models (default: the spec's)")
    ] = None,
    methods: Annotated[str | None, typer.Option(help="comma-separated methods (default: the spec's)")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override any key: --set profile.samples=50 (default: none)")
    ] = None,
    report: Annotated[bool, typer.Option(help="write statistics, tables, figures and the HTML report")] = True,
) -> None:
    """Run (or resume) a study; an interrupted run continues where it stopped when run again."""
    _run(spec_path, _overrides(out, samples, models_, methods), set_ or [], report=report, tables=False)


@study_app.command("merge")
def study_merge(out: Annotated[Path, typer.Argument(help="the study's output directory")]) -> None:
    """Merge the per-rank store shards (results.rank*.sqlite) of a distributed study into results.sqlite (a
    torchrun study does this itself at its end; needed only after a run that stopped early). Idempotent: rows
    already in results.sqlite are kept, never duplicated. Refused while a run is using the directory."""
    try:
        if not out.is_dir():
            raise fail("labelflip study merge", "out", "a study output directory", str(out))
        with study_lock(out):
            shards, rows = merge_shards(out)
        with ResultsStore(out / "results.sqlite", readonly=True) as store:
            total = store.count()
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    console.print(f"merged {shards} shard(s), {rows} new rows; {out / 'results.sqlite'} holds {total} rows")


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
