"""Run a script on a MicroPython / CircuitPython board through its raw REPL, with pyserial.

The raw REPL is what ``mpremote exec`` uses: Ctrl-C stops the running program, Ctrl-A enters
raw mode (``raw REPL; CTRL-B to exit``), the script follows, Ctrl-D runs it; the board answers
``OK``, the script's stdout, ``\\x04``, its traceback (if any), ``\\x04``, then ``>``.

The board must be at its REPL: on MicroPython the magcam app owns the REPL's port, so prepare
the board with ``/magcam_noapp`` (see docs/boards.md) or without ``/main.py``.

Usage::

    with RawRepl("/dev/ttyACM0") as repl:
        out = repl.exec("print(1 + 1)")      # "2\\r\\n"; RemoteError with the traceback on failure
"""

from __future__ import annotations

import time

import serial


class RemoteError(RuntimeError):
    """The script raised on the board; the message is its traceback."""


class RawRepl:
    def __init__(self, port: str, baudrate: int = 115200, timeout: float = 10.0):
        self.ser = port if hasattr(port, "write") else serial.Serial(port, baudrate, timeout=0.05)
        self.timeout = timeout
        self._enter()

    def _read_until(self, marker: bytes, timeout: float) -> bytes:
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(marker):
            if time.monotonic() > deadline:
                raise TimeoutError("no %r from the board within %.1f s (got %r)" % (marker, timeout, buf[-200:]))
            buf += self.ser.read(1)
        return buf

    def _enter(self) -> None:
        self.ser.write(b"\r\x03\x03")  # stop whatever runs
        time.sleep(0.2)
        self.ser.reset_input_buffer()
        self.ser.write(b"\r\x01")  # raw REPL
        self._read_until(b"raw REPL; CTRL-B to exit", self.timeout)
        self._read_until(b">", self.timeout)

    def exec(self, code: str, timeout: float | None = None) -> str:
        """Run ``code``; returns its stdout; raises RemoteError with the board's traceback."""
        self.ser.write(code.encode() + b"\x04")
        if self.ser.read(2) != b"OK":
            got = self._read_until(b">", 2.0)
            raise RemoteError("the board did not accept the script: %r" % got)
        out = self._read_until(b"\x04", timeout or self.timeout)[:-1]
        err = self._read_until(b"\x04", 5.0)[:-1]
        self._read_until(b">", 5.0)
        if err:
            raise RemoteError(err.decode(errors="replace"))
        return out.decode(errors="replace")

    def close(self) -> None:
        try:
            self.ser.write(b"\x02")  # back to the friendly REPL
        finally:
            self.ser.close()

    def __enter__(self) -> RawRepl:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
