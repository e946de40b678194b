"""Confidence histograms before / after an attack, split into labels to flip up and down, with the decision
threshold (seed Fig. 2). Both panels of a row share one count axis, so before and after compare at a glance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._validation import fail
from labelflip.report.figures._common import describe, finite_array, plt_module, save_figure, targets

__all__ = ["plot_confidence_histograms"]


def _count_axis(ax: Any, log: bool, top: float) -> None:
    """Counts on a shared axis: for ``log``, decades labelled ``1, 10, 100`` (no ``2 x 10^0`` minor labels) and
    a floor below 1 so a bin holding one label stays visible."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if log:
        ax.set_yscale("log")
        ax.set_ylim(0.7, max(top, 1.0) * 1.8)
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=12))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else ""))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(0.0, max(top, 1.0) * 1.08)


def plot_confidence_histograms(
    clean_probs: np.ndarray,
    adv_probs: np.ndarray,
    target: np.ndarray,
    path: str | Path,
    *,
    threshold: float = 0.5,
    title: str | None = None,
    bins: int = 20,
    log: bool = True,
    formats: Sequence[str] | None = None,
) -> Path | list[Path]:
    """Histograms of label confidences before and after the attack (seed Fig. 2, 10, 11).

    Rows: labels to flip up (``target == 1``) and labels to flip down (``target == 0``); columns: before and
    after the attack, sharing the count axis of their row (log scale: ticks at 1, 10, 100, ...). The decision
    threshold is a dashed line and the side where the label counts as flipped is shaded; each panel's title
    gives how many labels sit on that side (a label is positive when ``p > threshold``, strict).

    Args:
        clean_probs: ``(N, K)`` confidences in [0, 1] on the clean inputs (sigmoid of the logits).
        adv_probs: ``(N, K)`` confidences in [0, 1] on the adversarial inputs.
        target: ``(N, K)`` attack target in {0, 1} (``1 - clean prediction`` for the max-flip attack).
        path: output file (``.png`` / ``.svg``), or the stem when ``formats`` is given.
        threshold: decision threshold in (0, 1).
        title: figure title.
        bins: number of equal-width bins over [0, 1].
        log: log-scale counts.
        formats: write one file per format and return the list of paths.

    Returns:
        The written path, or the list of paths when ``formats`` is given.
    """
    owner = "plot_confidence_histograms"
    outputs = targets(owner, path, formats)
    fix = "pass sigmoid probabilities of shape (N, K), e.g. torch.sigmoid(logits).numpy()."
    clean = finite_array(owner, "clean_probs", clean_probs, 2, "a finite (N, K) array of probabilities", fix)
    adv = finite_array(owner, "adv_probs", adv_probs, 2, "a finite (N, K) array of probabilities", fix)
    tgt = finite_array(owner, "target", target, 2, "a finite (N, K) array in {0, 1}", "pass the attack target.")
    if adv.shape != clean.shape:
        raise fail(owner, "adv_probs", f"the shape of clean_probs {clean.shape}", describe(adv), fix)
    if tgt.shape != clean.shape:
        raise fail(owner, "target", f"the shape of clean_probs {clean.shape}", describe(tgt), "pass the target.")
    for name, arr in (("clean_probs", clean), ("adv_probs", adv)):
        if arr.min() < 0 or arr.max() > 1:
            raise fail(
                owner,
                name,
                "probabilities in [0, 1]",
                f"values in [{arr.min():.4g}, {arr.max():.4g}]",
                "these look like logits; pass torch.sigmoid(logits).",
            )
    if not np.all((tgt == 0) | (tgt == 1)):
        raise fail(owner, "target", "an array of 0/1 values", np.unique(tgt)[:8].tolist(), "binarise the target.")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < float(threshold) < 1:
        raise fail(owner, "threshold", "a float in (0, 1)", threshold, "pass e.g. threshold=0.5.")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise fail(owner, "bins", "an int >= 1", bins, "pass e.g. bins=20.")
    thr = float(threshold)

    plt = plt_module()
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 6.4), sharex=True, sharey="row", layout="constrained")
    rows = [
        ("flip up (target 1)", "labels predicted absent, to push above", tgt == 1, "tab:red"),
        ("flip down (target 0)", "labels predicted present, to push below", tgt == 0, "tab:blue"),
    ]
    for r, (direction, meaning, mask, color) in enumerate(rows):
        total = int(mask.sum())
        top = 0.0
        for c, (stage, probs) in enumerate((("before the attack", clean), ("after the attack", adv))):
            ax = axes[r, c]
            values = probs[mask]
            on_target = int((values > thr).sum()) if r == 0 else int((values <= thr).sum())
            if total:
                counts, _, _ = ax.hist(values, bins=edges, color=color, alpha=0.75, edgecolor="white")
                top = max(top, float(np.max(counts)))
            else:
                ax.text(0.5, 0.5, "no labels", ha="center", va="center", transform=ax.transAxes, color="gray")
            lo, hi = (thr, 1.0) if r == 0 else (0.0, thr)
            ax.axvspan(lo, hi, color="gray", alpha=0.08, linewidth=0, label="flipped side")
            ax.axvline(thr, ls="--", color="black", lw=1, label=f"threshold {thr:g}")
            ax.set_xlim(0, 1)
            ax.set_title(f"{direction}, {stage}: {on_target} of {total} flipped", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"labels{' (log scale)' if log else ''}\n{meaning}", fontsize=9)
            if r == 1:
                ax.set_xlabel("confidence (sigmoid output)")
        _count_axis(axes[r, 0], log, top)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, outputs, formats is None)
