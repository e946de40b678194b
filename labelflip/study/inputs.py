"""What a study (or a CLI command) needs before it attacks: models, samples and analysis artefacts, chosen one way.

* :func:`select_samples`: the one sample selector (the first ``count`` of a seeded permutation; no global RNG).
  With sample seed ``s``, evaluation samples use ``s``, the flip-profile probe ``s + 1`` and the correlation
  probe ``s + 2`` (:data:`PROFILE_SEED_OFFSET`, :data:`CORRELATION_SEED_OFFSET`), so ``labelflip profile`` and a
  study measure the same profile for the same model, samples and seed. Probes always draw from the validation
  split; when the evaluation samples come from it too (``split: val``), the probes skip them (``exclude``): the
  profile, correlation and held-out samples are disjoint from the evaluation samples (SPEC.md, Evaluation).
* :func:`measure_profile` / :func:`measure_correlations_for` / :func:`measure_attackability`: the analyses on
  the dataset's splits with those conventions.
* :func:`stored_or_computed`: an artefact from a cache (the study store), or computed once and put there.
* The probes also read and write the user-level probe cache when one is active
  (:func:`~labelflip.analysis.cache.use_probe_cache`, the CLI's default): keyed by the model fingerprint, device
  and dtype, a hash of the probe images, every probe setting and the :func:`~labelflip.study.store.engine_hash`
  (:func:`probe_identity`), so a later command or study reuses a probe only when it would compute the same.
* :func:`load_model`: a registered model name (with its checkpoint for the paper's models), or a user factory
  (``module:callable`` / ``file.py:callable``) with an optional checkpoint in any format, checked against the
  dataset (K, input shape, label names) before any work (:mod:`labelflip.study.loaders`); its fingerprint covers
  the loaded weights and the wrapper's options (:func:`fingerprint_model`), so a resumed study refuses a changed
  model whatever its kind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor

from labelflip._validation import fail
from labelflip.analysis import (
    DEFAULT_MAX_STEPS,
    Artefact,
    Attackability,
    Correlations,
    Profile,
    label_attackability,
    probe_profile,
)
from labelflip.analysis import measure_correlations as _measure_correlations
from labelflip.analysis.cache import active_probe_cache
from labelflip.attacks import MIFGSM, SubsetAttack, parse_attack
from labelflip.data import DatasetSplits, MultiLabelData
from labelflip.models import MultiLabelModel
from labelflip.study.loaders import fingerprint_model, import_factory, load_entry, load_model
from labelflip.study.store import engine_hash

__all__ = [
    "CORRELATION_SEED_OFFSET",
    "ENGINE_DEFAULTS",
    "PROFILE_SEED_OFFSET",
    "ArtefactCache",
    "Progress",
    "check_correlations",
    "check_output_path",
    "engine_options",
    "fingerprint_model",
    "import_factory",
    "load_entry",
    "load_model",
    "measure_attackability",
    "measure_correlations_for",
    "measure_profile",
    "probe_identity",
    "probe_indices",
    "select_samples",
    "stored_or_computed",
]

PROFILE_SEED_OFFSET = 1
CORRELATION_SEED_OFFSET = 2
ENGINE_DEFAULTS: dict[str, Any] = {"bce_formulation": "stable", "clip": "final", "l2_mode": "project"}
"""The MI-FGSM settings a study's ``attack`` section (or a preset) may change, at their defaults."""
Progress = Callable[[str, int, int], None]
A = TypeVar("A", bound=Artefact)


def select_samples(
    split: MultiLabelData,
    count: int,
    seed: int,
    *,
    owner: str = "study spec",
    param: str = "samples.count",
    exclude: Tensor | None = None,
) -> Tensor:
    """Dataset indices ``(count,)``: the first ``count`` entries of a permutation of the split seeded by ``seed``,
    skipping the indices in ``exclude`` (e.g. the evaluation samples when probes come from the same split)."""
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    if exclude is not None and exclude.numel() > 0:
        perm = perm[~torch.isin(perm, exclude.to(perm.dtype))]
    if count > perm.numel():
        extra = f" minus the {len(split) - perm.numel()} evaluation samples" if perm.numel() < len(split) else ""
        raise fail(owner, param, f"at most the split size {len(split)}{extra} = {perm.numel()}", count)
    return perm[:count]


def probe_indices(
    data: DatasetSplits, samples: int, seed: int, *, exclude: Tensor | None = None, owner: str = "study spec"
) -> Tensor:
    """Validation indices of the flip-profile probe for sample seed ``seed`` (also the held-out samples of
    ``class-auto``'s gamma search)."""
    return select_samples(
        data.val, samples, seed + PROFILE_SEED_OFFSET, owner=owner, param="profile.samples", exclude=exclude
    )


