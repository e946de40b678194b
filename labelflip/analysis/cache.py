"""A user-level cache of probed analysis artefacts (flip profiles, correlations), reused across commands and studies.

Probing a profile or a correlation matrix is the slow part of most commands (minutes on a CPU), and its result
depends only on the model, the probe images and the probe settings. :class:`ProbeCache` keeps each artefact as a
JSON file under ``$LABELFLIP_PROBE_CACHE`` if set, else ``<zoo cache>/probes`` (``$LABELFLIP_CACHE/probes`` or
``~/.cache/labelflip/probes``, beside the built-in models' checkpoints), named by its ``kind``, the model
fingerprint and a sha256 of the whole **identity** mapping the caller gives (:mod:`labelflip.study.inputs` puts
there the model fingerprint, device and dtype, a hash of the probe images, every probe setting and the engine
hash, so a code change invalidates every entry). A file whose stored identity differs from the one asked (a hash
collision) or that does not parse is a miss.

Writes are atomic (a temporary file in the same directory, then ``os.replace``), so concurrent commands never see
half a file; reads are JSON only (:meth:`Artefact.from_dict`), nothing is unpickled.

Nothing uses the cache unless asked: the CLI activates one for a command (:func:`use_probe_cache`; ``--no-cache``
leaves it off), the library functions consult :func:`active_probe_cache`.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from labelflip._validation import LabelflipError
from labelflip.analysis.artefact import Artefact
from labelflip.zoo import default_cache_dir

__all__ = ["CACHE_FORMAT", "ProbeCache", "active_probe_cache", "default_probe_dir", "identity_hash", "use_probe_cache"]

log = logging.getLogger(__name__)
A = TypeVar("A", bound=Artefact)

CACHE_FORMAT = "labelflip.probe-cache/1"
_ACTIVE: contextvars.ContextVar[ProbeCache | None] = contextvars.ContextVar("labelflip_probe_cache", default=None)


def default_probe_dir() -> Path:
    """``$LABELFLIP_PROBE_CACHE`` if set, else ``<zoo cache dir>/probes`` (the zoo's: ``$LABELFLIP_CACHE`` or
    ``~/.cache/labelflip``)."""
    env = os.environ.get("LABELFLIP_PROBE_CACHE")
    return Path(env).expanduser() if env else default_cache_dir() / "probes"


def identity_hash(identity: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``identity`` (sorted keys; values must be JSON-able)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


class ProbeCache:
    """Probed artefacts on disk, keyed by an identity mapping (see the module docstring).

    Args:
        directory: where the JSON files live (default :func:`default_probe_dir`, created on the first write).
        notify: called with a one-line message on every hit ("reusing cached profile (...)"), e.g. a console print.
    """

    def __init__(self, directory: str | Path | None = None, *, notify: Callable[[str], None] | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_probe_dir()
        self.notify = notify

    def path(self, kind: str, identity: Mapping[str, Any]) -> Path:
        """The file of ``kind`` for ``identity``: ``<kind>-<fingerprint>-<hash>.json``."""
        fp = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(identity.get("fingerprint", "model")))[:40]
        return self.directory / f"{kind}-{fp}-{identity_hash(identity)[:24]}.json"

    def get(self, kind: str, identity: Mapping[str, Any], cls: type[A]) -> A | None:
        """The cached artefact of ``kind`` for exactly ``identity``, or ``None`` (missing, unreadable, other)."""
        path = self.path(kind, identity)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("kind") != kind:
                raise LabelflipError("not a labelflip probe-cache entry")
            if data.get("identity") != json.loads(json.dumps(dict(identity))):
                return None  # a hash collision: another identity
            value = cls.from_dict(data["artefact"])
        except (OSError, ValueError, KeyError, LabelflipError) as exc:
            log.warning("ignoring unusable probe-cache entry %s (%s)", path, exc)
            return None
        if self.notify is not None:
            self.notify(f"reusing cached {kind} ({path})")
        log.info("reusing cached %s %s", kind, path)
        return value

    def put(self, kind: str, identity: Mapping[str, Any], value: Artefact) -> Path | None:
        """Store ``value`` atomically; a directory that cannot be written only logs a warning (returns ``None``)."""
        path = self.path(kind, identity)
        payload = {"format": CACHE_FORMAT, "kind": kind, "identity": dict(identity), "artefact": value.to_dict()}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(payload, fh)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("could not write the probe cache %s (%s); continuing without it", path, exc)
            return None
        return path

    def get_or_compute(self, kind: str, identity: Mapping[str, Any], cls: type[A], compute: Callable[[], A]) -> A:
        """The cached artefact, or ``compute()`` stored for the next time."""
        cached = self.get(kind, identity, cls)
        if cached is not None:
            return cached
        value = compute()
        self.put(kind, identity, value)
        return value


def active_probe_cache() -> ProbeCache | None:
    """The cache activated by :func:`use_probe_cache` in this context, or ``None`` (no caching)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def use_probe_cache(cache: ProbeCache | None) -> Iterator[ProbeCache | None]:
    """Within the block, the probes of :mod:`labelflip.study.inputs` read and write ``cache`` (``None``: off)."""
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)
