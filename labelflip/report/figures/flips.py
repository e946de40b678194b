"""Flips against the budget (seed Fig. 10, 11): one line per method, a shaded band, the absolute budget on the
x-axis (pixel units, and ``n/255`` for L-inf), the budget as a percentage of ``eps_max`` on a secondary axis and
the number of labels ``K`` as a reference line."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._validation import check_choice, fail
from labelflip.report.figures._common import (
    describe,
    eps_per255,
    finite_array,
    hide_overlapping_ticklabels,
    plt_module,
    save_figure,
    targets,
)

__all__ = ["identical_rows", "plot_flips_vs_budget"]

#: Marker x line-style pairs, in order: every method of a table gets its own, so coinciding lines stay apart.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
_LINESTYLES = ("-", "--", "-.", ":")


def identical_rows(series: Mapping[str, np.ndarray]) -> list[list[str]]:
    """Groups (in input order) of methods whose rows are exactly equal at every budget; singletons dropped."""
    groups: list[list[str]] = []
    for name, row in series.items():
        for group in groups:
            if np.array_equal(series[group[0]], row):
                group.append(name)
                break
        else:
            groups.append([name])
    return [g for g in groups if len(g) > 1]


def _check_series(owner: str, means: Any, nb: int) -> dict[str, np.ndarray]:
    if not isinstance(means, Mapping) or not means:
        raise fail(owner, "means", "a non-empty mapping method -> mean flips per budget", means)
    series: dict[str, np.ndarray] = {}
    for name, values in means.items():
        row = finite_array(
            owner,
            "means",
            values,
            1,
            f"finite 1-D values of length {nb} (one per budget) for method {name!r}",
            "pass one mean per budget, in the order of 'budgets'.",
        )
        if row.shape[0] != nb:
            raise fail(
                owner,
                "means",
                f"{nb} values (one per budget) for method {name!r}",
                describe(row),
                "pass one mean per budget, in the order of 'budgets'.",
            )
        series[str(name)] = row
    return series


def _check_bands(owner: str, errors: Any, series: Mapping[str, np.ndarray], nb: int) -> dict[str, np.ndarray]:
    if errors is None:
        return {}
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
    bands: dict[str, np.ndarray] = {}
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
    return bands


def _eps_axis(ax: Any, x: np.ndarray, norm: str, xlabel: str | None) -> None:
    """The bottom axis: absolute eps; for L-inf, ticks at round ``n/255`` values labelled ``n/255`` over the
    pixel value."""
    from matplotlib.ticker import MaxNLocator

    hi = float(x.max()) * 1.06 if x.max() > 0 else 1.0
    ax.set_xlim(0.0, hi)
    if norm == "linf":
        ticks = MaxNLocator(nbins=8, steps=[1, 2, 5, 10]).tick_values(0.0, hi * 255)
        ticks = [t for t in ticks if 0.0 <= t <= hi * 255 + 1e-9]
        ax.set_xticks([t / 255 for t in ticks], labels=[f"{t:g}/255\n{t / 255:.3g}" for t in ticks])
        default = "absolute eps, L-inf: n/255 (top line) = pixel value in [0, 1] (bottom line)"
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        default = "absolute eps, L2 norm of the perturbation (pixel values in [0, 1])"
    ax.set_xlabel(xlabel or default)


def _fraction_axis(ax: Any, eps_max: float, norm: str, budget_labels: Sequence[str] | None, x: np.ndarray) -> Any:
    """The top axis: the budget as a percentage of eps_max (or the caller's budget labels at the budgets)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    if eps_max > 0:
        sec = ax.secondary_xaxis("top", functions=(lambda e: e / eps_max * 100.0, lambda p: p * eps_max / 100.0))
        sec.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        sec.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}%"))
        absolute = f"{eps_max:.4g}" + (f" = {eps_per255(eps_max)}" if norm == "linf" else "")
        sec.set_xlabel(f"% of eps_max (eps_max = {absolute})")
        return sec
    sec = ax.secondary_xaxis("top")
    sec.set_xticks(x, labels=[str(b) for b in budget_labels or []])
    sec.set_xlabel("budget")
    return sec


