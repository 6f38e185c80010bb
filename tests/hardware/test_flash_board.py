"""Deploy and flash on a real board: ``pytest tests/hardware --port /dev/ttyACM0 --board
boards/<board>.json``. Skipped without ``--port`` (tests/hardware/conftest.py).

- deploy (MicroPython boards, at their REPL like the other hardware tests): the app is copied,
  a second deploy copies nothing, and the board imports the compiled modules from /lib. The
  board stays at its REPL (no soft reset), so the other hardware tests can follow.
- flash (ESP32-family boards only, and only with ``MAGCAM_MICROPYTHON_BIN=path/to/firmware.bin``,
  since it rewrites the whole flash: MicroPython, and the filesystem with the module's own
  descriptor and fault log): MicroPython and a freshly built app image are written and verified,
  the board boots into the app, and its HELLO reports this host's firmware and protocol. It
  leaves the app running (the REPL is back after RESET with BOOT held), so this file runs last.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from magcam import FIRMWARE_VERSION, PROTOCOL_VERSION
from magcam.deploy import deploy_micropython, open_repl, query_device, version_advice
from magcam.firmware_image import build_image
from magcam.flash import flash

pytestmark = pytest.mark.hardware


def test_deploy_to_the_board(port: str, board_def: dict) -> None:
    if board_def["runtime"] != "micropython":
        pytest.skip(f"{board_def['name']} runs {board_def['runtime']}: deploy copies to its drive "
                    "(covered without hardware by tests/test_deploy.py)")
    t = open_repl(port, wait=20)
    try:
        first = deploy_micropython(t, board=board_def["_path"], reset=False)
        again = deploy_micropython(t, board=board_def["_path"], reset=False)
        assert again.copied == [] and again.removed == [] and len(again.skipped) == len(first.copied + first.skipped)
        have = query_device(t, ["/main.py"])
        assert have["hash"]["/main.py"] is not None
        out = t.exec("import sys\nfor m in [k for k in sys.modules if k.startswith('magcam_fw')]:\n"
                     " del sys.modules[m]\nimport magcam_fw.protocol as p\nprint(p.__file__, p.VERSION)")
        assert out.decode().split() == ["/lib/magcam_fw/protocol.mpy", str(PROTOCOL_VERSION)]
    finally:
        t.close()


def test_flash_micropython_and_app(port: str, board_def: dict, tmp_path: Path) -> None:
    chip = str(board_def.get("chip", ""))
    if board_def["runtime"] != "micropython" or not chip.startswith("esp32"):
        pytest.skip(f"{board_def['name']} is not flashed over serial (RP2040: MicroPython's UF2 on the "
                    "RPI-RP2 drive, then `magcam deploy`)")
    firmware = os.environ.get("MAGCAM_MICROPYTHON_BIN")
    if not firmware:
        pytest.skip("flashing rewrites the whole flash: set MAGCAM_MICROPYTHON_BIN=path/to/the MicroPython .bin "
                    "for this board to run it")
    img = tmp_path / "app.img"
    build_image(board_def["_path"], img)
    stages: set[str] = set()
    result = flash(board_def["_path"], port, Path(firmware), img, verify=True,
                   progress=lambda stage, done, total: stages.add(stage))
    assert result.verified and result.chip == chip
    assert {"connect", "write micropython", "write app", "verify"} <= stages

    from magcam import connect

    deadline = time.monotonic() + 20  # native USB re-enumerates after the reset
    while not os.path.exists(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    with connect(port, connect_timeout=20) as cam:
        assert cam.firmware == FIRMWARE_VERSION and cam.hello["version"] == PROTOCOL_VERSION
        assert version_advice(cam.firmware, cam.hello["version"], board_def["name"], port=port) is None
