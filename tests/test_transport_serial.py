"""The CircuitPython data-port transport, driven through a real pyserial port on a pty pair."""

from __future__ import annotations

import os
import time
import tty

import serial

from magcam_fw import protocol as P
from magcam_fw.link import Link
from magcam_fw.transport_serial import SerialTransport


def test_link_over_serial_transport_both_ways():
    master, slave = os.openpty()
    tty.setraw(slave)
    port = serial.Serial(os.ttyname(slave), exclusive=False)
    try:
        link = Link(SerialTransport(port), chunk_size=512)
        got = []
        assert link.poll(lambda t, s, p: got.append(P.unpack(t, p))) and got == []  # nothing waiting: no block
        # Host -> device: a command arrives through the pty and is decoded on the device side.
        os.write(master, bytes(P.Encoder(64).encode(P.CMD_SET_LENS, 9, (321,))))
        deadline = time.monotonic() + 2
        while not got and time.monotonic() < deadline:
            link.poll(lambda t, s, p: got.append(P.unpack(t, p)))
        assert got == [{"type": "set_lens", "position": 321}]
        # Device -> host: an event leaves through the same port and decodes on the other side.
        link.send(P.EV_ATTACH, (5, 2, 1))
        out, dec = [], P.Decoder()
        deadline = time.monotonic() + 2
        while not out and time.monotonic() < deadline:
            dec.feed(os.read(master, 4096), lambda t, s, p: out.append(P.unpack(t, p)))
        assert out == [{"type": "attach", "t": 5, "state": 2, "session": 1}]
    finally:
        port.close()
        os.close(master)
        os.close(slave)
