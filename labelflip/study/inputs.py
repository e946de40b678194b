"""What a study (or a CLI command) needs before it attacks: models, samples and analysis artefacts, chosen one way.

* :func:`select_samples`: the one sample selector (the first ``count`` of a seeded permutation; no global RNG).
  With sample seed ``s``, evaluation samples use ``s``, the flip-profile probe ``s + 1`` and the correlation
  probe ``s + 2`` (:data:`PROFILE_SEED_OFFSET`, :data:`CORRELATION_SEED_OFFSET`), so ``labelflip profile`` and a
  study measure the same profile for the same model, samples and seed.
* :func:`measure_profile` / :func:`measure_correlations_for` / :func:`measure_attackability`: the analyses on
  the dataset's splits with those conventions.
* :func:`stored_or_computed`: an artefact from a cache (the study store), or computed once and put there.
* :func:`load_model`: a registered model name, or a user factory (``module:callable`` / ``file.py:callable``)
  with optional safetensors weights.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn

from labelflip._validation import fail
from labelflip.analysis import Artefact, Attackability, Correlations, Profile, label_attackability, probe_profile
from labelflip.analysis import measure_correlations as _measure_correlations
from labelflip.data import DatasetSplits, MultiLabelData
from labelflip.models import MultiLabelModel, create_model

__all__ = [
    "CORRELATION_SEED_OFFSET",
    "PROFILE_SEED_OFFSET",
    "ArtefactCache",
    "Progress",
    "import_factory",
    "load_model",
    "measure_attackability",
    "measure_correlations_for",
    "measure_profile",
    "select_samples",
    "stored_or_computed",
]

PROFILE_SEED_OFFSET = 1
CORRELATION_SEED_OFFSET = 2
Progress = Callable[[str, int, int], None]
A = TypeVar("A", bound=Artefact)


def select_samples(
    split: MultiLabelData, count: int, seed: int, *, owner: str = "study spec", param: str = "samples.count"
) -> Tensor:
    """Dataset indices ``(count,)``: the first ``count`` entries of a permutation of the split seeded by ``seed``."""
    if count > len(split):
        raise fail(owner, param, f"at most the split size {len(split)}", count)
    return torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:count]


class ArtefactCache(Protocol):
    """Where computed artefacts are kept (a study's store, per model)."""

    def get_artefact(self, model: str, kind: str) -> dict[str, Any] | None: ...

    def put_artefact(self, model: str, kind: str, value: Mapping[str, Any]) -> None: ...


def stored_or_computed(cache: ArtefactCache, model: str, kind: str, cls: type[A], compute: Callable[[], A]) -> A:
    """A model's artefact from the cache, or computed once and stored (so a rerun recomputes nothing)."""
    stored = cache.get_artefact(model, kind)
    if stored is not None:
        return cls.from_dict(stored)
    value = compute()
    cache.put_artefact(model, kind, value.to_dict())
    return value


def _phase(progress: Progress | None, label: str) -> Callable[[int, int], None] | None:
    return None if progress is None else (lambda done, total: progress(label, done, total))


def measure_profile(
    model: MultiLabelModel,
    data: DatasetSplits,
    *,
    samples: int,
    seed: int,
    interval: int = 10,
    order: int = 4,
    curve: str = "max",
    norm: str = "linf",
    fingerprint: str | None = None,
    owner: str = "study spec",
) -> Profile:
    """The flip profile probed on ``samples`` validation images selected with seed ``seed + 1``."""
    probe_seed = seed + PROFILE_SEED_OFFSET
    idx = select_samples(data.val, samples, probe_seed, owner=owner, param="profile.samples")
    return probe_profile(
        model,
        data.val.x[idx],
        interval=interval,
        order=order,
        curve=curve,  # type: ignore[arg-type]
        norm=norm,  # type: ignore[arg-type]
        model_fingerprint=fingerprint,
        seed=probe_seed,
    )


def measure_correlations_for(
    model: MultiLabelModel,
    data: DatasetSplits,
    *,
    samples: int,
    seed: int,
    eps: float,
    flipdown: bool = False,
    fingerprint: str | None = None,
    progress: Progress | None = None,
    label: str = "correlations",
    owner: str = "study spec",
) -> Correlations:
    """The flip-up matrix (and optionally the measured flip-down matrix) on ``samples`` validation images
    selected with seed ``seed + 2``."""
    probe_seed = seed + CORRELATION_SEED_OFFSET
    idx = select_samples(data.val, samples, probe_seed, owner=owner, param="correlations.samples")
    return _measure_correlations(
        model,
        data.val.x[idx],
        eps=eps,
        y=data.val.y[idx] if flipdown else None,
        measure_flipdown=flipdown,
        label_names=list(data.label_names),
        model_fingerprint=fingerprint,
        seed=probe_seed,
        progress=_phase(progress, label),
    )


def measure_attackability(
    model: MultiLabelModel,
    data: DatasetSplits,
    *,
    per_label: int,
    eps: float,
    images: int,
    fingerprint: str | None = None,
    progress: Progress | None = None,
    label: str = "attackability",
) -> Attackability:
    """Per-label attackability (Table II) on the first ``images`` training images."""
    n = min(images, len(data.train))
    return label_attackability(
        model,
        data.train.x[:n],
        data.train.y[:n],
        eps=eps,
        n_per_label=per_label,
        frequency=data.train.label_frequencies(),
        label_names=list(data.label_names),
        model_fingerprint=fingerprint,
        progress=_phase(progress, label),
    )


def import_factory(ref: str, *, owner: str = "study spec", param: str = "models.factory") -> Callable[..., nn.Module]:
    """``"pkg.module:callable"`` or ``"path/to/file.py:callable"``."""
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise fail(owner, param, "'module:callable' or 'file.py:callable'", ref)
    try:
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location(f"labelflip_user_{abs(hash(target))}", target)
            if spec is None or spec.loader is None:
                raise ImportError(target)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        return getattr(module, attr)
    except (ImportError, AttributeError, FileNotFoundError) as exc:
        raise fail(owner, param, "an importable callable", ref, f"{type(exc).__name__}: {exc}") from exc


def load_model(
    name: str,
    data: DatasetSplits,
    *,
    factory: str | None = None,
    weights: str | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    threshold: float = 0.5,
    progress: Progress | None = None,
) -> tuple[MultiLabelModel, str, dict[str, float]]:
    """A wrapped model, its fingerprint and known quality metrics: a registered model (trained if needed) or a
    user factory (+ safetensors weights)."""
    if factory is None:

        def on_epoch(info: dict[str, Any]) -> None:
            if progress is not None:
                progress(f"{name} training", int(info["epoch"]), int(info["epochs"]))

        built = create_model(name, data=data, progress=on_epoch)
        return MultiLabelModel(built.module, threshold=threshold), built.fingerprint, dict(built.metrics)
    module = import_factory(factory)()
    if not isinstance(module, nn.Module):
        raise fail("study spec", "models.factory", "a callable returning an nn.Module", type(module).__name__)
    fingerprint = f"factory:{factory}"
    if weights is not None:
        from safetensors.torch import load_file

        path = Path(weights)
        if not path.is_file():
            raise fail("study spec", "models.weights", "an existing .safetensors file", str(path))
        module.load_state_dict(load_file(str(path)))
        fingerprint += ":" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return MultiLabelModel(module, mean=mean, std=std, threshold=threshold), fingerprint, {}
