"""Report figures: real PNG (>= 200 dpi) and SVG files, bad inputs refused, and a readable layout measured on the
drawn figure: no two texts overlap (tick labels, colourbars, axis labels, titles, legends), axes say what they
show, legends stay off the data. The layout checks fail on the figures of the foundation release (overlapping
colourbar ticks over the next heatmap's label names; an "eps" x-axis ticked "5%", "10%" with colliding labels).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labelflip import LabelflipError
from labelflip.analysis import Attackability, Correlations, Profile
from labelflip.attacks import ALPHA_LINF
from labelflip.report.figures import (
    plot_adversarial_grid,
    plot_attackability,
    plot_confidence_histograms,
    plot_correlations,
    plot_flips_vs_budget,
    plot_profile,
)
from tests.report.figure_layout import capture, legend_covers_axes, overlaps, text_boxes, tick_labels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: the demo's grid: fractions of eps_max = 0.2227 (asl-cnn), the case whose tick labels collided.
EPS_MAX = 0.2227
BUDGETS = [f * EPS_MAX for f in (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)]
METHODS = ["BCE", "Linear", "SLAM", "Random", "CLASS(γ=0)", "CLASS(γ=0.5)", "CLASS(γ=1)"]
NAMES = [f"label_{i:02d}_name" for i in range(24)]


def _assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    dpi = Image.open(path).info["dpi"]
    assert min(dpi) >= 199.5, f"{path.name} written at {dpi} dpi"


def _assert_svg(path: Path) -> None:
    assert path.is_file()
    assert b"<svg" in path.read_bytes()[:4096]
    assert path.read_bytes().rstrip().endswith(b"</svg>")


def _assert_no_overlap(fig) -> list:
    boxes = text_boxes(fig)
    hits = overlaps(boxes)
    assert not hits, f"overlapping texts: {hits[:6]}"
    return boxes


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list:
    return capture(monkeypatch)


@pytest.fixture
def probs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    clean = rng.random((40, 8))
    adv = np.clip(clean + rng.normal(0.0, 0.25, clean.shape), 0.0, 1.0)
    target = (clean <= 0.5).astype(np.float32)
    return clean, adv, target


@pytest.fixture
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    clean = rng.random((2, 3, 12, 12)).astype(np.float32)
    adv = np.clip(clean + rng.uniform(-0.03, 0.03, clean.shape), 0.0, 1.0).astype(np.float32)
    return clean, adv


FLIPPED = [(["dog", "cat"], ["person"]), ([], [])]


def _demo_rows() -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seven methods shaped like the demo's, several of them identical from 40 % on (k = K)."""
    base = np.array([0.4, 1.5, 7.2, 16.3, 20.4, 22.4, 23.4])
    means = {
        m: (base + (0.6 * i if i < 3 else 0.0) * np.array([1, 1, 1, 0, 0, 0, 0])).tolist()
        for i, m in enumerate(METHODS)
    }
    return means, {m: [1.0] * 7 for m in METHODS}


# ------------------------------------------------------------------------------------------- flips vs budget


def test_flips_vs_budget_png_and_svg(tmp_path: Path) -> None:
    budgets = [0.001, 0.002, 0.004]
    means = {"BCE": [1.0, 2.0, 3.0], "SLAM": [2.0, 3.5, 5.0]}
    errors = {"BCE": [0.2, 0.3, 0.4], "SLAM": [0.1, 0.5, 0.3]}
    png = plot_flips_vs_budget(budgets, means, errors, tmp_path / "flips.png", title="flips")
    assert png == tmp_path / "flips.png"
    _assert_png(png)
    svg = plot_flips_vs_budget(budgets, means, None, tmp_path / "sub" / "flips.svg", budget_labels=["a", "b", "c"])
    _assert_svg(svg)
    both = plot_flips_vs_budget(budgets, means, errors, tmp_path / "both", formats=("png", "svg"))
    assert both == [tmp_path / "both.png", tmp_path / "both.svg"]
    _assert_png(both[0])
    _assert_svg(both[1])


