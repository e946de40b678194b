"""The Table VII stage of a study (issue 9 item 5): the ``compare`` spec section, the stage's stored artefacts,
resuming without recomputation, and an unchanged config hash for studies without the section."""

from __future__ import annotations

import sqlite3
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from labelflip._validation import LabelflipError
from labelflip.study import load_spec
from labelflip.study import table7 as stage
from labelflip.study.runner import run_study
from labelflip.study.store import ResultsStore, decode_array
from labelflip.study.table7 import artefact_kind, run_table7
from tests.study.test_study import tiny_spec

#: A linear model centred on the inputs (logits near 0): ML-DeepFool's examples need L-inf ~0.1, so MI-FGSM at
#: those norms runs a few hundred steps (seconds), where a random CNN needs ~0.5 (thousands of steps).
LINEAR = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build():
        gen = torch.Generator().manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8))
        with torch.no_grad():
            net[1].weight.copy_(torch.randn(net[1].weight.shape, generator=gen))
            net[1].bias.copy_(-net[1].weight.sum(1) * 0.5 + 0.05)
        return net
    """
)
BASELINE = "ml-deepfool:2"  # canonical spec of ml-deepfool:steps=2


def _spec_file(tmp_path: Path, **extra) -> Path:
    path = tiny_spec(tmp_path, **extra)
    data = yaml.safe_load(path.read_text())
    (tmp_path / "linear.py").write_text(LINEAR)
    data["models"] = [{"name": "lin", "factory": f"{tmp_path / 'linear.py'}:build"}]
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def _small(tmp_path: Path, **compare) -> Path:
    return _spec_file(
        tmp_path,
        samples={"count": 6, "seed": 1},
        methods=["bce"],
        seeds=[0],
        budgets={"fractions": [1.0]},
        profile={"samples": 4, "interval": 5},
        attackability={"per_label": 0},
        report={"examples": 2},
        compare={"baselines": ["ml-deepfool:steps=2"], "methods": ["bce"], **compare},
    )


# ----------------------------------------------------------------------------- spec
def test_compare_defaults_and_canonical_specs(tmp_path: Path) -> None:
    assert load_spec().compare == {"baselines": [], "methods": ["bce", "slam"], "samples": None}
    spec = load_spec(_small(tmp_path, samples=4))
    assert spec.compare == {"baselines": [BASELINE], "methods": ["bce"], "samples": 4}
    spec = load_spec(sets=["compare.baselines=[ml-cw, mla-lp]", "compare.methods=[slam]"])
    assert spec.compare["baselines"] == ["ml-cw", "mla-lp"] and spec.compare["methods"] == ["slam"]


@pytest.mark.parametrize(
    ("compare", "needle"),
    [
        ({"baselines": ["bce"]}, r"'compare.baselines'.*minimum-norm attacks \(ml-cw, ml-deepfool, mla-lp\)"),
        ({"baselines": ["ml-dfool"]}, "Did you mean 'ml-deepfool'"),
        ({"baselines": "ml-cw"}, "'compare.baselines'"),
        ({"baselines": ["ml-deepfool", "ml-deepfool:steps=3"]}, "listed twice"),
        ({"baselines": ["ml-cw"], "methods": ["mla-lp"]}, "'compare.methods'.*list it in compare.baselines"),
        ({"baselines": ["ml-cw"], "methods": []}, "'compare.methods'"),
        ({"baselines": ["ml-cw"], "methods": ["class:0"]}, "needs correlations"),
        ({"samples": 1}, r"'compare.samples'.*\[2, samples.count = 24\]"),
        ({"samples": 25}, "'compare.samples'"),
        ({"sample": 3}, "Did you mean 'samples'"),
    ],
)
def test_bad_compare_sections_are_refused(tmp_path: Path, compare: dict, needle: str) -> None:
    path = tiny_spec(tmp_path, methods=["bce", "slam"], compare=compare)
    with pytest.raises(LabelflipError, match=needle):
        load_spec(path)


def test_config_hash_unchanged_without_a_compare_stage(tmp_path: Path) -> None:
    assert load_spec().config_hash() == "fc9345e6dc45b37c"  # the default study, as stored before `compare`
    plain = load_spec(tiny_spec(tmp_path))
    explicit = load_spec(tiny_spec(tmp_path, compare={"baselines": [], "methods": ["bce", "slam"]}))
    assert explicit.config_hash() == plain.config_hash()
    staged = load_spec(tiny_spec(tmp_path, compare={"baselines": ["ml-deepfool"]}))
    assert staged.config_hash() != plain.config_hash()
    assert load_spec(tiny_spec(tmp_path, compare={"baselines": ["ml-cw"]})).config_hash() != staged.config_hash()


# ----------------------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("table7")
    spec = load_spec(_small(tmp))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctx = run_study(spec)
    return spec, ctx, [str(w.message) for w in caught]


def test_stage_stores_per_sample_arrays_and_examples(finished) -> None:
    spec, _, messages = finished
    with ResultsStore(Path(spec.output) / "results.sqlite") as store:
        art = store.get_artefact("lin", artefact_kind(BASELINE))
    n = 6
    assert art["baseline"] == BASELINE and art["label"] == "ML-DeepFool" and art["num_samples"] == n
    norms, base = np.asarray(art["norms"]), np.asarray(art["baseline_flips"])
    bce, achieved = np.asarray(art["flips"]["BCE"]), np.asarray(art["achieved"]["BCE"])
    assert norms.shape == base.shape == bce.shape == achieved.shape == (n,) and len(art["status"]) == n
    assert np.all(norms > 0) and np.all(norms < 0.3)
    assert np.all(achieved <= norms + 1e-6)  # never over the baseline's norm
    assert bce.mean() > base.mean()  # the paper's finding, on this model too
    ex = art["examples"]
    assert ex["sample_index"] == [0, 1] and [p["label"] for p in ex["panels"]] == ["ML-DeepFool", "BCE"]
    clean = decode_array(ex["clean"])
    assert clean.shape == (2, 3, 16, 16)
    for panel in ex["panels"]:
        adv = decode_array(panel["adv"])
        assert adv.shape == clean.shape and np.asarray(panel["probs"]).shape == (2, 8)
        np.testing.assert_allclose(np.abs(adv - clean).reshape(2, -1).max(1), panel["norm"], atol=1e-6)
    np.testing.assert_allclose(ex["panels"][0]["norm"], norms[:2], atol=1e-6)  # the unclipped examples
    assert not [m for m in messages if "L-inf budget" in m]  # no unit-mistake warning for measured budgets


def test_stage_resumes_without_recomputing(finished, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, ctx, _ = finished
    db = Path(spec.output) / "results.sqlite"
    with ResultsStore(db) as store:
        before = store.get_artefact("lin", artefact_kind(BASELINE))

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed a stored (model, baseline)")

    monkeypatch.setattr(stage, "baseline_comparison", refuse)
    run_study(spec)  # everything stored: neither the units nor the stage run again
    assert run_table7(ctx, rank=1) == 0  # another rank never runs the stage
    with ResultsStore(db) as store:
        assert store.get_artefact("lin", artefact_kind(BASELINE)) == before
    with sqlite3.connect(db) as con:  # as if killed before this pair was stored
        con.execute("DELETE FROM artefacts WHERE kind = ?", (artefact_kind(BASELINE),))
    calls = []
    monkeypatch.setattr(stage, "baseline_comparison", lambda *a, **k: calls.append(a[2]) or {**before, "x": 1})
    assert run_table7(ctx) == 1 and calls == [BASELINE]
    with ResultsStore(db) as store:
        assert store.get_artefact("lin", artefact_kind(BASELINE))["x"] == 1
