"""Distributed studies on ``torch.distributed``: ``torchrun --nproc_per_node=N -m labelflip study run spec.yaml``.

:func:`~labelflip.study.run_study` takes the distributed path when the process was started by ``torchrun`` (the
``RANK`` and ``WORLD_SIZE`` environment variables are set; multi-node works through torchrun's rendezvous, with
``--out`` on a file system every node sees). Without them it is the single-process run, unchanged.

The protocol, per rank ``r`` of ``W`` (:func:`~labelflip.study.runner.run_study` drives it):

1. **Read (rank 0).** Rank 0 takes the directory lock (:func:`~labelflip.study.lock.study_lock`, held for the whole
   study), merges any store shards a killed or finished earlier run left (:func:`merge_shards`), claims the main
   store ``<out>/results.sqlite`` and sends what it holds (:class:`SharedArtefacts`: every model's stored
   artefacts and fingerprint, and which models have stored results) to every rank (:meth:`Group.broadcast`).
2. **Prepare (every rank, its share of the models).** Rank ``r`` loads or trains the models at positions
   ``r, r + W, ...`` of the spec (:func:`preparing_rank`) and computes whatever of their artefacts is not stored
   (flip profile, correlations, attackability, budgets), exactly as a single-process run does, recording them
   (:meth:`SharedArtefacts.collecting`). The ranks exchange what they computed (:meth:`Group.gather`); rank 0
   writes it into the main store (:func:`store_prepared`, with the manifest) and sends the indices of the work units
   already stored. No artefact is computed twice and no rank but 0 opens the main store (no SQLite file is read or
   written by two nodes).
3. **Run (every rank).** Rank ``r`` takes its deterministic shard of the plan (:func:`~labelflip.study.plan.shard`:
   a chunk's units on one rank), loads the models of its shard that another rank prepared (from its own copy of the
   code and weights; its fingerprint must match), and runs the units not yet stored, writing each into its own shard
   ``<out>/results.rank{r}.sqlite`` (:func:`shard_path`) under its own lock ``study_lock(out, name=f"rank{r}")``. One
   writer per SQLite file, always.
4. **Merge (rank 0, after a barrier).** Rank 0 copies every shard into the main store and deletes it
   (:func:`merge_shards`; ``labelflip study merge DIR`` does the same by hand).

Built-in models a rank trains are cached (``~/.cache/labelflip``), so on one machine the other ranks load them; on
several machines without a shared cache each machine trains the built-in models it needs once (the same weights:
training is pinned to ``TRAIN_THREADS``). On one machine, :func:`run_local_workers` starts the ranks itself
(``labelflip study run --workers N``, ``labelflip demo``).

A killed rank or node loses only its unfinished unit: its shard holds every unit it finished, committed. torchrun
then stops the other ranks (their finished units are in their shards too). A rerun, with any world size, or
without torchrun at all, first merges the leftover shards, so no finished unit is recomputed and, the results
table's primary key being (model, method, seed, budget_index, sample_index), no row is ever duplicated.

Backends: NCCL when the study runs on CUDA devices (each rank on ``cuda:LOCAL_RANK``), gloo on CPU
(:func:`backend_for`). Errors raised on one rank while the ranks work together (:meth:`Group.together`) are raised
on every rank, naming the failing rank, rather than leaving the others waiting at a barrier.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from labelflip._validation import LabelflipError, fail
from labelflip.study.lock import study_lock
from labelflip.study.store import ResultsStore

__all__ = [
    "Group",
    "RankFailedError",
    "SharedArtefacts",
    "backend_for",
    "distributed_available",
    "free_port",
    "launched_by_torchrun",
    "merge_shards",
    "preparing_rank",
    "process_group",
    "run_local_workers",
    "shard_path",
    "shard_paths",
    "store_prepared",
    "worker_threads",
]

log = logging.getLogger(__name__)

MAIN_STORE = "results.sqlite"
_SHARD = re.compile(r"results\.rank(\d+)\.sqlite")
#: how long a rank waits for the others at a collective (rank 0 may be training models and measuring profiles)
TIMEOUT = _dt.timedelta(hours=6)
#: the per-model artefacts a study prepares (flip profile, correlations, attackability, the model's record)
ARTEFACT_KINDS = ("profile", "correlations", "attackability", "model")


def launched_by_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a torchrun worker: ``RANK`` and ``WORLD_SIZE`` are both set in ``env``
    (default ``os.environ``)."""
    env = os.environ if env is None else env
    return "RANK" in env and "WORLD_SIZE" in env


