"""Hardware-in-the-loop tests for physical prototypes: ``pytest tests/hardware --port /dev/ttyACM0
--board boards/rpi-pico.json``. Without ``--port`` every test marked ``hardware`` is skipped with
the reason (the one skip the suite allows: these need a board on the desk).

The options themselves are declared in tests/conftest.py, which pytest reads first for any
path under tests/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

def _opt(config, name):
    try:
        return config.getoption(name)
    except ValueError:
        return None


def pytest_collection_modifyitems(config, items):
    if _opt(config, "--port"):
        return
    skip = pytest.mark.skip(reason="hardware test: needs a prototype board; run with "
                                   "--port /dev/ttyACM0 --board boards/<board>.json (see docs/boards.md)")
    for item in items:
        if item.get_closest_marker("hardware") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def port(request) -> str:
    return _opt(request.config, "--port")


@pytest.fixture(scope="session")
def board_def(request) -> dict:
    from magcam_fw.board import load

    path = _opt(request.config, "--board")
    if not path:
        pytest.fail("--port given without --board: say which board file describes the board on that port")
    p = Path(path)
    if not p.is_absolute():
        p = REPO / p
    return load(str(p))


@pytest.fixture(scope="session")
def synced(request, port, board_def) -> None:
    """With --sync: copy the firmware package to a MicroPython board with mpremote."""
    if not _opt(request.config, "--sync"):
        return
    import subprocess

    if board_def["runtime"] != "micropython":
        pytest.fail("--sync copies with mpremote (MicroPython); copy to a CircuitPython board's CIRCUITPY drive")
    subprocess.run(["mpremote", "connect", port, "fs", "cp", "-r", str(REPO / "firmware" / "magcam_fw"), ":"],
                   check=True, timeout=300)


@pytest.fixture()
def repl(port, board_def, synced):
    from .rawrepl import RawRepl

    with RawRepl(port) as r:
        yield r
