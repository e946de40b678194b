"""The architecture registry: network constructors by name (``build_architecture(name, num_labels, **kwargs)``).

Each entry's factory is an ``nn.Module`` class taking ``num_labels`` first. Entries may record facts about their
inputs in ``meta`` (``input_size``; later: normalisation, checkpoint layout).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from labelflip._registry import Registry

__all__ = ["ARCHITECTURES", "build_architecture", "list_architectures"]

ARCHITECTURES: Registry[nn.Module] = Registry("architecture")


def list_architectures(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style pattern."""
    return ARCHITECTURES.list(pattern)


def build_architecture(name: str, num_labels: int, **kwargs: Any) -> nn.Module:
    """Instantiate the architecture ``name`` with K = ``num_labels``.

    Parameters are initialised from the global RNG like any ``nn.Module``; callers that need seeded,
    side-effect-free construction wrap this in ``torch.random.fork_rng`` (as ``train_model`` does).
    """
    return ARCHITECTURES.get(name).factory(num_labels, **kwargs)