def test_flips_x_axis_is_the_absolute_eps_in_pixels_and_255ths(tmp_path: Path, figures: list) -> None:
    """Every bottom tick reads ``n/255`` over its pixel value and sits at that eps; the top axis is % of eps_max."""
    means, stds = _demo_rows()
    plot_flips_vs_budget(BUDGETS, means, stds, tmp_path / "f.png", eps_max=EPS_MAX, num_labels=24)
    fig = figures[-1]
    fig.canvas.draw()
    ax = fig.axes[0]
    assert "absolute eps" in ax.get_xlabel() and "/255" in ax.get_xlabel()
    ticks = tick_labels(ax.xaxis)
    assert len(ticks) >= 4
    for loc, text in ticks:
        match = re.fullmatch(r"([\d.]+)/255\n([\d.e-]+)", text)
        assert match, f"tick {text!r} is not 'n/255' over the pixel value"
        assert float(match[1]) / 255 == pytest.approx(loc, rel=1e-6, abs=1e-12)
        assert float(match[2]) == pytest.approx(loc, rel=5e-3, abs=1e-12)
    (top,) = ax.child_axes
    assert "% of eps_max" in top.get_xlabel() and "0.2227" in top.get_xlabel()
    top_ticks = tick_labels(top.xaxis)
    assert len(top_ticks) >= 3
    for loc, text in top_ticks:  # the secondary axis works in its own units: percent
        assert text.endswith("%") and float(text[:-1]) == pytest.approx(loc)
    _assert_no_overlap(fig)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eps_max": EPS_MAX, "num_labels": 24, "notes": ["At 40%, 60%, 80%, 100% the subset attacks equal BCE."]},
        {"norm": "l2", "budget_labels": ["5%", "10%", "20%", "40%", "60%", "80%", "100%"]},
        {"eps_max": 4 / 255, "title": "a very small eps_max"},
    ],
)
def test_flips_vs_budget_layout(tmp_path: Path, figures: list, kwargs: dict) -> None:
    means, stds = _demo_rows()
    budgets = (
        BUDGETS
        if "eps_max" not in kwargs or kwargs["eps_max"] == EPS_MAX
        else [f * 4 / 255 for f in (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)]
    )
    _assert_svg(plot_flips_vs_budget(budgets, means, stds, tmp_path / "f.svg", band="± population std", **kwargs))
    fig = figures[-1]
    _assert_no_overlap(fig)
    assert not legend_covers_axes(fig), "the legend covers the plot"


def test_flips_methods_stay_distinguishable(tmp_path: Path, figures: list) -> None:
    """Own marker x line style per method; identical rows named in a note and in the legend; K line; band title."""
    rows = {"BCE": [1.0, 2.0, 3.0], "CLASS(γ=0)": [1.0, 2.0, 3.0], "SLAM": [1.5, 2.5, 3.5]}
    plot_flips_vs_budget(
        [0.01, 0.02, 0.04], rows, {"BCE": [0.1] * 3}, tmp_path / "f.png", num_labels=6, band="± population std"
    )
    fig = figures[-1]
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_label() in ("BCE", "CLASS(γ=0) (= BCE)", "SLAM")]
    assert len(lines) == 3
    assert len({(ln.get_marker(), ln.get_linestyle()) for ln in lines}) == 3
    assert lines[0].get_linewidth() > lines[1].get_linewidth() > lines[2].get_linewidth()  # later ones inside
    texts = [b.text for b in _assert_no_overlap(fig)]
    assert any("Identical at every budget: BCE = CLASS(γ=0)" in t.replace("\n", " ") for t in texts)
    assert ax.get_legend().get_title().get_text() == "band = ± population std"
    k_lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("K = 6")]
    assert k_lines and set(np.asarray(k_lines[0].get_ydata(), dtype=float)) == {6.0}
    without = plot_flips_vs_budget([1, 2], {"m": [1, 2]}, None, tmp_path / "g.svg")
    assert "band =" not in without.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"budgets": [[0.1, 0.2]]}, "budgets"),
        ({"means": {"m": [1.0]}}, "means"),
        ({"means": {}}, "means"),
        ({"errors": {"m": [0.1, -0.1]}}, "errors"),
        ({"errors": {"other": [0.1, 0.1]}}, "errors"),
        ({"budget_labels": ["only one"]}, "budget_labels"),
        ({"path": "flips.jpg"}, "path"),
        ({"formats": ("png", "gif")}, "formats"),
        ({"norm": "l1"}, "norm"),
        ({"eps_max": -1.0}, "eps_max"),
        ({"num_labels": 0}, "num_labels"),
    ],
)
def test_flips_vs_budget_rejects(tmp_path: Path, kwargs: dict, param: str) -> None:
    args = {"budgets": [0.1, 0.2], "means": {"m": [1.0, 2.0]}, "errors": None, "path": tmp_path / "f.png"}
    args.update(kwargs)
    if isinstance(args["path"], str):
        args["path"] = tmp_path / args["path"]
    with pytest.raises(LabelflipError, match=f"'{param}' parameter of plot_flips_vs_budget"):
        plot_flips_vs_budget(**args)


