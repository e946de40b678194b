"""Figures of a robust study (SAE paper, seed 004): SAE against GASE across nuclear-norm strengths (Table 2) and
clean against attacked F1 across the ARM-SAE strength lambda (Table 4). Each function writes one file (PNG at
200 dpi, or SVG by suffix), or one per format with ``formats=("png", "svg")``.

The strengths are categorical x positions (0 cannot sit on a log axis), labelled with their values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._validation import fail
from labelflip.report.figures._common import finite_array, hide_overlapping_ticklabels, plt_module, save_figure, targets

__all__ = ["plot_sae_vs_gase", "plot_tradeoff"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _labels(owner: str, labels: Any, n: int | None = None) -> list[str]:
    if (
        isinstance(labels, str)
        or not isinstance(labels, Sequence)
        or not labels
        or (n is not None and len(labels) != n)
    ):
        want = f"{n} x-axis labels" if n is not None else "a non-empty list of x-axis labels"
        raise fail(owner, "labels", want, labels, "one label per regularisation strength.")
    return [str(x) for x in labels]


def _series(owner: str, param: str, value: Any, n: int) -> np.ndarray:
    arr = finite_array(owner, param, value, 1, f"{n} finite numbers (one per strength)", "drop missing strengths.")
    if arr.shape[0] != n:
        raise fail(owner, param, f"{n} finite numbers (one per strength)", f"{arr.shape[0]} values")
    return arr


def _categorical_x(fig: Any, ax: Any, labels: list[str], xlabel: str) -> None:
    ax.set_xticks(np.arange(len(labels)), labels=labels)
    ax.set_xlim(-0.4, len(labels) - 0.6)
    ax.set_xlabel(xlabel)
    hide_overlapping_ticklabels(fig, ax.xaxis)


def plot_sae_vs_gase(
    labels: Sequence[str],
    gase: Sequence[float],
    sae_mean: Sequence[float],
    path: str | Path,
    *,
    sae_median: Sequence[float] | None = None,
    eps: float | None = None,
    xlabel: str = "nuclear-norm strength λ",
    title: str | None = None,
    formats: Sequence[str] | None = None,
) -> Path | list[Path]:
    """Two panels over the strengths: GASE ``C_a`` (mean flips within ``eps``) and SAE (mean; median dashed).

    Args:
        labels: the strengths as printed (x axis). gase, sae_mean, sae_median: one value per strength.
        eps: GASE's budget (in the left panel's axis label). title: the figure title (e.g. the Spearman result).
    """
    owner = "plot_sae_vs_gase"
    names = _labels(owner, labels)
    n = len(names)
    g = _series(owner, "gase", gase, n)
    s = _series(owner, "sae_mean", sae_mean, n)
    med = None if sae_median is None else _series(owner, "sae_median", sae_median, n)
    plt = plt_module()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.8), layout="constrained")
    x = np.arange(n)
    left.plot(x, g, "o-", color="tab:red")
    left.set_ylabel("GASE C_a (mean flips" + (f", ε = {eps:g})" if eps is not None else ")"))
    left.set_ylim(bottom=0)
    left.set_title("GASE (budgeted)", fontsize=10)
    right.plot(x, s, "s-", color="tab:blue", label="SAE mean")
    if med is not None:
        right.plot(x, med, "s--", color="tab:cyan", label="SAE median")
        right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    right.set_ylabel("SAE (per-sample, budget-free)")
    right.set_ylim(bottom=0)
    right.set_title("SAE (budget-free)", fontsize=10)
    for ax in (left, right):
        _categorical_x(fig, ax, names, xlabel)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, targets(owner, path, formats), formats is None)


def plot_tradeoff(
    labels: Sequence[str],
    f1: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    phi_align: Sequence[float] | None = None,
    xlabel: str = "ARM-SAE strength λ",
    title: str | None = None,
    formats: Sequence[str] | None = None,
) -> Path | list[Path]:
    """Clean and attacked F1 over the strengths (one line per series, e.g. ``"Micro-F1 clean"``, ``"Micro-F1 ε =
    0.5"``), with ``phi_align`` in a second panel when given (Table 4)."""
    owner = "plot_tradeoff"
    names = _labels(owner, labels)
    n = len(names)
    if not isinstance(f1, Mapping) or not f1:
        raise fail(owner, "f1", "a non-empty mapping series name -> values", f1, "e.g. {'Micro-F1 clean': [...]}.")
    series = {str(k): _series(owner, f"f1[{k!r}]", v, n) for k, v in f1.items()}
    align = None if phi_align is None else _series(owner, "phi_align", phi_align, n)
    plt = plt_module()
    panels = 2 if align is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.8 * panels + 2.2, 3.8), layout="constrained", squeeze=False)
    ax = axes[0, 0]
    x = np.arange(n)
    for i, (name, values) in enumerate(series.items()):
        style = "-" if "clean" in name.lower() else "--"
        ax.plot(x, values, style, marker=_MARKERS[i % len(_MARKERS)], label=name)
    ax.set_ylabel("F1 on the test split")
    ax.set_ylim(0, 1.02)
    ax.set_title("clean vs attacked F1", fontsize=10)
    _categorical_x(fig, ax, names, xlabel)
    if align is not None:
        ax2 = axes[0, 1]
        ax2.plot(x, align, "o-", color="tab:purple")
        ax2.set_ylabel("φ_align (mean |cos| of label weights)")
        ax2.set_ylim(0, 1.02)
        ax2.set_title("alignment of the decision boundaries", fontsize=10)
        _categorical_x(fig, ax2, names, xlabel)
    axes[0, -1].legend(
        *ax.get_legend_handles_labels(), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0
    )
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, targets(owner, path, formats), formats is None)
