"""Run a study: models x methods x seeds x samples x budgets into a resumable :class:`ResultsStore`.

Order of work per model: load (or train) the model, measure or reload its flip profile and (if a method needs
them) its correlations, resolve the budgets, then for every method and seed attack the selected samples in
fixed chunks of ``spec.chunk``; each chunk (all budgets) is one atomic unit in the store. A rerun skips stored
units and recomputes nothing else that is stored (profiles and correlations are stored artefacts), so an
interrupted study resumes exactly; fixed chunks keep the batches, and hence the results, bit-identical.

Deterministic methods run once (with the first seed); stochastic ones (random subsets) once per seed, with an
independent generator per chunk (``seed * 1_000_003 + first sample index``).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.util
import logging
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

import labelflip
from labelflip._validation import fail
from labelflip.attackability import Attackability, label_attackability
from labelflip.correlation import Correlations, measure_correlations
from labelflip.methods import MethodSpec, build_attack
from labelflip.model import MultiLabelModel
from labelflip.profile import Profile, probe_profile
from labelflip.study.spec import ModelEntry, StudySpec
from labelflip.study.store import ResultRow, ResultsStore

__all__ = ["StudyContext", "load_study_model", "run_study", "study_dataset"]

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


@dataclass
class StudyContext:
    """What the report needs besides the store: per-model data used by the study."""

    spec: StudySpec
    out: Path
    models: dict[str, MultiLabelModel]
    profiles: dict[str, Profile]
    correlations: dict[str, Correlations | None]
    budgets: dict[str, list[float]]
    x: Tensor
    dataset_indices: Tensor
    label_names: list[str]
    train_labels: Tensor
    model_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    attackability: dict[str, Attackability] = field(default_factory=dict)


def study_dataset(spec: StudySpec):
    """The synthetic dataset of the study (the default one unless ``dataset.config`` overrides fields)."""
    from labelflip import zoo
    from labelflip.data import SyntheticConfig, make_synthetic

    cfg = dict(spec.dataset.get("config") or {})
    if not cfg:
        return zoo.default_dataset()
    try:
        return make_synthetic(SyntheticConfig(**cfg))
    except TypeError as exc:
        raise fail("study spec", "dataset.config", "SyntheticConfig fields", sorted(cfg), str(exc)) from exc


def _import_factory(ref: str) -> Callable[..., nn.Module]:
    """``"pkg.module:callable"`` or ``"path/to/file.py:callable"``."""
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise fail("study spec", "models.factory", "'module:callable' or 'file.py:callable'", ref)
    try:
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location(f"labelflip_user_{abs(hash(target))}", target)
            if spec is None or spec.loader is None:
                raise ImportError(target)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        return getattr(module, attr)
    except (ImportError, AttributeError, FileNotFoundError) as exc:
        raise fail(
            "study spec", "models.factory", "an importable callable", ref, f"{type(exc).__name__}: {exc}"
        ) from exc


def load_study_model(
    entry: ModelEntry, data: Any, progress: Progress | None = None
) -> tuple[MultiLabelModel, str, dict[str, float]]:
    """A wrapped model, its fingerprint and known quality metrics: built-in (trained if needed) or a user
    factory (+ safetensors weights)."""
    if entry.factory is None:
        from labelflip import zoo

        def on_epoch(info: dict[str, Any]) -> None:
            if progress is not None:
                progress(f"{entry.name} training", int(info["epoch"]), int(info["epochs"]))

        built = zoo.load_builtin(entry.name, data=data, progress=on_epoch)
        return MultiLabelModel(built.module, threshold=entry.threshold), built.fingerprint, dict(built.metrics)
    module = _import_factory(entry.factory)()
    if not isinstance(module, nn.Module):
        raise fail("study spec", "models.factory", "a callable returning an nn.Module", type(module).__name__)
    fingerprint = f"factory:{entry.factory}"
    if entry.weights is not None:
        from safetensors.torch import load_file

        path = Path(entry.weights)
        if not path.is_file():
            raise fail("study spec", "models.weights", "an existing .safetensors file", str(path))
        state = load_file(str(path))
        module.load_state_dict(state)
        import hashlib

        fingerprint += ":" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    model = MultiLabelModel(module, mean=entry.mean, std=entry.std, threshold=entry.threshold)
    return model, fingerprint, {}


def _git_hash() -> str | None:
    try:
        root = Path(labelflip.__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _manifest(spec: StudySpec) -> dict[str, Any]:
    return {
        "study": spec.name,
        "spec": spec.to_dict(),
        "labelflip_version": labelflip.__version__,
        "git_hash": _git_hash(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": "cpu",
        "dtype": "float32",
        "seeds": {"samples": spec.samples["seed"], "methods": spec.seeds},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _select(n_total: int, count: int, seed: int) -> Tensor:
    if count > n_total:
        raise fail("study spec", "samples.count", f"at most the split size {n_total}", count)
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:count]


def run_study(spec: StudySpec, *, progress: Progress | None = None) -> StudyContext:
    """Run (or resume) a study; returns the context the report uses. Results live in ``<output>/results.sqlite``.

    Raises LabelflipError when the output directory holds a study with a different config or model.
    """
    out = Path(spec.output)
    out.mkdir(parents=True, exist_ok=True)
    data = study_dataset(spec)
    split = getattr(data, spec.dataset["split"])
    idx = _select(len(split), spec.samples["count"], spec.samples["seed"])
    x = split.x[idx]
    ctx = StudyContext(spec, out, {}, {}, {}, {}, x, idx, list(data.label_names), data.train.y)
    methods: list[MethodSpec] = spec.method_specs
    with ResultsStore(out / "results.sqlite") as store:
        store.init_manifest(_manifest(spec), spec.config_hash())
        for entry in spec.models:
            model, fingerprint, metrics = load_study_model(entry, data, progress)
            store.check_fingerprint(entry.name, fingerprint)
            ctx.models[entry.name] = model
            ctx.model_metrics[entry.name] = metrics
            prof = _profile(store, spec, entry.name, model, data, fingerprint)
            ctx.profiles[entry.name] = prof
            corr = None
            if any(m.needs_correlations for m in methods):
                corr = _correlations(store, spec, entry.name, model, data, fingerprint, progress)
            ctx.correlations[entry.name] = corr
            if spec.attackability["per_label"] > 0:
                ctx.attackability[entry.name] = _attackability(
                    store, spec, entry.name, model, data, fingerprint, progress
                )
            if "fractions" in spec.budgets:
                budgets = [f * prof.eps_max for f in spec.budgets["fractions"]]
            else:
                budgets = list(spec.budgets["absolute"])
            ctx.budgets[entry.name] = budgets
            for method in methods:
                for seed in spec.seeds if method.kind == "random" else spec.seeds[:1]:
                    _run_method(store, spec, entry.name, model, method, seed, prof, corr, budgets, x, idx, progress)
        log.info("study %s: %d rows in %s", spec.name, store.count(), store.path)
    return ctx


T = TypeVar("T", Profile, Correlations, Attackability)


def _stored(store: ResultsStore, model: str, kind: str, cls: type[T], compute: Callable[[], T]) -> T:
    """A model's artefact from the store, or computed once and stored (so a rerun recomputes nothing)."""
    stored = store.get_artefact(model, kind)
    if stored is not None:
        return cls.from_dict(stored)
    value = compute()
    store.put_artefact(model, kind, value.to_dict())
    return value


