"""The HTML report: structure (stdlib ``html.parser``) and a real render in headless Chromium.

The Chromium test installs Debian's ``chromium`` package when it is missing (root + apt-get, as on a fresh CI
machine) and skips only when that is impossible or fails.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from labelflip import LabelflipError
from labelflip.report.html import Figure, Section, Table, render_report
from tests.chromium_support import run_chromium

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MALICIOUS = "<script>alert(1)</script>"
#: one solid colour per test figure, so the screenshot proves each image was decoded and painted.
COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 0.6, 0.0), "blue": (0.0, 0.0, 1.0)}
FIG_PX = (120, 80)  # width, height of each test figure in pixels


# -------------------------------------------------------------------------------------------------- helpers


def _solid_png(path: Path, rgb: tuple[float, float, float]) -> Path:
    """A small PNG filled with one colour (no axes, no margins)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    w, h = FIG_PX
    fig = plt.figure(figsize=(w / 40, h / 40), dpi=40)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(np.broadcast_to(np.asarray(rgb), (h, w, 3)), interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    fig.savefig(path, dpi=40)
    plt.close(fig)
    return path


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{a}</td><td>{b}</td></tr>" for a, b in rows)
    return f"<table><thead><tr><th>method</th><th>flips</th></tr></thead><tbody>{body}</tbody></table>"


@dataclass
class Expected:
    anchors: list[str]
    titles: list[str]
    captions: list[str]
    table_captions: list[str]


def _build_report(tmp_path: Path) -> tuple[Path, Expected]:
    figs = {name: _solid_png(tmp_path / f"{name}.png", rgb) for name, rgb in COLOURS.items()}
    sections = [
        Section(
            title="Flips vs budget",
            text="SLAM flips more labels than BCE at every budget.\n\nBands are ±1 std <not a tag>.",
            tables=[Table("Mean flips per method", _table([("BCE", "1.2"), ("SLAM", "3.4")]))],
            figures=[Figure("Mean flips, red", figs["red"])],
        ),
        Section(
            title="Confidence histograms",
            text="Many labels end just below the threshold.",
            figures=[Figure("Histogram, green", figs["green"]), Figure('Grid "blue" & <co>', figs["blue"])],
        ),
        Section(
            title="Statistics",
            text="Holm-corrected paired tests.",
            tables=[Table("Paired tests", _table([("SLAM vs BCE", "p < 0.01")]))],
            anchor="stats",
        ),
    ]
    path = render_report(
        tmp_path / "out" / "report.html",
        title="labelflip study <v1>",
        manifest={"model": MALICIOUS, "budgets": [0.001, 0.002], "seed": 0, "config": {"loss": "slam"}},
        sections=sections,
        guide="Read the tables first.\n\nFigures follow; <b>bold</b> is not markup here.",
    )
    expected = Expected(
        anchors=["flips-vs-budget", "confidence-histograms", "stats"],
        titles=[s.title for s in sections],
        captions=[f.caption for s in sections for f in s.figures],
        table_captions=[t.caption for s in sections for t in s.tables],
    )
    return path, expected


class _Doc(HTMLParser):
    """Collects what the assertions need from a (rendered or Chromium-dumped) document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self.sections: list[dict[str, str | None]] = []
        self.images: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.toc_links: list[str] = []
        self.tags: Counter[str] = Counter()
        self.text: list[str] = []
        self._in_toc = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags[tag] += 1
        if a.get("id"):
            self.ids.append(a["id"])
        if tag == "section":
            self.sections.append(a)
        elif tag == "img":
            self.images.append(a)
        elif tag == "nav":
            self._in_toc += 1
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
            if self._in_toc:
                self.toc_links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "nav":
            self._in_toc -= 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Doc:
    doc = _Doc()
    doc.feed(html)
    doc.close()
    return doc


def _check_document(doc: _Doc, expected: Expected) -> None:
    """Assertions shared by the structural and the Chromium test."""
    text = " ".join(" ".join(doc.text).split())
    # sections: the user's three (with data-section) plus the guide and manifest.
    data_sections = [s for s in doc.sections if s.get("data-section")]
    assert [s["id"] for s in data_sections] == expected.anchors
    assert all(s["id"] == s["data-section"] for s in data_sections)
    assert len(doc.ids) == len(set(doc.ids)), f"duplicate ids: {doc.ids}"
    for title in expected.titles:
        assert title in text
    # TOC links every section, and every in-page link has a target.
    for anchor in [*expected.anchors, "reading-guide", "manifest"]:
        assert f"#{anchor}" in doc.toc_links
    assert all(link[1:] in doc.ids for link in doc.links if link.startswith("#"))
    # images: inline PNG data URIs, alt = caption, unique data-figure.
    assert [img["alt"] for img in doc.images] == expected.captions
    figure_ids = [img.get("data-figure") for img in doc.images]
    assert all(figure_ids)
    assert len(set(figure_ids)) == len(figure_ids)
    for img in doc.images:
        src = img["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True)[:8] == PNG_MAGIC
    # tables (trusted HTML) are real tables; captions are numbered.
    assert doc.tags["table"] == len(expected.table_captions)
    for i, caption in enumerate(expected.table_captions, 1):
        assert f"Table {i}: {caption}" in text
    # the malicious manifest value is text, never an element; nothing is loaded from outside.
    assert MALICIOUS in text
    assert doc.tags["script"] == 0
    assert doc.tags["link"] == 0
    assert "<b>bold</b> is not markup here." in text
    assert doc.tags["b"] == 0


# ------------------------------------------------------------------------------------------ structural test


def test_report_structure(tmp_path: Path) -> None:
    path, expected = _build_report(tmp_path)
    assert path == tmp_path / "out" / "report.html"
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()
    assert "http://" not in html
    assert "https://" not in html
    assert "url(" not in html
    doc = _parse(html)
    _check_document(doc, expected)
    # front matter: guide before the sections, manifest rendered, paragraphs split on blank lines.
    assert html.index('id="reading-guide"') < html.index('id="flips-vs-budget"')
    assert "<p>Read the tables first.</p>" in html
    assert "<p>Bands are ±1 std &lt;not a tag&gt;.</p>" in html
    assert "<dt>budgets</dt>" in html
    # the temporary file was renamed, not left behind.
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]


def test_report_svg_figure_and_unique_anchors(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    fig.savefig(tmp_path / "line.svg")
    plt.close(fig)
    path = render_report(
        tmp_path / "r.html",
        title="t",
        manifest={},
        sections=[
            Section("Results", figures=[Figure("svg", tmp_path / "line.svg")]),
            Section("Results"),
            Section("Manifest"),
            Section("!!!"),
        ],
        guide="",
    )
    doc = _parse(path.read_text(encoding="utf-8"))
    assert [s["id"] for s in doc.sections if s.get("data-section")] == [
        "results",
        "results-2",
        "manifest-2",
        "section",
    ]
    assert len(doc.ids) == len(set(doc.ids))
    assert doc.images[0]["src"].startswith("data:image/svg+xml;base64,")


def test_report_missing_figure_names_figures(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(LabelflipError, match="'figures' parameter of render_report") as info:
        render_report(
            tmp_path / "r.html",
            title="t",
            manifest={},
            sections=[Section("A", figures=[Figure("gone", missing)])],
            guide="g",
        )
    assert str(missing) in str(info.value)
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"title": ""}, "title"),
        ({"manifest": [("a", 1)]}, "manifest"),
        ({"sections": ["not a section"]}, "sections"),
        ({"sections": [Section("A", anchor="has space")]}, "sections"),
        ({"guide": None}, "guide"),
    ],
)
def test_report_rejects(tmp_path: Path, kwargs: dict, param: str) -> None:
    args = {"title": "t", "manifest": {}, "sections": [Section("A")], "guide": "g"}
    args.update(kwargs)
    with pytest.raises(LabelflipError, match=f"'{param}' parameter of render_report"):
        render_report(tmp_path / "r.html", **args)


def test_report_rejects_non_image_figure(tmp_path: Path) -> None:
    (tmp_path / "fake.png").write_text("not a png")
    with pytest.raises(LabelflipError, match="'figures'"):
        render_report(
            tmp_path / "r.html",
            title="t",
            manifest={},
            sections=[Section("A", figures=[Figure("fake", tmp_path / "fake.png")])],
            guide="g",
        )


# -------------------------------------------------------------------------------------------- Chromium test


def test_report_renders_in_chromium(tmp_path: Path, chromium: str) -> None:
    import matplotlib.image

    path, expected = _build_report(tmp_path)
    url = path.resolve().as_uri()

    # 1. the DOM after load: every section and figure made it through Chromium's parser.
    dumped = run_chromium(chromium, tmp_path / "profile-dom", "--dump-dom", url=url).stdout
    assert "</html>" in dumped, f"no DOM dumped: {dumped[:200]!r}"
    for anchor in expected.anchors:
        assert f'data-section="{anchor}"' in dumped
    doc = _parse(dumped)
    _check_document(doc, expected)
    for img in doc.images:
        assert f'data-figure="{img["data-figure"]}"' in dumped

    # 2. the painted page: not blank, and each solid-colour figure shows up, i.e. every image was decoded.
    shot = tmp_path / "shot.png"
    run_chromium(chromium, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,3000", url=url)
    assert shot.is_file(), "chromium wrote no screenshot"
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    assert float(pixels.var()) > 0.0, "the screenshot is blank"
    area = FIG_PX[0] * FIG_PX[1]
    for name, rgb in COLOURS.items():
        close = np.all(np.abs(pixels - np.asarray(rgb, dtype=pixels.dtype)) < 0.05, axis=-1)
        assert close.sum() >= 0.8 * area, f"the {name} figure was not painted ({int(close.sum())} px of {area})"


# ------------------------------------------------------------------------------------------- figure sizes


def test_high_dpi_png_shows_at_its_physical_size(tmp_path: Path) -> None:
    """A 200-dpi PNG gets width = px * 96 / 200 CSS pixels (not blown up to the page width); <= 96 dpi: none."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from labelflip.report.html import png_display_width

    fig = plt.figure(figsize=(5, 2))
    fig.savefig(tmp_path / "hi.png", dpi=200)
    fig.savefig(tmp_path / "lo.png", dpi=72)
    plt.close(fig)
    assert png_display_width((tmp_path / "hi.png").read_bytes()) == 480  # 1000 px at 200 dpi
    assert png_display_width((tmp_path / "lo.png").read_bytes()) is None
    assert png_display_width(b"not a png") is None
    path = render_report(
        tmp_path / "r.html",
        title="t",
        manifest={},
        sections=[Section("A", figures=[Figure("hi", tmp_path / "hi.png"), Figure("lo", tmp_path / "lo.png")])],
        guide="g",
    )
    images = _parse(path.read_text(encoding="utf-8")).images
    assert [img.get("width") for img in images] == ["480", None]
