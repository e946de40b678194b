"""Built-in trained models: two model families trained on the synthetic default dataset, registered in
:data:`labelflip.models.MODELS` (no architecture code lives here).

``load_builtin("asl-cnn")`` returns a trained model, training it on first use (about a minute on a laptop
CPU) and caching the weights as safetensors under ``cache_dir`` (default: ``$LABELFLIP_CACHE`` or
``~/.cache/labelflip``). The cache file is named by the model name and a fingerprint of the data config,
training config, architecture, labelflip version and the source of the data/zoo modules, so any change
retrains instead of loading stale weights. Each cached checkpoint carries the sha256 of its weights; an entry that
is unreadable, has no hash or whose weights no longer match it (flipped bytes) is retrained, with a log warning
saying why.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelflip._validation import LabelflipError, fail
from labelflip.data import DatasetSplits, SyntheticConfig, default_dataset
from labelflip.models.checkpoints import fingerprint, load_checkpoint, read_metadata, save_checkpoint
from labelflip.models.registry import MODELS, LoadedModel
from labelflip.zoo.training import ProgressCallback, TrainConfig, evaluate_model, train_model

__all__ = [
    "BuiltinModel",
    "ModelSpec",
    "TrainConfig",
    "cached_metrics",
    "default_cache_dir",
    "default_dataset",
    "evaluate_model",
    "list_models",
    "load_builtin",
    "model_spec",
    "train_model",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """A registered built-in model: architecture, its kwargs and how it is trained."""

    name: str
    arch: str
    arch_kwargs: dict[str, Any]
    train_config: TrainConfig
    description: str


_REGISTRY: dict[str, ModelSpec] = {
    "asl-cnn": ModelSpec(
        name="asl-cnn",
        arch="asl_convnet",
        arch_kwargs={"width": 24},
        train_config=TrainConfig(epochs=10, clip=0.05, gamma_neg=4.0, gamma_pos=0.0),
        description="ASL-style CNN (conv-BN-ReLU, avg+max pooling, linear head), trained with ASL.",
    ),
    "q2l-cnn": ModelSpec(
        name="q2l-cnn",
        arch="query_label_net",
        arch_kwargs={"width": 16, "num_layers": 1, "num_heads": 4, "dim_feedforward": 128, "dropout": 0.1},
        train_config=TrainConfig(epochs=10, clip=0.0, gamma_neg=4.0, gamma_pos=0.0),
        description="Query2Label-style CNN + transformer decoder with label queries, simplified ASL.",
    ),
}


BuiltinModel = LoadedModel
"""A trained built-in model (:class:`labelflip.models.LoadedModel`)."""


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the built-in trained models matching the shell-style ``pattern``."""
    if not isinstance(pattern, str):
        raise fail("list_models", "pattern", "a shell-style pattern string", pattern, "e.g. 'asl*'.")
    return [n for n in MODELS.list(pattern) if n in _REGISTRY]


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a built-in model; unknown names answer 'did you mean'."""
    entry = MODELS.get(name)
    if entry.name not in _REGISTRY:
        raise fail("model_spec", "name", "a built-in trained model: " + ", ".join(sorted(_REGISTRY)), name)
    return _REGISTRY[entry.name]


def default_cache_dir() -> Path:
    """``$LABELFLIP_CACHE`` if set, else ``~/.cache/labelflip``."""
    env = os.environ.get("LABELFLIP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "labelflip"


def cached_metrics(name: str, cache_dir: str | os.PathLike[str] | None = None) -> dict[str, float] | None:
    """The stored quality metrics of built-in model ``name`` trained on the default dataset, if its checkpoint is
    cached (nothing is trained or generated: the fingerprint comes from the default config); else ``None``."""
    spec = model_spec(name)
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    fp = fingerprint(SyntheticConfig(), spec.train_config, spec.arch, spec.arch_kwargs)
    path = directory / f"{spec.name}-{fp}.safetensors"
    try:
        return dict(read_metadata(path).get("metrics", {})) if path.is_file() else None
    except LabelflipError:
        return None


def load_builtin(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
    data: DatasetSplits | None = None,
    progress: ProgressCallback | None = None,
) -> BuiltinModel:
    """Load the built-in model ``name`` from the cache, training and caching it first if needed.

    Args:
        name: a name from :func:`list_models` (``"asl-cnn"``, ``"q2l-cnn"``).
        cache_dir: where checkpoints live (default :func:`default_cache_dir`).
        retrain: train even if a valid cache entry exists (and overwrite it).
        data: the dataset to train on and evaluate with (default :func:`default_dataset`); its
            ``config`` is part of the fingerprint.
        progress: per-epoch training callback (only called when training happens).

    Returns:
        A :class:`BuiltinModel` whose module is in eval mode.
    """
    spec = model_spec(name)
    if not isinstance(retrain, bool):
        raise fail("load_builtin", "retrain", "a bool", retrain)
    if data is None:
        data = default_dataset()
    if not isinstance(data, DatasetSplits) or not isinstance(data.config, SyntheticConfig):
        raise fail("load_builtin", "data", "a DatasetSplits from make_synthetic, or None", data)
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    fp = fingerprint(data.config, spec.train_config, spec.arch, spec.arch_kwargs)
    path = directory / f"{name}-{fp}.safetensors"
    cached = None if retrain else _cached(path, fp, name)
    if cached is not None:
        module, meta = cached
        metrics = dict(meta.get("metrics", {}))
        return BuiltinModel(module, name, fp, metrics, data.config, list(data.label_names), path)
    logger.info("training built-in model %s (fingerprint %s)", name, fp)
    tests = {"test_": data.test} if len(data.test) else {}
    module, metrics = _train_and_cache(path, name, fp, spec, data, progress, tests)
    return BuiltinModel(module, name, fp, metrics, data.config, list(data.label_names), path)


def _cached(path: Path, fp: str, name: str) -> tuple[Any, dict[str, Any]] | None:
    """``(module, metadata)`` of the cache entry ``path`` when it is intact and has fingerprint ``fp``; None
    (logged: the model is then retrained) when it is missing, damaged or another model's."""
    if not path.is_file():
        return None
    try:
        module, meta = load_checkpoint(path, require_hash=True)  # flipped bytes: a content-hash mismatch
    except LabelflipError as exc:
        logger.warning("cache entry %s is unusable (%s); retraining", path, exc)
        return None
    if meta.get("fingerprint") != fp:
        logger.warning("cache entry %s has a different fingerprint; retraining", path)
        return None
    logger.info("loaded %s from %s", name, path)
    return module, meta


