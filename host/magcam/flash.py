"""Write MicroPython and the app image to an ESP32-family board through esptool's library API,
or merge both into one image for production.

What goes where (``plan``): the MicroPython ``.bin`` from micropython.org (bootloader, partition
table and MicroPython app in one file) at the board's ``bootloader`` region (0x0 on the
ESP32-S3), and the app image from ``magcam build-image`` at the board's ``vfs`` region. Before a
byte is written, both are checked against the board file:

- the .bin starts with an ESP image for this chip (esptool's ``LoadFirmwareImage``; the chip id
  in its header), and so does the MicroPython app inside it;
- the partition table inside the .bin puts ``vfs`` where the board file does (a different
  MicroPython release may move it; see docs/boards.md) and the .bin ends before it;
- the app image fills the board's vfs region, mounts as LittleFS and names this board.

Only ESP32-family boards flash this way. RP2040 boards take MicroPython as a UF2 file copied to
the RPI-RP2 drive (hold BOOTSEL while plugging in) and the app through ``magcam deploy``: no
serial flasher is involved, and esptool's UF2 writer is for ESP chips (UF2 bootloader on
ESP32-S2/S3). CircuitPython boards: CircuitPython's UF2, then ``magcam deploy``.

Verification: esptool's ``write_flash`` checks each region's MD5 right after writing it;
``verify=True`` checks every region again once all are written (``verify_flash``: the chip
hashes what its flash now holds), which also catches one write spilling over another.

Usage::

    from magcam.flash import flash, merge

    result = flash("esp32s3-devkitc-1", "/dev/ttyACM0", Path("ESP32_GENERIC_S3-SPIRAM_OCT.bin"),
                   Path("app.img"), progress=lambda stage, done, total: ...)
    info = merge("esp32s3-devkitc-1", Path("ESP32_GENERIC_S3-SPIRAM_OCT.bin"), Path("app.img"),
                 Path("release.bin"))      # one image, written at 0x0
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from magcam_fw import board as fw_board

from .atomic import write_bytes_atomic
from .discovery import port_hint
from .firmware_image import ImageError, check_output, check_image, resolve_board

Progress = Callable[[str, int, int], None]  # (stage, done, total)
Log = Callable[[str], None]

ESP_IMAGE_MAGIC = 0xE9
_PT_ENTRY = struct.Struct("<2sBBII16sI")
_PT_MAGIC = b"\xaa\x50"
_PT_MD5_MAGIC = b"\xeb\xeb"
_PT_TYPE_APP = 0x00
_PT_TYPE_DATA = 0x01


class FlashError(Exception):
    """Bad input, the wrong chip, or esptool could not do it: a one-line message."""


@dataclass(frozen=True)
class Region:
    name: str  # "micropython" or "app"
    offset: int
    data: bytes
    source: str  # what it came from, for messages

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


@dataclass(frozen=True)
class Partition:
    label: str
    type: int
    subtype: int
    offset: int
    size: int


@dataclass(frozen=True)
class FlashResult:
    port: str
    chip: str
    mac: str
    regions: tuple[tuple[str, int, int], ...]  # (name, offset, size)
    verified: bool


@dataclass(frozen=True)
class MergeInfo:
    path: Path
    size: int
    write_offset: int  # where the merged image goes in flash
    regions: tuple[tuple[str, int, int], ...]


# ---- checks ---------------------------------------------------------------------------------


def esp_chip(bd: dict) -> str:
    """The esptool chip name of an ESP32-family MicroPython board; FlashError otherwise."""
    from esptool.targets import CHIP_DEFS

    name, chip, rt = bd["name"], str(bd.get("chip", "")), bd.get("runtime")
    if rt == "circuitpython":
        raise FlashError(f"{name} runs CircuitPython: install CircuitPython from its UF2 file (double-press "
                         f"reset or hold BOOTSEL, copy the .uf2 onto the boot drive), then copy the app with "
                         f"`magcam deploy --board {name}`")
    if rt != "micropython":
        raise FlashError(f"{name} (runtime {rt}) has no flash to write: see docs/quickstart.md")
    if chip.startswith("rp2"):
        raise FlashError(
            f"{name} is an {chip.upper()} board: it is not flashed over serial. Install MicroPython by holding "
            "BOOTSEL while plugging it in and copying the MicroPython .uf2 file onto the RPI-RP2 drive; "
            f"then copy the app with `magcam deploy --port PORT --board {name}`")
    if chip not in CHIP_DEFS:
        raise FlashError(f"{name}: chip {chip!r} is not one esptool knows ({', '.join(sorted(CHIP_DEFS))})")
    return chip


def read_partition_table(data: bytes) -> list[Partition]:
    """The entries of an ESP partition table (binary form, as ESP-IDF's gen_esp32part writes)."""
    out = []
    for i in range(0, len(data) - _PT_ENTRY.size + 1, _PT_ENTRY.size):
        magic, ptype, subtype, offset, size, label, _flags = _PT_ENTRY.unpack_from(data, i)
        if magic == _PT_MD5_MAGIC or magic != _PT_MAGIC:
            break
        out.append(Partition(label.rstrip(b"\x00").decode("ascii", "replace"), ptype, subtype, offset, size))
    return out


def _load_image(chip: str, data: bytes, what: str):
    from esptool.bin_image import LoadFirmwareImage
    from esptool.targets import CHIP_DEFS
    from esptool.util import FatalError

    if not data or data[0] != ESP_IMAGE_MAGIC:
        raise FlashError(f"{what} is not an ESP firmware image (first byte {data[:1].hex() or 'missing'}, "
                         f"not e9)")
    try:
        img = LoadFirmwareImage(chip, data)
    except (FatalError, struct.error, ValueError) as e:
        raise FlashError(f"{what} is not a valid {chip} image: {e}") from None
    want = CHIP_DEFS[chip].IMAGE_CHIP_ID
    if getattr(img, "chip_id", want) != want:
        other = next((n for n, c in CHIP_DEFS.items() if getattr(c, "IMAGE_CHIP_ID", None) == img.chip_id), None)
        raise FlashError(f"{what} is built for {other or f'chip id {img.chip_id}'}, not {chip}")
    return img


def _source(x: Path | bytes, default: str) -> tuple[bytes, str]:
    if isinstance(x, (bytes, bytearray)):
        return bytes(x), default
    p = Path(x)
    try:
        return p.read_bytes(), str(p)
    except OSError as e:
        raise FlashError(f"cannot read {p}: {e.strerror or e}") from None


def check_micropython(bd: dict, data: bytes, what: str = "the MicroPython .bin") -> int:
    """Check a MicroPython .bin against the board file; returns the flash offset it goes to."""
    chip = esp_chip(bd)
    base = (fw_board.flash_region(bd, "bootloader") or (0, 0))[0]
    vfs = fw_board.flash_region(bd, "vfs")
    _load_image(chip, data, what)
    if vfs and base + len(data) > vfs[0]:
        raise FlashError(f"{what} is {len(data)} bytes: written at 0x{base:x} it runs into the vfs region "
                         f"at 0x{vfs[0]:x}. Is it the right firmware for {bd['name']}?")
    pt = fw_board.flash_region(bd, "partition_table")
    if pt is None:
        return base  # the board file names no partition table: nothing more to check
    if pt[0] - base + _PT_ENTRY.size > len(data):
        raise FlashError(f"{what} is {len(data)} bytes: it ends before the partition table at 0x{pt[0]:x}, so it "
                         f"is not a full MicroPython .bin for {bd['name']} (bootloader, partition table and app)")
    raw = data[pt[0] - base : pt[0] - base + pt[1]]
    table = read_partition_table(raw)
    if not table:
        raise FlashError(f"{what} has no partition table at 0x{pt[0]:x}: not a full MicroPython .bin for "
                         f"{bd['name']} (the one written at 0x{base:x})")
    md5_row = raw[len(table) * _PT_ENTRY.size : (len(table) + 1) * _PT_ENTRY.size]
    if md5_row[:2] == _PT_MD5_MAGIC and md5_row[16:] != hashlib.md5(raw[: len(table) * _PT_ENTRY.size]).digest():
        raise FlashError(f"{what}'s partition table at 0x{pt[0]:x} fails its MD5 check: the file is damaged")
    fs = next((p for p in table if p.type == _PT_TYPE_DATA and p.label == "vfs"), None)
    if vfs and fs is None:
        raise FlashError(f"{what}'s partition table has no \"vfs\" partition: {[p.label for p in table]}")
    if vfs and (fs.offset, fs.size) != vfs:
        raise FlashError(
            f"{what} puts vfs at 0x{fs.offset:x} + 0x{fs.size:x}, but {bd['_path']} says 0x{vfs[0]:x} + "
            f"0x{vfs[1]:x}: use the MicroPython release the board file describes, or change its \"flash\" "
            "section to this firmware's layout (docs/boards.md)")
    apps = [p for p in table if p.type == _PT_TYPE_APP]
    if not apps:
        raise FlashError(f"{what}'s partition table has no app partition: {[p.label for p in table]}")
    app = apps[0]  # the one the bootloader starts (factory, or ota_0)
    rel = app.offset - base
    if not 0 <= rel < len(data):
        raise FlashError(f"{what} is {len(data)} bytes and holds no MicroPython app: its {app.label} partition "
                         f"starts at 0x{app.offset:x}. Use the full .bin from micropython.org")
    _load_image(chip, data[rel : rel + app.size], f"{what} (its {app.label} app at 0x{app.offset:x})")
    return base


def plan(board: str | Path | dict, micropython_bin: Path | bytes | None,
         app_image: Path | bytes | None) -> tuple[dict, list[Region]]:
    """The checked (board, regions) a flash or merge writes; FlashError on any mismatch."""
    try:
        bd = resolve_board(board)
    except ImageError as e:
        raise FlashError(str(e)) from None
    esp_chip(bd)
    if micropython_bin is None and app_image is None:
        raise FlashError("nothing to write: give the MicroPython .bin, the app image, or both")
    regions = []
    if micropython_bin is not None:
        data, src = _source(micropython_bin, "the MicroPython .bin")
        regions.append(Region("micropython", check_micropython(bd, data, src), data, src))
    if app_image is not None:
        data, src = _source(app_image, "the app image")
        try:
            check_image(data, bd)
        except ImageError as e:
            raise FlashError(f"{src}: {e}") from None
        regions.append(Region("app", fw_board.flash_region(bd, "vfs")[0], data, src))
    size = int(bd["flash"]["size"], 16)
    for a, b in itertools.pairwise(regions):
        if a.end > b.offset:
            raise FlashError(f"{a.source} (0x{a.offset:x}-0x{a.end:x}) overlaps {b.source} at 0x{b.offset:x}")
    if regions[-1].end > size:
        raise FlashError(f"{regions[-1].source} ends at 0x{regions[-1].end:x}, past the flash size 0x{size:x}")
    return bd, regions


# ---- esptool --------------------------------------------------------------------------------


@contextlib.contextmanager
def _esptool_output(progress: Progress | None, log: Log | None, stage: list[str]) -> Iterator[list[str]]:
    """Route esptool's output through its documented custom-logger hook for the duration:
    progress bars to ``progress(stage[0], done, total)``, lines to ``log``. Yields the lines
    (kept for error messages)."""
    from esp_pylib.logger import EspLog
    from esptool.logger import TemplateLogger
    from esptool.logger import log as esptool_log

    lines: list[str] = []
    partial: list[str] = []

    def emit(text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                lines.append(line.strip())
                if log:
                    log(line.strip())

    class _Logger(TemplateLogger):
        def print(self, *args, **kwargs):
            text = kwargs.get("sep", " ").join(str(a) for a in args) + kwargs.get("end", "\n")
            partial.append(text)
            if "\n" in text:
                emit("".join(partial))
                partial.clear()

        def note(self, message):
            emit(f"note: {message}")

        def warning(self, message):
            emit(f"warning: {message}")

        def error(self, message):
            emit(f"error: {message}")

        def stage(self, finish=False):
            pass

        def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
            if progress and total_iters:
                progress(stage[0], int(cur_iter), int(total_iters))

        def set_verbosity(self, verbosity):
            pass

    saved = EspLog.instance
    esptool_log.set_logger(_Logger())
    try:
        yield lines
    finally:
        if partial:
            emit("".join(partial))
        EspLog.instance = saved


def one_line(text: str) -> str:
    """esptool's multi-line error as one line, without its own generic "Hint:" lines."""
    return " ".join(line.strip() for line in str(text).splitlines()
                    if line.strip() and not line.strip().startswith("Hint:"))


def _port_error(port: str, e: Exception) -> FlashError:
    hint = port_hint(str(e))
    return FlashError(f"{port}: {one_line(e)}" + (f" -- {hint}" if hint else ""))


def flash(board: str | Path | dict, port: str, micropython_bin: Path | bytes | None,
          app_image: Path | bytes | None, *, verify: bool = True, baud: int = 460800,
          progress: Progress | None = None, log: Log | None = None) -> FlashResult:
    """Write the MicroPython .bin and/or the app image to the board on ``port`` at the board
    file's offsets, verify, and hard-reset it. ``progress(stage, done, total)``: stages
    "connect", "write micropython", "write app" (bytes sent), "verify" (regions)."""
    from esptool.cmds import (
        attach_flash,
        detect_chip,
        detect_flash_size,
        reset_chip,
        run_stub,
        verify_flash,
        write_flash,
    )
    from esptool.util import FatalError, flash_size_bytes
    from serial import SerialException

    from .sim import registry

    bd, regions = plan(board, micropython_bin, app_image)
    chip = esp_chip(bd)
    if registry.entry_for(port) is not None:  # else esptool waits for a ROM bootloader, then advises BOOT
        raise FlashError(f"{port} is a simulated module (`magcam sim`): there is no chip to flash; it runs the "
                         "firmware from this checkout (restart it to pick up changes)")
    stage = ["connect"]
    esp = None
    with _esptool_output(progress, log, stage) as lines:
        try:
            if progress:
                progress("connect", 0, 1)
            esp = detect_chip(port)
            found = esp.CHIP_NAME.lower().replace("-", "")
            if found != chip:
                raise FlashError(f"{port} has an {esp.CHIP_NAME}, but {bd['name']} is an {chip} board: "
                                 "wrong port or wrong --board")
            esp = run_stub(esp)
            if baud > esp.ESP_ROM_BAUD:
                esp.change_baud(baud)
            attach_flash(esp)
            have = flash_size_bytes(detect_flash_size(esp))
            need = regions[-1].end
            if have and have < need:
                raise FlashError(f"the chip on {port} has {have // 1048576} MB of flash; {bd['name']} needs "
                                 f"{int(bd['flash']['size'], 16) // 1048576} MB")
            try:
                mac = ":".join(f"{b:02x}" for b in esp.read_mac("BASE_MAC"))
            except (FatalError, TypeError, KeyError):  # for the production log only
                mac = ""
            if progress:
                progress("connect", 1, 1)
            for r in regions:
                stage[0] = f"write {r.name}"
                write_flash(esp, [(r.offset, r.data)], compress=True)
            if verify:
                for i, r in enumerate(regions):
                    if progress:
                        progress("verify", i, len(regions))
                    verify_flash(esp, [(r.offset, r.data)])
                if progress:
                    progress("verify", len(regions), len(regions))
            reset_chip(esp, "hard-reset")
        except FlashError:
            raise
        except (SerialException, OSError) as e:
            raise _port_error(port, e) from None
        except FatalError as e:
            if esp is None:  # could not connect: say what usually helps
                raise _port_error(port, e) from None
            last = f" (esptool: {lines[-1]})" if lines and lines[-1] not in str(e) else ""
            raise FlashError(f"{port}: {one_line(e)}{last}") from None
        finally:
            if esp is not None:
                with contextlib.suppress(Exception):
                    esp._port.close()
    return FlashResult(port=port, chip=chip, mac=mac,
                       regions=tuple((r.name, r.offset, len(r.data)) for r in regions), verified=verify)


def merge(board: str | Path | dict, micropython_bin: Path | bytes, app_image: Path | bytes, out: Path, *,
          progress: Progress | None = None) -> MergeInfo:
    """One raw image of MicroPython and the app at the board's offsets (esptool's merge_bin),
    written atomically to ``out``; it goes to flash at 0x0 (``esptool write-flash 0x0 out``)."""
    from esptool.cmds import merge_bin
    from esptool.util import FatalError

    if micropython_bin is None or app_image is None:
        raise FlashError("a merged image needs both the MicroPython .bin and the app image")
    bd, regions = plan(board, micropython_bin, app_image)
    out = Path(out)
    check_output(out, FlashError, bd.get("_path"), *(p for p in (micropython_bin, app_image) if not isinstance(p, bytes)))
    if progress:
        progress("merge", 0, 1)
    with _esptool_output(None, None, ["merge"]) as lines:
        try:
            data = merge_bin([(r.offset, r.data) for r in regions], esp_chip(bd), output=None, format="raw")
        except FatalError as e:
            raise FlashError(f"esptool merge_bin: {one_line(e)}" + (f" ({lines[-1]})" if lines else "")) from None
    out = Path(out)
    try:
        write_bytes_atomic(out, data)
    except OSError as e:
        raise FlashError(f"cannot write {out}: {e.strerror or e}") from None
    if progress:
        progress("merge", 1, 1)
    return MergeInfo(path=out, size=len(data), write_offset=0,
                     regions=tuple((r.name, r.offset, len(r.data)) for r in regions))
