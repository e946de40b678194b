"""Probe costs on the command line (issue 14 items 4-5): eps_max with its interval and probe size, probes reused
across commands from the probe cache (said on stderr), ``--no-cache``, ``--probe-samples`` on every probing
command with errors naming it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from labelflip import cli
from labelflip.cli.study import _profile_text

runner = CliRunner()


def test_profile_prints_interval_and_is_reused_by_attack(tiny_zoo, tmp_path) -> None:
    out = tmp_path / "p.json"
    res = runner.invoke(cli.app, ["profile", "--probe-samples", "8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    prof = json.loads(out.read_text())
    low, high = prof["eps_max_ci"]
    assert f"(95% CI {low:.3g}-{high:.3g}, 8 probe images)" in res.output and "reusing" not in res.output
    assert "profile probe (steps):" in res.output  # progress lines off a terminal
    again = runner.invoke(cli.app, ["profile", "--samples", "8", "--out", str(tmp_path / "q.json")])
    assert again.exit_code == 0 and "reusing cached profile (" in again.output
    assert json.loads((tmp_path / "q.json").read_text()) == prof
    args = ["attack", "--samples", "3", "--probe-samples", "8", "--budgets", "50%", "--methods", "bce"]
    attacked = runner.invoke(cli.app, args)
    assert attacked.exit_code == 0, attacked.output
    assert "reusing cached profile (" in attacked.output  # the attack's probe is the profile command's
    fresh = runner.invoke(cli.app, [*args, "--no-cache"])
    assert fresh.exit_code == 0 and "reusing" not in fresh.output and "profile probe (steps):" in fresh.output


def test_correlations_cached_and_progress(tiny_zoo, tmp_path) -> None:
    args = ["correlations", "--probe-samples", "3", "--out", str(tmp_path / "c.json")]
    first = runner.invoke(cli.app, args)
    assert first.exit_code == 0, first.output
    assert "correlation probe:" in first.output and "reusing" not in first.output
    second = runner.invoke(cli.app, args)
    assert second.exit_code == 0 and "reusing cached correlations (" in second.output
    third = runner.invoke(cli.app, [*args, "--no-cache"])
    assert third.exit_code == 0 and "reusing" not in third.output


@pytest.mark.parametrize(
    "args",
    [
        ["profile", "--probe-samples", "1"],
        ["correlations", "--probe-samples", "5000"],
        ["attack", "--probe-samples", "1"],
        ["attack", "--probe-samples", "5000"],
        ["attackability", "--probe-samples", "0"],
        ["targets-vs-flips", "--probe-samples", "1"],
        ["demo", "--probe-samples", "1"],
        ["study", "run", "--probe-samples", "0"],
    ],
)
def test_probe_samples_errors_name_the_option(args: list[str]) -> None:
    res = runner.invoke(cli.app, args)
    assert res.exit_code == 2, res.output
    assert "--probe-samples" in res.output and "Traceback" not in res.output


def test_demo_summary_line_shows_the_interval() -> None:
    stored = {
        "format": "labelflip.profile/1",
        **{k: [] for k in ("coefficients", "eps", "flips", "flips_bce", "flips_linear")},
        "eps_max": 0.223,
        "order": 4,
        "interval": 10,
        "alpha": 0.0004,
        "curve": "max",
        "norm": "linf",
        "rel_tol": 0.01,
        "num_labels": 24,
        "num_samples": 40,
        "stop_reason": "converged",
        "eps_max_ci": [0.19, 0.26],
    }
    assert _profile_text(stored) == "eps_max = 0.223 (95% CI 0.19-0.26, 40 probe images) (converged)"
    del stored["eps_max_ci"]  # a study stored before the interval
    assert _profile_text(stored) == "eps_max = 0.223 (40 probe images) (converged)"
