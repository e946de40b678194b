"""The paper's ``*`` cells: where a subset attack targets every label (``k = K``) it *is* the baseline.

CLASS and random subsets attack ``k = subset_length(E(eps), K)`` labels (``E`` the flip profile); once ``k``
reaches ``K`` the subset is every label and the attack is exactly BCE, so its table cell repeats the baseline's.
The seed paper marks those cells with ``*``; :func:`full_subset_cells` finds them for the report's tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from labelflip.attacks import ClosestSubsetAttack, SubsetAttack, subset_length
from labelflip.estimate import FlipEstimate

__all__ = ["full_subset_cells"]


def _subset_ks(method: Any, profile: FlipEstimate, budgets: Sequence[float], num_labels: int) -> list[int] | None:
    """``k`` per budget of a subset attack, derived as the attack derives it; None for any other method."""
    cls = method.entry.factory
    if not (isinstance(cls, type) and issubclass(cls, SubsetAttack)):
        return None
    if issubclass(cls, ClosestSubsetAttack):
        return [min(int(method.params["n"]), num_labels)] * len(budgets)
    if "profile" in getattr(cls, "requires", ()):
        return [subset_length(float(profile.estimate(e)), num_labels) for e in budgets]
    return None


def full_subset_cells(
    methods: Sequence[Any],
    baseline: str,
    profile: FlipEstimate,
    budgets: Sequence[float],
    columns: Sequence[str],
    flips: Mapping[str, np.ndarray],
) -> tuple[dict[str, list[str]], list[str]]:
    """The paper's ``*`` cells: where a subset attack targets every label (``k = K``) it *is* the baseline.

    ``k`` comes from the flip profile exactly as the attack computes it (``subset_length(E(eps), K)``; top-n:
    ``min(n, K)``), and a cell is marked only when the method's per-sample flips there equal the baseline's.

    Args:
        methods: parsed method specs (:class:`labelflip._registry.Spec`, with ``label``, ``entry``, ``params``).
        baseline: the baseline's label.
        profile: the model's flip profile (``num_labels`` = K).
        budgets: ``(B,)`` absolute budgets; ``columns`` their ``B`` column labels.
        flips: label -> per-sample flips ``(B, N)``.

    Returns:
        ``(stars, notes)``: label -> marked columns, and a note for every ``k = K`` cell whose flips differ
        from the baseline's (not marked).
    """
    stars: dict[str, list[str]] = {}
    notes: list[str] = []
    k_all = int(profile.num_labels)  # type: ignore[attr-defined]
    for method in methods:
        ks = _subset_ks(method, profile, budgets, k_all)
        if ks is None or method.label == baseline:
            continue
        full = [b for b, k in enumerate(ks) if k >= k_all]
        same = [b for b in full if np.array_equal(flips[method.label][b], flips[baseline][b])]
        stars[method.label] = [columns[b] for b in same]
        if len(same) < len(full):
            differ = ", ".join(columns[b] for b in full if b not in same)
            notes.append(
                f"{method.label} targets every label (k = K) at {differ} but its flips differ from {baseline}."
            )
    return stars, notes
