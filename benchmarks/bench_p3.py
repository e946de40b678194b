"""P3 = the built-in study's attack work, done the authors' way ÷ done by labelflip (printed, never asserted; the
lead records the numbers in docs/benchmarks.md). Target (issue 12): >= 10x on CPU.

* **ours**: the demo study's attack calls (labelflip/study/demo.yaml): per model (asl-cnn, q2l-cnn), per method
  (BCE, Linear, SLAM, random, CLASS gamma 0 / 0.5 / 1), per chunk of ``chunk`` samples, one call at all seven
  budgets (5-100 % of the flip profile's eps_max), as ``labelflip.study.execute`` makes them. BCE and Linear share one
  trajectory across budgets; the subset attacks share one across the budgets whose subset is every label. Variants:
  ``--stack off`` one batch per budget for the trajectories that cannot share (SLAM's budgets, the distinct
  subsets); ``--stack on`` those stacked in one batch (the engine's default); ``--stack both`` times both; ``--reuse``
  adds stacked with the study's sharing across methods (``reuse=True``: the k = K budgets of CLASS and random subsets
  are taken from BCE's trajectory of the same chunk), which is what ``labelflip study run`` and ``labelflip demo`` do.
* **authors**: the same model, samples, methods and budgets, the way the authors' code runs them: one image at a
  time (batch 1), every budget from scratch (one attack call per sample and budget: no shared trajectory, no
  stacking, its own clean pass and evaluation). Random subsets are drawn per call, so they are other subsets of the
  same sizes (same work).

The authors' way is slow (about 2000 single-image steps per sample, method and model), so it is timed on the first
``--authors-samples`` samples and **extrapolated linearly** to all samples: its work is one independent run per
(sample, budget), so its time is linear in the number of samples (apart from timer noise). The output says so.
Times are the minimum of ``--repeats`` runs (a loaded machine only ever adds time); CPU time of this process is
printed too. Profiles and correlations (analysis, not attack work) come from a finished demo run (``--run``,
default ``labelflip-runs/demo``) or are computed into it first.

Usage: ``python benchmarks/bench_p3.py [--run DIR] [--samples 24] [--chunk 12] [--authors-samples 2] [--stack both]
[--reuse] [--no-authors] [--threads 2] [--repeats 1]`` (the P3 in docs/benchmarks.md: ``--samples 40 --chunk 20``, the
demo's size until 2026-11-22)
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from labelflip.attacks import create_attack
from labelflip.attacks.mifgsm import CAPTURES
from labelflip.study import DEMO_SPEC, ResultsStore, load_spec
from labelflip.study.inputs import engine_options
from labelflip.study.runner import _prepare_study, _samples  # the study's own preparation (private helpers)

_HOW = {False: " (per-budget batches)", True: " (stacked)", "reuse": " (stacked + reuse)"}


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """``(min wall s, min CPU s of this process, last result)`` over ``repeats`` runs."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), out


def _attack(spec: Any, method: str, pm: Any, stack: bool, reuse: bool = False) -> Any:
    options = {**engine_options(method, spec.attack), "stack": stack, "reuse": reuse}
    return create_attack(method, pm.model, profile=pm.profile, correlations=pm.correlations, seed=spec.seeds[0],
                         heldout=pm.heldout, norm=spec.norm, **options)  # fmt: skip


def ours(
    spec: Any, method: str, pm: Any, x: torch.Tensor, idx: torch.Tensor, stack: bool, reuse: bool = False
) -> torch.Tensor:
    """The study's calls for one model and method: one call per chunk at all budgets; flips ``(B, N)``."""
    attack = _attack(spec, method, pm, stack, reuse)
    flips = []
    for lo in range(0, x.shape[0], spec.chunk):
        hi = min(x.shape[0], lo + spec.chunk)
        flips.append(attack(x[lo:hi], pm.budgets, sample_ids=idx[lo:hi]).flips)
    return torch.cat(flips, dim=1)


