"""Loading what a CLI command needs, after checking every option that can be checked without work.

Every command validates its options before any data is generated or any model trained (issue 16): model names
against the registry, sample counts against the built-in dataset's split sizes (known from its config,
:class:`~labelflip.data.SyntheticConfig`, without generating it), artefact files (existence and format) before
the model loads. Errors name the option the user typed (``--model``, ``--samples``, ``--profile``), never an
internal function.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, TypeVar

from labelflip._registry import Spec
from labelflip._validation import LabelflipError, check_choice, did_you_mean, fail
from labelflip.analysis import Artefact
from labelflip.cli.common import err_console, progress_bar
from labelflip.data import DATASETS, DatasetSplits, SyntheticConfig, create_dataset
from labelflip.models import MODELS, MultiLabelModel
from labelflip.study.loaders import load_model
from labelflip.study.matching import GENERATED_ROLES, split_on_disk

__all__ = [
    "check_batch_size",
    "check_budget_option",
    "check_model_name",
    "check_samples",
    "dataset_option",
    "load_artefact_option",
    "load_inputs",
    "load_named_model",
    "parse_number",
    "split_sizes",
]

A = TypeVar("A", bound=Artefact)


def split_sizes() -> dict[str, int]:
    """Sizes of the built-in dataset's splits (the one every CLI command uses), from its config: nothing is
    generated."""
    cfg = SyntheticConfig()
    return {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}


def parse_number(text: str) -> float:
    """A number as people write budgets: ``0.031``, ``8/255`` (a ratio of two numbers). ValueError otherwise."""
    num, sep, den = text.partition("/")
    if not sep:
        return float(text)
    value = float(num) / float(den)  # ZeroDivisionError for x/0
    return value


def check_model_name(name: str, owner: str, option: str = "--model") -> str:
    """A registered model spec (``asl-cnn``, ``q2l-r101-448:input_norm=none``), or an error naming ``option``
    with the list and a 'did you mean'."""
    base = name.partition(":")[0] if isinstance(name, str) else name
    if base not in MODELS:
        names = MODELS.list()
        raise fail(
            owner,
            option,
            "a registered model: " + ", ".join(names),
            name,
            "see `labelflip models`." + did_you_mean(str(base), names),
        )
    try:
        MODELS.parse(name)
    except LabelflipError as exc:
        raise LabelflipError(f"{owner} {option}: {exc}") from exc
    return name


def check_samples(
    count: int, split: str, owner: str, option: str, *, low: int = 1, reserved: int = 0, reserved_for: str = ""
) -> int:
    """``low <= count <= size of split - reserved`` (``reserved`` images of the split kept for ``reserved_for``)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < low:
        raise fail(owner, option, f"an int >= {low}", count)
    size = split_sizes()[split] - reserved
    if count > size:
        kept = f" minus {reserved} kept for {reserved_for} = {size}" if reserved else ""
        expected = f"at most the {split} split's size {split_sizes()[split]}{kept}"
        raise fail(owner, option, expected, count, f"ask for {size} or fewer.")
    return count


PROBE_DEFAULT = 100
"""Probe images when ``--probe-samples`` is left out (the paper's 100), fewer when the split has fewer."""
PROBE_HELP = f"validation images for the profile / correlation probes (default: {PROBE_DEFAULT}, or all if fewer)"


def probe_count(requested: int | None, data: DatasetSplits, exclude: Any, owner: str) -> int:
    """The number of probe images: the validation images not among the evaluated samples (``exclude``, a sequence
    of indices or None) are available; ``requested`` must fit in them (an error naming ``--probe-samples``, never a
    silent cut), and left out it is :data:`PROBE_DEFAULT` or all the available ones when fewer."""
    available = len(data.val) - (0 if exclude is None else len(exclude))
    if requested is None:
        return min(PROBE_DEFAULT, available)
    if requested > available:
        held = "" if exclude is None else f" minus the {len(exclude)} evaluated samples"
        raise fail(owner, "--probe-samples", f"at most the validation split's {len(data.val)} images{held} = "
                   f"{available}", requested, f"ask for {available} or fewer.")  # fmt: skip
    return requested


def check_batch_size(batch_size: int | None, owner: str, option: str = "--batch-size") -> int | None:
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise fail(owner, option, "an int >= 1 (samples per attack batch), or left out for all at once", batch_size)
    return batch_size


def check_budget_option(value: float, owner: str, option: str) -> float:
    """A finite budget > 0 in pixel units (single-label attacks of the analyses)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise fail(owner, option, "a finite budget > 0 in pixel units", value, f"e.g. {option} 0.005 (or 2/255).")
    return float(value)


def load_artefact_option(cls: type[A], path: Path | None, owner: str, option: str) -> A | None:
    """Read an artefact file given as ``option`` before any model loads; errors name the option and the file."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise fail(owner, option, f"an existing {cls.__name__.lower()} JSON file", str(path), cls.CREATE_HINT or None)
    try:
        return cls.load(path)
    except LabelflipError as exc:
        raise LabelflipError(f"{owner} {option} {path}: {exc}") from exc


