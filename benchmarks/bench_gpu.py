"""GPU benchmarks of the runtime (issue 12 item 4): P1 and P4 on CUDA, and the fp32-vs-bf16 numerics.

P1 = MI-FGSM attack wall time / raw forward+backward-to-input wall time for the same work (same model, runtime,
     batch and step count), fp32 and bf16. The raw loop is the irreducible cost: per step {forward, BCE on float32
     logits, gradient w.r.t. the input}, written in plain torch under the same autocast / channels-last settings.
P4 = attack images/s / bf16 forward+backward images/s of ResNet-101 at 448x448 (labelflip's own
     ``labelflip.models.architectures.resnet``, random weights, channels-last). Attack images/s counts image-steps:
     samples x MI-FGSM steps / wall time; the attack runs under ``Runtime(precision="bf16", channels_last=True,
     batch_size=...)`` (``--batch auto``: sized from free GPU memory). Target >= 0.7.

Without CUDA the GPU figures are printed as "unmeasured: no GPU". ``--tiny`` runs the same code on whatever device
there is (the CPU here) at a tiny size (ResNet-101 at 32x32, batch 2, 2 steps) to prove that it works; such
numbers are not P1/P4 figures.

``--numerics`` measures fp32 vs bf16 (and ``--fp16``) flips of the built-in models (asl-cnn, q2l-cnn; on the CPU
through CPU autocast): BCE and SLAM at the paper's budget fractions (5-100 % of eps_max, eps_max from the fp32 flip
profile probed as in the demo study), on ``--samples`` test samples: the mean abs difference of flips per sample x
budget cell, the fraction of identical cells and the largest difference of mean flips over the table's cells.
The tolerance in :mod:`labelflip.models.runtime` comes from this measurement.

Usage: ``python benchmarks/bench_gpu.py [--tiny] [--batch 32|auto] [--steps 10] [--compile] [--numerics]``
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from labelflip.attacks import ALPHA_LINF, MIFGSM
from labelflip.models import MultiLabelModel, Runtime
from labelflip.models.architectures import build_architecture


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (cuDNN autotuning, autocast weight casts, compilation)
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _resnet101(size: int, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_architecture("resnet101", num_labels=80).eval()
    gen = torch.Generator().manual_seed(1)
    return net.to(device), torch.rand((1, 3, size, size), generator=gen)


def _raw_loop(net: torch.nn.Module, x: torch.Tensor, steps: int, runtime: Runtime) -> Callable[[], None]:
    """``steps`` x {forward, BCE, gradient w.r.t. the input} in plain torch under ``runtime``'s autocast/layout."""
    amp = runtime.amp_dtype
    target = torch.zeros(x.shape[0], 80, device=x.device)

    def run() -> None:
        xs = x.clone()
        for _ in range(steps):
            xi = xs.detach().requires_grad_(True)
            inp = xi.contiguous(memory_format=torch.channels_last) if runtime.channels_last else xi
            with torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = net(inp)
            loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xi)
            xs = xs - ALPHA_LINF * grad.sign()

    return run


