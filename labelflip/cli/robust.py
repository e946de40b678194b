"""``labelflip train`` (:func:`labelflip.robust.train_robust`: early stopping on val, a safetensors checkpoint named
by its fingerprint, clean Micro/Macro-F1 and mAP) and ``labelflip estimate`` (SAE, GASE ``C_a`` per budget and, for
linear models, the exact maximum: :mod:`labelflip.estimators`) of the SAE paper (seed 004)."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from labelflip._validation import LabelflipError, check_choice, check_float, check_int, did_you_mean, fail
from labelflip.attacks import parse_attack
from labelflip.cli.common import app, console, err_console, fail_cleanly, progress_bar
from labelflip.cli.loading import check_model_name, dataset_text, parse_number
from labelflip.data import DATASETS, DatasetSplits, SyntheticConfig, create_dataset
from labelflip.data.mulan import find_mulan
from labelflip.estimators import exact_max_flips, gase, linear_parameters, phi_align, sae
from labelflip.models import MODELS, MultiLabelModel
from labelflip.models.architectures import ARCHITECTURES
from labelflip.models.checkpoints import read_metadata
from labelflip.robust import REGULARISERS, RobustTrainConfig, last_linear_weight, load_trained, train_robust
from labelflip.study.inputs import check_output_path, select_samples
from labelflip.study.loaders import load_model
from labelflip.study.matching import GENERATED_ROLES, check_model_fits
from labelflip.zoo.training import evaluate_model

__all__ = ["ARCH_ALIASES", "ESTIMATORS", "estimate", "open_dataset", "resolve_arch", "train"]

ARCH_ALIASES = {"linear": "linear_multilabel", "mlp": "mlp_multilabel"}
ESTIMATORS = ("sae", "gase", "exact")
_TABULAR = ("linear_multilabel", "mlp_multilabel")
CHECKPOINTS = Path("checkpoints")
_MULAN_HINT = "or a MULAN name with NAME.arff[.gz] + NAME.xml[.gz] in --dataset-path or ../shared/data/mulan"


def open_dataset(text: str, path: Path | None, split: str | None, owner: str) -> tuple[DatasetSplits, str, str]:
    """``(data, role, description)`` for ``--dataset`` (a registered spec, e.g. ``synthetic-tabular:0.9``, or a
    MULAN name such as ``yeast``), ``--dataset-path`` (a MULAN folder or ARFF file; the ``path`` of an on-disk
    dataset) and ``--split``. Names and paths are checked before any file is read or data generated."""
    if not isinstance(text, str) or not text.strip():
        raise fail(owner, "--dataset", "a dataset name", text, "e.g. --dataset synthetic-tabular or --dataset yeast.")
    path = None if path is None else Path(path).expanduser()
    if path is not None and not path.exists():
        raise fail(owner, "--dataset-path", "an existing file or folder", str(path), "check the path.")
    core, options = dataset_text(text.strip())
    base = core.partition(":")[0].strip().lower()
    if base not in DATASETS:
        try:  # a MULAN name: yeast, emotions
            find_mulan(core, path if path is not None and path.is_dir() else None)
        except LabelflipError:
            names, fix = DATASETS.list(), "see `labelflip datasets`." + did_you_mean(base, DATASETS.list())
            raise fail(
                owner, "--dataset", f"a registered dataset ({', '.join(names)}) {_MULAN_HINT}", text, fix
            ) from None
        core, base = f"mulan:name={core}", "mulan"
    entry = DATASETS.get(base)
    if path is not None:
        if entry.param("path") is None:
            raise fail(owner, "--dataset-path", f"left out: {base} is generated and reads no files", str(path))
        if base == "mulan" and path.is_dir():
            options["data_dir"] = str(path)
        else:
            options.update({"path": str(path), **({"name": ""} if base == "mulan" else {})})
            if entry.param("path").required:  # a placeholder for parsing; the option replaces it
                core += ("," if ":" in core else ":") + "path=-"
    try:
        spec = DATASETS.parse(core)
    except LabelflipError as exc:
        raise LabelflipError(f"{owner} --dataset: {exc}") from exc
    role = check_choice(owner, "--split", split or "test", GENERATED_ROLES)  # on-disk data: its loader's split
    with progress_bar() as prog:
        prog.add_task(f"{spec.name}: reading the dataset", total=None)
        data = create_dataset(core, **options)
    return data, role, (str(spec) if base != "mulan" else core) + (f" ({path})" if path is not None else "")


def resolve_arch(text: str, owner: str = "labelflip train") -> str:
    """The registered architecture ``--arch`` names: ``linear``, ``mlp`` or an image architecture."""
    name = ARCH_ALIASES.get(str(text).strip().lower(), str(text).strip().lower().replace("-", "_"))
    if name not in ARCHITECTURES:
        names = ["linear", "mlp", *(a for a in ARCHITECTURES.list() if a not in _TABULAR)]
        raise fail(owner, "--arch", "one of " + ", ".join(names), text, "pick one." + did_you_mean(str(text), names))
    return name


def _check_arch_fits(arch: str, data: DatasetSplits, owner: str) -> None:
    shape = tuple(int(s) for s in data.train.x.shape[1:])
    if arch not in _TABULAR and len(shape) != 3:
        fix = f"the dataset has {math.prod(shape)} features per sample; use --arch linear or --arch mlp."
        raise fail(owner, "--arch", "linear or mlp for tabular data", arch, fix)
    size = ARCHITECTURES.get(arch).meta.get("input_size")
    if size and tuple(size) != shape:
        fix = "train asl_convnet or query_label_net on small images, or resize the dataset (image_size=...)."
        raise fail(owner, "--arch", f"an architecture taking {shape} inputs", f"{arch}, which takes {size}", fix)


def _config(owner: str, **fields: Any) -> RobustTrainConfig:
    """The config; a bad field is reported under its CLI option name (``--batch-size``, not ``batch_size``)."""
    try:
        return RobustTrainConfig(**fields)
    except LabelflipError as exc:
        option = lambda m: f"'--{m.group(1).replace('_', '-')}' parameter of {owner}"  # noqa: E731
        raise LabelflipError(re.sub(r"'(\w+)' parameter of RobustTrainConfig", option, str(exc))) from exc


def _epoch_printer(label: str, prog: Any, task: Any) -> Any:
    """Per-epoch progress of :func:`train_robust`: a rich bar on a terminal, one plain line per epoch elsewhere."""

    def show(info: dict[str, Any]) -> None:
        text = f"epoch {info['epoch']}/{info['epochs']} loss {info['loss']:.4f} val micro-F1 {info['val_micro_f1']:.4f}"
        if err_console.is_terminal:
            prog.update(task, completed=info["epoch"], description=f"{label}: {text}")
        else:
            stop = f" (early stop; best epoch {info['best_epoch']})" if info["stopped"] else ""
            err_console.print(f"{label}: {text}{stop}", highlight=False)

    return show


def _align(module: Any) -> float | None:
    """``φ_align`` of the last linear layer (seed 004, Table 4), or None without one."""
    try:
        return phi_align(last_linear_weight(module))
    except LabelflipError:
        return None


@app.command()
def train(
    dataset: Annotated[
        str, typer.Option(help="dataset (required; no default): synthetic-tabular[:0.9], yeast, emotions, mulan:path=…")
    ],
    dataset_path: Annotated[
        Path | None, typer.Option(help="MULAN folder or ARFF file; the path of an on-disk dataset (default: none)")
    ] = None,
    arch: Annotated[str, typer.Option(help="linear, mlp or an image architecture, e.g. asl_convnet")] = "linear",
    regularizer: Annotated[
        str, typer.Option(help="none, l2:1e-3, nuclear:0.1, arm-primal:…, arm-sae:0.3, arm-single:… ('list')")
    ] = "none",
    loss: Annotated[str, typer.Option(help="hinge, logistic or asl (auto: hinge for linear, else logistic)")] = "auto",
    epochs: Annotated[int, typer.Option(help="maximum epochs")] = 100,
    patience: Annotated[int, typer.Option(help="early stopping: epochs without improvement (0: never)")] = 10,
    monitor: Annotated[str, typer.Option(help="micro_f1, loss (validation) or last (no early stopping)")] = "micro_f1",
    batch_size: Annotated[int, typer.Option(help="samples per optimiser step")] = 64,
    lr: Annotated[float, typer.Option(help="learning rate")] = 1e-2,
    optimizer: Annotated[str, typer.Option(help="adam or sgd (momentum 0.9)")] = "adam",
    reg_samples: Annotated[int, typer.Option(help="regularise on this many samples per batch (0: all)")] = 0,
    hidden: Annotated[int | None, typer.Option(help="hidden width of --arch mlp (default 64)")] = None,
    seed: Annotated[int, typer.Option(help="initialisation and shuffling seed")] = 0,
    out: Annotated[Path, typer.Option(help="folder of the <arch>-<fingerprint>.safetensors checkpoint")] = CHECKPOINTS,
    retrain: Annotated[bool, typer.Option(help="train even if the checkpoint of this exact setup exists")] = False,
) -> None:
    """Train a multi-label model with a regulariser (early stopping on val); write a checkpoint; print clean F1."""
    owner = "labelflip train"
    if regularizer.strip().lower() == "list":
        table = Table("spec", "description", title="Regularisers (--regularizer NAME[:λ][,key=value])")
        for entry in REGULARISERS:
            table.add_row(entry.signature(), entry.description)
        console.print(table)
        return
    try:
        try:
            reg = str(REGULARISERS.parse(regularizer))
        except LabelflipError as exc:
            raise LabelflipError(f"{owner} --regularizer: {exc} All: `labelflip train --regularizer list`.") from exc
        name = resolve_arch(arch, owner)
        loss_name = ("hinge" if name == "linear_multilabel" else "logistic") if loss == "auto" else loss
        if hidden is not None and name != "mlp_multilabel":
            raise fail(owner, "--hidden", "left out unless --arch mlp", hidden, "drop --hidden.")
        kwargs = {} if hidden is None else {"hidden": check_int(owner, "--hidden", hidden, low=1, fix="e.g. 64.")}
        config = _config(
            owner,
            **dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, loss=loss_name),
            **dict(regulariser=reg, reg_samples=reg_samples, patience=patience, monitor=monitor, seed=seed),
        )
        check_output_path(out, owner=owner, param="--out", directory=True)
        data, _, described = open_dataset(dataset, dataset_path, None, owner)
        _check_arch_fits(name, data, owner)
        start = time.perf_counter()
        with progress_bar() as prog:
            show = _epoch_printer(f"{arch} {reg}", prog, prog.add_task(f"{arch} {reg}", total=epochs))
            trained = train_robust(
                name, data, config, arch_kwargs=kwargs, progress=show, checkpoint_dir=out, retrain=retrain
            )
        seconds = time.perf_counter() - start
        scores = {role: evaluate_model(trained.module, getattr(data, role)) for role in ("val", "test")}
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    how = f"trained in {seconds:.1f} s, {len(trained.history)} epochs, best epoch {trained.best_epoch}"
    how = "loaded (this data, config and code were trained before; --retrain redoes it)" if trained.cached else how
    title = f"{name} ({reg}, {loss_name} loss) on {described}: {how}"
    console.print(title, soft_wrap=True, highlight=False)
    table = Table("split", "samples", "Micro-F1", "Macro-F1", "mAP")
    for role, m in scores.items():
        table.add_row(role, str(len(getattr(data, role))), *(f"{m[c]:.4f}" for c in ("micro_f1", "macro_f1", "map")))
    console.print(table)
    if (align := _align(trained.module)) is not None:
        console.print(f"φ_align of the last layer: {align:.4f}")
    path = f" --dataset-path {dataset_path}" if dataset_path is not None else ""
    console.print(f"checkpoint: {trained.path} (fingerprint {trained.fingerprint})", soft_wrap=True)
    console.print(f"next: labelflip estimate --model {trained.path} --dataset {dataset}{path} --eps 1", soft_wrap=True)


def _parse_methods(text: str | None, have_eps: bool, owner: str) -> list[str]:
    if text is None:
        return ["sae", "gase"] if have_eps else ["sae"]
    items = [check_choice(owner, "--method", t.strip().lower(), ESTIMATORS) for t in text.split(",") if t.strip()]
    if not items or len(set(items)) != len(items):
        raise fail(owner, "--method", "a comma-separated list of distinct estimators", text, "e.g. sae,gase,exact.")
    if not have_eps and set(items) & {"gase", "exact"}:
        fix = "give budgets, e.g. --eps 0.5 --eps 1 (standardised-feature units for tabular data, pixels for images)."
        raise fail(owner, "--eps", f"at least one budget for {text}", None, fix)
    return items


def _parse_eps(values: list[str] | None, owner: str) -> list[float]:
    budgets = []
    for item in (t.strip() for v in values or [] for t in v.split(",") if t.strip()):
        try:
            value = parse_number(item)
        except (ValueError, ZeroDivisionError):
            value = float("nan")
        if not (math.isfinite(value) and value >= 0):
            raise fail(owner, "--eps", "finite budgets >= 0 (numbers or ratios)", item, "e.g. --eps 0.5 --eps 8/255.")
        budgets.append(value)
    return budgets


def _trained_on(seen: Any) -> str | None:
    """The ``--dataset`` that a checkpoint's data config names (synthetic-tabular or MULAN data), else None."""
    kind = seen.get("kind") if isinstance(seen, dict) else None
    if seen == SyntheticConfig().to_dict():  # the built-in images (no kind recorded)
        return "synthetic"
    if kind == "synthetic-tabular":
        defaults = DATASETS.get(kind).defaults()
        diff = ",".join(f"{k}={v}" for k, v in seen.items() if k in defaults and defaults[k] != v)
        return kind + (f":{diff}" if diff else "")
    if kind == "mulan":
        name = re.sub(r"(\.orig)?\.arff(\.gz)?$", "", str(seen.get("path", "")))
        return f"mulan:name={name},seed={seen['seed']}" if seen.get("seed") else name
    return None


