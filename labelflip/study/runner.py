"""Run a study: spec -> plan of work units -> execute -> results store (resumable).

:func:`run_study` prepares each model (load or train it, measure or reload its flip profile, correlations and
attackability, resolve its budgets; every artefact is stored, so a rerun recomputes none of them), plans the work
units (:mod:`labelflip.study.plan`), takes this worker's shard of them, and executes each unit not yet stored:
one attack call over the unit's samples at all budgets, written to the store in one transaction. A study killed at
any point resumes exactly on the next run; fixed chunks keep the batches, and hence the results, bit-identical.

The report reads only the store: besides the rows the runner stores what it needs per model (the model's
quality metrics and threshold, the dataset's label names and training co-occurrence, the budgets) and the
adversarial images of the first ``report.examples`` samples of one method (SLAM when present), written in the
same transaction as the unit they come from.

Stochastic methods (random subsets) get the study seed and the dataset indices of the unit's samples, from which
each sample's randomness is derived, so results do not depend on the chunk size or on how units are sharded.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Collection, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from labelflip.analysis import Attackability, Correlations, Profile, check_profile
from labelflip.attacks import attack_info
from labelflip.data import DatasetSplits, cooccurrence_matrix
from labelflip.models import Runtime, describe_runtime
from labelflip.study import distributed
from labelflip.study.execute import PreparedModel, release_captures
from labelflip.study.execute import execute_unit as _execute
from labelflip.study.inputs import (
    Progress,
    check_output_path,
    engine_options,
    load_entry,
    measure_attackability,
    measure_correlations_for,
    measure_profile,
    probe_indices,
    select_samples,
    stored_or_computed,
)
from labelflip.study.lock import study_lock
from labelflip.study.matching import attacked_role, open_dataset
from labelflip.study.plan import WorkUnit, plan_units, shard
from labelflip.study.provenance import environment, provenance
from labelflip.study.spec import StudySpec
from labelflip.study.store import ResultsStore
from labelflip.study.table7 import run_table7, table7_enabled

__all__ = ["PreparedModel", "StudyContext", "run_study", "study_dataset"]

log = logging.getLogger(__name__)


@dataclass
class StudyContext:
    """What a run used: the output directory, the prepared models, the samples and this worker's units."""

    spec: StudySpec
    out: Path
    models: dict[str, PreparedModel]
    x: Tensor
    dataset_indices: Tensor
    units: list[WorkUnit] = field(default_factory=list)
    computed: int = 0


def study_dataset(spec: StudySpec) -> DatasetSplits:
    """The study's dataset (``dataset.name`` from the dataset registry; ``path``, the on-disk ``split`` of a real
    dataset and ``dataset.config`` as its options: :func:`labelflip.study.matching.open_dataset`)."""
    return open_dataset(spec.dataset)


def _runtime(models: Mapping[str, Any]) -> dict[str, Any]:
    """What actually ran: devices and dtypes of the models, threads, torch build. ``models``: name ->
    :func:`_model_runtime` (or a :class:`PreparedModel`)."""
    described = {n: _model_runtime(p) if isinstance(p, PreparedModel) else p for n, p in models.items()}
    devices = sorted({d["device"] for d in described.values()})
    dtypes = sorted({d["dtype"] for d in described.values()})
    return {
        "device": devices[0] if len(devices) == 1 else devices,
        "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "model_runtime": {name: d["runtime"] for name, d in described.items()},  # precision, compile, ...
    }


def _model_runtime(pm: PreparedModel) -> dict[str, Any]:
    """One prepared model's device, dtype and runtime settings (picklable: sent between ranks)."""
    return {"device": str(pm.model.device), "dtype": str(pm.model.dtype).replace("torch.", ""),
            "runtime": describe_runtime(pm.model)}  # fmt: skip


def _manifest(spec: StudySpec, runtime: dict[str, Any]) -> dict[str, Any]:
    seeds = {"samples": spec.samples["seed"], "methods": spec.seeds}
    return {"study": spec.name, "spec": spec.to_dict(), **environment(), **runtime, "seeds": seeds}


