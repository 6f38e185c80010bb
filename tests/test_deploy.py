"""``magcam deploy``: the copy plan, the CircuitPython drive (a real directory), the MicroPython
path through mpremote's own transport against the real MicroPython unix port on a pty (what a
board's USB CDC REPL speaks), and the version advice. A real board: tests/hardware/."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import tty
from pathlib import Path

import magcam.deploy
import pytest
from magcam import FIRMWARE_VERSION, PROTOCOL_VERSION
from magcam.deploy import (
    DeployError,
    deploy,
    deploy_drive,
    deploy_micropython,
    open_repl,
    parents,
    plan_files,
    query_device,
    version_advice,
)
from magcam.sim.runner import micropython_executable
from magcam.firmware_image import AppFile, app_files

REPO = Path(__file__).resolve().parents[1]
MAGCAM = [sys.executable, "-m", "magcam.cli"]
FEATHER_BOOT_OUT = ("Adafruit CircuitPython 9.2.1 on 2024-11-20; Adafruit Feather RP2040 with rp2040\r\n"
                    "Board ID:adafruit_feather_rp2040\r\n")


def _micropython() -> str:
    return micropython_executable()  # the unix port, as the simulator finds it


class UnixBoard:
    """The MicroPython unix port behind a pty: ``.port`` is the device path a host opens."""

    def __init__(self, *args: str):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.proc = subprocess.Popen([_micropython(), *args], stdin=self.master, stdout=self.master,
                                     stderr=self.master, close_fds=True)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture()
def unix_board():
    b = UnixBoard()
    yield b
    b.close()


# ---- the plan --------------------------------------------------------------------------------


def test_plan_copies_changed_skips_identical_removes_shadowing() -> None:
    a, b, c = AppFile("/main.py", b"main"), AppFile("/lib/magcam_fw/app.mpy", b"app"), AppFile("/board.json", b"{}")
    have = {"/main.py": a.sha256, "/lib/magcam_fw/app.mpy": hashlib.sha256(b"old").hexdigest(), "/board.json": None}
    p = plan_files([a, b, c], have, ["app.mpy", "app.py", "hal_sim.mpy"], root_package=True)
    assert [f.path for f in p.copy] == ["/lib/magcam_fw/app.mpy", "/board.json"]
    assert p.skip == ("/main.py",)
    assert p.remove == ("/lib/magcam_fw/app.py", "/lib/magcam_fw/hal_sim.mpy", "/magcam_fw")
    assert p.copy_bytes == 5
    assert plan_files([a], {"/main.py": a.sha256}).copy == ()
    assert parents(["/lib/magcam_fw/a.mpy", "/main.py", "/lib/x"]) == ["/lib", "/lib/magcam_fw"]


# ---- CircuitPython: the drive ----------------------------------------------------------------


def _drive(tmp_path: Path) -> Path:
    d = tmp_path / "CIRCUITPY"
    d.mkdir()
    (d / "boot_out.txt").write_text(FEATHER_BOOT_OUT)
    (d / "descriptor.json").write_text('{"calibrated": "this module"}')
    return d


def test_circuitpython_drive_deploy_copies_then_skips(tmp_path: Path) -> None:
    drive = _drive(tmp_path)
    first = deploy(None, drive=drive)
    assert first.board == "feather-rp2040-circuitpython" and first.runtime == "circuitpython"
    assert "board feather-rp2040-circuitpython picked from boot_out.txt" in first.notes
    assert any("circup install asyncio" in n for n in first.notes)
    want = {f.path: f.data for f in app_files("feather-rp2040-circuitpython", with_descriptor=False)}
    assert sorted(first.copied) == sorted(want) and first.skipped == []
    for path, data in want.items():
        assert (drive / path.lstrip("/")).read_bytes() == data
    assert (drive / "lib/magcam_fw/protocol.py").read_bytes() == (REPO / "firmware/magcam_fw/protocol.py").read_bytes()
    assert not (drive / "lib/magcam_fw/hal_machine.py").exists()
    assert (drive / "descriptor.json").read_text() == '{"calibrated": "this module"}'  # the module's own, kept
    assert not list(drive.rglob("*.part"))  # each file landed whole

    second = deploy(None, drive=drive)
    assert second.copied == [] and sorted(second.skipped) == sorted(set(want) - {"/board.json"})
    assert "kept the drive's board.json (feather-rp2040-circuitpython)" in second.notes

    # One file changed on the drive, leftovers that would shadow the app: only those are touched.
    (drive / "main.py").write_text("print('edited')\n")
    (drive / "lib/magcam_fw/hal_sim.py").write_text("")
    (drive / "magcam_fw").mkdir()
    (drive / "magcam_fw/__init__.py").write_text("")
    (drive / "lib/asyncio").mkdir()
    third = deploy_drive(drive, board="feather-rp2040-circuitpython")
    assert third.copied == ["/main.py"] and (drive / "main.py").read_bytes() == want["/main.py"]
    assert third.removed == ["/lib/magcam_fw/hal_sim.py", "/magcam_fw"]
    assert not (drive / "magcam_fw").exists() and not (drive / "lib/magcam_fw/hal_sim.py").exists()
    assert not any("asyncio" in n for n in third.notes)


def test_circuitpython_code_that_would_run_before_main_py_is_moved_aside(tmp_path: Path) -> None:
    """A fresh CIRCUITPY drive has a code.py ("Hello World!"), which CircuitPython runs instead
    of main.py: deploy renames it (and code.txt, main.txt), keeping the user's code."""
    drive = _drive(tmp_path)
    (drive / "code.py").write_text('print("Hello World!")\n')
    (drive / "code.py.bak").write_text("an older backup\n")
    (drive / "main.txt").write_text("print('txt')\n")
    result = deploy(None, drive=drive)
    assert not (drive / "code.py").exists() and not (drive / "main.txt").exists()
    assert (drive / "code.py.bak2").read_text() == 'print("Hello World!")\n'
    assert (drive / "code.py.bak").read_text() == "an older backup\n"
    assert (drive / "main.txt.bak").read_text() == "print('txt')\n"
    assert "moved code.py aside to code.py.bak2: CircuitPython runs it instead of main.py" in result.notes
    # What CircuitPython would run now is the app.
    first = next(n for n in ("code.txt", "code.py", "main.txt", "main.py") if (drive / n).is_file())
    assert first == "main.py"


