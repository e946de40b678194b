"""Distributed studies (issue 12): real torchrun jobs on gloo, a rank killed with SIGKILL and resumed with another
world size, and the shard merge (idempotent, never duplicating a row, refusing another study's shard)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import astuple, replace
from pathlib import Path

import pytest

from labelflip._validation import LabelflipError
from labelflip.study import load_spec, run_study
from labelflip.study.distributed import (
    SharedArtefacts,
    backend_for,
    launched_by_torchrun,
    merge_shards,
    shard_path,
    shard_paths,
)
from labelflip.study.lock import lock_path, study_lock
from labelflip.study.store import ResultRow, ResultsStore
from tests.study.test_study import tiny_spec

ROOT = Path(__file__).resolve().parent.parent.parent
TOTAL = (3 + 2) * 24 * 3  # tiny_spec: bce, slam, class:0 + random x 2 seeds; 24 samples x 3 budgets
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
ENV.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def _torchrun(spec: Path, out: Path, nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "labelflip", "study", "run", str(spec), "--out", str(out), "--no-report"]  # fmt: skip


def _rows(db: Path, timing: bool = False) -> list[tuple]:
    with ResultsStore(db, readonly=True) as store:
        return [astuple(r) if timing else astuple(r)[:-1] for r in store.rows()]  # all columns but elapsed_s


def _why(done: subprocess.CompletedProcess) -> str:
    """The workers' errors in a failed torchrun's output (its own summary follows them)."""
    text = done.stderr.decode(errors="replace")
    return "\n".join(line for line in text.splitlines() if "error" in line.lower())[-3000:] or text[-3000:]


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny study run by one ordinary process (no torchrun): the rows every distributed run must reproduce."""
    tmp = tmp_path_factory.mktemp("dist")
    spec = tiny_spec(tmp, out="ref")
    run_study(load_spec(spec))
    return spec, tmp / "ref" / "results.sqlite"


def test_two_gloo_ranks_store_exactly_the_single_process_rows(reference, tmp_path: Path) -> None:
    spec, ref = reference
    out = tmp_path / "d2"
    done = subprocess.run(_torchrun(spec, out, 2), cwd=ROOT, env=ENV, capture_output=True, timeout=300)
    assert done.returncode == 0, _why(done)
    assert _rows(out / "results.sqlite") == _rows(ref)
    assert not shard_paths(out) and not list(out.glob(".labelflip*.lock"))  # merged and cleaned up
    with ResultsStore(out / "results.sqlite", readonly=True) as a, ResultsStore(ref, readonly=True) as b:
        for model, kind in [("tiny", "profile"), ("tiny", "correlations"), ("tiny", "attackability"),
                            ("tiny", "examples"), ("", "dataset")]:  # fmt: skip
            assert a.get_artefact(model, kind) == b.get_artefact(model, kind), kind
        assert a.manifest()["config_hash"] == b.manifest()["config_hash"]
    # a plain rerun (no torchrun) of the merged study has nothing left to do
    assert run_study(load_spec(spec, overrides={"output": str(out)})).computed == 0