class ArtefactCache(Protocol):
    """Where computed artefacts are kept (a study's store, per model)."""

    def get_artefact(self, model: str, kind: str) -> dict[str, Any] | None: ...

    def put_artefact(self, model: str, kind: str, value: Mapping[str, Any]) -> None: ...


def stored_or_computed(cache: ArtefactCache, model: str, kind: str, cls: type[A], compute: Callable[[], A]) -> A:
    """A model's artefact from the cache, or computed once and stored (so a rerun recomputes nothing)."""
    stored = cache.get_artefact(model, kind)
    if stored is not None:
        return cls.from_dict(stored)
    value = compute()
    cache.put_artefact(model, kind, value.to_dict())
    return value


def check_correlations(
    corr: Correlations, *, owner: str, name: str, num_labels: int, fingerprint: str | None = None
) -> Correlations:
    """A loaded correlation artefact against the model it is used with: its K and, when both are known, its
    fingerprint (errors name the artefact ``name`` and the fix)."""
    fix = "measure this model's correlations (`labelflip correlations --model ...`), or load the matching file."
    if corr.num_labels != num_labels:
        raise fail(owner, name, f"correlations of a model with K = {num_labels} labels", f"K = {corr.num_labels}", fix)
    if fingerprint is not None and corr.model_fingerprint is not None and corr.model_fingerprint != fingerprint:
        raise fail(
            owner, name, f"correlations of this model ({fingerprint})", f"of model {corr.model_fingerprint}", fix
        )
    return corr


def check_output_path(path: str | Path, *, owner: str, param: str, directory: bool = False) -> Path:
    """Check before any work that ``path`` (a file, or a ``directory``) can be written: it is not the wrong kind
    of thing, and its nearest existing ancestor is a writable directory (missing parents are created later).
    The error says which path and why."""
    path = Path(path)
    kind = "directory" if directory else "file"
    if path.exists():
        if directory and not path.is_dir():
            raise fail(
                owner, param, "a directory (or a path to create one)", str(path), "it is a file; choose another."
            )
        if not directory and path.is_dir():
            raise fail(owner, param, "a file path", str(path), "it is a directory; name a file inside it.")
        if not os.access(path, os.W_OK):
            raise fail(owner, param, f"a writable {kind}", str(path), "it is read-only; choose another path.")
        return path
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise fail(owner, param, f"a {kind} path under a directory", str(path), f"{parent} is a file, not a directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise fail(
            owner, param, f"a {kind} in a writable directory", str(path), f"{parent} is read-only; choose another path."
        )
    return path


def engine_options(method: str, settings: Mapping[str, Any], *, reuse: bool = False) -> dict[str, Any]:
    """The MI-FGSM ``settings`` (a study's ``attack`` section, a preset) that differ from :data:`ENGINE_DEFAULTS`,
    for a method built on the MI-FGSM engine (MI-FGSM, SLAM, the subset attacks); other methods (the minimum-norm
    baselines) take none. Defaults are never passed, so the default configuration builds attacks exactly as
    before the settings existed. ``reuse`` adds ``reuse=True`` (shared weight-free trajectories, bit-identical;
    see :class:`~labelflip.attacks.MIFGSM`) for those methods."""
    cls = parse_attack(method).entry.factory
    if not (isinstance(cls, type) and issubclass(cls, (MIFGSM, SubsetAttack))):
        return {}
    options = {k: v for k, v in settings.items() if k in ENGINE_DEFAULTS and v != ENGINE_DEFAULTS[k]}
    return {**options, "reuse": True} if reuse else options


def _phase(progress: Progress | None, label: str) -> Callable[[int, int], None] | None:
    return None if progress is None else (lambda done, total: progress(label, done, total))


def _tensor_hash(t: Tensor) -> str:
    a = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{a.dtype}{tuple(a.shape)}".encode())
    h.update(a.numpy().tobytes())
    return h.hexdigest()


def probe_identity(
    kind: str, model: MultiLabelModel, fingerprint: str, images: Tensor, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """What a probe's result depends on, as a JSON-able mapping (the probe cache's key): the model (fingerprint,
    device, dtype), the probe images (sha256 of their values), the probe ``settings`` and the code
    (:func:`~labelflip.study.store.engine_hash`)."""
    param = next(iter(model.parameters()), None)
    return {
        "kind": kind,
        "fingerprint": fingerprint,
        "device": str(param.device) if param is not None else "none",
        "dtype": str(param.dtype).replace("torch.", "") if param is not None else "none",
        "images": _tensor_hash(images),
        "settings": {
            k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v) for k, v in settings.items()
        },
        "engine_hash": engine_hash(),
    }


def _cached(kind: str, cls: type[A], identity: Callable[[], dict[str, Any]] | None, compute: Callable[[], A]) -> A:
    cache = active_probe_cache()
    if cache is None or identity is None:
        return compute()
    return cache.get_or_compute(kind, identity(), cls, compute)


