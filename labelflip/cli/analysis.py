"""The analyses of seed §IV-V as commands: ``profile``, ``correlations``, ``attackability``, ``targets-vs-flips``.

Each measures on the built-in dataset with the study's conventions (:mod:`labelflip.study.inputs`: the same
sample selector and seed offsets), saves the artefact and draws its figure with :mod:`labelflip.report`. The
probes show their progress and read / write the user's probe cache (:mod:`labelflip.analysis.cache`; ``--no-cache``
leaves it alone); :func:`probe_cache` is the one place the commands build it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labelflip._validation import LabelflipError, check_choice, check_int, fail
from labelflip.analysis import DEFAULT_MAX_STEPS, check_profile, targets_vs_flips
from labelflip.analysis.cache import ProbeCache, use_probe_cache
from labelflip.cli.common import LineProgress, app, console, err_console, fail_cleanly
from labelflip.cli.loading import (
    PROBE_HELP,
    check_budget_option,
    check_samples,
    load_inputs,
    load_named_model,
    probe_count,
)
from labelflip.data import cooccurrence_matrix
from labelflip.report.figures import plot_attackability, plot_correlations, plot_profile, plot_targets_vs_flips
from labelflip.report.tables import attackability_markdown, targets_vs_flips_markdown
from labelflip.study.inputs import (
    check_output_path,
    measure_attackability,
    measure_correlations_for,
    measure_profile,
    select_samples,
)

__all__ = [
    "NO_CACHE_HELP",
    "attackability_cmd",
    "correlations_cmd",
    "probe_cache",
    "profile_cmd",
    "targets_vs_flips_cmd",
]

NO_CACHE_HELP = "probe again instead of reusing a cached profile / correlations (and do not write the cache)"


def probe_cache(no_cache: bool) -> ProbeCache | None:
    """The user's probe cache for a command (``None`` with ``--no-cache``); a reuse is said on stderr."""
    if no_cache:
        return None
    return ProbeCache(notify=lambda msg: err_console.print(msg, highlight=False, soft_wrap=True))


