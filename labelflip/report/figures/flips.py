"""Study figures: flips against the budget (with a ± band) and confidence histograms before / after an
attack, split into labels to flip up and down, with the decision threshold (seed Fig. 2, 10, 11)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from labelflip._validation import fail
from labelflip.report.figures._common import describe, finite_array, plt_module, save_figure, targets

__all__ = ["plot_confidence_histograms", "plot_flips_vs_budget"]


# --------------------------------------------------------------------------------------------- flips vs budget


def plot_flips_vs_budget(
    budgets: Sequence[float],
    means: Mapping[str, Sequence[float]],
    errors: Mapping[str, Sequence[float]] | None,
    path: str | Path,
    *,
    xlabel: str = "eps (L-inf)",
    title: str | None = None,
    budget_labels: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
) -> Path | list[Path]:
    """One line per method (mean flips against the budget) with a shaded ``mean ± error`` band.

    Args:
        budgets: ``(B,)`` finite budgets, the x positions.
        means: method name -> ``(B,)`` mean flips.
        errors: method name -> ``(B,)`` non-negative half-widths (std or CI half-width, the caller's choice);
            ``None`` draws no bands. Methods missing from ``errors`` get no band.
        path: output file (``.png`` / ``.svg``), or the stem when ``formats`` is given.
        xlabel: x-axis label.
        title: figure title.
        budget_labels: ``(B,)`` tick labels (e.g. ``"2/255"``) placed at the budgets.
        formats: write one file per format and return the list of paths.

    Returns:
        The written path, or the list of paths when ``formats`` is given.
    """
    owner = "plot_flips_vs_budget"
    outputs = targets(owner, path, formats)
    x = finite_array(owner, "budgets", budgets, 1, "a non-empty 1-D sequence of finite budgets", "pass eps values.")
    nb = x.shape[0]
    if not isinstance(means, Mapping) or not means:
        raise fail(owner, "means", "a non-empty mapping method -> mean flips per budget", means)
    series: dict[str, np.ndarray] = {}
    for name, values in means.items():
        series[str(name)] = finite_array(
            owner,
            "means",
            values,
            1,
            f"finite 1-D values of length {nb} (one per budget) for method {name!r}",
            "pass one mean per budget, in the order of 'budgets'.",
        )
        if series[str(name)].shape[0] != nb:
            raise fail(
                owner,
                "means",
                f"{nb} values (one per budget) for method {name!r}",
                describe(series[str(name)]),
                "pass one mean per budget, in the order of 'budgets'.",
            )
    bands: dict[str, np.ndarray] = {}
    if errors is not None:
        if not isinstance(errors, Mapping):
            raise fail(owner, "errors", "a mapping method -> error half-widths, or None", errors)
        unknown = [str(k) for k in errors if str(k) not in series]
        if unknown:
            raise fail(
                owner,
                "errors",
                f"keys among the methods in 'means' ({sorted(series)})",
                unknown,
                "use the same method names in 'means' and 'errors'.",
            )
        for name, values in errors.items():
            err = finite_array(
                owner,
                "errors",
                values,
                1,
                f"finite non-negative 1-D values of length {nb} for method {name!r}",
                "pass one half-width (std or CI) per budget.",
            )
            if err.shape[0] != nb or np.any(err < 0):
                raise fail(
                    owner,
                    "errors",
                    f"{nb} finite non-negative values for method {name!r}",
                    err.tolist(),
                    "pass one non-negative half-width (std or CI) per budget.",
                )
            bands[str(name)] = err
    if budget_labels is not None and (isinstance(budget_labels, str) or len(budget_labels) != nb):
        raise fail(owner, "budget_labels", f"a sequence of {nb} tick labels", budget_labels)

    plt = plt_module()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (name, y) in enumerate(series.items()):
        color = f"C{i % 10}"
        ax.plot(x, y, "o-", ms=4, color=color, label=name)
        if name in bands:
            ax.fill_between(x, y - bands[name], y + bands[name], color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean flips")
    ax.set_ylim(bottom=0)
    if budget_labels is not None:
        ax.set_xticks(x)
        ax.set_xticklabels([str(b) for b in budget_labels], rotation=30 if nb > 6 else 0)
    ax.grid(True, alpha=0.3)
    ax.legend(title="band = ±error" if bands else None, fontsize=8, title_fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, outputs, formats is None)


# ------------------------------------------------------------------------------------- confidence histograms


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
    after the attack. The decision threshold is a dashed line and the side where the label counts as flipped
    is shaded; each panel's title gives how many labels sit on the target side (a label is positive when
    ``p > threshold``, strict).

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
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 6.2), sharex=True)
    rows = [("flip up (target 1)", tgt == 1, "tab:red"), ("flip down (target 0)", tgt == 0, "tab:blue")]
    for r, (direction, mask, color) in enumerate(rows):
        total = int(mask.sum())
        for c, (stage, probs) in enumerate((("before attack", clean), ("after attack", adv))):
            ax = axes[r, c]
            values = probs[mask]
            on_target = int((values > thr).sum()) if r == 0 else int((values <= thr).sum())
            if total:
                ax.hist(values, bins=edges, color=color, alpha=0.75, edgecolor="white", log=log)
            else:
                ax.text(0.5, 0.5, "no labels", ha="center", va="center", transform=ax.transAxes, color="gray")
            lo, hi = (thr, 1.0) if r == 0 else (0.0, thr)
            ax.axvspan(lo, hi, color="gray", alpha=0.08, linewidth=0)
            ax.axvline(thr, ls="--", color="black", lw=1, label=f"threshold {thr:g}")
            ax.set_xlim(0, 1)
            ax.set_title(f"{direction}, {stage}: {on_target}/{total} on target side", fontsize=9)
            if c == 0:
                ax.set_ylabel("labels (log)" if log else "labels")
            if r == 1:
                ax.set_xlabel("confidence")
    axes[0, 0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, outputs, formats is None)
