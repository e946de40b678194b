"""Validation of a study spec's ``models`` and ``dataset`` sections (used by :mod:`labelflip.study.spec`).

``models`` entries: a registered name (``asl-cnn``, ``q2l-r101-448:input_norm=none``) or a mapping::

    - {name: q2l-r101-448, checkpoint: /m/checkpoint.pkl, sha256: ...}   # a registered model and its checkpoint
    - name: mine                                                        # your own model
      factory: mypkg.models:build          # "module:callable" or "file.py:callable" returning an nn.Module
      checkpoint: mine.pth                 # any format labelflip.models.loading.load_state reads (or weights:)
      labels: [cat, dog]                   # optional: names of the outputs (else the checkpoint's, else the data's)
      trust_pickle: false                  # allow a full (code-running) unpickle of a trusted torch.save file
      mean: [0.485, 0.456, 0.406]          # optional normalisation inside the wrapper
      std: [0.229, 0.224, 0.225]

``dataset``: ``{name: synthetic, split: test}`` (a role: train / val / test), or a real dataset
``{name: coco, path: /data/coco, split: val2014}`` / ``{name: folder, path: photos/, labels: labels.csv}`` whose
``split`` is its on-disk split (the attacked images; default: the dataset's own default). Dataset options go under
``config`` (``{image_size: 448, cache: true}``) or directly in the section; they are stored under ``config``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from labelflip._validation import did_you_mean, fail
from labelflip.data import DATASETS, list_datasets

__all__ = ["NEW_MODEL_KEYS", "ModelEntry", "check_dataset", "check_floats", "check_models", "model_dict"]

_OWNER = "study spec"


@dataclass(frozen=True)
class ModelEntry:
    """A model of the study: a registered name (and its checkpoint), or a user factory with an optional
    checkpoint, label names and wrapper options (see the module docstring)."""

    name: str
    factory: str | None = None
    weights: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    threshold: float = 0.5
    checkpoint: str | None = None
    labels: list[str] | None = None
    trust_pickle: bool = False
    sha256: str | None = None


NEW_MODEL_KEYS = {"checkpoint": None, "labels": None, "trust_pickle": False, "sha256": None}
"""Model keys added after studies were stored: written (and hashed) only when set, so old studies still resume."""
_KEYS = tuple(f.name for f in fields(ModelEntry))


def model_dict(entry: ModelEntry) -> dict[str, Any]:
    """The entry as stored in a manifest / hashed: the new keys only when they differ from their defaults."""
    return {k: v for k, v in asdict(entry).items() if k not in NEW_MODEL_KEYS or v != NEW_MODEL_KEYS[k]}


def check_models(value: Any) -> list[ModelEntry]:
    """The ``models`` section as :class:`ModelEntry` objects (names unique; keys and their types checked)."""
    if not isinstance(value, list) or not value:
        raise fail(_OWNER, "models", "a non-empty list of registered names or {name, factory, ...} entries", value)
    out = []
    for item in value:
        if isinstance(item, str):
            out.append(ModelEntry(name=item))
            continue
        if not (isinstance(item, Mapping) and isinstance(item.get("name"), str)):
            raise fail(_OWNER, "models", "registered names or mappings with a 'name'", item)
        unknown = sorted(set(item) - set(_KEYS))
        if unknown:
            raise fail(
                _OWNER, f"models.{unknown[0]}", "a model key: " + ", ".join(_KEYS), unknown[0],
                "check the spelling." + did_you_mean(str(unknown[0]), _KEYS),
            )  # fmt: skip
        for key in ("factory", "weights", "checkpoint", "sha256"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise fail(_OWNER, f"models.{key}", "a string", item[key])
        if item.get("weights") is not None and item.get("checkpoint") is not None:
            raise fail(_OWNER, "models.checkpoint", "checkpoint or weights (the same thing), not both", item)
        labels = item.get("labels")
        if labels is not None and (
            not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels)
        ):
            raise fail(_OWNER, "models.labels", "a list of label names, one per model output", labels)
        if not isinstance(item.get("trust_pickle", False), bool):
            raise fail(_OWNER, "models.trust_pickle", "true or false", item["trust_pickle"])
        out.append(ModelEntry(**{k: item[k] for k in item}))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise fail(_OWNER, "models", "unique names", names)
    return out


def check_floats(value: Any, param: str, *, positive: bool = False) -> list[float]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise fail(_OWNER, param, "a non-empty list of numbers", value)
    if not all(math.isfinite(v) for v in value):  # YAML's .nan / .inf are floats: refuse them here, by spec key
        raise fail(_OWNER, param, "finite numbers (no .nan or .inf)", value, "give every budget as a number.")
    if any(v < 0 or (positive and v == 0) for v in value):
        raise fail(_OWNER, param, "positive numbers" if positive else "non-negative numbers", value)
    return [float(v) for v in value]


def _accepted(entry: Any) -> tuple[list[str], bool]:
    """Option names a dataset factory takes, and whether it takes any other (``**options``)."""
    params = inspect.signature(entry.factory).parameters.values()
    named = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [*named, *(p.name for p in entry.params)], any(p.kind is p.VAR_KEYWORD for p in params)


def check_dataset(ds: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical ``dataset`` section ``{name, split, config[, path]}`` (options given directly in the section
    move under ``config``; ``split`` defaults to ``test`` for generated data, to the loader's default otherwise)."""
    name = ds.get("name")
    if not isinstance(name, str) or name not in DATASETS:
        raise fail(
            _OWNER, "dataset.name", "a registered dataset: " + ", ".join(list_datasets()), name,
            "see `labelflip datasets`." + did_you_mean(str(name), list_datasets()),
        )  # fmt: skip
    entry = DATASETS.get(name)
    config = ds.get("config") or {}
    if not isinstance(config, Mapping):
        raise fail(_OWNER, "dataset.config", "a mapping of the dataset's options", config)
    config = {**dict(config), **{k: v for k, v in ds.items() if k not in ("name", "split", "config", "path")}}
    out: dict[str, Any] = {"name": entry.name, "split": ds.get("split"), "config": config}
    on_disk = entry.param("split") is not None
    if not on_disk:
        out["split"] = out["split"] if out["split"] is not None else "test"
        if out["split"] not in ("train", "val", "test"):
            raise fail(
                _OWNER, "dataset.split", f"one of train, val, test (the {name} dataset's splits)", ds.get("split")
            )
    else:
        split = out["split"] if out["split"] is not None else entry.param("split").default
        if not isinstance(split, str):
            raise fail(_OWNER, "dataset.split", f"the name of a split of the {name} dataset on disk", split)
        out["split"] = split
    path = ds.get("path", config.pop("path", None))
    path_param = entry.param("path")
    if path is not None:
        if path_param is None:
            raise fail(_OWNER, "dataset.path", f"no path: the {name} dataset is generated", path)
        if not isinstance(path, str) or not path:
            raise fail(_OWNER, "dataset.path", "a path string", path)
        out["path"] = path
    elif path_param is not None and path_param.required:
        raise fail(_OWNER, "dataset.path", f"the {name} dataset's location on disk", None, "e.g. path: /data/coco")
    accepted, open_ended = _accepted(entry)
    for key in config:
        if key in ("split", "name"):
            raise fail(_OWNER, f"dataset.config.{key}", f"given as dataset.{key}, not under config", key)
        if not open_ended and key not in accepted:
            raise fail(
                _OWNER, f"dataset.config.{key}", f"an option of the {name} dataset: " + ", ".join(accepted), key,
                "check the spelling." + did_you_mean(str(key), accepted),
            )  # fmt: skip
    return out


def resolve_beside(ds: dict[str, Any], base: Path) -> dict[str, Any]:
    """A relative ``dataset.path`` in a YAML file is relative to the file."""
    if ds.get("path") is not None and not Path(ds["path"]).expanduser().is_absolute():
        return {**ds, "path": str(base / ds["path"])}
    return ds
