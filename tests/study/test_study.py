"""Studies: the YAML spec, the resumable SQLite store, and a real ``kill -9`` in the middle of a run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import astuple
from pathlib import Path

import pytest
import yaml

from labelflip._validation import LabelflipError
from labelflip.study import load_spec
from labelflip.study.runner import run_study
from labelflip.study.store import ResultsStore

ROOT = Path(__file__).resolve().parent.parent

TINY_MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build():
        gen = torch.Generator().manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(2), nn.Flatten(),
                            nn.Linear(24, 8))
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.6)
        return net
    """
)


def tiny_spec(tmp_path: Path, out: str = "run", **extra) -> Path:
    (tmp_path / "tiny.py").write_text(TINY_MODEL)
    spec = {
        "name": "tiny",
        "output": str(tmp_path / out),
        "models": [{"name": "tiny", "factory": f"{tmp_path / 'tiny.py'}:build"}],
        "dataset": {
            "name": "synthetic",
            "split": "test",
            "config": {"n_train": 64, "n_val": 32, "n_test": 40, "image_size": 16, "num_labels": 8},
        },
        "samples": {"count": 24, "seed": 1},
        "budgets": {"fractions": [0.1, 0.5, 1.0]},
        "methods": ["bce", "slam", "random", "class:0"],
        "seeds": [0, 1],
        "profile": {"samples": 12, "interval": 5},
        "correlations": {"samples": 4},
        "attackability": {"per_label": 3, "images": 64},
        "chunk": 4,
    }
    spec.update(extra)
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return path


def _rows(out: Path) -> list[tuple]:
    with ResultsStore(out / "results.sqlite") as store:
        return [astuple(r)[:-1] for r in store.rows()]  # everything but the timing


# ----------------------------------------------------------------------------- spec
def test_spec_defaults_file_and_overrides(tmp_path: Path) -> None:
    spec = load_spec()
    assert spec.models[0].name == "asl-cnn" and spec.budgets == {"fractions": [0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0]}
    path = tiny_spec(tmp_path)
    spec = load_spec(path, overrides={"output": str(tmp_path / "other")}, sets=["profile.samples=20", "norm=l2"])
    assert spec.output == str(tmp_path / "other")  # CLI > file
    assert spec.profile["samples"] == 20 and spec.profile["interval"] == 5 and spec.profile["order"] == 4
    assert spec.norm == "l2"
    assert spec.methods == ["bce", "slam", "random", "class:0"]
    absolute = load_spec(path, overrides={"budgets": {"absolute": [0.01]}})
    assert absolute.budgets == {"absolute": [0.01]}  # budgets are replaced, not merged


def test_config_hash_ignores_output_but_not_results_options(tmp_path: Path) -> None:
    path = tiny_spec(tmp_path)
    a = load_spec(path)
    assert a.config_hash() == load_spec(path, overrides={"output": "elsewhere", "name": "x"}).config_hash()
    assert a.config_hash() != load_spec(path, sets=["samples.count=10"]).config_hash()
    assert a.config_hash() != load_spec(path, sets=["chunk=8"]).config_hash()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"sampels": {"count": 3}}, "Did you mean 'samples'"),
        ({"profile": {"intervall": 3}}, "profile.intervall"),
        ({"methods": ["bce", "clas:0"]}, "Did you mean 'class'"),
        ({"methods": ["slam", "slam:0.5"]}, "listed twice"),
        ({"methods": ["linear"], "baseline": "bce"}, "'baseline'"),
        ({"budgets": {"fractions": [0.1], "absolute": [0.1]}}, "'budgets'"),
        ({"samples": {"count": 1}}, "samples.count"),
        ({"dataset": {"name": "cocoa-nonexistent"}}, "dataset.name"),
        ({"seeds": [0, 0]}, "'seeds'"),
        ({"models": []}, "'models'"),
    ],
)
def test_bad_specs_are_refused_with_the_key(tmp_path: Path, data: dict, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LabelflipError, match=needle.replace("(", r"\(").replace("'", "'")):
        load_spec(path)