def test_circuitpython_users_own_main_and_boot_are_kept_not_overwritten(tmp_path: Path) -> None:
    drive = _drive(tmp_path)
    (drive / "main.py").write_text("import my_robot\n")
    (drive / "boot.py").write_text("import storage\nstorage.remount('/', False)\n")
    result = deploy(None, drive=drive)
    assert (drive / "main.py.bak").read_text() == "import my_robot\n"
    assert (drive / "boot.py.bak").read_text().startswith("import storage")
    assert b"magcam" in (drive / "main.py").read_bytes() and b"magcam" in (drive / "boot.py").read_bytes()
    assert "kept your main.py as main.py.bak (it is not a magcam one)" in result.notes
    # A later deploy replaces its own files without backing them up again.
    (drive / "main.py").write_bytes((drive / "main.py").read_bytes() + b"# an older magcam main.py\n")
    again = deploy(None, drive=drive)
    assert "/main.py" in again.copied and not (drive / "main.py.bak2").exists()
    assert not any("kept your" in n for n in again.notes)


def _with_free_space(monkeypatch, kib: int) -> None:
    """The drive reports ``kib`` KiB free in 512-byte clusters (a small FAT drive)."""
    real = os.statvfs

    def statvfs(path):
        s = real(path)
        return os.statvfs_result((512, 512, s.f_blocks, kib * 2, kib * 2, *tuple(s)[5:]))

    monkeypatch.setattr(magcam.deploy.os, "statvfs", statvfs)


