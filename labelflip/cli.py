"""The ``labelflip`` command line (typer). One subcommand per user task.

* ``labelflip attack``: attack a model on a dataset at a list of budgets with one or more losses and print
  a table of mean ± std flips.
* ``labelflip profile``: measure a model's flip profile ``E(eps)`` and save it as JSON.
* ``labelflip demo``: train (or load from cache) both built-in models, probe their profiles, and run BCE,
  Linear and SLAM over the paper's budget grid (5-100 % of ``eps_max``).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from labelflip._validation import LabelflipError, check_choice, check_int, did_you_mean, fail
from labelflip.attacks.mifgsm import MIFGSM
from labelflip.attacks.result import AttackResult
from labelflip.losses import SLAMLoss, create_loss, list_losses
from labelflip.model import MultiLabelModel
from labelflip.profile import Profile, probe_profile
from labelflip.tables import FlipTable, flip_table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multi-label maximum-flip attacks (SLAM/CLASS).")
# Off a terminal (logs, CI, pipes) rich would wrap tables at 80 columns; give them room instead.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

PAPER_FRACTIONS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    )


def _load_builtin(name: str, retrain: bool = False):
    from labelflip import zoo

    with _progress() as prog:
        task = prog.add_task(f"{name}: load or train", total=None)

        def on_progress(*args: object) -> None:
            prog.advance(task)

        model = zoo.load_builtin(name, retrain=retrain, progress=on_progress)
    if not err_console.is_terminal:
        err_console.print(f"{name}: ready ({model.fingerprint})")
    return model


def _samples(split, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` samples of a seeded permutation of a split (seeded generator, no global RNG)."""
    if n > len(split):
        raise fail("labelflip", "--samples", f"at most the split size {len(split)}", n)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=gen)[:n]
    return split.x[idx], split.y[idx]


def _budget_spec(text: str) -> list[tuple[float, bool]]:
    """Parse ``--budgets`` before any work: ``[(value, is_percent)]``. ``"paper"`` = 5..100 % of eps_max."""
    if text.strip() == "paper":
        return [(f * 100, True) for f in PAPER_FRACTIONS]
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise fail("labelflip", "--budgets", "a comma-separated list", text, "e.g. --budgets 0.002,0.01 or 5%,10%")
    spec = []
    for it in items:
        pct = it.endswith("%")
        try:
            value = float(it[:-1] if pct else it)
        except ValueError as exc:
            raise fail("labelflip", "--budgets", "numbers or percentages", it, "e.g. 0.002 or 5%.") from exc
        if not value >= 0 or value == float("inf"):
            raise fail("labelflip", "--budgets", "finite and non-negative", it)
        spec.append((value, pct))
    return spec


def _resolve_budgets(spec: list[tuple[float, bool]], profile: Profile | None) -> tuple[list[float], list[str]]:
    """Absolute budgets and column labels; percentages are fractions of the profile's ``eps_max``."""
    budgets, labels = [], []
    for value, pct in spec:
        if pct:
            if profile is None:  # pragma: no cover - callers probe a profile whenever a % budget is present
                raise fail("labelflip", "--budgets", "absolute when no profile is available", f"{value}%")
            eps = value / 100 * profile.eps_max
            budgets.append(eps)
            labels.append(f"{value:g}%: {eps:.4f}")
        else:
            budgets.append(value)
            labels.append(f"{value:.4g}")
    return budgets, labels


def _render(table: FlipTable, title: str) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("method", style="bold")
    for label in table.column_labels:
        t.add_column(label, justify="right")
    t.add_column("Total", justify="right")
    best = [max(row[1][c][0] for row in table.rows) for c in range(len(table.budgets))]
    for name, cells, total in table.rows:
        rendered = []
        for c, (m, s) in enumerate(cells):
            txt = f"{m:.2f} ± {s:.2f}"
            rendered.append(f"[bold green]{txt}[/]" if m == best[c] and len(table.rows) > 1 else txt)
        t.add_row(name, *rendered, f"{total:.2f}")
    return t


