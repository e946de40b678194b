"""Analysis artefacts (profiles, correlations, attackability): one base for JSON save / load / format checks.

An :class:`Artefact` is a dataclass with a ``FORMAT`` tag. ``to_dict`` writes every field (tensors as nested
float lists), ``from_dict`` checks the tag and the field names (a missing or unknown field is an error naming
it and the fix) and restores tensors; ``save`` writes atomically (temporary file + rename: a crash never leaves
half a file), ``load`` reads with clear errors for a missing file, invalid JSON or another artefact's file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from labelflip._validation import LabelflipError, fail

__all__ = ["Artefact", "read_json", "write_json"]

A = TypeVar("A", bound="Artefact")


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as JSON atomically (temporary file + rename)."""
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


class Artefact:
    """Base of the JSON artefacts. Subclasses are dataclasses and set the class variables below.

    Class variables:
        FORMAT: the format tag written into every file (``"labelflip.profile/1"``).
        CREATE_HINT: how a user makes one (ends every error message).
        TENSOR_FIELDS: fields stored as nested lists and restored as float64 tensors (``None`` allowed).
    """

    FORMAT: ClassVar[str]
    CREATE_HINT: ClassVar[str] = "re-create the artefact."
    TENSOR_FIELDS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: ``{"format": FORMAT, <every field>}``."""
        out: dict[str, Any] = {"format": self.FORMAT}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value.double().tolist() if isinstance(value, Tensor) else _plain(value)
        return out

    @classmethod
    def from_dict(cls: type[A], data: Any) -> A:
        """Rebuild an artefact from :meth:`to_dict` output, with errors naming what is wrong."""
        owner = f"{cls.__name__}.from_dict"
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise LabelflipError(
                f"{owner}: not a labelflip {cls.__name__} artefact (expected format {cls.FORMAT!r}, got {got!r}). "
                f"Fix: {cls.CREATE_HINT}"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        given = {k: v for k, v in data.items() if k != "format"}
        unknown = sorted(set(given) - set(fields))
        missing = sorted(
            name
            for name, f in fields.items()
            if name not in given and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        if unknown or missing:
            parts = ([f"missing fields {', '.join(missing)}"] if missing else []) + (
                [f"unknown fields {', '.join(unknown)}"] if unknown else []
            )
            raise LabelflipError(
                f"{owner}: malformed {cls.__name__.lower()} artefact ({'; '.join(parts)}). Fix: {cls.CREATE_HINT}"
            )
        try:
            for name in cls.TENSOR_FIELDS:
                if given.get(name) is not None:
                    given[name] = torch.tensor(given[name], dtype=torch.float64)
            return cls(**given)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise LabelflipError(
                f"{owner}: malformed {cls.__name__.lower()} artefact ({exc}). Fix: {cls.CREATE_HINT}"
            ) from exc

    def save(self, path: str | Path) -> Path:
        """Write the artefact as JSON (atomically) and return the path."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls: type[A], path: str | Path) -> A:
        """Read an artefact written by :meth:`save`."""
        return cls.from_dict(read_json(path, owner=f"{cls.__name__}.load", fmt=cls.FORMAT, create_hint=cls.CREATE_HINT))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
