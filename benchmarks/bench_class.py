"""P6: CLASS subset-search time relative to the attack it feeds (printed; see docs/benchmarks.md).

Two measurements:

* ``grid`` (K = 80): for each (steps n, subset length k) pair of the paper's derived grid (SPEC-reference-code §8:
  ASL-COCO 5-20 % and Q2L-COCO 5-20 %), time ``class_subsets`` (b = d = 4, gamma = 0.5) for N samples and the
  weighted BCE MI-FGSM attack of n steps on the same N samples, and print search / attack. Models: ``cnn``, the
  built-in ASL-style CNN architecture at 32x32 with an 80-label head (tiny: a worst case for the ratio, since the
  search cost does not depend on the model), and ``resnet18``, a plain-torch ResNet-18 at 224x224 (random
  weights; the scale the paper attacks is still 4x more pixels). Random correlations (timing only).
* ``builtin``: the trained built-in models (asl-cnn, q2l-cnn; K = 24) as the demo study runs them: flip profile
  (40 validation images) and correlations (32) as in ``labelflip/study/demo.yaml``, then ``ClassAttack`` at the
  seven budget fractions on N test images in one call, per gamma; prints ``extra["selection_s"] / elapsed_s``,
  and search / attack per budget alone. The artefacts are cached under ``$LABELFLIP_CACHE/bench_class``.

Times are medians over ``--repeats`` interleaved runs (search, attack, search, ...) after a warm-up.

Usage: ``python benchmarks/bench_class.py [--model cnn|resnet18|builtin|all] [--samples 16] [--repeats 5]
[--threads T]``
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from labelflip.analysis import Profile
from labelflip.analysis.correlation import Correlations, instance_correlation_matrices, measure_correlations
from labelflip.analysis.profile import probe_profile
from labelflip.attacks import ALPHA_LINF, MIFGSM
from labelflip.attacks.selection import class_subsets, subset_length
from labelflip.attacks.subsets import ClassAttack
from labelflip.data import DatasetSplits
from labelflip.models import MultiLabelModel
from labelflip.models.architectures import ASLConvNet
from labelflip.models.registry import LoadedModel
from labelflip.zoo import default_cache_dir, default_dataset, load_builtin

K = 80
GRID = [
    ("ASL-COCO 5%", 4, 16),
    ("ASL-COCO 10%", 8, 36),
    ("ASL-COCO 20%", 16, 69),
    ("Q2L-COCO 5%", 15, 13),
    ("Q2L-COCO 10%", 31, 26),
    ("Q2L-COCO 20%", 62, 48),
]
FRACTIONS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)  # the demo study's budgets, fractions of the profile's eps_max


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + self.skip(x))


def resnet18(num_labels: int) -> nn.Module:
    """ResNet-18 topology (random weights; timing only)."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_Block(cin, cout, stride), _Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_labels)]
    return nn.Sequential(*layers)


