"""What every figure shares: the headless backend, output targets (one path, or one per format) and saving.

Every figure function writes one file whose format follows the suffix of ``path`` (``.png`` or ``.svg``;
``.pdf`` also works) and returns its :class:`~pathlib.Path`. Pass ``formats=("png", "svg")`` to write the same
figure once per format (``path`` with its suffix replaced); the list of written paths is returned instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._validation import fail

__all__ = [
    "DPI",
    "describe",
    "eps_per255",
    "finite_array",
    "hide_overlapping_ticklabels",
    "plt_module",
    "save_figure",
    "targets",
]

logger = logging.getLogger(__name__)

_FORMATS = ("png", "svg", "pdf")
#: Resolution of every PNG labelflip writes (print quality; the SVG companions are vector).
DPI = 200


def plt_module() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def targets(owner: str, path: str | Path, formats: Sequence[str] | None) -> list[Path]:
    """The output file(s): ``path`` itself (format by suffix) or ``path`` once per requested format."""
    if not isinstance(path, (str, Path)) or str(path) == "":
        raise fail(owner, "path", "a file path (str or Path)", path, "pass e.g. 'figures/flips.png'.")
    path = Path(path)
    if formats is None:
        suffix = path.suffix.lower().lstrip(".")
        if suffix not in _FORMATS:
            raise fail(
                owner,
                "path",
                f"a file name ending in one of {', '.join('.' + f for f in _FORMATS)}",
                str(path),
                "use a .png or .svg suffix, or pass formats=('png', 'svg').",
            )
        return [path]
    if isinstance(formats, str):
        formats = (formats,)
    fmts = [str(f).lower().lstrip(".") for f in formats]
    if not fmts or any(f not in _FORMATS for f in fmts) or len(set(fmts)) != len(fmts):
        raise fail(
            owner,
            "formats",
            f"a non-empty sequence of distinct formats from {_FORMATS}",
            formats,
            "pass e.g. formats=('png', 'svg').",
        )
    return [path.with_suffix("." + f) for f in fmts]


def save_figure(fig: Any, targets: list[Path], single: bool) -> Path | list[Path]:
    plt = plt_module()
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            fmt = target.suffix.lower().lstrip(".")
            metadata = {"Date": None} if fmt in ("svg", "pdf") else None  # reproducible bytes
            with plt.rc_context({"svg.hashsalt": "labelflip"}):
                fig.savefig(target, format=fmt, dpi=DPI, bbox_inches="tight", metadata=metadata)
            logger.debug("wrote figure %s", target)
    finally:
        plt.close(fig)
    return targets[0] if single else targets


def finite_array(owner: str, param: str, value: Any, ndim: int, expected: str, fix: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise fail(owner, param, expected, value, fix) from None
    if arr.ndim != ndim or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise fail(owner, param, expected, describe(arr), fix)
    return arr


def describe(arr: np.ndarray) -> str:
    return f"array(shape={arr.shape}, dtype={arr.dtype})"


def eps_per255(eps: float) -> str:
    """An absolute L-inf budget in the unit people quote, e.g. ``0.0314 -> "8/255"``, ``0.0445 -> "11.4/255"``."""
    return f"{float(eps) * 255:.3g}/255"


def hide_overlapping_ticklabels(fig: Any, axis: Any) -> int:
    """Drop the ticks of ``axis`` (an x or y ``Axis``) whose labels would overlap an earlier kept one.

    Draws the figure once to measure the labels (display pixels), then fixes the kept ticks and their texts
    (so later draws cannot bring the dropped ones back); returns how many were dropped. A safety net behind
    the locators, which already aim for well-spaced ticks.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    lo, hi = sorted(axis.get_view_interval())
    tol = 1e-9 * ((hi - lo) or 1.0)
    kept: list[tuple[float, str]] = []
    boxes: list[Any] = []
    dropped = 0
    for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=False):
        if not (lo - tol <= loc <= hi + tol) or not label.get_visible():
            continue
        box = label.get_window_extent(renderer).expanded(1.08, 1.0)
        if label.get_text() and any(box.overlaps(other) for other in boxes):
            dropped += 1
            continue
        kept.append((float(loc), label.get_text()))
        boxes.append(box)
    if dropped:
        axis.set_ticks([loc for loc, _ in kept], labels=[text for _, text in kept])
    return dropped
