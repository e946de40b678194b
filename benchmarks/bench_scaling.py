"""Strong scaling of a sharded study over torchrun processes (gloo on CPU, NCCL on GPUs); see docs/benchmarks.md.

One fixed study (a built-in model, the demo's budget grid, ``--samples`` samples in chunks of ``--chunk``) is run
by ``torchrun --standalone --nproc_per_node=W -m labelflip study run`` for each W in ``--worlds``, each process
single-threaded (``OMP_NUM_THREADS=1``), every run starting from the same prepared store: the model's profile,
correlations and attackability already stored, no result rows. Each run's merged rows are checked equal (every
column but the timing) to a single-process reference run. Printed per W:

* ``wall``: the torchrun command's wall time (interpreter start, imports, process group, model load, units, merge);
* ``fixed``: the wall time of the same command on the finished directory (everything but the units);
* ``units = wall - fixed``, the sharded part, and its speed-up over W = 1 and parallel efficiency (speed-up / W).

Usage: ``python benchmarks/bench_scaling.py [--worlds 1 2 4] [--samples 24] [--chunk 2] [--model asl-cnn]
[--set key=value ...]`` (the preparation is lightened by :data:`LIGHT`; it is not timed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import astuple
from pathlib import Path

import torch

from labelflip.study import DEMO_SPEC, ResultsStore, load_spec, run_study

ROOT = Path(__file__).resolve().parent.parent
#: lighter preparation than the demo's (the artefacts are computed once, outside the timed runs, but still cost)
LIGHT = ("profile.samples=16", "correlations.samples=8", "attackability.per_label=0")


def _rows(db: Path) -> list[tuple]:
    with ResultsStore(db, readonly=True) as store:
        return [astuple(r)[:-1] for r in store.rows()]


def _torchrun(world: int, out: Path, cli: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
           "-m", "labelflip", "study", "run", str(DEMO_SPEC), *cli, "--out", str(out), "--no-report"]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"torchrun with {world} processes failed:\n{done.stderr[-4000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--model", default="asl-cnn")
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--chunk", type=int, default=2)
    ap.add_argument("--methods", default="bce,slam,random,class:0.5")
    ap.add_argument("--set", dest="sets", action="append", default=list(LIGHT), help="spec override (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary output directories")
    args = ap.parse_args()
    sets = [*args.sets, f"chunk={args.chunk}"]
    cli = ["--models", args.model, "--samples", str(args.samples), "--methods", args.methods]
    cli += [item for kv in sets for item in ("--set", kv)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    try:
        overrides = {"output": str(tmp / "reference"), "models": [args.model], "samples": {"count": args.samples},
                     "methods": args.methods.split(",")}  # fmt: skip
        spec = load_spec(DEMO_SPEC, overrides=overrides, sets=sets)
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        ctx = run_study(spec)  # trains the model if not cached, measures its artefacts, runs every unit
        print(f"reference (one process, no torchrun, artefacts included): {time.perf_counter() - t0:.1f} s, "
              f"{len(ctx.units)} units, config {spec.config_hash()}")  # fmt: skip
        reference = _rows(tmp / "reference" / "results.sqlite")
        template = tmp / "prepared"
        template.mkdir()
        shutil.copy(tmp / "reference" / "results.sqlite", template / "results.sqlite")
        with sqlite3.connect(template / "results.sqlite") as db:  # artefacts stay, results go
            db.execute("DELETE FROM results")
            db.execute("DELETE FROM artefacts WHERE kind = 'examples' OR kind LIKE 'gamma:%'")
        print("\n| processes | wall (s) | fixed (s) | units (s) | speed-up | efficiency |\n|---|---|---|---|---|---|")
        base = None
        for world in args.worlds:
            out = tmp / f"w{world}"
            shutil.copytree(template, out)
            wall = _torchrun(world, out, cli)
            if _rows(out / "results.sqlite") != reference:
                raise SystemExit(f"{world} processes: the merged rows differ from the single-process run's")
            fixed = _torchrun(world, out, cli)
            units = wall - fixed
            base = units if base is None else base
            speedup = base / units
            print(f"| {world} | {wall:.1f} | {fixed:.1f} | {units:.1f} | {speedup:.2f} | {speedup / world:.2f} |")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ntorch {torch.__version__}, {os.cpu_count()} CPUs, one thread per process")


if __name__ == "__main__":
    main()