def dataset_text(text: str) -> tuple[str, dict[str, Any]]:
    """Split ``folder:photos,labels=labels.csv`` into the registry spec (``folder:photos``) and the loader's other
    options (``{"labels": "labels.csv"}``: values parsed as YAML scalars)."""
    import yaml

    name, sep, args = text.strip().partition(":")
    if not sep or name.strip().lower() not in DATASETS:
        return text, {}
    entry = DATASETS.get(name)
    keep, extra = [], {}
    for item in (a.strip() for a in args.split(",") if a.strip()):
        key, eq, raw = item.partition("=")
        if eq and entry.param(key.strip()) is None:
            try:
                extra[key.strip()] = yaml.safe_load(raw.strip())
            except yaml.YAMLError:
                extra[key.strip()] = raw.strip()
        else:
            keep.append(item)
    return f"{name}:{','.join(keep)}" if keep else name, extra


def dataset_option(text: str, split: str | None, owner: str) -> tuple[Spec, str]:
    """Parse ``--dataset`` (``synthetic``, ``coco:/data/coco``, ``folder:photos,labels=labels.csv``) and check
    ``--split`` before any work: the role ``train``/``val``/``test`` for generated data; any on-disk split name
    for a real dataset (attacked as its ``test`` role). Returns ``(spec, role)``."""
    try:
        spec = DATASETS.parse(dataset_text(text)[0])
    except LabelflipError as exc:
        raise LabelflipError(f"{owner} --dataset: {exc}") from exc
    if split_on_disk(spec.name):
        if split is not None and (not isinstance(split, str) or not split.strip()):
            raise fail(owner, "--split", f"the name of a split of the {spec.name} dataset on disk", split)
        return spec, "test"
    role = split or "test"
    check_choice(owner, "--split", role, GENERATED_ROLES)
    return spec, role


def open_dataset_option(text: str, spec: Spec, split: str | None, model: str) -> DatasetSplits:
    """The dataset ``--dataset`` names; a real dataset is resized to the model's input size unless the spec sets
    ``image_size``, and reads ``--split`` as its on-disk split."""
    core, options = dataset_text(text)
    if split_on_disk(spec.name):
        if split is not None:
            options["split"] = split
        size = MODELS.get(model.partition(":")[0]).meta.get("input_size")
        given = re.search(r"(^|[:,])\s*image_size\s*=", text)
        if spec.entry.param("image_size") is not None and not given and size and len(size) == 3 and size[1] == size[2]:
            options["image_size"] = int(size[1])
    with progress_bar() as prog:
        prog.add_task(f"{spec.name}: reading the dataset", total=None)
        return create_dataset(core, **options)


def load_inputs(
    name: str,
    owner: str = "labelflip",
    *,
    dataset: str = "synthetic",
    split: str | None = None,
    checkpoint: Path | None = None,
    trust_pickle: bool = False,
    sha256: str | None = None,
) -> tuple[MultiLabelModel, str, DatasetSplits, str]:
    """``(wrapped model, fingerprint, dataset, role)``: the dataset ``--dataset``/``--split`` name (``role``: the
    :class:`DatasetSplits` attribute attacked) and the model ``--model``/``--checkpoint`` names, trained first if
    it is a built-in one, checked against the dataset (K, input shape, label names) before any work."""
    check_model_name(name, owner)
    spec, role = dataset_option(dataset, split, owner)
    if checkpoint is not None and not Path(checkpoint).expanduser().is_file():
        raise fail(owner, "--checkpoint", "an existing checkpoint file", str(checkpoint), "check the path.")
    if checkpoint is None and MODELS.get(name.partition(":")[0]).meta.get("checkpoint_required"):
        source = MODELS.get(name.partition(":")[0]).meta.get("checkpoint_source", "its source")
        raise fail(owner, "--checkpoint", f"the checkpoint file of {name} (nothing is downloaded)", None, source)
    data = open_dataset_option(dataset, spec, split, name)
    with progress_bar() as prog:
        task = prog.add_task(f"{name}: load or train", total=None)
        wrapped, fingerprint, _ = load_model(
            name,
            data,
            checkpoint=None if checkpoint is None else str(checkpoint),
            trust_pickle=trust_pickle,
            sha256=sha256,
            role=role,
            progress=lambda *_: prog.advance(task),
            owner=owner,
        )
    if not err_console.is_terminal:
        err_console.print(f"{name}: ready ({fingerprint})")
    return wrapped, fingerprint, data, role


def load_named_model(name: str, owner: str = "labelflip") -> tuple[MultiLabelModel, str, DatasetSplits]:
    """``(wrapped model, fingerprint, dataset)`` for a registered model on the built-in dataset."""
    wrapped, fingerprint, data, _ = load_inputs(name, owner)
    return wrapped, fingerprint, data