def test_spec_file_errors(tmp_path: Path) -> None:
    with pytest.raises(LabelflipError, match="'path'"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed")
    with pytest.raises(LabelflipError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(LabelflipError, match="--set"):
        load_spec(sets=["nokey=1"])


# ----------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp("study")
    spec = load_spec(tiny_spec(tmp))
    ctx = run_study(spec)
    return tmp, ctx


def test_study_stores_one_row_per_sample_budget_method_seed(finished) -> None:
    tmp, ctx = finished
    with ResultsStore(tmp / "run" / "results.sqlite") as store:
        # bce, slam, class:0 once (deterministic) + random for 2 seeds; 24 samples x 3 budgets
        assert store.count() == (3 + 2) * 24 * 3
        manifest = store.manifest()
        for key in ("labelflip_version", "git_hash", "torch_version", "device", "dtype", "seeds", "config_hash"):
            assert key in manifest
        assert manifest["config_hash"] == ctx.spec.config_hash()
        assert manifest["fingerprint:tiny"].startswith("factory:")
        assert store.get_artefact("tiny", "profile")["format"] == "labelflip.profile/1"
        assert store.get_artefact("tiny", "correlations") is not None
        assert store.get_artefact("tiny", "attackability")["format"] == "labelflip.attackability/1"
        flips = store.array("tiny", "bce", 0)
        assert flips.shape == (3, 24)
        r0, r1 = store.array("tiny", "random", 0), store.array("tiny", "random", 1)
        assert not (r0 == r1).all() or (r0 == 0).all()
        clean, adv = store.confidences("tiny", "bce", 0, 2)
        assert clean.shape == (24, 8) and adv.shape == (24, 8)


def test_rerun_recomputes_nothing(finished, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun of a finished study runs no attack and measures no artefact again (each would raise here)."""
    from labelflip.study import execute, runner

    tmp, ctx = finished
    before = _rows(tmp / "run")

    def forbidden(*args, **kwargs):
        raise AssertionError("recomputed on resume")

    for name in ("measure_profile", "measure_correlations_for", "measure_attackability"):
        monkeypatch.setattr(runner, name, forbidden)
    monkeypatch.setattr(execute, "create_attack", forbidden)
    calls = []
    run_study(ctx.spec, progress=lambda label, done, total: calls.append(label))
    assert _rows(tmp / "run") == before
    assert calls  # progress still reported for skipped units


def test_shared_trajectories_change_no_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's units share weight-free trajectories (``reuse``: the k = K budgets of CLASS and random subsets
    are BCE's); the same study run without sharing stores the same rows, and the cache is empty once the units are
    done."""
    from labelflip.attacks import mifgsm
    from labelflip.study import execute

    small = {"budgets": {"absolute": [0.02, 0.1, 0.3]}, "methods": ["bce", "random", "class:0"], "seeds": [0]}
    small |= {"samples": {"count": 8, "seed": 1}}
    hits = mifgsm.CAPTURES.hits
    run_study(load_spec(tiny_spec(tmp_path, out="shared", **small)))
    assert mifgsm.CAPTURES.hits >= 2 * 2 - 1  # random's and CLASS's k = K budgets of 2 chunks (fewer if k < K)
    assert not mifgsm.CAPTURES._entries  # released when the units are done
    engine_options = execute.engine_options
    monkeypatch.setattr(execute, "engine_options", lambda method, settings, reuse: engine_options(method, settings))
    hits = mifgsm.CAPTURES.hits
    run_study(load_spec(tiny_spec(tmp_path, out="unshared", **small)))
    assert mifgsm.CAPTURES.hits == hits  # nothing taken from the cache this time
    assert _rows(tmp_path / "unshared") == _rows(tmp_path / "shared")


def test_changed_config_is_refused(finished) -> None:
    tmp, _ = finished
    changed = load_spec(tiny_spec(tmp), sets=["samples.seed=5"])
    with pytest.raises(LabelflipError, match="different configuration"):
        run_study(changed)


def test_export_csv_and_parquet(finished) -> None:
    tmp, _ = finished
    with ResultsStore(tmp / "run" / "results.sqlite") as store:
        text = store.export_csv(tmp / "r.csv").read_text().splitlines()
        assert text[0].startswith("model,method,seed,budget_index") and len(text) == 1 + store.count()
        pq = pytest.importorskip("pyarrow.parquet")
        table = pq.read_table(store.export_parquet(tmp / "r.parquet"))
        assert table.num_rows == store.count()


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_study_resumes_to_identical_rows(tmp_path: Path, finished, sig: int) -> None:
    """Kill `labelflip study run` mid-run (kill -9, or Ctrl-C), rerun: exactly the uninterrupted rows."""
    ref_tmp, _ = finished
    spec_path = tiny_spec(tmp_path)
    total = (3 + 2) * 24 * 3
    cmd = [sys.executable, "-m", "labelflip", "study", "run", str(spec_path), "--no-report"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = tmp_path / "run" / "results.sqlite"
    deadline = time.monotonic() + 120
    while _count(db) < total // 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the study finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    partial = _count(db)
    assert 0 < partial < total
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and b"resume" in err
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert _rows(tmp_path / "run") == _rows(ref_tmp / "run")


def test_report_files_and_chromium_render(finished, chromium: str, tmp_path: Path) -> None:
    """The real study report: tables in three formats, figures, and one HTML page that Chromium renders with
    every section and every image."""
    import re

    from labelflip.report.build import build_report
    from tests.chromium_support import run_chromium

    run_dir, ctx = finished
    path = build_report(ctx.out)
    out = run_dir / "run"
    for suffix in ("md", "csv", "tex"):
        assert (out / "tables" / f"tiny.{suffix}").is_file()
    md = (out / "tables" / "tiny.md").read_text()
    for row in ("BCE", "SLAM", "Random", "CLASS(γ=0)", "Total", "paired two-sided t-test"):
        assert row in md
    for fig in ("flips", "confidences", "profile", "correlations", "attackability", "examples"):
        for suffix in ("png", "svg"):
            assert (out / "figures" / f"tiny-{fig}.{suffix}").is_file(), (fig, suffix)
    html = path.read_text()
    images = re.findall(r'<img [^>]*src="data:image/png;base64,', html)
    assert len(images) == 6
    assert "How to read this report" in html and "config_hash" in html
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", url=path.resolve().as_uri()).stdout
    assert 'data-section="model-tiny"' in dom
    assert len(re.findall(r"data-figure=", dom)) == 6
    assert "frequency vs confidence" in dom  # Table II
    assert "<table" in dom and "CLASS(γ=0)" in dom
