"""The robust study kind: one YAML file (``kind: robust``) reproducing the SAE paper's evaluation (seed 004, §5,
Tables 2-4) on one dataset, validated before any work.

Layout (every key optional except ``kind`` and ``dataset.name``; defaults in :data:`ROBUST_DEFAULTS`)::

    kind: robust
    name: robust-yeast
    output: labelflip-runs/robust-yeast
    dataset: {name: yeast, path: /data/yeast.arff.gz, seed: 0}   # emotions | yeast | synthetic-tabular | synthetic
    model: {family: linear, loss: hinge}          # linear | mlp (tabular), cnn (the built-in asl_convnet, images)
    train: {epochs: 40, batch_size: 64, lr: 0.01, monitor: last}  # RobustTrainConfig fields (seed: from seeds)
    seeds: [0]                                    # one trained model per seed and regulariser
    norm: l2
    attack: auto                                  # auto: GASE's perturbation (linear), MaxFlip (deep); or a spec
    budgets: {rule: {loss_share: 0.5, ratio: 4}}  # choose_budgets on the undefended model; or {absolute: [a, b]}
    evaluation: {samples: 0}                      # test samples evaluated (0: the whole test split)
    tables:
      table2: {strengths: [0, 0.001, 0.01, 0.1, 1.0], eps: larger}   # nuclear norm: GASE C_a and SAE, Spearman
      table3: {regularisers: [none, l2, nuclear, arm-primal, arm-sae, arm-single]}
      table4: {regulariser: arm-sae, lambdas: [0, 0.01, 0.1, 1.0]}   # phi_align and clean/attacked F1 over lambda
      fig1: {correlations: [0.0, 0.95], regulariser: "arm-sae:1.0"} # synthetic-tabular only: the paper's Fig. 1

MULAN data (emotions, yeast): ``dataset.path`` is the ``.arff[.gz]`` file (its ``.xml`` beside it, or
``dataset.xml``); without it the file is searched where :func:`labelflip.data.mulan.find_mulan` looks. Paths in
the YAML resolve beside the file; ``--set dataset.path=...`` resolves in the working directory.

The **config hash** covers what changes a unit's numbers (everything but ``name``, ``output``, ``report`` and
``tables``): the tables only choose which units exist, and each unit's key names its regulariser, seed and dataset
variant (:func:`unit_key`), so adding a table to a finished study reuses every unit it shares with the others.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labelflip._validation import LabelflipError, did_you_mean, fail
from labelflip.study.robust_checks import (
    ROBUST_DATASETS,
    RULE_DEFAULTS,
    TABLE_DEFAULTS,
    check_attack_options,
    check_budgets,
    check_dataset,
    check_evaluation,
    check_tables,
    merge,
    number,
    registry_attack,
    regulariser_label,
    regulariser_spec,
)

__all__ = [
    "CONFIGS_DIR",
    "ROBUST_DATASETS",
    "ROBUST_DEFAULTS",
    "ROBUST_DEMO_SPEC",
    "TABLE_DEFAULTS",
    "RobustSpec",
    "is_robust_spec",
    "load_robust_spec",
    "regulariser_label",
    "regulariser_spec",
    "spec_from_manifest",
    "unit_key",
]

_OWNER = "robust study spec"
CONFIGS_DIR = Path(__file__).with_name("configs")
"""The study specs shipped with labelflip (robust-emotions, robust-yeast, robust-images, robust-demo)."""
ROBUST_DEMO_SPEC = CONFIGS_DIR / "robust-demo.yaml"
"""The taste of the SAE paper in ``labelflip demo`` (built-in data only)."""
_FAMILIES = {"linear": "linear_multilabel", "mlp": "mlp_multilabel", "cnn": "asl_convnet"}
ROBUST_DEFAULTS: dict[str, Any] = {
    "kind": "robust",
    "name": "robust-study",
    "output": "labelflip-runs/robust-study",
    "dataset": {"name": None, "path": None, "xml": None, "seed": 0, "config": {}},
    "model": {"family": None, "loss": None, "hidden": 64, "width": 16},
    "train": {
        "epochs": 40,
        "batch_size": 64,
        "lr": 0.01,
        "optimizer": "adam",
        "weight_decay": 0.0,
        "patience": 0,
        "monitor": "last",
        "reg_samples": 0,
        "grad_clip": 0.0,
    },
    "seeds": [0],
    "norm": "l2",
    "attack": "auto",
    "attack_options": {},
    "budgets": {"rule": dict(RULE_DEFAULTS)},
    "evaluation": {"samples": 0, "sae_delta": 1e-3, "gase_k_try": 3, "gase_attack": "bce"},
    "tables": {"table3": {}},
    "report": {},
}
_NOT_HASHED = ("name", "output", "report", "tables")


@dataclass
class RobustSpec:
    """A validated robust study spec (see the module docstring); ``tables`` maps table names to their settings."""

    name: str
    output: str
    dataset: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    seeds: list[int]
    norm: str
    attack: str
    attack_options: dict[str, Any]
    budgets: dict[str, Any]
    evaluation: dict[str, Any]
    tables: dict[str, dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)
    kind: str = "robust"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def config_hash(self) -> str:
        """sha256 (16 hex) of the canonical JSON of everything that changes a unit's numbers."""
        d = {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def arch(self) -> str:
        """The registered architecture of ``model.family``."""
        return _FAMILIES[self.model["family"]]

    @property
    def arch_kwargs(self) -> dict[str, Any]:
        family = self.model["family"]
        return (
            {"hidden": self.model["hidden"]}
            if family == "mlp"
            else {"width": self.model["width"]}
            if (family == "cnn")
            else {}
        )

    @property
    def attack_name(self) -> str:
        """The attack behind the attacked F1: ``auto`` resolved (GASE's perturbation for linear models, MaxFlip,
        labelflip's strongest budgeted attack, for the others)."""
        if self.attack != "auto":
            return self.attack
        return "gase" if self.model["family"] == "linear" else "maxflip"


def unit_key(regulariser: str, seed: int, variant: Mapping[str, Any] | None = None) -> str:
    """The store key of one trained model: ``"nuclear:0.01|seed=0"`` (``|correlation=0.95`` for a Fig. 1 variant)."""
    extra = "".join(f"|{k}={v!r}" for k, v in sorted((variant or {}).items()))
    return f"{regulariser}|seed={seed}{extra}"


def is_robust_spec(path: str | Path) -> bool:
    """Whether the YAML file at ``path`` declares ``kind: robust`` (False for anything unreadable)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(data, Mapping) and data.get("kind") == "robust"


def _validate(d: dict[str, Any]) -> RobustSpec:
    if d.get("kind") != "robust":
        raise fail(_OWNER, "kind", "'robust'", d.get("kind"), "attack studies are run by labelflip study run too.")
    for key in ("name", "output"):
        if not isinstance(d[key], str) or not d[key]:
            raise fail(_OWNER, key, "a non-empty string", d[key])
    ds = check_dataset(d["dataset"])
    images = ds["name"] == "synthetic"
    model = d["model"]
    family = model["family"] or ("cnn" if images else "linear")
    if family not in (("cnn",) if images else ("linear", "mlp")):
        raise fail(
            _OWNER,
            "model.family",
            "'cnn' for images" if images else "'linear' or 'mlp' for tabular data",
            family,
            "the built-in image data trains the built-in CNN; tabular data a linear model or an MLP.",
        )
    loss = model["loss"] or {"linear": "hinge", "mlp": "logistic", "cnn": "asl"}[family]
    model = {**model, "family": family, "loss": loss}
    for key in ("hidden", "width"):
        number(model[key], f"model.{key}", low=1, integer=True)
    from labelflip.robust import RobustTrainConfig

    train = dict(d["train"])
    try:
        RobustTrainConfig(**train, loss=loss)
    except (TypeError, LabelflipError) as exc:
        raise fail(
            _OWNER, "train", "RobustTrainConfig fields with valid values (its seed comes from seeds)", train, str(exc)
        ) from None
    seeds = d["seeds"]
    if not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) != len(seeds):
        raise fail(_OWNER, "seeds", "a non-empty list of distinct ints >= 0", seeds)
    seeds = [number(s, "seeds", integer=True) for s in seeds]
    if d["norm"] not in ("l2", "linf"):
        raise fail(_OWNER, "norm", "'l2' (the paper) or 'linf'", d["norm"])
    attack = str(d["attack"])
    if attack not in ("auto", "gase"):
        attack = registry_attack(attack, "attack")
    return RobustSpec(
        d["name"],
        d["output"],
        ds,
        model,
        train,
        seeds,
        d["norm"],
        attack,
        check_attack_options(
            attack if attack != "auto" else ("gase" if family == "linear" else "maxflip"), d["attack_options"]
        ),
        check_budgets(d["budgets"]),
        check_evaluation(d["evaluation"]),
        check_tables(d["tables"], ds["name"]),
        dict(d["report"] or {}),
    )


def _set(d: dict[str, Any], dotted: str, raw: str) -> None:
    import yaml

    keys = dotted.split(".")
    node = d
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            raise fail(
                _OWNER,
                "--set",
                f"a dotted path into the spec (no {key!r} section)",
                dotted,
                "check the spelling." + did_you_mean(key, node),
            )
        node = node[key]
    if keys[-1] not in node and keys[0] not in ("tables", "dataset", "attack_options", "budgets"):
        raise fail(_OWNER, "--set", "an existing key", dotted, "check the spelling." + did_you_mean(keys[-1], node))
    node[keys[-1]] = yaml.safe_load(raw)


def load_robust_spec(
    source: str | Path | Mapping[str, Any], *, overrides: Mapping[str, Any] | None = None, sets: Sequence[str] = ()
) -> RobustSpec:
    """Defaults < the YAML file (or mapping) ``source`` < ``overrides`` (top-level keys) < ``sets``
    (``"a.b=value"``). Paths in a YAML file resolve beside it."""
    import yaml

    base: Path | None = None
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise fail(_OWNER, "path", "an existing YAML file", str(path), "check the path of the study spec.")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise LabelflipError(f"robust study spec {path}: not valid YAML ({exc}). Fix the file.") from exc
        if not isinstance(data, Mapping):
            raise fail(_OWNER, "path", "a YAML mapping at the top level", type(data).__name__)
        base = path.resolve().parent
    d = merge(ROBUST_DEFAULTS, data)
    for key in ("path", "xml"):
        value = d["dataset"].get(key)
        if base is not None and value is not None and not Path(str(value)).expanduser().is_absolute():
            d["dataset"][key] = str(base / str(value))
    if overrides:
        d = merge(d, {k: v for k, v in overrides.items() if v is not None})
    for item in sets:
        if "=" not in item:
            raise fail(_OWNER, "--set", "'key.path=value'", item)
        key, raw = item.split("=", 1)
        _set(d, key.strip(), raw)
    return _validate(d)


def spec_from_manifest(data: Mapping[str, Any]) -> RobustSpec:
    """The :class:`RobustSpec` stored in a manifest (no file checks: the report reads only the store)."""
    fields = {f.name for f in dataclasses.fields(RobustSpec)}
    return RobustSpec(**{k: copy.deepcopy(v) for k, v in data.items() if k in fields})
