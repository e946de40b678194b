"""Differently trained built-in models (issue 13, item 3): evidence that results do not hinge on one training run.

``asl-cnn-b`` is the ``asl-cnn`` architecture (``asl_convnet``, width 24) trained **differently**: on another draw
of the synthetic data with a harder configuration (:data:`VARIANT_DATA`: generator seed 7, noisier, more clutter,
more colour jitter, more confusers) and with another training seed, a cosine schedule and a different ASL setting
(``gamma_neg`` 2, no probability margin). Its labels are the same 24 catalogue classes, so it is attacked on the
default synthetic dataset like ``asl-cnn`` and ``q2l-cnn`` (studies and commands pass that dataset; the model
never trains on it). Its recorded metrics are measured on the default dataset's test split, the split studies
attack by default, and on its own configuration's test split (``own_test_*``).

Like the other built-in models it trains on first use (about 30 s on a laptop CPU) and is cached as a safetensors
checkpoint under :func:`labelflip.zoo.default_cache_dir`, named by a fingerprint of its data and training
configuration, architecture and the labelflip sources (any change retrains). It is kept out of
:func:`labelflip.zoo.list_models` (the paper's two model families) and registered with ``builtin=False`` because
the built-in helpers (``cached_metrics``, ``model_spec``) describe models trained on the default configuration.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from labelflip._validation import fail
from labelflip.data import DatasetSplits, SyntheticConfig, default_dataset, make_synthetic
from labelflip.models.checkpoints import fingerprint
from labelflip.models.registry import MODELS, LoadedModel
from labelflip.zoo import ModelSpec, _cached, _train_and_cache, default_cache_dir
from labelflip.zoo.training import ProgressCallback, TrainConfig

__all__ = ["VARIANTS", "VARIANT_DATA", "load_variant"]

logger = logging.getLogger(__name__)

VARIANT_DATA = SyntheticConfig(seed=7, noise_std=0.06, max_distractors=4, colour_jitter=0.12, confuser_prob=0.7)
"""The synthetic configuration the variants train on (the default is ``SyntheticConfig()``: seed 0, noise 0.04,
3 distractors, jitter 0.08, confusers 0.5)."""

VARIANTS: dict[str, ModelSpec] = {
    "asl-cnn-b": ModelSpec(
        name="asl-cnn-b",
        arch="asl_convnet",
        arch_kwargs={"width": 24},
        train_config=TrainConfig(epochs=10, seed=7, schedule="cosine", clip=0.0, gamma_neg=2.0, gamma_pos=0.0),
        description="asl-cnn's architecture trained differently: other data draw and config, seed 7, cosine, ASL γ-=2",
    ),
}


def load_variant(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
    progress: ProgressCallback | None = None,
    data_config: SyntheticConfig | None = None,
    evaluation: DatasetSplits | None = None,
) -> LoadedModel:
    """Load variant ``name`` from the cache, training and caching it first if needed.

    Args:
        name: a key of :data:`VARIANTS`.
        cache_dir: where checkpoints live (default :func:`labelflip.zoo.default_cache_dir`).
        retrain: train even if a valid cache entry exists (and overwrite it).
        progress: per-epoch training callback (only called when training happens).
        data_config: the synthetic configuration to train on (default :data:`VARIANT_DATA`; tests shrink it).
        evaluation: the dataset whose test split the recorded ``test_*`` metrics come from (default: the default
            synthetic dataset, the one studies attack).

    Returns:
        A :class:`~labelflip.models.LoadedModel` whose module is in eval mode; ``data_config`` is the configuration
        it was trained on.
    """
    if name not in VARIANTS:
        raise fail("load_variant", "name", "one of " + ", ".join(sorted(VARIANTS)), name)
    if not isinstance(retrain, bool):
        raise fail("load_variant", "retrain", "a bool", retrain)
    spec = VARIANTS[name]
    config = VARIANT_DATA if data_config is None else data_config
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    fp = fingerprint(config, spec.train_config, spec.arch, spec.arch_kwargs)
    path = directory / f"{name}-{fp}.safetensors"
    cached = None if retrain else _cached(path, fp, name)
    if cached is not None:
        module, meta = cached
        names = list(meta.get("label_names", []))
        return LoadedModel(module, name, fp, dict(meta.get("metrics", {})), config, names, path)
    logger.info("training %s (fingerprint %s)", name, fp)
    data = make_synthetic(config)
    reference = default_dataset() if evaluation is None else evaluation
    tests = {"test_": reference.test, **({"own_test_": data.test} if len(data.test) else {})}
    module, metrics = _train_and_cache(path, name, fp, spec, data, progress, tests)
    return LoadedModel(module, name, fp, metrics, config, list(data.label_names), path)


def _register(name: str) -> None:
    spec = VARIANTS[name]

    def factory(
        *, progress: ProgressCallback | None = None, cache_dir: Any = None, retrain: bool = False, **_options: Any
    ) -> LoadedModel:
        # ``data`` (the dataset a study attacks) is not what the variant trains on: it is ignored here.
        return load_variant(name, cache_dir=cache_dir, retrain=retrain, progress=progress)

    MODELS.add(name, factory, description=spec.description, input_size=(3, 32, 32), builtin=False, variant=True)


for _name in VARIANTS:
    _register(_name)
