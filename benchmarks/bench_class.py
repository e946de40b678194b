"""CLASS subset-search time relative to the attack it feeds, K = 80 labels (printed; see docs/benchmarks.md).

For each (steps n, subset length k) pair of the paper's derived grid (SPEC-reference-code §8: ASL-COCO 5-20 %
and Q2L-COCO 5-20 %), time ``class_subsets`` (b = d = 4) for N samples and the weighted BCE MI-FGSM attack of
n steps on the same N samples, and print search / attack. Two model sizes:

* ``cnn``: the built-in ASL-style CNN architecture at 32x32 with an 80-label head (tiny: a worst case for the
  ratio, since the search cost does not depend on the model);
* ``resnet18``: a plain-torch ResNet-18 at 224x224 with an 80-label head (the scale the paper attacks, which
  is still 4x smaller in pixels than its 448x448 inputs).

Usage: ``python benchmarks/bench_class.py [--model cnn|resnet18|both] [--samples 16]``
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from labelflip.analysis.correlation import instance_correlation_matrices
from labelflip.attacks import ALPHA_LINF, MIFGSM
from labelflip.attacks.selection import class_subsets
from labelflip.models import MultiLabelModel
from labelflip.models.architectures import ASLConvNet

K = 80
GRID = [
    ("ASL-COCO 5%", 4, 16),
    ("ASL-COCO 10%", 8, 36),
    ("ASL-COCO 20%", 16, 69),
    ("Q2L-COCO 5%", 15, 13),
    ("Q2L-COCO 10%", 31, 26),
    ("Q2L-COCO 20%", 62, 48),
]


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


def run(name: str, net: nn.Module, size: int, n: int) -> None:
    gen = torch.Generator().manual_seed(0)
    model = MultiLabelModel(net.eval())
    x = torch.rand(n, 3, size, size, generator=gen)
    probs = model.probabilities(x)
    target = (probs <= 0.5).float()
    icm = instance_correlation_matrices(torch.rand(K, K, generator=gen, dtype=torch.float64), target)
    attack = MIFGSM(model, "bce")
    attack(x[:2], ALPHA_LINF)  # warm-up and one-off checks
    print(f"\n{name}: {n} samples at {size}x{size}, K = {K}")
    print(f"{'setting':14s} {'steps':>5s} {'k':>3s} {'search ms':>10s} {'attack ms':>10s} {'search/attack':>14s}")
    for label, steps, k in GRID:
        t0 = time.perf_counter()
        w = class_subsets(probs, target, icm, k, gamma=0.5)
        t1 = time.perf_counter()
        attack(x, steps * ALPHA_LINF, weights=w)
        t2 = time.perf_counter()
        search, att = t1 - t0, t2 - t1
        print(f"{label:14s} {steps:5d} {k:3d} {search * 1e3:10.1f} {att * 1e3:10.1f} {search / att:14.3%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["cnn", "resnet18", "both"], default="both")
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.model in ("cnn", "both"):
        run("built-in CNN (ASLConvNet)", ASLConvNet(K), 32, args.samples)
    if args.model in ("resnet18", "both"):
        run("ResNet-18", resnet18(K), 224, args.samples)


if __name__ == "__main__":
    main()
