"""One self-contained HTML report: sections with text, tables and inline figures.

:func:`render_report` renders ``report/templates/report.html.j2`` with Jinja2 (autoescaping on) into a single
file with no external resources: figures are embedded as ``data:`` URIs (PNG or SVG), the style sheet is
inline and there is no script. Plain text (the reading guide, section text, manifest values, captions) is
escaped; only :attr:`Table.html`, produced by labelflip's own table renderers, is inserted verbatim.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import re
import struct
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from labelflip._validation import fail
from labelflip._version import __version__

__all__ = ["Figure", "Section", "Table", "png_display_width", "render_report"]

logger = logging.getLogger(__name__)

_OWNER = "render_report"
_TEMPLATE = "report.html.j2"
_MIME = {".png": "image/png", ".svg": "image/svg+xml"}
#: ids used by the template itself; section anchors never take them.
_RESERVED_IDS = frozenset({"top", "contents", "reading-guide", "manifest"})


@dataclass
class Figure:
    """A PNG or SVG file embedded inline; ``caption`` is also the image's ``alt`` text."""

    caption: str
    path: Path


@dataclass
class Table:
    """A table as trusted HTML produced by labelflip's own renderers (inserted unescaped)."""

    caption: str
    html: str


@dataclass
class Section:
    """A titled part of the report: plain text (paragraphs split on blank lines), then tables, then figures.

    ``anchor`` is the section's ``id``; by default a slug of the title (made unique within the report).
    """

    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    anchor: str | None = None


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    try:
        loader: jinja2.BaseLoader = jinja2.PackageLoader("labelflip", "report/templates")
    except (ValueError, ModuleNotFoundError):  # e.g. a zipped or unusual install: read next to this module
        loader = jinja2.FileSystemLoader(str(Path(__file__).resolve().parent / "templates"))
    return jinja2.Environment(
        loader=loader,
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not slug or not slug[0].isalpha():
        slug = "s-" + slug if slug else "section"
    return slug


def _unique(base: str, used: set[str]) -> str:
    candidate, n = base, 2
    while candidate in used:
        candidate, n = f"{base}-{n}", n + 1
    used.add(candidate)
    return candidate


def _paragraphs(text: str) -> list[str]:
    """Plain text -> paragraphs (split on blank lines, outer whitespace stripped, empties dropped)."""
    return [p.strip() for p in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")) if p.strip()]


def _manifest_value(value: object) -> tuple[str, bool]:
    """``(text, is_block)``: mappings and lists as indented JSON (a ``<pre>`` block), scalars as ``str``."""
    if isinstance(value, (Mapping, list, tuple)):
        try:
            return json.dumps(value, indent=2, sort_keys=False, default=str, ensure_ascii=False), True
        except (TypeError, ValueError):
            return str(value), False
    return str(value), False


def png_display_width(data: bytes) -> int | None:
    """CSS pixels a PNG should take so that it shows at its physical size (``width_px * 96 / dpi``, from the
    IHDR and pHYs chunks); None when it has no resolution in metres or is at most 96 dpi (never upscaled)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 24:
        return None
    width = struct.unpack(">I", data[16:20])[0]
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"pHYs" and length == 9:
            ppm_x, _ppm_y, unit = struct.unpack(">IIB", data[pos + 8 : pos + 17])
            dpi = ppm_x * 0.0254
            return round(width * 96 / dpi) if unit == 1 and dpi > 96 else None
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


def _data_uri(owner_section: str, fig: Figure) -> str:
    path = Path(fig.path)
    if not path.is_file():
        raise fail(
            _OWNER,
            "figures",
            "existing PNG or SVG files",
            str(path),
            f"figure {fig.caption!r} of section {owner_section!r} points at a missing file; write the figure "
            "before rendering the report (or fix its path).",
        )
    mime = _MIME.get(path.suffix.lower())
    data = path.read_bytes()
    looks_ok = (
        data.startswith(b"\x89PNG\r\n\x1a\n") if mime == "image/png" else mime is not None and b"<svg" in data[:4096]
    )
    if not looks_ok:
        raise fail(
            _OWNER,
            "figures",
            "PNG (.png) or SVG (.svg) files whose content matches the suffix",
            str(path),
            f"figure {fig.caption!r} of section {owner_section!r}: save it with savefig('....png') or '.svg'.",
        )
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _check_inputs(title: Any, manifest: Any, sections: Any, guide: Any) -> None:
    if not isinstance(title, str) or not title.strip():
        raise fail(_OWNER, "title", "a non-empty string", title)
    if not isinstance(manifest, Mapping):
        raise fail(_OWNER, "manifest", "a mapping of name -> value", manifest, "pass e.g. {'seed': 0}.")
    if not isinstance(guide, str):
        raise fail(_OWNER, "guide", "plain text (str)", guide, "pass the reading guide as a string.")
    if isinstance(sections, (str, bytes)) or not isinstance(sections, Sequence):
        raise fail(_OWNER, "sections", "a sequence of Section objects", sections)
    for i, sec in enumerate(sections):
        if not isinstance(sec, Section):
            raise fail(_OWNER, "sections", f"Section objects (item {i} is not)", sec, "wrap it in Section(...).")
        if not isinstance(sec.title, str) or not sec.title.strip():
            raise fail(_OWNER, "sections", f"a non-empty title for section {i}", sec.title)
        if not isinstance(sec.text, str):
            raise fail(_OWNER, "sections", f"plain text in section {sec.title!r}", sec.text)
        if sec.anchor is not None and (
            not isinstance(sec.anchor, str) or not re.fullmatch(r"[A-Za-z][\w-]*", sec.anchor)
        ):
            raise fail(
                _OWNER,
                "sections",
                f"an anchor of letters, digits, '-' or '_' (starting with a letter) in section {sec.title!r}",
                sec.anchor,
                "pass anchor=None to derive it from the title.",
            )
        for tab in sec.tables:
            if not isinstance(tab, Table):
                raise fail(_OWNER, "tables", f"Table objects in section {sec.title!r}", tab)
        for fig in sec.figures:
            if not isinstance(fig, Figure):
                raise fail(_OWNER, "figures", f"Figure objects in section {sec.title!r}", fig)


def _context(title: str, manifest: Mapping[str, object], sections: Sequence[Section], guide: str) -> dict[str, Any]:
    used = set(_RESERVED_IDS)
    rendered = []
    n_tables = n_figures = 0
    for sec in sections:
        anchor = _unique(sec.anchor if sec.anchor else _slug(sec.title), used)
        tables = []
        for tab in sec.tables:
            n_tables += 1
            tables.append(
                {
                    "id": _unique(f"table-{n_tables}", used),
                    "number": n_tables,
                    "caption": tab.caption,
                    "html": Markup(tab.html),
                }
            )
        figures = []
        for fig in sec.figures:
            n_figures += 1
            figures.append(
                {
                    "id": _unique(f"figure-{n_figures}", used),
                    "number": n_figures,
                    "caption": fig.caption,
                    "src": _data_uri(sec.title, fig),
                    "width": png_display_width(Path(fig.path).read_bytes()),
                }
            )
        rendered.append(
            {
                "anchor": anchor,
                "title": sec.title,
                "paragraphs": _paragraphs(sec.text),
                "tables": tables,
                "figures": figures,
            }
        )
    entries = []
    for key, value in manifest.items():
        text, block = _manifest_value(value)
        entries.append({"key": str(key), "value": text, "block": block})
    return {
        "title": title,
        "guide": _paragraphs(guide),
        "manifest": entries,
        "sections": rendered,
        "version": __version__,
    }


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_report(
    path: str | Path,
    *,
    title: str,
    manifest: Mapping[str, object],
    sections: Sequence[Section],
    guide: str,
) -> Path:
    """Render one self-contained HTML report and write it atomically (temporary file + rename).

    Layout: title, table of contents (links to every section anchor), the reading guide, the manifest (a
    definition list; nested values as JSON), then each section as ``<section id=... data-section=...>`` with
    its paragraphs, tables (``Table n: caption``) and figures (``<img alt=caption data-figure=...>`` with a
    ``data:`` URI and, for a PNG with more than 96 dpi, a ``width`` that shows it at its physical size; ``Figure
    n: caption``). Table cells never wrap (``white-space: nowrap``; wide tables scroll sideways). All plain text
    is escaped; ``Table.html`` is trusted.

    Args:
        path: the ``.html`` file to write (parent directories are created).
        title: report title.
        manifest: run metadata (model, data, budgets, seeds, versions...), rendered in insertion order.
        sections: the report body, in order.
        guide: the reading guide, plain text; blank lines separate paragraphs.

    Returns:
        The written path.

    Raises:
        LabelflipError: bad arguments, or a figure file that is missing or not a PNG/SVG (names ``figures``).
    """
    if not isinstance(path, (str, Path)) or str(path) == "":
        raise fail(_OWNER, "path", "a file path (str or Path)", path, "pass e.g. 'report.html'.")
    _check_inputs(title, manifest, sections, guide)
    context = _context(title, manifest, sections, guide)
    html = _environment().get_template(_TEMPLATE).render(**context)
    out = Path(path)
    _write_atomic(out, html)
    logger.info("wrote report %s (%d sections, %d bytes)", out, len(sections), len(html.encode("utf-8")))
    return out
