"""CLI end to end on tiny stand-ins for the built-in models (the real ones take a minute to train)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from labelflip import cli, zoo
from tests.conftest import TinyCNN, make_inputs

runner = CliRunner()


@pytest.fixture
def tiny_zoo(monkeypatch: pytest.MonkeyPatch) -> None:
    class Split(SimpleNamespace):
        def __len__(self) -> int:
            return self.x.shape[0]

    data = SimpleNamespace(
        train=Split(x=make_inputs(8, seed=1), y=torch.zeros(8, 8)),
        val=Split(x=make_inputs(12, seed=2), y=torch.zeros(12, 8)),
        test=Split(x=make_inputs(10, seed=3), y=torch.zeros(10, 8)),
    )
    loaded: list[str] = []

    def load_builtin(name: str, **kwargs):
        loaded.append(name)
        return SimpleNamespace(
            module=TinyCNN(k=8, seed=4), fingerprint=f"fp-{name}", metrics={"test_map": 0.5}, name=name
        )

    monkeypatch.setattr(zoo, "load_builtin", load_builtin)
    monkeypatch.setattr(zoo, "default_dataset", lambda: data)
    return loaded


def test_attack_prints_table_and_writes_markdown(tiny_zoo, tmp_path) -> None:
    md = tmp_path / "t.md"
    res = runner.invoke(
        cli.app,
        ["attack", "--samples", "6", "--budgets", "0,0.01,0.05", "--loss", "bce,linear", "--markdown", str(md)],
    )
    assert res.exit_code == 0, res.output
    assert "BCE" in res.output and "Linear" in res.output and "Total" in res.output
    text = md.read_text()
    assert text.startswith("| method |") and "0.00 ± 0.00" in text  # zero budget column


def test_attack_with_percent_budgets_probes_a_profile(tiny_zoo, tmp_path) -> None:
    res = runner.invoke(cli.app, ["attack", "--samples", "4", "--budgets", "50%,100%", "--loss", "slam"])
    assert res.exit_code == 0, res.output
    assert "SLAM" in res.output and "50%" in res.output


def test_profile_command_writes_json(tiny_zoo, tmp_path) -> None:
    out = tmp_path / "p.json"
    res = runner.invoke(cli.app, ["profile", "--samples", "8", "--interval", "5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["format"] == "labelflip.profile/1"


def test_demo_runs_both_models(tiny_zoo, tmp_path) -> None:
    res = runner.invoke(cli.app, ["demo", "--samples", "4", "--profile-samples", "8", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert tiny_zoo == ["asl-cnn", "q2l-cnn"]
    for name in tiny_zoo:
        assert (tmp_path / f"flips-{name}.md").is_file()
        assert (tmp_path / f"profile-{name}.json").is_file()
    assert "SLAM" in res.output and "demo finished" in res.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["attack", "--budgets", "abc"], "--budgets"),
        (["attack", "--split", "bogus"], "--split"),
        (["attack", "--loss", "bcee"], "Did you mean 'bce'"),
        (["attack", "--samples", "999"], "--samples"),
        (["attack", "--budgets", "0.01,-1"], "--budgets"),
    ],
)
def test_bad_cli_input_is_a_clean_error(tiny_zoo, args: list[str], needle: str) -> None:
    res = runner.invoke(cli.app, args)
    assert res.exit_code == 2
    assert needle in res.output
    assert "Traceback" not in res.output