def _train_and_cache(
    path: Path,
    name: str,
    fp: str,
    spec: ModelSpec,
    data: DatasetSplits,
    progress: ProgressCallback | None,
    tests: dict[str, Any],
) -> tuple[Any, dict[str, float]]:
    """Train ``spec`` on ``data``, score it on each ``tests`` split (metric names prefixed by its key), and save it
    with its provenance at ``path``; ``(module, metrics)``."""
    start = time.perf_counter()
    module = train_model(spec.arch, data, spec.train_config, progress, arch_kwargs=spec.arch_kwargs)
    seconds = time.perf_counter() - start
    metrics = {
        f"{prefix}{k}": float(v) for prefix, split in tests.items() for k, v in evaluate_model(module, split).items()
    }
    metrics["train_seconds"] = float(seconds)
    metadata = {"fingerprint": fp, "name": name, "metrics": metrics, "data_config": data.config,
                "train_config": spec.train_config, "label_names": list(data.label_names)}  # fmt: skip
    save_checkpoint(path, module, arch=spec.arch, num_labels=data.train.num_labels, arch_kwargs=spec.arch_kwargs,
                    metadata=metadata)  # fmt: skip
    return module, metrics


def _register(name: str) -> None:
    spec = _REGISTRY[name]

    def factory(*, data: DatasetSplits | None = None, progress: ProgressCallback | None = None, **options: object):
        return load_builtin(name, data=data, progress=progress, **options)  # type: ignore[arg-type]

    MODELS.add(name, factory, description=spec.description, input_size=(3, 32, 32), builtin=True)


for _name in _REGISTRY:
    _register(_name)

from labelflip.zoo import variants as _variants  # noqa: E402, F401  (registers asl-cnn-b, a differently trained model)
