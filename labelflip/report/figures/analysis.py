"""Figures of the analysis artefacts (matplotlib, headless). Each function writes one file (PNG, or SVG/PDF by
suffix) and returns its path, or one file per format with ``formats=("png", "svg")``.

* :func:`plot_profile`: measured probe points and the fitted polynomial (seed Fig. 20).
* :func:`~labelflip.report.figures.correlations.plot_correlations` (its own module): the correlation heatmaps.
* :func:`plot_attackability`: per-label flip ratio and clean confidence bars (Fig. 4).
* :func:`plot_targets_vs_flips`: flips against the number of closest targets per budget (Fig. 7).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelflip.report.figures._common import eps_per255, plt_module, save_figure, targets

__all__ = ["plot_attackability", "plot_profile", "plot_targets_vs_flips"]


def _save(fig: Any, path: str | Path, formats: Sequence[str] | None, owner: str) -> Path | list[Path]:
    return save_figure(fig, targets(owner, path, formats), formats is None)


def plot_profile(
    profile: Any,
    path: str | Path,
    *,
    title: str | None = None,
    formats: Sequence[str] | None = None,
    eps_max_ci: Sequence[float] | None = None,
) -> Path | list[Path]:
    """Measured mean flips (BCE, Linear and the fitted curve's points), the polynomial ``E(eps)``, ``eps_max``
    (with its bootstrap interval ``eps_max_ci = (low, high)`` shaded when given, or the profile's own
    ``eps_max_ci`` attribute) and ``K``. For L-inf a top axis gives the budget in ``n/255``."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    plt = plt_module()
    fig, ax = plt.subplots(figsize=(7.6, 4.4))
    eps = np.asarray(profile.eps)
    ax.plot(eps, profile.flips_bce, "s", ms=3, color="tab:blue", alpha=0.6, label="BCE probe")
    if profile.flips_linear:
        ax.plot(eps, profile.flips_linear, "^", ms=3, color="tab:orange", alpha=0.6, label="Linear probe")
    ax.plot(eps, profile.flips, "o", ms=4, color="red", label=f"fitted points ({profile.curve})")
    grid = np.linspace(0, float(eps.max()) if eps.size else profile.eps_max, 200)
    ax.plot(grid, profile.estimate(grid), "-", color="green", label=f"polynomial E(eps), order {profile.order}")
    linf = profile.norm == "linf"
    absolute = f"{profile.eps_max:.4g}" + (f" = {eps_per255(profile.eps_max)}" if linf else "")
    ci = eps_max_ci if eps_max_ci is not None else getattr(profile, "eps_max_ci", None)
    ax.axvline(profile.eps_max, ls=":", color="gray", label=f"eps_max = {absolute} (n = {profile.num_samples})")
    if ci is not None:
        lo, hi = (float(v) for v in ci)
        ax.axvspan(lo, hi, color="gray", alpha=0.15, linewidth=0, label=f"eps_max 95% CI [{lo:.4g}, {hi:.4g}]")
    ax.axhline(profile.num_labels, ls="--", lw=0.8, color="0.5", label=f"K = {profile.num_labels}")
    ax.set_xlabel("absolute eps, L-inf (pixel values in [0, 1])" if linf else "absolute eps, L2 (pixel values)")
    ax.set_ylabel("mean flips per probe image")
    ax.set_ylim(0, profile.num_labels * 1.06)
    ax.set_xlim(left=0)
    if linf:
        top = ax.secondary_xaxis("top", functions=(lambda e: e * 255.0, lambda n: n / 255.0))
        top.xaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]))
        top.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}/255"))
        top.set_xlabel("the same eps in n/255", fontsize=9)
    ax.set_title(
        title or f"Flip profile ({profile.num_samples} probe images, K = {profile.num_labels}, {profile.stop_reason})",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return _save(fig, path, formats, "plot_profile")


def plot_attackability(
    att: Any, path: str | Path, *, title: str | None = None, formats: Sequence[str] | None = None
) -> Path | list[Path]:
    """Per label (sorted by flip-up ratio): flip ratios up and down (attackability), the mean clean confidence
    over the attacked images, and how many images were attacked per label and direction. One legend above the
    panels (never over the bars); labels with no eligible image show no bar and 0 images."""
    plt = plt_module()
    up = np.asarray(att.up_ratio, dtype=float)
    order = np.argsort(np.nan_to_num(up, nan=-1.0), kind="stable")[::-1]
    names = [att.label_names[i] for i in order]
    x = np.arange(len(order))
    fig, axes = plt.subplots(
        3,
        1,
        figsize=(max(6.5, 0.3 * len(order) + 1.5), 7.2),
        sharex=True,
        gridspec_kw={"height_ratios": [1.0, 1.0, 0.6]},
        layout="constrained",
    )
    colours = ("tab:blue", "tab:orange")
    kinds = (
        ("flip-up: label absent, predicted 0", att.up_ratio, att.up_confidence, att.up_samples),
        ("flip-down: label present, predicted 1", att.down_ratio, att.down_confidence, att.down_samples),
    )
    for d, (label, ratio, conf, count) in enumerate(kinds):
        shift = -0.2 if d == 0 else 0.2
        axes[0].bar(x + shift, np.asarray(ratio, dtype=float)[order], 0.4, color=colours[d], label=label)
        axes[1].bar(x + shift, np.asarray(conf, dtype=float)[order], 0.4, color=colours[d])
        axes[2].bar(x + shift, np.asarray(count, dtype=float)[order], 0.4, color=colours[d])
    axes[0].set_ylabel("flip ratio\n(attackability)", fontsize=9)
    axes[0].set_ylim(0, 1.05)
    axes[1].set_ylabel("mean clean\nconfidence", fontsize=9)
    axes[1].set_ylim(0, 1.05)
    axes[2].set_ylabel("images\nattacked", fontsize=9)
    axes[2].set_xticks(x, names, rotation=90, fontsize=7)
    axes[2].set_xlabel("label (sorted by flip-up ratio)", fontsize=9)
    # above the top panel, outside every axes: the legend never covers a bar.
    axes[0].legend(loc="lower left", bbox_to_anchor=(0.0, 1.02), ncol=2, fontsize=8, frameon=False, borderaxespad=0)
    fig.suptitle(title or f"Per-label attackability (eps = {att.eps:.4g}, one label attacked at a time)", fontsize=11)
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
