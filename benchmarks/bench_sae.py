"""Cost of the SAE-paper machinery (printed, never asserted; results go to docs/benchmarks.md).

S1 = SAE wall time for a batch / one forward+backward-to-input of the same batch (the SAE needs one forward and
     one batched backward over the m logits, so the ideal is about m/2..m, less where vmap batches well).
S2 = one ARM-SAE training step / one plain training step, same model, batch and loss (target <= m + 3: the m
     per-label gradients, one double-backprop VJP and the backward through it).
G1 = GASE time per sample with the exact min-norm oracle (linear model on yeast-sized data, L2), next to the
     exhaustive enumeration and the L-inf MILP on a 10-label subset.

Models are freshly initialised (timing does not depend on the weights): the built-in image architectures at
32x32 (asl-cnn: m = 24) and a linear model on 103 features, 14 labels (yeast's shape; the real yeast file is
used when ../shared/data/mulan is present).

Usage: ``python benchmarks/bench_sae.py [--batch 32] [--repeats 5] [--samples 40] [--threads 1]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from labelflip.data import TabularConfig, load_mulan, make_tabular
from labelflip.estimators import exact_max_flips, gase, sae
from labelflip.models import MultiLabelModel
from labelflip.models.architectures import build_architecture
from labelflip.robust import RobustTrainConfig, create_regulariser, tabular_model, train_robust
from labelflip.robust.trainer import _step

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mulan" / "yeast.arff.gz"


def _time_interleaved(fns: dict[str, object], repeats: int) -> dict[str, float]:
    """Median wall time of each ``fn()``, runs interleaved round-robin after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_image(arch: str, kwargs: dict, batch: int, repeats: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_architecture(arch, 24, **kwargs)
    model = MultiLabelModel(net)
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = (torch.rand(batch, 24, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    net.eval()

    def fwd_bwd() -> None:
        xs = x.clone().requires_grad_(True)
        torch.autograd.grad(net(xs).sum(), xs)

    t = _time_interleaved({"fb": fwd_bwd, "sae": lambda: sae(model, x, batch_size=batch)}, repeats)
    print(f"{arch}: batch {batch}, m = 24")
    print(f"  forward+backward-to-input : {t['fb'] * 1e3:8.1f} ms")
    print(f"  SAE                       : {t['sae'] * 1e3:8.1f} ms ({t['sae'] / batch * 1e3:.2f} ms per sample)")
    print(f"  S1 SAE / fwd+bwd          : {t['sae'] / t['fb']:8.2f}")
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: the weights stay put between repeats
    plain = create_regulariser("none")
    arm = create_regulariser("arm-sae:0.01")
    cfg = RobustTrainConfig(loss="asl")
    t = _time_interleaved(
        {"plain": lambda: _step(net, x, y, cfg, plain, opt), "arm": lambda: _step(net, x, y, cfg, arm, opt)}, repeats
    )
    print(f"  plain training step       : {t['plain'] * 1e3:8.1f} ms")
    print(f"  ARM-SAE training step     : {t['arm'] * 1e3:8.1f} ms")
    print(f"  S2 ARM-SAE / plain step   : {t['arm'] / t['plain']:8.2f}   (target <= m + 3 = 27)")


def bench_linear(samples: int, repeats: int) -> None:
    if SHARED.is_file():
        splits, name = load_mulan(SHARED), "yeast"
    else:
        splits, name = make_tabular(TabularConfig(n=2417, num_features=103, num_labels=14)), "synthetic 103x14"
    trained = train_robust("linear_multilabel", splits, RobustTrainConfig(epochs=20, patience=5))
    model = tabular_model(trained.module)
    x = splits.test.x[:samples]
    xb = splits.train.x[:64]
    yb = splits.train.y[:64]
    opt = torch.optim.SGD(trained.module.parameters(), lr=0.0)
    cfg = RobustTrainConfig()
    t = _time_interleaved(
        {
            "plain": lambda: _step(trained.module, xb, yb, cfg, create_regulariser("none"), opt),
            "arm": lambda: _step(trained.module, xb, yb, cfg, create_regulariser("arm-sae:0.01"), opt),
        },
        repeats,
    )
    print(f"linear model on {name} (d = {x.shape[1]}, m = {splits.train.num_labels}), batch 64:")
    ratio, arm_ms, plain_ms = t["arm"] / t["plain"], t["arm"] * 1e3, t["plain"] * 1e3
    print(f"  S2 ARM-SAE / plain step   : {ratio:8.2f}   ({arm_ms:.2f} / {plain_ms:.2f} ms)")
    for eps in (0.5, 1.0, 2.0):
        res = gase(model, x, eps)
        print(
            f"  G1 GASE exact oracle, L2 eps={eps}: {res.seconds / samples * 1e3:7.2f} ms per sample, "
            f"C_a {res.mean():.2f}, {float(res.oracle_calls.double().mean()):.1f} oracle calls per sample"
        )
    labels = list(range(10))
    for eps in (1.0, 2.0):
        g = gase(model, x, eps, labels=labels)
        ex = exact_max_flips(model, x, eps, labels=labels)
        gap = (ex.flips - g.flips).double()
        print(
            f"  10-label subset, L2 eps={eps}: GASE {g.seconds / samples * 1e3:6.2f} ms/sample (C_a {g.mean():.2f}); "
            f"enumeration {ex.seconds / samples * 1e3:7.2f} ms/sample (C* {ex.mean():.2f}); gap {gap.mean():.3f}"
        )
    for eps in (0.05, 0.1):
        g = gase(model, x, eps, norm="linf")
        ex = exact_max_flips(model, x, eps, norm="linf")
        print(
            f"  all labels, L-inf eps={eps}: GASE {g.seconds / samples * 1e3:6.2f} ms/sample (C_a {g.mean():.2f}); "
            f"MILP {ex.seconds / samples * 1e3:7.2f} ms/sample (C* {ex.mean():.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable ratios on a shared box)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"device: cpu ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)"
    )
    bench_image("asl_convnet", {"width": 24}, args.batch, args.repeats)
    bench_image(
        "query_label_net",
        {"width": 16, "num_layers": 1, "num_heads": 4, "dim_feedforward": 128, "dropout": 0.1},
        args.batch,
        args.repeats,
    )
    bench_linear(args.samples, args.repeats)


if __name__ == "__main__":
    main()
