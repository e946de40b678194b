"""One writer per study directory: an OS-level exclusive lock on ``<out>/.labelflip.lock``.

:func:`study_lock` is taken by :func:`labelflip.study.run_study` before any work. It is an ``fcntl.flock`` lock on
a lock file, so the operating system releases it whenever the process ends, however it ends (``kill -9``, a crash,
an out-of-memory kill): a killed run never leaves a lock that blocks the rerun, and a stale lock *file* left behind
by such a run is simply locked again. After locking, the holder writes who it is (PID, host, start time, command
line) into the file as JSON; a second run on the same directory fails at once (no waiting) with a
:class:`~labelflip._validation.LabelflipError` that names the directory, that run's PID, host and start time, and
the fix. On a normal exit the holder removes the lock file while it still holds the lock (a run that opened the old
file in that moment notices the file was replaced and locks the new one).

Readers do not lock: ``labelflip study export`` and the report open ``results.sqlite`` read-only
(``ResultsStore(path, readonly=True)``); SQLite's WAL journal gives them a consistent snapshot of the committed
units while a run is writing.

Distributed runs (per-rank store shards, future work) fit in through ``name``: the coordinator (rank 0) takes the
directory lock, ``study_lock(out)`` -> ``<out>/.labelflip.lock``, and holds it for the whole study, so that no
second *study* starts on the directory; each rank ``r`` writes only its own shard, ``results.rank{r}.sqlite``,
under its own lock, ``study_lock(out, name=f"rank{r}")`` -> ``<out>/.labelflip.rank{r}.lock``. The locks are
separate files, so ranks never block one another or the coordinator, while a duplicate rank (two processes both
started as rank ``r``) is refused like a duplicate study. Today :func:`~labelflip.study.run_study` takes the
directory lock for every call, whatever its ``rank``: shard workers that share one store must run one after the
other (or on separate output directories) until the per-rank shards exist.

Limits: the lock is advisory (it keeps labelflip runs apart, not other programs); processes forked *without* exec
from the holder (e.g. ``multiprocessing`` fork workers) share its lock until they exit; on file systems without
``flock`` support (some network mounts) and on Windows (no ``fcntl``) the lock is skipped with a logged warning.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelflip._validation import LabelflipError, fail

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LockInfo", "lock_path", "read_lock_info", "study_lock"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# flock itself is unsupported here (some network file systems): run unlocked rather than not at all
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_INFO_WAIT_S = 0.5  # how long a refused run waits for the holder to finish writing its JSON


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or held) a study lock. ``locked`` is False where no OS lock could be taken (Windows, or a file
    system without ``flock``), in which case the run goes ahead unprotected."""

    path: Path
    pid: int
    host: str
    started: str
    locked: bool = True


def lock_path(out_dir: str | Path, *, name: str = "study") -> Path:
    """The lock file of ``out_dir``: ``.labelflip.lock`` for ``name="study"`` (the directory lock), else
    ``.labelflip.{name}.lock`` (e.g. ``name="rank3"`` -> ``.labelflip.rank3.lock``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise fail(
            "study_lock", "name", "letters, digits, '_' or '-' (not starting with '_' or '-')", name, "e.g. 'rank0'."
        )
    return Path(out_dir) / (".labelflip.lock" if name == "study" else f".labelflip.{name}.lock")


def read_lock_info(path: str | Path) -> dict[str, Any] | None:
    """The JSON a lock holder wrote into lock file ``path`` (``pid``, ``host``, ``started``, ``argv``, ``name``), or
    None when the file is missing, empty or not (yet) complete. Reading says nothing about whether the lock is
    still held: a file left by a killed run still holds its last holder's JSON."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_fd(fd: int) -> dict[str, Any] | None:
    try:
        data = json.loads(os.pread(fd, 1 << 16, 0).decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _refusal(out_dir: Path, path: Path, fd: int, name: str) -> LabelflipError:
    deadline = time.monotonic() + _INFO_WAIT_S
    info = _read_fd(fd)
    while info is None and time.monotonic() < deadline:  # the holder locked but has not written its JSON yet
        time.sleep(0.02)
        info = _read_fd(fd)
    info = info or {}
    pid, host, started = info.get("pid", "unknown"), info.get("host", "unknown"), info.get("started", "unknown")
    what = "study run" if name == "study" else f"run holding lock {name!r}"
    mine = " (this very process: a run on this directory is already in progress here)" if pid == os.getpid() else ""
    return LabelflipError(
        f"Another labelflip {what} is using the output directory {out_dir}: PID {pid} on host {host}, started "
        f"{started}{mine}; lock file {path}. Two runs writing one study directory would mix their results. "
        "Fix: wait for it to finish, or choose another --out (output directory). "
        "Exporting or reporting the directory meanwhile is fine: readers do not need the lock."
    )


@contextmanager
def study_lock(out_dir: str | Path, *, name: str = "study") -> Iterator[LockInfo]:
    """Hold the exclusive lock ``name`` of study directory ``out_dir`` for the ``with`` block.

    Creates ``out_dir`` if needed, opens (or creates) :func:`lock_path` and takes a non-blocking exclusive
    ``fcntl.flock`` on it. If another process holds it, raises :class:`~labelflip._validation.LabelflipError` at
    once, naming the directory, the holder's PID, host and start time (from the JSON in the lock file) and the fix.
    Otherwise writes this process's ``{pid, host, started, argv, name}`` as JSON into the file and yields a
    :class:`LockInfo`; on leaving the block (normally or by an exception) removes the file and releases the lock.
    If the process dies inside the block the OS releases the lock; the file it leaves does not block a rerun.

    ``name="study"`` is the directory lock of a whole study; other names (``"rank3"``) are independent locks
    (separate files) for per-rank work, see the module docstring. Where no OS lock is available (Windows, a file
    system without ``flock``) a warning is logged and the block runs unlocked (``LockInfo.locked`` is False).
    The lock is not re-entrant: taking it again in the same process, even on the same thread, is refused.
    """
    out_dir = Path(out_dir)
    path = lock_path(out_dir, name=name)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "argv": sys.argv, "name": name}
    unlocked = LockInfo(path, me["pid"], me["host"], started, locked=False)
    if fcntl is None:  # pragma: no cover - Windows
        log.warning("study_lock: no fcntl on this platform; %s is not protected against a second run.", out_dir)
        yield unlocked
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # never truncate here: the holder's JSON is in it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                raise _refusal(out_dir, path, fd, name) from None
            finally:
                os.close(fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _UNSUPPORTED:
                raise
            log.warning("study_lock: %s does not support file locks (%s); running unprotected.", path, exc)
            yield unlocked
            return
        # The previous holder may have removed the file between our open and our flock: then we locked an orphan
        # inode that nobody else will ever see, so start over on the current file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)
        yield LockInfo(path, me["pid"], me["host"], started)
    finally:
        try:
            path.unlink(missing_ok=True)  # while still locked, so no one can lock this inode and keep using it
        finally:
            os.close(fd)  # releases the flock