def _budgets(spec: StudySpec, profile: Profile) -> list[float]:
    if "fractions" in spec.budgets:
        return [f * profile.eps_max for f in spec.budgets["fractions"]]
    return list(spec.budgets["absolute"])


def _prepare_model(
    store: ResultsStore,
    spec: StudySpec,
    entry: Any,
    data: DatasetSplits,
    progress: Progress | None,
    exclude: Tensor | None = None,
    loaded: Any = None,
) -> PreparedModel:
    """Load a model (unless ``loaded``: :func:`load_entry`'s answer) and its artefacts; ``exclude``: evaluation
    indices the validation probes must skip."""
    name = entry.name
    model, fp, metrics = loaded or load_entry(entry, data, attacked_role(spec.dataset), progress)
    model.set_runtime(Runtime.from_options(spec.runtime, owner="study spec", prefix="runtime."))  # device, bf16, ...
    store.check_fingerprint(name, fp)
    seed = spec.samples["seed"]
    p = spec.profile
    profile = stored_or_computed(
        store,
        name,
        "profile",
        Profile,
        lambda: measure_profile(
            model,
            data,
            samples=p["samples"],
            seed=seed,
            interval=p["interval"],
            order=p["order"],
            curve=p["curve"],
            norm=spec.norm,
            max_steps=p["max_steps"],
            min_points=p["min_points"],
            engine=engine_options("bce", spec.attack),
            fingerprint=fp,
            exclude=exclude,
            progress=progress,
            label=f"{name} profile probe",
        ),
    )
    profile = check_profile(
        profile,
        owner="study spec",
        name=f"profile of {name}",
        num_labels=len(data.label_names),
        norm=spec.norm,
        fingerprint=fp,
        allow_capped=p["allow_capped"],
    )
    heldout = None
    if any("heldout" in attack_info(m)["requires"] for m in spec.methods):
        heldout = data.val.x[probe_indices(data, p["samples"], seed, exclude=exclude)]
    corr = None
    if any("correlations" in attack_info(m)["requires"] for m in spec.methods):
        c = spec.correlations
        corr = stored_or_computed(
            store,
            name,
            "correlations",
            Correlations,
            lambda: measure_correlations_for(
                model,
                data,
                samples=c["samples"],
                seed=seed,
                eps=c["eps"],
                fingerprint=fp,
                progress=progress,
                label=f"{name} correlations",
                exclude=exclude,
            ),
        )
    att = None
    a = spec.attackability
    if a["per_label"] > 0:
        att = stored_or_computed(
            store,
            name,
            "attackability",
            Attackability,
            lambda: measure_attackability(
                model,
                data,
                per_label=a["per_label"],
                eps=a["eps"],
                images=a["images"],
                fingerprint=fp,
                progress=progress,
                label=f"{name} attackability",
            ),
        )
    budgets = _budgets(spec, profile)
    threshold = model.threshold.cpu()
    store.put_artefact(
        name,
        "model",
        {
            "metrics": metrics,
            "threshold": threshold.tolist(),
            "budgets": budgets,
            "fingerprint": fp,
            "device": str(model.device),
            "dtype": str(model.dtype).replace("torch.", ""),
        },
    )
    return PreparedModel(model, fp, metrics, profile, corr, att, budgets, heldout)


