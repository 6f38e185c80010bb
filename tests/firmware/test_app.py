"""The app's command handling, on the unix port and CPython alike: a failing command is answered
and logged, and the link keeps answering the next ones."""

import os
import struct

from _util import REPO, OutputTransport, tohex
from magcam_fw import protocol as P
from magcam_fw.app import App
from magcam_fw.safemode import SafeHal
from magcam_fw.hal_sim import SimHal


def _messages(wire):
    got = []
    P.Decoder().feed(bytes(wire), lambda mtype, seq, payload: got.append(P.unpack(mtype, bytes(payload))))
    return got


def _app(make_hal=lambda d: SafeHal("testing", None, d)):
    """(app, its transport, its storage folder) on a HAL made for that folder."""
    d = "/tmp/magcam_test_" + tohex(os.urandom(6))
    os.mkdir(d)
    with open(REPO + "/firmware/magcam_fw/descriptor.json") as f:
        text = f.read()
    t = OutputTransport()
    return App(make_hal(d), t, text), t, d


def _cleanup(d):
    for n in os.listdir(d):
        os.remove(d + "/" + n)
    os.rmdir(d)


def test_a_command_that_fails_is_answered_internal_and_the_link_goes_on():
    app, t, d = _app()
    try:
        app.on_message(P.CMD_CONNECT, 1, bytes([P.VERSION]) + b"test")

        def broken_actuator(position):  # e.g. the lens driver's I2C write raising OSError
            raise OSError(5)

        app.focus.move_to = broken_actuator
        t.out = bytearray()
        app.on_message(P.CMD_SET_LENS, 2, struct.pack("<i", 10))
        naks = [m for m in _messages(t.out) if m["type"] == "nak"]
        logs = [m for m in _messages(t.out) if m["type"] == "log"]
        assert len(naks) == 1 and naks[0]["ack_seq"] == 2 and naks[0]["code"] == P.NAK_INTERNAL, naks
        assert "OSError" in naks[0]["message"] and "0x%02x" % P.CMD_SET_LENS in naks[0]["message"]
        assert len(logs) == 1 and "OSError" in logs[0]["text"], logs
        t.out = bytearray()
        app.on_message(P.CMD_PING, 3, b"")
        acks = [m for m in _messages(t.out) if m["type"] == "ack"]
        assert [a["ack_seq"] for a in acks] == [3]
        t.out = bytearray()
        app.on_message(P.CMD_SET_LENS, 2, struct.pack("<i", 10))  # a retry gets the same answer
        assert [(m["type"], m["ack_seq"]) for m in _messages(t.out)] == [("nak", 2)]
    finally:
        _cleanup(d)


def test_power_events_say_what_holds_the_rail_off_as_soon_as_it_changes():
    app, t, d = _app(lambda d: SimHal(storage=d))
    try:
        hal = app.hal
        clock = [1000]
        app.now = lambda: clock[0]
        app.on_message(P.CMD_CONNECT, 1, bytes([P.VERSION]) + b"test")
        app.control_tick()
        hal.vbus_mv, hal.temp_mc = 4000, 71000  # both bad: VBUS is judged first
        app.on_message(P.CMD_POWER_GRANT, 2, struct.pack("<H", 4500))
        clock[0] += 10
        app.control_tick()
        t.out = bytearray()
        hal.vbus_mv = 5000  # still hot: the rail stays granted, held off now by the temperature
        clock[0] += 10
        app.control_tick()
        power = [m for m in _messages(t.out) if m["type"] == "power"]
        # Not left to the periodic event (up to 500 ms later): in the tick of the change.
        assert len(power) == 1 and power[0]["state"] == 2 and power[0]["blocked"] == P.FAULT_CAUSES.index(
            "over_temperature"), power
        assert power[0]["faults"] == 0
        hal.temp_mc = 30000
        clock[0] += 10
        app.control_tick()
        hal.load_ma = 3000  # over-current once the switch is on
        for _ in range(10):
            clock[0] += 10
            app.control_tick()
        t.out = bytearray()
        clock[0] += 500
        app.control_tick()
        power = [m for m in _messages(t.out) if m["type"] == "power"]
        assert power and power[-1]["faults"] == 1 and power[-1]["blocked"] == 0, power
    finally:
        _cleanup(d)
