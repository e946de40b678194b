"""The worst-case ensemble in reports: per-budget mean flips with a 95 % t-interval and which member won how often.

Used by ``labelflip evaluate`` (:func:`budget_records`, from the attack's own record of the winners) and by the
study report (:func:`ensemble_sections`, one section per model of a study whose methods include ``worst-case``).

**Intervals.** The 95 % interval of a mean is Student's t-interval with ``ddof = 1`` (the one every study table
uses, :mod:`labelflip.report.statistics`): ``mean ± t_{0.975, N-1} * s / sqrt(N)``; the point interval when every
sample has the same count. A t-interval and not a bootstrap: it needs no random numbers, so a record is reproducible,
and it is what the paired tests of the study tables assume.

**Winners in a study.** The results store keeps one row of flips per (model, method, sample, budget) and nothing
else per sample, so the member that found the worst case is not stored (``labelflip evaluate`` records it from the
attack). Rather than widen the store or rerun anything, the section recomputes nothing: it reads the stored rows
of every ensemble member the study also ran as a method of its own (the evidence study runs all six)
and credits each (sample, budget) to the first member, in the ensemble's order, whose stored flips equal the worst
case's; ``none`` where the worst case is 0 flips, ``not stored`` where no stored member reaches it (a member the
study did not run, or a float-rounding difference between a member's run inside the ensemble and its own run).
This is the ensemble's own rule (ties go to the earlier member) applied to the members' separate runs, which are
the same deterministic attacks on the same samples. A stored member with more flips than the worst case on some
(sample, budget) would contradict the ensemble; such cells are counted and named in the text (expected: none).
The cost shown is wall time from the stored per-row times, as a multiple of BCE's: the store keeps no pass counts.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelflip.attacks import parse_attack
from labelflip.attacks.ensemble import MEMBERS
from labelflip.report.html import Section, Table
from labelflip.report.statistics import CONFIDENCE, _interval
from labelflip.report.tables import eps_text

__all__ = [
    "CI_METHOD",
    "WORST_CASE",
    "attribute_winners",
    "budget_records",
    "ensemble_sections",
    "mean_interval",
    "record_wins",
]

WORST_CASE = "worst-case"
CI_METHOD = f"Student t (ddof=1), {CONFIDENCE:.0%}"
NONE, NOT_STORED = "none", "not stored"


def mean_interval(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``{n, mean, std_pop, ci_low, ci_high}`` of per-sample counts ``(N,)``: the 95 % t-interval of the mean
    (the point interval when all values are equal; ``nan`` bounds for ``N = 1``)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return {"n": 0, "mean": float("nan"), "std_pop": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    if x.size == 1:
        return {"n": 1, "mean": float(x[0]), "std_pop": 0.0, "ci_low": float("nan"), "ci_high": float("nan")}
    mean, _, lo, hi = _interval(x)
    return {"n": int(x.size), "mean": mean, "std_pop": float(np.std(x)), "ci_low": lo, "ci_high": hi}


def budget_records(
    flips: np.ndarray, eps: Sequence[float], winners: Sequence[Sequence[str]] | None, labels: Sequence[str]
) -> list[dict[str, Any]]:
    """One record per budget: ``eps``, the interval of the mean flips (:func:`mean_interval`), ``min``/``max``,
    and ``wins`` (label -> samples, in ``labels`` order, then ``none`` and ``not stored`` when present).

    Args:
        flips: ``(B, N)`` worst-case flips per budget and sample.
        eps: the ``B`` budgets.
        winners: ``B`` lists of ``N`` winner labels (member labels, ``none``, ``not stored``), or ``None``.
        labels: the member labels, in the ensemble's order.
    """
    out = []
    for b, e in enumerate(eps):
        row = np.asarray(flips[b], dtype=np.float64)
        rec: dict[str, Any] = {"eps": float(e), **mean_interval(row), "ci_method": CI_METHOD}
        rec.update(min=float(row.min()) if row.size else None, max=float(row.max()) if row.size else None)
        if winners is not None:
            counts = {label: 0 for label in labels}
            for w in winners[b]:
                counts[w] = counts.get(w, 0) + 1
            rec["wins"] = {
                k: v for k, v in {**counts, NONE: counts.get(NONE, 0)}.items() if k in labels or k == NONE or v
            }
        out.append(rec)
    return out


def attribute_winners(worst: np.ndarray, members: dict[str, np.ndarray]) -> tuple[list[list[str]], dict[str, int]]:
    """Credit each (budget, sample) of ``worst`` ``(B, N)`` to the first of ``members`` (label -> ``(B, N)`` stored
    flips, in the ensemble's order) whose flips equal it; ``none`` where ``worst`` is 0, ``not stored`` where no
    member reaches it. Also returns, per member, the cells where it has **more** flips than ``worst``."""
    labels: list[list[str]] = []
    above = {m: int(np.sum(np.asarray(f) > worst)) for m, f in members.items()}
    for b in range(worst.shape[0]):
        row = []
        for i in range(worst.shape[1]):
            if worst[b, i] <= 0:
                row.append(NONE)
                continue
            row.append(next((m for m, f in members.items() if f[b, i] == worst[b, i]), NOT_STORED))
        labels.append(row)
    return labels, above


def _html(records: list[dict[str, Any]], columns: Sequence[str], labels: Sequence[str], norm: str) -> str:
    e = html.escape
    wins = [w for w in [*labels, NONE, NOT_STORED] if any(w in r.get("wins", {}) for r in records)]
    heads = ["budget", "eps", "worst case: mean ± std", "95 % CI (t)", *(f"won by {w}" for w in wins)]
    lines = ['<table class="labelflip-worst-case">', "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in heads)]
    lines += ["</tr></thead>", "<tbody>"]
    for col, r in zip(columns, records, strict=True):
        cells = [
            e(eps_text(r["eps"], norm)),
            f"{r['mean']:.2f} ± {r['std_pop']:.2f}",
            f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
            *(str(r["wins"].get(w, 0)) for w in wins),
        ]
        lines.append(f'<tr><th scope="row">{e(col)}</th>' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join([*lines, "</tbody>", "</table>"]) + "\n"


def _markdown(records: list[dict[str, Any]], columns: Sequence[str], labels: Sequence[str], norm: str) -> str:
    wins = [w for w in [*labels, NONE, NOT_STORED] if any(w in r.get("wins", {}) for r in records)]
    lines = ["| budget | eps | worst case | 95 % CI (t) | " + " | ".join(wins) + " |", "|---" * (4 + len(wins)) + "|"]
    for col, r in zip(columns, records, strict=True):
        cells = [
            col,
            eps_text(r["eps"], norm),
            f"{r['mean']:.2f} ± {r['std_pop']:.2f}",
            f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
            *(str(r["wins"].get(w, 0)) for w in wins),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def ensemble_sections(store: Any, spec: Any, out: str | Path) -> list[Section]:
    """One report section per model of a study that ran ``worst-case`` (none otherwise), from the store only; also
    writes ``tables/<model>-worst-case.md``. ``store``: a :class:`~labelflip.study.store.ResultsStore`; ``spec``:
    the study's :class:`~labelflip.study.spec.StudySpec`."""
    if WORST_CASE not in spec.methods:
        return []
    member_specs = [parse_attack(m) for m in MEMBERS]
    labels = [m.label for m in member_specs]
    stored = [m for m in member_specs if str(m) in spec.methods]
    missing = [m.label for m in member_specs if str(m) not in spec.methods]
    seed = spec.seeds[0]
    sections = []
    for entry in spec.models:
        info = store.get_artefact(entry.name, "model")
        worst = store.array(entry.name, WORST_CASE, seed)
        if info is None or worst.size == 0 or np.isnan(worst).any():
            continue
        budgets = info["budgets"]
        columns = (
            [f"{f * 100:g}%" for f in spec.budgets["fractions"]]
            if "fractions" in spec.budgets
            else [f"{e:.4g}" for e in budgets]
        )
        members = {m.label: store.array(entry.name, str(m), seed) for m in stored}
        members = {k: v for k, v in members.items() if v.shape == worst.shape and not np.isnan(v).any()}
        winners, above = attribute_winners(worst, members)
        records = budget_records(worst, budgets, winners, labels)
        text = [
            f"Worst case over the ensemble's members ({', '.join(labels)}, in that order) on the {worst.shape[1]} "
            f"samples of {entry.name}: per budget the mean flips with the {CI_METHOD} interval of the mean, and how "
            "many samples each member won (the first member, in order, whose own stored run reaches the worst case; "
            "none = no flip). The store keeps no winners, so they are read off the members' own stored rows."
        ]
        if missing:
            text.append(
                f"Not run as methods of this study, so never credited: {', '.join(missing)} (their wins are "
                "counted as 'not stored', as are float-rounding differences)."
            )
        bad = {m: n for m, n in above.items() if n}
        text.append(
            "Consistency: no stored member has more flips than the worst case on any (sample, budget)."
            if not bad
            else "Inconsistent cells (a member's own run above the worst case): "
            + ", ".join(f"{m} {n}" for m, n in bad.items())
        )
        bce = store.array(entry.name, "bce", seed, "elapsed_s") if "bce" in spec.methods else np.zeros((0, 0))
        if bce.size:
            ratio = float(np.nansum(store.array(entry.name, WORST_CASE, seed, "elapsed_s")[0]) / np.nansum(bce[0]))
            text.append(
                f"Cost: the worst case took {ratio:.1f}x BCE's wall time in this study (stored per-unit times on a "
                "possibly shared machine; `labelflip evaluate` reports forward+backward passes)."
            )
        Path(out, "tables").mkdir(parents=True, exist_ok=True)
        md = _markdown(records, columns, labels, spec.norm)
        Path(out, "tables", f"{entry.name}-worst-case.md").write_text(md + "\n" + "\n\n".join(text) + "\n")
        caption = f"{entry.name}: worst-case flips per budget ({CI_METHOD} interval) and the members' wins"
        table = Table(caption, _html(records, columns, labels, spec.norm))
        sections.append(Section(title=f"Worst case: {entry.name}", text="\n\n".join(text), tables=[table]))
    return sections


def record_wins(extra: dict[str, Any]) -> list[list[str]]:
    """The winners an ensemble result recorded (``result.extra``) as labels: ``B`` lists of ``N``."""
    labels = extra["members"]
    return [[NONE if w < 0 else labels[w] for w in row] for row in extra["winner"]]