def throughput(args: argparse.Namespace, device: torch.device) -> None:
    size, steps = (32, 2) if args.tiny else (args.size, args.steps)
    args.repeats = 1 if args.tiny else args.repeats
    net, x1 = _resnet101(size, device)
    batch = 2 if args.tiny else (None if args.batch == "auto" else int(args.batch))
    print(f"ResNet-101 at {size}x{size}, random weights, {steps} MI-FGSM steps, device {device}")
    for precision in ("fp32", "bf16"):
        runtime = Runtime(precision=precision, channels_last=True, compile=args.compile,
                          batch_size="auto" if batch is None else batch)  # fmt: skip
        model = MultiLabelModel(net, runtime=runtime)
        attack = MIFGSM(model, "bce")
        chunk = batch or max(1, _auto_size(model, x1.to(device)))
        n = 2 * chunk  # two chunks: the attack's chunking is part of what is measured
        x = x1.expand(n, -1, -1, -1).contiguous()
        x = (x + 0.01 * torch.rand(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
        eps = steps * ALPHA_LINF
        t_attack = _median_time(lambda: attack(x, eps), args.repeats)  # noqa: B023
        raw = _raw_loop(net, x[:chunk].to(device), steps, runtime)
        t_raw = _median_time(raw, args.repeats) * (n / chunk)
        ips_attack, ips_raw = n * steps / t_attack, n * steps / t_raw
        print(f"  {precision}: batch {chunk}, attack {t_attack:.3f} s ({ips_attack:.1f} image-steps/s), raw "
              f"forward+backward {t_raw:.3f} s ({ips_raw:.1f} images/s): P1 = {t_attack / t_raw:.2f}")  # fmt: skip
        if precision == "bf16":
            print(
                f"  P4 = attack images/s / bf16 forward+backward images/s = {ips_attack / ips_raw:.2f} (target >= 0.7)"
            )


def _auto_size(model: MultiLabelModel, x: torch.Tensor) -> int:
    from labelflip.models.runtime import estimate_batch_size

    with model.eval_mode():
        return estimate_batch_size(model, x.to(model.device), 4096)


def numerics(args: argparse.Namespace, device: torch.device) -> None:
    from labelflip import zoo
    from labelflip.analysis import PAPER_FRACTIONS
    from labelflip.attacks import SLAMAttack
    from labelflip.study.inputs import measure_profile, select_samples

    data = zoo.default_dataset()
    idx = select_samples(data.test, args.samples, 0)
    x = data.test.x[idx]
    precisions = ["bf16", "fp16"] if args.fp16 else ["bf16"]
    for name in ("asl-cnn", "q2l-cnn"):
        net = zoo.load_builtin(name).module.to(device)
        fp32 = MultiLabelModel(net)
        start = time.perf_counter()
        profile = measure_profile(fp32, data, samples=40, seed=0, exclude=None)
        budgets = [f * profile.eps_max for f in PAPER_FRACTIONS]
        print(f"{name}: eps_max {profile.eps_max:.5f} (fp32 profile, {time.perf_counter() - start:.0f} s)")
        variants = {p: (MultiLabelModel(net, runtime=Runtime(precision=p)), None) for p in precisions}
        variants["fp32, chunks of 7"] = (fp32, 7)  # the noise floor: same fp32 maths, other batch shapes
        makers = {"BCE": lambda m, b: MIFGSM(m, "bce", batch_size=b),
                  "SLAM": lambda m, b, p=profile: SLAMAttack(m, p, batch_size=b)}  # fmt: skip
        for method, make in makers.items():
            ref = make(fp32, None)(x, budgets)
            for label, (model, batch) in variants.items():
                res = make(model, batch)(x, budgets)
                diff = (res.flips - ref.flips).abs().float()
                worst = float((res.flips.float().mean(1) - ref.flips.float().mean(1)).abs().max())
                print(f"  {method:4s} {label}: mean abs diff {diff.mean():.3f} flips/sample, identical "
                      f"{100 * (diff == 0).float().mean():.1f} % of {diff.numel()} cells, max mean-flips diff "
                      f"{worst:.3f} (fp32 mean flips {ref.flips.float().mean(1).min():.2f}..."
                      f"{ref.flips.float().mean(1).max():.2f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="prove it works on this device at a tiny size")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--steps", type=int, default=10, help="MI-FGSM steps")
    parser.add_argument("--batch", default="32", help="samples per chunk, or 'auto'")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--numerics", action="store_true", help="fp32 vs bf16 flips of the built-in models")
    parser.add_argument("--fp16", action="store_true", help="with --numerics: fp16 too")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine()
    print(f"{datetime.date.today()} torch {torch.__version__} on {name} ({torch.get_num_threads()} threads)")
    if args.numerics:
        numerics(args, device)
        return
    if not cuda and not args.tiny:
        print("P1 (GPU): unmeasured: no GPU")
        print("P4 (GPU): unmeasured: no GPU")
        return
    if not cuda:
        print("no GPU: a CPU run at a tiny size (not P1/P4 figures); P1/P4 on a GPU: unmeasured: no GPU")
    throughput(args, device)


if __name__ == "__main__":
    main()
