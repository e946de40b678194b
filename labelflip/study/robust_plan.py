"""The units of a robust study (:mod:`labelflip.study.robust_spec`): one trained model per regulariser, seed and
dataset variant, with the evaluations its tables need. Shared by the runner and the report, so both name a unit
by the same key.

Evaluation components of a unit (each stored in the unit's artefact when computed, so a rerun does only the
missing ones): ``train`` (metrics of the trained model), ``f1`` (clean and attacked Micro/Macro-F1 at the study's
two budgets, :func:`labelflip.robust.evaluate_robustness`, with ``phi_align``), ``sae`` (per-sample SAE on the
evaluated test samples) and ``gase@<eps>`` (per-sample GASE flips at budget ``eps``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labelflip.study.robust_spec import RobustSpec, regulariser_spec, unit_key

__all__ = ["BUDGETS_KIND", "INDEX_KIND", "UNIT_KIND", "RobustUnit", "gase_component", "plan_robust_units", "table_eps"]

UNIT_KIND = "robust:unit"
"""Artefact kind of a unit (``model`` column: :func:`~labelflip.study.robust_spec.unit_key`)."""
BUDGETS_KIND = "robust:budgets"
"""Artefact kind (model ``""``) of the study's two budgets and the rule that chose them."""
INDEX_KIND = "robust:index"
"""Artefact kind (model ``""``) listing the keys of the stored units."""


@dataclass
class RobustUnit:
    """One trained model and the components it needs (``f1``, ``sae``, ``gase@<eps>``)."""

    regulariser: str
    seed: int
    variant: dict[str, Any] = field(default_factory=dict)
    needs: set[str] = field(default_factory=set)

    @property
    def key(self) -> str:
        return unit_key(self.regulariser, self.seed, self.variant)


def gase_component(eps: float) -> str:
    """The component name of GASE at budget ``eps``: ``"gase@0.5"``."""
    return f"gase@{float(eps)!r}"


def table_eps(setting: str | float, budgets: list[float]) -> float:
    """A table's GASE budget: ``"smaller"`` / ``"larger"`` of the study's two budgets, or the number itself."""
    if setting == "smaller":
        return float(budgets[0])
    if setting == "larger":
        return float(budgets[-1])
    return float(setting)


def table_units(spec: RobustSpec, table: str, budgets: list[float]) -> list[tuple[Any, RobustUnit]]:
    """``(column value, unit)`` of one table per seed, in table order: the strength (table2), the regulariser
    (table3), lambda (table4) or ``(correlation, regulariser)`` (fig1)."""
    t = spec.tables[table]
    out: list[tuple[Any, RobustUnit]] = []
    for seed in spec.seeds:
        if table == "table2":
            for s in t["strengths"]:
                needs = {"f1", "sae", gase_component(table_eps(t["eps"], budgets))}
                out.append((s, RobustUnit(regulariser_spec(t["regulariser"], s), seed, needs=needs)))
        elif table == "table3":
            out += [(r, RobustUnit(r, seed, needs={"f1", "sae"})) for r in t["regularisers"]]
        elif table == "table4":
            out += [
                (lam, RobustUnit(regulariser_spec(t["regulariser"], lam), seed, needs={"f1", "sae"}))
                for lam in t["lambdas"]
            ]
        else:
            needs = {"f1", "sae", gase_component(table_eps(t["eps"], budgets))}
            for c in t["correlations"]:
                for reg in ("none", t["regulariser"]):
                    out.append(((c, reg), RobustUnit(reg, seed, {"correlation": c}, set(needs))))
    return out


def plan_robust_units(spec: RobustSpec, budgets: list[float]) -> list[RobustUnit]:
    """Every unit of the study, deduplicated by key (a model shared by tables is trained once; its needs are the
    union), undefended models first."""
    units: dict[str, RobustUnit] = {}
    for table in spec.tables:
        for _, unit in table_units(spec, table, budgets):
            if unit.key in units:
                units[unit.key].needs |= unit.needs
            else:
                units[unit.key] = unit
    return sorted(units.values(), key=lambda u: (u.regulariser != "none", u.seed))


def missing(unit: RobustUnit, stored: Mapping[str, Any] | None) -> list[str]:
    """The components of ``unit`` not in its stored artefact (``train`` first)."""
    stored = stored or {}
    return [c for c in ["train", *sorted(unit.needs)] if c not in stored]
