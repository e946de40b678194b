"""Section validators of the robust study spec (:mod:`labelflip.study.robust_spec`): numbers, budgets, the
evaluation settings, the tables, the dataset (MULAN files found before any work) and canonical regulariser specs.
Every error names the spec key and the fix (:func:`labelflip._validation.fail`)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labelflip._validation import LabelflipError, did_you_mean, fail

__all__ = [
    "ROBUST_DATASETS",
    "RULE_DEFAULTS",
    "TABLE_DEFAULTS",
    "check_attack_options",
    "check_budgets",
    "check_dataset",
    "check_evaluation",
    "check_tables",
    "merge",
    "mulan_files",
    "number",
    "registry_attack",
    "regulariser_label",
    "regulariser_spec",
]

_OWNER = "robust study spec"
ROBUST_DATASETS = ("emotions", "yeast", "synthetic-tabular", "synthetic")
RULE_DEFAULTS: dict[str, Any] = {"loss_share": 0.5, "ratio": 4.0, "grid": None, "samples": 0}
"""The budget rule's defaults (:func:`labelflip.robust.choose_budgets`; ``samples`` 0: the whole validation split)."""

TABLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "table2": {"regulariser": "nuclear", "strengths": [0.0, 1e-3, 1e-2, 1e-1, 1.0], "eps": "larger"},
    "table3": {"regularisers": ["none", "l2", "nuclear", "arm-primal", "arm-sae", "arm-single"]},
    "table4": {"regulariser": "arm-sae", "lambdas": [0.0, 1e-3, 1e-2, 1e-1, 1.0]},
    "fig1": {"correlations": [0.0, 0.95], "regulariser": "arm-sae:1.0", "eps": "larger"},
}


def regulariser_spec(text: str, lam: float | None = None, *, param: str = "tables") -> str:
    """The canonical, explicit spec of regulariser ``text`` (every parameter written out, ``lam`` replacing its
    strength when given): ``"nuclear:0.01"`` -> ``"nuclear:lam=0.01,mode=prox"``; a zero strength is ``"none"``."""
    from labelflip.robust import REGULARISERS

    try:
        spec = REGULARISERS.parse(str(text))
    except LabelflipError as exc:
        raise fail(_OWNER, param, "regulariser specs (labelflip regularisers)", text, str(exc)) from None
    params = dict(spec.params)
    if lam is not None:
        if "lam" not in params:
            raise fail(_OWNER, param, "a regulariser with a strength", text, "e.g. 'nuclear' or 'arm-sae'.")
        params["lam"] = float(lam)
    if spec.name == "none" or params.get("lam") == 0.0:
        return "none"
    canonical = spec.name + ":" + ",".join(f"{k}={_text(v)}" for k, v in params.items())
    REGULARISERS.parse(canonical)  # the strength is checked against the parameter's bounds
    return canonical


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def regulariser_label(spec: str) -> str:
    """A short label for tables: ``"nuclear:lam=0.01,mode=prox"`` -> ``"nuclear λ=0.01"`` (other non-default
    parameters appended)."""
    from labelflip.robust import REGULARISERS

    parsed = REGULARISERS.parse(spec)
    defaults = parsed.entry.defaults() if parsed.entry is not None else {}
    extra = [f"{k}={_text(v)}" for k, v in parsed.params.items() if k != "lam" and v != defaults.get(k)]
    lam = parsed.params.get("lam")
    return " ".join([parsed.name, *([f"λ={lam:g}"] if lam is not None else []), *extra])


def merge(base: dict[str, Any], over: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        name = f"{prefix}{key}"
        if key not in base:
            raise fail(
                _OWNER,
                name,
                "a known key: " + ", ".join(sorted(base)),
                key,
                "check the spelling." + did_you_mean(str(key), base),
            )
        if key in ("budgets", "tables", "config", "attack_options") or not isinstance(base[key], dict):
            out[key] = copy.deepcopy(value)
        elif not isinstance(value, Mapping):
            raise fail(_OWNER, name, "a mapping with keys " + ", ".join(sorted(base[key])), value)
        else:
            out[key] = merge(base[key], value, f"{name}.")
    return out


def number(value: Any, param: str, *, low: float = 0.0, integer: bool = False, positive: bool = False) -> Any:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
    )
    ok = ok and (isinstance(value, int) or not integer) and (value > low if positive else value >= low)
    if not ok:
        kind = "an int" if integer else "a finite number"
        raise fail(_OWNER, param, f"{kind} {'>' if positive else '>='} {low:g}", value)
    return int(value) if integer else float(value)


