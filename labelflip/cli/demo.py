"""``labelflip demo``: the packaged demo study (labelflip/study/demo.yaml), then a taste of the SAE paper."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from labelflip._validation import LabelflipError
from labelflip.cli.analysis import NO_CACHE_HELP
from labelflip.cli.common import app, console, fail_cleanly
from labelflip.cli.study import WORKERS_HELP, SpecDevice, SpecPrecision, _overrides, _probe_overrides, _run
from labelflip.study import DEMO_SPEC, ResultsStore, StudySpec, load_spec
from labelflip.study.lock import study_lock

__all__ = ["demo", "set_aside_stale_demo"]


class _SideRun:
    """``python -m labelflip <args>`` in a child process beside this one, its output (stdout and stderr, formatted for
    this terminal's width) kept in a temporary file and printed by :meth:`finish`: the demo runs its SAE-paper taste
    this way while it draws the main report, which keeps one core busy and leaves the other free."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Any = None

    def start(self) -> None:
        """Start the child (once)."""
        if self.proc is not None:
            return
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop(), after finish() read it)
        env = {**os.environ, "COLUMNS": str(console.width), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "labelflip", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def finish(self) -> int:
        """Wait for the child, print its output, return its exit status."""
        if self.proc is None:
            return 0
        status = self.proc.wait()
        self.log.seek(0)
        sys.stdout.write(self.log.read().decode(errors="replace"))
        sys.stdout.flush()
        return status

    def stop(self) -> None:
        """Stop a child still running (this command failed or was interrupted) and drop its output."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        if self.log is not None:
            self.log.close()


def set_aside_stale_demo(out_dir: Path, spec: StudySpec) -> Path | None:
    """Move the demo's default output directory aside when it holds results the demo cannot resume (another config,
    e.g. a newer demo.yaml, or other engine code), so that ``make demo`` after an upgrade runs instead of refusing;
    returns where it went (``<dir>.<its config hash>``, numbered if taken), or None when nothing moved."""
    from labelflip.study.store import engine_hash

    db = out_dir / "results.sqlite"
    if not db.is_file():
        return None
    with study_lock(out_dir), ResultsStore(db, readonly=True) as store:  # refused while a run uses it
        manifest, rows = store.manifest(), store.count()
    same_engine = manifest.get("engine_hash") in (None, engine_hash())
    if rows == 0 or (manifest.get("config_hash") == spec.config_hash() and same_engine):
        return None  # nothing stored, or a resume
    target = out_dir.with_name(f"{out_dir.name}.{manifest.get('config_hash', 'old')}")
    n = 1
    while target.exists():
        n += 1
        target = out_dir.with_name(f"{out_dir.name}.{manifest.get('config_hash', 'old')}-{n}")
    out_dir.rename(target)
    return target


@app.command()
def demo(
    samples: Annotated[
        int | None, typer.Option(help="test samples attacked per model (default: demo.yaml's 24)")
    ] = None,
    models_: Annotated[
        str | None, typer.Option("--models", help="comma-separated models (default: demo.yaml's asl-cnn, q2l-cnn)")
    ] = None,
    methods: Annotated[str | None, typer.Option(help="methods, see `labelflip methods` (default: demo.yaml's)")] = None,
    out: Annotated[str | None, typer.Option(help="output directory (default: labelflip-runs/demo)")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override any spec key, e.g. profile.samples=60 (default: none)")
    ] = None,
    robust: Annotated[
        bool, typer.Option(help="then the SAE paper's taste, study/configs/robust-demo.yaml (into <out>/robust)")
    ] = True,
    device: SpecDevice = None,
    precision: SpecPrecision = None,
    probe_samples: Annotated[
        int | None, typer.Option(help="images of the profile and correlation probes (default: demo.yaml's 40 / 32)")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help=NO_CACHE_HELP)] = False,
    workers: Annotated[str, typer.Option(help=WORKERS_HELP + " (default: auto)")] = "auto",
) -> None:
    """The built-in study (labelflip/study/demo.yaml): train-if-needed both built-in models, probe profiles and
    correlations, run BCE, Linear, SLAM, random subsets and CLASS (gamma 0 / 0.5 / 1) over the paper's budget grid
    (5-100 % of eps_max), with statistics, tables, figures and an HTML report. Resumable like any study. Then, unless
    --no-robust, a taste of the SAE paper (robust-demo.yaml: label correlation vs SAE and GASE, ARM-SAE)."""
    runtime = {"device": device, "precision": precision}
    try:
        overrides = _probe_overrides(
            _overrides(out, samples, models_, methods, runtime), probe_samples, "labelflip demo"
        )
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    from labelflip.study.robust_spec import ROBUST_DEMO_SPEC

    if out is None:  # the default directory: an earlier labelflip's demo there is set aside, not refused
        try:
            spec = load_spec(DEMO_SPEC, overrides=overrides, sets=set_ or [])
            moved = set_aside_stale_demo(Path(spec.output), spec)
        except LabelflipError as exc:
            fail_cleanly(exc)
            return
        if moved is not None:
            console.print(f"{spec.output} held the demo of another labelflip version or config: moved to {moved}")
    robust_out = ["--out", str(Path(out) / "robust")] if out is not None else []
    taste = _SideRun(["study", "run", str(ROBUST_DEMO_SPEC), *robust_out, "--tables"]) if robust else None
    try:  # the taste runs beside the main report (drawing it keeps one core busy), its output printed after
        _run(DEMO_SPEC, overrides, set_ or [], report=True, tables=True, cache=not no_cache, workers=workers,
             before_report=taste.start if taste is not None else None)  # fmt: skip
        if taste is not None:
            taste.start()  # (already started unless the study's report was not written)
            if taste.finish() != 0:
                raise typer.Exit(code=2)
    finally:
        if taste is not None:
            taste.stop()
