"""Shared tiny models and inputs for the tests (CPU, seconds, no network). Import them from here, one way:
``from tests.helpers import K, TinyCNN, make_inputs``; fixtures built on them live in ``tests/conftest.py``."""

from __future__ import annotations

import torch
from torch import nn

K = 6


def _init(module: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return module


class TinyCNN(nn.Module):
    """Conv -> ReLU -> pool -> linear: logits (N, K) for (N, 3, 8, 8) inputs. Has dropout and BN."""

    def __init__(self, k: int = K, seed: int = 0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(2)
        )
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(24, k)
        _init(self, seed)
        self.features[1].running_var.fill_(1.0)
        with torch.no_grad():  # sensitive enough that small budgets flip labels
            self.head.weight.mul_(2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x).flatten(1)))


def make_inputs(n: int = 5, seed: int = 1, shape: tuple[int, ...] = (3, 8, 8)) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))
