"""Finding magcam boards: USB serial ports by vendor/product id, and running simulators.

Usage::

    from magcam.discovery import candidates, resolve

    for p in candidates():
        print(p.device, p.label)
    info = resolve("auto")            # the single board, or PortError naming the choices
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from serial.tools import list_ports

from .sim import registry

# (VID, PID or None for any) -> what it is. Boards running MicroPython/CircuitPython natively,
# and the USB-UART bridges of ESP32 dev boards.
KNOWN_USB_IDS: dict[tuple[int, int | None], str] = {
    (0x2E8A, 0x0005): "MicroPython on RP2040",
    (0xF055, 0x9800): "MicroPython (pyboard id)",
    (0x303A, 0x1001): "ESP32-S3 USB serial/JTAG",
    (0x303A, 0x4001): "ESP32-S3 MicroPython (TinyUSB)",
    (0x239A, None): "Adafruit CircuitPython board",
    (0x10C4, 0xEA60): "Silicon Labs CP210x bridge",
    (0x1A86, 0x7523): "WCH CH340 bridge",
    (0x1A86, 0x55D4): "WCH CH9102 bridge",
    (0x0403, 0x6001): "FTDI FT232R bridge",
    (0x0403, 0x6015): "FTDI FT231X bridge",
    (registry.SIM_VID, registry.SIM_PID): "magcam simulator",
}


class PortError(ValueError):
    """No board, several boards, or a port that is not there."""


@dataclass(frozen=True)
class PortInfo:
    device: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    description: str = ""

    @property
    def known_as(self) -> str | None:
        if self.vid is None:
            return None
        return KNOWN_USB_IDS.get((self.vid, self.pid)) or KNOWN_USB_IDS.get((self.vid, None))

    @property
    def label(self) -> str:
        ids = f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None else "no USB id"
        serial = f" serial {self.serial_number}" if self.serial_number else ""
        return f"{self.known_as or self.description} [{ids}]{serial}"


def candidates() -> list[PortInfo]:
    """Ports that look like a magcam board: known USB ids (ports with none are skipped) and
    running simulators."""
    found = []
    for p in list_ports.comports():
        info = PortInfo(p.device, p.vid, p.pid, p.serial_number, p.description or "")
        if info.known_as:
            found.append(info)
    for e in registry.entries():
        found.append(PortInfo(e["device"], e["vid"], e["pid"], e["serial_number"], str(e.get("description", ""))))
    return found


def resolve(port: str | os.PathLike) -> PortInfo:
    """``auto`` -> the single candidate; a path -> its identity if it is a known board."""
    if isinstance(port, os.PathLike):
        port = os.fspath(port)
    if not isinstance(port, str) or not port:
        raise PortError(f"give the serial port as a path (\"/dev/ttyACM0\") or \"auto\", not {port!r}")
    found = candidates()
    if port != "auto":
        return next((c for c in found if c.device == port), PortInfo(port))
    if not found:
        raise PortError("no magcam board found: plug one in (see `magcam ports`) or give its port (--port on the "
                        "command line)")
    if len(found) > 1:
        choices = "; ".join(f"{c.device} ({c.label})" for c in found)
        raise PortError(f"several boards found, give the port of one (--port on the command line): {choices}")
    return found[0]


def find_serial(serial_number: str) -> PortInfo | None:
    """Where the board with this USB serial number is now (after a replug it may have moved)."""
    return next((c for c in candidates() if c.serial_number == serial_number), None)


def port_hint(text: str) -> str | None:
    """What usually fixes a serial-port error with this text (permissions, missing, busy, a
    chip not in its bootloader), or None. The errno is looked at first: esptool's own text
    names several causes at once."""
    low = text.lower()
    if "inappropriate ioctl" in low or "errno 25" in low:  # a regular file, /dev/null, a pipe
        return "not a serial device: give the module's port (`magcam ports` lists them)"
    if "permission denied" in low or "errno 13" in low:
        return ("no permission: add yourself to the serial group (`sudo usermod -aG dialout $USER`, then log in "
                "again) or install docs/udev/99-magcam.rules")
    if "no such file" in low or "errno 2]" in low:
        return "no such port: check the cable and `magcam ports`"
    if "resource busy" in low or "errno 16" in low or "exclusive" in low:
        return ("the port is busy: close `magcam monitor`, serial terminals and IDEs using it; ModemManager may be "
                "probing it (install docs/udev/99-magcam.rules)")
    if "failed to connect" in low or "wrong boot mode" in low or "no serial data" in low:
        return ("no answer from the ROM bootloader: hold BOOT, press and release RESET, release BOOT, and run "
                "this again (or use the board's USB-UART port)")
    return None
