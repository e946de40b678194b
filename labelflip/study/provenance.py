"""What produced a study's results, recorded in its manifest: labelflip version and git commit, torch, numpy,
Python, platform and the engine hash (shared by the attack studies and the robust studies)."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelflip._version import __version__
from labelflip.study.store import engine_hash

__all__ = ["environment", "git_hash", "provenance"]


def git_hash() -> str | None:
    """The labelflip checkout's commit, or None outside a git checkout."""
    try:
        root = Path(__file__).resolve().parents[2]
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    """The versions a store is claimed with (``ResultsStore.claim``: a change of them is warned about)."""
    return {"labelflip_version": __version__, "git_hash": git_hash(), "torch_version": torch.__version__,
            "engine_hash": engine_hash()}  # fmt: skip


def environment() -> dict[str, Any]:
    """:func:`provenance` plus numpy, Python, platform and the creation time (UTC), for a manifest."""
    return {
        **provenance(),
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
