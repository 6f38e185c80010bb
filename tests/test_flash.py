"""Flash layout checks and the merged production image, checked with esptool's own image tools.

The "MicroPython .bin" here is built the way ESP-IDF builds MicroPython's: a bootloader and an
app made by esptool's elf2image from ELF files written below, a binary partition table in
MicroPython's 8 MiB layout, merged by esptool at 0x0 / 0x8000 / 0x10000. Writing to a chip is
tests/hardware/test_flash_board.py."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import magcam
import pytest
from esptool.bin_image import LoadFirmwareImage
from esptool.cmds import elf2image, image_info, merge_bin
from magcam.firmware_image import build_image, read_image
from magcam.flash import FlashError, flash, merge, plan, read_partition_table

REPO = Path(__file__).resolve().parents[1]
MAGCAM = [sys.executable, "-m", "magcam.cli"]
S3 = "esp32s3-devkitc-1"
VFS = (0x310000, 0x4F0000)


def make_elf(entry: int, sections: list[tuple[str, int, bytes]], machine: int = 0x5E) -> bytes:
    """A minimal little-endian ELF32 executable (Xtensa by default) with PROGBITS sections."""
    shstr = b"\x00" + b"".join(n.encode() + b"\x00" for n, _, _ in sections) + b".shstrtab\x00"
    body, offs = b"", []
    for _, _, d in sections:
        offs.append(0x34 + len(body))
        body += d + b"\x00" * (-len(d) % 4)
    shstr_off = 0x34 + len(body)
    body += shstr + b"\x00" * (-len(shstr) % 4)
    heads, name = [b"\x00" * 40], 1
    for (n, addr, d), off in zip(sections, offs):
        heads.append(struct.pack("<10L", name, 1, 0x6, addr, off, len(d), 0, 0, 4, 0))  # PROGBITS, AX
        name += len(n) + 1
    heads.append(struct.pack("<10L", name, 3, 0, 0, shstr_off, len(shstr), 0, 0, 1, 0))  # STRTAB
    ident = b"\x7fELF\x01\x01\x01" + b"\x00" * 9
    header = struct.pack("<16sHHLLLLLHHHHHH", ident, 2, machine, 1, entry, 0, 0x34 + len(body), 0, 0x34, 0x20, 0,
                         40, len(heads), len(heads) - 1)
    return header + body + b"".join(heads)


def esp_image(chip: str, seed: bytes, iram: int = 0x40378000, dram: int = 0x3FC88000) -> bytes:
    code = hashlib.sha256(seed).digest() * 64
    elf = make_elf(iram, [(".iram0.text", iram, code), (".dram0.data", dram, seed * 40)])
    return elf2image(elf, chip, output=None, flash_mode="dio", flash_size="8MB")


def partition_table(vfs: tuple[int, int] = VFS) -> bytes:
    """MicroPython's ports/esp32/partitions-8MiB.csv in ESP-IDF's binary form (with its MD5 row)."""
    rows = [(1, 2, 0x9000, 0x6000, b"nvs"), (1, 1, 0xF000, 0x1000, b"phy_init"),
            (0, 0, 0x10000, 0x300000, b"factory"), (1, 0x81, vfs[0], vfs[1], b"vfs")]
    table = b"".join(struct.pack("<2sBBII16sI", b"\xaa\x50", t, s, o, n, label, 0) for t, s, o, n, label in rows)
    table += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(table).digest()
    return table + b"\xff" * (0xC00 - len(table))


def micropython_bin(chip: str = "esp32s3", vfs: tuple[int, int] = VFS, app_size: int = 0) -> bytes:
    boot = esp_image(chip, b"bootloader")
    app = esp_image(chip, b"micropython") + b"\xff" * app_size
    return merge_bin([(0x0, boot), (0x8000, partition_table(vfs)), (0x10000, app)], chip, output=None)


def esptool_says(data: bytes, chip: str = "esp32s3") -> str:
    """esptool's image_info report of an image (what `esptool image-info` prints)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        image_info(data, chip=chip)
    return buf.getvalue()


