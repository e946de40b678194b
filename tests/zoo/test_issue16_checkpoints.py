"""Issue 16 item 7: a cached checkpoint with flipped bytes is caught by its content hash and retrained."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import labelflip.zoo as zoo
from labelflip._validation import LabelflipError
from labelflip.data import SyntheticConfig, make_synthetic
from labelflip.models.architectures import build_architecture
from labelflip.models.checkpoints import load_checkpoint, read_metadata, save_checkpoint, tensors_sha256
from labelflip.zoo.training import TrainConfig

TINY_DATA = SyntheticConfig(seed=1, n_train=64, n_val=0, n_test=32, num_labels=6)


def _data_offset(path: Path) -> int:
    """Byte offset of the tensor data (after the 8-byte header length and the JSON header)."""
    raw = path.read_bytes()
    return 8 + int.from_bytes(raw[:8], "little")


def _flip_a_weight_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    with safe_open(str(path), framework="pt") as f:
        header_len = _data_offset(path)
        key = max(f.keys(), key=lambda k: f.get_tensor(k).numel())
    header = json.loads(bytes(raw[8:header_len]))
    start, _ = header[key]["data_offsets"]
    raw[header_len + start + 5] ^= 0x10  # one bit of the largest tensor: safetensors loads it silently
    path.write_bytes(bytes(raw))


def _module():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_architecture("asl_convnet", 6, width=8)


def test_checkpoint_stores_and_verifies_a_content_hash(tmp_path: Path) -> None:
    module = _module()
    path = save_checkpoint(
        tmp_path / "m.safetensors", module, arch="asl_convnet", num_labels=6, arch_kwargs={"width": 8}
    )
    meta = read_metadata(path)
    assert meta["content_sha256"] == tensors_sha256(module.state_dict())
    load_checkpoint(path)  # intact: loads
    _flip_a_weight_byte(path)
    with safe_open(str(path), framework="pt") as f:  # safetensors itself does not notice
        assert list(f.keys())
    with pytest.raises(LabelflipError, match="content hash") as info:
        load_checkpoint(path)
    assert "'path'" in str(info.value) and "retrain" in str(info.value)


def test_hash_covers_dtype_and_shape() -> None:
    a = {"w": torch.zeros(2, 2)}
    assert tensors_sha256(a) != tensors_sha256({"w": torch.zeros(4)})
    assert tensors_sha256(a) != tensors_sha256({"w": torch.zeros(2, 2, dtype=torch.float64)})
    assert tensors_sha256({"w": torch.zeros(3, dtype=torch.bfloat16)})  # any dtype hashes


def test_load_builtin_retrains_a_flipped_cache_entry_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    specs = {
        name: zoo.ModelSpec(spec.name, spec.arch, {"width": 8}, TrainConfig(epochs=1, batch_size=32), spec.description)
        for name, spec in zoo._REGISTRY.items()
        if name == "asl-cnn"
    }
    monkeypatch.setattr(zoo, "_REGISTRY", specs)
    data = make_synthetic(TINY_DATA)
    first = zoo.load_builtin("asl-cnn", cache_dir=tmp_path, data=data)
    assert first.path is not None
    _flip_a_weight_byte(first.path)
    calls: list[dict] = []
    with caplog.at_level(logging.WARNING, logger="labelflip.zoo"):
        again = zoo.load_builtin("asl-cnn", cache_dir=tmp_path, data=data, progress=calls.append)
    assert len(calls) == 1, "a corrupt entry must be retrained"
    assert any("content hash" in r.getMessage() and "retraining" in r.getMessage() for r in caplog.records)
    x = data.test.x[:4]
    assert torch.equal(first.module(x), again.module(x))  # training is seeded: the same weights come back
    load_checkpoint(again.path, require_hash=True)


def test_a_checkpoint_without_hash_is_refused_when_required(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    module = _module()
    path = save_checkpoint(
        tmp_path / "m.safetensors", module, arch="asl_convnet", num_labels=6, arch_kwargs={"width": 8}
    )
    meta = read_metadata(path)
    del meta["content_sha256"]
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(state, str(path), metadata={"labelflip": json.dumps(meta)})
    load_checkpoint(path)  # an older file loads by default
    with pytest.raises(LabelflipError, match="content hash"):
        load_checkpoint(path, require_hash=True)
