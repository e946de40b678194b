"""The seed paper's Fig. 1 for a study's Table VII stage: one clean image and each attack's adversarial example.

Row 0 is the paper's Fig. 1 ((a) original, then each minimum-norm baseline's own example: ML-CW, ML-DeepFool,
MLA-LP); every further row is a budgeted method (MI-FGSM with BCE, SLAM, ...) run at the L-inf norm of the baseline
example above it (the paper's Appendix M). Under every image: its flips (up / down), its norm and, as in Fig. 1, the
confidences of the labels the clean image predicts, before -> after, with the number of other flips.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from labelflip._validation import fail
from labelflip.report.figures._common import describe, finite_array, plt_module, save_figure, targets

__all__ = ["plot_budget_examples"]

_WRAP = 30  # characters per line of a title
_SIDE = 2.3  # inches, each image
_NAME = 18  # characters of a label name


def _display(img: np.ndarray) -> tuple[np.ndarray, dict]:
    if img.shape[0] == 1:
        return img[0], {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    return np.transpose(img, (1, 2, 0)), {}


def _norm_text(value: float, norm: str) -> str:
    if norm == "linf":
        return f"L∞ = {value:.3f} = {value * 255:.3g}/255"
    return f"L2 = {value:.3f}"


def _caption(clean_p: np.ndarray, adv_p: np.ndarray, threshold: np.ndarray, names: list[str], listed: int) -> str:
    """Flips, then the clean prediction's top labels ``name p0 -> p1`` and how many other labels flipped."""
    before, after = clean_p > threshold, adv_p > threshold
    up, down = int((~before & after).sum()), int((before & ~after).sum())
    shown = [int(j) for j in np.argsort(-clean_p, kind="stable") if before[j]][:listed]
    lines = [f"{up + down} flip{'' if up + down == 1 else 's'} (↑{up} ↓{down})"]
    lines += [f"{names[j]} {clean_p[j]:.0%} → {adv_p[j]:.0%}" for j in shown]
    others = up + down - sum(int(before[j] != after[j]) for j in shown)
    if others:
        lines.append(f"+ {others} other flip" + ("s" if others != 1 else ""))
    return "\n".join(lines)


