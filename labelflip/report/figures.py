"""Report figures (matplotlib, headless Agg backend selected lazily).

* :func:`plot_flips_vs_budget`: mean flips per method against the budget, with a shaded ``±error`` band.
* :func:`plot_confidence_histograms`: label confidences before / after the attack, split into labels to flip
  up and labels to flip down, with the decision threshold (seed Fig. 2, 10, 11).
* :func:`plot_adversarial_grid`: clean image, adversarial image, amplified perturbation and the list of
  flipped labels per example (seed Fig. 1, 21).

Every function writes one file whose format follows the suffix of ``path`` (``.png`` or ``.svg``; ``.pdf``
also works) and returns its :class:`~pathlib.Path`. Pass ``formats=("png", "svg")`` to write the same figure
once per format (``path`` with its suffix replaced); the list of written paths is returned instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._validation import fail

__all__ = ["plot_adversarial_grid", "plot_confidence_histograms", "plot_flips_vs_budget"]

logger = logging.getLogger(__name__)

_FORMATS = ("png", "svg", "pdf")
_MAX_LISTED_FLIPS = 12


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _targets(owner: str, path: str | Path, formats: Sequence[str] | None) -> list[Path]:
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


def _save(fig: Any, targets: list[Path], single: bool) -> Path | list[Path]:
    plt = _plt()
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            fmt = target.suffix.lower().lstrip(".")
            metadata = {"Date": None} if fmt in ("svg", "pdf") else None  # reproducible bytes
            with plt.rc_context({"svg.hashsalt": "labelflip"}):
                fig.savefig(target, format=fmt, dpi=120, bbox_inches="tight", metadata=metadata)
            logger.debug("wrote figure %s", target)
    finally:
        plt.close(fig)
    return targets[0] if single else targets


def _finite_array(owner: str, param: str, value: Any, ndim: int, expected: str, fix: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise fail(owner, param, expected, value, fix) from None
    if arr.ndim != ndim or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise fail(owner, param, expected, _describe(arr), fix)
    return arr


def _describe(arr: np.ndarray) -> str:
    return f"array(shape={arr.shape}, dtype={arr.dtype})"


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
    targets = _targets(owner, path, formats)
    x = _finite_array(owner, "budgets", budgets, 1, "a non-empty 1-D sequence of finite budgets", "pass eps values.")
    nb = x.shape[0]
    if not isinstance(means, Mapping) or not means:
        raise fail(owner, "means", "a non-empty mapping method -> mean flips per budget", means)
    series: dict[str, np.ndarray] = {}
    for name, values in means.items():
        series[str(name)] = _finite_array(
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
                _describe(series[str(name)]),
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
            err = _finite_array(
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

    plt = _plt()
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
    return _save(fig, targets, formats is None)


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
    targets = _targets(owner, path, formats)
    fix = "pass sigmoid probabilities of shape (N, K), e.g. torch.sigmoid(logits).numpy()."
    clean = _finite_array(owner, "clean_probs", clean_probs, 2, "a finite (N, K) array of probabilities", fix)
    adv = _finite_array(owner, "adv_probs", adv_probs, 2, "a finite (N, K) array of probabilities", fix)
    tgt = _finite_array(owner, "target", target, 2, "a finite (N, K) array in {0, 1}", "pass the attack target.")
    if adv.shape != clean.shape:
        raise fail(owner, "adv_probs", f"the shape of clean_probs {clean.shape}", _describe(adv), fix)
    if tgt.shape != clean.shape:
        raise fail(owner, "target", f"the shape of clean_probs {clean.shape}", _describe(tgt), "pass the target.")
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

    plt = _plt()
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
    return _save(fig, targets, formats is None)


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
    targets = _targets(owner, path, formats)
    expected = "a finite (M, C, H, W) image array in [0, 1] with C in {1, 3}"
    fix = "pass NCHW images in [0, 1], e.g. x.detach().cpu().numpy()."
    x = _finite_array(owner, "clean", clean, 4, expected, fix)
    xa = _finite_array(owner, "adv", adv, 4, expected, fix)
    if x.shape[1] not in (1, 3):
        raise fail(owner, "clean", expected, _describe(x), "pass grey (C=1) or RGB (C=3) images in NCHW order.")
    if xa.shape != x.shape:
        raise fail(owner, "adv", f"the shape of clean {x.shape}", _describe(xa), "pass one adversarial per clean.")
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
    plt = _plt()
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
    return _save(fig, targets, formats is None)