def _load_checkpoint(
    path: Path, dataset: str | None, dataset_path: Path | None, split: str, owner: str
) -> tuple[MultiLabelModel, str, DatasetSplits, str, str]:
    """A checkpoint of ``labelflip train`` and its data (default: the data it was trained on, when known)."""
    if not path.is_file():
        raise fail(owner, "--model", "an existing checkpoint file", str(path), "check the path (see labelflip train).")
    trained, seen = load_trained(path), read_metadata(path).get("data_config")
    hint = _trained_on(seen)
    if dataset is None and hint is None:
        raise fail(owner, "--dataset", "given for this checkpoint", None, "name the data it was trained on.")
    data, role, described = open_dataset(dataset or hint, dataset_path, split, owner)
    k, d = trained.model.num_labels, trained.arch_kwargs.get("num_features")
    shape = tuple(getattr(data, role).x.shape[1:])
    if d is not None and (shape != (d,) or k != len(data.label_names)):
        got = f"{described}: {math.prod(shape)} features, {len(data.label_names)} labels"
        fix = f"use the data it was trained on{f': --dataset {hint}' if hint else ''}."
        raise fail(owner, "--dataset", f"data like {path.name}'s ({d} features, {k} labels)", got, fix)
    if d is None:
        check_model_fits(trained.model, data, name=path.name, role=role)
    config = data.config.to_dict() if hasattr(data.config, "to_dict") else data.config
    if seen and json.loads(json.dumps(config, default=str)) != seen:
        err_console.print(f"note: {path.name} was trained on other data ({hint or seen}).", highlight=False)
    return trained.model, trained.fingerprint, data, role, described


