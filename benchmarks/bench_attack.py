"""Speed ratios of the MI-FGSM engine (printed, never asserted; results go to docs/benchmarks.md).

P1 = attack wall time / raw forward+backward-to-input wall time, same model, batch and step count.
     The raw loop is the irreducible cost: ``n`` times {forward, BCE, gradient w.r.t. the input}.
P2 = time of a 7-budget BCE grid (5..100 % of eps) in one call / time of its largest budget alone.
     With prefix sharing this is ~1; running the budgets separately would cost sum(n_b)/n_max = 3.15.
P1-SLAM (``--slam``): the same 7-budget grid with SLAM (eps-dependent: no prefix sharing), stacked (one batch whose
     rows leave at their budget's step count) / the raw loop over the same rows (the batch shrinking the same way),
     and per budget (one batch after another) / the raw loop per budget; the stacked/per-budget ratio is printed.
     SLAM's profile here is a linear E(eps) reaching K at the largest budget (timing only).

Usage: ``python benchmarks/bench_attack.py [--model asl-cnn] [--batch 32] [--steps 64] [--device cpu] [--slam]
[--threads N] [--stat median|min]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from labelflip import zoo
from labelflip.attacks import ALPHA_LINF, MIFGSM, SLAMAttack, num_steps
from labelflip.estimate import PolynomialEstimate
from labelflip.models import MultiLabelModel


def _time_interleaved(fns: dict[str, object], repeats: int, stat: str = "median") -> dict[str, float]:
    """Median (or minimum) wall time of each ``fn()``; runs are interleaved round-robin (after one warm-up each) so
    that drift of the machine (frequency, other load) affects every measurement alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - start)
    agg = statistics.median if stat == "median" else min
    return {k: agg(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="asl-cnn")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64, help="MI-FGSM steps of the largest budget")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--slam", action="store_true", help="also P1 of SLAM's grid, stacked and per budget")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--stat", choices=("median", "min"), default="median")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    built = zoo.load_builtin(args.model)
    net = built.module.to(args.device).eval()
    model = MultiLabelModel(net)
    x = zoo.default_dataset().test.x[: args.batch].to(args.device)
    with torch.no_grad():
        target = (torch.sigmoid(net(x)) <= 0.5).float()
    eps_max = args.steps * ALPHA_LINF

    def raw() -> None:
        xk = x
        for _ in range(args.steps):
            xk = xk.detach().requires_grad_(True)
            loss = F.binary_cross_entropy_with_logits(net(xk), target, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xk)
            xk = xk - ALPHA_LINF * grad.sign()

    attack = MIFGSM(model, "bce")
    grid = [f * eps_max for f in (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)]
    grid_steps = [num_steps(e, ALPHA_LINF) for e in grid]

    def raw_rows(stacked: bool) -> None:
        """The raw loop over SLAM's rows: stacked (rows leave at their budget's step count) or budget by budget."""
        for lanes in [grid_steps] if stacked else [[n] for n in grid_steps]:
            for k in range(max(lanes)):
                xk = x.repeat(sum(n > k for n in lanes), 1, 1, 1).requires_grad_(True)
                tk = target.repeat(xk.shape[0] // x.shape[0], 1)
                loss = F.binary_cross_entropy_with_logits(net(xk), tk, reduction="sum")
                torch.autograd.grad(loss, xk)

    fns = {"raw": raw, "one": lambda: attack(x, eps_max), "grid": lambda: attack(x, grid)}
    if args.slam:
        profile = PolynomialEstimate((0.0, target.shape[1] / eps_max), eps_max)
        slam = SLAMAttack(model, profile)
        slam_stacked = SLAMAttack(model, profile, stack=True, max_rows=args.batch * len(grid))
        fns.update(
            raw_stacked=lambda: raw_rows(True),
            raw_budgets=lambda: raw_rows(False),
            slam_stacked=lambda: slam_stacked(x, grid),
            slam_budgets=lambda: slam(x, grid),
        )
    t = _time_interleaved(fns, args.repeats, args.stat)
    t_raw, t_attack, t_grid = t["raw"], t["one"], t["grid"]
    separate = sum(num_steps(e, ALPHA_LINF) for e in grid) / args.steps

    print(
        f"device: {args.device} ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)"
    )
    print(f"model: {args.model}, batch {args.batch}, input {tuple(x.shape[1:])}, {args.steps} steps")
    print(f"raw forward+backward loop : {t_raw * 1e3:9.1f} ms  ({args.batch * args.steps / t_raw:8.0f} img-steps/s)")
    print(f"attack (one budget)       : {t_attack * 1e3:9.1f} ms")
    print(f"attack (7-budget grid)    : {t_grid * 1e3:9.1f} ms")
    print(f"P1 attack / raw           : {t_attack / t_raw:9.3f}   (target <= 1.15)")
    print(f"P2 grid / largest budget  : {t_grid / t_attack:9.3f}   (target <= 1.10; separate runs: {separate:.2f})")
    if args.slam:
        print(f"SLAM grid, {sum(grid_steps)} steps in all (steps {grid_steps}), {args.stat} times:")
        print(f"  raw loop, stacked rows    : {t['raw_stacked'] * 1e3:9.1f} ms")
        print(f"  raw loop, per budget      : {t['raw_budgets'] * 1e3:9.1f} ms")
        print(f"  SLAM stacked              : {t['slam_stacked'] * 1e3:9.1f} ms")
        print(f"  SLAM per budget           : {t['slam_budgets'] * 1e3:9.1f} ms")
        print(f"P1 SLAM stacked / raw      : {t['slam_stacked'] / t['raw_stacked']:9.3f}")
        print(f"P1 SLAM per budget / raw   : {t['slam_budgets'] / t['raw_budgets']:9.3f}")
        print(f"SLAM per budget / stacked  : {t['slam_budgets'] / t['slam_stacked']:9.3f}   (stacking speed-up)")


if __name__ == "__main__":
    main()
