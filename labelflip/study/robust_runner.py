"""Run a robust study (:mod:`labelflip.study.robust_spec`): budgets by the recorded rule, then every unit
(:mod:`labelflip.study.robust_plan`) trained (or loaded from its cached checkpoint) and evaluated, into the study's
SQLite :class:`~labelflip.study.store.ResultsStore` (artefacts table). Resumable: each component of a unit is stored
as soon as it is computed, a rerun computes only what is missing, and trained checkpoints are cached in
``<output>/checkpoints`` (safetensors, fingerprinted by data, config and code).

Budgets (seed 004, §5.3; SPEC-related-methods §2.5): ``budgets.absolute`` as given, or the rule of
:func:`labelflip.robust.choose_budgets` applied once, to the undefended model of the first seed on the
**validation** split: the larger budget is the smallest grid value at which the attack cuts that model's Micro-F1 to
at most ``1 - loss_share`` of its clean value, the smaller is the larger divided by ``ratio``. Every model of the
study is then evaluated at the same two budgets on the test split.

The attack behind the attacked F1 (the paper does not name its own): GASE's perturbation for linear models (exact
min-norm oracle), MaxFlip (labelflip's strongest budgeted attack) for deep ones, each maximising the number of
labels wrong against the ground truth (:func:`labelflip.robust.evaluate_robustness`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from labelflip._validation import LabelflipError
from labelflip.data import DatasetSplits, MultiLabelData, create_dataset, load_mulan
from labelflip.estimators import gase, sae
from labelflip.models.checkpoints import code_hash
from labelflip.models.runtime import torch_threads
from labelflip.robust import RobustTrainConfig, TrainedModel, choose_budgets, evaluate_robustness, train_robust
from labelflip.study.inputs import check_output_path
from labelflip.study.lock import study_lock
from labelflip.study.provenance import environment, provenance
from labelflip.study.robust_checks import mulan_files
from labelflip.study.robust_plan import (
    BUDGETS_KIND,
    INDEX_KIND,
    UNIT_KIND,
    RobustUnit,
    missing,
    plan_robust_units,
)
from labelflip.study.robust_spec import RobustSpec, load_robust_spec
from labelflip.study.store import ResultsStore
from labelflip.zoo.training import TRAIN_THREADS

__all__ = ["ROBUST_ENGINE", "RobustStudyResult", "open_robust_dataset", "run_robust_study"]

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
#: The code behind a robust study's numbers besides the store's engine (attacks, data, ...): resuming under a
#: different hash of it is refused.
ROBUST_ENGINE = ("robust", "estimators", "metrics.py", "study/robust_plan.py", "study/robust_runner.py")


@dataclass
class RobustStudyResult:
    """What a run did: the output directory, the budgets, the units and how many components it computed."""

    spec: RobustSpec
    out: Path
    budgets: list[float]
    units: list[RobustUnit] = field(default_factory=list)
    computed: int = 0
    seconds: float = 0.0


def open_robust_dataset(spec: RobustSpec, variant: Mapping[str, Any] | None = None) -> DatasetSplits:
    """The study's dataset (a Fig. 1 ``variant`` overrides synthetic-tabular settings such as ``correlation``)."""
    ds = spec.dataset
    if ds["name"] in ("emotions", "yeast"):
        path, xml = mulan_files(ds)
        return load_mulan(path, xml, seed=ds["seed"])
    return create_dataset(ds["name"], **{**ds["config"], "seed": ds["seed"], **dict(variant or {})})


def _manifest(spec: RobustSpec) -> dict[str, Any]:
    return {"kind": "robust", "study": spec.name, "spec": spec.to_dict(), **environment(),
            "robust_engine_hash": code_hash(ROBUST_ENGINE), "torch_threads": torch.get_num_threads(),
            "seeds": spec.seeds}  # fmt: skip


def _claim(store: ResultsStore, spec: RobustSpec) -> None:
    """Tie the store to this spec before any work: refuse another study's results or another robust engine."""
    manifest, config = store.manifest(), spec.config_hash()
    stored = manifest.get("config_hash")
    done = (store.get_artefact("", INDEX_KIND) or {}).get("units", [])
    if stored is not None and stored != config and (done or store.count()):
        what = f"{len(done)} robust units" if done else f"{store.count()} attack-study rows"
        raise LabelflipError(
            f"The output directory {store.path.parent} holds a study with a different configuration (config hash "
            f"{stored} there, {config} now) and {what}. Refusing to mix results. Fix: rerun with the original spec "
            "to resume it, or choose another output directory (--out)."
        )
    then, now = manifest.get("robust_engine_hash"), code_hash(ROBUST_ENGINE)
    if done and then is not None and then != now:
        raise LabelflipError(
            f"The robust study in {store.path.parent} was computed by different labelflip code (robust engine hash "
            f"{then}, now {now}): resumed units could differ. Fix: resume with the labelflip that started it, or "
            "rerun into another output directory (--out)."
        )
    store.claim(config, provenance(), kind="robust")
    store.init_manifest(_manifest(spec), config)