def plot_budget_examples(
    clean: np.ndarray,
    clean_probs: np.ndarray,
    threshold: np.ndarray | float,
    columns: Sequence[str],
    rows: Sequence[str],
    images: np.ndarray,
    probs: np.ndarray,
    norms: np.ndarray,
    path: str | Path,
    *,
    label_names: Sequence[str] | None = None,
    norm: str = "linf",
    title: str | None = None,
    listed: int = 3,
    formats: Sequence[str] | None = None,
) -> Path | list[Path]:
    """Fig. 1 of the seed paper for one sample: the clean image and a grid of adversarial examples.

    Args:
        clean: ``(C, H, W)`` the clean image in [0, 1], ``C`` in {1, 3}.
        clean_probs: ``(K,)`` its confidences; ``threshold``: a float or ``(K,)`` per-label thresholds.
        columns: ``B`` baseline names (one column each, after the clean image's column).
        rows: ``R`` row names: the baselines' own examples first (``rows[0]``, e.g. "own example"), then each
            budgeted method, which ran at the norm of the baseline example in its column.
        images: ``(R, B, C, H, W)`` adversarial images in [0, 1]; ``probs``: ``(R, B, K)`` their confidences;
            ``norms``: ``(R, B)`` their perturbation norms (``norm``).
        path: output file (``.png`` / ``.svg``) or, with ``formats``, the stem.
        label_names: ``K`` names (default ``"label j"``); ``listed``: clean-positive labels listed per image.
        title: the figure title (model, sample).

    Returns:
        The written path, or the list of paths when ``formats`` is given.
    """
    owner = "plot_budget_examples"
    outputs = targets(owner, path, formats)
    fix = "pass images in [0, 1] in (C, H, W) order, e.g. from the stored Table VII artefact."
    x = finite_array(owner, "clean", clean, 3, "a finite (C, H, W) image in [0, 1] with C in {1, 3}", fix)
    if x.shape[0] not in (1, 3) or x.min() < -1e-6 or x.max() > 1 + 1e-6:
        raise fail(owner, "clean", "a (C, H, W) image in [0, 1] with C in {1, 3}", describe(x), fix)
    if isinstance(columns, str) or isinstance(rows, str) or not columns or not rows:
        raise fail(owner, "columns", "non-empty sequences of column and row names", (columns, rows))
    r, b = len(rows), len(columns)
    imgs = finite_array(owner, "images", images, 5, f"a finite ({r}, {b}, *{x.shape}) array", fix)
    if imgs.shape != (r, b, *x.shape) or imgs.min() < -1e-6 or imgs.max() > 1 + 1e-6:
        raise fail(owner, "images", f"shape {(r, b, *x.shape)} in [0, 1] (rows x columns x image)", describe(imgs))
    p0 = finite_array(owner, "clean_probs", clean_probs, 1, "a finite (K,) confidence vector", "pass sigmoid outputs.")
    k = p0.shape[0]
    p = finite_array(owner, "probs", probs, 3, f"a finite ({r}, {b}, {k}) array", "one confidence vector per image.")
    if p.shape != (r, b, k):
        raise fail(owner, "probs", f"shape {(r, b, k)}", describe(p))
    e = finite_array(owner, "norms", norms, 2, f"a finite ({r}, {b}) array", "one norm per image.")
    if e.shape != (r, b):
        raise fail(owner, "norms", f"shape {(r, b)}", describe(e))
    t = np.broadcast_to(np.asarray(threshold, dtype=float), (k,))
    names = [f"label {j}" for j in range(k)] if label_names is None else [str(n) for n in label_names]
    short = [n if len(n) <= _NAME else n[: _NAME - 1] + "…" for n in names]
    if len(names) != k:
        raise fail(owner, "label_names", f"{k} names (one per label)", len(names))
    if norm not in ("linf", "l2"):
        raise fail(owner, "norm", "'linf' or 'l2'", norm)

    plt = plt_module()
    # A fixed layout in inches (no layout engine, so the saved figure is the one drawn): square images of side
    # _SIDE; between rows two title lines and the text under the image (listed + 3 lines of 8 pt, 1.2 spacing).
    text = (listed + 3) * 8 * 1.25 / 72 + 0.2
    gap_h, gap_w, top, bottom = text + 0.45, 0.45, 0.75, text + 0.1
    width = (b + 1) * _SIDE + b * gap_w + 0.3
    height = r * _SIDE + (r - 1) * gap_h + top + bottom
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(r, b + 1, left=0.15 / width, right=1 - 0.15 / width, top=1 - top / height,
                            bottom=bottom / height, wspace=gap_w / _SIDE, hspace=gap_h / _SIDE)  # fmt: skip
    axes = np.array([[fig.add_subplot(grid[i, j]) for j in range(b + 1)] for i in range(r)])
    positive = [f"{short[j]} {p0[j]:.0%}" for j in np.argsort(-p0, kind="stable") if p0[j] > t[j]]
    for i in range(r):
        for j in range(b + 1):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0 and i > 0:
                ax.axis("off")
                what = f"{rows[i]}: budgeted, at each column's baseline {('L∞' if norm == 'linf' else 'L2')} norm"
                ax.text(0.5, 0.5, textwrap.fill(what, 20), ha="center", va="center", fontsize=9, transform=ax.transAxes)
                continue
            if j == 0:
                arr, kw = _display(x)
                head = ["predictions:", *positive[:listed]]
                more = len(positive) - len(head[1:])
                head += [f"+ {more} more" if more else f"({len(positive)} of K = {k})"]
                ax.imshow(arr, interpolation="nearest", **kw)
                ax.set_title("(a) original", fontsize=9)
                ax.set_xlabel("\n".join(head), fontsize=8)
                continue
            arr, kw = _display(np.clip(imgs[i, j - 1], 0.0, 1.0))
            ax.imshow(arr, interpolation="nearest", **kw)
            name = columns[j - 1] if i == 0 else textwrap.fill(f"{rows[i]} at {columns[j - 1]}'s norm", _WRAP)
            ax.set_title(name if i else f"({chr(ord('a') + j)}) {name}", fontsize=9)
            first, _, rest = _caption(p0, p[i, j - 1], t, short, listed).partition("\n")
            ax.set_xlabel("\n".join([first, _norm_text(float(e[i, j - 1]), norm), *rest.splitlines()]), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, outputs, formats is None)
