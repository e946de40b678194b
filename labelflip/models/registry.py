"""The model registry: models a user can name (``--model asl-cnn``, ``models: [asl-cnn]`` in a study).

An entry's factory takes keyword options (``data``, ``cache_dir``, ``retrain``, ``progress``; it ignores what it
does not need) and returns a :class:`LoadedModel`: the network plus what studies record about it. The built-in
trained models register themselves from :mod:`labelflip.zoo`; a plugin registers its own with
``@MODELS.register("name")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from labelflip._registry import Registry

__all__ = ["MODELS", "LoadedModel", "create_model", "list_models"]


@dataclass
class LoadedModel:
    """A ready network and its provenance.

    Attributes:
        module: the ``nn.Module`` (eval mode) mapping inputs in ``[0, 1]`` to logits ``(N, K)``.
        name: registry name, e.g. ``"asl-cnn"``.
        fingerprint: identifies the weights (changes whenever they would).
        metrics: known quality metrics (e.g. ``test_map``, ``test_micro_f1``).
        label_names: the K label names, when known.
        data_config: the dataset configuration it was trained on, when known.
        path: the checkpoint it was loaded from, when any.
    """

    module: nn.Module
    name: str
    fingerprint: str
    metrics: dict[str, float] = field(default_factory=dict)
    data_config: Any = None
    label_names: list[str] = field(default_factory=list)
    path: Path | None = None


MODELS: Registry[LoadedModel] = Registry("model", modules=("labelflip.zoo",))


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern."""
    return MODELS.list(pattern)


def create_model(name: str, **options: Any) -> LoadedModel:
    """Load (or build, or train) the registered model ``name``."""
    return MODELS.create(name, **options)