def _subset(data: MultiLabelData, samples: int) -> MultiLabelData:
    if samples <= 0 or samples >= len(data):
        return data
    return MultiLabelData(data.x[:samples], data.y[:samples], list(data.label_names))


class _Context:
    """Datasets (by variant), the store and the checkpoint directory of one run."""

    def __init__(self, spec: RobustSpec, store: ResultsStore, out: Path) -> None:
        self.spec, self.store, self.ckpt = spec, store, out / "checkpoints"
        self._data: dict[str, DatasetSplits] = {}

    def data(self, variant: Mapping[str, Any]) -> DatasetSplits:
        key = repr(sorted(variant.items()))
        if key not in self._data:
            self._data[key] = open_robust_dataset(self.spec, variant)
        return self._data[key]

    def train(self, unit: RobustUnit) -> TrainedModel:
        s = self.spec
        config = RobustTrainConfig(**s.train, loss=s.model["loss"], regulariser=unit.regulariser, seed=unit.seed)
        return train_robust(
            s.arch, self.data(unit.variant), config, arch_kwargs=s.arch_kwargs, checkpoint_dir=self.ckpt
        )

    def attack_options(self) -> dict[str, Any]:
        if self.spec.attack_name == "gase":
            return {"k_try": self.spec.evaluation["gase_k_try"], **self.spec.attack_options}
        return dict(self.spec.attack_options)


def _budgets(ctx: _Context, progress: Progress | None) -> list[float]:
    """The study's two budgets: stored, absolute, or chosen by the rule (stored with the rule that chose them)."""
    spec, store = ctx.spec, ctx.store
    stored = store.get_artefact("", BUDGETS_KIND)
    if stored is not None:
        return [float(b) for b in stored["budgets"]]
    if "absolute" in spec.budgets:
        record = {"budgets": spec.budgets["absolute"], "source": "absolute", "rule": "given in the spec"}
    else:
        rule = spec.budgets["rule"]
        unit = RobustUnit("none", spec.seeds[0])
        if progress is not None:
            progress("calibrating budgets", 0, 1)
        t0 = time.perf_counter()
        trained = ctx.train(unit)
        _store_train(ctx, unit, trained, time.perf_counter() - t0)
        t0 = time.perf_counter()
        val = ctx.data({}).val
        grid = rule["grid"]
        chosen = choose_budgets(
            trained.model,
            val,
            loss_share=rule["loss_share"],
            grid=grid,
            ratio=rule["ratio"],
            attack=spec.attack_name,
            norm=spec.norm,
            attack_options=ctx.attack_options(),
            max_samples=rule["samples"] or None,
        )
        record = {
            "budgets": chosen,
            "source": "rule",
            "rule": (
                f"larger = the smallest grid budget at which {spec.attack_name} cuts the undefended model's (seed "
                f"{unit.seed}) validation Micro-F1 to <= {1 - rule['loss_share']:g} x its clean value (else the "
                f"largest); smaller = larger / {rule['ratio']:g}"
            ),
            "grid": grid if grid is not None else [0.125 * 2**k for k in range(8)],
            "calibration_samples": min(rule["samples"] or len(val), len(val)),
            "seconds": time.perf_counter() - t0,
        }
    record.update(attack=spec.attack_name, norm=spec.norm)
    store.put_artefact("", BUDGETS_KIND, record)
    if progress is not None and record["source"] == "rule":
        progress("calibrating budgets", 1, 1)
    return [float(b) for b in record["budgets"]]


def _put(ctx: _Context, unit: RobustUnit, value: dict[str, Any]) -> None:
    ctx.store.put_artefact(unit.key, UNIT_KIND, value)
    index = ctx.store.get_artefact("", INDEX_KIND) or {"units": []}
    if unit.key not in index["units"]:
        ctx.store.put_artefact("", INDEX_KIND, {"units": [*index["units"], unit.key]})


