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

_MAX_LISTED_FLIPS = 8
_WRAP = 40  # characters per line of the text panel


def _flips_word(n: int) -> str:
    return "1 flip" if n == 1 else f"{n} flips"


def _label_list(owner: str, param: str, value: Any, m: int) -> list[list[str]] | None:
    """``None`` or ``m`` lists of label names."""
    if value is None:
        return None
    bad = isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != m
    bad = bad or any(isinstance(v, (str, bytes)) or not isinstance(v, Sequence) for v in value)
    if bad:
        raise fail(owner, param, f"None or {m} lists of label names (one per example)", value, "pass e.g. [['dog']].")
    return [[str(s) for s in v] for v in value]


def _names(labels: list[str], limit: int = 6) -> str:
    if not labels:
        return "(none)"
    shown = ", ".join(labels[:limit])
    return shown + (f", +{len(labels) - limit} more" if len(labels) > limit else "")


def _panel_text(up: list[str], down: list[str], truth: list[str] | None, pred: list[str] | None) -> str:
    """The text beside one example: ground truth, clean prediction, then the flips (``+`` up, ``−`` down)."""
    import textwrap

    lines: list[str] = []
    for head, labels in (("ground truth", truth), ("clean prediction", pred)):
        if labels is not None:
            lines += textwrap.wrap(f"{head}: {_names(labels)}", _WRAP, subsequent_indent="  ")
    for head, sign, labels in (("flipped up", "+", up), ("flipped down", "−", down)):
        if labels:
            listed = _names([sign + s for s in labels], _MAX_LISTED_FLIPS)
            lines += textwrap.wrap(f"{head}: {listed}", _WRAP, subsequent_indent="  ")
    if not up and not down:
        lines.append("no flip: prediction unchanged")
    return "\n".join(lines)


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
    truth: Sequence[Sequence[str]] | None = None,
    predicted: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
    eps_label: str | None = None,
) -> Path | list[Path]:
    """Adversarial examples in the style of seed Fig. 1 / 21: one row per example.

    Columns: the clean image, the adversarial image, the perturbation ``delta = adv - clean`` shown as
    ``0.5 + a * delta`` (centred grey = no change, clipped to [0, 1]) and a text panel: the number of flips
    ("1 flip", "3 flips", "0 flips" marked as unchanged), ``max|delta|``, the ground truth and the clean
    prediction when given, and the flipped labels, ``+label`` (flipped up) and ``−label`` (flipped down).
    What the rows share (method, budget) goes in ``title``, once. By default ``a = 0.5 / max|delta|`` per
    example, i.e. the perturbation is stretched to the full range; pass ``amplify`` to use one fixed factor
    ``a`` for all rows (so rows are comparable).

    Args:
        clean: ``(M, C, H, W)`` images in [0, 1], ``C`` in {1, 3}.
        adv: the adversarial images, same shape.
        flipped: per example ``(labels flipped up, labels flipped down)``.
        path: output file (``.png`` / ``.svg``), or the stem when ``formats`` is given.
        amplify: fixed amplification factor ``a > 0`` for the perturbation column.
        titles: ``(M,)`` short row names (default ``"example i"``), over the clean image.
        formats: write one file per format and return the list of paths.
        truth: per example the ground-truth label names, or None.
        predicted: per example the labels predicted on the clean image, or None.
        title: figure title (what every row shares, e.g. method and budget).
        eps_label: how to print ``max|delta|`` (default: the number; e.g. pass ``"/255"`` to add ``n/255``).

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
    truth_names = _label_list(owner, "truth", truth, m)
    pred_names = _label_list(owner, "predicted", predicted, m)
    if amplify is not None and (
        isinstance(amplify, bool)
        or not isinstance(amplify, (int, float))
        or not math.isfinite(float(amplify))
        or amplify <= 0
    ):
        raise fail(owner, "amplify", "a finite float > 0 or None", amplify, "pass e.g. amplify=10.")

    x, xa = np.clip(x, 0.0, 1.0), np.clip(xa, 0.0, 1.0)
    plt = plt_module()
    fig, axes = plt.subplots(
        m,
        4,
        figsize=(11.0, 2.5 * m + 0.6),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 1, 1, 1.75]},
        layout="constrained",
    )
    for i in range(m):
        delta = xa[i] - x[i]
        peak = float(np.abs(delta).max())
        factor = float(amplify) if amplify is not None else (0.5 / peak if peak > 0 else 1.0)
        shown = np.clip(0.5 + factor * delta, 0.0, 1.0)
        name = str(titles[i]) if titles is not None else f"example {i}"
        panels = [(x[i], f"{name}: clean"), (xa[i], "adversarial"), (shown, f"perturbation ×{factor:.3g}")]
        for j, (img, panel_title) in enumerate(panels):
            arr, kwargs = _to_display(img)
            ax = axes[i, j]
            ax.imshow(arr, interpolation="nearest", **kwargs)
            ax.set_title(panel_title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        up, down = pairs[i]
        n_flips = len(up) + len(down)
        size = f"{peak:.4g}" + (f" = {peak * 255:.3g}/255" if eps_label == "/255" else "")
        header = f"{_flips_word(n_flips)} (↑{len(up)} ↓{len(down)}), max|δ| = {size}"
        ax = axes[i, 3]
        ax.axis("off")
        ax.text(0.0, 1.0, header, va="top", ha="left", fontsize=10, fontweight="bold", transform=ax.transAxes)
        body = _panel_text(up, down, truth_names[i] if truth_names else None, pred_names[i] if pred_names else None)
        ax.text(0.0, 0.86, body, va="top", ha="left", fontsize=9, family="monospace", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, outputs, formats is None)