def medians(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each function over ``repeats`` interleaved rounds, after one warm-up each."""
    for f in fns:
        f()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for f, acc in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def run_grid(name: str, net: nn.Module, size: int, n: int, repeats: int) -> None:
    gen = torch.Generator().manual_seed(0)
    model = MultiLabelModel(net.eval())
    x = torch.rand(n, 3, size, size, generator=gen)
    probs = model.probabilities(x)
    target = (probs <= 0.5).float()
    icm = instance_correlation_matrices(torch.rand(K, K, generator=gen, dtype=torch.float64), target)
    attack = MIFGSM(model, "bce")
    attack(x[:2], ALPHA_LINF)  # warm-up and one-off checks
    print(f"\n{name}: {n} samples at {size}x{size}, K = {K}")
    print(
        f"{'setting':14s} {'steps':>5s} {'k':>3s} {'search ms':>10s} {'attack ms':>10s} {'ratio':>8s}  us/sample/label"
    )
    for label, steps, k in GRID:
        search_fn = functools.partial(class_subsets, probs, target, icm, k, gamma=0.5)
        attack_fn = functools.partial(attack, x, steps * ALPHA_LINF, weights=search_fn())
        search, att = medians([search_fn, attack_fn], repeats)
        per_label = search / n / (k - 1) * 1e6
        print(
            f"{label:14s} {steps:5d} {k:3d} {search * 1e3:10.1f} {att * 1e3:10.1f} {search / att:8.2%}  {per_label:.1f}"
        )


def _artefacts(name: str, loaded: LoadedModel, data: DatasetSplits) -> tuple[Profile, Correlations]:
    """The demo's flip profile and correlations for a built-in model, cached by the model's fingerprint."""
    folder = Path(default_cache_dir()) / "bench_class"
    folder.mkdir(parents=True, exist_ok=True)
    p_path = folder / f"{name}-{loaded.fingerprint}-profile.json"
    c_path = folder / f"{name}-{loaded.fingerprint}-correlations.json"
    if p_path.exists() and c_path.exists():
        return Profile.load(p_path), Correlations.load(c_path)
    print(f"  probing the flip profile and correlations of {name} (cached afterwards) ...", flush=True)
    profile = probe_profile(loaded.module, data.val.x[:40], interval=10, order=4, curve="max")
    corr = measure_correlations(loaded.module, data.val.x[40:72], eps=0.005)
    profile.save(p_path)
    corr.save(c_path)
    return profile, corr


def run_builtin(n: int, repeats: int) -> None:
    data = default_dataset()
    x = data.test.x[:n]
    for name in ("asl-cnn", "q2l-cnn"):
        loaded = load_builtin(name)
        profile, corr = _artefacts(name, loaded, data)
        budgets = [f * profile.eps_max for f in FRACTIONS]
        model = MultiLabelModel(loaded.module)
        probs = model.probabilities(x)
        target = (probs <= model.threshold).float()
        icm = corr.instance_matrices(target)
        ks = [subset_length(profile.estimate(e), probs.shape[1]) for e in budgets]
        steps = MIFGSM(model, "bce").steps_for(budgets, x)
        print(f"\n{name}: {n} test images at 32x32, K = {probs.shape[1]}, eps_max = {profile.eps_max:.4f}")
        print(f"  budgets (steps): {steps}; k: {ks}")
        for gamma in (0.0, 0.5, 1.0):
            attack = ClassAttack(model, profile, corr, gamma=gamma)
            sel, total = [], []
            for _ in range(repeats):
                res = attack(x, budgets)
                sel.append(res.extra["selection_s"])
                total.append(res.elapsed_s)
            s, t = statistics.median(sel), statistics.median(total)
            line = f"selection {s * 1e3:.2f} ms / attack {t * 1e3:.0f} ms = {s / t:.3%}"
            print(f"  gamma={gamma:3.1f}, 7 budgets in one call: {line}")
        engine = MIFGSM(model, "bce")
        print(
            f"  {'budget':>6s} {'steps':>5s} {'k':>3s} {'search ms':>10s} {'attack ms':>10s} {'ratio':>8s}  (gamma 0.5)"
        )
        for frac, eps, k, st in zip(FRACTIONS, budgets, ks, steps, strict=True):
            if k >= probs.shape[1]:
                print(f"  {frac:6.0%} {st:5d} {k:3d}  (k = K: every label, no search)")
                continue
            search_fn = functools.partial(class_subsets, probs, target, icm, k, gamma=0.5)
            search, att = medians([search_fn, functools.partial(engine, x, eps, weights=search_fn())], repeats)
            print(f"  {frac:6.0%} {st:5d} {k:3d} {search * 1e3:10.2f} {att * 1e3:10.1f} {search / att:8.3%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["cnn", "resnet18", "builtin", "all"], default="all")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, medians of {args.repeats} interleaved runs")
    if args.model in ("cnn", "all"):
        run_grid("built-in CNN (ASLConvNet)", ASLConvNet(K), 32, args.samples, args.repeats)
    if args.model in ("resnet18", "all"):
        run_grid("ResNet-18", resnet18(K), 224, args.samples, args.repeats)
    if args.model in ("builtin", "all"):
        run_builtin(args.samples, args.repeats)


if __name__ == "__main__":
    main()