def _profile(store: ResultsStore, spec: StudySpec, name: str, model: MultiLabelModel, data: Any, fp: str) -> Profile:
    p, seed = spec.profile, spec.samples["seed"] + 1
    xv = data.val.x[_select(len(data.val), p["samples"], seed)]
    return _stored(
        store,
        name,
        "profile",
        Profile,
        lambda: probe_profile(
            model,
            xv,
            interval=p["interval"],
            order=p["order"],
            curve=p["curve"],
            norm=spec.norm,
            model_fingerprint=fp,
            seed=seed,
        ),
    )


def _phase(progress: Progress | None, label: str) -> Callable[[int, int], None] | None:
    return None if progress is None else (lambda done, total: progress(label, done, total))


def _correlations(
    store: ResultsStore,
    spec: StudySpec,
    name: str,
    model: MultiLabelModel,
    data: Any,
    fp: str,
    progress: Progress | None = None,
) -> Correlations:
    c, seed = spec.correlations, spec.samples["seed"] + 2
    xc = data.val.x[_select(len(data.val), c["samples"], seed)]
    return _stored(
        store,
        name,
        "correlations",
        Correlations,
        lambda: measure_correlations(
            model,
            xc,
            eps=c["eps"],
            label_names=list(data.label_names),
            model_fingerprint=fp,
            seed=seed,
            progress=_phase(progress, f"{name} correlations"),
        ),
    )


def _attackability(
    store: ResultsStore,
    spec: StudySpec,
    name: str,
    model: MultiLabelModel,
    data: Any,
    fp: str,
    progress: Progress | None = None,
) -> Attackability:
    a = spec.attackability
    n = min(a["images"], len(data.train))
    return _stored(
        store,
        name,
        "attackability",
        Attackability,
        lambda: label_attackability(
            model,
            data.train.x[:n],
            data.train.y[:n],
            eps=a["eps"],
            n_per_label=a["per_label"],
            frequency=data.train.label_frequencies(),
            label_names=list(data.label_names),
            model_fingerprint=fp,
            progress=_phase(progress, f"{name} attackability"),
        ),
    )


def _run_method(
    store: ResultsStore,
    spec: StudySpec,
    model_name: str,
    model: MultiLabelModel,
    method: MethodSpec,
    seed: int,
    prof: Profile,
    corr: Correlations | None,
    budgets: list[float],
    x: Tensor,
    idx: Tensor,
    progress: Progress | None,
) -> None:
    n = x.shape[0]
    label = f"{model_name} {method.label}" + (f" seed {seed}" if method.kind == "random" else "")
    starts = list(range(0, n, spec.chunk))
    for done, start in enumerate(starts):
        samples = list(range(start, min(n, start + spec.chunk)))
        if store.has_unit(model_name, str(method), seed, samples, len(budgets)):
            if progress is not None:
                progress(label, done + 1, len(starts))
            continue
        attack = build_attack(
            method, model, profile=prof, correlations=corr, seed=seed * 1_000_003 + start, norm=spec.norm
        )
        t0 = time.perf_counter()
        res = attack(x[start : samples[-1] + 1], budgets)
        share = (time.perf_counter() - t0) / len(samples)
        rows = [
            ResultRow(
                model=model_name,
                method=str(method),
                seed=seed,
                budget_index=b,
                sample_index=s,
                eps=float(budgets[b]),
                dataset_index=int(idx[s]),
                steps=int(res.steps[b]),
                flips=int(res.flips[b, i]),
                flips_up=int(res.flips_up[b, i]),
                flips_down=int(res.flips_down[b, i]),
                linf=float(res.linf[b, i]),
                l2=float(res.l2[b, i]),
                clean_conf=res.clean_probs[i].numpy().astype(np.float32).tobytes(),
                adv_conf=res.adv_probs[b, i].numpy().astype(np.float32).tobytes(),
                elapsed_s=share,
            )
            for b in range(len(budgets))
            for i, s in enumerate(samples)
        ]
        store.write_unit(rows)
        if progress is not None:
            progress(label, done + 1, len(starts))
