"""``labelflip models``, ``labelflip methods`` and ``labelflip datasets``: what is registered."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from labelflip.attacks import ATTACKS, attack_info
from labelflip.cli.common import app, console
from labelflip.data import DATASETS, SyntheticConfig
from labelflip.models import MODELS

__all__ = ["datasets", "methods", "models"]


def _quality(name: str, meta: Any) -> tuple[str, str]:
    """``(K, quality)`` of a registered model, from what is known without training or downloading anything."""
    if meta.get("builtin"):
        from labelflip.zoo import cached_metrics

        k = str(SyntheticConfig().num_labels)
        m = cached_metrics(name)
        if m is None:
            return k, "not trained yet (trains on first use, about 30 s per model on a laptop CPU)"
        keys = (("test_map", "mAP"), ("test_micro_f1", "micro-F1"), ("test_macro_f1", "macro-F1"))
        return k, ", ".join(f"{label} {m[key]:.3f}" for key, label in keys if key in m) + " (test split)"
    if meta.get("checkpoint_required"):
        return "from checkpoint", "published checkpoint (see its source); not measured here"
    return "-", "-"


@app.command()
def models(pattern: Annotated[str, typer.Argument(help="shell-style filter, e.g. 'asl*'")] = "*") -> None:
    """List the registered models: labels K, input size and quality where known (cached built-in models)."""
    table = Table(title="Registered models (use as --model or in study specs)", title_justify="left")
    for col in ("model", "K", "input", "quality", "description"):
        table.add_column(col)
    names = set(MODELS.list(pattern))
    for entry in MODELS:
        if entry.name not in names:
            continue
        size = entry.meta.get("input_size")
        k, quality = _quality(entry.name, entry.meta)
        table.add_row(entry.name, k, "x".join(map(str, size)) if size else "-", quality, entry.description)
    console.print(table)


@app.command()
def methods(pattern: Annotated[str, typer.Argument(help="shell-style filter, e.g. 'class*'")] = "*") -> None:
    """List the registered attacks (method specs) with their parameters, kind and requirements."""
    table = Table(title="Registered attacks (use as --methods entries or in study specs)", title_justify="left")
    for col in ("spec", "kind", "needs", "description"):
        table.add_column(col)
    names = set(ATTACKS.list(pattern))
    for entry in ATTACKS:
        if entry.name not in names:
            continue
        info = attack_info(entry.name + (":0" if entry.params and entry.params[0].required else ""))
        needs = ", ".join(sorted(info["requires"])) or "-"
        kind = info["kind"] + (", stochastic" if info["stochastic"] else "")
        table.add_row(entry.signature(), kind, needs, entry.description)
    console.print(table)


def _dataset_row(entry: Any) -> tuple[str, str, str]:
    """``(K, input, split)`` of a registered dataset from its registry entry (nothing is read or generated)."""
    if entry.name == "synthetic":
        cfg = SyntheticConfig()
        return str(cfg.num_labels), f"3x{cfg.image_size}x{cfg.image_size}", "train / val / test"
    k = entry.meta.get("num_labels")
    size = entry.param("image_size")
    split = entry.param("split")
    split_text = f"on disk (default {split.default or 'the loader default'})" if split is not None else "-"
    return (
        (str(k) if k else "from the data"),
        (f"3x{size.default}x{size.default} (image_size)" if size else "-"),
        split_text,
    )


@app.command()
def datasets() -> None:
    """List the registered datasets: labels K, image size, splits and how to name them (--dataset NAME:PATH)."""
    table = Table(title="Registered datasets (use as --dataset NAME[:PATH] or dataset: {name: ...} in studies)",
                  title_justify="left")  # fmt: skip
    for col in ("dataset", "K", "input", "split", "description"):
        table.add_column(col)
    for entry in DATASETS:
        k, size, split = _dataset_row(entry)
        table.add_row(entry.signature(), k, size, split, entry.description)
    console.print(table)
