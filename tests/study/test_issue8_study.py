"""Issue 8 in studies: a changed model is refused on resume (item 2), the manifest records the model's dtype
(item 10), probes are disjoint from ``val`` evaluation samples (item 7), the ``paper`` preset (item 12), capped
profiles (item 1) and an unusable output path refused before any work."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from labelflip._validation import LabelflipError
from labelflip.study import inputs as study_inputs
from labelflip.study import load_spec
from labelflip.study.inputs import fingerprint_model, select_samples
from labelflip.study.runner import run_study
from labelflip.study.store import ResultsStore
from tests.helpers import TinyCNN

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build():
        gen = torch.Generator().manual_seed({seed})
        net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(2), nn.Flatten(),
                            nn.Linear(24, 8))
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.6)
        return net.double()
    """
)


def _spec(tmp_path: Path, seed: int = 0, **extra) -> Path:
    (tmp_path / "tiny.py").write_text(FACTORY.replace("{seed}", str(seed)))
    spec = {
        "name": "tiny",
        "output": str(tmp_path / "run"),
        "models": [{"name": "tiny", "factory": f"{tmp_path / 'tiny.py'}:build"}],
        "dataset": {
            "name": "synthetic",
            "split": "test",
            "config": {"n_train": 16, "n_val": 24, "n_test": 16, "image_size": 16, "num_labels": 8},
        },
        "samples": {"count": 8, "seed": 1},
        "budgets": {"absolute": [0.004, 0.01]},
        "methods": ["bce"],
        "profile": {"samples": 6, "interval": 5},
        "attackability": {"per_label": 0},
        "chunk": 4,
        **extra,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_resume_with_a_changed_factory_model_is_refused(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, seed=0))
    run_study(spec)
    with ResultsStore(tmp_path / "run" / "results.sqlite") as store:
        manifest = store.manifest()
        assert manifest["dtype"] == "float64" and manifest["device"] == "cpu"  # what ran (item 10)
    db = sqlite3.connect(tmp_path / "run" / "results.sqlite")
    with db:
        db.execute("DELETE FROM results WHERE sample_index >= 4")  # the last unit is gone
    db.close()
    _spec(tmp_path, seed=1)  # same import string, other init seed: another model
    with pytest.raises(LabelflipError, match=r"Model 'tiny' differs.*Fix"):
        run_study(load_spec(tmp_path / "spec.yaml"))
    _spec(tmp_path, seed=0)  # the original model resumes
    assert run_study(load_spec(tmp_path / "spec.yaml")).computed == 1


def test_fingerprint_covers_weights_and_wrapper_options() -> None:
    from labelflip.models import MultiLabelModel

    a = fingerprint_model(MultiLabelModel(TinyCNN(seed=0)), "factory:x")
    assert a.startswith("factory:x#") and a == fingerprint_model(MultiLabelModel(TinyCNN(seed=0)), "factory:x")
    assert a != fingerprint_model(MultiLabelModel(TinyCNN(seed=1)), "factory:x")  # weights
    assert a != fingerprint_model(MultiLabelModel(TinyCNN(seed=0), threshold=0.4), "factory:x")  # threshold
    assert a != fingerprint_model(MultiLabelModel(TinyCNN(seed=0), mean=[0.5] * 3, std=[0.2] * 3), "factory:x")
    assert a != fingerprint_model(MultiLabelModel(TinyCNN(seed=0), bounds=(0.0, 2.0)), "factory:x")


def test_val_split_probes_are_disjoint_from_the_evaluation_samples(tmp_path: Path, monkeypatch) -> None:
    seen: dict[str, torch.Tensor] = {}

    class Stop(Exception):
        pass

    def probe(model, x, **kwargs):
        seen["probe"] = x
        raise Stop

    monkeypatch.setattr(study_inputs, "probe_profile", probe)
    spec = load_spec(_spec(tmp_path, dataset={"name": "synthetic", "split": "val", "config": {
        "n_train": 16, "n_val": 24, "n_test": 16, "image_size": 16, "num_labels": 8}},
        samples={"count": 12, "seed": 1}, profile={"samples": 12, "interval": 5}))  # fmt: skip
    with pytest.raises(Stop):
        run_study(spec)
    from labelflip.study.runner import study_dataset

    val = study_dataset(spec).val
    evaluated = val.x[select_samples(val, 12, 1)]
    overlap = [i for i in range(12) if any(torch.equal(seen["probe"][i], e) for e in evaluated)]
    assert not overlap, f"profile probe samples {overlap} are evaluation samples"
    # the default split (test) keeps its probes: the first entries of the seed + 1 permutation, as before
    idx = select_samples(val, 5, 2)
    assert torch.equal(idx, torch.randperm(len(val), generator=torch.Generator().manual_seed(2))[:5])
    with pytest.raises(LabelflipError, match="minus the 12 evaluation samples"):
        select_samples(val, 13, 2, exclude=select_samples(val, 12, 1))


def test_paper_preset_sets_exactly_its_settings(tmp_path: Path) -> None:
    default, paper = load_spec(), load_spec(overrides={"preset": "paper"})
    assert paper.profile["curve"] == "bce" and default.profile["curve"] == "max"
    assert paper.attack == {"bce_formulation": "authors", "clip": "bounds", "l2_mode": "paper"}
    assert paper.methods == ["bce", "linear", "slam", "random", "class-raw:0", "class-raw:0.5", "class-raw:1"]
    changed = {k for k in default.to_dict() if default.to_dict()[k] != paper.to_dict()[k]}
    assert changed == {"profile", "attack", "methods", "preset"}
    # the file and the command line still override single settings of the preset
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"preset": "paper", "profile": {"curve": "max"}, "methods": ["bce", "class-auto"]}))
    spec = load_spec(path, sets=["attack.clip=final"])
    assert spec.profile["curve"] == "max" and spec.attack["clip"] == "final" and spec.methods[1] == "class-raw-auto"
    with pytest.raises(LabelflipError, match="'preset'"):
        load_spec(overrides={"preset": "authors"})
    # the settings added by issue 8 leave the hash of a default study (and so stored studies) unchanged
    assert default.config_hash() == "fc9345e6dc45b37c" and paper.config_hash() != default.config_hash()


def test_capped_profile_refused_in_a_study_unless_allowed(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, profile={"samples": 6, "interval": 5, "max_steps": 5, "order": 1}))
    with pytest.raises(LabelflipError, match=r"profile of tiny.*stopped at its cap.*allow_capped"):
        run_study(spec)
    with pytest.warns(Warning, match="used as allowed"):
        run_study(load_spec(tmp_path / "spec.yaml", sets=["profile.allow_capped=true"]))


def test_output_path_that_is_a_file_is_refused_before_work(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    spec = load_spec(_spec(tmp_path), overrides={"output": str(tmp_path / "afile")})
    with pytest.raises(LabelflipError, match=r"output \(--out\).*afile.*it is a file"):
        run_study(spec)
    spec = load_spec(_spec(tmp_path), overrides={"output": str(tmp_path / "afile" / "sub")})
    with pytest.raises(LabelflipError, match="afile is a file, not a directory"):
        run_study(spec)
