"""JSON artefacts (profiles, correlations, attackability): atomic writes and loads with clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labelflip._validation import LabelflipError, fail

__all__ = ["read_json", "write_json"]


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as JSON atomically (temporary file + rename: a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
    return path


def read_json(path: str | Path, *, owner: str, fmt: str, create_hint: str) -> dict[str, Any]:
    """Read an artefact written by :func:`write_json` and check its ``format`` tag."""
    path = Path(path)
    if not path.is_file():
        raise fail(owner, "path", "an existing artefact file", str(path), create_hint)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelflipError(f"{owner}: {path} is not valid JSON ({exc}). Fix: {create_hint}") from exc
    if not isinstance(data, dict) or data.get("format") != fmt:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise LabelflipError(f"{owner}: {path} is not a {fmt!r} artefact (format {got!r}). Fix: {create_hint}")
    return data
