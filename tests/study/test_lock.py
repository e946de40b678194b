"""One writer per study directory: a second run is refused at once, a ``kill -9`` never blocks the rerun, and
readers (export, report) open the store read-only while a run is writing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelflip._validation import LabelflipError
from labelflip.report.build import open_study
from labelflip.study import load_spec, run_study
from labelflip.study.lock import lock_path, read_lock_info, study_lock
from labelflip.study.store import ResultsStore
from tests.study.test_study import ROOT, tiny_spec

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # 2 busy cores: one thread per process


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "labelflip", *args]


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=1) as con:
            return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


def _start(spec_path: Path, out: Path) -> subprocess.Popen:
    """``labelflip study run SPEC --out OUT --no-report`` in the background; its stderr (one progress line per unit,
    more than a pipe holds) goes to ``OUT.stderr``."""
    with out.with_suffix(".stderr").open("wb") as err:
        cmd = _cli("study", "run", str(spec_path), "--out", str(out), "--no-report")
        return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=err)


def _wait(cond, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            err = Path(proc.args[-2]).with_suffix(".stderr").read_text()[-2000:]
            raise AssertionError(f"the study exited ({proc.returncode}) before {what}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


# ----------------------------------------------------------------------------- the lock itself (in-process)
def test_lock_file_holds_the_holder_and_is_removed_on_exit(tmp_path: Path) -> None:
    out = tmp_path / "new" / "dir"
    with study_lock(out) as info:
        assert info.locked and info.path == out / ".labelflip.lock" == lock_path(out)
        held = read_lock_info(info.path)
        assert held is not None and held["pid"] == os.getpid() == info.pid and held["started"] == info.started
        assert held["host"] and held["name"] == "study"
    assert not info.path.exists()


def test_second_lock_is_refused_with_pid_host_start_and_fix(tmp_path: Path) -> None:
    with study_lock(tmp_path) as info:
        start = time.monotonic()
        with pytest.raises(LabelflipError) as err, study_lock(tmp_path):
            pass
        assert time.monotonic() - start < 1
        msg = str(err.value)
        for needle in (str(tmp_path), f"PID {os.getpid()}", info.host, info.started, "wait for it to finish", "--out"):
            assert needle in msg, needle
        assert read_lock_info(info.path)["pid"] == os.getpid()  # the refused attempt left the holder's JSON alone
    with study_lock(tmp_path):  # free again
        pass


def test_rank_locks_are_independent_of_the_directory_lock(tmp_path: Path) -> None:
    with study_lock(tmp_path), study_lock(tmp_path, name="rank0") as r0, study_lock(tmp_path, name="rank1") as r1:
        assert (r0.path.name, r1.path.name) == (".labelflip.rank0.lock", ".labelflip.rank1.lock")
        with pytest.raises(LabelflipError, match="rank1"), study_lock(tmp_path, name="rank1"):
            pass
    for bad in ("", "../x", "a b", "-r"):
        with pytest.raises(LabelflipError, match="'name'"):
            lock_path(tmp_path, name=bad)


def test_stale_lock_file_does_not_block(tmp_path: Path) -> None:
    """What a ``kill -9`` leaves: a lock file nobody holds (with a dead run's JSON, or torn) is simply relocked."""
    for stale in ('{"pid": 999999, "host": "gone", "started": "yesterday"}', '{"pid": 12', ""):
        lock_path(tmp_path).write_text(stale)
        with study_lock(tmp_path) as info:
            assert read_lock_info(info.path)["pid"] == os.getpid()


def test_readonly_store(tmp_path: Path) -> None:
    with pytest.raises(LabelflipError, match="run the study first"):
        ResultsStore(tmp_path / "missing" / "results.sqlite", readonly=True)
    assert not (tmp_path / "missing").exists()  # a reader creates nothing
    (tmp_path / "junk.sqlite").write_text("not a database at all, just some text to fill a page " * 100)
    with pytest.raises(LabelflipError, match="not a readable labelflip results store"):
        ResultsStore(tmp_path / "junk.sqlite", readonly=True)
    with ResultsStore(tmp_path / "results.sqlite") as store:
        store.put_artefact("m", "k", {"a": 1})
    with ResultsStore(tmp_path / "results.sqlite", readonly=True) as store:
        assert store.get_artefact("m", "k") == {"a": 1} and store.count() == 0
        with pytest.raises(LabelflipError, match="readonly=True"):
            store.put_artefact("m", "k", {"a": 2})


# ----------------------------------------------------------------------------- real runs (subprocesses)
def test_kill_9_leaves_no_lock_that_blocks_the_rerun(tmp_path: Path) -> None:
    spec_path = tiny_spec(tmp_path, methods=["bce", "slam"], seeds=[0], attackability={"per_label": 0})
    out = tmp_path / "run"
    db = out / "results.sqlite"
    total = 2 * 24 * 3
    proc = _start(spec_path, out)
    try:
        _wait(lambda: _count(db) > 0, proc, "the first unit was stored")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _stop(proc)
    assert proc.returncode == -signal.SIGKILL
    assert 0 < _count(db) < total
    assert read_lock_info(lock_path(out))["pid"] == proc.pid  # the stale lock file is there, naming the dead run
    ctx = run_study(load_spec(spec_path, overrides={"output": str(out)}))  # no refusal: the OS dropped the lock
    assert ctx.computed > 0 and _count(db) == total
    assert not lock_path(out).exists()


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, subprocess.Popen]]:
    """A long study subprocess that holds the lock and keeps writing while the tests below run (killed after)."""
    tmp = tmp_path_factory.mktemp("writer")
    n = 6000  # minutes of work: it is killed when this module is done
    spec_path = tiny_spec(
        tmp,
        methods=["bce", "slam"],
        seeds=[0],
        attackability={"per_label": 0},
        samples={"count": n, "seed": 1},
        dataset={
            "name": "synthetic",
            "split": "test",
            "config": {"n_train": 64, "n_val": 32, "n_test": n, "image_size": 16, "num_labels": 8},
        },
    )
    out = tmp / "busy"
    proc = _start(spec_path, out)
    try:
        _wait(lambda: (read_lock_info(lock_path(out)) or {}).get("pid") == proc.pid, proc, "it held the lock")
        yield spec_path, out, proc
    finally:
        _stop(proc)