def _run_methods(
    model: MultiLabelModel,
    x: torch.Tensor,
    budgets: list[float],
    losses: list[str],
    profile: Profile | None,
    batch_size: int | None,
    prog: Progress,
    label: str,
    norm: str = "linf",
) -> dict[str, AttackResult]:
    results: dict[str, AttackResult] = {}
    task = prog.add_task(f"{label}: attacks", total=len(losses))
    for name in losses:
        loss = SLAMLoss(profile=profile) if name == "slam" else create_loss(name)
        row = name.upper() if name in ("bce", "slam", "mse") else name.capitalize()
        results[row] = MIFGSM(model, loss, norm=norm, batch_size=batch_size)(x, budgets)
        prog.advance(task)
    return results


def _fail_cleanly(exc: Exception) -> None:
    err_console.print(f"[red]error:[/] {exc}", soft_wrap=True, markup=True, highlight=False)
    raise typer.Exit(code=2)


@app.command()
def attack(
    model: Annotated[str, typer.Option(help="built-in model name (see `labelflip models`)")] = "asl-cnn",
    split: Annotated[str, typer.Option(help="dataset split: train, val or test")] = "test",
    samples: Annotated[int, typer.Option(help="number of samples (seeded selection)")] = 64,
    budgets: Annotated[str, typer.Option(help="e.g. 0.002,0.01 or 5%,10%,100% or 'paper'")] = "paper",
    loss: Annotated[str, typer.Option(help="comma-separated losses: " + ", ".join(list_losses()))] = "bce,linear,slam",
    norm: Annotated[str, typer.Option(help="linf or l2")] = "linf",
    profile: Annotated[Path | None, typer.Option(help="flip profile JSON (for SLAM and % budgets)")] = None,
    seed: Annotated[int, typer.Option(help="sample-selection seed")] = 0,
    batch_size: Annotated[int | None, typer.Option(help="attack batch size (memory)")] = None,
    markdown: Annotated[Path | None, typer.Option(help="also write the table as Markdown here")] = None,
) -> None:
    """Attack a model at a list of budgets and print mean ± std flips per loss."""
    try:
        # Validate every option before loading (or training) a model.
        losses = [s.strip().lower() for s in loss.split(",") if s.strip()]
        if not losses:
            raise fail("labelflip attack", "--loss", "a comma-separated list of losses", loss)
        for name in losses:
            if name not in list_losses():
                raise fail(
                    "labelflip attack",
                    "--loss",
                    "losses from " + ", ".join(list_losses()),
                    name,
                    "pick registered losses." + did_you_mean(name, list_losses()),
                )
        check_choice("labelflip attack", "--split", split, ("train", "val", "test"))
        check_choice("labelflip attack", "--norm", norm, ("linf", "l2"))
        check_int("labelflip attack", "--samples", samples, low=1)
        spec = _budget_spec(budgets)
        built = _load_builtin(model)
        data = _dataset()
        wrapped = MultiLabelModel(built.module)
        prof = Profile.load(profile) if profile is not None else None
        if prof is None and ("slam" in losses or any(pct for _, pct in spec)):
            xv, _ = _samples(data.val, min(100, len(data.val)), seed)
            prof = probe_profile(wrapped, xv, norm=norm, model_fingerprint=built.fingerprint, seed=seed)
        eps, labels = _resolve_budgets(spec, prof)
        x, _ = _samples(getattr(data, split), samples, seed)
        with _progress() as prog:
            results = _run_methods(wrapped, x, eps, losses, prof, batch_size, prog, model, norm)
        table = flip_table(results, column_labels=labels)
    except LabelflipError as exc:
        _fail_cleanly(exc)
        return
    console.print(_render(table, f"{model}: mean ± std flips over {samples} {split} samples ({norm})"))
    if markdown is not None:
        markdown.write_text(table.to_markdown() + "\n")


