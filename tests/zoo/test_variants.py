"""The differently trained built-in model (labelflip/zoo/variants.py): registered, trained once on its own data
configuration, then loaded from the cache; its fingerprint differs from asl-cnn's."""

from __future__ import annotations

import pytest

import labelflip.zoo as zoo
from labelflip._validation import LabelflipError
from labelflip.data import SyntheticConfig, make_synthetic
from labelflip.models import MODELS
from labelflip.models.checkpoints import fingerprint
from labelflip.zoo import variants
from labelflip.zoo.training import TrainConfig

TINY = SyntheticConfig(seed=3, n_train=48, n_val=0, n_test=16, num_labels=6)


def test_variant_is_registered_apart_from_the_paper_models() -> None:
    assert "asl-cnn-b" in MODELS.list() and zoo.list_models() == ["asl-cnn", "q2l-cnn"]
    spec, base = variants.VARIANTS["asl-cnn-b"], zoo.model_spec("asl-cnn")
    assert spec.arch == base.arch and spec.train_config != base.train_config
    assert SyntheticConfig() != variants.VARIANT_DATA and variants.VARIANT_DATA.num_labels == 24
    assert fingerprint(variants.VARIANT_DATA, spec.train_config, spec.arch, spec.arch_kwargs) != fingerprint(
        SyntheticConfig(), base.train_config, base.arch, base.arch_kwargs
    )
    with pytest.raises(LabelflipError, match="asl-cnn-b"):
        variants.load_variant("asl-cnn-c")


def test_variant_trains_once_on_its_own_config_then_hits_the_cache(monkeypatch, tmp_path) -> None:
    spec = variants.VARIANTS["asl-cnn-b"]
    small = zoo.ModelSpec(spec.name, spec.arch, {"width": 4}, TrainConfig(epochs=1, batch_size=16, seed=7), "tiny")
    monkeypatch.setitem(variants.VARIANTS, "asl-cnn-b", small)
    reference = make_synthetic(SyntheticConfig(seed=9, n_train=8, n_val=0, n_test=16, num_labels=6))
    calls: list[dict] = []
    first = variants.load_variant(
        "asl-cnn-b", cache_dir=tmp_path, data_config=TINY, evaluation=reference, progress=calls.append
    )
    assert len(calls) == 1 and first.path is not None and first.path.is_file()
    assert first.data_config == TINY and {"test_map", "own_test_map", "train_seconds"} <= set(first.metrics)
    again = variants.load_variant(
        "asl-cnn-b", cache_dir=tmp_path, data_config=TINY, evaluation=reference, progress=calls.append
    )
    assert len(calls) == 1 and again.fingerprint == first.fingerprint and again.metrics == first.metrics
