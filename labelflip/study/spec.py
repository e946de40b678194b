"""Study specification: one YAML file (validated) describes a whole evaluation (seed paper §VI).

Precedence: command-line overrides > the YAML file > defaults. Example::

    name: my-study
    output: labelflip-runs/my-study
    models:
      - asl-cnn                                   # a built-in model
      - {name: q2l-r101-448, checkpoint: q2l.pkl} # a registered model with its checkpoint (spec_checks lists keys)
      - name: mine                                # your own: a factory "module:callable" or "file.py:callable"
        factory: mypkg.models:build               # returning an nn.Module with logits (N, K)
        checkpoint: mine.pth                      # optional, any format (safetensors, weights-only torch.load)
        labels: [cat, dog]                        # optional names of its outputs (else the checkpoint's)
        mean: [0.485, 0.456, 0.406]               # optional normalisation inside the wrapper
        std: [0.229, 0.224, 0.225]
    dataset: {name: synthetic, split: test}       # split attacked; profile/correlations use "val"
    # or a real dataset: {name: coco, path: /data/coco, split: val2014, config: {image_size: 448}}
    samples: {count: 100, seed: 0}
    budgets: {fractions: [0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0]}   # of eps_max; or {absolute: [0.004, 0.008]}
    norm: linf
    methods: [bce, linear, slam, random, "class:0", "class:0.5", "class:1"]
    baseline: bce
    seeds: [0]                                    # seeds of stochastic methods (random subsets)
    profile: {samples: 100, interval: 10, order: 4, curve: max, max_steps: 2000}   # cap in MI-FGSM steps
    correlations: {samples: 100, eps: 0.005}
    attack: {bce_formulation: stable, clip: final, l2_mode: project}   # MI-FGSM settings of every method
    preset: paper                                 # optional: the authors' behaviour (labelflip.study.presets)
    attackability: {per_label: 100, eps: 0.01, images: 2000}   # Table II on training images; 0 = skip
    runtime: {device: auto, precision: fp32, channels_last: false, compile: false, batch_size: null}  # or bf16, auto
    compare: {baselines: [ml-deepfool], methods: [bce, slam], samples: null}   # Table VII stage (study/table7.py)

A **preset** (``preset: paper``) sits between the defaults and the file: it sets ``profile.curve``, the ``attack``
settings and renames ``class`` methods to ``class-raw`` (:mod:`labelflip.study.presets` lists exactly what it
changes); the file and the command line still override single settings. A profile that stopped at its cap
(``profile.max_steps``) is refused unless ``profile.allow_capped: true``.

The **config hash** covers everything that changes results (everything but the name, the output directory
and the report options; the chunk size defines the units of work and their batches, so it is included): a
stored study refuses to resume under a different hash. Of ``runtime`` (:mod:`labelflip.models.runtime`) only a
``precision`` other than fp32 is hashed: device, channels-last, compile and batch size leave fp32 results the same
up to float rounding, so a study may resume on another machine; they are recorded in the manifest.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from labelflip._registry import Spec
from labelflip._validation import LabelflipError, did_you_mean, fail
from labelflip.analysis import DEFAULT_MAX_STEPS, PAPER_FRACTIONS
from labelflip.attacks import parse_attack
from labelflip.models.runtime import check_runtime
from labelflip.study.presets import chosen_preset, preset_methods, with_preset
from labelflip.study.spec_checks import (
    ModelEntry,
    check_dataset,
    check_floats,
    check_models,
    model_dict,
    resolve_beside,
)
from labelflip.study.table7 import COMPARE_DEFAULTS, check_compare

__all__ = ["DEFAULTS", "DEMO_SPEC", "ModelEntry", "StudySpec", "load_spec", "spec_from_dict"]

DEFAULTS: dict[str, Any] = {
    "name": "study",
    "output": "labelflip-runs/study",
    "models": ["asl-cnn"],
    "dataset": {"name": "synthetic", "split": None, "config": {}},
    "samples": {"count": 100, "seed": 0},
    "budgets": {"fractions": list(PAPER_FRACTIONS)},
    "norm": "linf",
    "methods": ["bce", "linear", "slam", "random", "class:0", "class:0.5", "class:1"],
    "baseline": "bce",
    "seeds": [0],
    "profile": {
        "samples": 100,
        "interval": 10,
        "order": 4,
        "curve": "max",
        "max_steps": DEFAULT_MAX_STEPS,
        "min_points": None,
        "allow_capped": False,
    },
    "correlations": {"samples": 100, "eps": 0.005},
    "attackability": {"per_label": 0, "eps": 0.01, "images": 2000},
    "chunk": 16,
    "report": {"examples": 4},
    "attack": {"bce_formulation": "stable", "clip": "final", "l2_mode": "project"},
    "preset": None,
    "compare": COMPARE_DEFAULTS,
    "runtime": {"device": "auto", "precision": "fp32", "channels_last": False, "compile": False, "batch_size": None},
}
_HASH_IF_CHANGED = {"preset": None, "attack": DEFAULTS["attack"], "profile.max_steps": DEFAULT_MAX_STEPS,
                    "compare": DEFAULTS["compare"], "runtime": {"precision": "fp32"}}  # fmt: skip
"""Settings added after studies were stored: hashed only when they differ from their defaults, so a study stored
before they existed still resumes (their defaults are the old behaviour)."""
_NEVER_HASHED = ("profile.allow_capped",)  # whether a capped profile may be used changes no stored row
_NEVER_HASHED += tuple(f"runtime.{k}" for k in ("device", "channels_last", "compile", "batch_size"))  # not results
DEMO_SPEC = Path(__file__).with_name("demo.yaml")
"""The built-in demo study (both built-in models, the paper's grid, sized for 2 CPU cores)."""
_NOT_HASHED = ("name", "output", "report")
_OWNER = "study spec"


@dataclass
class StudySpec:
    """A validated study specification (see the module docstring for the YAML layout)."""

    name: str
    output: str
    models: list[ModelEntry]
    dataset: dict[str, Any]
    samples: dict[str, int]
    budgets: dict[str, list[float]]
    norm: str
    methods: list[str]
    baseline: str
    seeds: list[int]
    profile: dict[str, Any]
    correlations: dict[str, Any]
    attackability: dict[str, Any]
    chunk: int
    report: dict[str, Any] = field(default_factory=dict)
    attack: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    compare: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(COMPARE_DEFAULTS))
    runtime: dict[str, Any] = field(default_factory=lambda: dict(DEFAULTS["runtime"]))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["models"] = [model_dict(m) for m in self.models]
        return d

    def config_hash(self) -> str:
        """sha256 (16 hex) of the canonical JSON of everything that changes results."""
        d = {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED}
        for section in ("profile", "runtime"):
            d[section] = {k: v for k, v in d[section].items() if f"{section}.{k}" not in _NEVER_HASHED}
        if d["profile"].get("min_points") is None:
            d["profile"].pop("min_points", None)
        for dotted, default in _HASH_IF_CHANGED.items():
            section, _, key = dotted.partition(".")
            node = d[section] if key else d
            if (node.get(key) if key else node.get(section)) == default:
                node.pop(key or section, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def method_specs(self) -> list[Spec]:
        """The methods as parsed specs (canonical strings, labels, registry entries)."""
        return [parse_attack(m) for m in self.methods]

    @property
    def baseline_label(self) -> str:
        return parse_attack(self.baseline).label


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Overlay ``over`` on ``base``; sections merge key by key (unknown keys are errors), ``budgets`` is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key not in base:
            raise fail(
                _OWNER,
                str(key),
                "a known key: " + ", ".join(sorted(base)),
                key,
                "check the spelling." + did_you_mean(str(key), base),
            )
        if key == "dataset" and isinstance(value, Mapping):  # open-ended: a loader's options (check_dataset)
            out[key] = {**out[key], **copy.deepcopy(dict(value))}
        elif isinstance(base[key], dict) and key != "budgets":
            if not isinstance(value, Mapping):
                raise fail(_OWNER, key, "a mapping with keys " + ", ".join(sorted(base[key])), value)
            for sub in value:
                if sub not in base[key]:
                    raise fail(
                        _OWNER,
                        f"{key}.{sub}",
                        "a known key: " + ", ".join(sorted(base[key])),
                        sub,
                        "check the spelling." + did_you_mean(str(sub), base[key]),
                    )
            out[key] = {**out[key], **copy.deepcopy(dict(value))}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_override(d: dict[str, Any], dotted: str, raw: str) -> None:
    """Apply ``a.b=value`` (value parsed as YAML: numbers, lists, strings)."""
    import yaml

    keys = dotted.split(".")
    if (keys[0] == "models" and len(keys) > 1) or keys[-1] in _MODEL_KEYS:
        fix = f"{keys[-1]!r} does not apply to --set: `models` is a list whose entries are set in the YAML file."
        raise fail(_OWNER, "--set", "a key of a spec section", dotted, fix + " --models takes built-in names.")
    if keys[0] == "budgets" and len(keys) == 2 and keys[1] in ("fractions", "absolute"):
        d["budgets"] = {keys[1]: yaml.safe_load(raw)}  # one of the two: setting one replaces the other
        return
    node = d
    for key in keys[:-1]:
        if key not in node or not isinstance(node[key], dict):
            fix = _elsewhere(key) or ("check the spelling." + did_you_mean(key, node))
            raise fail(_OWNER, "--set", f"a dotted path into the spec (no {key!r} section)", dotted, fix)
        node = node[key]
    if keys[-1] not in node and keys[0] != "dataset":
        fix = _elsewhere(keys[-1])
        fix = fix or "check the spelling." + did_you_mean(keys[-1], node)
        raise fail(_OWNER, "--set", "an existing key", dotted, fix)
    node[keys[-1]] = yaml.safe_load(raw)


_MODEL_KEYS = ("factory", "weights", "checkpoint", "labels", "trust_pickle", "sha256", "mean", "std", "threshold")


def _elsewhere(key: str) -> str:
    """Where a key that exists but does not apply here lives (for --set errors), or ''."""
    if key in DEFAULTS and not isinstance(DEFAULTS[key], dict):
        return f"{key!r} exists but is not a section: --set {key}=VALUE."
    where = [f"{k} (--set {k}.{key}=...)" for k, v in DEFAULTS.items() if isinstance(v, dict) and key in v]
    return f"{key!r} exists but does not apply there; it is a key of {', '.join(where)}." if where else ""


def _validate(d: dict[str, Any]) -> StudySpec:
    def integer(value: Any, param: str, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise fail(_OWNER, param, f"an int >= {low}", value)
        return value

    if not isinstance(d["name"], str) or not d["name"]:
        raise fail(_OWNER, "name", "a non-empty string", d["name"])
    if not isinstance(d["output"], str) or not d["output"]:
        raise fail(_OWNER, "output", "a directory path", d["output"])
    ds = check_dataset(d["dataset"])
    samples = {
        "count": integer(d["samples"].get("count"), "samples.count", 2),
        "seed": integer(d["samples"].get("seed"), "samples.seed", 0),
    }
    budgets = d["budgets"]
    if set(budgets) not in ({"fractions"}, {"absolute"}):
        raise fail(_OWNER, "budgets", "either {fractions: [...]} (of eps_max) or {absolute: [...]}", budgets)
    key = next(iter(budgets))
    budgets = {key: check_floats(budgets[key], f"budgets.{key}")}
    if d["norm"] not in ("linf", "l2"):
        raise fail(_OWNER, "norm", "'linf' or 'l2'", d["norm"])
    if not isinstance(d["methods"], list) or not d["methods"]:
        raise fail(_OWNER, "methods", "a non-empty list of method specs", d["methods"])
    preset = d.get("preset")
    parsed = [parse_attack(m) for m in preset_methods(preset, [str(m) for m in d["methods"]])]
    methods = [str(m) for m in parsed]
    if len(set(methods)) != len(methods):
        dup = next(m for m in methods if methods.count(m) > 1)
        raise fail(
            _OWNER,
            "methods",
            "distinct methods",
            d["methods"],
            f"{dup!r} is listed twice (spellings such as 'slam' and 'slam:0.5' are the same method); drop one.",
        )
    labels = [m.label for m in parsed]
    if len(set(labels)) != len(labels):
        dup = next(label for label in labels if labels.count(label) > 1)
        raise fail(_OWNER, "methods", "methods with distinct table labels", d["methods"], f"two share {dup!r}.")
    baseline = str(parse_attack(str(d["baseline"])))
    if baseline not in methods:
        raise fail(_OWNER, "baseline", "one of the study's methods", d["baseline"], f"add it to methods: {methods}.")
    seeds = d["seeds"]
    if not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds):
        raise fail(_OWNER, "seeds", "a non-empty list of distinct ints >= 0", seeds)
    seeds = [integer(s, "seeds", 0) for s in seeds]
    prof = d["profile"]
    if prof.get("curve") not in ("max", "bce"):
        raise fail(_OWNER, "profile.curve", "'max' or 'bce'", prof.get("curve"))
    profile = {
        "samples": integer(prof.get("samples"), "profile.samples", 2),
        "interval": integer(prof.get("interval"), "profile.interval", 1),
        "order": integer(prof.get("order"), "profile.order", 1),
        "curve": prof["curve"],
        "max_steps": integer(prof.get("max_steps"), "profile.max_steps", 1),
        "min_points": None if prof.get("min_points") is None else integer(prof["min_points"], "profile.min_points", 2),
        "allow_capped": prof.get("allow_capped"),
    }
    if profile["max_steps"] < profile["interval"]:
        raise fail(_OWNER, "profile.max_steps", f"at least profile.interval = {profile['interval']}", prof["max_steps"])
    if not isinstance(profile["allow_capped"], bool):
        raise fail(_OWNER, "profile.allow_capped", "true or false", profile["allow_capped"])
    attack = dict(d["attack"])
    for key, choices in (("bce_formulation", ("stable", "authors")), ("clip", ("final", "step", "bounds"))):
        if attack.get(key) not in choices:
            raise fail(_OWNER, f"attack.{key}", " or ".join(map(repr, choices)), attack.get(key))
    if attack.get("l2_mode") not in ("project", "paper"):
        raise fail(_OWNER, "attack.l2_mode", "'project' or 'paper'", attack.get("l2_mode"))
    corr = d["correlations"]
    eps = corr.get("eps")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < math.inf:
        raise fail(_OWNER, "correlations.eps", "a finite number > 0", eps)
    correlations = {"samples": integer(corr.get("samples"), "correlations.samples", 1), "eps": float(eps)}
    att = d["attackability"]
    att_eps = att.get("eps")
    if not isinstance(att_eps, (int, float)) or isinstance(att_eps, bool) or not 0 < att_eps < math.inf:
        raise fail(_OWNER, "attackability.eps", "a finite number > 0", att_eps)
    attackability = {
        "per_label": integer(att.get("per_label"), "attackability.per_label", 0),
        "eps": float(att_eps),
        "images": integer(att.get("images"), "attackability.images", 1),
    }
    return StudySpec(
        name=d["name"],
        output=d["output"],
        models=check_models(d["models"]),
        dataset=ds,
        samples=samples,
        budgets=budgets,
        norm=d["norm"],
        methods=methods,
        baseline=baseline,
        seeds=seeds,
        profile=profile,
        correlations=correlations,
        attackability=attackability,
        chunk=integer(d["chunk"], "chunk", 1),
        report=dict(d["report"]),
        attack=attack,
        preset=preset,
        compare=check_compare(d["compare"], methods=methods, count=samples["count"]),
        runtime=check_runtime(d["runtime"], _OWNER, "runtime."),
    )


def load_spec(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    sets: Sequence[str] = (),
) -> StudySpec:
    """Defaults < YAML file < ``overrides`` (top-level keys) < ``sets`` (``"a.b=value"`` strings)."""
    import yaml

    data: Mapping[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise fail(_OWNER, "path", "an existing YAML file", str(path), "check the path of the study spec.")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise LabelflipError(f"study spec {path}: not valid YAML ({exc}). Fix the file.") from exc
        if not isinstance(data, Mapping):
            raise fail(_OWNER, "path", "a YAML mapping at the top level", type(data).__name__)
    d = with_preset(DEFAULTS, chosen_preset(data, overrides, sets))
    if data:
        d = _merge(d, data)
    if overrides:
        d = _merge(d, {k: v for k, v in overrides.items() if v is not None})
    for item in sets:
        if "=" not in item:
            raise fail(_OWNER, "--set", "'key.path=value'", item)
        key, raw = item.split("=", 1)
        _set_override(d, key.strip(), raw)
    spec = _validate(d)
    if path is not None:  # factory files, checkpoints and dataset paths in the YAML resolve beside it, not in the cwd
        spec.models = [_beside(m, Path(path).resolve().parent) for m in spec.models]
        spec.dataset = resolve_beside(spec.dataset, Path(path).resolve().parent)
    return spec


def _beside(entry: ModelEntry, base: Path) -> ModelEntry:
    target, sep, attr = (entry.factory or "").rpartition(":")
    if sep and target.endswith(".py") and not Path(target).is_absolute():
        entry = replace(entry, factory=f"{base / target}:{attr}")
    if entry.weights is not None and not Path(entry.weights).is_absolute():
        entry = replace(entry, weights=str(base / entry.weights))
    if entry.checkpoint is not None and not Path(entry.checkpoint).expanduser().is_absolute():
        entry = replace(entry, checkpoint=str(base / entry.checkpoint))
    return entry


def spec_from_dict(data: Mapping[str, Any]) -> StudySpec:
    """A :class:`StudySpec` from :meth:`StudySpec.to_dict` output (e.g. a stored manifest's ``spec``)."""
    return _validate(_merge(with_preset(DEFAULTS, chosen_preset(data, None, ())), data))