def numbers(values: Any, param: str, **kw: Any) -> list[float]:
    if not isinstance(values, list) or not values:
        raise fail(_OWNER, param, "a non-empty list of numbers", values, "e.g. [0, 0.001, 0.01].")
    out = [number(v, param, **kw) for v in values]
    if len(set(out)) != len(out):
        raise fail(_OWNER, param, "distinct values", values, "drop the repeated one.")
    return out


def table_eps_setting(value: Any, param: str) -> str | float:
    if value in ("larger", "smaller"):
        return str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf"):
        return float(value)
    raise fail(_OWNER, param, "'larger', 'smaller' (one of the study's two budgets) or a number > 0", value)


def check_tables(raw: Any, dataset: str) -> dict[str, dict[str, Any]]:
    if isinstance(raw, list):
        raw = {str(name): {} for name in raw}
    if not isinstance(raw, Mapping) or not raw:
        raise fail(
            _OWNER,
            "tables",
            f"a non-empty mapping (or list) of tables from {sorted(TABLE_DEFAULTS)}",
            raw,
            "e.g. tables: {table2: {}, table3: {}}.",
        )
    tables: dict[str, dict[str, Any]] = {}
    for name, settings in raw.items():
        if name not in TABLE_DEFAULTS:
            raise fail(
                _OWNER,
                "tables",
                f"table names from {sorted(TABLE_DEFAULTS)}",
                name,
                "check the spelling." + did_you_mean(str(name), TABLE_DEFAULTS),
            )
        t = merge(TABLE_DEFAULTS[name], settings or {}, f"tables.{name}.")
        p = f"tables.{name}"
        if name == "table2":
            t["strengths"] = numbers(t["strengths"], f"{p}.strengths")
            t["regulariser"] = str(t["regulariser"])
            regulariser_spec(t["regulariser"], 1.0, param=f"{p}.regulariser")
            t["eps"] = table_eps_setting(t["eps"], f"{p}.eps")
        elif name == "table3":
            regs = t["regularisers"]
            if not isinstance(regs, list) or not regs:
                raise fail(_OWNER, f"{p}.regularisers", "a non-empty list of regulariser specs", regs)
            t["regularisers"] = [regulariser_spec(r, param=f"{p}.regularisers") for r in regs]
            if len(set(t["regularisers"])) != len(regs):
                raise fail(_OWNER, f"{p}.regularisers", "distinct regularisers", regs, "drop the repeated one.")
        elif name == "table4":
            t["lambdas"] = numbers(t["lambdas"], f"{p}.lambdas")
            t["regulariser"] = str(t["regulariser"])
            regulariser_spec(t["regulariser"], 1.0, param=f"{p}.regulariser")
        else:
            if dataset != "synthetic-tabular":
                raise fail(
                    _OWNER,
                    "tables.fig1",
                    "used with dataset synthetic-tabular (its correlation knob)",
                    dataset,
                    "drop fig1 or use dataset: {name: synthetic-tabular}.",
                )
            t["correlations"] = numbers(t["correlations"], f"{p}.correlations")
            if any(c > 1 for c in t["correlations"]):
                raise fail(_OWNER, f"{p}.correlations", "cosines in [0, 1]", t["correlations"])
            t["regulariser"] = regulariser_spec(t["regulariser"], param=f"{p}.regulariser")
            t["eps"] = table_eps_setting(t["eps"], f"{p}.eps")
        tables[str(name)] = t
    return tables


def check_dataset(ds: dict[str, Any]) -> dict[str, Any]:
    name = ds.get("name")
    if name not in ROBUST_DATASETS:
        raise fail(
            _OWNER,
            "dataset.name",
            f"one of {', '.join(ROBUST_DATASETS)}",
            name,
            "emotions / yeast need MULAN files (dataset.path); the others are built in.",
        )
    number(ds["seed"], "dataset.seed", integer=True)
    if not isinstance(ds.get("config"), Mapping):
        raise fail(_OWNER, "dataset.config", "a mapping of the dataset's options", ds.get("config"))
    if name in ("emotions", "yeast"):
        if ds["config"]:
            raise fail(_OWNER, "dataset.config", "empty for a MULAN dataset", ds["config"], "use dataset.seed.")
        mulan_files(ds)
        return ds
    for key in ("path", "xml"):
        if ds.get(key) is not None:
            raise fail(_OWNER, f"dataset.{key}", f"unset for the built-in dataset {name!r}", ds[key])
    from labelflip.data import SyntheticConfig, TabularConfig

    cls = TabularConfig if name == "synthetic-tabular" else SyntheticConfig
    names = {f.name for f in dataclasses.fields(cls)} - {"seed"}
    for key in ds["config"]:
        if key not in names:
            raise fail(
                _OWNER,
                f"dataset.config.{key}",
                f"a {cls.__name__} field: {', '.join(sorted(names))}",
                key,
                "check the spelling (the seed is dataset.seed)." + did_you_mean(str(key), names),
            )
    cls(**{**ds["config"], "seed": ds["seed"]})  # refuses bad values with the field's own message
    return ds


