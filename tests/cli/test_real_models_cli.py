"""`labelflip attack` on a registered model with a user checkpoint (torch.save, `module.` prefixes, class names)
and an image folder with a labels CSV: --model/--checkpoint/--dataset/--split work, and a model that does not fit
the dataset (K, input shape, label names) is refused before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from labelflip import cli
from labelflip.models import MODELS, LoadedModel, MultiLabelModel
from labelflip.models.loading import load_into, load_state

runner = CliRunner()
NAMES = ["cat", "dog", "sky"]


class TinyNet(nn.Module):
    """(N, 3, H, W) in [0, 1] -> logits (N, k)."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def make_folder(root: Path, names: list[str] = NAMES, n: int = 12, size: int = 16) -> Path:
    """An image folder with labels.csv (image, tags, split): n/2 test, n/4 val, n/4 train images."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["image,tags,split"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"im{i}.png")
        tags = "|".join(t for j, t in enumerate(names) if (i >> j) & 1 or j == i % len(names))
        rows.append(f"im{i}.png,{tags},{'test' if i < n // 2 else 'val' if i < 3 * n // 4 else 'train'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def save_checkpoint(path: Path, k: int = 3, names: list[str] | None = NAMES) -> Path:
    """An official-style container: {'state_dict': {'module.<key>': ...}, 'idx_to_class': {...}, 'epoch': 3}."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = TinyNet(k)
    with torch.no_grad():
        net.fc.weight.mul_(20.0)  # logits well outside [0, 1] (the attacks' check for a hidden sigmoid)
    state = {f"module.{key}": v for key, v in net.state_dict().items()}
    obj = {"state_dict": state, "epoch": 3}
    if names is not None:
        obj["idx_to_class"] = dict(enumerate(names))
    torch.save(obj, path)
    return path


@pytest.fixture
def tiny_registered():
    """A registered checkpoint model (3x16x16 inputs) built like the paper's models."""

    def factory(*, checkpoint=None, trust_pickle=False, sha256=None, **_):
        state, meta = load_state(checkpoint, trust_pickle=trust_pickle, sha256=sha256)
        net = TinyNet(state["fc.weight"].shape[0])
        load_into(net, state)
        names = meta.get("label_names") or []
        wrapped = MultiLabelModel(net, num_labels=net.fc.out_features, output_kind="logits")
        return LoadedModel(wrapped, "tiny-test", f"tiny-test:{meta['sha256'][:16]}", label_names=list(names))

    MODELS.add("tiny-test", factory, input_size=(3, 16, 16), checkpoint_required=True, builtin=False, override=True)
    yield "tiny-test"
    MODELS.unregister("tiny-test")


def _attack(model: str, ckpt: Path, folder: Path, *extra: str):
    args = ["attack", "--model", model, "--checkpoint", str(ckpt), "--dataset", f"folder:{folder},labels=labels.csv"]
    return runner.invoke(cli.app, [*args, "--samples", "4", "--budgets", "0.05", "--methods", "bce", *extra])


def test_attack_real_dataset_and_checkpoint(tmp_path: Path, tiny_registered: str) -> None:
    folder = make_folder(tmp_path / "photos")
    ckpt = save_checkpoint(tmp_path / "tiny.pth")
    res = _attack(tiny_registered, ckpt, folder, "--split", "test", "--probe-samples", "3")
    assert res.exit_code == 0, res.output
    assert "folder test" in res.output and "BCE" in res.output
    bad = _attack(tiny_registered, ckpt, folder, "--split", "tset")
    assert bad.exit_code == 2 and "tset" in bad.output


def test_attack_refuses_mismatched_model_before_work(tmp_path: Path, tiny_registered: str) -> None:
    folder = make_folder(tmp_path / "photos")
    k5 = save_checkpoint(tmp_path / "k5.pth", k=5, names=None)
    res = _attack(tiny_registered, k5, folder)
    assert res.exit_code == 2 and "K = 5" in res.output and "K = 3" in res.output, res.output
    other = save_checkpoint(tmp_path / "other.pth", names=["cat", "dog", "tree"])
    res = _attack(tiny_registered, other, folder)
    assert res.exit_code == 2 and "'tree'" in res.output and "'sky'" in res.output, res.output
    big = make_folder(tmp_path / "big", size=24)
    res = _attack(
        tiny_registered,
        save_checkpoint(tmp_path / "ok.pth"),
        big,
        "--dataset",
        f"folder:{big},image_size=24,labels=labels.csv",
    )
    assert res.exit_code == 2 and "3x16x16" in res.output and "3x24x24" in res.output, res.output


def test_attack_options_checked_first(tmp_path: Path, tiny_registered: str) -> None:
    res = runner.invoke(cli.app, ["attack", "--model", tiny_registered, "--samples", "2"])
    assert res.exit_code == 2 and "--checkpoint" in res.output
    res = runner.invoke(cli.app, ["attack", "--split", "val2014"])  # the built-in data has train/val/test
    assert res.exit_code == 2 and "--split" in res.output
    res = runner.invoke(cli.app, ["attack", "--model", "q2l-r101-448:input_nrm=none", "--checkpoint", "x.pkl"])
    assert res.exit_code == 2 and "input_nrm" in res.output


def test_info_lists_datasets_and_models() -> None:
    res = runner.invoke(cli.app, ["datasets"])
    assert res.exit_code == 0 and "coco" in res.output and "80" in res.output and "folder" in res.output
    res = runner.invoke(cli.app, ["models", "q2l*"])
    assert res.exit_code == 0 and "448x448" in res.output