@app.command("profile")
def profile_cmd(
    model: Annotated[str, typer.Option(help="registered model name")] = "asl-cnn",
    samples: Annotated[
        int, typer.Option("--probe-samples", "--samples", help="probe images from the validation split")
    ] = 100,
    checkpoint: Annotated[
        Path | None, typer.Option(help="the model's checkpoint file (the paper's models; default: none)")
    ] = None,
    dataset: Annotated[str, typer.Option(help="dataset spec, e.g. coco:/data/coco")] = "synthetic",
    split: Annotated[
        str | None,
        typer.Option(help="on-disk split of a real dataset; probes use its val role (default: the dataset's)"),
    ] = None,
    trust_pickle: Annotated[bool, typer.Option(help="allow a code-running unpickle of a trusted checkpoint")] = False,
    sha256: Annotated[
        str | None, typer.Option(help="expected SHA-256 of the checkpoint file (default: not checked)")
    ] = None,
    interval: Annotated[int, typer.Option(help="steps between measurements")] = 10,
    order: Annotated[int, typer.Option(help="polynomial order (4 or 3)")] = 4,
    curve: Annotated[str, typer.Option(help="max (paper) or bce (authors' code)")] = "max",
    norm: Annotated[str, typer.Option(help="linf or l2")] = "linf",
    seed: Annotated[int, typer.Option(help="sample seed (the probe uses seed + 1, as studies do)")] = 0,
    out: Annotated[Path, typer.Option(help="where to write the profile JSON")] = Path("profile.json"),
    max_steps: Annotated[int, typer.Option(help="probe cap in MI-FGSM steps (same meaning for linf and l2)")] = (
        DEFAULT_MAX_STEPS
    ),
    min_points: Annotated[int | None, typer.Option(help="probe points in all, for the fit (default order + 2)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help=NO_CACHE_HELP)] = False,
) -> None:
    """Measure a model's flip profile E(eps) and save it as JSON (plot beside it); eps_max with its 95 % bootstrap
    interval over the probe images."""
    try:
        check_int("labelflip profile", "--probe-samples/--samples", samples, low=2)
        if dataset == "synthetic":
            check_samples(samples, "val", "labelflip profile", "--probe-samples/--samples", low=2)
        check_int("labelflip profile", "--interval", interval, low=1)
        check_int("labelflip profile", "--order", order, low=1)
        check_int("labelflip profile", "--max-steps", max_steps, low=interval * order)
        if min_points is not None:
            check_int("labelflip profile", "--min-points", min_points, low=2)
        check_choice("labelflip profile", "--curve", curve, ("max", "bce"))
        check_choice("labelflip profile", "--norm", norm, ("linf", "l2"))
        check_output_path(out, owner="labelflip profile", param="--out")
        wrapped, fingerprint, data, _ = load_inputs(
            model,
            "labelflip profile",
            dataset=dataset,
            split=split,
            checkpoint=checkpoint,
            trust_pickle=trust_pickle,
            sha256=sha256,
        )
        with use_probe_cache(probe_cache(no_cache)), LineProgress() as prog:
            prof = measure_profile(
                wrapped,
                data,
                samples=samples,
                seed=seed,
                interval=interval,
                order=order,
                curve=curve,
                norm=norm,
                max_steps=max_steps,
                min_points=min_points,
                fingerprint=fingerprint,
                owner="labelflip profile",
                progress=prog,
                label=f"{model}: profile probe (steps)",
            )
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    prof.save(out)
    png = plot_profile(prof, out.with_suffix(".png"))
    console.print(
        f"{model}: {prof.eps_max_text()}, {prof.stop_reason}; E(eps_max) = {prof.flips[-1]:.2f} of "
        f"{prof.num_labels} labels; written to {out} (plot: {png})",
        highlight=False,
    )
    if prof.stop_reason == "cap":
        err_console.print(
            f"[red]warning:[/] the probe stopped at its cap --max-steps {max_steps} before flips saturated: eps_max "
            "is the cap, and SLAM, CLASS, random subsets and % budgets refuse this profile (--allow-capped-profile "
            "uses it anyway). Re-probe with a larger --max-steps."
        )


@app.command("correlations")
def correlations_cmd(
    model: Annotated[str, typer.Option(help="registered model name")] = "asl-cnn",
    samples: Annotated[
        int, typer.Option("--probe-samples", "--samples", help="validation images probed (the paper: 100)")
    ] = 100,
    eps: Annotated[float, typer.Option(help="budget of the single-label attacks")] = 0.005,
    flipdown: Annotated[bool, typer.Option(help="also measure the flip-down matrix")] = False,
    seed: Annotated[int, typer.Option(help="sample seed (the probe uses seed + 2, as studies do)")] = 0,
    out: Annotated[Path, typer.Option(help="correlations JSON (a heatmap PNG is written beside it)")] = Path(
        "correlations.json"
    ),
    no_cache: Annotated[bool, typer.Option("--no-cache", help=NO_CACHE_HELP)] = False,
) -> None:
    """Measure the flip-up correlation matrix (Alg. 1), save it and plot it next to the co-occurrence."""
    try:
        check_samples(samples, "val", "labelflip correlations", "--probe-samples/--samples")
        check_budget_option(eps, "labelflip correlations", "--eps")
        check_output_path(out, owner="labelflip correlations", param="--out")
        wrapped, fingerprint, data = load_named_model(model, "labelflip correlations")
        with use_probe_cache(probe_cache(no_cache)), LineProgress() as prog:
            corr = measure_correlations_for(
                wrapped,
                data,
                samples=samples,
                seed=seed,
                eps=eps,
                flipdown=flipdown,
                fingerprint=fingerprint,
                owner="labelflip correlations",
                progress=prog,
                label=f"{model}: correlation probe",
            )
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    corr.save(out)
    png = plot_correlations(corr, out.with_suffix(".png"), cooccurrence=cooccurrence_matrix(data.train.y))
    diag = corr.flipup.diagonal()
    console.print(
        f"{model}: flip-up matrix {corr.num_labels}x{corr.num_labels} at eps={eps} over {samples} images; attacked "
        f"label rises by {float(diag.mean()):.3f} on average; written to {out} (heatmap: {png})"
    )


@app.command("attackability")
def attackability_cmd(
    model: Annotated[str, typer.Option(help="registered model name")] = "asl-cnn",
    eps: Annotated[float, typer.Option(help="budget of the single-label attacks")] = 0.01,
    per_label: Annotated[
        int,
        typer.Option("--per-label", "--probe-samples", help="images attacked per label and direction (the paper: 100)"),
    ] = 100,
    images: Annotated[int, typer.Option(help="training images scanned for eligible ones")] = 2000,
    out: Annotated[Path, typer.Option(help="attackability JSON (a bar plot PNG is written beside it)")] = Path(
        "attackability.json"
    ),
) -> None:
    """Per-label flip-up / flip-down attackability and its correlations with confidence and frequency (Table II)."""
    try:
        check_int("labelflip attackability", "--images", images, low=1)
        check_int("labelflip attackability", "--per-label/--probe-samples", per_label, low=1)
        check_budget_option(eps, "labelflip attackability", "--eps")
        check_output_path(out, owner="labelflip attackability", param="--out")
        wrapped, fingerprint, data = load_named_model(model, "labelflip attackability")
        with LineProgress() as prog:
            att = measure_attackability(
                wrapped,
                data,
                per_label=per_label,
                eps=eps,
                images=images,
                fingerprint=fingerprint,
                progress=prog,
                label=f"{model}: attackability probe",
            )
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    att.save(out)
    png = plot_attackability(att, out.with_suffix(".png"))
    console.print(f"[bold]{model}[/]: per-label attackability at eps={eps} (Table II; * = p > 0.05)")
    console.print(attackability_markdown(att, "pearson"))
    console.print(attackability_markdown(att, "spearman"))
    for note in att.notes:
        console.print(f"note: {note}")
    console.print(f"written to {out} (plot: {png})")


def _fractions(text: str) -> list[float]:
    try:
        fr = [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        fr = []
    if not fr or any(not 0 < f < float("inf") for f in fr):
        raise fail("labelflip targets-vs-flips", "--fractions", "comma-separated positive numbers", text)
    return fr


@app.command("targets-vs-flips")
def targets_vs_flips_cmd(
    model: Annotated[str, typer.Option(help="registered model name")] = "asl-cnn",
    samples: Annotated[int, typer.Option(help="test samples")] = 32,
    fractions: Annotated[str, typer.Option(help="budgets as fractions of eps_max")] = "0.1,0.3,0.6",
    step: Annotated[int, typer.Option(help="step between numbers of targets")] = 2,
    probe_samples: Annotated[
        int | None,
        typer.Option(help=PROBE_HELP),
    ] = None,
    seed: Annotated[int, typer.Option(help="sample seed")] = 0,
    out: Annotated[Path, typer.Option(help="plot PNG (a Markdown table is written beside it)")] = Path(
        "targets-vs-flips.png"
    ),
    no_cache: Annotated[bool, typer.Option("--no-cache", help=NO_CACHE_HELP)] = False,
) -> None:
    """Flips vs number of closest-to-threshold targets at several budgets (Fig. 7); prints flips_opt / t_opt."""
    try:
        fr = _fractions(fractions)
        check_int("labelflip targets-vs-flips", "--step", step, low=1)
        check_samples(samples, "test", "labelflip targets-vs-flips", "--samples")
        if probe_samples is not None:
            check_samples(probe_samples, "val", "labelflip targets-vs-flips", "--probe-samples", low=2)
        check_output_path(out, owner="labelflip targets-vs-flips", param="--out")
        wrapped, fingerprint, data = load_named_model(model, "labelflip targets-vs-flips")
        probe_samples = probe_count(probe_samples, data, None, "labelflip targets-vs-flips")
        with use_probe_cache(probe_cache(no_cache)), LineProgress() as prog:
            prof = measure_profile(
                wrapped,
                data,
                samples=probe_samples,
                seed=seed,
                fingerprint=fingerprint,
                progress=prog,
                label=f"{model}: profile",
            )
        check_profile(prof, owner="labelflip targets-vs-flips", name="the probed profile")
        idx = select_samples(data.test, samples, seed, owner="labelflip targets-vs-flips", param="--samples")
        k = data.train.num_labels
        tvf = targets_vs_flips(wrapped, data.test.x[idx], [f * prof.eps_max for f in fr], list(range(0, k + 1, step)))
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    plot_targets_vs_flips(tvf, out)
    text = targets_vs_flips_markdown(tvf)
    out.with_suffix(".md").write_text(text + "\n")
    console.print(text)
    console.print(f"flips_opt / t_opt per budget: {', '.join(f'{r:.2f}' for r in tvf.ratios())} (paper: about 0.6)")