def mulan_files(ds: Mapping[str, Any]) -> tuple[Path, Path | None]:
    """The ARFF (and .xml) of a MULAN dataset section: ``dataset.path``, else found by ``find_mulan``."""
    from labelflip.data.mulan import find_mulan

    if ds.get("path") is None:
        try:
            return find_mulan(str(ds["name"]))
        except LabelflipError as exc:
            raise fail(
                _OWNER,
                "dataset.path",
                f"the MULAN file of {ds['name']} (.arff or .arff.gz)",
                None,
                f"set dataset.path in the YAML or --set dataset.path=/path/to/{ds['name']}.arff.gz (the .xml "
                f"beside it, or dataset.xml). Search: {exc}",
            ) from None
    path = Path(str(ds["path"])).expanduser()
    if not path.is_file():
        raise fail(
            _OWNER,
            "dataset.path",
            f"an existing MULAN file of {ds['name']}",
            str(path),
            f"set dataset.path in the YAML or --set dataset.path=/path/to/{ds['name']}.arff.gz (MULAN's file; "
            "relative paths in a YAML file are relative to the file).",
        )
    xml = None if ds.get("xml") is None else Path(str(ds["xml"])).expanduser()
    if xml is not None and not xml.is_file():
        raise fail(_OWNER, "dataset.xml", "an existing MULAN label file (.xml)", str(xml))
    return path, xml


def check_budgets(b: Any) -> dict[str, Any]:
    if not isinstance(b, Mapping) or set(b) not in ({"rule"}, {"absolute"}):
        raise fail(
            _OWNER,
            "budgets",
            "{rule: {loss_share, ratio, grid, samples}} or {absolute: [smaller, larger]}",
            b,
            "e.g. budgets: {absolute: [0.05, 0.2]}.",
        )
    if "absolute" in b:
        values = numbers(b["absolute"], "budgets.absolute", positive=True)
        if len(values) != 2:
            raise fail(_OWNER, "budgets.absolute", "two budgets [smaller, larger] (the paper's two)", values)
        return {"absolute": sorted(values)}
    rule = merge(RULE_DEFAULTS, b["rule"] or {}, "budgets.rule.")
    share = number(rule["loss_share"], "budgets.rule.loss_share", positive=True)
    if share >= 1:
        raise fail(_OWNER, "budgets.rule.loss_share", "a share in (0, 1)", share, "e.g. 0.5.")
    rule["loss_share"] = share
    rule["ratio"] = number(rule["ratio"], "budgets.rule.ratio", low=1.0)
    rule["samples"] = number(rule["samples"], "budgets.rule.samples", integer=True)
    if rule["grid"] is not None:
        rule["grid"] = sorted(numbers(rule["grid"], "budgets.rule.grid", positive=True))
    return {"rule": rule}


def check_evaluation(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "samples": number(e["samples"], "evaluation.samples", integer=True),
        "sae_delta": number(e["sae_delta"], "evaluation.sae_delta", positive=True),
        "gase_k_try": number(e["gase_k_try"], "evaluation.gase_k_try", low=1, integer=True),
        "gase_attack": registry_attack(e["gase_attack"], "evaluation.gase_attack"),
    }


def registry_attack(text: Any, param: str) -> str:
    from labelflip.attacks import attack_info, parse_attack

    try:
        attack = str(parse_attack(str(text)))
    except LabelflipError as exc:
        raise fail(_OWNER, param, "a registry attack (labelflip methods)", text, str(exc)) from None
    if attack_info(attack)["requires"]:
        raise fail(_OWNER, param, "an attack that needs no flip profile or correlations", attack,
                   "use maxflip, bce or linear.")  # fmt: skip
    return attack


def check_attack_options(attack: str, options: Any) -> dict[str, Any]:
    """``attack_options``: keyword options of ``gase`` or of the registry attack, refused before any work."""
    import inspect

    if not isinstance(options, Mapping):
        raise fail(_OWNER, "attack_options", "a mapping of the attack's options", options)
    if attack == "gase":
        from labelflip.estimators import gase

        target, fixed = gase, {"model", "x", "eps", "norm", "y", "labels"}
    else:
        from labelflip.attacks import parse_attack

        target, fixed = parse_attack(attack).entry.factory, {"model", "norm", "return_adv", "loss"}
    allowed = sorted(set(inspect.signature(target).parameters) - fixed)
    for key in options:
        if key not in allowed:
            raise fail(_OWNER, f"attack_options.{key}", f"an option of {attack}: {', '.join(allowed)}", key,
                       "check the spelling." + did_you_mean(str(key), allowed))  # fmt: skip
    return dict(options)
