"""Label-correlation heatmaps (seed Fig. 5, 14): the normalised flip-up matrix ``U'``, the derived flip-down
matrix ``1 - U'`` that CLASS uses, the measured flip-down matrix (when present) and the dataset's co-occurrence.

Rows are the attacked label, columns the affected label. The layout is constrained (colourbars get their own
space and never cover tick labels), label names are printed where ``K`` leaves room for readable text
(``K <= 40``, the font scaled to the cell size; indices otherwise), on the left panel of each row only: all
panels share one label order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelflip.report.figures._common import hide_overlapping_ticklabels, plt_module, save_figure, targets

__all__ = ["MAX_NAMED_LABELS", "plot_correlations"]

#: Above this many labels the heatmaps show label indices instead of names.
MAX_NAMED_LABELS = 40


def _panels(correlations: Any, cooccurrence: Any | None) -> list[dict[str, Any]]:
    panels = [
        {
            "title": "flip-up U' (normalised)",
            "matrix": np.asarray(correlations.flipup_normalized, dtype=float),
            "cbar": "normalised mean Δ confidence",
            "cmap": "viridis",
            "range": (0.0, 1.0),
        },
        {
            "title": "flip-down, derived 1 - U' (used by CLASS)",
            "matrix": np.asarray(correlations.flipdown_derived, dtype=float),
            "cbar": "1 - U'",
            "cmap": "viridis",
            "range": (0.0, 1.0),
        },
    ]
    if correlations.flipdown_measured is not None:
        mat = np.asarray(correlations.flipdown_measured, dtype=float)
        peak = float(np.nanmax(np.abs(mat))) if np.isfinite(mat).any() else 1.0
        panels.append(
            {
                "title": "flip-down, measured: raw Δ confidence\n(row label attacked down; blank row = no image)",
                "matrix": mat,
                "cbar": "mean Δ confidence (not normalised)",
                "cmap": "RdBu_r",
                "range": (-peak or -1.0, peak or 1.0),
            }
        )
    if cooccurrence is not None:
        panels.append(
            {
                "title": "training co-occurrence P(column | row)",
                "matrix": np.asarray(cooccurrence, dtype=float),
                "cbar": "P(column label | row label)",
                "cmap": "viridis",
                "range": (0.0, 1.0),
                "xlabel": "label (column)",
                "ylabel": "given label (row)",
            }
        )
    return panels


def plot_correlations(
    correlations: Any,
    path: str | Path,
    *,
    cooccurrence: Any | None = None,
    label_names: Sequence[str] | None = None,
    title: str | None = None,
    formats: Sequence[str] | None = None,
) -> Path | list[Path]:
    """Heatmaps: normalised flip-up ``U'``, derived flip-down ``1 - U'``, the measured flip-down matrix (if
    present: raw mean confidence changes when the row label is attacked downward on images that contain it,
    diverging colours around 0, not normalised) and the dataset's co-occurrence (if given), two per row.

    Args:
        correlations: a :class:`~labelflip.analysis.Correlations` (``flipup`` ``(K, K)``, row = attacked label).
        path: output file (``.png`` / ``.svg``), or the stem when ``formats`` is given.
        cooccurrence: ``(K, K)`` ``P(label j | label i)`` of the training labels, or None.
        label_names: ``K`` names (default: the artefact's).
        title: figure title.
        formats: write one file per format and return the list of paths.
    """
    plt = plt_module()
    panels = _panels(correlations, cooccurrence)
    names = list(label_names or correlations.label_names or [])
    k = panels[0]["matrix"].shape[0]
    named = bool(names) and len(names) == k and k <= MAX_NAMED_LABELS
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    side = float(np.clip(0.17 * k, 3.4, 6.2))  # inches per heatmap
    fontsize = float(np.clip(0.62 * side * 72 / max(k, 1), 4.5, 8.0))
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * (side + 1.9), rows * (side + 1.6)), squeeze=False, layout="constrained"
    )
    for i, panel in enumerate(panels):
        ax = axes[i // cols, i % cols]
        cmap = plt.get_cmap(panel["cmap"]).with_extremes(bad="0.85")
        lo, hi = panel["range"]
        im = ax.imshow(panel["matrix"], cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(panel["title"], fontsize=9)
        if named:
            ax.set_xticks(range(k), names, rotation=90, fontsize=fontsize)
            ax.set_yticks(range(k), names if i % cols == 0 else [], fontsize=fontsize)
        ax.set_xlabel(panel.get("xlabel", "affected label (column)"), fontsize=9)
        if i % cols == 0:
            ax.set_ylabel(panel.get("ylabel", "attacked label (row)"), fontsize=9)
        bar = fig.colorbar(im, ax=ax, shrink=0.85)
        bar.set_label(panel["cbar"], fontsize=8)
        bar.ax.tick_params(labelsize=7)
    for j in range(len(panels), rows * cols):
        axes[j // cols, j % cols].set_axis_off()
    fig.suptitle(
        title or f"Label correlations (eps = {correlations.eps:.4g}, n = {correlations.num_samples} images, K = {k})",
        fontsize=11,
    )
    if not named:
        for ax in axes.flat:
            hide_overlapping_ticklabels(fig, ax.xaxis)
    return save_figure(fig, targets("plot_correlations", path, formats), formats is None)