def _load_estimated(
    model: str, dataset: str | None, dataset_path: Path | None, split: str, owner: str
) -> tuple[MultiLabelModel, str, DatasetSplits, str, str]:
    """``(wrapped model, fingerprint, data, role, dataset description)`` for ``--model``, checked against the data."""
    if Path(model).expanduser().is_file() or model.endswith(".safetensors"):
        return _load_checkpoint(Path(model).expanduser(), dataset, dataset_path, split, owner)
    builtin = [n for n in MODELS.list() if not MODELS.get(n).meta.get("checkpoint_required")]
    if model.partition(":")[0].strip().lower() not in builtin:
        expected = "a checkpoint file of `labelflip train`, or a built-in model (" + ", ".join(builtin) + ")"
        raise fail(owner, "--model", expected, model, "check the path or the name." + did_you_mean(model, builtin))
    check_model_name(model, owner)
    data, role, described = open_dataset(dataset or "synthetic", dataset_path, split, owner)
    with progress_bar() as prog:
        task = prog.add_task(f"{model}: load or train", total=None)
        wrapped, fp, _ = load_model(model, data, role=role, progress=lambda *_: prog.advance(task), owner=owner)
    return wrapped, fp, data, role, described


@app.command()
def estimate(
    model: Annotated[
        str,
        typer.Option(help="a checkpoint from `labelflip train`, or a built-in model (asl-cnn); required, no default"),
    ],
    dataset: Annotated[str | None, typer.Option(help="dataset (as for train; default: the model's own)")] = None,
    dataset_path: Annotated[Path | None, typer.Option(help="MULAN folder or ARFF file (default: none)")] = None,
    split: Annotated[str, typer.Option(help="split estimated: train, val or test")] = "test",
    samples: Annotated[int | None, typer.Option(help="samples (seeded selection; default: 100 or the split)")] = None,
    seed: Annotated[int, typer.Option(min=0, help="sample-selection seed")] = 0,
    eps: Annotated[
        list[str] | None,
        typer.Option(help="budgets (input units): --eps 0.5 --eps 1, or 0.5,1 (default: none, SAE only)"),
    ] = None,
    norm: Annotated[str, typer.Option(help="l2 (the paper) or linf")] = "l2",
    method: Annotated[str | None, typer.Option(help="sae,gase,exact (default: sae, and gase with --eps)")] = None,
    against: Annotated[str, typer.Option(help="labels counted against: prediction or truth")] = "prediction",
    oracle: Annotated[str, typer.Option(help="GASE oracle: auto (exact if linear), exact or attack")] = "auto",
    attack: Annotated[str, typer.Option(help="the attack oracle's attack (`labelflip methods`)")] = "bce",
    k_try: Annotated[int, typer.Option(help="GASE candidates tried per greedy step")] = 3,
    time_limit: Annotated[float | None, typer.Option(help="exact: MILP seconds per sample (default: none)")] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write the numbers as JSON here (default: none)")
    ] = None,
) -> None:
    """Estimate attackability: SAE, GASE C_a at each budget and (linear models) the exact maximum of flips."""
    owner = "labelflip estimate"
    try:
        check_choice(owner, "--norm", norm, ("l2", "linf"))
        check_choice(owner, "--against", against, ("prediction", "truth"))
        check_choice(owner, "--oracle", oracle, ("auto", "exact", "attack"))
        budgets = _parse_eps(eps, owner)
        methods = _parse_methods(method, bool(budgets), owner)
        try:
            attack_spec = str(parse_attack(attack))
        except LabelflipError as exc:
            raise LabelflipError(f"{owner} --attack: {exc}") from exc
        if samples is not None:
            check_int(owner, "--samples", samples, low=1, fix="e.g. --samples 100.")
        check_int(owner, "--k-try", k_try, low=1, fix="e.g. --k-try 3 (1: plain greedy).")
        if time_limit is not None:
            check_float(owner, "--time-limit", time_limit, low=0.0, low_inclusive=False, fix="seconds > 0.")
        if json_path is not None:
            check_output_path(json_path, owner=owner, param="--json")
        wrapped, fp, data, role, described = _load_estimated(model, dataset, dataset_path, split, owner)
        part = getattr(data, role)
        count = min(100, len(part)) if samples is None else samples
        idx = select_samples(part, count, seed, owner=owner, param="--samples")
        x, y = part.x[idx], (part.y[idx] if against == "truth" else None)
        k = len(data.label_names)
        linear = linear_parameters(wrapped, tuple(x.shape[1:])) is not None
        if not linear and ("exact" in methods or oracle == "exact"):
            param = "--method" if "exact" in methods else "--oracle"
            raise fail(owner, param, "'exact' only for a linear model", model, "use --arch linear, or drop exact.")
        if "exact" in methods and norm == "l2" and k > 16:
            fix = "use --norm linf (exact by MILP), or drop exact."
            raise fail(owner, "--method", f"no 'exact' at L2 for K = {k} > 16 labels (enumeration)", method, fix)
        result: dict[str, Any] = {
            "format": "labelflip.estimate/1",
            **dict(model=model, fingerprint=fp, dataset=described, split=split, samples=len(idx), seed=seed),
            **dict(num_labels=k, inputs="features" if x.ndim == 2 else "images", norm=norm, against=against),
            **dict(linear=linear, phi_align=_align(wrapped), sae=None, budgets=[]),
        }
        with progress_bar() as prog:
            per_eps = len([m for m in methods if m != "sae"])
            task = prog.add_task(f"{Path(model).name}: estimating", total=len(budgets) * per_eps + 1)
            if "sae" in methods:
                start = time.perf_counter()
                s = sae(wrapped, x, y=y, norm=norm)
                result["sae"] = {"mean": s.mean(), "median": s.median(), "seconds": time.perf_counter() - start}
            prog.advance(task)
            for e in budgets:
                row: dict[str, Any] = {"eps": e}
                if "gase" in methods:
                    g = gase(wrapped, x, e, norm=norm, y=y, oracle=oracle, attack=attack_spec, k_try=k_try)
                    calls = float(g.oracle_calls.double().mean())
                    row["gase"] = {"c_a": g.mean(), "oracle": g.oracle, "seconds": g.seconds, "oracle_calls": calls}
                    prog.advance(task)
                if "exact" in methods:
                    r = exact_max_flips(wrapped, x, e, norm=norm, y=y, time_limit=time_limit)
                    row["exact"] = {"c_star": r.mean(), "method": r.method, "seconds": r.seconds}
                    if "gase" in methods:
                        gap = (r.flips - g.flips).double()
                        row["exact"].update(gap=float(gap.mean()), gase_optimal_share=float((gap <= 0).double().mean()))
                    prog.advance(task)
                result["budgets"].append(row)
    except LabelflipError as exc:
        fail_cleanly(exc)
        return
    _print_estimates(result)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {json_path}")


