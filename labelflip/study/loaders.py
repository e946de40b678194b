"""Loading a study's (or a command's) models: registered names with their checkpoints, and user factories.

:func:`load_model` returns the wrapped model, its fingerprint and known metrics after checking it against the
dataset (:func:`labelflip.study.matching.check_model_fits`): K, input shape and label names, before any work.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labelflip._validation import LabelflipError, fail
from labelflip.data import DatasetSplits
from labelflip.models import MultiLabelModel, create_model

__all__ = ["fingerprint_model", "import_factory", "load_entry", "load_model"]

Progress = Callable[[str, int, int], None]


def import_factory(ref: str, *, owner: str = "study spec", param: str = "models.factory") -> Callable[..., nn.Module]:
    """``"pkg.module:callable"`` or ``"path/to/file.py:callable"`` (the file's directory is importable while it
    runs, so it can import modules beside it)."""
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise fail(owner, param, "'module:callable' or 'file.py:callable'", ref)
    try:
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location(f"labelflip_user_{abs(hash(target))}", target)
            if spec is None or spec.loader is None:
                raise ImportError(target)
            module = importlib.util.module_from_spec(spec)
            beside = str(Path(target).resolve().parent)
            sys.path.insert(0, beside)
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(beside)
        else:
            module = importlib.import_module(target)
        return getattr(module, attr)
    except (ImportError, AttributeError, FileNotFoundError) as exc:
        raise fail(owner, param, "an importable callable", ref, f"{type(exc).__name__}: {exc}") from exc


def fingerprint_model(model: MultiLabelModel, base: str = "") -> str:
    """``base`` + a sha256 (16 hex) of what decides the model's outputs: every ``state_dict`` tensor (name, dtype,
    shape and bytes, in key order) and the wrapper's options (bounds, mean/std, thresholds, output kind)."""
    h = hashlib.sha256()
    for key, value in model.module.state_dict().items():
        t = value.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    norm = (model.mean.tolist(), model.std.tolist()) if model._normalise else None
    options = [model.bounds, norm, model.threshold.tolist(), model.output_kind, model.num_labels]
    h.update(repr(options).encode())
    digest = h.hexdigest()[:16]
    return f"{base}#{digest}" if base else digest


def _label_list(value: Any, k_hint: int | None, owner: str, param: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise fail(owner, param, "a list of label names, one per model output", value)
    return list(value)


def load_model(
    name: str,
    data: DatasetSplits,
    *,
    factory: str | None = None,
    weights: str | None = None,
    checkpoint: str | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    threshold: float = 0.5,
    labels: list[str] | None = None,
    trust_pickle: bool = False,
    sha256: str | None = None,
    role: str = "test",
    check: bool = True,
    progress: Progress | None = None,
    owner: str = "study spec",
) -> tuple[MultiLabelModel, str, dict[str, float]]:
    """A wrapped model, its fingerprint and known quality metrics, checked against ``data`` before any work.

    ``name`` is a registered model spec (``asl-cnn``, trained if needed; ``q2l-r101-448:input_norm=none`` with a
    ``checkpoint``) or, with ``factory`` (``module:callable`` / ``file.py:callable``), a user model whose
    ``checkpoint`` (alias ``weights``) may be in any format :func:`labelflip.models.loading.load_state` reads
    (safetensors; ``torch.save`` files weights-only unless ``trust_pickle``; ``module.`` prefixes stripped;
    ``sha256`` verified). Output names: ``labels``, else the checkpoint's (``idx_to_class``, ``label_names``),
    else the dataset's. With ``check``, :func:`labelflip.study.matching.check_model_fits` refuses a model whose
    K, input shape or label names differ from the dataset's (``role``: the split attacked). The fingerprint is
    the model's name (built-in: its config/code fingerprint; factory: the import string) plus
    :func:`fingerprint_model` of the loaded weights and wrapper."""
    from labelflip.models import MODELS
    from labelflip.models.loading import load_into, load_state
    from labelflip.study.matching import check_model_fits, dataset_description

    if weights is not None and checkpoint is not None and weights != checkpoint:
        raise fail(owner, "models.checkpoint", "one checkpoint (weights is its older name)", [checkpoint, weights])
    checkpoint = checkpoint if checkpoint is not None else weights
    given = _label_list(labels, None, owner, "models.labels")
    if factory is None:
        entry = MODELS.get(name.partition(":")[0])
        config = getattr(data, "config", None)  # stand-in data (tests) may have none
        if entry.meta.get("builtin") and config is not None and type(config).__name__ != "SyntheticConfig":
            raise LabelflipError(
                f"Model {name!r} is a built-in model trained on the built-in synthetic data (24 labels, 32x32); it "
                f"cannot be used on the {dataset_description(data, role)}. Fix: use dataset synthetic, or a model "
                "for this dataset (a registered one with its checkpoint, or your own factory)."
            )
        if checkpoint is None and entry.meta.get("checkpoint_required"):
            options: dict[str, Any] = {}
        else:
            options = {"checkpoint": checkpoint, "trust_pickle": trust_pickle, "sha256": sha256} if checkpoint else {}
        if given is not None and not entry.meta.get("builtin"):
            options["label_names"] = given

        def on_epoch(info: dict[str, Any]) -> None:
            if progress is not None:
                progress(f"{name} training", int(info["epoch"]), int(info["epochs"]))

        built = create_model(name, data=data, progress=on_epoch, **options)
        wrapped = MultiLabelModel(built.module, threshold=threshold)
        if check and data is not None:
            names = list(getattr(built, "label_names", None) or [])
            own = [n for n in names if not re.fullmatch(r"label_\d+", n)]
            check_model_fits(
                wrapped,
                data,
                name=name,
                role=role,
                input_size=None if entry.meta.get("builtin") else entry.meta.get("input_size"),
                label_names=given or (own if own and len(own) == len(names) else None),
                names_from="given in labels" if given else "from the checkpoint",
            )
        return wrapped, fingerprint_model(wrapped, built.fingerprint), dict(built.metrics)
    module = import_factory(factory, owner=owner)()
    if not isinstance(module, nn.Module):
        raise fail(owner, "models.factory", "a callable returning an nn.Module", type(module).__name__)
    stored = None
    if checkpoint is not None:
        state, meta = load_state(checkpoint, trust_pickle=trust_pickle, sha256=sha256)
        load_into(module, state)
        stored = meta.get("label_names")
    wrapped = MultiLabelModel(module, mean=mean, std=std, threshold=threshold)
    if check and data is not None:
        check_model_fits(
            wrapped,
            data,
            name=name,
            role=role,
            input_size=getattr(module, "input_size", None),
            label_names=given or stored,
            names_from="given in labels" if given else f"stored in {checkpoint}",
        )
    return wrapped, fingerprint_model(wrapped, f"factory:{factory}"), {}


def load_entry(
    entry: Any, data: DatasetSplits, role: str = "test", progress: Progress | None = None
) -> tuple[MultiLabelModel, str, dict[str, float]]:
    """:func:`load_model` for a study's :class:`~labelflip.study.spec.ModelEntry` (every field passed)."""
    return load_model(
        entry.name,
        data,
        factory=entry.factory,
        weights=entry.weights,
        checkpoint=getattr(entry, "checkpoint", None),
        mean=entry.mean,
        std=entry.std,
        threshold=entry.threshold,
        labels=getattr(entry, "labels", None),
        trust_pickle=bool(getattr(entry, "trust_pickle", False)),
        sha256=getattr(entry, "sha256", None),
        role=role,
        progress=progress,
    )
