"""Shared test helpers: repo paths, the default descriptor, shared photographs, external tools.

Missing shared data or a missing reader is a failure, not a skip: CI has both, and a check
that silently stops running is worse than none.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DESCRIPTOR_PATH = REPO / "firmware" / "magcam_fw" / "descriptor.json"
_INSTALL_HINT = {"dcraw": "apt-get install dcraw", "exiftool": "apt-get install libimage-exiftool-perl"}


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.fail(f"test data {path} missing: the tests need ../shared/data beside the repo")
    return path


def tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"`{name}` not installed ({_INSTALL_HINT.get(name, 'see README')})")
    return found


def pytest_addoption(parser):
    # Hardware-in-the-loop tests (tests/hardware) run only against a board given here.
    parser.addoption("--port", default=None, help="serial port of a prototype board (hardware tests)")
    parser.addoption("--board", default=None, help="its board file, e.g. boards/rpi-pico.json")
    parser.addoption("--sync", action="store_true", default=False, help="copy firmware/magcam_fw with mpremote first")


@pytest.fixture(scope="module")
def descriptor() -> dict:
    return json.loads(DESCRIPTOR_PATH.read_text())


def mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a small tmpfs at ``path`` (made here); None, or why this machine refuses (not
    root, no CAP_SYS_ADMIN). The caller unmounts it."""
    path.mkdir()
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                             capture_output=True, text=True, timeout=30)
    except OSError as e:
        return str(e)
    return None if res.returncode == 0 else (res.stderr.strip() or f"mount exited {res.returncode}")
