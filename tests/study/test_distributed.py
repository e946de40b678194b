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
    preparing_rank,
    shard_path,
    shard_paths,
    store_prepared,
)
from labelflip.study.lock import lock_path, study_lock
from labelflip.study.plan import plan_units, shard
from labelflip.study.store import ResultRow, ResultsStore
from tests.study.test_study import TINY_MODEL, tiny_spec

ROOT = Path(__file__).resolve().parent.parent.parent
TOTAL = 2 * (3 + 2) * 24 * 3  # two models x (bce, slam, class:0 + random x 2 seeds) x 24 samples x 3 budgets
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


def _two_model_spec(tmp: Path, out: str) -> Path:
    """tiny_spec with a second model (other weights): rank 0 prepares ``tiny``, rank 1 ``tiny2`` in a 2-rank run."""
    (tmp / "tiny2.py").write_text(TINY_MODEL.replace("manual_seed(0)", "manual_seed(1)"))
    models = [
        {"name": "tiny", "factory": f"{tmp / 'tiny.py'}:build"},
        {"name": "tiny2", "factory": f"{tmp / 'tiny2.py'}:build"},
    ]
    return tiny_spec(tmp, out=out, models=models)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny study run by one ordinary process (no torchrun): the rows every distributed run must reproduce."""
    tmp = tmp_path_factory.mktemp("dist")
    spec = _two_model_spec(tmp, "ref")
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
        for model in ("tiny", "tiny2"):
            for kind in ("profile", "correlations", "attackability", "examples", "model"):
                assert a.get_artefact(model, kind) == b.get_artefact(model, kind), (model, kind)
            assert a.manifest()[f"fingerprint:{model}"] == b.manifest()[f"fingerprint:{model}"]
        assert a.get_artefact("", "dataset") == b.get_artefact("", "dataset")
        assert a.manifest()["config_hash"] == b.manifest()["config_hash"]
        assert a.manifest()["prepared_by_rank"] == {"tiny": 0, "tiny2": 1}  # each rank prepared its own model
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


def _labelflip(*args: str) -> list[str]:
    return [sys.executable, "-m", "labelflip", *args]


def test_workers_option_runs_local_ranks_with_the_same_rows(reference, tmp_path: Path) -> None:
    """`study run --workers 2`: two local gloo ranks (no torchrun), each preparing one model, single-process rows;
    the options reach the workers."""
    spec, ref = reference
    out = tmp_path / "w2"
    cmd = _labelflip("study", "run", str(spec), "--out", str(out), "--workers", "2", "--no-report",
                     "--set", "report.examples=2")  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, timeout=300)
    assert done.returncode == 0, _why(done)
    text = done.stdout.decode()
    assert "on 2 worker processes, 1 torch thread(s) each" in text and text.count("config hash") == 1
    assert _rows(out / "results.sqlite") == _rows(ref)
    with ResultsStore(out / "results.sqlite", readonly=True) as store:
        assert store.manifest()["prepared_by_rank"] == {"tiny": 0, "tiny2": 1}
        assert store.manifest()["config_hash"] == load_spec(spec).config_hash()
        assert store.get_artefact("tiny", "examples")["sample_index"] == [0, 1]  # --set reached the workers


def test_a_failing_worker_stops_the_job_with_one_clear_error(tmp_path: Path) -> None:
    """Rank 1's model has the wrong label count: rank 1 says so (no traceback), rank 0 stays quiet about it, the
    parent exits non-zero saying how to resume."""
    spec = _two_model_spec(tmp_path, "bad")
    (tmp_path / "tiny2.py").write_text(TINY_MODEL.replace("nn.Linear(24, 8)", "nn.Linear(24, 5)"))
    cmd = _labelflip("study", "run", str(spec), "--workers", "2", "--no-report")
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, timeout=300)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "Traceback" not in err and "tiny2" in err
    assert "rank 1 of 2 failed" not in err  # the relayed copy is not printed: rank 1 printed the error itself
    assert "a worker process failed" in err and "--workers 1" in err


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_workers_option_is_checked_before_any_work(tmp_path: Path, value: str) -> None:
    spec = tiny_spec(tmp_path)
    done = subprocess.run(_labelflip("study", "run", str(spec), "--workers", value), cwd=ROOT, env=ENV,
                          capture_output=True, timeout=120)  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 2 and "--workers" in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


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
    assert ctx.computed == len(ctx.units) - 12  # bce: 2 models x 6 chunks of 4 samples, all merged, none recomputed
    got = _rows(out / "results.sqlite", timing=True)
    assert [r[:-1] for r in got] == _rows(ref)
    assert sum(r[-1] == -1.0 for r in got) == len(rows)


def test_other_ranks_read_artefacts_and_never_compute_them() -> None:
    shared = SharedArtefacts({("m", "profile"): {"eps_max": 1.0}}, {"m": "fp"})
    assert shared.get_artefact("m", "profile") == {"eps_max": 1.0}
    with pytest.raises(LabelflipError, match="ranks compute only the models they prepare"):
        shared.get_artefact("m", "correlations")
    shared.check_fingerprint("m", "fp")
    with pytest.raises(LabelflipError, match="differs between the rank that prepared it"):
        shared.check_fingerprint("m", "other")


def test_preparing_rank_collects_what_it_computes_and_rank_0_stores_it(tmp_path: Path) -> None:
    """Collect mode: missing artefacts are computed (get -> None) and recorded; a changed model without results has
    its stale artefacts dropped (as ResultsStore.check_fingerprint does), one with results is refused at once."""
    with ResultsStore(tmp_path / "results.sqlite") as store:
        store.claim("cfg")
        store.check_fingerprint("old", "fp0")
        store.put_artefact("old", "profile", {"eps_max": 1.0})
        store.check_fingerprint("kept", "fk")
        store.put_artefact("kept", "profile", {"eps_max": 3.0})
        store.write_unit([replace(_row(0), model="kept")])
        shared = SharedArtefacts.read(store, ["old", "kept", "new"])
    assert shared.with_rows == {"kept"} and shared.fingerprints == {"old": "fp0", "kept": "fk"}
    mine = shared.collecting()
    mine.check_fingerprint("old", "fp1")  # retrained, no stored results: recomputed
    assert mine.get_artefact("old", "profile") is None
    mine.put_artefact("old", "profile", {"eps_max": 2.0})
    mine.check_fingerprint("new", "fn")
    assert mine.get_artefact("new", "model") is None
    mine.put_artefact("new", "model", {"budgets": [0.1]})
    with pytest.raises(LabelflipError, match="differs from the one this study was run with"):
        mine.check_fingerprint("kept", "other")  # stored results: refused before any work
    mine.check_fingerprint("kept", "fk")
    assert mine.get_artefact("kept", "profile") == {"eps_max": 3.0}  # stored: read, not recomputed
    assert mine.new == {("old", "profile"): {"eps_max": 2.0}, ("new", "model"): {"budgets": [0.1]}}
    assert mine.new_fingerprints == {"old": "fp1", "new": "fn"}
    everyone = shared.updated([(mine.new, mine.new_fingerprints), ({}, {})])
    assert everyone.get_artefact("old", "profile") == {"eps_max": 2.0} and not everyone.collect
    assert everyone.fingerprints == {"old": "fp1", "kept": "fk", "new": "fn"}
    with ResultsStore(tmp_path / "results.sqlite") as store:
        store.put_artefact("old", "correlations", {"stale": True})
        store_prepared(store, mine.new, mine.new_fingerprints)
        assert store.get_artefact("old", "profile") == {"eps_max": 2.0}
        assert store.get_artefact("old", "correlations") is None  # the changed model's stale artefact went
        assert store.get_artefact("new", "model") == {"budgets": [0.1]}
        assert store.manifest()["fingerprint:old"] == "fp1" and store.manifest()["fingerprint:new"] == "fn"


def test_shard_keeps_a_chunks_units_on_one_rank_and_partitions_the_plan() -> None:
    plan = plan_units(["a", "b"], ["bce", "random", "class:0"], [0, 1], num_samples=50, chunk=20)  # 3 chunks each
    for world in (1, 2, 3, 4, 6, 7, 9):
        shards = [shard(plan, r, world) for r in range(world)]
        assert sorted(u for s in shards for u in s) == sorted(plan)  # a partition
        assert all(s == [u for u in plan if u in s] for s in shards)  # plan order kept
        if world <= 6:  # 6 chunks: each chunk's units (every method and seed) on one rank
            owner = {(u.model, u.start): r for r, s in enumerate(shards) for u in s}
            assert all(owner[(u.model, u.start)] == r for r, s in enumerate(shards) for u in s)
        else:  # more ranks than chunks: units round robin, nobody idle
            assert all(shards)
    assert [preparing_rank(i, 2) for i in range(3)] == [0, 1, 0]


def test_torchrun_detection_and_backend() -> None:
    assert launched_by_torchrun({"RANK": "0", "WORLD_SIZE": "2"})
    assert not launched_by_torchrun({"RANK": "0"}) and not launched_by_torchrun({})
    assert backend_for("cpu") == "gloo"
    assert backend_for("cuda:0") in ("nccl", "gloo")  # nccl where this torch build has it
