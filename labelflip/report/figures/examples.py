"""Adversarial examples: clean image, adversarial image, amplified perturbation and the flipped labels per
example (seed Fig. 1, 21)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._validation import fail
from labelflip.report.figures._common import describe, finite_array, plt_module, save_figure, targets

__all__ = ["plot_adversarial_grid"]

_MAX_LISTED_FLIPS = 12


# --------------------------------------------------------------------------------------- adversarial grid


def _to_display(img: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """``(C, H, W)`` -> an ``imshow`` array and kwargs (grey colormap for one channel)."""
    if img.shape[0] == 1:
        return img[0], {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    return np.transpose(img, (1, 2, 0)), {}


def plot_adversarial_grid(
    clean: np.ndarray,
    adv: np.ndarray,
    flipped: Sequence[tuple[Sequence[str], Sequence[str]]],
    path: str | Path,
    *,
    amplify: float | None = None,
    titles: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
) -> Path | list[Path]:
    """Adversarial examples in the style of seed Fig. 1 / 21: one row per example.

    Columns: the clean image, the adversarial image, the perturbation ``delta = adv - clean`` shown as
    ``0.5 + a * delta`` (centred grey = no change, clipped to [0, 1]) and a text panel listing ``+label``
    (flipped up) and ``−label`` (flipped down). By default ``a = 0.5 / max|delta|`` per example, i.e. the
    perturbation is stretched to the full range; pass ``amplify`` to use one fixed factor ``a`` for all rows
    (so rows are comparable).

    Args:
        clean: ``(M, C, H, W)`` images in [0, 1], ``C`` in {1, 3}.
        adv: the adversarial images, same shape.
        flipped: per example ``(labels flipped up, labels flipped down)``.
        path: output file (``.png`` / ``.svg``), or the stem when ``formats`` is given.
        amplify: fixed amplification factor ``a > 0`` for the perturbation column.
        titles: ``(M,)`` row titles (default ``"example i"``).
        formats: write one file per format and return the list of paths.

    Returns:
        The written path, or the list of paths when ``formats`` is given.
    """
    owner = "plot_adversarial_grid"
    outputs = targets(owner, path, formats)
    expected = "a finite (M, C, H, W) image array in [0, 1] with C in {1, 3}"
    fix = "pass NCHW images in [0, 1], e.g. x.detach().cpu().numpy()."
    x = finite_array(owner, "clean", clean, 4, expected, fix)
    xa = finite_array(owner, "adv", adv, 4, expected, fix)
    if x.shape[1] not in (1, 3):
        raise fail(owner, "clean", expected, describe(x), "pass grey (C=1) or RGB (C=3) images in NCHW order.")
    if xa.shape != x.shape:
        raise fail(owner, "adv", f"the shape of clean {x.shape}", describe(xa), "pass one adversarial per clean.")
    tol = 1e-6
    for name, arr in (("clean", x), ("adv", xa)):
        if arr.min() < -tol or arr.max() > 1 + tol:
            raise fail(owner, name, "pixel values in [0, 1]", f"values in [{arr.min():.4g}, {arr.max():.4g}]", fix)
    m = x.shape[0]
    if isinstance(flipped, (str, bytes)) or not isinstance(flipped, Sequence) or len(flipped) != m:
        raise fail(owner, "flipped", f"a sequence of {m} (up labels, down labels) pairs", flipped)
    pairs: list[tuple[list[str], list[str]]] = []
    for i, item in enumerate(flipped):
        ok = isinstance(item, Sequence) and not isinstance(item, (str, bytes)) and len(item) == 2
        ok = ok and all(isinstance(part, Sequence) and not isinstance(part, (str, bytes)) for part in item)
        if not ok:
            raise fail(
                owner,
                "flipped",
                f"(labels flipped up, labels flipped down) for example {i}",
                item,
                "pass e.g. (['dog'], ['person']) per example.",
            )
        pairs.append(([str(s) for s in item[0]], [str(s) for s in item[1]]))
    if titles is not None and (isinstance(titles, str) or len(titles) != m):
        raise fail(owner, "titles", f"a sequence of {m} row titles", titles)
    if amplify is not None and (
        isinstance(amplify, bool)
        or not isinstance(amplify, (int, float))
        or not math.isfinite(float(amplify))
        or amplify <= 0
    ):
        raise fail(owner, "amplify", "a finite float > 0 or None", amplify, "pass e.g. amplify=10.")

    x, xa = np.clip(x, 0.0, 1.0), np.clip(xa, 0.0, 1.0)
    plt = plt_module()
    fig, axes = plt.subplots(m, 4, figsize=(10.0, 2.5 * m), squeeze=False, gridspec_kw={"width_ratios": [1, 1, 1, 1.1]})
    for i in range(m):
        delta = xa[i] - x[i]
        peak = float(np.abs(delta).max())
        factor = float(amplify) if amplify is not None else (0.5 / peak if peak > 0 else 1.0)
        shown = np.clip(0.5 + factor * delta, 0.0, 1.0)
        row_title = str(titles[i]) if titles is not None else f"example {i}"
        panels = [
            (x[i], f"{row_title}: clean"),
            (xa[i], "adversarial"),
            (shown, f"perturbation ×{factor:.3g}"),
        ]
        for j, (img, name) in enumerate(panels):
            arr, kwargs = _to_display(img)
            ax = axes[i, j]
            ax.imshow(arr, interpolation="nearest", **kwargs)
            ax.set_title(name, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        up, down = pairs[i]
        lines = [f"+{s}" for s in up] + [f"−{s}" for s in down]
        shown_lines = lines[:_MAX_LISTED_FLIPS]
        if len(lines) > len(shown_lines):
            shown_lines.append(f"+ {len(lines) - len(shown_lines)} other flips")
        header = f"{len(lines)} flips (↑{len(up)} ↓{len(down)})\nmax|δ| = {peak:.4g}"
        ax = axes[i, 3]
        ax.axis("off")
        ax.text(0.0, 1.0, header, va="top", ha="left", fontsize=9, fontweight="bold", transform=ax.transAxes)
        ax.text(
            0.0,
            0.78,
            "\n".join(shown_lines) if shown_lines else "(no flips)",
            va="top",
            ha="left",
            fontsize=8,
            family="monospace",
            transform=ax.transAxes,
        )
    fig.tight_layout()
    return save_figure(fig, outputs, formats is None)
