"""``labelflip attack``: attack a model at a list of budgets with one or more methods; print a flip table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labelflip._registry import Spec
from labelflip._validation import LabelflipError, check_choice, check_int, fail
from labelflip.analysis import DEFAULT_MAX_STEPS, PAPER_FRACTIONS, Correlations, Profile, check_profile
from labelflip.analysis.cache import use_probe_cache
from labelflip.attacks import attack_info, create_attack, parse_attack, split_method_list
from labelflip.cli.analysis import NO_CACHE_HELP, probe_cache
from labelflip.cli.common import LineProgress, app, console, err_console, fail_cleanly, progress_bar
from labelflip.cli.loading import (
    PROBE_HELP,
    check_batch_size,
    check_budget_option,
    check_model_name,
    check_samples,
    dataset_option,
    load_artefact_option,
    load_inputs,
    parse_number,
    probe_count,
)
from labelflip.models import Runtime
from labelflip.report import flip_table, to_rich
from labelflip.study.inputs import (
    ENGINE_DEFAULTS,
    check_correlations,
    check_output_path,
    engine_options,
    measure_correlations_for,
    measure_profile,
    probe_indices,
    select_samples,
)
from labelflip.study.presets import preset_methods, preset_settings

__all__ = ["attack", "parse_budgets", "parse_methods", "resolve_budgets"]


def parse_methods(text: str, option: str = "--methods") -> list[Spec]:
    """Parse a comma-separated method list before any work (errors name the option)."""
    items = split_method_list(text)
    if not items:
        raise fail("labelflip", option, "a comma-separated list of methods", text, "e.g. bce,slam,class:0")
    specs = [parse_attack(t) for t in items]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        dup = next(label for label in labels if labels.count(label) > 1)
        raise fail("labelflip", option, "distinct methods", text, f"{dup!r} is given twice; drop one.")
    return specs


def parse_budgets(text: str) -> list[tuple[float, bool]]:
    """Parse ``--budgets`` before any work: ``[(value, is_percent)]``: numbers (``0.002``), ratios (``8/255``) or
    percentages of eps_max (``5%``); ``"paper"`` = 5..100 % of eps_max."""
    if text.strip() == "paper":
        return [(f * 100, True) for f in PAPER_FRACTIONS]
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise fail("labelflip", "--budgets", "a comma-separated list", text, "e.g. --budgets 0.002,0.01 or 5%,10%")
    spec = []
    for it in items:
        pct = it.endswith("%")
        try:
            value = parse_number(it[:-1] if pct else it)  # 0.002, 8/255, 5%
        except (ValueError, ZeroDivisionError) as exc:
            raise fail("labelflip", "--budgets", "numbers, ratios or percentages", it, "e.g. 0.002, 8/255, 5%") from exc
        if not value >= 0 or value == float("inf"):
            raise fail("labelflip", "--budgets", "finite and non-negative", it)
        spec.append((value, pct))
    return spec


def resolve_budgets(spec: list[tuple[float, bool]], profile: Profile | None) -> tuple[list[float], list[str]]:
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


@app.command()
def attack(
    model: Annotated[
        str, typer.Option(help="registered model (see `labelflip models`), e.g. q2l-r101-448")
    ] = "asl-cnn",
    checkpoint: Annotated[
        Path | None, typer.Option(help="the model's checkpoint file (the paper's models; default: none)")
    ] = None,
    dataset: Annotated[str, typer.Option(help="dataset spec (`labelflip datasets`), e.g. coco:/data/coco")] = (
        "synthetic"
    ),
    split: Annotated[
        str | None,
        typer.Option(
            help="split attacked: train/val/test (synthetic) or on disk, e.g. val2014 (default: test / the dataset's)"
        ),
    ] = None,
    trust_pickle: Annotated[
        bool, typer.Option(help="allow a full, code-running unpickle of a trusted torch.save checkpoint")
    ] = False,
    sha256: Annotated[
        str | None, typer.Option(help="expected SHA-256 of the checkpoint file (default: not checked)")
    ] = None,
    samples: Annotated[int, typer.Option(help="number of samples (seeded selection)")] = 64,
    budgets: Annotated[str, typer.Option(help="e.g. 0.002,0.01 or 5%,10%,100% or 'paper'")] = "paper",
    methods: Annotated[
        str | None,
        typer.Option(help="comma-separated method specs (`labelflip methods`; default: bce,linear,slam)"),
    ] = None,
    loss: Annotated[str | None, typer.Option(help="alias of --methods (default: not used)")] = None,
    norm: Annotated[str, typer.Option(help="linf or l2")] = "linf",
    profile: Annotated[Path | None, typer.Option(help="flip profile JSON (default: probed on the val split)")] = None,
    correlations: Annotated[Path | None, typer.Option(help="correlations JSON (default: measured on val)")] = None,
    eps_corr: Annotated[float, typer.Option(help="budget of the correlation attacks")] = 0.005,
    probe_samples: Annotated[int | None, typer.Option(help=PROBE_HELP)] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help=NO_CACHE_HELP)] = False,
    seed: Annotated[int, typer.Option(help="sample-selection and random-subset seed")] = 0,
    batch_size: Annotated[int | None, typer.Option(help="attack batch size (default: all at once)")] = None,
    markdown: Annotated[Path | None, typer.Option(help="also write the table as Markdown here (default: no)")] = None,
    max_steps: Annotated[int, typer.Option(help="flip-profile probe cap in MI-FGSM steps")] = DEFAULT_MAX_STEPS,
    allow_capped_profile: Annotated[
        bool, typer.Option(help="use a profile that stopped at its cap (its eps_max is not where flips saturate)")
    ] = False,
    preset: Annotated[str | None, typer.Option(help="'paper': the authors' settings (README; default: none)")] = None,
    device: Annotated[str, typer.Option(help="auto (the GPU when there is one), cpu, cuda, cuda:N or mps")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, or bf16 / fp16 autocast of the network (GPU)")] = "fp32",
) -> None:
    """Attack a model at a list of budgets and print mean ± std flips per method."""
    owner = "labelflip attack"
    try:
        # Validate every option before loading (or training) a model.
        specs = parse_methods(methods or loss or "bce,linear,slam", "--loss" if loss and not methods else "--methods")
        settings = preset_settings(preset, owner=owner, param="--preset")
        if preset is not None:
            specs = [parse_attack(m) for m in preset_methods(preset, [str(s) for s in specs])]
        engine = {**ENGINE_DEFAULTS, **settings.get("attack", {})}
        check_choice(owner, "--norm", norm, ("linf", "l2"))
        check_model_name(model, owner)
        dspec, role = dataset_option(dataset, split, owner)
        if dspec.name == "synthetic":
            reserved = 2 if role == "val" else 0
            check_samples(samples, role, owner, "--samples", reserved=reserved, reserved_for="probes")
            if probe_samples is not None:
                check_samples(probe_samples, "val", owner, "--probe-samples", low=2)
        if probe_samples is not None:
            check_int(owner, "--probe-samples", probe_samples, low=2)
        check_int(owner, "--max-steps", max_steps, low=40)  # the probe: interval 10, order 4
        check_budget_option(eps_corr, owner, "--eps-corr")
        check_batch_size(batch_size, owner)
        runtime = Runtime.from_options({"device": device, "precision": precision}, owner=owner, prefix="--")
        runtime.resolve_device(owner, "--device")  # e.g. --device cuda without CUDA: refused before any work
        if markdown is not None:
            check_output_path(markdown, owner=owner, param="--markdown")
        budget_spec = parse_budgets(budgets)
        loaded_prof = load_artefact_option(Profile, profile, owner, "--profile")
        loaded_corr = load_artefact_option(Correlations, correlations, owner, "--correlations")
        wrapped, fingerprint, data, role = load_inputs(
            model,
            owner,
            dataset=dataset,
            split=split,
            checkpoint=checkpoint,
            trust_pickle=trust_pickle,
            sha256=sha256,
        )
        wrapped.set_runtime(runtime)
        k = len(data.label_names)
        needs = set().union(*(attack_info(s)["requires"] for s in specs))
        part = getattr(data, role)
        idx = select_samples(part, samples, seed, owner=owner, param="--samples")
        exclude = idx if part is data.val else None  # probes disjoint from the evaluation samples
        n_probe = probe_count(probe_samples, data, exclude, owner)
        prof = loaded_prof
        if prof is None and ("profile" in needs or any(pct for _, pct in budget_spec)):
            with use_probe_cache(probe_cache(no_cache)), LineProgress() as probe_progress:
                prof = measure_profile(
                    wrapped,
                    data,
                    samples=n_probe,
                    seed=seed,
                    norm=norm,
                    curve=settings.get("profile", {}).get("curve", "max"),
                    max_steps=max_steps,
                    engine=engine_options("bce", engine),
                    fingerprint=fingerprint,
                    exclude=exclude,
                    owner=owner,
                    progress=probe_progress,
                    label=f"{model}: profile probe (steps)",
                )
        if prof is not None:
            name = f"--profile {profile}" if profile is not None else "the probed profile"
            prof = check_profile(
                prof,
                owner=owner,
                name=name,
                num_labels=k,
                norm=norm,
                fingerprint=fingerprint,
                allow_capped=allow_capped_profile,
            )
        corr = loaded_corr
        if corr is not None:
            check_correlations(
                corr, owner=owner, name=f"--correlations {correlations}", num_labels=k, fingerprint=fingerprint
            )
        if corr is None and "correlations" in needs:
            with use_probe_cache(probe_cache(no_cache)), LineProgress() as probe_progress:
                corr = measure_correlations_for(
                    wrapped,
                    data,
                    samples=n_probe,
                    seed=seed,
                    eps=eps_corr,
                    fingerprint=fingerprint,
                    exclude=exclude,
                    progress=probe_progress,
                    label=f"{model}: correlation probe",
                )
        heldout = data.val.x[probe_indices(data, n_probe, seed, exclude=exclude)] if "heldout" in needs else None
        eps, labels = resolve_budgets(budget_spec, prof)
        results = {}
        with progress_bar() as prog:
            task = prog.add_task(f"{model}: attacks", total=len(specs))
            for spec in specs:
                attack_ = create_attack(
                    spec,
                    wrapped,
                    profile=prof,
                    correlations=corr,
                    seed=seed,
                    heldout=heldout,
                    norm=norm,
                    batch_size=batch_size,
                    **engine_options(str(spec), engine),
                )
                results[spec.label] = attack_(part.x[idx], eps, sample_ids=idx)
                prog.advance(task)
                if not err_console.is_terminal:
                    err_console.print(f"{model}: {spec.label} done")
        notes = [f"preset {preset}"] if preset is not None else []
        for label, res in results.items():
            if "gamma" in res.extra:  # class-auto: the gamma its search chose on the held-out samples
                held = res.extra["heldout_samples"]
                notes.append(f"{label}: γ = {res.extra['gamma']:g} chosen on {held} held-out samples (0.05 steps)")
        where = f"{dspec.name} {split or role}" if dspec.name != "synthetic" else (split or role)
        title = "; ".join([f"{model}: mean ± std flips over {samples} {where} samples ({norm})", *notes])
        table = flip_table(results, column_labels=labels, title=title)
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    console.print(to_rich(table))
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(table.to_markdown() + "".join(f"\n\n{n}" for n in notes) + "\n")
