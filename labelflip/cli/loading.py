"""Loading a named model for a CLI command (with a progress line while a built-in model trains)."""

from __future__ import annotations

from labelflip.cli.common import err_console, progress_bar
from labelflip.data import DatasetSplits, create_dataset
from labelflip.models import MultiLabelModel, create_model

__all__ = ["load_named_model"]


def load_named_model(name: str) -> tuple[MultiLabelModel, str, DatasetSplits]:
    """``(wrapped model, fingerprint, dataset)`` for a registered model name, training it first if needed."""
    data = create_dataset("synthetic")
    with progress_bar() as prog:
        task = prog.add_task(f"{name}: load or train", total=None)
        built = create_model(name, data=data, progress=lambda *_: prog.advance(task))
    if not err_console.is_terminal:
        err_console.print(f"{name}: ready ({built.fingerprint})")
    return MultiLabelModel(built.module), built.fingerprint, data
