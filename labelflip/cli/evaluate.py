"""``labelflip evaluate``: the worst-case ensemble on a model at a list of budgets, as a leaderboard record.

Runs the ``worst-case`` attack (:class:`~labelflip.attacks.ensemble.WorstCaseEnsemble`: BCE, Linear, MaxFlip,
SLAM, CLASS(γ=0), ML-DeepFool, cheapest first, each later one only where it can still improve) and reports, per
sample, the most flips any member found and which member found it; per budget the mean with a 95 % Student-t
interval (:mod:`labelflip.report.ensemble`) and the members' win counts; and the ensemble's cost in
forward+backward passes as a multiple of one BCE run. ``--json`` writes everything as one record
(``format: labelflip.evaluate/1``; keys in :func:`evaluation_record`).

``--model`` is a registered model (``asl-cnn``; a registered model that needs weights takes ``--checkpoint``) or
the path of a labelflip checkpoint file (``.safetensors`` written by labelflip: its architecture is in the file).
The flip profile and correlations SLAM and CLASS need are probed on validation images unless given.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import time
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.table import Table as RichTable

from labelflip._validation import LabelflipError, check_choice, check_int, fail
from labelflip._version import __version__
from labelflip.analysis import DEFAULT_MAX_STEPS, Correlations, Profile, check_profile
from labelflip.analysis.cache import use_probe_cache
from labelflip.attacks import AttackResult, create_attack
from labelflip.cli.analysis import NO_CACHE_HELP, probe_cache
from labelflip.cli.common import LineProgress, app, console, err_console, fail_cleanly
from labelflip.cli.loading import (
    PROBE_HELP,
    check_batch_size,
    check_budget_option,
    check_model_name,
    check_samples,
    dataset_option,
    dataset_text,
    load_artefact_option,
    load_inputs,
    parse_number,
    probe_count,
)
from labelflip.data import DatasetSplits, create_dataset
from labelflip.models import MultiLabelModel
from labelflip.report.ensemble import CI_METHOD, budget_records, record_wins
from labelflip.report.tables import eps_text
from labelflip.study.inputs import (
    check_correlations,
    check_output_path,
    measure_correlations_for,
    measure_profile,
    select_samples,
)
from labelflip.study.loaders import fingerprint_model
from labelflip.study.matching import check_model_fits, split_on_disk

__all__ = ["FORMAT", "evaluate", "evaluation_record", "parse_eps"]

FORMAT = "labelflip.evaluate/1"
_OWNER = "labelflip evaluate"


def parse_eps(text: str) -> list[float]:
    """``--eps`` before any work: comma-separated absolute budgets, numbers or ratios (``0.01,8/255``), each
    finite and >= 0, no duplicates. Percentages of eps_max are refused: a record's budgets must not depend on a
    probe."""
    items = [t.strip() for t in str(text).split(",")]
    if not text or not str(text).strip() or any(not t for t in items):
        raise fail(_OWNER, "--eps", "a comma-separated list of budgets", text, "e.g. --eps 0.01,8/255")
    out = []
    for it in items:
        if it.endswith("%"):
            raise fail(
                _OWNER,
                "--eps",
                "absolute budgets in pixel units",
                it,
                "a leaderboard record needs budgets that do not depend on a probe; e.g. 8/255.",
            )
        try:
            value = parse_number(it)
        except (ValueError, ZeroDivisionError) as exc:
            raise fail(_OWNER, "--eps", "numbers or ratios", it, "e.g. 0.01 or 8/255") from exc
        if not math.isfinite(value) or value < 0:
            raise fail(_OWNER, "--eps", "finite budgets >= 0", it, "budgets are pixel-unit radii, e.g. 8/255.")
        out.append(value)
    if len(set(out)) != len(out):
        raise fail(_OWNER, "--eps", "distinct budgets", text, "drop the repeated one.")
    return out


def _load_checkpoint_model(
    path: Path, dataset: str, split: str | None, role: str
) -> tuple[MultiLabelModel, str, DatasetSplits, dict[str, Any]]:
    """A labelflip checkpoint file as ``(model, fingerprint, dataset, metadata)``, checked against the dataset."""
    from labelflip.models.checkpoints import load_checkpoint

    core, options = dataset_text(dataset)
    spec, _ = dataset_option(dataset, split, _OWNER)
    if split_on_disk(spec.name) and split is not None:
        options["split"] = split
    data = create_dataset(core, **options)
    try:
        module, meta = load_checkpoint(path)
    except LabelflipError as exc:
        raise LabelflipError(f"{_OWNER} --model {path}: {exc}") from exc
    wrapped = MultiLabelModel(module)
    names = meta.get("label_names") or None
    check_model_fits(wrapped, data, name=str(path), role=role, label_names=names, names_from=f"stored in {path}")
    base = f"checkpoint:{meta.get('name') or path.stem}"
    return wrapped, fingerprint_model(wrapped, base), data, meta


def evaluation_record(
    res: AttackResult,
    *,
    model: dict[str, Any],
    dataset: dict[str, Any],
    indices: list[int],
    seed: int,
    artefacts: dict[str, Any],
    elapsed_s: float,
) -> dict[str, Any]:
    """The JSON record of one evaluation (``format``, ``labelflip_version``, ``created``, ``model`` {name,
    fingerprint, checkpoint, num_labels}, ``dataset`` {spec, split}, ``samples`` {count, seed, indices}, ``norm``,
    ``budgets``, ``results`` (per budget: eps, n, mean, std_pop, ci_low, ci_high, ci_method, min, max, wins),
    ``per_sample`` (dataset index, flips and winner per budget), ``ensemble`` (members, specs, cost_multiple,
    passes / forward passes / runs / samples run / seconds per member, bce_reference_passes), ``artefacts``
    (the profile and correlations used), ``runtime``, ``elapsed_s``)."""
    extra = res.extra
    members, eps = list(extra["members"]), [float(e) for e in res.eps]
    winners = record_wins(extra)
    flips = res.flips.numpy()
    per_member = {
        key: dict(zip(members, extra[key], strict=True))
        for key in ("passes", "forward_passes", "runs", "samples_run", "member_seconds")
    }
    return {
        "format": FORMAT,
        "labelflip_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "dataset": dataset,
        "samples": {"count": len(indices), "seed": seed, "indices": indices},
        "norm": res.norm,
        "budgets": eps,
        "results": budget_records(flips, eps, winners, members),
        "per_sample": [
            {
                "dataset_index": idx,
                "flips": [int(flips[b, i]) for b in range(len(eps))],
                "winner": [winners[b][i] for b in range(len(eps))],
            }
            for i, idx in enumerate(indices)
        ],
        "ensemble": {
            "attack": "worst-case",
            "members": members,
            "member_specs": list(extra["member_specs"]),
            "cost_multiple": extra["cost_multiple"],
            "cost_unit": "forward+backward passes of one BCE run (MI-FGSM, N x max_b floor(eps_b / alpha))",
            "bce_reference_passes": extra["bce_reference_passes"],
            "scoring_forwards": extra["scoring_forwards"],
            **per_member,
        },
        "artefacts": artefacts,
        "runtime": {
            "device": str(res.clean_probs.device),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
        "elapsed_s": elapsed_s,
    }


def _summary_table(record: dict[str, Any], title: str) -> RichTable:
    members = record["ensemble"]["members"]
    table = RichTable(title=title, title_justify="left")
    for col in ("eps", "worst case: mean ± std", f"95% CI ({CI_METHOD.split(',')[0]})", *members, "none"):
        table.add_column(col, justify="right")
    for r in record["results"]:
        lo, hi = r["ci_low"], r["ci_high"]
        table.add_row(
            eps_text(r["eps"], record["norm"]),
            f"{r['mean']:.2f} ± {r['std_pop']:.2f}",
            f"[{lo:.2f}, {hi:.2f}]",
            *(str(r["wins"].get(m, 0)) for m in [*members, "none"]),
        )
    return table


def _samples_table(record: dict[str, Any]) -> RichTable:
    table = RichTable(title="Per sample: most flips (winning member)", title_justify="left")
    table.add_column("dataset index", justify="right")
    for e in record["budgets"]:
        table.add_column(eps_text(e, record["norm"]), justify="right")
    for s in record["per_sample"]:
        table.add_row(str(s["dataset_index"]), *(f"{f} ({w})" for f, w in zip(s["flips"], s["winner"], strict=True)))
    return table


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="registered model, or the path of a labelflip checkpoint file")] = (
        "asl-cnn"
    ),
    eps: Annotated[str, typer.Option(help="absolute budgets, e.g. 0.01,8/255")] = "8/255",
    checkpoint: Annotated[
        Path | None, typer.Option(help="weights of a registered model that needs them (default: none)")
    ] = None,
    dataset: Annotated[str, typer.Option(help="dataset spec (`labelflip datasets`)")] = "synthetic",
    split: Annotated[str | None, typer.Option(help="split attacked (default: test / the dataset's)")] = None,
    samples: Annotated[int, typer.Option(help="number of samples (seeded selection)")] = 100,
    seed: Annotated[int, typer.Option(help="sample-selection seed")] = 0,
    norm: Annotated[str, typer.Option(help="linf or l2")] = "linf",
    profile: Annotated[Path | None, typer.Option(help="flip profile JSON (default: probed on the val split)")] = None,
    correlations: Annotated[Path | None, typer.Option(help="correlations JSON (default: measured on val)")] = None,
    eps_corr: Annotated[float, typer.Option(help="budget of the correlation attacks")] = 0.005,
    probe_samples: Annotated[int | None, typer.Option(help=PROBE_HELP)] = None,
    max_steps: Annotated[int, typer.Option(help="flip-profile probe cap in MI-FGSM steps")] = DEFAULT_MAX_STEPS,
    no_cache: Annotated[bool, typer.Option("--no-cache", help=NO_CACHE_HELP)] = False,
    allow_capped_profile: Annotated[
        bool, typer.Option(help="use a profile that stopped at its cap (its eps_max is not where flips saturate)")
    ] = False,
    batch_size: Annotated[int | None, typer.Option(help="attack batch size (default: all at once)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the record here (default: no)")] = None,
    per_sample: Annotated[bool, typer.Option(help="also print the per-sample table")] = False,
) -> None:
    """Worst-case flips of a model (fixed ensemble, AutoAttack-style): per budget mean ± 95% CI and member wins."""
    try:
        budgets = parse_eps(eps)
        check_choice(_OWNER, "--norm", norm, ("linf", "l2"))
        check_int(_OWNER, "--seed", seed, low=0)
        if probe_samples is not None:
            check_int(_OWNER, "--probe-samples", probe_samples, low=2)
        check_int(_OWNER, "--max-steps", max_steps, low=40)
        check_budget_option(eps_corr, _OWNER, "--eps-corr")
        check_batch_size(batch_size, _OWNER)
        if json_out is not None:
            check_output_path(json_out, owner=_OWNER, param="--json")
        path = Path(model).expanduser()
        from_file = path.suffix == ".safetensors" or (path.is_file() and ":" not in model)
        if from_file and not path.is_file():
            raise fail(_OWNER, "--model", "a registered model or an existing checkpoint file", model, "check the path.")
        if not from_file:
            try:
                check_model_name(model, _OWNER)
            except LabelflipError as exc:
                raise LabelflipError(f"{exc} (--model also takes the path of a labelflip checkpoint file)") from exc
        dspec, role = dataset_option(dataset, split, _OWNER)
        if dspec.name == "synthetic":
            check_samples(samples, role, _OWNER, "--samples", reserved=2 if role == "val" else 0, reserved_for="probes")
        loaded_prof = load_artefact_option(Profile, profile, _OWNER, "--profile")
        loaded_corr = load_artefact_option(Correlations, correlations, _OWNER, "--correlations")
        start = time.perf_counter()
        meta: dict[str, Any] = {}
        if from_file:
            wrapped, fp, data, meta = _load_checkpoint_model(path, dataset, split, role)
        else:
            wrapped, fp, data, role = load_inputs(model, _OWNER, dataset=dataset, split=split, checkpoint=checkpoint)
        k = len(data.label_names)
        part = getattr(data, role)
        idx = select_samples(part, samples, seed, owner=_OWNER, param="--samples")
        exclude = idx if part is data.val else None
        n_probe = probe_count(probe_samples, data, exclude, _OWNER)
        with use_probe_cache(probe_cache(no_cache)), LineProgress() as probe_progress:  # reused across commands
            prof = loaded_prof or measure_profile(
                wrapped,
                data,
                samples=n_probe,
                seed=seed,
                norm=norm,
                max_steps=max_steps,
                fingerprint=fp,
                exclude=exclude,
                owner=_OWNER,
                progress=probe_progress,
                label=f"{model}: profile probe (steps)",
            )
        prof = check_profile(
            prof,
            owner=_OWNER,
            name=f"--profile {profile}" if profile else "the probed profile",
            num_labels=k,
            norm=norm,
            fingerprint=fp,
            allow_capped=allow_capped_profile,
        )
        if loaded_corr is not None:
            corr = check_correlations(
                loaded_corr, owner=_OWNER, name=f"--correlations {correlations}", num_labels=k, fingerprint=fp
            )
        else:
            with use_probe_cache(probe_cache(no_cache)):
                corr = measure_correlations_for(
                    wrapped,
                    data,
                    samples=n_probe,
                    seed=seed,
                    eps=eps_corr,
                    fingerprint=fp,
                    exclude=exclude,
                    owner=_OWNER,
                )
        attack = create_attack("worst-case", wrapped, profile=prof, correlations=corr, norm=norm, batch_size=batch_size)
        err_console.print(f"{model}: worst-case ensemble on {len(idx)} samples at {len(budgets)} budget(s)")
        res = attack(part.x[idx], budgets, sample_ids=idx)
        record = evaluation_record(
            res,
            model={
                "name": model,
                "fingerprint": fp,
                "checkpoint": str(checkpoint or (path if from_file else "")) or None,
                "num_labels": k,
                "metrics": meta.get("metrics"),
            },
            dataset={"spec": dataset, "split": split or role},
            indices=[int(i) for i in idx],
            seed=seed,
            artefacts={
                "profile": {
                    "source": str(profile) if profile else f"probed on {n_probe} val images",
                    "eps_max": float(prof.eps_max),
                    "num_samples": int(getattr(prof, "num_samples", 0)),
                },
                "correlations": {
                    "source": str(correlations)
                    if correlations
                    else f"measured on {n_probe} val images at eps {eps_corr:g}",
                    "eps": float(corr.eps),
                },
            },
            elapsed_s=time.perf_counter() - start,
        )
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    cost = record["ensemble"]["cost_multiple"]
    title = (
        f"{model}: worst case over {', '.join(record['ensemble']['members'])} on {len(idx)} samples "
        f"({norm}); cost {cost:.2f}x one BCE run (forward+backward passes)"
        if cost is not None
        else f"{model}: worst case on {len(idx)} samples ({norm})"
    )
    console.print(_summary_table(record, title))
    if per_sample:
        console.print(_samples_table(record))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(record, indent=1) + "\n")
        err_console.print(f"record written to {json_out}")
