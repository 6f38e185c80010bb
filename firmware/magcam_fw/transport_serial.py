"""Link transport over a serial object with the pyserial / ``usb_cdc.Serial`` API.

On CircuitPython boards the protocol uses the separate data port ``usb_cdc.data`` (enable it in
boot.py with ``usb_cdc.enable(console=True, data=True)``), so the REPL console stays free. The
same class drives a pyserial port or a UART, which is how it is tested on CPython.

Usage::

    import usb_cdc
    t = SerialTransport(usb_cdc.data)
    n = t.read_into(buf)      # non-blocking
    t.write(b"...")
"""


class SerialTransport:
    def __init__(self, port):
        if port is None:
            raise ValueError("no data port: enable it in boot.py with usb_cdc.enable(console=True, data=True)")
        self._s = port
        self._s.timeout = 0  # reads return what is there, never wait

    def read_into(self, buf):
        waiting = self._s.in_waiting
        if not waiting:
            return 0
        n = min(waiting, len(buf))
        return self._s.readinto(memoryview(buf)[:n]) or 0

    def write(self, data):
        self._s.write(data)
