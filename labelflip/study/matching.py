"""Which dataset a study or command uses, and whether a model fits it, checked before any work.

* :func:`split_on_disk` / :func:`attacked_role`: a real dataset (``coco``, ``voc``, ``nuswide``, ``csv``,
  ``folder``: its registry entry has a ``split`` parameter) names an **on-disk** split (``val2014``); the loader
  returns it as the ``test`` role, the ``val`` role feeds the flip-profile and correlation probes and ``train``
  the co-occurrence. The built-in ``synthetic`` data (and other generated datasets) name the role itself:
  ``train``, ``val`` or ``test``.
* :func:`open_dataset`: a study spec's ``dataset`` section (``name``, ``split``, ``path``, ``config``) -> the
  :class:`~labelflip.data.DatasetSplits`.
* :func:`check_model_fits`: a model's label count K, input shape and label names against the dataset (one
  forward pass on one image); the error names both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from labelflip._validation import LabelflipError
from labelflip.data import DATASETS, DatasetSplits, create_dataset
from labelflip.models import MultiLabelModel

__all__ = [
    "GENERATED_ROLES",
    "attacked_role",
    "check_model_fits",
    "dataset_description",
    "open_dataset",
    "same_names",
    "split_on_disk",
]

GENERATED_ROLES = ("train", "val", "test")


def split_on_disk(name: str) -> bool:
    """Whether the registered dataset ``name`` takes an on-disk split name (its entry has a ``split`` parameter)."""
    return DATASETS.get(name).param("split") is not None


def attacked_role(dataset: Mapping[str, Any]) -> str:
    """The :class:`DatasetSplits` attribute holding the attacked images: ``"test"`` for a real dataset (its loader
    maps the on-disk ``split`` there), the ``split`` itself (``train``/``val``/``test``) for generated data."""
    return "test" if split_on_disk(str(dataset["name"])) else str(dataset.get("split") or "test")


def open_dataset(dataset: Mapping[str, Any]) -> DatasetSplits:
    """Build a study spec's ``dataset`` section: ``create_dataset(name, path=..., split=..., **config)`` (``path``
    and the on-disk ``split`` only where given and taken)."""
    name = str(dataset["name"])
    options = dict(dataset.get("config") or {})
    if dataset.get("path") is not None:
        options["path"] = str(dataset["path"])
    if split_on_disk(name) and dataset.get("split") is not None:
        options["split"] = dataset["split"]
    entry = DATASETS.get(name)
    if any(p.required and p.name not in options for p in entry.params):
        return create_dataset(name, **options)  # the registry's error names the missing parameter
    defaults = {p.name: p.default for p in entry.params if not p.required}
    return entry.factory(**{**entry.fixed, **defaults, **options})


def dataset_description(data: DatasetSplits, role: str = "test") -> str:
    """``"dataset 'coco' (split val2014 at /data/coco)"``-style words for messages."""
    cfg = getattr(data, "config", None)
    name = getattr(cfg, "name", None) or ("synthetic" if type(cfg).__name__ == "SyntheticConfig" else "dataset")
    splits = getattr(cfg, "splits", None)
    where = f"split {splits.get(role, role)}" if isinstance(splits, dict) else f"{role} split"
    root = getattr(cfg, "root", None)
    return f"dataset {name!r} ({where}{f' at {root}' if root else ''})"


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower())


def same_names(a: Sequence[str], b: Sequence[str]) -> bool:
    """Label names equal up to case, spaces, ``_`` and ``-`` (``"traffic_light"`` = ``"Traffic light"``)."""
    return len(a) == len(b) and all(_norm(x) == _norm(y) for x, y in zip(a, b, strict=True))


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    i = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if _norm(x) != _norm(y))
    return f"label {i} is {a[i]!r} for the model and {b[i]!r} in the dataset"


def check_model_fits(
    model: MultiLabelModel,
    data: DatasetSplits,
    *,
    name: str,
    role: str = "test",
    input_size: Sequence[int] | None = None,
    label_names: Sequence[str] | None = None,
    names_from: str = "",
) -> None:
    """Refuse a model that does not fit the dataset, before any attack or probe runs.

    Checks, in order: the model's declared ``input_size`` ``(C, H, W)`` against the dataset's image shape; its K
    (``model.num_labels`` when known, else the output of one forward pass on the first image of ``role``, under
    ``no_grad`` in eval mode, modes restored) against the dataset's; and its ``label_names`` (when it carries any;
    ``names_from`` says where they came from) against the dataset's, up to case and separators. A forward that
    fails is reported with both shapes. Raises :class:`LabelflipError` naming the model and the dataset.
    """
    part = getattr(data, role)
    k_data = len(data.label_names)
    shape = tuple(int(s) for s in part.x.shape[1:])
    about = f"the {dataset_description(data, role)} has K = {k_data} labels and {_shape(shape)} images"
    if input_size is not None and tuple(int(s) for s in input_size) != shape:
        size_fix = (
            f"resize the dataset to the model's resolution (dataset option image_size={int(input_size[-1])}; in a "
            f"study: dataset.config.image_size: {int(input_size[-1])})"
            if len(input_size) == 3 and input_size[1] == input_size[2] and tuple(input_size[:1]) == shape[:1]
            else "use the dataset the model was trained for"
        )
        raise LabelflipError(
            f"Model {name!r} takes {_shape(input_size)} images, but {about}. Fix: {size_fix}, or pick the model "
            "that matches the dataset."
        )
    k_model = model.num_labels
    if k_model is None or input_size is None:  # probe: K of a user model, and whether it accepts these images
        modes = [m.training for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                out = model(part.x[:1].to(device=model.device, dtype=model.dtype))
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LabelflipError(
                f"Model {name!r} cannot process the dataset's images: {about}, and a forward pass on one of them "
                f"fails ({type(exc).__name__}: {first}). Fix: use the dataset (and image_size) the model was "
                "trained for, or a model that takes these images."
            ) from exc
        finally:
            for m, mode in zip(model.modules(), modes, strict=True):
                m.training = mode
        k_model = int(out.shape[-1]) if out.dim() == 2 else -1
        if out.dim() != 2:
            raise LabelflipError(
                f"Model {name!r} returns outputs of shape {tuple(out.shape)} for one image; labelflip needs logits "
                f"(N, K) with K = {k_data} for the {dataset_description(data, role)}. Fix: return (N, K) logits."
            )
    if k_model != k_data:
        raise LabelflipError(
            f"Model {name!r} has K = {k_model} outputs, but {about}. Fix: use the dataset the model was trained on "
            f"(its {k_model} labels in the model's order), or a model with {k_data} outputs."
        )
    if label_names is not None and not same_names(label_names, data.label_names):
        where = f" ({names_from})" if names_from else ""
        raise LabelflipError(
            f"Model {name!r} names its {k_model} outputs{where} differently from the {dataset_description(data, role)}"
            f": {_first_difference(label_names, data.label_names)}. Fix: use the dataset the model was trained on, "
            "or, if they are the same classes under other names in the same order, give the model the dataset's "
            "names (a study's model entry: labels: [...])."
        )