@pytest.fixture(scope="module")
def firmware(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("fw") / "ESP32_GENERIC_S3-SPIRAM_OCT.bin"
    p.write_bytes(micropython_bin())
    return p


@pytest.fixture(scope="module")
def app_img(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("app") / "app.img"
    build_image(S3, p)
    return p


def test_fixture_firmware_is_what_esptool_calls_valid(firmware: Path) -> None:
    fw = firmware.read_bytes()
    for off in (0x0, 0x10000):
        report = esptool_says(fw[off:])
        assert "Chip ID: 9 (ESP32-S3)" in report and "Checksum:" in report and "(valid)" in report
        assert "invalid" not in report
    table = read_partition_table(fw[0x8000:0x9000])
    assert [(p.label, p.offset, p.size) for p in table] == [
        ("nvs", 0x9000, 0x6000), ("phy_init", 0xF000, 0x1000), ("factory", 0x10000, 0x300000), ("vfs", *VFS)]


def test_merged_image_has_both_parts_at_the_board_offsets(firmware: Path, app_img: Path, tmp_path: Path) -> None:
    out = tmp_path / "release.bin"
    info = merge(S3, firmware, app_img, out)
    merged = out.read_bytes()
    fw, app = firmware.read_bytes(), app_img.read_bytes()
    assert info.size == len(merged) == 0x800000  # the app image runs to the end of the 8 MB flash
    assert info.regions == (("micropython", 0x0, len(fw)), ("app", VFS[0], len(app)))

    # esptool reads the bootloader and the MicroPython app back out of the merged file as valid
    # ESP32-S3 images, with the same segments as the inputs.
    for off in (0x0, 0x10000):
        report = esptool_says(merged[off:])
        assert "Chip ID: 9 (ESP32-S3)" in report and "invalid" not in report
        assert "Checksum:" in report and "Validation hash:" in report
        got, want = LoadFirmwareImage("esp32s3", merged[off:]), LoadFirmwareImage("esp32s3", fw[off:])
        assert [(s.addr, s.data) for s in got.segments] == [(s.addr, s.data) for s in want.segments]
    assert read_partition_table(merged[0x8000:0x9000])[-1].offset == VFS[0]

    # Byte for byte at the offsets, 0xFF in between, and the vfs slice is the mountable app.
    assert merged[: len(fw)] == fw
    assert merged[len(fw) : VFS[0]] == b"\xff" * (VFS[0] - len(fw))
    assert merged[VFS[0] : VFS[0] + VFS[1]] == app
    files = read_image(merged[VFS[0] : VFS[0] + VFS[1]])
    assert json.loads(files["/board.json"])["name"] == S3 and "/main.py" in files


def test_wrong_inputs_are_refused_before_anything_is_written(firmware: Path, app_img: Path, tmp_path: Path) -> None:
    def bad(name: str, data: bytes) -> Path:
        p = tmp_path / name
        p.write_bytes(data)
        return p

    with pytest.raises(FlashError, match=r"RP2040 board.*BOOTSEL.*RPI-RP2.*magcam deploy --port PORT --board rpi-pico"):
        plan("rpi-pico", firmware, None)
    with pytest.raises(FlashError, match="CircuitPython.*magcam deploy --board feather-rp2040-circuitpython"):
        plan("feather-rp2040-circuitpython", firmware, None)
    with pytest.raises(FlashError, match="built for esp32, not esp32s3"):
        plan(S3, bad("esp32.bin", micropython_bin("esp32")), None)
    with pytest.raises(FlashError, match="puts vfs at 0x200000 \\+ 0x600000.*says 0x310000 \\+ 0x4f0000"):
        plan(S3, bad("old.bin", micropython_bin(vfs=(0x200000, 0x600000))), None)
    with pytest.raises(FlashError, match="not an ESP firmware image"):
        plan(S3, bad("fw.uf2", b"UF2\n" + bytes(1000)), None)
    with pytest.raises(FlashError, match="runs into the vfs region at 0x310000"):
        plan(S3, bad("huge.bin", micropython_bin(app_size=0x300000)), None)
    # A .bin that is not all of MicroPython (these used to be written at 0x0 without a word).
    full = micropython_bin()
    with pytest.raises(FlashError, match="32768 bytes: it ends before the partition table at 0x8000"):
        plan(S3, bad("boot-only.bin", full[:0x8000]), None)
    with pytest.raises(FlashError, match="holds no MicroPython app: its factory partition starts at 0x10000"):
        plan(S3, bad("cut.bin", full[:0x10000]), None)
    damaged = bytearray(full)
    damaged[0x8000 + 3] ^= 0x01  # a partition-table row, under its MD5
    with pytest.raises(FlashError, match="partition table at 0x8000 fails its MD5 check"):
        plan(S3, bad("badmd5.bin", bytes(damaged)), None)
    pico = tmp_path / "pico.img"
    build_image("rpi-pico", pico)
    with pytest.raises(FlashError, match="vfs region is 5177344.*magcam build-image --board esp32s3-devkitc-1"):
        plan(S3, firmware, pico)
    with pytest.raises(FlashError, match="nothing to write"):
        plan(S3, None, None)
    with pytest.raises(FlashError, match="cannot read"):
        plan(S3, tmp_path / "missing.bin", None)
    with pytest.raises(FlashError, match="needs both"):
        merge(S3, None, app_img, tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()
    _bd, regions = plan(S3, firmware, app_img)
    assert [(r.name, r.offset) for r in regions] == [("micropython", 0x0), ("app", VFS[0])]


def test_flash_to_a_missing_port_is_a_clear_error(firmware: Path, app_img: Path) -> None:
    with pytest.raises(FlashError, match="/dev/ttyMAGCAM-NOPE.*no such port"):
        flash(S3, "/dev/ttyMAGCAM-NOPE", firmware, app_img)


def test_flash_to_a_simulator_says_so_at_once(firmware: Path, tmp_path: Path, monkeypatch) -> None:
    """It used to try for 5 s, then advise holding the BOOT button."""
    from magcam.sim import Simulator

    monkeypatch.setenv("MAGCAM_SIM_REGISTRY", str(tmp_path / "registry"))
    with Simulator() as sim:
        with pytest.raises(FlashError, match="is a simulated module.*no chip to flash"):
            flash(S3, sim.port, firmware, None)
        with magcam.connect(sim.port) as cam:  # untouched: it still answers
            assert cam.hello["version"] >= 1


def test_cli_flash_merge_and_errors(firmware: Path, tmp_path: Path) -> None:
    out = tmp_path / "release.bin"
    r = subprocess.run([*MAGCAM, "flash", "--board", S3, "--micropython", str(firmware), "--merge", "-o", str(out),
                        "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert {e["stage"] for e in events if e["type"] == "progress"} >= {"compile", "pack", "merge"}
    res = events[-1]
    assert res["type"] == "result" and res["merged"] == str(out) and res["write_at"] == "0x0"
    merged = out.read_bytes()
    assert "invalid" not in esptool_says(merged[0x10000:])
    assert json.loads(read_image(merged[VFS[0]:])["/board.json"])["name"] == S3

    r = subprocess.run([*MAGCAM, "flash", "--board", "rpi-pico", "--port", "/dev/ttyACM0", "--micropython",
                        str(firmware)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "RPI-RP2" in r.stderr and "magcam deploy" in r.stderr
    r = subprocess.run([*MAGCAM, "flash", "--board", S3, "--micropython", str(firmware)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "give --port" in r.stderr and "Traceback" not in r.stderr


def test_outputs_never_replace_an_input_or_a_device(firmware: Path, app_img: Path, tmp_path: Path) -> None:
    """Each of these once exited 0 having written the image over an input (the MicroPython .bin,
    the app image, the board file, the descriptor) or replaced a device node with a file."""
    board = tmp_path / "myboard.json"
    board.write_text((REPO / "boards" / f"{S3}.json").read_text())
    desc = tmp_path / "mod42.json"
    desc.write_text((REPO / "firmware/magcam_fw/descriptor.json").read_text())
    mp, app = tmp_path / "mp.bin", tmp_path / "app.img"
    mp.write_bytes(firmware.read_bytes())
    app.write_bytes(app_img.read_bytes())
    before = {p: p.read_bytes() for p in (board, desc, mp, app)}

    def refused(*args: str, match: str) -> None:
        r = subprocess.run([*MAGCAM, *args], capture_output=True, text=True, timeout=300)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert match in r.stderr, r.stderr

    refused("build-image", "-b", str(board), "-o", str(board), match="is also an input")
    refused("build-image", "-b", S3, "-o", str(desc), "--descriptor", str(desc), match="is also an input")
    refused("build-image", "-b", S3, "-o", "/dev/null", match="not a regular file")
    merge_args = ["flash", "-b", S3, "--micropython", str(mp), "--merge"]
    refused(*merge_args, "--app", str(app), "-o", str(mp), match="is also an input")
    refused(*merge_args, "--app", str(app), "-o", str(app), match="is also an input")
    refused(*merge_args, "--descriptor", str(desc), "-o", str(desc), match="is also an input")
    refused("flash", "-b", str(board), "--micropython", str(mp), "--app", str(app), "--merge", "-o", str(board),
            match="is also an input")
    refused(*merge_args, "--app", str(app), "-o", "/dev/null", match="not a regular file")
    # --descriptor would have been dropped without a word, and the module's calibration with it
    refused(*merge_args, "--app", str(app), "--descriptor", str(desc), "-o", str(tmp_path / "x.bin"),
            match="with --app, build that image")
    refused("flash", "-b", S3, "-p", "/dev/null", "-o", str(tmp_path / "x.bin"), match="--out is for --merge")
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in before)  # nothing left
    with pytest.raises(FlashError, match="is also an input"):
        merge(S3, mp, app, app)
    assert app.read_bytes() == before[app]

    real = tmp_path / "release.bin"  # a link is followed: the file it points to is replaced
    link = tmp_path / "latest.bin"
    link.symlink_to(real.name)
    merge(S3, mp, app, link)
    assert link.is_symlink() and real.stat().st_size == 8 * 1024 * 1024


def test_esptool_progress_and_lines_reach_the_callbacks() -> None:
    """esptool reports through its logger (``log.progress`` in write_flash, ``log.print``): while
    flash runs, that goes to our callbacks; afterwards esptool's own logger is back."""
    from esp_pylib.logger import EspLog
    from esptool.logger import log
    from magcam.flash import _esptool_output

    before = EspLog.instance
    seen: list[tuple[str, int, int]] = []
    lines: list[str] = []
    stage = ["write app"]
    with _esptool_output(lambda *a: seen.append(a), lines.append, stage) as kept:
        with log.progress(total=4096, unit="B") as bar:
            bar.update(advance=1024, description="Writing at 0x00310400")
            bar.update(advance=3072, description="Writing at 0x00311000")
        log.print("Connecting", end="")
        log.print("...")
        log.print("Hash of data verified.")
        log.warn("Flash size not detected")
    assert seen == [("write app", 1024, 4096), ("write app", 4096, 4096)]
    assert lines == ["Connecting...", "Hash of data verified.", "warning: Flash size not detected"] == kept
    assert EspLog.instance is before
