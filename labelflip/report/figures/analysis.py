"""Figures of the analysis artefacts (matplotlib, headless). Each function writes one file (PNG, or SVG/PDF by
suffix) and returns its path, or one file per format with ``formats=("png", "svg")``.

* :func:`plot_profile`: measured probe points and the fitted polynomial (seed Fig. 20).
* :func:`plot_correlations`: flip-up / flip-down heatmaps beside the dataset co-occurrence (Fig. 5, 14).
* :func:`plot_attackability`: per-label flip ratio and clean confidence bars (Fig. 4).
* :func:`plot_targets_vs_flips`: flips against the number of closest targets per budget (Fig. 7).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelflip.report.figures._common import plt_module, save_figure, targets

__all__ = ["plot_attackability", "plot_correlations", "plot_profile", "plot_targets_vs_flips"]


def _save(fig: Any, path: str | Path, formats: Sequence[str] | None, owner: str) -> Path | list[Path]:
    return save_figure(fig, targets(owner, path, formats), formats is None)


def plot_profile(
    profile: Any, path: str | Path, *, title: str | None = None, formats: Sequence[str] | None = None
) -> Path | list[Path]:
    """Measured mean flips (BCE, Linear and the fitted curve's points) and the polynomial ``E(eps)``."""
    plt = plt_module()
    fig, ax = plt.subplots(figsize=(6, 4))
    eps = np.asarray(profile.eps)
    ax.plot(eps, profile.flips_bce, "s", ms=3, color="tab:blue", alpha=0.6, label="BCE probe")
    if profile.flips_linear:
        ax.plot(eps, profile.flips_linear, "^", ms=3, color="tab:orange", alpha=0.6, label="Linear probe")
    ax.plot(eps, profile.flips, "o", ms=4, color="red", label=f"fitted points ({profile.curve})")
    grid = np.linspace(0, profile.eps_max, 200)
    ax.plot(grid, profile.estimate(grid), "-", color="green", label=f"polynomial, order {profile.order}")
    ax.axvline(profile.eps_max, ls=":", color="gray", label=f"eps_max = {profile.eps_max:.4g}")
    ax.set_xlabel("eps (L-inf)" if profile.norm == "linf" else "eps (L2)")
    ax.set_ylabel("mean flips")
    ax.set_ylim(bottom=0)
    ax.set_title(title or f"Flip profile ({profile.num_samples} samples, K = {profile.num_labels})")
    ax.legend(fontsize=8)
    return _save(fig, path, formats, "plot_profile")


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
    present) and the dataset's co-occurrence (if given), side by side."""
    plt = plt_module()
    panels = [("flip-up U' (normalised)", np.asarray(correlations.flipup_normalized))]
    panels.append(("flip-down, derived 1 - U'", np.asarray(correlations.flipdown_derived)))
    if correlations.flipdown_measured is not None:
        panels.append(("flip-down, measured (raw)", np.asarray(correlations.flipdown_measured)))
    if cooccurrence is not None:
        panels.append(("dataset co-occurrence", np.asarray(cooccurrence, dtype=float)))
    names = list(label_names or correlations.label_names or [])
    k = panels[0][1].shape[0]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4))
    for ax, (name, mat) in zip(np.atleast_1d(axes), panels, strict=True):
        im = ax.imshow(mat, cmap="viridis")
        ax.set_title(name, fontsize=9)
        if names and len(names) == k and k <= 40:
            ax.set_xticks(range(k), names, rotation=90, fontsize=5)
            ax.set_yticks(range(k), names, fontsize=5)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title or f"Label correlations (eps = {correlations.eps:.4g}, n = {correlations.num_samples})")
    return _save(fig, path, formats, "plot_correlations")


def plot_attackability(
    att: Any, path: str | Path, *, title: str | None = None, formats: Sequence[str] | None = None
) -> Path | list[Path]:
    """Per-label flip ratios (up, down) and mean clean confidences, labels sorted by flip-up ratio."""
    plt = plt_module()
    up = np.asarray(att.up_ratio, dtype=float)
    order = np.argsort(np.nan_to_num(up, nan=-1.0))[::-1]
    names = [att.label_names[i] for i in order]
    x = np.arange(len(order))
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.3 * len(order)), 6), sharex=True)
    axes[0].bar(x - 0.2, up[order], 0.4, label="flip-up ratio")
    axes[0].bar(x + 0.2, np.asarray(att.down_ratio, dtype=float)[order], 0.4, label="flip-down ratio")
    axes[0].set_ylabel("attackability")
    axes[0].legend(fontsize=8)
    axes[1].bar(x - 0.2, np.asarray(att.up_confidence, dtype=float)[order], 0.4, label="confidence (absent)")
    axes[1].bar(x + 0.2, np.asarray(att.down_confidence, dtype=float)[order], 0.4, label="confidence (present)")
    axes[1].set_ylabel("mean clean confidence")
    axes[1].set_xticks(x, names, rotation=90, fontsize=7)
    axes[1].legend(fontsize=8)
    fig.suptitle(title or f"Per-label attackability (eps = {att.eps:.4g})")
    return _save(fig, path, formats, "plot_attackability")


def plot_targets_vs_flips(
    tvf: Any, path: str | Path, *, title: str | None = None, formats: Sequence[str] | None = None
) -> Path | list[Path]:
    """Mean flips vs number of targeted closest labels, one line (± population std band) per budget."""
    plt = plt_module()
    fig, ax = plt.subplots(figsize=(6, 4))
    n = np.asarray(tvf.n_targets)
    for b, eps in enumerate(tvf.budgets):
        mean, std = np.asarray(tvf.mean_flips[b]), np.asarray(tvf.std_flips[b])
        (line,) = ax.plot(n, mean, "-o", ms=3, label=f"eps = {eps:.4g}")
        ax.fill_between(n, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        t_opt, f_opt = tvf.optimum(b)
        ax.plot([t_opt], [f_opt], "*", ms=10, color=line.get_color())
    ax.plot(n, 0.6 * n, ":", color="gray", label="0.6 x targets")
    ax.set_xlabel("number of targets (closest to threshold)")
    ax.set_ylabel("mean flips")
    ax.set_ylim(bottom=0)
    ax.set_title(title or f"Targets vs flips ({tvf.num_samples} samples)")
    ax.legend(fontsize=8)
    return _save(fig, path, formats, "plot_targets_vs_flips")
