"""Speed ratios of the MI-FGSM engine (printed, never asserted; results go to docs/benchmarks.md).

P1 = attack wall time / raw forward+backward-to-input wall time, same model, batch and step count.
     The raw loop is the irreducible cost: ``n`` times {forward, BCE, gradient w.r.t. the input}.
P2 = time of a 7-budget BCE grid (5..100 % of eps) in one call / time of its largest budget alone.
     With prefix sharing this is ~1; running the budgets separately would cost sum(n_b)/n_max = 3.15.

Usage: ``python benchmarks/bench_attack.py [--model asl-cnn] [--batch 32] [--steps 64] [--device cpu]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from labelflip import zoo
from labelflip.attacks import ALPHA_LINF, MIFGSM, num_steps
from labelflip.models import MultiLabelModel


def _time_interleaved(fns: dict[str, object], repeats: int) -> dict[str, float]:
    """Median wall time of each ``fn()``; runs are interleaved round-robin (after one warm-up each) so that
    drift of the machine (frequency, other load) affects every measurement alike."""
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
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="asl-cnn")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64, help="MI-FGSM steps of the largest budget")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

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
    t = _time_interleaved(
        {"raw": raw, "one": lambda: attack(x, eps_max), "grid": lambda: attack(x, grid)}, args.repeats
    )
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


if __name__ == "__main__":
    main()
