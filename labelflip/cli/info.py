"""``labelflip models``, ``labelflip methods`` and ``labelflip datasets``: what is registered."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from labelflip.attacks import ATTACKS, attack_info
from labelflip.cli.common import app, console
from labelflip.data import DATASETS
from labelflip.models import MODELS

__all__ = ["datasets", "methods", "models"]


@app.command()
def models(pattern: Annotated[str, typer.Argument(help="shell-style filter, e.g. 'asl*'")] = "*") -> None:
    """List the registered models."""
    for entry in MODELS:
        if entry.name in MODELS.list(pattern):
            console.print(f"{entry.name}\t{entry.description}", highlight=False)


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


@app.command()
def datasets() -> None:
    """List the registered datasets."""
    for entry in DATASETS:
        console.print(f"{entry.name}\t{entry.description}", highlight=False)