def test_killed_rank_resumes_with_another_world_size(reference, tmp_path: Path) -> None:
    """SIGKILL rank 1 of a 2-rank job mid-run; torchrun stops the job. A 1-rank torchrun rerun merges the shards,
    recomputes none of their units (their rows keep their timings) and ends with every row once, as one process."""
    spec, ref = reference
    out = tmp_path / "dk"
    proc = subprocess.Popen(_torchrun(spec, out, 2), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    shard1 = shard_path(out, 1)
    deadline = time.monotonic() + 240
    while _count(shard1) < 24 and proc.poll() is None and time.monotonic() < deadline:  # rank 1 stored 2+ units
        time.sleep(0.01)
    info = json.loads(lock_path(out, name="rank1").read_text())
    os.kill(info["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err.decode()[-2000:]
    shards = shard_paths(out)
    before = {}
    for path in shards:
        before.update({r[:5]: r for r in _rows(path, timing=True)})
    assert 0 < _count(shard1) < TOTAL // 2, "rank 1 was not killed mid-run"
    assert len(before) < TOTAL
    done = subprocess.run(_torchrun(spec, out, 1), cwd=ROOT, env=ENV, capture_output=True, timeout=300)
    assert done.returncode == 0, _why(done)
    rows = _rows(out / "results.sqlite", timing=True)
    assert len(rows) == len({r[:5] for r in rows}) == TOTAL
    assert [r[:-1] for r in rows] == _rows(ref)
    assert all(before[r[:5]] == r for r in rows if r[:5] in before)  # shard rows kept: not recomputed
    assert not shard_paths(out)


# ----------------------------------------------------------------------------- merging, in-process
def _row(sample: int, flips: int = 1) -> ResultRow:
    conf = b"\x00" * 8
    return ResultRow("m", "bce", 0, 0, sample, 0.1, sample, 3, flips, flips, 0, 0.1, 0.2, conf, conf, 0.5)


def _shard(out: Path, rank: int, samples: list[int], config: str = "cfg") -> None:
    with ResultsStore(shard_path(out, rank)) as store:
        store.claim(config)
        store.write_unit([_row(s) for s in samples], artefacts={("m", f"gamma:{rank}"): {"gamma": rank}})


def test_merge_is_idempotent_and_never_duplicates(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "results.sqlite") as main:
        main.claim("cfg")
        main.write_unit([_row(0), _row(1)])
    _shard(tmp_path, 0, [1, 2])  # sample 1 is already in the main store
    _shard(tmp_path, 3, [3])
    assert merge_shards(tmp_path) == (2, 2)
    assert not shard_paths(tmp_path) and not list(tmp_path.glob("results.rank*"))
    _shard(tmp_path, 1, [2, 3])  # the same rows again (a merge interrupted before its delete)
    assert merge_shards(tmp_path) == (1, 0)
    assert merge_shards(tmp_path) == (0, 0)
    with ResultsStore(tmp_path / "results.sqlite") as main:
        assert [r.sample_index for r in main.rows()] == [0, 1, 2, 3]
        assert main.get_artefact("m", "gamma:3") == {"gamma": 3}  # unit artefacts travel with their rows


def test_merge_refuses_another_study_and_a_live_rank(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "results.sqlite") as main:
        main.claim("cfg")
    _shard(tmp_path, 0, [0], config="other")
    with pytest.raises(LabelflipError, match="config hash other"):
        merge_shards(tmp_path)
    shard_path(tmp_path, 0).unlink()
    _shard(tmp_path, 2, [0])
    with study_lock(tmp_path, name="rank2"), pytest.raises(LabelflipError, match="rank2"):
        merge_shards(tmp_path)  # rank 2 is still writing its shard
    assert merge_shards(tmp_path) == (1, 1)


def test_single_process_run_merges_leftover_shards_first(reference, tmp_path: Path) -> None:
    """A plain `study run` on a directory a distributed run left: the shards' units count as done."""
    spec, ref = reference
    out = tmp_path / "left"
    out.mkdir()
    rows = [ResultRow(*r) for r in _rows(ref, timing=True) if r[1] == "bce"]
    with ResultsStore(shard_path(out, 5)) as store:
        store.claim(load_spec(spec).config_hash())
        store.write_unit(replace(r, elapsed_s=-1.0) for r in rows)
    ctx = run_study(load_spec(spec, overrides={"output": str(out)}))
    assert ctx.computed == len(ctx.units) - 6  # bce: 24 samples in 6 chunks of 4, all merged, none recomputed
    got = _rows(out / "results.sqlite", timing=True)
    assert [r[:-1] for r in got] == _rows(ref)
    assert sum(r[-1] == -1.0 for r in got) == len(rows)


def test_other_ranks_read_artefacts_and_never_compute_them() -> None:
    shared = SharedArtefacts({("m", "profile"): {"eps_max": 1.0}}, {"m": "fp"})
    assert shared.get_artefact("m", "profile") == {"eps_max": 1.0}
    with pytest.raises(LabelflipError, match="never compute"):
        shared.get_artefact("m", "correlations")
    shared.check_fingerprint("m", "fp")
    with pytest.raises(LabelflipError, match="differs between rank 0"):
        shared.check_fingerprint("m", "other")


def test_torchrun_detection_and_backend() -> None:
    assert launched_by_torchrun({"RANK": "0", "WORLD_SIZE": "2"})
    assert not launched_by_torchrun({"RANK": "0"}) and not launched_by_torchrun({})
    assert backend_for("cpu") == "gloo"
    assert backend_for("cuda:0") in ("nccl", "gloo")  # nccl where this torch build has it
