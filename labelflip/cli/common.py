"""What every command shares: the typer app, consoles, progress display and the error exit."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from labelflip._version import __version__

__all__ = ["LineProgress", "app", "console", "err_console", "fail_cleanly", "progress_bar", "study_app"]


def _version(value: bool) -> None:
    if value:
        print(f"labelflip {__version__}")
        raise typer.Exit()


app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multi-label maximum-flip attacks (SLAM/CLASS).")
study_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Run a whole study from one YAML spec.")
app.add_typer(study_app, name="study")


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    """labelflip: measure and reduce multi-label flips under small input perturbations."""


# Off a terminal (logs, CI, pipes) rich would wrap tables at 80 columns; give them room instead (or COLUMNS, which a
# parent command sets for a child whose output it shows on its terminal).
_WIDE = None if os.environ.get("COLUMNS", "").isdigit() else 200
console = Console(width=None if sys.stdout.isatty() else _WIDE)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _WIDE)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    )


def fail_cleanly(exc: Exception) -> None:
    """Print a LabelflipError (it names the parameter and the fix) and exit with status 2."""
    err_console.print(f"[red]error:[/] {exc}", soft_wrap=True, markup=True, highlight=False)
    raise typer.Exit(code=2)


class LineProgress:
    """``(label, done, total)`` progress: a rich bar on a terminal and one plain line per step elsewhere."""

    def __init__(self) -> None:
        self.prog = progress_bar()
        self.tasks: dict[str, object] = {}

    def __enter__(self) -> LineProgress:
        self.prog.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.prog.__exit__(*exc)

    def __call__(self, label: str, done: int, total: int) -> None:
        if err_console.is_terminal:
            if label not in self.tasks:
                self.tasks[label] = self.prog.add_task(label, total=total)
            self.prog.update(self.tasks[label], completed=done)  # type: ignore[arg-type]
        else:
            err_console.print(f"{label}: {done}/{total}", highlight=False)