def run_study(spec: StudySpec, *, progress: Progress | None = None, rank: int = 0, world: int = 1) -> StudyContext:
    """Run (or resume) a study, or worker ``rank``'s shard of it; results live in ``<output>/results.sqlite``.

    Started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set), the ranks share the study instead, with rank and world
    from torchrun (:mod:`labelflip.study.distributed`); store shards such a run left are merged first.
    Raises LabelflipError when the output directory holds a study with a different config or model.
    """
    out = check_output_path(spec.output, owner="study spec", param="output (--out)", directory=True)
    out.mkdir(parents=True, exist_ok=True)
    if distributed.launched_by_torchrun():
        with distributed.process_group() as group:
            return _run_distributed(spec, out, group, progress)
    with study_lock(out):
        distributed.merge_shards(out)  # a distributed run's leftover shards (none otherwise): their units are done
        with ResultsStore(out / "results.sqlite") as store:  # before any work: refuse another study, reuse a failed
            store.claim(spec.config_hash(), provenance())  # run's empty directory, warn on a version change
        data, idx, x = _samples(spec)
        with ResultsStore(out / "results.sqlite") as store:
            prepared = _prepare_study(store, spec, data, idx, progress)
            units = shard(plan_units(list(prepared), spec.methods, spec.seeds, x.shape[0], spec.chunk), rank, world)
            ctx = StudyContext(spec, out, prepared, x, idx, units)
            _run_units(ctx, store, progress)
            run_table7(ctx, progress, store=store, rank=rank)  # the Table VII stage (rank 0)
            log.info("study %s: %d rows in %s", spec.name, store.count(), store.path)
        return ctx


def _samples(spec: StudySpec) -> tuple[DatasetSplits, Tensor, Tensor]:
    """The dataset, the dataset indices of the study's samples (N,) and the samples (N, C, H, W)."""
    data = study_dataset(spec)
    split = getattr(data, attacked_role(spec.dataset))
    idx = select_samples(split, spec.samples["count"], spec.samples["seed"])
    return data, idx, split.x[idx]


def _prepare_study(
    store: Any,
    spec: StudySpec,
    data: DatasetSplits,
    idx: Tensor,
    progress: Progress | None,
    write: bool = True,
    names: Collection[str] | None = None,
) -> dict[str, PreparedModel]:
    """The models named ``names`` (default: all), in spec order, prepared from ``store`` (their artefacts computed
    into it if missing); with ``write``, the manifest and the dataset artefact stored too."""
    role = attacked_role(spec.dataset)
    exclude = idx if getattr(data, role) is data.val else None  # probes disjoint from evaluation samples
    entries = [e for e in spec.models if names is None or e.name in names]
    loaded = {e.name: load_entry(e, data, role, progress) for e in entries}  # all checked before any work
    prepared = {e.name: _prepare_model(store, spec, e, data, progress, exclude, loaded[e.name]) for e in entries}
    if write:
        _write_study(store, spec, data, idx, _runtime(prepared))
    return prepared


def _write_study(store: Any, spec: StudySpec, data: DatasetSplits, idx: Tensor, runtime: dict[str, Any]) -> None:
    """The manifest (config, environment, ``runtime``) and the dataset artefact the report reads."""
    role = attacked_role(spec.dataset)
    store.init_manifest(_manifest(spec, runtime), spec.config_hash())
    split, cooc = spec.dataset["split"], cooccurrence_matrix(data.train.y).double().tolist()
    store.put_artefact("", "dataset", {"label_names": list(data.label_names), "cooccurrence": cooc, "split": split,
                       "indices": idx.tolist(), "labels": getattr(data, role).y[idx].tolist()})  # fmt: skip


def _run_units(ctx: StudyContext, store: ResultsStore, progress: Progress | None, done_units: Any = ()) -> None:
    """Execute ``ctx.units`` not yet stored (in ``store``, or listed in ``done_units``) into ``store``."""
    spec, done = ctx.spec, Counter[tuple[str, str, int]]()
    totals = Counter((u.model, u.method, u.seed) for u in ctx.units)
    try:
        for unit in ctx.units:
            key = (unit.model, unit.method, unit.seed)
            pm = ctx.models[unit.model]
            stored = unit in done_units
            if not stored and not store.has_unit(
                unit.model, unit.method, unit.seed, list(unit.samples), len(pm.budgets)
            ):
                _execute(store, spec, unit, pm, ctx.x, ctx.dataset_indices)
                ctx.computed += 1
            done[key] += 1
            if progress is not None:
                spec_label = next(s for s in spec.method_specs if str(s) == unit.method).label
                seed_label = f" seed {unit.seed}" if attack_info(unit.method)["stochastic"] else ""
                progress(f"{unit.model} {spec_label}{seed_label}", done[key], totals[key])
    finally:
        release_captures()  # the trajectories the units shared (execute.py)