def _store_train(ctx: _Context, unit: RobustUnit, trained: TrainedModel, seconds: float) -> dict[str, Any]:
    stored = ctx.store.get_artefact(unit.key, UNIT_KIND) or {}
    if "train" not in stored:
        last = trained.history[-1] if trained.history else {}
        stored["train"] = {
            "regulariser": unit.regulariser,
            "seed": unit.seed,
            "variant": unit.variant,
            "fingerprint": trained.fingerprint,
            "checkpoint": trained.path.name if trained.path is not None else None,
            "metrics": trained.metrics,
            "epochs": len(trained.history),
            "best_epoch": trained.best_epoch,
            "final_penalty": last.get("penalty"),
            "seconds": seconds if not trained.cached else last.get("seconds"),
        }
        _put(ctx, unit, stored)
    return stored


def _evaluate(ctx: _Context, unit: RobustUnit, todo: list[str], budgets: list[float]) -> int:
    """Train or load ``unit`` and compute its missing components ``todo`` (each stored when done)."""
    spec = ctx.spec
    t0 = time.perf_counter()
    trained = ctx.train(unit)
    stored = _store_train(ctx, unit, trained, time.perf_counter() - t0)
    test = _subset(ctx.data(unit.variant).test, spec.evaluation["samples"])
    model, done = trained.model, int("train" in todo)
    for comp in todo:
        if comp == "train":
            continue
        t0 = time.perf_counter()
        if comp == "f1":
            rep = evaluate_robustness(
                model, test, budgets, attack=spec.attack_name, norm=spec.norm, attack_options=ctx.attack_options()
            )
            value: dict[str, Any] = rep.to_dict()
        elif comp == "sae":
            res = sae(model, test.x, norm=spec.norm, delta=spec.evaluation["sae_delta"])
            value = {"scores": res.scores.tolist(), "mean": res.mean(), "median": res.median()}
        else:
            eps = float(comp.partition("@")[2])
            g = gase(
                model,
                test.x,
                eps,
                norm=spec.norm,
                k_try=spec.evaluation["gase_k_try"],
                attack=spec.evaluation["gase_attack"],
            )
            value = {
                "flips": g.flips.tolist(),
                "mean": g.mean(),
                "eps": eps,
                "oracle": g.oracle,
                "num_labels": int(g.flipped.shape[1]),
            }
        value["seconds"] = time.perf_counter() - t0
        stored[comp] = value
        _put(ctx, unit, stored)
        done += 1
    return done


def _threads(spec: RobustSpec) -> contextlib.AbstractContextManager[None]:
    """One intra-op thread for tabular models (their matrices are tiny: a second thread only adds synchronisation,
    which costs 10-50x on a busy 2-core machine), :data:`~labelflip.zoo.training.TRAIN_THREADS` for images (the
    weights, hence the tables, then do not depend on the machine's core count), restored afterwards."""
    return torch_threads(1 if spec.model["family"] != "cnn" else TRAIN_THREADS)


def run_robust_study(
    spec: RobustSpec | str | Path | Mapping[str, Any], *, progress: Progress | None = None
) -> RobustStudyResult:
    """Run (or resume) a robust study; everything lands in ``<output>/results.sqlite`` (and checkpoints beside it).

    Args:
        spec: a :class:`RobustSpec`, or a YAML path / mapping for :func:`load_robust_spec`.
        progress: ``progress(label, done, total)`` after each unit.

    Raises LabelflipError when the output directory holds another study (or one run by different robust code).
    """
    start = time.perf_counter()
    spec = spec if isinstance(spec, RobustSpec) else load_robust_spec(spec)
    out = check_output_path(spec.output, owner="robust study spec", param="output (--out)", directory=True)
    out.mkdir(parents=True, exist_ok=True)
    with study_lock(out), ResultsStore(out / "results.sqlite") as store, _threads(spec):
        _claim(store, spec)
        ctx = _Context(spec, store, out)
        budgets = _budgets(ctx, progress)
        units = plan_robust_units(spec, budgets)
        result = RobustStudyResult(spec, out, budgets, units)
        for i, unit in enumerate(units, 1):
            todo = missing(unit, store.get_artefact(unit.key, UNIT_KIND))
            if todo:
                result.computed += _evaluate(ctx, unit, todo, budgets)
            if progress is not None:
                progress(f"{spec.name}: models", i, len(units))
        log.info("robust study %s: %d units in %s", spec.name, len(units), store.path)
    result.seconds = time.perf_counter() - start
    return result
