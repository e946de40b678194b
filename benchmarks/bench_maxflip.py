"""MaxFlip vs the paper's attacks on the built-in models (issue 13, item 1; see docs/benchmarks.md).

For each built-in model: the study conventions (``labelflip.study.inputs``) give 40 test samples (seed 0), a flip
profile (40 validation samples) and a flip-up correlation matrix (32 samples, eps 0.005); the budgets are the
paper's grid, 5-100 % of the profile's ``eps_max``. Every method attacks the same samples at every budget:

* BCE, Linear (MI-FGSM), SLAM (needs the profile), CLASS(gamma) for each ``--gammas`` value (needs the profile and
  the correlations); ``CLASS(best γ)`` takes, per budget, the gamma with the highest mean flips **on the
  evaluation samples themselves** (an oracle choice that favours CLASS);
* MaxFlip (defaults) and its ablation ``maxflip:select=false`` (the same step-size schedule and checkpoint, every
  label targeted).

Printed: mean ± std flips per budget, paired t-tests vs BCE with Holm (``compare_methods``), MaxFlip vs the best
of BCE / Linear / SLAM / CLASS(best γ) per budget (paired t-tests, Holm over the 7 budgets + Total), the
forward/backward passes per budget and per grid, and wall times. ``--json`` writes every per-sample flip count.

Usage: ``python benchmarks/bench_maxflip.py [--models asl-cnn,q2l-cnn] [--samples 40] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from labelflip.attacks import create_attack
from labelflip.data import default_dataset
from labelflip.models import MultiLabelModel
from labelflip.report.statistics import StudyTable, compare_methods
from labelflip.study.inputs import measure_correlations_for, measure_profile, select_samples
from labelflip.zoo import load_builtin

FRACTIONS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
COLUMNS = [f"{int(f * 100)}%" for f in FRACTIONS]
PAPER = ["BCE", "Linear", "SLAM", "CLASS(best γ)"]


def _cell(table: StudyTable, method: str, col: str) -> str:
    c = table.cells[method][col]
    mark = "†" if c.significant and c.diff is not None and c.diff > 0 else ("‡" if c.significant else "")
    return f"{c.mean:.2f} ± {c.std_pop:.2f}{mark}"


def _print_table(table: StudyTable, note: str) -> None:
    print("| method | " + " | ".join(table.columns) + " |")
    print("|---" + "|---:" * len(table.columns) + "|")
    for m in table.methods:
        print(f"| {m} | " + " | ".join(_cell(table, m, col) for col in table.columns) + " |")
    print(note)


def evaluate(name: str, samples: int, gammas: list[float], ablation: bool) -> dict:
    data = default_dataset()
    t0 = time.perf_counter()
    model = MultiLabelModel(load_builtin(name, data=data).module)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    profile = measure_profile(model, data, samples=40, seed=0)
    t_profile = time.perf_counter() - t0
    t0 = time.perf_counter()
    corr = measure_correlations_for(model, data, samples=32, seed=0, eps=0.005)
    t_corr = time.perf_counter() - t0
    x = data.test.x[select_samples(data.test, samples, 0)]
    budgets = profile.budgets(FRACTIONS)
    specs = {"BCE": "bce", "Linear": "linear", "SLAM": "slam"}
    specs.update({f"CLASS(γ={g:g})": f"class:{g:g}" for g in gammas})
    specs["MaxFlip"] = "maxflip"
    if ablation:
        specs["MaxFlip, no re-selection"] = "maxflip:select=false"
    flips: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    steps: dict[str, list[int]] = {}
    for label, spec in specs.items():
        t0 = time.perf_counter()
        res = create_attack(spec, model, profile=profile, correlations=corr)(x, budgets)
        seconds[label] = time.perf_counter() - t0
        flips[label] = res.flips.numpy().astype(float)
        steps[label] = res.steps.tolist()
        print(f"  {name} {label:26s} {seconds[label]:6.1f}s  " + " ".join(f"{v:6.2f}" for v in res.mean_flips()))
    class_labels = [f"CLASS(γ={g:g})" for g in gammas]
    best_gamma = [max(gammas, key=lambda g, j=j: (flips[f"CLASS(γ={g:g})"][j].mean(), -g)) for j in range(7)]
    flips["CLASS(best γ)"] = np.stack([flips[f"CLASS(γ={g:g})"][j] for j, g in enumerate(best_gamma)])
    return {
        "model": name,
        "eps_max": profile.eps_max,
        "budgets": budgets,
        "samples": samples,
        "flips": flips,
        "steps": steps,
        "seconds": seconds,
        "best_gamma": best_gamma,
        "class_labels": class_labels,
        "setup_s": {"load": t_load, "profile": t_profile, "correlations": t_corr},
    }


def report(r: dict, ablation: bool) -> dict:
    flips, name = r["flips"], r["model"]
    print(f"\n### {name}: eps_max = {r['eps_max']:.4f}, {r['samples']} samples")
    print("budgets: " + ", ".join(f"{c} = {e:.4f}" for c, e in zip(COLUMNS, r["budgets"], strict=True)))
    print("passes n per budget (all methods): " + ", ".join(str(s) for s in r["steps"]["BCE"]))
    print("CLASS(best γ) per budget: " + ", ".join(f"{g:g}" for g in r["best_gamma"]))
    rows = ["BCE", "Linear", "SLAM", r["class_labels"][0], "CLASS(best γ)", "MaxFlip"]
    rows += ["MaxFlip, no re-selection"] if ablation else []
    table = compare_methods({m: flips[m] for m in rows}, COLUMNS, baseline="BCE")
    print()
    _print_table(table, "\nmean ± population std; † / ‡ significantly higher / lower than BCE (paired t, Holm).")
    best_label = []
    best = np.empty_like(flips["BCE"])
    for j in range(len(COLUMNS)):
        top = max(PAPER, key=lambda m, j=j: flips[m][j].mean())
        best_label.append(top)
        best[j] = flips[top][j]
    vs = compare_methods({"best of paper": best, "MaxFlip": flips["MaxFlip"]}, COLUMNS, baseline="best of paper")
    print("\nMaxFlip vs the best of BCE / Linear / SLAM / CLASS(best γ) per budget (paired t, Holm over 8 tests):\n")
    print("| budget | best of paper | its mean | MaxFlip | diff [95% CI] | p (Holm) |")
    print("|---|---|---:|---:|---:|---:|")
    verdict = {"ge_everywhere": True, "significant": []}
    for col, top in zip([*COLUMNS, "Total"], [*best_label, "sum"], strict=True):
        c, b = vs.cells["MaxFlip"][col], vs.cells["best of paper"][col]
        print(
            f"| {col} | {top} | {b.mean:.2f} | {c.mean:.2f} | {c.diff:+.2f} [{c.diff_ci_low:+.2f}, "
            f"{c.diff_ci_high:+.2f}] | {c.p_holm:.2g} |"
        )
        if col != "Total":
            verdict["ge_everywhere"] &= c.mean >= b.mean
            if c.significant and c.diff > 0:
                verdict["significant"].append(col)
    n = r["steps"]["BCE"]
    print(
        f"\npasses per grid: BCE and Linear share one trajectory, {max(n)} forward+backward; SLAM, each CLASS(γ) "
        f"and MaxFlip run each budget separately, {sum(n)} (MaxFlip: {sum(n)} forward, {sum(n) - len(n)} "
        f"backward). SLAM and CLASS also need the profile ({r['setup_s']['profile']:.0f} s) and CLASS the "
        f"correlations ({r['setup_s']['correlations']:.0f} s)."
    )
    print("wall s: " + ", ".join(f"{m} {s:.1f}" for m, s in r["seconds"].items()))
    verdict["low_two_significant"] = COLUMNS[0] in verdict["significant"] and COLUMNS[1] in verdict["significant"]
    print(f"verdict {name}: {verdict}")
    return verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="asl-cnn,q2l-cnn")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--gammas", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--json", default=None, help="write per-sample flips, passes and timings here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gammas = [float(g) for g in args.gammas.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}")
    results, verdicts = [], {}
    for name in args.models.split(","):
        results.append(evaluate(name, args.samples, gammas, not args.no_ablation))
    for r in results:
        verdicts[r["model"]] = report(r, not args.no_ablation)
    done = all(v["ge_everywhere"] for v in verdicts.values()) and any(
        v["low_two_significant"] for v in verdicts.values()
    )
    print(f"\ndone-when (>= best of paper everywhere, significant at 5 % and 10 % on >= 1 model): {done}")
    if args.json:
        out = [{**r, "flips": {m: v.tolist() for m, v in r["flips"].items()}} for r in results]
        with open(args.json, "w") as fh:
            json.dump({"results": out, "verdicts": verdicts}, fh, indent=1)


if __name__ == "__main__":
    main()
