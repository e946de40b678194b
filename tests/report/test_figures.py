"""Report figures: every function writes a real PNG and SVG, handles grey and RGB grids, rejects bad shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labelflip import LabelflipError
from labelflip.report.figures import plot_adversarial_grid, plot_confidence_histograms, plot_flips_vs_budget

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC


def _assert_svg(path: Path) -> None:
    assert path.is_file()
    head = path.read_bytes()[:4096]
    assert b"<svg" in head
    assert path.read_bytes().rstrip().endswith(b"</svg>")


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


def test_flips_vs_budget_legend_says_band(tmp_path: Path) -> None:
    # matplotlib's SVG writer keeps each text as a comment next to its glyph paths.
    with_band = plot_flips_vs_budget([1, 2], {"m": [1, 2]}, {"m": [0.5, 0.5]}, tmp_path / "f.svg")
    assert "<!-- band = ±error -->" in with_band.read_text(encoding="utf-8")
    without = plot_flips_vs_budget([1, 2], {"m": [1, 2]}, None, tmp_path / "g.svg")
    assert "band = ±error" not in without.read_text(encoding="utf-8")


def test_grid_lists_flips_with_signs(tmp_path: Path, images) -> None:
    clean, adv = images
    svg = plot_adversarial_grid(clean, adv, FLIPPED, tmp_path / "g.svg").read_text(encoding="utf-8")
    assert "+dog" in svg
    assert "−person" in svg
    assert "(no flips)" in svg


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


# ------------------------------------------------------------------------------------------ adversarial grid


@pytest.mark.parametrize("channels", [1, 3])
def test_adversarial_grid_png_and_svg(tmp_path: Path, images, channels: int) -> None:
    clean, adv = images
    clean, adv = clean[:, :channels], adv[:, :channels]
    png = plot_adversarial_grid(clean, adv, FLIPPED, tmp_path / f"grid{channels}.png", titles=["a", "b"])
    _assert_png(png)
    svg = plot_adversarial_grid(clean, adv, FLIPPED, tmp_path / f"grid{channels}.svg", amplify=10.0)
    _assert_svg(svg)


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
    ],
)
def test_adversarial_grid_rejects(tmp_path: Path, images, kwargs: dict, param: str) -> None:
    clean, adv = images
    args = {"clean": clean, "adv": adv, "flipped": FLIPPED, "path": tmp_path / "g.png"}
    args.update(kwargs)
    with pytest.raises(LabelflipError, match=f"'{param}' parameter of plot_adversarial_grid"):
        plot_adversarial_grid(**args)