def test_second_run_is_refused_at_once(writer) -> None:
    spec_path, out, proc = writer
    spec = load_spec(spec_path, overrides={"output": str(out)})
    start = time.monotonic()
    with pytest.raises(LabelflipError) as err:
        run_study(spec)
    assert time.monotonic() - start < 1
    msg = str(err.value)
    held = json.loads(lock_path(out).read_text())
    for needle in (str(out), f"PID {proc.pid}", held["host"], held["started"], "--out"):
        assert needle in msg, needle
    # the same through the CLI: exit status 2 and the message, no traceback
    done = subprocess.run(
        _cli("study", "run", str(spec_path), "--out", str(out), "--no-report"),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    for needle in (str(out), f"PID {proc.pid}", "--out"):
        assert needle in done.stderr, needle
    assert "Traceback" not in done.stderr
    assert proc.poll() is None  # the running study is undisturbed


def test_export_and_report_read_while_it_writes(writer) -> None:
    _, out, proc = writer
    db = out / "results.sqlite"
    _wait(lambda: _count(db) > 0, proc, "the first unit was stored")
    with ResultsStore(db, readonly=True) as store:
        before = store.count()
        assert before > 0 and before % (4 * 3) == 0  # whole units only (chunk 4 x 3 budgets)
    store, spec = open_study(out)  # the report's reader
    with store:
        assert spec.methods == ["bce", "slam"] and store.get_artefact("tiny", "model") is not None
    done = subprocess.run(
        _cli("study", "export", str(out)), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = (out / "results.csv").read_text().splitlines()[1:]
    assert len(rows) >= before and len(rows) % (4 * 3) == 0
    assert proc.poll() is None and read_lock_info(lock_path(out))["pid"] == proc.pid  # still running, still locked
    _wait(lambda: _count(db) > len(rows), proc, "the writer stored more")