def plot_flips_vs_budget(
    budgets: Sequence[float],
    means: Mapping[str, Sequence[float]],
    errors: Mapping[str, Sequence[float]] | None,
    path: str | Path,
    *,
    xlabel: str | None = None,
    title: str | None = None,
    budget_labels: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
    norm: str = "linf",
    eps_max: float | None = None,
    num_labels: int | None = None,
    band: str = "± error",
    notes: Sequence[str] = (),
) -> Path | list[Path]:
    """Mean flips against the absolute budget, one line per method with a shaded ``mean ± error`` band.

    The x-axis is the absolute budget ``eps`` (pixel values in [0, 1]; for L-inf the ticks sit at round
    ``n/255`` values and show both). With ``eps_max`` a secondary top axis gives the budget as a percentage of
    ``eps_max``; otherwise ``budget_labels`` (if given) label the budgets on the top axis. Every method gets its
    own marker and line style, so lines that coincide stay distinguishable; methods whose rows are identical at
    every budget are named in a note, as are the caller's ``notes``. ``num_labels`` draws the ``K`` line. The
    legend sits outside the axes (it never covers data) and its title says what the band is.

    Args:
        budgets: ``(B,)`` finite absolute budgets, the x positions.
        means: method name -> ``(B,)`` mean flips.
        errors: method name -> ``(B,)`` non-negative half-widths (std or CI half-width, the caller's choice);
            ``None`` draws no bands. Methods missing from ``errors`` get no band.
        path: output file (``.png`` / ``.svg``), or the stem when ``formats`` is given.
        xlabel: x-axis label (default: what the axis shows for ``norm``).
        title: figure title (e.g. the model name and the number of samples).
        budget_labels: ``(B,)`` labels of the budgets (e.g. ``"20%"``), on the top axis when ``eps_max`` is None.
        formats: write one file per format and return the list of paths.
        norm: ``"linf"`` (ticks in ``n/255``) or ``"l2"``.
        eps_max: the model's eps_max (pixel units) for the percentage axis.
        num_labels: ``K``, drawn as a dotted reference line (the most flips a sample can have).
        band: what the band is, shown as the legend title ``band = ...`` (say the same in the caption).
        notes: extra lines printed under the legend.

    Returns:
        The written path, or the list of paths when ``formats`` is given.
    """
    owner = "plot_flips_vs_budget"
    outputs = targets(owner, path, formats)
    x = finite_array(owner, "budgets", budgets, 1, "a non-empty 1-D sequence of finite budgets", "pass eps values.")
    nb = x.shape[0]
    series = _check_series(owner, means, nb)
    bands = _check_bands(owner, errors, series, nb)
    if budget_labels is not None and (isinstance(budget_labels, str) or len(budget_labels) != nb):
        raise fail(owner, "budget_labels", f"a sequence of {nb} tick labels", budget_labels)
    norm = check_choice(owner, "norm", norm, ("linf", "l2"))
    if eps_max is not None and (isinstance(eps_max, bool) or not np.isfinite(eps_max) or eps_max <= 0):
        raise fail(owner, "eps_max", "a finite float > 0 or None", eps_max, "pass the profile's eps_max.")
    if num_labels is not None and (isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1):
        raise fail(owner, "num_labels", "an int >= 1 or None", num_labels, "pass the model's K.")
    if isinstance(notes, str):
        notes = [notes]

    plt = plt_module()
    fig, ax = plt.subplots(figsize=(7.6, 4.4))
    same = identical_rows(series)
    twin_of = {name: group[0] for group in same for name in group[1:]}
    n = len(series)
    for i, (name, y) in enumerate(series.items()):
        color = f"C{i % 10}"
        linestyle = _LINESTYLES[i % len(_LINESTYLES)]
        marker = _MARKERS[(i + i // len(_MARKERS)) % len(_MARKERS)]
        label = name + (f" (= {twin_of[name]})" if name in twin_of else "")
        # earlier lines are drawn thicker, with bigger markers and below: where lines coincide, the later ones
        # sit inside the earlier ones (concentric markers) and every method stays visible.
        shrink = i / max(n - 1, 1)
        ax.plot(
            x,
            y,
            linestyle=linestyle,
            marker=marker,
            ms=10.0 - 6.0 * shrink,
            lw=4.2 - 3.2 * shrink,
            color=color,
            label=label,
            zorder=2 + i,
            markerfacecolor="none" if i % 2 else color,
        )
        if name in bands:
            ax.fill_between(x, y - bands[name], y + bands[name], color=color, alpha=0.08, linewidth=0, zorder=1)
    top = max(float(np.max(y + bands.get(name, 0.0))) for name, y in series.items())
    if num_labels is not None:
        ax.axhline(num_labels, ls=":", lw=1.2, color="0.35", label=f"K = {num_labels} (every label flipped)")
        top = max(top, float(num_labels))
    ax.set_ylim(0.0, top * 1.06 if top > 0 else 1.0)
    _eps_axis(ax, x, norm, xlabel)
    has_top = eps_max is not None or budget_labels is not None
    sec = _fraction_axis(ax, float(eps_max or 0.0), norm, budget_labels, x) if has_top else None
    ax.set_ylabel("mean flips per sample")
    ax.grid(True, alpha=0.3)
    legend = ax.legend(
        title=f"band = {band}" if bands else None,
        fontsize=8,
        title_fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
    )
    lines = [f"Identical at every budget: {' = '.join(g)}." for g in same] + [str(t) for t in notes]
    if lines:
        text = "\n".join(textwrap.fill(t, 34) for t in lines)
        fig.canvas.draw()
        box = legend.get_window_extent().transformed(fig.transFigure.inverted())
        fig.text(box.x0, box.y0 - 0.02, text, va="top", ha="left", fontsize=7.5, color="0.25")
    if title:
        ax.set_title(title, fontsize=10)
    hide_overlapping_ticklabels(fig, ax.xaxis)
    if sec is not None:
        hide_overlapping_ticklabels(fig, sec.xaxis)
    return save_figure(fig, outputs, formats is None)
