"""Layout checks on rendered matplotlib figures: every visible text's box in display pixels, overlaps, tick labels.

Used by the figure tests: :func:`capture` records the figure each ``labelflip.report.figures`` function saves
(the figure stays drawable after ``plt.close``), :func:`text_boxes` measures what was drawn, :func:`overlaps`
lists colliding pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from labelflip.report.figures import analysis, correlations, examples, flips, histograms

__all__ = ["Box", "capture", "legend_covers_axes", "overlaps", "text_boxes", "tick_labels"]

FIGURE_MODULES = (analysis, correlations, examples, flips, histograms)


def capture(monkeypatch: pytest.MonkeyPatch, modules: tuple[Any, ...] = FIGURE_MODULES) -> list[Any]:
    """Patch ``save_figure`` in the figure modules; returns the list the saved figures are appended to."""
    figures: list[Any] = []

    for module in modules:
        original = module.save_figure

        def recording(fig: Any, targets: Any, single: bool, _original: Any = original) -> Any:
            figures.append(fig)
            out = _original(fig, targets, single)
            FigureCanvasAgg(fig)  # closing detached the canvas: attach an Agg one to measure the figure again
            return out

        monkeypatch.setattr(module, "save_figure", recording)
    return figures


@dataclass
class Box:
    text: str
    role: str  # "xtick", "ytick", "label", "title", "legend", "other"
    axes: Any
    bbox: Bbox
    artist: Text


def _all_axes(fig: Any) -> list[Any]:
    out: list[Any] = []

    def walk(ax: Any) -> None:
        out.append(ax)
        for child in getattr(ax, "child_axes", []):
            walk(child)

    for ax in fig.axes:
        walk(ax)
    return out


def _undrawn_ticklabels(ax: Any) -> set[int]:
    """ids of tick labels matplotlib does not draw (ticks outside the view interval)."""
    skip: set[int] = set()
    for axis in (ax.xaxis, ax.yaxis):
        lo, hi = sorted(axis.get_view_interval())
        tol = 1e-9 * max(abs(hi - lo), 1e-300)
        for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
            loc = tick.get_loc()
            if loc is None or not (lo - tol <= loc <= hi + tol):
                skip |= {id(tick.label1), id(tick.label2)}
    return skip


def text_boxes(fig: Any) -> list[Box]:
    """Every visible, non-empty text drawn in ``fig`` (tick labels, axis labels, titles, legends, free text)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    roles: dict[int, tuple[str, Any]] = {}
    skip: set[int] = set()
    for ax in _all_axes(fig):
        skip |= _undrawn_ticklabels(ax)
        for t in ax.xaxis.get_ticklabels(which="both"):
            roles[id(t)] = ("xtick", ax)
        for t in ax.yaxis.get_ticklabels(which="both"):
            roles[id(t)] = ("ytick", ax)
        for t in (ax.xaxis.label, ax.yaxis.label):
            roles[id(t)] = ("label", ax)
        for t in (ax.title, ax._left_title, ax._right_title):
            roles[id(t)] = ("title", ax)
        legend = ax.get_legend()
        if legend is not None:
            for t in [*legend.get_texts(), legend.get_title()]:
                roles[id(t)] = ("legend", ax)
    boxes = []
    for t in fig.findobj(Text):
        if id(t) in skip or not t.get_visible() or not t.get_text().strip():
            continue
        role, ax = roles.get(id(t), ("other", None))
        if role in ("xtick", "ytick", "label") and not (ax.axison and ax.get_visible()):
            continue  # an axes switched off draws no ticks or axis labels
        boxes.append(Box(t.get_text(), role, ax, t.get_window_extent(renderer), t))
    return boxes


def overlaps(boxes: list[Box], shrink: float = 0.5) -> list[tuple[str, str]]:
    """Pairs of texts whose boxes (each shrunk by ``shrink`` px per side) intersect."""
    shrunk = [
        Bbox.from_extents(b.bbox.x0 + shrink, b.bbox.y0 + shrink, b.bbox.x1 - shrink, b.bbox.y1 - shrink) for b in boxes
    ]
    hits = []
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            if shrunk[i].overlaps(shrunk[j]):
                hits.append((f"{boxes[i].role}:{boxes[i].text!r}", f"{boxes[j].role}:{boxes[j].text!r}"))
    return hits


def tick_labels(axis: Any) -> list[tuple[float, str]]:
    """``(location, text)`` of the drawn major tick labels of an x or y ``Axis`` (draw the figure first)."""
    lo, hi = sorted(axis.get_view_interval())
    tol = 1e-9 * max(abs(hi - lo), 1e-300)
    return [
        (float(loc), label.get_text())
        for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=False)
        if lo - tol <= loc <= hi + tol and label.get_visible() and label.get_text()
    ]


def legend_covers_axes(fig: Any) -> list[str]:
    """Names of the axes whose plotting area a legend overlaps (a legend over data)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    hits = []
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible() and ax.axison and box.overlaps(ax.get_window_extent(renderer)):
                hits.append(ax.get_title() or ax.get_ylabel() or "axes")
    return hits
