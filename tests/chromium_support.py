"""Headless Chromium for tests: Debian's ``chromium`` package, installed by the test setup where absent.

The ``chromium`` fixture (re-exported by ``conftest.py``) installs the package as root with apt-get on a fresh
machine and skips, with the reason, only when that is impossible or fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

APT_TIMEOUT_S = 600
CHROMIUM_TIMEOUT_S = 60


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _tail(text: str, n: int = 600) -> str:
    return " ".join(text.split())[-n:]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of the ``chromium`` binary, installing Debian's package (as root, via apt-get) when absent."""
    found = shutil.which("chromium")
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("chromium is not installed and installing it needs root (apt-get install chromium)")
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("chromium is not installed and apt-get is not available to install it")
    update = [apt, "update"]
    install = [apt, "install", "-y", "--no-install-recommends", "chromium"]
    lists = Path("/var/lib/apt/lists")
    updated = False
    try:
        if not any(lists.glob("*_Packages*")):
            res = _run(update, APT_TIMEOUT_S)
            updated = True
            if res.returncode != 0:
                pytest.skip(f"apt-get update failed (rc {res.returncode}): {_tail(res.stderr)}")
        res = _run(install, APT_TIMEOUT_S)
        if res.returncode != 0 and not updated:  # stale package lists: refresh once and retry
            _run(update, APT_TIMEOUT_S)
            res = _run(install, APT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.skip(f"installing chromium timed out after {exc.timeout:.0f} s: {' '.join(exc.cmd)}")
    except OSError as exc:
        pytest.skip(f"could not run apt-get to install chromium: {exc}")
    if res.returncode != 0:
        pytest.skip(f"apt-get install chromium failed (rc {res.returncode}): {_tail(res.stderr)}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but no 'chromium' binary is on PATH")
    return found


def run_chromium(binary: str, profile: Path, *mode: str, url: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *mode,
        url,
    ]
    try:
        res = _run(cmd, CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"headless chromium did not finish within {CHROMIUM_TIMEOUT_S} s: {' '.join(cmd)}")
    assert res.returncode == 0, f"chromium failed (rc {res.returncode}): {_tail(res.stderr)}"
    return res