def backend_for(device: str | torch.device | None = None) -> str:
    """``"nccl"`` for a CUDA ``device`` (None: CUDA when available) where NCCL is built in, else ``"gloo"``."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return "nccl" if torch.device(device).type == "cuda" and dist.is_nccl_available() else "gloo"


def shard_path(out: str | Path, rank: int) -> Path:
    """Rank ``rank``'s store shard: ``<out>/results.rank{rank}.sqlite``."""
    return Path(out) / f"results.rank{int(rank)}.sqlite"


def shard_paths(out: str | Path) -> list[Path]:
    """Every store shard in ``out`` (any rank of any earlier world size), by rank."""
    found = [(int(m.group(1)), p) for p in Path(out).glob("results.rank*.sqlite") if (m := _SHARD.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


class RankFailedError(LabelflipError):
    """Raised on every other rank when one rank failed while the ranks worked together (that rank raises its own)."""


def distributed_available() -> bool:
    """Whether this torch build can run a CPU job (torch.distributed with the gloo backend)."""
    return dist.is_available() and dist.is_gloo_available()


@dataclass(frozen=True)
class Group:
    """This process's place in the torchrun job: ``rank`` of ``world``, on ``backend``."""

    rank: int
    world: int
    backend: str
    local_rank: int = 0

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (any picklable object), by rank, on every rank."""
        box: list[Any] = [None] * self.world
        dist.all_gather_object(box, obj)
        return box

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` (any picklable object) on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    @contextmanager
    def together(self, what: str) -> Iterator[None]:
        """Run the block (each rank its own part of it), then wait for every rank. An exception on any rank is
        raised on every rank after the wait (the failing rank re-raises its own), so no rank is left waiting."""
        error: Exception | None = None
        try:
            yield
        except Exception as exc:  # re-raised below, on every rank
            error = exc
        report: list[str | None] = [None] * self.world
        dist.all_gather_object(report, None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        failed = [(r, m) for r, m in enumerate(report) if m is not None]
        if failed:
            r, message = failed[0]
            raise RankFailedError(f"rank {r} of {self.world} failed while the ranks {what}: {message}")


@contextmanager
def process_group(device: str | torch.device | None = None) -> Iterator[Group]:
    """This torchrun worker's :class:`Group`: initialises the default process group from torchrun's environment
    (``env://``: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) with :func:`backend_for` ``device``,
    and destroys it on leaving the block (one it did not initialise is left alone). Under NCCL the rank's CUDA
    device is ``cuda:LOCAL_RANK``."""
    if not launched_by_torchrun():
        raise LabelflipError(
            "process_group needs a torchrun worker (RANK and WORLD_SIZE are not set). Fix: start the study with "
            "`torchrun --nproc_per_node=N -m labelflip study run spec.yaml`, or run it without torchrun."
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owned = not dist.is_initialized()
    if owned:
        backend = backend_for(device)
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    try:
        yield Group(dist.get_rank(), dist.get_world_size(), str(dist.get_backend()), local_rank)
    finally:
        if owned:
            dist.destroy_process_group()


class SharedArtefacts:
    """The main store's per-model artefacts as rank 0 read them, sent to every rank, standing in for the store in
    :func:`~labelflip.study.runner._prepare_model` there (no rank but 0 ever opens the main store).

    Two modes. On the rank that prepares a model (``collect=True``, :meth:`collecting`), a missing artefact is
    computed and recorded in :attr:`new` (a fingerprint in :attr:`new_fingerprints`), which rank 0 then writes into
    the main store; a changed model without stored results has its stale artefacts dropped and recomputed, exactly as
    :meth:`ResultsStore.check_fingerprint` does. On a rank that only uses a model another rank prepared, every
    artefact must be there (a missing one is an error, never a recomputation) and the fingerprints must agree.
    """

    def __init__(
        self,
        artefacts: Mapping[tuple[str, str], dict[str, Any]],
        fingerprints: Mapping[str, Any],
        with_rows: Iterable[str] = (),
        *,
        collect: bool = False,
    ) -> None:
        self.artefacts = dict(artefacts)
        self.fingerprints = dict(fingerprints)
        self.with_rows = frozenset(with_rows)
        self.collect = collect
        self.new: dict[tuple[str, str], dict[str, Any]] = {}
        self.new_fingerprints: dict[str, Any] = {}

    @classmethod
    def read(cls, store: ResultsStore, models: list[str]) -> SharedArtefacts:
        """Every artefact and fingerprint of ``models`` in ``store``, and which models have stored results
        (rank 0, before anything is prepared)."""
        manifest = store.manifest()
        artefacts = {(m, k): v for m in models for k in ARTEFACT_KINDS if (v := store.get_artefact(m, k)) is not None}
        fingerprints = {m: manifest[f"fingerprint:{m}"] for m in models if f"fingerprint:{m}" in manifest}
        return cls(artefacts, fingerprints, [m for m in models if store.has_rows(m)])

    def collecting(self) -> SharedArtefacts:
        """A copy in collect mode (for the rank preparing models): computes what is missing and records it."""
        return SharedArtefacts(self.artefacts, self.fingerprints, self.with_rows, collect=True)

    def updated(self, news: Iterable[tuple[Mapping[tuple[str, str], Any], Mapping[str, Any]]]) -> SharedArtefacts:
        """A copy (not collecting) holding every rank's ``(new, new_fingerprints)`` too."""
        out, news = SharedArtefacts(self.artefacts, self.fingerprints, self.with_rows), list(news)
        for _, fingerprints in news:
            for model in fingerprints:  # a changed model: its stale artefacts go (the new ones follow)
                out.artefacts = {k: v for k, v in out.artefacts.items() if k[0] != model}
            out.fingerprints.update(fingerprints)
        for artefacts, _ in news:
            out.artefacts.update(artefacts)
        return out

    def get_artefact(self, model: str, kind: str) -> dict[str, Any] | None:
        if (model, kind) in self.artefacts:
            return self.artefacts[(model, kind)]
        if self.collect:
            return None  # computed by this rank, then put_artefact
        raise LabelflipError(
            f"no rank prepared the {kind!r} artefact of model {model!r}; ranks compute only the models they prepare. "
            "This is a labelflip bug; fix: run the study without torchrun, then rerun it distributed."
        )

    def put_artefact(self, model: str, kind: str, value: Mapping[str, Any]) -> None:
        """Collect mode: record ``value`` (rank 0 stores it); otherwise nothing to do (it is stored already)."""
        if self.collect:
            self.artefacts[(model, kind)] = self.new[(model, kind)] = dict(value)

    def check_fingerprint(self, model: str, fingerprint: str | None) -> None:
        stored = self.fingerprints.get(model)
        if self.collect:
            if model in self.fingerprints and stored != fingerprint and model in self.with_rows:
                raise LabelflipError(  # before any work, as ResultsStore.check_fingerprint in one process
                    f"Model {model!r} differs from the one this study was run with (fingerprint {stored} stored, "
                    f"{fingerprint} now). Fix: restore the original model/weights or use another --out."
                )
            if model not in self.fingerprints or stored != fingerprint:  # new, or changed without stored results
                self.artefacts = {k: v for k, v in self.artefacts.items() if k[0] != model}
                self.fingerprints[model] = self.new_fingerprints[model] = fingerprint
            return
        if stored != fingerprint:
            raise LabelflipError(
                f"Model {model!r} differs between the rank that prepared it (fingerprint {stored}) and this rank "
                f"(fingerprint {fingerprint}). Every node must load the same model. Fix: give every node the same "
                "weights file and code (for built-in models, the same ~/.cache/labelflip checkpoints)."
            )


def preparing_rank(position: int, world: int) -> int:
    """The rank that prepares (trains, probes) the study's model number ``position`` (spec order): round robin."""
    return position % world


def store_prepared(
    store: ResultsStore, artefacts: Mapping[tuple[str, str], Any], fingerprints: Mapping[str, Any]
) -> None:
    """Store in the main store what one rank prepared (its :attr:`SharedArtefacts.new` and
    :attr:`~SharedArtefacts.new_fingerprints`): rank 0, after the ranks prepared their models."""
    for model, fp in fingerprints.items():
        store.check_fingerprint(model, fp)  # drops a changed model's stale artefacts, records the new model
    for (model, kind), value in artefacts.items():
        store.put_artefact(model, kind, value)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now (for a local job's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_threads(workers: int, cpus: int | None = None) -> int:
    """torch threads per worker when ``workers`` processes share this machine's ``cpus`` cores (at least 1)."""
    return max(1, (cpus or os.cpu_count() or 1) // max(1, workers))


def run_local_workers(
    args: Sequence[str], workers: int, threads: int | None = None, poll_s: float = 0.1, grace_s: float = 10.0
) -> int:
    """Run ``python -m labelflip <args>`` as ``workers`` ranks of one job on this machine (gloo on CPU): what
    ``torchrun --standalone --nproc_per_node=workers -m labelflip <args>`` does, without its agent process; returns
    the job's exit status (0 when every rank succeeded, else the first failing rank's).

    Each rank gets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` (a free local port),
    ``threads`` torch threads (default :func:`worker_threads`) and, unless set, ``OMP_WAIT_POLICY=PASSIVE``: OpenMP
    threads that sleep instead of spinning while they wait, so ranks sharing the cores (and the 2-thread training of
    the built-in models) do not steal them from each other (spinning made two concurrent trainings 1.6x slower than
    one after the other, passive waiting 0.88x on 2 cores). Output is the ranks' own (rank 0 shows the progress). When
    a rank fails, the others get ``grace_s`` seconds to stop on their own, then are stopped (their finished units are
    stored, as with torchrun); an interrupt does the same and is raised again."""
    threads = worker_threads(workers) if threads is None else threads
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK")}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(workers),
               LOCAL_WORLD_SIZE=str(workers), OMP_NUM_THREADS=str(threads))  # fmt: skip
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cmd = [sys.executable, "-m", "labelflip", *args]
    procs = [subprocess.Popen(cmd, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(workers)]
    status = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed:
                status = failed[0]
                break
            time.sleep(poll_s)
        status = status or next((p.returncode for p in procs if p.returncode), 0)
    finally:  # a failed rank (or an interrupt): the others usually stop on their own, each saying why (the failing
        # rank's error); give them that time, then stop those still waiting (e.g. at a collective a killed rank left)
        deadline = time.monotonic() + grace_s
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return status


def merge_shards(out: str | Path) -> tuple[int, int]:
    """Merge every store shard of ``out`` (:func:`shard_paths`) into the main store ``<out>/results.sqlite`` and
    delete it; returns ``(shards merged, rows added)``.

    Each shard is merged under its rank's lock, so a shard a live rank is writing is refused, never half-merged; the
    caller holds the directory lock. One transaction per shard copies its rows and unit artefacts; rows whose key is
    already stored are kept as they are, so merging is idempotent: a merge interrupted after its commit and before
    the delete just merges the same rows again, adding none. A shard of another study (a different config hash) is
    refused. A main store without a config hash (none yet) takes the shards'.
    """
    out = Path(out)
    shards = shard_paths(out)
    added = 0
    if not shards:
        return 0, 0
    with ResultsStore(out / MAIN_STORE) as main:
        for path in shards:
            with study_lock(out, name=f"rank{_SHARD.fullmatch(path.name).group(1)}"):  # type: ignore[union-attr]
                with ResultsStore(path) as shard:  # read-write: recovers the WAL a killed rank left
                    theirs, rows = shard.manifest().get("config_hash"), shard.count()
                mine = main.manifest().get("config_hash")
                if theirs is None and rows == 0:
                    pass  # a rank that died before claiming its shard: nothing to merge
                elif mine is None and theirs is not None:
                    main.claim(theirs)
                elif theirs != mine:
                    raise fail(
                        "merge_shards",
                        "out",
                        f"store shards of the study in {out} (config hash {mine})",
                        f"{path.name} with config hash {theirs}",
                        f"move {path} away (it belongs to another study), then merge again.",
                    )
                added += main.merge_from(path)
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
    log.info("merged %d store shard(s) into %s: %d rows added", len(shards), out / MAIN_STORE, added)
    return len(shards), added
