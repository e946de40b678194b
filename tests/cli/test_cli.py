"""CLI end to end on tiny stand-ins for the built-in models (the real ones take a minute to train)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from labelflip import cli

runner = CliRunner()


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


def test_demo_runs_the_builtin_study(tiny_zoo, tmp_path) -> None:
    args = [
        "demo",
        "--samples",
        "4",
        "--out",
        str(tmp_path),
        "--set",
        "profile.samples=8",
        "--set",
        "correlations.samples=3",
        "--set",
        "chunk=2",
        "--set",
        "report.examples=2",
        "--workers",
        "1",  # in this process: worker processes would not see the tiny zoo (tests/study/test_distributed.py)
    ]
    res = runner.invoke(cli.app, args)
    assert res.exit_code == 0, res.output
    assert tiny_zoo == ["asl-cnn", "q2l-cnn"]
    for name in tiny_zoo:
        table = (tmp_path / "tables" / f"{name}.md").read_text()
        for row in ("BCE", "Linear", "SLAM", "Random", "CLASS(γ=0)", "CLASS(γ=0.5)", "CLASS(γ=1)"):
            assert f"| {row} " in table, row
        assert (tmp_path / "figures" / f"{name}-profile.png").is_file()
        assert (tmp_path / "figures" / f"{name}-correlations.png").is_file()
    assert (tmp_path / "report.html").is_file() and (tmp_path / "results.sqlite").is_file()
    assert "finished in" in res.output and "Holm" in res.output
    # the SAE taste ran beside the report, in a child process; its tables follow the study's output
    assert (tmp_path / "robust" / "report.html").is_file()
    assert res.output.index("robust study robust-demo") > res.output.index("Holm")
    assert "Fig. 1" in res.output and res.output.rindex("finished in") > res.output.index("robust study robust-demo")
    first = (tmp_path / "tables" / "asl-cnn.md").read_text()
    (tmp_path / "tables" / "asl-cnn.md").unlink()
    again = runner.invoke(cli.app, args)  # resumes: nothing left to compute, the same table is rewritten
    assert again.exit_code == 0, again.output
    assert (tmp_path / "tables" / "asl-cnn.md").read_text() == first


def test_demo_workers_auto_means_two_processes_on_a_multicore_cpu(monkeypatch) -> None:
    from labelflip.cli import study as study_cli
    from labelflip.study import load_spec

    spec = load_spec()
    monkeypatch.setattr(study_cli.os, "cpu_count", lambda: 2)
    assert study_cli._workers("auto", spec) == 2 and study_cli._workers("3", spec) == 3
    monkeypatch.setattr(study_cli.os, "cpu_count", lambda: 1)
    assert study_cli._workers("auto", spec) == 1
    monkeypatch.setattr(study_cli.os, "cpu_count", lambda: 8)
    assert study_cli._workers("auto", load_spec(sets=["runtime.device=cpu"])) == 2


def test_attack_with_subset_methods(tiny_zoo, tmp_path) -> None:
    md = tmp_path / "t.md"
    args = ["attack", "--samples", "4", "--budgets", "0.01,0.05", "--methods", "class:0,class-raw:0.5,random,top-n:2"]
    res = runner.invoke(cli.app, [*args, "--markdown", str(md)])
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "CLASS(γ=0)" in text and "CLASS(γ=0.5, raw Z)" in text and "Random" in text and "Top-2" in text


def test_correlations_attackability_and_targets_commands(tiny_zoo, tmp_path) -> None:
    corr = tmp_path / "c.json"
    res = runner.invoke(cli.app, ["correlations", "--samples", "3", "--flipdown", "--out", str(corr)])
    assert res.exit_code == 0, res.output
    assert corr.is_file() and corr.with_suffix(".png").is_file()
    att = tmp_path / "a.json"
    res = runner.invoke(cli.app, ["attackability", "--per-label", "2", "--images", "16", "--out", str(att)])
    assert res.exit_code == 0, res.output
    assert "attackability vs confidence" in res.output and att.with_suffix(".png").is_file()
    tvf = tmp_path / "t.png"
    res = runner.invoke(cli.app, ["targets-vs-flips", "--samples", "3", "--step", "4", "--out", str(tvf)])
    assert res.exit_code == 0, res.output
    assert tvf.is_file() and "flips_opt / t_opt" in res.output  # default probe: the whole 12-image split
    res = runner.invoke(cli.app, ["targets-vs-flips", "--samples", "3", "--probe-samples", "50", "--out", str(tvf)])
    assert res.exit_code != 0 and "--probe-samples" in res.output and "12" in res.output  # refused, not clamped


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["attack", "--budgets", "abc"], "--budgets"),
        (["attack", "--split", "bogus"], "--split"),
        (["attack", "--loss", "bcee"], "Did you mean 'bce'"),
        (["attack", "--methods", "class"], "class:<gamma>"),
        (["attack", "--methods", "top-n:1.5"], "top-n"),
        (["targets-vs-flips", "--fractions", "a,b"], "--fractions"),
        (["attack", "--samples", "999"], "--samples"),
        (["attack", "--budgets", "0.01,-1"], "--budgets"),
    ],
)
def test_bad_cli_input_is_a_clean_error(tiny_zoo, args: list[str], needle: str) -> None:
    res = runner.invoke(cli.app, args)
    assert res.exit_code == 2
    assert needle in res.output
    assert "Traceback" not in res.output


def test_probe_count_defaults_to_what_is_available_and_refuses_more() -> None:
    """``--probe-samples``: left out, 100 or every available validation image; asked for more than there are (the
    split minus the evaluated samples), an error naming the option and the number available, never a silent cut."""
    from labelflip._validation import LabelflipError
    from labelflip.cli.loading import PROBE_DEFAULT, probe_count
    from labelflip.data import SyntheticConfig, make_synthetic

    data = make_synthetic(SyntheticConfig(seed=1, n_train=8, n_val=12, n_test=4, num_labels=4))
    assert probe_count(None, data, None, "t") == 12 and PROBE_DEFAULT == 100
    assert probe_count(None, data, list(range(5)), "t") == 7
    assert probe_count(7, data, list(range(5)), "t") == 7
    with pytest.raises(LabelflipError, match=r"--probe-samples.*minus the 5 evaluated samples = 7"):
        probe_count(8, data, list(range(5)), "t")


def test_demo_sets_aside_a_default_directory_it_cannot_resume(tmp_path) -> None:
    """`make demo` after an upgrade: the old demo's store (another config or engine) is moved aside, never deleted;
    an empty store or a resumable one stays."""
    from labelflip.cli.demo import set_aside_stale_demo
    from labelflip.study import load_spec
    from labelflip.study.store import ResultRow, ResultsStore, engine_hash

    spec = load_spec()
    out = tmp_path / "demo"
    conf = b"\x00" * 8

    def make(config: str, engine: str, rows: int) -> None:
        shutil.rmtree(out, ignore_errors=True)
        with ResultsStore(out / "results.sqlite") as store:
            store.claim(config)
            store.init_manifest({"spec": {}, "engine_hash": engine}, config)  # as the runner writes it
            row = ResultRow("m", "bce", 0, 0, 0, 0.1, 0, 3, 1, 1, 0, 0.1, 0.2, conf, conf, 0.5)
            if rows:
                store.write_unit([row])

    make(spec.config_hash(), engine_hash(), 1)
    assert set_aside_stale_demo(out, spec) is None and (out / "results.sqlite").is_file()  # a resume
    make("0ther", engine_hash(), 1)
    assert set_aside_stale_demo(out, spec) == tmp_path / "demo.0ther" and not out.exists()
    make(spec.config_hash(), "old-engine", 1)
    assert set_aside_stale_demo(out, spec) == tmp_path / f"demo.{spec.config_hash()}"
    make("0ther", engine_hash(), 1)
    assert set_aside_stale_demo(out, spec) == tmp_path / "demo.0ther-2"  # numbered, nothing overwritten
    make("0ther", engine_hash(), 0)
    assert set_aside_stale_demo(out, spec) is None  # nothing stored: the run reuses the directory