def test_a_drive_without_room_is_refused_before_anything_is_copied(tmp_path: Path, monkeypatch) -> None:
    """A full CIRCUITPY drive once got boot.py, main.py and a few modules, then "No space left",
    and the board no longer booted."""
    drive = _drive(tmp_path)
    before = sorted(p.relative_to(drive) for p in drive.rglob("*"))
    _with_free_space(monkeypatch, 64)
    with pytest.raises(DeployError, match=r"has 64 KiB free and the app needs \d+ KiB: nothing was copied"):
        deploy(None, drive=drive)
    assert sorted(p.relative_to(drive) for p in drive.rglob("*")) == before
    need = sum(-(-len(f.data) // 512) * 512 for f in app_files("feather-rp2040-circuitpython", with_descriptor=False))
    _with_free_space(monkeypatch, need // 1024 + 64)  # the files, their folders and one temporary copy
    assert not (drive / "main.py").exists()
    assert deploy(None, drive=drive).copied


def test_a_copy_cut_short_leaves_the_entry_points_alone(tmp_path: Path, monkeypatch) -> None:
    drive = _drive(tmp_path)
    (drive / "main.py").write_text("print('the app before')\n")
    real = magcam.deploy.atomic_write
    written = []

    def fails_after_three(path, *a, **k):
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(Path(path).name)
        return real(path, *a, **k)

    monkeypatch.setattr(magcam.deploy, "atomic_write", fails_after_three)
    with pytest.raises(DeployError, match="No space left on device"):
        deploy(None, drive=drive)
    assert "main.py" not in written and "boot.py" not in written and len(written) == 3
    assert (drive / "main.py").read_text() == "print('the app before')\n" and not (drive / "boot.py").exists()


def test_drive_keeps_a_custom_board_file_unless_told(tmp_path: Path) -> None:
    drive = _drive(tmp_path)
    custom = json.loads((REPO / "boards/feather-rp2040-circuitpython.json").read_text())
    custom["watchdog_ms"] = 4000
    (drive / "board.json").write_text(json.dumps(custom))
    res = deploy(None, drive=drive)
    assert "/board.json" not in res.copied and json.loads((drive / "board.json").read_text())["watchdog_ms"] == 4000
    res = deploy(None, drive=drive, board="feather-rp2040-circuitpython")
    assert "/board.json" in res.copied
    assert (drive / "board.json").read_bytes() == (REPO / "boards/feather-rp2040-circuitpython.json").read_bytes()


def test_deploy_refusals(tmp_path: Path) -> None:
    drive = _drive(tmp_path)
    with pytest.raises(DeployError, match="runs MicroPython: deploy over its serial port"):
        deploy(None, drive=drive, board="rpi-pico")
    with pytest.raises(DeployError, match="rpi-blinka.json.*nothing to deploy"):
        deploy(None, board="rpi-blinka")
    with pytest.raises(DeployError, match="magcam sim"):
        deploy("/dev/ttyACM0", board="sim")
    with pytest.raises(DeployError, match="not a directory"):
        deploy_drive(tmp_path / "nope")
    (drive / "boot_out.txt").write_text("Adafruit CircuitPython 9.2.1 on 2024-11-20; Some Other Board with samd51\n")
    with pytest.raises(DeployError, match="no board file matches.*Some Other Board.*give --board") as caught:
        deploy(None, drive=drive)
    # The firmware's advice ("put one at /board.json") is for the device; the host names its boards.
    assert "/board.json" not in str(caught.value) and "feather-rp2040-circuitpython" in str(caught.value)
    # Another board's file is not installed (boot would refuse it: safe mode), nor kept.
    before = sorted(p.name for p in drive.iterdir())
    with pytest.raises(DeployError, match=r"--board is for 'feather-rp2040-circuitpython' .*not this machine "
                                          r"\('Some Other Board with samd51'\): give this device's board"):
        deploy(None, drive=drive, board="feather-rp2040-circuitpython")
    (drive / "board.json").write_bytes((REPO / "boards/feather-rp2040-circuitpython.json").read_bytes())
    with pytest.raises(DeployError, match=r"the device's board.json is for .*give --board to replace it"):
        deploy(None, drive=drive)
    assert sorted(p.name for p in drive.iterdir()) == sorted([*before, "board.json"])
    # A port with a CircuitPython board would be ignored, the copy going to a drive: refused.
    for kw in (dict(drive=drive), dict(board="feather-rp2040-circuitpython")):
        with pytest.raises(DeployError, match="--port /dev/ttyACM0 with .*leave out --port"):
            deploy("/dev/ttyACM0", **kw)


# ---- MicroPython: mpremote against the unix port ---------------------------------------------


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_micropython_deploy_over_the_raw_repl(unix_board: UnixBoard, tmp_path: Path) -> None:
    dev = tmp_path / "dev"  # the "device" filesystem: the unix port's VFS is the host's
    dev.mkdir()
    root = str(dev)
    t = open_repl(unix_board.port, wait=5)
    logs: list[str] = []
    progress: list[tuple[str, int, int]] = []

    with pytest.raises(DeployError, match="no board file matches this device.*give --board"):
        deploy_micropython(t, root=root, reset=False)
    # Another machine's board file is refused before anything is copied (its pin map would drive
    # this device's pins; boot would refuse it too): the unix port is not a Pico.
    with pytest.raises(DeployError, match=r"--board is for 'rpi-pico' \(match 'Raspberry Pi Pico with RP2040'\), "
                                          r"not this machine \('linux.*give this device's board"):
        deploy_micropython(t, board="rpi-pico", root=root, reset=False)
    assert list(dev.iterdir()) == []
    # This "device" is the unix port: the Pico's pin map, matched to its machine string.
    machine = query_device(t, [], root)["machine"]
    pico = json.loads((REPO / "boards/rpi-pico.json").read_text())
    pico.update(name="unix-pico", match=machine.split()[0])
    board_file = tmp_path / "unix-pico.json"
    board_file.write_text(json.dumps(pico))

    first = deploy_micropython(t, board=board_file, root=root, reset=False, log=logs.append,
                               progress=lambda *a: progress.append(a))
    want = {f.path: f for f in app_files(board_file, with_descriptor=False)}
    assert sorted(first.copied) == sorted(want) and first.removed == []
    for path, f in want.items():
        assert (dev / path.lstrip("/")).read_bytes() == f.data
    assert not list(dev.rglob("*.part"))
    assert logs and "to copy" in logs[0]
    copies = [p for p in progress if p[0] == "copy"]
    assert copies[-1][1] == copies[-1][2] == sum(len(f.data) for f in want.values())

    # The device computes the same SHA-256 as the host.
    info = query_device(t, ["/main.py", "/nothing"], root)
    assert info["hash"] == {"/main.py": _sha(dev / "main.py"), "/nothing": None}
    assert info["mpy"] & 0xFF == 6 and info["impl"] == "micropython"

    second = deploy_micropython(t, board=board_file, root=root, reset=False)
    assert second.copied == [] and sorted(second.skipped) == sorted(want)

    # Leftovers that would shadow the compiled modules, an edited file, the no-app marker.
    (dev / "lib/magcam_fw/protocol.py").write_text("VERSION = 99\n")
    (dev / "lib/magcam_fw/hal_sim.mpy").write_bytes(b"M\x06")
    (dev / "magcam_fw").mkdir()
    (dev / "magcam_fw/__init__.py").write_text("")
    (dev / "main.py").write_text("edited\n")
    (dev / "magcam_noapp").write_text("")
    third = deploy_micropython(t, root=root, reset=False)  # no --board: the device's /board.json is kept
    assert "kept the device's /board.json (unix-pico)" in third.notes
    assert third.copied == ["/main.py"]
    assert third.removed == ["/lib/magcam_fw/hal_sim.mpy", "/lib/magcam_fw/protocol.py", "/magcam_fw"]
    assert any("magcam_noapp exists" in n for n in third.notes)
    assert not (dev / "magcam_fw").exists() and not (dev / "lib/magcam_fw/protocol.py").exists()

    # The deployed tree runs in MicroPython: compiled modules load, boot finds the board.
    check = tmp_path / "check.py"
    check.write_text(
        "import sys\nsys.path[:0] = [sys.argv[1], sys.argv[1] + '/lib']\n"
        "import main\nfrom magcam_fw import protocol, app\n"
        f"bd = main.find_board('micropython', {machine!r}, sys.argv[1])\n"
        "print(protocol.__file__, protocol.VERSION, bd['name'])\n")
    r = subprocess.run([_micropython(), str(check), root], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == [f"{root}/lib/magcam_fw/protocol.mpy", str(PROTOCOL_VERSION), "unix-pico"]

    # The device's own /board.json for another machine is not kept: the advice is --board.
    (dev / "board.json").write_bytes((REPO / "boards/rpi-pico.json").read_bytes())
    with pytest.raises(DeployError, match=r"the device's board.json is for 'rpi-pico'.*give --board to replace it"):
        deploy_micropython(t, root=root, reset=False)

    # The soft reset at the end reaches the REPL (the unix port exits on Ctrl-D; a board reboots).
    last = deploy_micropython(t, board=board_file, root=root, reset=True)
    assert last.reset and last.copied == ["/board.json"]  # the right one put back
    assert unix_board.proc.wait(10) == 0
    t.close()


# The board as the host sees it while the app runs: bytes are data (Ctrl-C too) for 3 s, then,
# as after a press of RESET, the boot wait, where Ctrl-C stops boot and leaves the REPL.
APP_THEN_BOOT_WAIT = r"""
import sys, select, time
_p = select.poll()
_p.register(sys.stdin, select.POLLIN)
def phase(ms, stop):
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < ms:
        if _p.poll(20):
            c = sys.stdin.buffer.read(1)
            if stop and c == b"\x03":
                raise KeyboardInterrupt
phase(3000, False)
print("magcam: starting in 1000 ms: Ctrl-C to stay in the REPL")
phase(1000, True)
phase(60000, False)
"""


def test_open_repl_waits_for_the_boot_window() -> None:
    board = UnixBoard("-i", "-c", APP_THEN_BOOT_WAIT)
    try:
        said: list[str] = []
        t = open_repl(board.port, wait=15, log=said.append)
        assert said and "press the board's RESET button" in said[0]
        assert t.eval("6 * 7") == 42
        t.close()
    finally:
        board.close()

    board = UnixBoard("-c", "import time\ntime.sleep(60)")  # an app that never lets go
    try:
        with pytest.raises(DeployError, match="no MicroPython REPL: the app kept the port"):
            open_repl(board.port, wait=2)
    finally:
        board.close()


def test_cli_deploy_errors_are_one_line(tmp_path: Path) -> None:
    r = subprocess.run([*MAGCAM, "deploy", "--port", "/dev/ttyMAGCAM-NOPE", "--board", "rpi-pico"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "/dev/ttyMAGCAM-NOPE" in r.stderr and "no such port" in r.stderr
    # with --json, a usage error is a JSON error line too (it was only click's text on stderr)
    r = subprocess.run([*MAGCAM, "deploy", "--drive", str(tmp_path / "nope"), "--json"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = json.loads(r.stdout.splitlines()[-1])
    assert err["type"] == "error" and "--drive" in err["message"] and "does not exist" in err["message"]
    drive = _drive(tmp_path)
    r = subprocess.run([*MAGCAM, "deploy", "--drive", str(drive), "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.splitlines()[-1])
    assert res["type"] == "result" and res["board"] == "feather-rp2040-circuitpython" and "/main.py" in res["copied"]


# ---- versions --------------------------------------------------------------------------------


def test_deploy_to_a_simulator_says_so_at_once(tmp_path: Path, monkeypatch) -> None:
    """It used to wait --wait seconds for a RESET, then advise holding the BOOT button."""
    from magcam.sim import Simulator

    monkeypatch.setenv("MAGCAM_SIM_REGISTRY", str(tmp_path / "registry"))
    with Simulator() as sim:
        with pytest.raises(DeployError, match="is a simulated module.*nothing to deploy"):
            deploy(sim.port, wait=30)


def test_version_advice_names_the_exact_command() -> None:
    assert version_advice(FIRMWARE_VERSION, PROTOCOL_VERSION, "rpi-pico", port="/dev/ttyACM0") is None
    old = version_advice("0.0.1", PROTOCOL_VERSION, "rpi-pico", port="/dev/ttyACM0")
    assert old.endswith("Update the device: magcam deploy --port /dev/ttyACM0 --board rpi-pico")
    assert "firmware 0.0.1" in old and f"this host has {FIRMWARE_VERSION}" in old and "flash" not in old
    esp = version_advice("0.0.1", PROTOCOL_VERSION, "esp32s3-devkitc-1", port="/dev/ttyACM0")
    assert "magcam deploy --port /dev/ttyACM0 --board esp32s3-devkitc-1" in esp
    assert "magcam flash --board esp32s3-devkitc-1 --port /dev/ttyACM0 --micropython FIRMWARE.bin" in esp
    proto = version_advice(FIRMWARE_VERSION, PROTOCOL_VERSION - 1, None)
    assert "cannot talk" in proto and proto.endswith("magcam deploy --port PORT")
    newer = version_advice("99.0.0", PROTOCOL_VERSION, "rpi-pico", port="/dev/ttyACM0")
    assert "pip install -U magcam" in newer and "magcam deploy --port /dev/ttyACM0 --board rpi-pico" in newer
    assert "pip install -U magcam" in version_advice(FIRMWARE_VERSION, PROTOCOL_VERSION + 1, None)
    assert version_advice("0.0.1", 1, "feather-rp2040-circuitpython").endswith(
        "magcam deploy --board feather-rp2040-circuitpython")
    assert "git pull" in version_advice("0.0.1", 1, "rpi-blinka")
    assert "magcam sim" in version_advice("0.0.1", 1, "sim")
    assert "--port '/dev/serial/by-id/usb-My Board'" in version_advice("0.0.1", 1, None,
                                                                       port="/dev/serial/by-id/usb-My Board")


def test_udev_rule_covers_every_known_usb_id() -> None:
    import re

    from magcam.discovery import KNOWN_USB_IDS
    from magcam.sim import registry

    text = (REPO / "docs/udev/99-magcam.rules").read_text()
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    covered = set()
    for line in rules:
        vid = re.search(r'ATTRS\{idVendor\}=="([0-9a-f]{4})"', line)
        if vid:
            assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in line and 'TAG+="uaccess"' in line, line
            pid = re.search(r'ATTRS\{idProduct\}=="([0-9a-f]{4})"', line)
            covered.add((int(vid[1], 16), int(pid[1], 16) if pid else None))
    known = {k for k in KNOWN_USB_IDS if k != (registry.SIM_VID, registry.SIM_PID)}
    assert known <= covered, f"not in docs/udev/99-magcam.rules: {known - covered}"


def test_a_port_held_by_another_program_is_said_to_be_busy() -> None:
    """mpremote hides why it could not open the port; the reason asked of pyserial must be the
    one mpremote met (an exclusive lock held by `magcam monitor`, a terminal), not "failed to open"."""
    import serial

    master, slave = os.openpty()  # a board's port, as far as deploy can tell
    port = os.ttyname(slave)
    try:
        with serial.Serial(port, exclusive=True):
            with pytest.raises(DeployError, match="the port is busy: close `magcam monitor`"):
                deploy(port, board="rpi-pico")
    finally:
        os.close(master)
        os.close(slave)
