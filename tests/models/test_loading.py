"""Checkpoint loading: every container and format users bring, and the refusals they need to see (unsafe pickle,
truncated file, HTML page, Git-LFS pointer, wrong SHA-256, keys that do not match)."""

from __future__ import annotations

import argparse
import io
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from labelflip._validation import LabelflipError
from labelflip.models import MODELS, create_model
from labelflip.models.architectures import ARCHITECTURES
from labelflip.models.architectures.query2label import GroupWiseLinear
from labelflip.models.loading import guess_layout, load_into, load_state, sha256_file
from labelflip.models.pretrained import PRETRAINED


class Custom:
    """Not on any allow-list: a pickle holding it is refused unless trusted."""

    def __init__(self) -> None:
        self.value = 3


class TinyQ2L(nn.Module):
    """Stand-in with Query2Label's head layout (``query_embed``, ``fc.W``/``fc.b``), small enough for a test file."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4)
        self.bn = nn.BatchNorm2d(8)
        self.query_embed = nn.Embedding(num_labels, 8, _weight=torch.empty(num_labels, 8))
        if not self.query_embed.weight.is_meta:
            nn.init.uniform_(self.query_embed.weight, -1.0, 1.0)
        self.fc = GroupWiseLinear(num_labels, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.bn(self.conv(x)).mean(dim=(2, 3))  # (N, 8)
        return self.fc(f[:, None, :] + self.query_embed.weight[None])


def _tiny(k: int = 4, seed: int = 0) -> TinyQ2L:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = TinyQ2L(k)
        net.bn.running_var.fill_(2.0)
        return net.eval()


def _q2l_release(path: Path, net: nn.Module, *, prefix: str = "module.") -> Path:
    """The container query2labels' training script writes (checkpoint.pkl)."""
    # an AdamW state dict as torch writes it (built by hand: constructing an optimizer imports torch._dynamo)
    params = list(net.parameters())
    opt = {
        "state": {i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(p)} for i, p in enumerate(params)},
        "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "weight_decay": 1e-2, "params": list(range(len(params)))}],
    }
    torch.save(
        {
            "epoch": 80,
            "arch": "Q2L-R101-448",
            "state_dict": {prefix + k: v for k, v in net.state_dict().items()},
            "best_mAP": np.float64(84.9),
            "optimizer": opt,
        },
        path,
    )
    return path