def _print_estimates(r: dict[str, Any]) -> None:
    head = f"{r['model']} ({r['fingerprint']}) on {r['dataset']} {r['split']}: {r['samples']} samples"
    tail = f"K = {r['num_labels']}, {r['norm']} budgets, flips counted against the {r['against']}"
    console.print(f"{head}, {tail}", soft_wrap=True, highlight=False)
    if r["sae"] is not None:
        console.print(f"SAE (per-dataset mean φ): {r['sae']['mean']:.4f} (median {r['sae']['median']:.4f})")
    if r["phi_align"] is not None:
        console.print(f"φ_align of the last layer: {r['phi_align']:.4f}")
    units = "standardised-feature" if r["inputs"] == "features" else "pixel"
    cols = ("eps", "GASE C_a", "GASE oracle", "exact C*", "exact method", "gap (exact − GASE)", "seconds")
    table = Table(*cols, title=f"Labels flippable within each budget ({units} units)", title_justify="left")
    for row in r["budgets"]:
        g, x = row.get("gase") or {}, row.get("exact") or {}
        gap = f"{x['gap']:.3f} ({x['gase_optimal_share']:.0%} optimal)" if "gap" in x else "-"
        c_a, c_star = (f"{v:.3f}" if v is not None else "-" for v in (g.get("c_a"), x.get("c_star")))
        secs = f"{g.get('seconds', 0.0) + x.get('seconds', 0.0):.2f}"
        table.add_row(f"{row['eps']:g}", c_a, g.get("oracle", "-"), c_star, x.get("method", "-"), gap, secs)
    if r["budgets"]:
        console.print(table)
