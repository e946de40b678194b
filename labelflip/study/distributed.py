"""Distributed studies on ``torch.distributed``: ``torchrun --nproc_per_node=N -m labelflip study run spec.yaml``.

:func:`~labelflip.study.run_study` takes the distributed path when the process was started by ``torchrun`` (the
``RANK`` and ``WORLD_SIZE`` environment variables are set; multi-node works through torchrun's rendezvous, with
``--out`` on a file system every node sees). Without them it is the single-process run, unchanged.

The protocol, per rank ``r`` of ``W`` (:func:`~labelflip.study.runner.run_study` drives it):

1. **Prepare (rank 0 only).** Rank 0 takes the directory lock (:func:`~labelflip.study.lock.study_lock`, held for
   the whole study), merges any store shards a killed or finished earlier run left (:func:`merge_shards`), claims
   the main store ``<out>/results.sqlite`` and prepares every model into it: training, flip profile, correlations,
   attackability, budgets, exactly as a single-process run does. It then sends the stored artefacts
   (:class:`SharedArtefacts`) and the indices of the work units already stored to every rank
   (:meth:`Group.broadcast`). The other ranks wait; they never compute an artefact and never open the main store
   (no SQLite file is read or written by two nodes).
2. **Run (every rank).** Rank ``r`` builds the model from its own copy of the code and weights (its fingerprint must
   match rank 0's), takes its deterministic shard of the plan (:func:`~labelflip.study.plan.shard`), and runs the
   units not yet stored, writing each into its own shard ``<out>/results.rank{r}.sqlite`` (:func:`shard_path`) under
   its own lock ``study_lock(out, name=f"rank{r}")``. One writer per SQLite file, always.
3. **Merge (rank 0, after a barrier).** Rank 0 copies every shard into the main store and deletes it
   (:func:`merge_shards`; ``labelflip study merge DIR`` does the same by hand).

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
from collections.abc import Iterator, Mapping
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
    "SharedArtefacts",
    "backend_for",
    "launched_by_torchrun",
    "merge_shards",
    "process_group",
    "shard_path",
    "shard_paths",
]

log = logging.getLogger(__name__)

MAIN_STORE = "results.sqlite"
_SHARD = re.compile(r"results\.rank(\d+)\.sqlite")
#: how long a rank waits for the others at a collective (rank 0 may be training models and measuring profiles)
TIMEOUT = _dt.timedelta(hours=6)


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
            raise LabelflipError(f"rank {r} of {self.world} failed while the ranks {what}: {message}")


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
    """The main store's per-model artefacts as rank 0 read them, sent to the other ranks: it stands in for the
    store in :func:`~labelflip.study.runner._prepare_model` there, so those ranks read every artefact and never
    compute one (a missing one is an error, not a recomputation)."""

    def __init__(self, artefacts: dict[tuple[str, str], dict[str, Any]], fingerprints: dict[str, Any]) -> None:
        self.artefacts = artefacts
        self.fingerprints = fingerprints

    @classmethod
    def read(cls, store: ResultsStore, models: list[str]) -> SharedArtefacts:
        """Every artefact and fingerprint of ``models`` in ``store`` (rank 0, after preparing them)."""
        manifest = store.manifest()
        kinds = ("profile", "correlations", "attackability", "model")
        artefacts = {(m, k): v for m in models for k in kinds if (v := store.get_artefact(m, k)) is not None}
        return cls(artefacts, {m: manifest.get(f"fingerprint:{m}") for m in models})

    def get_artefact(self, model: str, kind: str) -> dict[str, Any]:
        if (model, kind) not in self.artefacts:
            raise LabelflipError(
                f"rank 0 sent no {kind!r} artefact for model {model!r}; the other ranks never compute artefacts. "
                "This is a labelflip bug; fix: run the study without torchrun, then rerun it distributed."
            )
        return self.artefacts[(model, kind)]

    def put_artefact(self, model: str, kind: str, value: Mapping[str, Any]) -> None:
        """Nothing to do: rank 0 stored it in the main store."""

    def check_fingerprint(self, model: str, fingerprint: str | None) -> None:
        if self.fingerprints.get(model) != fingerprint:
            raise LabelflipError(
                f"Model {model!r} differs between rank 0 (fingerprint {self.fingerprints.get(model)}) and this rank "
                f"(fingerprint {fingerprint}). Every node must load the same model. Fix: give every node the same "
                "weights file and code (for built-in models, the same ~/.cache/labelflip checkpoints)."
            )


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