def _profile_progress(
    progress: Progress | None, label: str, cap: int, every: int
) -> Callable[[int, float], None] | None:
    """Steps probed of at most ``cap`` (a probe stops earlier once flips saturate), every ``every`` steps."""
    if progress is None:
        return None
    return lambda step, _flips: progress(label, step, cap) if step % every == 0 else None


def measure_profile(
    model: MultiLabelModel,
    data: DatasetSplits,
    *,
    samples: int,
    seed: int,
    interval: int = 10,
    order: int = 4,
    curve: str = "max",
    norm: str = "linf",
    max_steps: int = DEFAULT_MAX_STEPS,
    min_points: int | None = None,
    engine: Mapping[str, Any] | None = None,
    fingerprint: str | None = None,
    exclude: Tensor | None = None,
    owner: str = "study spec",
    progress: Progress | None = None,
    label: str = "profile probe",
) -> Profile:
    """The flip profile probed on ``samples`` validation images selected with seed ``seed + 1`` (skipping
    ``exclude``); ``engine``: MI-FGSM settings of the probe (e.g. the ``paper`` preset's). ``progress`` gets
    ``(label, steps probed, max_steps)`` every 10 measurements. Read from / written to the active probe cache
    (when one is active and ``fingerprint`` is known)."""
    idx = probe_indices(data, samples, seed, exclude=exclude, owner=owner)
    x = data.val.x[idx]
    settings = {"interval": interval, "order": order, "curve": curve, "norm": norm, "max_steps": max_steps,
                "min_points": min_points, "seed": seed + PROFILE_SEED_OFFSET, **{f"engine.{k}": v for k, v in sorted(
                    (engine or {}).items())}}  # fmt: skip
    tick = _profile_progress(progress, label, max_steps, 10 * interval)

    def compute() -> Profile:
        prof = probe_profile(
            model,
            x,
            interval=interval,
            order=order,
            curve=curve,  # type: ignore[arg-type]
            norm=norm,  # type: ignore[arg-type]
            max_steps=max_steps,
            min_points=min_points,
            engine=engine,
            model_fingerprint=fingerprint,
            seed=seed + PROFILE_SEED_OFFSET,
            progress=tick,
        )
        steps = round(prof.eps[-1] / prof.alpha)
        if progress is not None and steps % (10 * interval) != 0:  # the last point, unless just reported
            progress(label, steps, max_steps)
        return prof

    ident = None if fingerprint is None else (lambda: probe_identity("profile", model, fingerprint, x, settings))
    return _cached("profile", Profile, ident, compute)


def measure_correlations_for(
    model: MultiLabelModel,
    data: DatasetSplits,
    *,
    samples: int,
    seed: int,
    eps: float,
    flipdown: bool = False,
    fingerprint: str | None = None,
    progress: Progress | None = None,
    label: str = "correlations",
    exclude: Tensor | None = None,
    owner: str = "study spec",
) -> Correlations:
    """The flip-up matrix (and optionally the measured flip-down matrix) on ``samples`` validation images
    selected with seed ``seed + 2`` (skipping ``exclude``)."""
    probe_seed = seed + CORRELATION_SEED_OFFSET
    idx = select_samples(data.val, samples, probe_seed, owner=owner, param="correlations.samples", exclude=exclude)
    x, y = data.val.x[idx], (data.val.y[idx] if flipdown else None)

    def compute() -> Correlations:
        return _measure_correlations(
            model,
            x,
            eps=eps,
            y=y,
            measure_flipdown=flipdown,
            label_names=list(data.label_names),
            model_fingerprint=fingerprint,
            seed=probe_seed,
            progress=_phase(progress, label),
        )

    settings = {"eps": eps, "flipdown": flipdown, "seed": probe_seed, "labels": "\x1f".join(data.label_names),
                "targets": None if y is None else _tensor_hash(y)}  # fmt: skip
    ident = None if fingerprint is None else (lambda: probe_identity("correlations", model, fingerprint, x, settings))
    return _cached("correlations", Correlations, ident, compute)


def measure_attackability(
    model: MultiLabelModel,
    data: DatasetSplits,
    *,
    per_label: int,
    eps: float,
    images: int,
    fingerprint: str | None = None,
    progress: Progress | None = None,
    label: str = "attackability",
) -> Attackability:
    """Per-label attackability (Table II) on the first ``images`` training images."""
    n = min(images, len(data.train))
    return label_attackability(
        model,
        data.train.x[:n],
        data.train.y[:n],
        eps=eps,
        n_per_label=per_label,
        frequency=data.train.label_frequencies(),
        label_names=list(data.label_names),
        model_fingerprint=fingerprint,
        progress=_phase(progress, label),
    )