def _run_distributed(spec: StudySpec, out: Path, group: distributed.Group, progress: Progress | None) -> StudyContext:
    """One rank's part of a torchrun study (:mod:`labelflip.study.distributed`): rank 0 merges leftover shards and
    sends what the main store holds; each rank prepares its share of the models (:func:`~labelflip.study.
    distributed.preparing_rank`) and rank 0 stores every rank's artefacts; each rank runs its shard of the units not
    stored into its own store shard; rank 0 merges the shards after a barrier."""
    names = [e.name for e in spec.models]
    with ExitStack() as stack:
        start: distributed.SharedArtefacts | None = None
        with group.together("read the study"):
            if group.rank == 0:
                stack.enter_context(study_lock(out))  # the whole study, merges included
                distributed.merge_shards(out)
                with ResultsStore(out / "results.sqlite") as store:
                    store.claim(spec.config_hash(), provenance())
                    start = distributed.SharedArtefacts.read(store, names)
        shared: distributed.SharedArtefacts = group.broadcast(start)
        data, idx, x = _samples(spec)
        collector = shared.collecting()
        mine = [n for i, n in enumerate(names) if distributed.preparing_rank(i, group.world) == group.rank]
        t0 = time.perf_counter()
        with group.together("prepared their models"):
            prepared = _prepare_study(collector, spec, data, idx, progress, write=False, names=mine)
            log.info("rank %d prepared %s in %.1f s", group.rank, mine, time.perf_counter() - t0)
        log.info("rank %d: every rank prepared its models after %.1f s", group.rank, time.perf_counter() - t0)
        news = group.gather((collector.new, collector.new_fingerprints, {n: _model_runtime(p) for n, p in
                             prepared.items()}))  # fmt: skip
        shared = shared.updated([(a, f) for a, f, _ in news])
        plan = plan_units(names, spec.methods, spec.seeds, x.shape[0], spec.chunk)
        stored: set[WorkUnit] | None = None
        with group.together("stored the artefacts"):
            if group.rank == 0:
                with ResultsStore(out / "results.sqlite") as store:
                    for artefacts, fingerprints, _ in news:
                        distributed.store_prepared(store, artefacts, fingerprints)
                    described = {n: d for _, _, ds in news for n, d in ds.items()}
                    runtime = _runtime({n: described[n] for n in names})
                    runtime["prepared_by_rank"] = {n: r for r, (_, _, ds) in enumerate(news) for n in ds}
                    _write_study(store, spec, data, idx, runtime)
                    budgets = {n: len(shared.get_artefact(n, "model")["budgets"]) for n in names}
                    stored = {u for u in plan if store.has_unit(u.model, u.method, u.seed, list(u.samples),
                                                               budgets[u.model])}  # fmt: skip
        stored = group.broadcast(stored)
        with group.together("ran their shards"):
            units = shard(plan, group.rank, group.world)
            needed = {u.model for u in units} | (set(names) if group.rank == 0 and table7_enabled(spec) else set())
            rest = [n for n in names if n in needed and n not in prepared]  # prepared by another rank: loaded here
            prepared.update(_prepare_study(shared, spec, data, idx, None, write=False, names=rest))
            ctx = StudyContext(spec, out, {n: prepared[n] for n in names if n in prepared}, x, idx, units)
            with study_lock(out, name=f"rank{group.rank}"), ResultsStore(distributed.shard_path(out, group.rank)) as s:
                s.claim(spec.config_hash())
                _run_units(ctx, s, progress, stored)
            log.info("rank %d ran its %d units after %.1f s", group.rank, len(units), time.perf_counter() - t0)
        with group.together("merged the shards"):
            if group.rank == 0:
                distributed.merge_shards(out)
                run_table7(ctx, progress)  # rank 0 only, after the merge, under the study lock
    return ctx