@app.command("profile")
def profile_cmd(
    model: Annotated[str, typer.Option(help="built-in model name")] = "asl-cnn",
    samples: Annotated[int, typer.Option(help="probe samples from the validation split")] = 100,
    interval: Annotated[int, typer.Option(help="steps between measurements")] = 10,
    order: Annotated[int, typer.Option(help="polynomial order (4 or 3)")] = 4,
    curve: Annotated[str, typer.Option(help="max (paper) or bce (authors' code)")] = "max",
    norm: Annotated[str, typer.Option(help="linf or l2")] = "linf",
    seed: Annotated[int, typer.Option(help="sample-selection seed")] = 0,
    out: Annotated[Path, typer.Option(help="where to write the profile JSON")] = Path("profile.json"),
) -> None:
    """Measure a model's flip profile E(eps) and save it as JSON."""
    try:
        built = _load_builtin(model)
        xv, _ = _samples(_dataset().val, samples, seed)
        prof = probe_profile(
            MultiLabelModel(built.module), xv, interval=interval, order=order, curve=curve, norm=norm,
            model_fingerprint=built.fingerprint, seed=seed,
        )  # fmt: skip
    except LabelflipError as exc:
        _fail_cleanly(exc)
        return
    prof.save(out)
    console.print(
        f"{model}: eps_max = {prof.eps_max:.5f} ({prof.stop_reason}), E(eps_max) = {prof.flips[-1]:.2f} of "
        f"{prof.num_labels} labels; written to {out}"
    )


@app.command()
def models() -> None:
    """List the built-in models."""
    from labelflip import zoo

    for name in zoo.list_models():
        console.print(name)


def _dataset():
    from labelflip import zoo

    return zoo.default_dataset()


@app.command()
def demo(
    samples: Annotated[int, typer.Option(help="test samples attacked per model")] = 64,
    profile_samples: Annotated[int, typer.Option(help="validation samples for the flip profile")] = 64,
    models_: Annotated[str, typer.Option("--models", help="comma-separated built-in models")] = "asl-cnn,q2l-cnn",
    out: Annotated[Path, typer.Option(help="output directory for tables and profiles")] = Path("labelflip-runs/demo"),
    seed: Annotated[int, typer.Option(help="sample-selection seed")] = 0,
) -> None:
    """Train-if-needed both built-in models, then BCE / Linear / SLAM over the paper's budget grid."""
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    try:
        data = _dataset()
        for name in [m.strip() for m in models_.split(",") if m.strip()]:
            built = _load_builtin(name)
            wrapped = MultiLabelModel(built.module)
            metrics = built.metrics
            console.print(
                f"[bold]{name}[/]: test mAP {metrics.get('test_map', float('nan')):.3f}, micro-F1 "
                f"{metrics.get('test_micro_f1', float('nan')):.3f}, macro-F1 "
                f"{metrics.get('test_macro_f1', float('nan')):.3f}  (fingerprint {built.fingerprint})"
            )
            xv, _ = _samples(data.val, profile_samples, seed)
            prof = probe_profile(wrapped, xv, model_fingerprint=built.fingerprint, seed=seed)
            prof.save(out / f"profile-{name}.json")
            console.print(
                f"  flip profile: eps_max = {prof.eps_max:.5f} ({prof.stop_reason}), "
                f"E(eps_max) = {prof.flips[-1]:.2f} of {prof.num_labels} labels"
            )
            eps, labels = _resolve_budgets(_budget_spec("paper"), prof)
            x, _ = _samples(data.test, samples, seed)
            with _progress() as prog:
                results = _run_methods(wrapped, x, eps, ["bce", "linear", "slam"], prof, None, prog, name)
            table = flip_table(results, column_labels=labels)
            (out / f"flips-{name}.md").write_text(table.to_markdown() + "\n")
            console.print(_render(table, f"{name}: mean ± std (population) flips over {samples} test samples, L-inf"))
    except LabelflipError as exc:
        _fail_cleanly(exc)
        return
    console.print(f"demo finished in {time.perf_counter() - start:.1f} s; tables and profiles in {out}/")


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])