def authors(spec: Any, method: str, pm: Any, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """One image at a time, every budget from scratch; flips ``(B, n)``."""
    attack = _attack(spec, method, pm, stack=False)
    flips = torch.zeros(len(pm.budgets), x.shape[0], dtype=torch.int64)
    for i in range(x.shape[0]):
        for b, eps in enumerate(pm.budgets):
            flips[b, i] = attack(x[i : i + 1], [eps], sample_ids=idx[i : i + 1]).flips[0, 0]
    return flips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="labelflip-runs/demo", help="a demo study's output (artefacts reused)")
    parser.add_argument("--samples", type=int, default=None, help="samples per model (default: the demo's 24)")
    parser.add_argument("--chunk", type=int, default=None, help="samples per unit (default: the demo's 12)")
    parser.add_argument("--authors-samples", type=int, default=2, help="samples timed the authors' way")
    parser.add_argument("--stack", choices=("on", "off", "both"), default="both")
    parser.add_argument(
        "--reuse", action="store_true", help="also time ours stacked with reuse of weight-free trajectories (CAPTURES)"
    )
    parser.add_argument("--no-authors", action="store_true", help="skip the authors' way (ours only)")
    parser.add_argument("--models", default=None, help="comma-separated (default: the demo's)")
    parser.add_argument("--methods", default=None, help="comma-separated (default: the demo's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of 'ours' per setting (minimum is kept)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides: dict[str, Any] = {"output": args.run}
    if args.samples:
        overrides["samples"] = {"count": args.samples}
    if args.chunk:
        overrides["chunk"] = args.chunk
    if args.models:
        overrides["models"] = args.models.split(",")
    if args.methods:
        overrides["methods"] = args.methods.split(";" if ";" in args.methods else ",")
    spec = load_spec(DEMO_SPEC, overrides=overrides)
    Path(args.run).mkdir(parents=True, exist_ok=True)
    data, idx, x = _samples(spec)
    with ResultsStore(Path(args.run) / "results.sqlite") as store:
        prepared = _prepare_study(store, spec, data, idx, None, write=False)
    n, m = x.shape[0], min(args.authors_samples, x.shape[0])
    stacks: list[Any] = {"on": [True], "off": [False], "both": [False, True]}[args.stack]
    if args.reuse:
        stacks.append("reuse")  # stacked, and weight-free trajectories reused across the methods' calls
    load = os.getloadavg()
    print(
        f"device: cpu ({platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads), load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    n_budgets = len(spec.budgets["fractions"])
    print(
        f"work: {len(prepared)} models x {len(spec.methods)} methods x {n} samples x {n_budgets} budgets, chunk "
        f"{spec.chunk}; authors' way timed on {m} samples, extrapolated x{n / m:g}"
    )
    total = {s: [0.0, 0.0] for s in stacks}
    total_authors = [0.0, 0.0]
    CAPTURES.clear()
    for name, pm in prepared.items():
        steps = create_attack("bce", pm.model).steps_for(pm.budgets, x)
        print(f"\n{name}: eps_max {pm.profile.eps_max:.4f}, steps per budget {steps} (sum {sum(steps)})")
        for method in spec.methods:
            line = f"  {method:12s}"
            flips_ours = None
            for s in stacks:
                run = partial(ours, spec, method, pm, x, idx, bool(s), s == "reuse")
                # reuse: timed once (a repeat would find its own trajectories in the cache)
                wall, cpu, flips_ours = _timed(run, 1 if s == "reuse" else args.repeats)
                total[s][0] += wall
                total[s][1] += cpu
                line += f" ours{_HOW[s]} {wall:7.1f} s (cpu {cpu:7.1f})"
            if args.no_authors:
                print(line, flush=True)
                continue
            wall, cpu, flips_auth = _timed(partial(authors, spec, method, pm, x[:m], idx[:m]), 1)
            total_authors[0] += wall * n / m
            total_authors[1] += cpu * n / m
            same = int((flips_auth == flips_ours[:, :m]).sum())
            line += f" | authors {wall:7.1f} s on {m} (x{n / m:g} = {wall * n / m:8.1f} s)"
            line += f" | flips agree on {same}/{flips_auth.numel()} (sample, budget) pairs"
            print(line, flush=True)
    print("\ntotals (attack work of the whole study):")
    wall_a, cpu_a = total_authors
    print(f"  authors' way (extrapolated from {m} of {n} samples): {wall_a:9.1f} s wall, {cpu_a:9.1f} s CPU")
    for s in stacks:
        wall, cpu = total[s]
        ratio = "" if args.no_authors else f" -> P3 = {wall_a / wall:.1f}x wall, {cpu_a / cpu:.1f}x CPU (target >= 10x)"
        print(f"  ours{_HOW[s]}: {wall:9.1f} s wall, {cpu:9.1f} s CPU{ratio}")


if __name__ == "__main__":
    main()