# ------------------------------------------------------------------------------------- confidence histograms


def test_confidence_histograms_png_and_svg(tmp_path: Path, probs) -> None:
    clean, adv, target = probs
    _assert_png(plot_confidence_histograms(clean, adv, target, tmp_path / "h.png", title="eps = 0.02"))
    paths = plot_confidence_histograms(clean, adv, target, tmp_path / "h", threshold=0.4, log=False, formats=["svg"])
    assert paths == [tmp_path / "h.svg"]
    _assert_svg(paths[0])


def test_confidence_histograms_share_counts_and_read_log_ticks(tmp_path: Path, probs, figures: list) -> None:
    clean, adv, target = probs
    plot_confidence_histograms(clean, adv, target, tmp_path / "h.svg", title="model: BCE at 20%")
    fig = figures[-1]
    axes = np.asarray(fig.axes).reshape(2, 2)
    boxes = _assert_no_overlap(fig)
    for row in axes:
        assert row[0].get_ylim() == row[1].get_ylim(), "before and after do not share the count axis"
        assert row[0].get_ylim()[0] < 1.0, "a bin with one label would be cut off"
        ticks = [text for _, text in tick_labels(row[0].yaxis)]
        assert ticks and all(re.fullmatch(r"[\d,]+", t) for t in ticks), ticks  # 1, 10, 100: no 2x10^0
        assert ticks[0] == "1"
    assert not [b for b in boxes if b.role == "ytick" and ("times" in b.text or "$" in b.text)]
    assert not legend_covers_axes(fig)


def test_confidence_histograms_one_direction_only(tmp_path: Path, probs) -> None:
    clean, adv, _ = probs
    _assert_png(plot_confidence_histograms(clean, adv, np.ones_like(clean), tmp_path / "up.png"))


@pytest.mark.parametrize(
    ("which", "bad", "param"),
    [
        ("clean_probs", np.zeros(5), "clean_probs"),
        ("adv_probs", np.zeros((40, 7)), "adv_probs"),
        ("target", np.zeros((40, 9)), "target"),
        ("target", np.full((40, 8), 0.5), "target"),
        ("adv_probs", np.full((40, 8), 3.0), "adv_probs"),
        ("clean_probs", np.full((40, 8), np.nan), "clean_probs"),
    ],
)
def test_confidence_histograms_rejects(tmp_path: Path, probs, which: str, bad: np.ndarray, param: str) -> None:
    args = dict(zip(("clean_probs", "adv_probs", "target"), probs, strict=True))
    args[which] = bad
    with pytest.raises(LabelflipError, match=f"'{param}' parameter of plot_confidence_histograms"):
        plot_confidence_histograms(path=tmp_path / "h.png", **args)


def test_confidence_histograms_rejects_threshold(tmp_path: Path, probs) -> None:
    with pytest.raises(LabelflipError, match="'threshold'"):
        plot_confidence_histograms(*probs, tmp_path / "h.png", threshold=1.0)


# ------------------------------------------------------------------------------------- analysis figures