@pytest.fixture
def tiny_q2l_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the q2l-r101-448 entry at TinyQ2L so the whole registered-model path runs on a small file."""
    ARCHITECTURES.add("tiny_q2l_test", TinyQ2L, override=True, input_size=(3, 32, 32))
    monkeypatch.setitem(
        PRETRAINED, "q2l-r101-448", replace(PRETRAINED["q2l-r101-448"], arch="tiny_q2l_test", arch_kwargs={})
    )
    yield
    ARCHITECTURES.unregister("tiny_q2l_test")


def test_fake_official_q2l_checkpoint_loads(tmp_path: Path, tiny_q2l_registered: None) -> None:
    net = _tiny()
    path = _q2l_release(tmp_path / "checkpoint.pkl", net)
    state, meta = load_state(path)
    assert set(state) == set(net.state_dict()) and meta["stripped_prefixes"] == ["module."]
    assert meta["container"] == "state_dict" and meta["format"] == "torch-zip"
    assert meta["extra"] == {"epoch": 80, "arch": "Q2L-R101-448", "best_mAP": 84.9}  # numpy scalar allowed
    assert meta["sha256"] == sha256_file(path) and meta["label_names"] is None
    loaded = create_model("q2l-r101-448", checkpoint=str(path))
    assert loaded.label_names == ["label_0", "label_1", "label_2", "label_3"]  # K = 4 is no published label set
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():  # ImageNet normalisation inside the returned module, budgets in [0, 1] pixels
        assert torch.allclose(loaded.module(x), net((x - mean) / std), atol=1e-6)
    parity = MODELS.create("q2l-r101-448:input_norm=none", checkpoint=str(path))
    with torch.no_grad():  # the SLAM authors' parity switch: [0, 1] images as they are
        assert torch.allclose(parity.module(x), net(x), atol=1e-6)
    assert parity.fingerprint != loaded.fingerprint and ":none:" in parity.fingerprint


def test_coco_names_when_k_is_80(tmp_path: Path, tiny_q2l_registered: None) -> None:
    path = _q2l_release(tmp_path / "checkpoint.pkl", _tiny(80))
    loaded = create_model("q2l-r101-448", checkpoint=str(path))
    assert loaded.label_names[:3] == ["person", "bicycle", "car"] and len(loaded.label_names) == 80


def test_missing_checkpoint_says_where_to_get_one() -> None:
    with pytest.raises(LabelflipError, match=r"checkpoint.*SlongLiu/query2labels.*--checkpoint"):
        create_model("q2l-r101-448")
    with pytest.raises(LabelflipError, match="Alibaba-MIIL/ASL"):
        create_model("tresnet-xl-448")


def test_wrong_model_for_file(tmp_path: Path) -> None:
    path = _q2l_release(tmp_path / "checkpoint.pkl", _tiny())
    with pytest.raises(LabelflipError, match=r"no 'head\.fc\.weight'.*query2label"):
        create_model("tresnet-l-448", checkpoint=str(path))


def test_containers_prefixes_ema_and_names(tmp_path: Path) -> None:
    net, ema = _tiny(seed=0), _tiny(seed=1)
    sd = {f"module._orig_mod.{k}": v for k, v in net.state_dict().items()}
    torch.save(
        {
            "state_dict": sd,
            "state_dict_ema": ema.state_dict(),
            "idx_to_class": {"1": "b", "0": "a", "3": "d", "2": "c"},
            "args": argparse.Namespace(lr=0.1),
            "step": np.int64(7),
        },
        tmp_path / "ckpt.pth",
    )
    state, meta = load_state(tmp_path / "ckpt.pth")
    assert meta["stripped_prefixes"] == ["module.", "_orig_mod."] and torch.equal(state["fc.W"], net.fc.W)
    assert meta["label_names"] == ["a", "b", "c", "d"] and meta["num_labels"] == 4
    assert meta["extra"]["args"] == {"lr": 0.1} and meta["extra"]["step"] == 7
    state_ema, meta_ema = load_state(tmp_path / "ckpt.pth", prefer_ema=True)
    assert meta_ema["container"] == "state_dict_ema" and torch.equal(state_ema["fc.W"], ema.fc.W)
    state_key, _ = load_state(tmp_path / "ckpt.pth", key="state_dict_ema")
    assert torch.equal(state_key["fc.b"], ema.fc.b)
    with pytest.raises(LabelflipError, match="an entry of the checkpoint"):
        load_state(tmp_path / "ckpt.pth", key="weights")
    torch.save({"model": {"model": net.state_dict()}, "note": "nested"}, tmp_path / "nested.pt")
    assert set(load_state(tmp_path / "nested.pt")[0]) == set(net.state_dict())
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "empty.pt")
    with pytest.raises(LabelflipError, match=r"No state dict found.*'epoch': int"):
        load_state(tmp_path / "empty.pt")


def test_safetensors_with_metadata(tmp_path: Path) -> None:
    net = _tiny()
    save_file(dict(net.state_dict()), str(tmp_path / "m.safetensors"), metadata={"label_names": '["a","b","c","d"]'})
    state, meta = load_state(tmp_path / "m.safetensors")
    assert meta["format"] == "safetensors" and meta["label_names"] == ["a", "b", "c", "d"]
    twin = _tiny(seed=5)
    assert load_into(twin, state).loaded == len(state) and torch.equal(twin.fc.W, net.fc.W)


def test_numpy1_scalar_in_a_legacy_pickle(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"state_dict": _tiny().state_dict(), "best": np.float64(0.5)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")  # as numpy 1 wrote it
    (tmp_path / "old.pth").write_bytes(data)
    state, meta = load_state(tmp_path / "old.pth")
    assert meta["format"] == "torch-legacy" and meta["extra"]["best"] == 0.5 and "fc.W" in state


def test_unsafe_pickle_refused_unless_trusted(tmp_path: Path) -> None:
    torch.save({"state_dict": _tiny().state_dict(), "extra": Custom()}, tmp_path / "unsafe.pth")
    with pytest.raises(LabelflipError, match=r"tests\.models\.test_loading\.Custom.*trust_pickle=True.*safetensors"):
        load_state(tmp_path / "unsafe.pth")
    state, _ = load_state(tmp_path / "unsafe.pth", trust_pickle=True)
    assert "fc.W" in state
    torch.save(_tiny(), tmp_path / "module.pth")  # a whole pickled nn.Module
    with pytest.raises(LabelflipError, match="trust_pickle"):
        load_state(tmp_path / "module.pth")
    assert set(load_state(tmp_path / "module.pth", trust_pickle=True)[0]) == set(_tiny().state_dict())


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
def test_truncated_files(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "cut.bin"
    if fmt == "safetensors":
        save_file(dict(_tiny().state_dict()), str(path))
    else:
        torch.save(_tiny().state_dict(), path, _use_new_zipfile_serialization=fmt == "zip")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(LabelflipError, match=r"truncated or corrupt.*download it again"):
        load_state(path)


def test_html_lfs_empty_and_unknown_files(tmp_path: Path) -> None:
    page = "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>"
    (tmp_path / "checkpoint.pkl").write_text("\n  " + page)
    with pytest.raises(LabelflipError, match=r"HTML/XML page.*not a checkpoint.*confirm the download"):
        load_state(tmp_path / "checkpoint.pkl")
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 170123456\n"
    (tmp_path / "lfs.pth").write_text(pointer)
    with pytest.raises(LabelflipError, match=r"Git LFS pointer.*170,123,456-byte.*git lfs pull"):
        load_state(tmp_path / "lfs.pth")
    (tmp_path / "zero.pth").write_bytes(b"")
    with pytest.raises(LabelflipError, match="non-empty"):
        load_state(tmp_path / "zero.pth")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LabelflipError, match="not a checkpoint labelflip can read"):
        load_state(tmp_path / "notes.txt")
    with pytest.raises(LabelflipError, match="directory"):
        load_state(tmp_path)


def test_sha256_checked(tmp_path: Path) -> None:
    path = tmp_path / "m.pth"
    torch.save(_tiny().state_dict(), path)
    digest = sha256_file(path)
    assert load_state(path, sha256=digest.upper())[1]["sha256"] == digest
    with pytest.raises(LabelflipError, match=rf"SHA-256 {digest}, not the expected 0{{64}}"):
        load_state(path, sha256="0" * 64)
    with pytest.raises(LabelflipError, match="64 hex digits"):
        load_state(path, sha256="abc")


def test_load_into_reports_by_name_with_did_you_mean() -> None:
    net = _tiny()
    state = dict(net.state_dict())
    state["query_embeds.weight"] = state.pop("query_embed.weight")  # near miss
    state["extra.bias"] = torch.zeros(2)
    state["fc.b"] = torch.zeros(1, 5)  # K mismatch
    with pytest.raises(LabelflipError) as err:
        load_into(_tiny(seed=3), state)
    msg = str(err.value)
    assert "missing from the checkpoint: query_embed.weight (did you mean 'query_embeds.weight'?)" in msg
    assert "query_embeds.weight (did you mean 'query_embed.weight'?)" in msg and "extra.bias" in msg
    assert "fc.b: checkpoint [1, 5] vs model [1, 4]" in msg and "Fix:" in msg and "query2label layout" in msg
    target = _tiny(seed=3)
    before = target.fc.b.clone()
    report = load_into(target, state, strict=False)
    assert report.missing == ["query_embed.weight"] and report.mismatched[0][0] == "fc.b"
    assert torch.equal(target.fc.b, before) and torch.equal(target.fc.W, net.fc.W)


def test_num_batches_tracked_optional_both_ways_and_meta_assign() -> None:
    net = _tiny()
    without = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    with torch.device("meta"):
        twin = TinyQ2L(4)
    load_into(twin, without, assign=True)
    assert int(twin.bn.num_batches_tracked) == 0 and not any(t.is_meta for t in twin.state_dict().values())
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(twin.eval()(x), net(x))
    with torch.device("meta"):
        partial = TinyQ2L(4)
    with pytest.raises(LabelflipError, match="got no values"):
        load_into(partial, {k: v for k, v in without.items() if k != "fc.b"}, strict=False, assign=True)


def test_query2label_pe_may_be_absent() -> None:
    from labelflip.models.architectures.query2label import PositionEmbeddingSine, sine_position_embedding

    with torch.device("meta"):
        pe = PositionEmbeddingSine(16, 3, 3)
    load_into(pe, {}, assign=True)
    assert torch.allclose(pe.pe, sine_position_embedding(16, 3, 3))
    assert math.isclose(float(pe.pe[0, 0, 0, 0]), math.sin(2 * math.pi / 3), rel_tol=1e-5)


def test_guess_layout() -> None:
    assert guess_layout({"fc.W": 0, "backbone.0.body.conv1.weight": 0}) == "query2label"
    assert guess_layout({"body.conv1.0.weight": 0, "head.fc.weight": 0}) == "tresnet"
    assert guess_layout({"conv1.weight": 0, "layer1.0.conv1.weight": 0, "fc.weight": 0}) == "resnet"
    assert guess_layout({"x": 0}) is None
