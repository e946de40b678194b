"""Loading what a CLI command needs, after checking every option that can be checked without work.

Every command validates its options before any data is generated or any model trained (issue 16): model names
against the registry, sample counts against the built-in dataset's split sizes (known from its config,
:class:`~labelflip.data.SyntheticConfig`, without generating it), artefact files (existence and format) before
the model loads. Errors name the option the user typed (``--model``, ``--samples``, ``--profile``), never an
internal function.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeVar

from labelflip._validation import LabelflipError, did_you_mean, fail
from labelflip.analysis import Artefact
from labelflip.cli.common import err_console, progress_bar
from labelflip.data import DatasetSplits, SyntheticConfig, create_dataset
from labelflip.models import MODELS, MultiLabelModel, create_model

__all__ = [
    "check_batch_size",
    "check_budget_option",
    "check_model_name",
    "check_samples",
    "load_artefact_option",
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
    """A registered model name, or an error naming ``option`` with the list and a 'did you mean'."""
    if name not in MODELS:
        names = MODELS.list()
        raise fail(
            owner,
            option,
            "a registered model: " + ", ".join(names),
            name,
            "see `labelflip models`." + did_you_mean(name, names),
        )
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


def load_named_model(name: str, owner: str = "labelflip") -> tuple[MultiLabelModel, str, DatasetSplits]:
    """``(wrapped model, fingerprint, dataset)`` for a registered model name, training it first if needed (the
    name is checked before the dataset is generated)."""
    check_model_name(name, owner)
    data = create_dataset("synthetic")
    with progress_bar() as prog:
        task = prog.add_task(f"{name}: load or train", total=None)
        built: Any = create_model(name, data=data, progress=lambda *_: prog.advance(task))
    if not err_console.is_terminal:
        err_console.print(f"{name}: ready ({built.fingerprint})")
    return MultiLabelModel(built.module), built.fingerprint, data