def _correlations(k: int, measured: bool) -> Correlations:
    gen = torch.Generator().manual_seed(k)
    down = -torch.rand(k, k, generator=gen, dtype=torch.float64) * 0.1 if measured else None
    if down is not None:
        down[1] = float("nan")  # a label with no image
    names = NAMES[:k] if k <= len(NAMES) else [f"l{i}" for i in range(k)]
    return Correlations(
        flipup=torch.rand(k, k, generator=gen, dtype=torch.float64) * 0.2,
        eps=0.005,
        num_samples=8,
        label_names=names,
        flipdown_measured=down,
    )


@pytest.mark.parametrize(("k", "measured"), [(24, True), (44, False)])
def test_correlation_heatmaps_readable(tmp_path: Path, figures: list, k: int, measured: bool) -> None:
    """Colourbars never cover label names; axes named attacked -> affected; names only where K allows."""
    corr = _correlations(k, measured)
    _assert_svg(plot_correlations(corr, tmp_path / "c.svg", cooccurrence=np.eye(k)))
    fig = figures[-1]
    boxes = _assert_no_overlap(fig)
    heatmaps = [ax for ax in fig.axes if ax.get_images() and ax.get_label() != "<colorbar>"]
    assert len(heatmaps) == 3 + measured
    assert heatmaps[0].get_ylabel() == "attacked label (row)"
    assert heatmaps[0].get_xlabel() == "affected label (column)"
    ticks = {b.text for b in boxes if b.role in ("xtick", "ytick")}
    if k <= 40:
        assert set(corr.label_names) <= ticks
        sizes = {b.artist.get_fontsize() for b in boxes if b.text in corr.label_names}
        assert min(sizes) >= 4.5
    else:
        assert not set(corr.label_names) & ticks
    titles = [ax.get_title() for ax in heatmaps]
    assert any("measured" in t and "raw" in t for t in titles) == measured


def test_attackability_legend_off_the_bars_and_images_per_label(tmp_path: Path, figures: list) -> None:
    k = 24
    rng = np.random.default_rng(0)
    up = rng.random(k).tolist()
    up[3] = float("nan")
    att = Attackability(
        eps=0.01,
        label_names=NAMES,
        up_ratio=up,
        up_samples=[20] * 3 + [0] + [20] * 20,
        up_confidence=(rng.random(k) * 0.3).tolist(),
        down_ratio=rng.random(k).tolist(),
        down_samples=list(range(k)),
        down_confidence=(0.7 + rng.random(k) * 0.3).tolist(),
    )
    _assert_png(plot_attackability(att, tmp_path / "a.png"))
    fig = figures[-1]
    _assert_no_overlap(fig)
    assert not legend_covers_axes(fig), "the legend covers bars"
    counts = fig.axes[2]
    assert "images" in counts.get_ylabel()
    heights = sorted(p.get_height() for p in counts.patches)
    assert heights[-1] == 23 and 0 in heights


def test_profile_shows_eps_max_probe_size_and_interval(tmp_path: Path, figures: list) -> None:
    prof = Profile(
        coefficients=[0.0, 150.0],
        eps=[0.0, 0.02, 0.04],
        flips=[0.0, 3.0, 6.0],
        flips_bce=[0.0, 3.0, 6.0],
        flips_linear=[0.0, 2.0, 5.0],
        eps_max=0.04,
        order=1,
        interval=10,
        alpha=ALPHA_LINF,
        curve="max",
        norm="linf",
        rel_tol=0.01,
        num_labels=6,
        num_samples=40,
        stop_reason="converged",
    )
    _assert_png(plot_profile(prof, tmp_path / "p.png", eps_max_ci=(0.035, 0.046)))
    fig = figures[-1]
    legend = [b.text for b in _assert_no_overlap(fig) if b.role == "legend"]
    assert any("eps_max = 0.04 = 10.2/255 (n = 40)" in t for t in legend), legend
    assert any("95% CI [0.035, 0.046]" in t for t in legend)
    assert all(text.endswith("/255") for _, text in tick_labels(fig.axes[0].child_axes[0].xaxis))


