"""``labelflip study run|merge|export|report`` (``labelflip demo`` is :mod:`labelflip.cli.demo`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from labelflip._validation import LabelflipError, check_choice, fail
from labelflip.analysis.cache import use_probe_cache
from labelflip.cli.analysis import NO_CACHE_HELP, probe_cache
from labelflip.cli.common import LineProgress, console, err_console, fail_cleanly, study_app
from labelflip.models import Runtime
from labelflip.report import to_rich
from labelflip.report.build import build_report, open_study, study_tables
from labelflip.study import ResultsStore, StudySpec, load_spec, run_study
from labelflip.study.distributed import (
    RankFailedError,
    distributed_available,
    launched_by_torchrun,
    merge_shards,
    run_local_workers,
    worker_threads,
)
from labelflip.study.lock import study_lock

_SPEC = "study spec"

__all__ = ["study_export", "study_merge", "study_report", "study_run"]


#: ``--device`` / ``--precision`` of the study commands: spec overrides (``runtime.device`` / ``runtime.precision``).
SpecDevice = Annotated[
    str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps (default: the spec's runtime.device, auto)")
]
SpecPrecision = Annotated[
    str | None, typer.Option(help="fp32, bf16 or fp16 autocast (default: the spec's runtime.precision, fp32)")
]


WORKERS_HELP = (
    "local worker processes sharing the study (a torchrun-style gloo job on this machine, the cores split between "
    "them); auto: 2 on a CPU with 2+ cores, else 1"
)


def _overrides(
    out: str | None, samples: int | None, models: str | None, methods: str | None, runtime: dict[str, Any] | None = None
) -> dict[str, Any]:
    from labelflip.attacks import split_method_list

    overrides: dict[str, Any] = {"output": out}
    if runtime and any(v is not None for v in runtime.values()):  # --device / --precision
        overrides["runtime"] = {k: v for k, v in runtime.items() if v is not None}
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


def _probe_overrides(overrides: dict[str, Any], probe_samples: int | None, owner: str) -> dict[str, Any]:
    """``--probe-samples N``: the profile and correlation probes' sizes (``profile.samples``,
    ``correlations.samples``)."""
    from labelflip._validation import check_int

    if probe_samples is not None:
        check_int(owner, "--probe-samples", probe_samples, low=2, fix="e.g. --probe-samples 100 (the paper's).")
        overrides = {**overrides, "profile": {"samples": probe_samples}, "correlations": {"samples": probe_samples}}
    return overrides


def _profile_text(prof: dict[str, Any]) -> str:
    """``eps_max = 0.234 (95% CI 0.168-0.234, 40 probe images) (dip)`` from a stored profile."""
    from labelflip.analysis import Profile

    return f"{Profile.from_dict(prof).eps_max_text()} ({prof.get('stop_reason')})" if prof else "no profile"


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
                f"flip profile {_profile_text(prof)}, "
                f"E(eps_max) = {(prof.get('flips') or [float('nan')])[-1]:.2f} of {prof.get('num_labels')} labels"
            )
            console.print(to_rich(table))


def _workers(workers: str, spec: StudySpec) -> int:
    """``--workers``: a count, or ``auto`` (2 local worker processes on a CPU study where the machine has 2+ cores:
    the demo's study ran 1.19x faster on two single-threaded processes than on one with 2 threads, 205 vs 244 s)."""
    if workers == "auto":
        cpu = Runtime(**spec.runtime).resolve_device(_SPEC, "runtime.device (--device)").type == "cpu"
        return 2 if cpu and (os.cpu_count() or 1) >= 2 and distributed_available() else 1
    try:
        n = int(workers)
    except ValueError:
        n = 0
    if n < 1:
        raise fail("labelflip", "--workers", "auto or a whole number >= 1", workers, "e.g. --workers 2.")
    if n > 1 and not distributed_available():
        raise fail("labelflip", "--workers", "1 (this torch build has no gloo backend)", workers, "use --workers 1.")
    return n


def _study_args(spec_path: Path | None, overrides: dict[str, Any], sets: list[str], cache: bool) -> list[str]:
    """The ``labelflip study run`` arguments a worker process runs this study with: the same spec, ``--set`` and
    cache option, and this command's overrides as they are (JSON in the hidden ``--worker`` option)."""
    spec_arg = [str(spec_path)] if spec_path is not None else []
    sets_args = [a for s in sets for a in ("--set", s)]
    return ["study", "run", *spec_arg, "--no-report", "--worker", json.dumps(overrides), *sets_args,
            *([] if cache else ["--no-cache"])]  # fmt: skip


def _run(
    spec_path: Path | None,
    overrides: dict[str, Any],
    sets: list[str],
    *,
    report: bool,
    tables: bool,
    cache: bool = True,
    workers: str = "1",
    worker: bool = False,
    before_report: Callable[[], None] | None = None,
) -> None:
    from labelflip.study.robust_spec import is_robust_spec

    if spec_path is not None and is_robust_spec(spec_path):  # `kind: robust`: the SAE paper's Tables 2-4
        if workers not in ("1", "auto"):
            fail_cleanly(fail("labelflip study run", "--workers", "1 for a robust spec (kind: robust runs in one "
                              "process)", workers, "leave --workers out."))  # fmt: skip
        return _run_robust(spec_path, overrides, sets, report=report, tables=tables)
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    rank = int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0  # torchrun: rank 0 speaks
    try:
        Runtime.from_options(overrides.get("runtime", {}), owner="labelflip", prefix="--")  # --device, --precision
        spec = load_spec(spec_path, overrides=overrides, sets=sets)
        Runtime(**spec.runtime).resolve_device(_SPEC, "runtime.device (--device)")  # before any training
        precheck(spec)
        n = 1 if launched_by_torchrun() else _workers(workers, spec)
        if rank == 0 and not worker:
            threads = worker_threads(n)
            on = f" on {n} worker processes, {threads} torch thread(s) each; rank 0's progress shown" if n > 1 else ""
            console.print(f"study [bold]{spec.name}[/] -> {spec.output} (config hash {spec.config_hash()}){on}")
        if n > 1:
            status = run_local_workers(_study_args(spec_path, overrides, sets, cache), n)
            if status != 0:
                raise LabelflipError(
                    f"a worker process failed (exit status {status}; its error is above). Every finished unit is "
                    "stored. Fix: mend what the error names and run the same command again to resume, or add "
                    "--workers 1 to run in this process."
                )
        else:
            with LineProgress() as prog, use_probe_cache(probe_cache(not cache)):  # profiles, correlations: reused
                run_study(spec, progress=prog if rank == 0 else None)
        if rank != 0 or worker:
            return
        if before_report is not None:
            before_report()
        if tables:
            _print_tables(Path(spec.output))
        if report:
            console.print(f"report: {build_report(spec.output)}")
    except LabelflipError as exc:
        if not isinstance(exc, RankFailedError):  # another rank's failure: that rank says what it was
            fail_cleanly(exc)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        if rank == 0 and not worker:
            err_console.print("interrupted: every finished unit is stored; run the same command again to resume.")
        raise typer.Exit(code=130) from None
    console.print(f"finished in {time.perf_counter() - start:.1f} s")


def _run_robust(spec_path: Path, overrides: dict[str, Any], sets: list[str], *, report: bool, tables: bool) -> None:
    """Run or resume a robust study spec, print its tables (``tables``) and write its report (``report``)."""
    from labelflip.report.robust import build_robust_report, open_robust_study, robust_tables
    from labelflip.report.robust_tables import scalar_rich
    from labelflip.study.robust_runner import run_robust_study
    from labelflip.study.robust_spec import load_robust_spec

    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    try:
        options = {"samples": "--samples", "models": "--models", "methods": "--methods", "runtime": "--device/"
                   "--precision (robust studies train on the CPU)", "profile": "--probe-samples"}  # fmt: skip
        given = [k for k in overrides if k != "output" and overrides[k] is not None]
        if given:
            raise fail("labelflip study run", options.get(given[0], given[0]), "left out for a robust spec (kind: "
                       "robust)", overrides[given[0]], "use --set, e.g. --set evaluation.samples=200.")  # fmt: skip
        spec = load_robust_spec(spec_path, overrides={"output": overrides.get("output")}, sets=sets)
        console.print(f"robust study [bold]{spec.name}[/] -> {spec.output} (config hash {spec.config_hash()})")
        with LineProgress() as prog:
            run_robust_study(spec, progress=prog)
        if tables:
            store, stored_spec = open_robust_study(spec.output)
            with store:
                for table in robust_tables(store, stored_spec).values():
                    console.print(scalar_rich(table))
        if report:
            console.print(f"report: {build_robust_report(spec.output)}")
    except LabelflipError as exc:
        fail_cleanly(exc)
    except KeyboardInterrupt:
        err_console.print("interrupted: every finished unit is stored; run the same command again to resume.")
        raise typer.Exit(code=130) from None
    console.print(f"finished in {time.perf_counter() - start:.1f} s")


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
    device: SpecDevice = None,
    precision: SpecPrecision = None,
    probe_samples: Annotated[
        int | None, typer.Option(help="images of the profile and correlation probes (default: the spec's)")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help=NO_CACHE_HELP)] = False,
    workers: Annotated[str, typer.Option(help=WORKERS_HELP + " (default: 1)")] = "1",
    worker: Annotated[
        str | None, typer.Option(hidden=True, help="a rank of --workers: the parent's overrides, JSON (default: none)")
    ] = None,
    tables: Annotated[bool, typer.Option(help="print the result tables in the terminal too")] = False,
) -> None:
    """Run (or resume) a study; an interrupted run continues where it stopped when run again."""
    overrides = _overrides(out, samples, models_, methods, {"device": device, "precision": precision})
    try:
        overrides = _probe_overrides(overrides, probe_samples, "labelflip study run")
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    if worker is not None:  # a rank of `--workers N`: the parent checked and resolved the options
        overrides = json.loads(worker)
    _run(spec_path, overrides, set_ or [], report=report, tables=tables, cache=not no_cache, workers=workers,
         worker=worker is not None)  # fmt: skip


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
