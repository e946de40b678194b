"""``labelflip evaluate`` (labelflip/cli/evaluate.py), its record, its option errors, the interval and winner helpers
of labelflip/report/ensemble.py, and a study whose methods include ``worst-case`` (runner + report section), all on
the tiny stand-ins of the built-in models (tests/conftest.py ``tiny_zoo``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from scipy import stats
from typer.testing import CliRunner

from labelflip import cli
from labelflip.models.architectures import build_architecture
from labelflip.models.checkpoints import save_checkpoint
from labelflip.report.ensemble import attribute_winners, mean_interval

runner = CliRunner()


def test_evaluate_writes_a_leaderboard_record(tiny_zoo, tmp_path) -> None:
    out = tmp_path / "rec" / "out.json"
    args = ["evaluate", "--samples", "4", "--eps", "0.01,8/255", "--probe-samples", "4", "--per-sample"]
    res = runner.invoke(cli.app, [*args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "worst case" in res.output and "BCE" in res.output and "Per sample" in res.output
    rec = json.loads(out.read_text())
    assert rec["format"] == "labelflip.evaluate/1" and rec["labelflip_version"]
    assert rec["model"]["name"] == "asl-cnn" and rec["model"]["fingerprint"].startswith("fp-asl-cnn")
    assert rec["dataset"] == {"spec": "synthetic", "split": "test"} and rec["norm"] == "linf"
    assert rec["samples"]["count"] == 4 and len(rec["samples"]["indices"]) == 4 and rec["samples"]["seed"] == 0
    assert rec["budgets"] == pytest.approx([0.01, 8 / 255])
    members = rec["ensemble"]["members"]
    assert members == ["BCE", "Linear", "MaxFlip", "SLAM", "CLASS(γ=0)", "ML-DeepFool"]
    assert rec["ensemble"]["cost_multiple"] > 1 and set(rec["ensemble"]["passes"]) == set(members)
    assert len(rec["per_sample"]) == 4
    for b, r in enumerate(rec["results"]):
        flips = [s["flips"][b] for s in rec["per_sample"]]
        assert r["eps"] == pytest.approx(rec["budgets"][b]) and r["n"] == 4
        assert r["mean"] == pytest.approx(np.mean(flips)) and r["max"] == max(flips)
        assert r["ci_low"] <= r["mean"] <= r["ci_high"] and r["ci_method"].startswith("Student t")
        assert set(r["wins"]) == {*members, "none"} and sum(r["wins"].values()) == 4
        winners = [s["winner"][b] for s in rec["per_sample"]]
        assert all(r["wins"][m] == winners.count(m) for m in r["wins"])
    assert all(w == "none" for s in rec["per_sample"] for f, w in zip(s["flips"], s["winner"], strict=True) if f == 0)
    assert rec["artefacts"]["profile"]["eps_max"] > 0 and "val images" in rec["artefacts"]["profile"]["source"]


@pytest.mark.parametrize("eps", ["", "abc", "-0.1", "5%", "1/0", "0.01,0.01", "inf", "0.01,,0.02"])
def test_bad_eps_is_refused_before_any_model_loads(tiny_zoo, eps: str) -> None:
    res = runner.invoke(cli.app, ["evaluate", "--eps", eps])
    assert res.exit_code == 2, res.output
    assert "--eps" in res.output and tiny_zoo == []


def test_bad_model_names_the_option_and_the_checkpoint_alternative(tiny_zoo, tmp_path) -> None:
    res = runner.invoke(cli.app, ["evaluate", "--model", "asl_cnn", "--eps", "0.01"])
    assert res.exit_code == 2 and "--model" in res.output and "checkpoint file" in res.output
    res = runner.invoke(cli.app, ["evaluate", "--model", str(tmp_path / "missing.safetensors"), "--eps", "0.01"])
    assert res.exit_code == 2 and "existing checkpoint file" in res.output
    res = runner.invoke(cli.app, ["evaluate", "--eps", "0.01", "--json", str(tmp_path)])
    assert res.exit_code == 2 and "--json" in res.output and tiny_zoo == []


def test_evaluate_takes_a_labelflip_checkpoint_file(tiny_zoo, tmp_path) -> None:
    net = build_architecture("asl_convnet", num_labels=8, width=4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # seeded weights (the default init draws from the global RNG): its probe converges
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    ckpt = save_checkpoint(
        tmp_path / "mine.safetensors",
        net,
        arch="asl_convnet",
        num_labels=8,
        arch_kwargs={"width": 4},
        metadata={"name": "mine"},
    )
    out = tmp_path / "r.json"
    args = ["evaluate", "--model", str(ckpt), "--samples", "3", "--eps", "0.02", "--probe-samples", "4"]
    res = runner.invoke(cli.app, [*args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    assert rec["model"]["checkpoint"] == str(ckpt) and rec["model"]["fingerprint"].startswith("checkpoint:mine#")
    assert rec["model"]["num_labels"] == 8 and tiny_zoo == []  # no registered model was loaded


def test_mean_interval_is_the_student_t_interval() -> None:
    x = np.array([1.0, 2.0, 4.0, 7.0])
    got = mean_interval(x)
    half = stats.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2.0
    assert got["mean"] == pytest.approx(3.5) and got["std_pop"] == pytest.approx(np.std(x))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((3.5 - half, 3.5 + half))
    assert mean_interval([3, 3, 3])["ci_low"] == mean_interval([3, 3, 3])["ci_high"] == 3.0  # point interval


def test_attribute_winners_follows_the_ensemble_order() -> None:
    worst = np.array([[0, 2, 3, 1]])
    members = {"BCE": np.array([[0, 2, 1, 0]]), "MaxFlip": np.array([[0, 2, 3, 0]])}
    labels, above = attribute_winners(worst, members)
    assert labels == [["none", "BCE", "MaxFlip", "not stored"]] and above == {"BCE": 0, "MaxFlip": 0}
    _, above = attribute_winners(worst, {"BCE": np.array([[1, 0, 0, 0]])})
    assert above == {"BCE": 1}


def test_a_study_with_worst_case_runs_and_reports_it(tiny_zoo, tmp_path) -> None:
    spec = {
        "name": "wc",
        "models": ["asl-cnn"],
        "samples": {"count": 4, "seed": 0},
        "budgets": {"absolute": [0.01, 0.04]},
        "methods": ["bce", "maxflip", "worst-case"],
        "profile": {"samples": 8, "interval": 5},
        "correlations": {"samples": 3},
        "chunk": 2,
        "report": {"examples": 0},
    }
    path = tmp_path / "wc.yaml"
    path.write_text(yaml.safe_dump(spec))
    res = runner.invoke(cli.app, ["study", "run", str(path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "out" / "tables" / "asl-cnn-worst-case.md").read_text()
    assert "| budget | eps | worst case | 95 % CI (t) | BCE | Linear | MaxFlip" in md
    assert "Not run as methods of this study, so never credited: Linear, SLAM, CLASS(γ=0), ML-DeepFool" in md
    assert "Consistency: no stored member has more flips" in md and "x BCE's wall time" in md
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Worst case: asl-cnn" in html and "labelflip-worst-case" in html
    table = (tmp_path / "out" / "tables" / "asl-cnn.md").read_text()
    assert "| Worst case " in table and "| MaxFlip " in table
