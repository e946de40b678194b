"""Shared fixtures (CPU, seconds, no network); the models and inputs they use live in ``tests/helpers.py``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from labelflip.models import MultiLabelModel
from tests.chromium_support import chromium  # noqa: F401  (session fixture)
from tests.helpers import TinyCNN, make_inputs


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """Tiny models run fastest single-threaded; 2 threads on a loaded 2-core box are up to 100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _probe_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's probe cache (labelflip.analysis.cache) in a fresh directory per test, never the user's."""
    monkeypatch.setenv("LABELFLIP_PROBE_CACHE", str(tmp_path_factory.mktemp("probe-cache")))


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


@pytest.fixture
def tiny_zoo(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stand-ins for the built-in models (TinyCNN, K = 8) and dataset; returns the names loaded."""

    class Split(SimpleNamespace):
        def __len__(self) -> int:
            return self.x.shape[0]

        @property
        def num_labels(self) -> int:
            return self.y.shape[1]

        def label_frequencies(self) -> torch.Tensor:
            return self.y.mean(0)

    def labels(n: int, seed: int) -> torch.Tensor:
        return (torch.rand(n, 8, generator=torch.Generator().manual_seed(seed)) < 0.4).float()

    data = SimpleNamespace(
        train=Split(x=make_inputs(16, seed=1), y=labels(16, 1)),
        val=Split(x=make_inputs(12, seed=2), y=labels(12, 2)),
        test=Split(x=make_inputs(10, seed=3), y=labels(10, 3)),
        label_names=[f"l{i}" for i in range(8)],
    )
    loaded: list[str] = []

    def load_builtin(name: str, **kwargs):
        loaded.append(name)
        return SimpleNamespace(
            module=TinyCNN(k=8, seed=4), fingerprint=f"fp-{name}", metrics={"test_map": 0.5}, name=name
        )

    from labelflip import zoo
    from labelflip.data import synthetic

    monkeypatch.setattr(zoo, "load_builtin", load_builtin)
    monkeypatch.setattr(synthetic, "default_dataset", lambda: data)
    return loaded
