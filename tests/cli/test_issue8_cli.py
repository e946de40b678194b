"""Issue 8 on the command line: duplicate method labels (item 9), artefacts checked against the model (item 8),
the probe cap and capped profiles (item 1), ``--preset paper`` and ``class-auto`` (items 12, 14), and bad
options refused before any work."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from labelflip import cli
from labelflip.analysis import Profile

runner = CliRunner()


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command gets as far as loading a model (the checks must come first)."""
    from labelflip.cli import analysis, attack

    def boom(name: str, *args: object, **kwargs: object):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(attack, "load_inputs", boom)
    monkeypatch.setattr(analysis, "load_inputs", boom)
    monkeypatch.setattr(analysis, "load_named_model", boom)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["attack", "--methods", "slam,slam:0.5"], "given twice"),
        (["attack", "--eps-corr", "-1", "--methods", "class:0"], "--eps-corr"),
        (["attack", "--max-steps", "0"], "--max-steps"),
        (["attack", "--preset", "authors"], "--preset"),
        (["attack", "--markdown", "{tmp}/afile/t.md"], "afile is a file"),
        (["attack", "--markdown", "{tmp}"], "it is a directory"),
        (["profile", "--out", "{tmp}/afile/p.json"], "afile is a file"),
        (["profile", "--max-steps", "5", "--interval", "10"], "--max-steps"),
        (["correlations", "--out", "{tmp}"], "it is a directory"),
    ],
)
def test_bad_options_are_refused_before_any_work(no_model, tmp_path, args: list[str], needle: str) -> None:
    (tmp_path / "afile").write_text("x")
    res = runner.invoke(cli.app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output


def _probe(tmp_path, *extra: str) -> Profile:
    out = tmp_path / "p.json"
    res = runner.invoke(cli.app, ["profile", "--samples", "6", "--interval", "5", "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    return Profile.load(out)


def test_loaded_profile_is_checked_against_model_norm_and_k(tiny_zoo, tmp_path) -> None:
    prof = _probe(tmp_path)
    assert prof.model_fingerprint is not None and prof.max_steps == 2000
    base = ["attack", "--samples", "3", "--budgets", "50%", "--methods", "slam", "--profile"]
    cases = {
        "k5.json": ({"num_labels": 5}, "K = 5"),
        "l2.json": ({"norm": "l2"}, "l2 profile"),
        "other.json": ({"model_fingerprint": "fp-other"}, "fp-other"),
        "cap.json": ({"stop_reason": "cap"}, "stopped at its cap"),
    }
    for name, (change, needle) in cases.items():
        dataclasses.replace(prof, **change).save(tmp_path / name)
        res = runner.invoke(cli.app, [*base, str(tmp_path / name)])
        assert res.exit_code == 2 and needle in res.output and f"--profile {tmp_path / name}" in res.output, name
    res = runner.invoke(cli.app, [*base, str(tmp_path / "cap.json"), "--allow-capped-profile"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli.app, [*base, str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output


def test_capped_probe_is_flagged_and_refused_for_percent_budgets(tiny_zoo, tmp_path) -> None:
    res = runner.invoke(cli.app, ["profile", "--samples", "6", "--interval", "5", "--order", "1", "--max-steps", "5",
                                  "--out", str(tmp_path / "p.json")])  # fmt: skip
    assert res.exit_code == 0 and "stopped at its cap --max-steps 5" in res.output, res.output
    assert json.loads((tmp_path / "p.json").read_text())["stop_reason"] == "cap"
    args = ["attack", "--samples", "3", "--budgets", "50%", "--methods", "bce", "--max-steps", "40"]
    res = runner.invoke(cli.app, args)
    assert res.exit_code == 2 and "stopped at its cap" in res.output, res.output


def test_correlations_of_another_model_are_refused(tiny_zoo, tmp_path) -> None:
    out = tmp_path / "c.json"
    res = runner.invoke(cli.app, ["correlations", "--samples", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    data["model_fingerprint"] = "fp-other"
    (tmp_path / "other.json").write_text(json.dumps(data))
    args = ["attack", "--samples", "3", "--budgets", "0.01", "--methods", "class:0", "--correlations"]
    res = runner.invoke(cli.app, [*args, str(tmp_path / "other.json")])
    assert res.exit_code == 2 and "--correlations" in res.output and "fp-other" in res.output, res.output


def test_paper_preset_and_class_auto_in_the_table(tiny_zoo, tmp_path) -> None:
    md = tmp_path / "new" / "t.md"  # a missing parent directory is created
    args = ["attack", "--samples", "3", "--probe-samples", "4", "--budgets", "50%,100%", "--preset", "paper"]
    res = runner.invoke(cli.app, [*args, "--methods", "bce,class-auto", "--markdown", str(md)])
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "preset paper" in text and "CLASS(γ=auto, raw Z): γ = " in text and "chosen on 4 held-out" in text
    assert "γ = " in res.output
