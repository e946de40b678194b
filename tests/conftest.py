"""Shared tiny models and inputs: CPU, seconds, no network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labelflip.model import MultiLabelModel
from tests.chromium_support import chromium  # noqa: F401  (session fixture)

K = 6


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """Tiny models run fastest single-threaded; 2 threads on a loaded 2-core box are up to 100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    return TinyCNN()


@pytest.fixture
def model(tiny_cnn: TinyCNN) -> MultiLabelModel:
    return MultiLabelModel(tiny_cnn)


@pytest.fixture
def x() -> torch.Tensor:
    return make_inputs()


@pytest.fixture
def linear_model() -> MultiLabelModel:
    """A linear model on (N, 4) vectors in float64: logits = W x + b, fully hand-checkable."""
    lin = nn.Linear(4, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 1.0, -1.0, 3.0], [-1.0, 0.0, 0.0, 0.0]]))
        lin.bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
    return MultiLabelModel(lin)
