"""Forward+backward throughput of the paper's real architectures at their resolution (printed, never asserted;
results go to docs/benchmarks.md).

One iteration = forward pass on a batch, BCE against a fixed random target, gradient with respect to the input
(what every MI-FGSM step computes; parameters do not require gradients). Random weights (timing only).
Reports the median over ``--iters`` timed iterations after one warm-up.

Usage: ``python benchmarks/bench_real_models.py [--models resnet101,tresnet_l] [--size 448] [--batch 2]
[--iters 3] [--device cpu] [--threads N]``; ``--models`` also takes ``query2label_r101`` and ``tresnet_xl``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from labelflip.models.architectures import build_architecture
from labelflip.models.pretrained import preprocessing

K = 80


def bench(arch: str, size: int, batch: int, iters: int, device: str) -> tuple[float, float, float]:
    """(build seconds, median wall seconds and median process CPU seconds per forward+backward iteration)."""
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        kwargs = {"image_size": size} if arch.startswith("query2label") else {}
        net = build_architecture(arch, K, **kwargs).eval().to(device)
    net.requires_grad_(False)
    built = time.perf_counter() - start
    pre = preprocessing(arch)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, size, size, generator=gen).to(device)
    target = (torch.rand(batch, K, generator=gen) > 0.9).float().to(device)
    mean = std = None
    if pre["mean"] is not None:
        mean = torch.tensor(pre["mean"], device=device).view(1, 3, 1, 1)
        std = torch.tensor(pre["std"], device=device).view(1, 3, 1, 1)

    def step() -> None:
        xi = x.clone().requires_grad_(True)
        inp = xi if mean is None else (xi - mean) / std
        loss = F.binary_cross_entropy_with_logits(net(inp), target)
        (grad,) = torch.autograd.grad(loss, xi)
        assert torch.isfinite(grad).all()

    times, cpu = [], []
    for i in range(iters + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:  # the first iteration is a warm-up
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return built, statistics.median(times), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet101,tresnet_l")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device {args.device}, "
        f"{torch.get_num_threads()} threads, batch {args.batch}, {args.size}x{args.size}, K={K}"
    )
    if hasattr(os, "getloadavg"):
        print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| model | build s | wall s / iteration | CPU s / iteration | images/s (forward + input gradient) |")
    print("|---|---|---|---|---|")
    for arch in [m.strip() for m in args.models.split(",") if m.strip()]:
        built, sec, cpu = bench(arch, args.size, args.batch, args.iters, args.device)
        print(f"| {arch} | {built:.1f} | {sec:.2f} | {cpu:.2f} | {args.batch / sec:.3f} |")


if __name__ == "__main__":
    main()
