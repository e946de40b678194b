"""Flip tables laid out like the seed paper's Tables IV-VI: one row per method, one column per budget.

Cells are ``mean ± std`` of per-sample flips; the std is the **population** std (``ddof=0``, as the
authors' ``np.std``) unless ``ddof=1`` is asked for. ``Total`` is the sum of the column means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from labelflip.attacks.result import AttackResult

__all__ = ["FlipTable", "flip_table"]


@dataclass
class FlipTable:
    """Rows of ``(method, [(mean, std) per budget], total)`` over shared budget columns."""

    budgets: list[float]
    column_labels: list[str]
    rows: list[tuple[str, list[tuple[float, float]], float]]
    ddof: int = 0

    def to_markdown(self, digits: int = 2) -> str:
        head = "| method | " + " | ".join(self.column_labels) + " | Total |"
        sep = "|---" * (len(self.column_labels) + 2) + "|"
        lines = [head, sep]
        for name, cells, total in self.rows:
            body = " | ".join(f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in cells)
            lines.append(f"| {name} | {body} | {total:.{digits}f} |")
        return "\n".join(lines)


def flip_table(
    results: Mapping[str, AttackResult],
    *,
    column_labels: Sequence[str] | None = None,
    ddof: int = 0,
) -> FlipTable:
    """Build a :class:`FlipTable` from results that share the same budgets (checked)."""
    if not results:
        raise ValueError("flip_table: 'results' is empty. Fix: pass at least one method's AttackResult.")
    first = next(iter(results.values()))
    budgets = first.eps.tolist()
    for name, res in results.items():
        if res.eps.tolist() != budgets:
            raise ValueError(
                f"flip_table: method {name!r} was run at budgets {res.eps.tolist()}, not {budgets}. Fix: run "
                "every method on the same budget list."
            )
    labels = list(column_labels) if column_labels is not None else [f"{e:.4g}" for e in budgets]
    if len(labels) != len(budgets):
        raise ValueError(f"flip_table: {len(labels)} column labels for {len(budgets)} budgets.")
    rows = []
    for name, res in results.items():
        mean, std = res.mean_flips(), res.std_flips(ddof)
        cells = [(float(mean[b]), float(std[b])) for b in range(len(budgets))]
        rows.append((name, cells, float(mean.sum())))
    return FlipTable(budgets=budgets, column_labels=labels, rows=rows, ddof=ddof)
