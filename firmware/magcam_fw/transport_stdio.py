"""Link transport over the runtime's stdio: the MicroPython unix port (the simulator) and the
USB-CDC REPL port of MicroPython boards.

While the app owns the port, Ctrl-C (0x03) must be plain data, so keyboard interrupt is
disabled and restored on close. CircuitPython boards use ``usb_cdc.data`` instead (own HAL).

Usage::

    t = StdioTransport()
    n = t.read_into(buf)      # non-blocking; -1 at end of stream
    t.write(b"...")
"""

import select
import sys


class StdioTransport:
    def __init__(self):
        self._in = sys.stdin.buffer
        self._out = sys.stdout.buffer
        self._poll = select.poll()
        self._poll.register(sys.stdin, select.POLLIN)
        self._b1 = bytearray(1)
        self._kbd = False
        try:
            import micropython

            micropython.kbd_intr(-1)
            self._kbd = True
        except (ImportError, AttributeError):
            pass

    def read_into(self, buf):
        # Host -> device traffic is a few small commands: byte reads after poll() never block.
        n = 0
        cap = len(buf)
        b1 = self._b1
        while n < cap and self._poll.poll(0):
            if not self._in.readinto(b1):
                return n if n else -1
            buf[n] = b1[0]
            n += 1
        return n

    def write(self, data):
        self._out.write(data)
        if hasattr(self._out, "flush"):
            self._out.flush()

    def close(self):
        if self._kbd:
            import micropython

            micropython.kbd_intr(3)
