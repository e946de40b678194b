"""Studies on real data and user models: a folder dataset with a labels CSV, a user factory whose checkpoint is a
torch.save container with `module.` prefixes and class names; models that do not fit the dataset are refused
before any work, naming both."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labelflip._validation import LabelflipError
from labelflip.study import ResultsStore, load_spec, run_study
from tests.cli.test_real_models_cli import NAMES, make_folder, save_checkpoint

FACTORY = """
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, k=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, k)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def build():
    return TinyNet(3)


def build10():
    return TinyNet(10)


class Flat64(nn.Module):  # K = 10 outputs, 3x64x64 inputs only
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 64 * 64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def flat64():
    return Flat64()
"""


def _spec(tmp_path: Path, model: dict, dataset: dict | None = None) -> Path:
    (tmp_path / "mine.py").write_text(FACTORY)
    doc = {
        "name": "real",
        "output": str(tmp_path / "run"),
        "models": [model],
        "dataset": dataset
        or {"name": "folder", "path": "photos", "labels": "labels.csv", "config": {"image_size": 16}},
        "samples": {"count": 4, "seed": 0},
        "budgets": {"absolute": [0.02, 0.05]},
        "methods": ["bce"],
        "baseline": "bce",
        "profile": {"samples": 3, "interval": 5, "order": 2, "max_steps": 20, "allow_capped": True},
        "chunk": 4,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_study_on_folder_with_user_checkpoint(tmp_path: Path) -> None:
    make_folder(tmp_path / "photos")
    save_checkpoint(tmp_path / "mine.pth")
    spec = load_spec(_spec(tmp_path, {"name": "mine", "factory": "mine.py:build", "checkpoint": "mine.pth"}))
    assert spec.dataset["path"] == str(tmp_path / "photos") and spec.dataset["config"]["labels"] == "labels.csv"
    assert spec.models[0].checkpoint == str(tmp_path / "mine.pth")
    ctx = run_study(spec)
    assert ctx.x.shape == (4, 3, 16, 16)
    with ResultsStore(tmp_path / "run" / "results.sqlite") as store:
        assert store.count() == 4 * 2
        assert store.get_artefact("", "dataset")["label_names"] == NAMES


def test_spec_dataset_section_checks(tmp_path: Path) -> None:
    with pytest.raises(LabelflipError, match=r"dataset\.path"):
        load_spec(_spec(tmp_path, {"name": "m", "factory": "mine.py:build"}, {"name": "coco"}))
    with pytest.raises(LabelflipError, match=r"dataset\.split"):
        load_spec(_spec(tmp_path, {"name": "m", "factory": "mine.py:build"}, {"name": "synthetic", "split": "val2014"}))
    spec = load_spec(_spec(tmp_path, "asl-cnn", {"name": "coco", "path": "/data/coco"}))
    assert spec.dataset["split"] == "val2014"
    assert load_spec(None).config_hash() == load_spec(None, sets=["dataset.split=test"]).config_hash()


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ({"name": "wide", "factory": "mine.py:flat64"}, ["3x32x32", "K = 24", "forward"]),  # the K=10, 64x64 model
        ({"name": "ten", "factory": "mine.py:build10"}, ["K = 10", "K = 24"]),
    ],
)
def test_mismatched_user_model_refused_before_work(tmp_path: Path, model: dict, words: list[str]) -> None:
    spec = load_spec(_spec(tmp_path, model, {"name": "synthetic", "split": "test"}))
    with pytest.raises(LabelflipError) as info:
        run_study(spec)
    for word in words:
        assert word in str(info.value), str(info.value)
    assert "synthetic" in str(info.value) and repr(model["name"]) in str(info.value)
    with ResultsStore(tmp_path / "run" / "results.sqlite") as store:
        assert store.count() == 0 and store.get_artefact(model["name"], "profile") is None


def test_label_names_must_agree(tmp_path: Path) -> None:
    make_folder(tmp_path / "photos")
    save_checkpoint(tmp_path / "other.pth", names=["cat", "dog", "tree"])  # the checkpoint's own class names
    spec = load_spec(_spec(tmp_path, {"name": "m", "factory": "mine.py:build", "checkpoint": "other.pth"}))
    with pytest.raises(LabelflipError, match=r"'tree'.*'sky'"):
        run_study(spec)
    labelled = {"name": "m", "factory": "mine.py:build", "checkpoint": "other.pth", "labels": NAMES}
    (tmp_path / "b").mkdir()
    ok = load_spec(_spec(tmp_path / "b", labelled))
    assert ok.models[0].labels == NAMES
    with pytest.raises(LabelflipError, match="labels"):
        load_spec(_spec(tmp_path, {"name": "m", "factory": "mine.py:build", "labels": "cat"}))
