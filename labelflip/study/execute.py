"""Execute one work unit of a study: one attack call over the unit's samples at all budgets, its rows (and, for the
examples unit, the adversarial images) written to the store in one transaction.

The study's MI-FGSM-family attacks run with ``reuse=True``: a chunk's weight-free trajectories (BCE's grid, the
budgets of CLASS and random subsets whose subset is every label) are computed once per model and chunk and taken
from :data:`labelflip.attacks.mifgsm.CAPTURES` by the later methods' units, bit-identical by construction (the same
key means the same computation). :func:`release_captures` empties the cache when the units are done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from labelflip.analysis import Attackability, Correlations, Profile
from labelflip.attacks import AttackResult, create_attack
from labelflip.attacks.mifgsm import CAPTURES
from labelflip.models import MultiLabelModel
from labelflip.study.inputs import engine_options
from labelflip.study.plan import WorkUnit
from labelflip.study.spec import StudySpec
from labelflip.study.store import ResultRow, ResultsStore, encode_array

__all__ = ["PreparedModel", "examples_method", "execute_unit", "release_captures"]


@dataclass
class PreparedModel:
    """A model ready to attack, with its artefacts and budgets."""

    model: MultiLabelModel
    fingerprint: str
    metrics: dict[str, float]
    profile: Profile
    correlations: Correlations | None
    attackability: Attackability | None
    budgets: list[float]
    heldout: Tensor | None = None


def examples_method(spec: StudySpec) -> str:
    """The method whose adversarial images the report shows: SLAM when the study runs it, else the first method."""
    return next((m for m in spec.methods if m.split(":")[0] == "slam"), spec.methods[0])


def release_captures() -> None:
    """Drop the trajectories the study's units shared (memory; the next study starts from an empty cache)."""
    CAPTURES.clear()


def execute_unit(
    store: ResultsStore, spec: StudySpec, unit: WorkUnit, pm: PreparedModel, x: Tensor, idx: Tensor
) -> None:
    """Attack one unit and store its rows (and, for the examples unit, the adversarial images) atomically."""
    n_examples = min(int(spec.report.get("examples", 4)), x.shape[0])
    keep = unit.method == examples_method(spec) and unit.seed == spec.seeds[0] and unit.start == 0 and n_examples > 0
    attack = create_attack(
        unit.method,
        pm.model,
        profile=pm.profile,
        correlations=pm.correlations,
        seed=unit.seed,
        heldout=pm.heldout,
        norm=spec.norm,
        return_adv=keep,
        **engine_options(unit.method, spec.attack, reuse=True),
    )
    t0 = time.perf_counter()
    res: AttackResult = attack(x[unit.start : unit.stop], pm.budgets, sample_ids=idx[unit.start : unit.stop])
    share = (time.perf_counter() - t0) / len(unit.samples)
    rows = [
        ResultRow(
            model=unit.model,
            method=unit.method,
            seed=unit.seed,
            budget_index=b,
            sample_index=s,
            eps=float(pm.budgets[b]),
            dataset_index=int(idx[s]),
            steps=int(res.steps[b]),
            flips=int(res.flips[b, i]),
            flips_up=int(res.flips_up[b, i]),
            flips_down=int(res.flips_down[b, i]),
            linf=float(res.linf[b, i]),
            l2=float(res.l2[b, i]),
            clean_conf=res.clean_probs[i].numpy().astype(np.float32).tobytes(),
            adv_conf=res.adv_probs[b, i].numpy().astype(np.float32).tobytes(),
            elapsed_s=share,
        )
        for b in range(len(pm.budgets))
        for i, s in enumerate(unit.samples)
    ]
    artefacts = {}
    if "gamma" in res.extra:  # class-auto: the gamma chosen on the held-out samples, for the table caption
        totals = {f"{g:g}": t for g, t in res.extra.get("gamma_totals", {}).items()}
        artefacts[(unit.model, f"gamma:{unit.method}")] = {"gamma": res.extra["gamma"], "totals": totals}
    if keep and res.x_adv is not None:
        m = min(n_examples, unit.stop)
        artefacts[(unit.model, "examples")] = {
            "method": unit.method,
            "sample_index": list(range(m)),
            "clean": encode_array(x[:m].numpy()),
            "adv": encode_array(res.x_adv[:, :m].numpy()),
        }
    store.write_unit(rows, artefacts=artefacts)