# ------------------------------------------------------------------------------------------ adversarial grid


@pytest.mark.parametrize("channels", [1, 3])
def test_adversarial_grid_png_and_svg(tmp_path: Path, images, channels: int) -> None:
    clean, adv = images
    clean, adv = clean[:, :channels], adv[:, :channels]
    png = plot_adversarial_grid(clean, adv, FLIPPED, tmp_path / f"grid{channels}.png", titles=["a", "b"])
    _assert_png(png)
    svg = plot_adversarial_grid(clean, adv, FLIPPED, tmp_path / f"grid{channels}.svg", amplify=10.0)
    _assert_svg(svg)


def test_grid_text_truth_prediction_flips(tmp_path: Path, images, figures: list) -> None:
    """Ground truth and clean prediction beside the flips, '1 flip' in the singular, a 0-flip row marked, row
    titles short (what the rows share is the figure title), no text running into the next row."""
    clean, adv = np.concatenate(images), np.concatenate(images)
    adv = np.clip(adv + 0.01, 0, 1)
    flipped = [(["dog"], []), ([], []), ([f"label_{i}" for i in range(20)], ["person", "car"]), (["a"], ["b"])]
    plot_adversarial_grid(
        clean,
        adv,
        flipped,
        tmp_path / "g.svg",
        titles=[f"sample {i}" for i in range(4)],
        truth=[["cat"], ["dog", "person"], ["person", "car"], []],
        predicted=[["cat"], ["dog"], ["person", "car", "bus"], ["b"]],
        title="model: SLAM at 20%, eps = 0.0445 = 11.4/255",
        eps_label="/255",
    )
    fig = figures[-1]
    texts = [b.text for b in _assert_no_overlap(fig)]
    joined = "\n".join(texts)
    assert re.search(r"^1 flip \(", joined, re.M) and "1 flips" not in joined
    assert "0 flips" in joined and "prediction unchanged" in joined
    assert "ground truth: cat" in joined and "clean prediction: person, car, bus" in joined
    assert "flipped down: −person, −car" in joined and "more" in joined
    assert "= 11.4/255" not in "".join(ax.get_title() for ax in fig.axes)  # the budget is said once, on top
    assert all(len(ax.get_title()) <= 30 for ax in fig.axes)


def test_grid_lists_flips_with_signs(tmp_path: Path, images) -> None:
    clean, adv = images
    svg = plot_adversarial_grid(clean, adv, FLIPPED, tmp_path / "g.svg").read_text(encoding="utf-8")
    assert "+dog" in svg
    assert "−person" in svg
    assert "prediction unchanged" in svg


def test_adversarial_grid_zero_perturbation_and_many_flips(tmp_path: Path, images) -> None:
    clean, _ = images
    flipped = [([f"l{i}" for i in range(30)], ["x"]), ([], ["y"])]
    _assert_png(plot_adversarial_grid(clean, clean.copy(), flipped, tmp_path / "same.png"))


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"clean": np.zeros((2, 12, 12))}, "clean"),
        ({"clean": np.zeros((2, 2, 12, 12)), "adv": np.zeros((2, 2, 12, 12))}, "clean"),
        ({"adv": np.zeros((2, 3, 12, 11))}, "adv"),
        ({"adv": np.full((2, 3, 12, 12), 2.0)}, "adv"),
        ({"flipped": [(["a"], [])]}, "flipped"),
        ({"flipped": [("a", "b"), ([], [])]}, "flipped"),
        ({"titles": ["only one"]}, "titles"),
        ({"amplify": -1.0}, "amplify"),
        ({"truth": [["a"]]}, "truth"),
        ({"predicted": ["a", "b"]}, "predicted"),
    ],
)
def test_adversarial_grid_rejects(tmp_path: Path, images, kwargs: dict, param: str) -> None:
    clean, adv = images
    args = {"clean": clean, "adv": adv, "flipped": FLIPPED, "path": tmp_path / "g.png"}
    args.update(kwargs)
    with pytest.raises(LabelflipError, match=f"'{param}' parameter of plot_adversarial_grid"):
        plot_adversarial_grid(**args)
