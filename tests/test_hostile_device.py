"""A hostile device on a pty: it answers CONNECT with ACK + HELLO + DESCRIPTOR (so
``magcam.connect`` works), then lies. Whatever it does, the host must stay bounded in memory
(tracemalloc) and in time (every call returns within its timeout), and tell the user what is
wrong (the exception names the problem).
"""

from __future__ import annotations

import json
import os
import select
import threading
import time
import tracemalloc
import tty

import pytest

import magcam
from magcam.link import CommandTimeout, FrameError, LinkClosed, LinkError
from magcam_fw import protocol as P

DESCRIPTOR = json.dumps({"model": "hostile", "serial": "EVIL-0001", "sensor": {"cfa": "RGGB", "bits": 12}})


class HostileDevice:
    """The device end of a pty speaking v1 from Python, with hooks to misbehave.

    ``on[mtype](dev, seq, msg)`` overrides the answer to a command; ``hello_version``,
    ``descriptor`` and ``frame_version`` (the header version of everything it sends) lie at
    connect time.
    """

    def __init__(self, *, hello_version=P.VERSION, descriptor=DESCRIPTOR, frame_version=P.VERSION, on=None,
                 power_state=4):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.hello_version = hello_version
        self.descriptor = descriptor
        self.frame_version = frame_version
        self.power_state = power_state  # reported after CONNECT, as the firmware's snapshot does; None: never
        self.on = dict(on or {})
        self.seq = 0
        self.frame_id = 0
        self.silent = False  # stops answering anything (a wedged device)
        self.deaf = False  # stops reading at all: the port's buffer fills and host writes block
        self.commands: list[tuple[int, int]] = []
        self._enc = P.Encoder()
        self._wlock = threading.Lock()
        self._stop = threading.Event()
        self._dec = P.Decoder(1024)
        self._rx = threading.Thread(target=self._serve, name="hostile-rx", daemon=True)
        self._rx.start()

    # ---- sending
    def send(self, mtype, values=(), tail=None, version=None):
        with self._wlock:
            self.seq = (self.seq + 1) & 0xFFFF
            wire = bytearray(self._enc.encode(mtype, self.seq, values, tail))
            version = self.frame_version if version is None else version
            if version != P.VERSION:
                wire = self._reframe(wire, version)
            self._write(bytes(wire))

    def _reframe(self, wire, version):
        raw = bytearray(len(wire))
        m = P.cobs_decode_into(wire[1:-1], len(wire) - 2, raw)
        raw[0] = version
        body = m - P.CRC_SIZE
        P.struct.pack_into("<I", raw, body, P.crc32(memoryview(raw)[:body]))
        out = bytearray(m + m // 254 + 4)
        return out[: P.cobs_encode_into(raw, m, out)]

    def _write(self, data):
        view = memoryview(data)
        while view and not self._stop.is_set():
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                return

    def ack(self, seq, value=0, data=None):
        self.send(P.ACK, (seq, value), data)

    def begin(self, fid, w, h, total=None, chunk=4096):
        self.send(P.FRAME_BEGIN, (fid, w, h, 0, 12, 256, 4095, 1000, 1.0, 0, 0,
                                  w * h * 2 if total is None else total, chunk))

    # ---- receiving
    def _serve(self):
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.master], [], [], 0.05)
                if not r or self.deaf:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                return
            self._dec.feed(data, self._on_command)

    def _on_command(self, mtype, seq, payload):
        if self.silent:
            return
        self.commands.append((mtype, seq))
        msg = P.unpack(mtype, payload) if P.readable(mtype, payload) else {}
        if mtype in self.on:
            self.on[mtype](self, seq, msg)
        elif mtype == P.CMD_CONNECT:
            self.ack(seq, 1)
            self.send(P.HELLO, (self.hello_version, 1, 1000, 4104, 1024, 4096, 0), "hostile 6.6.6")
            self.send(P.DESCRIPTOR, (), self.descriptor)
            if self.power_state is not None:
                self.send(P.EV_POWER, (1000, self.power_state, 5000, 250, 4500, 0, 0))
        elif mtype == P.CMD_FAULTS_READ:
            self.ack(seq, 0, b"")
        elif mtype == P.CMD_SET_LENS:
            self.ack(seq, msg["position"])
        else:
            self.ack(seq, 0)

    def close(self):
        self._stop.set()
        self._rx.join(timeout=2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def bounded():
    """tracemalloc over the test; yields a function returning the peak so far (bytes)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class Within:
    """``with Within(s):`` fails if the block took longer than s seconds."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.took = time.monotonic() - self.t0
        assert self.took <= self.seconds, f"took {self.took:.2f} s, bound {self.seconds} s"
        return False


def _device(**kw):
    return HostileDevice(**kw)


MiB = 1 << 20


# ---------------------------------------------------------------------- frames that lie


def _capture_then(behaviour):
    """A CAPTURE handler: ACK with the next frame id, then ``behaviour(dev, fid, w, h)`` in a thread."""

    def handler(dev, seq, msg):
        dev.frame_id += 1
        fid = dev.frame_id
        dev.ack(seq, fid)
        threading.Thread(target=behaviour, args=(dev, fid, msg["width"], msg["height"]), daemon=True).start()

    return handler


def test_frame_larger_than_announced(bounded):
    def overrun(dev, fid, w, h):
        dev.begin(fid, w, h)
        data = bytes(w * h * 2)
        dev.send(P.FRAME_CHUNK, (fid, 0), data)
        for k in range(50):  # and then some more
            dev.send(P.FRAME_CHUNK, (fid, len(data) + 4096 * k), b"\x07" * 4096)
        dev.send(P.FRAME_END, (fid, len(data) + 4096 * 50, 0, 0))

    dev = _device(on={P.CMD_CAPTURE: _capture_then(overrun)})
    try:
        with magcam.connect(dev.port, connect_timeout=3) as cam:
            with Within(2.2), pytest.raises(FrameError, match="more data than announced"):
                cam.capture_raw(64, 48)
            assert cam.link._asm is None
    finally:
        dev.close()
    assert bounded() < 8 * MiB


def test_endless_chunks_never_end_a_frame(bounded):
    stop = threading.Event()

    def endless(dev, fid, w, h):
        dev.begin(fid, w, h)
        while not stop.is_set():  # zero-length chunks at the right offset, forever
            dev.send(P.FRAME_CHUNK, (fid, 0), b"")

    dev = _device(on={P.CMD_CAPTURE: _capture_then(endless)})
    try:
        with magcam.connect(dev.port, connect_timeout=3) as cam:
            with Within(1.0 + 0.5), pytest.raises(FrameError, match="frame 1: not received within 1 s"):
                cam.capture_raw(64, 48, timeout=1.0)
            with Within(1.6):  # the host still answers while the flood goes on
                assert cam.set_lens_position(321) == 321
            stop.set()
            asm = cam.link._asm
            assert asm is not None and len(asm.buf) == 64 * 48 * 2 and asm.received == 0
    finally:
        stop.set()
        dev.close()
    assert bounded() < 8 * MiB


def test_announced_frame_above_the_caps_allocates_nothing(bounded):
    def huge(dev, fid, w, h):
        dev.begin(fid, 16384, 16384)  # 512 MiB: above MAX_FRAME_BYTES
        for k in range(20):
            dev.send(P.FRAME_CHUNK, (fid, 4096 * k), b"\x01" * 4096)

    dev = _device(on={P.CMD_CAPTURE: _capture_then(huge)})
    try:
        with magcam.connect(dev.port, connect_timeout=3) as cam:
            with Within(2.2), pytest.raises(FrameError, match="bad header: frame too large"):
                cam.capture_raw(64, 48)
            assert cam.link._asm is None
    finally:
        dev.close()
    assert bounded() < 8 * MiB


def test_announced_frame_at_the_cap_is_bounded_by_the_cap(bounded):
    """A 64x48 CAPTURE answered with a 256 MiB FRAME_BEGIN (legal: exactly MAX_FRAME_BYTES).

    The host allocates what the header says, bounded by the protocol's cap, not by what it
    asked for: this pins the bound (finding reported: a host could refuse a FRAME_BEGIN that is
    not the size it requested, and ``connect()`` offers no way to lower ``max_frame_bytes``).
    """

    def at_cap(dev, fid, w, h):
        dev.begin(fid, 16384, 8192)
        dev.send(P.FRAME_CHUNK, (fid, 0), b"\x01" * 4096)

    dev = _device(on={P.CMD_CAPTURE: _capture_then(at_cap)})
    try:
        with magcam.connect(dev.port, connect_timeout=3) as cam:
            with Within(2.6), pytest.raises(FrameError, match="not received within"):
                cam.capture_raw(64, 48)
            asm = cam.link._asm
            assert asm is not None and len(asm.buf) == P.MAX_FRAME_BYTES
            cam.link._asm = None
    finally:
        dev.close()
    assert P.MAX_FRAME_BYTES <= bounded() < P.MAX_FRAME_BYTES + 8 * MiB


def test_device_that_stops_mid_frame(bounded):
    def half(dev, fid, w, h):
        dev.begin(fid, w, h)
        dev.send(P.FRAME_CHUNK, (fid, 0), bytes(4096))
        dev.silent = True  # wedged: no more chunks, no answers

    dev = _device(on={P.CMD_CAPTURE: _capture_then(half)})
    try:
        cam = magcam.connect(dev.port, connect_timeout=3)
        # The default wait: 2 s + the exposure (10 ms) + 1 s per 2 MB.
        with Within(2.02 + 0.5), pytest.raises(FrameError, match=r"frame 1: not received within 2\.01 s"):
            cam.capture_raw(64, 48)
        with Within(0.5 * 4 + 0.5), pytest.raises(CommandTimeout, match="set_lens: no answer from the device"):
            cam.set_lens_position(5)
        with Within(1.0):
            cam.close()  # its DISCONNECT goes unanswered: still bounded
    finally:
        dev.close()
    assert bounded() < 8 * MiB


def test_device_unplugged_mid_frame_says_so():
    def vanish(dev, fid, w, h):
        dev.begin(fid, w, h)
        dev.send(P.FRAME_CHUNK, (fid, 0), bytes(4096))
        time.sleep(0.1)
        os.close(dev.slave)  # the last holder of the slave end goes: the host's reads fail
        os.close(dev.master)

    dev = _device(on={P.CMD_CAPTURE: _capture_then(vanish)})
    try:
        cam = magcam.connect(dev.port, connect_timeout=3)
        with Within(2.5), pytest.raises((LinkClosed, FrameError)) as e:
            cam.capture_raw(64, 48)
        # Either the link saw the device go, or the frame timed out: the message says which.
        assert "device gone" in str(e.value) or "not received within" in str(e.value), str(e.value)
        with Within(2.0):
            cam.close()
    finally:
        dev._stop.set()


def test_device_that_stops_reading_closes_the_link_instead_of_blocking_writes():
    """A frozen firmware with USB still up: nothing reads the host's bytes, the port's buffer
    fills and a plain write would block for as long as the device stays deaf (heartbeats alone
    fill it in about 25 minutes). The link gives up after Link.WRITE_TIMEOUT_S instead."""
    dev = _device()
    try:
        cam = magcam.connect(dev.port, connect_timeout=3)
        dev.deaf = True
        outcome = {"sent": 0}

        def flood():  # what the heartbeat would send over a long time, at once
            while True:
                try:
                    cam.link.command(P.CMD_PING, timeout=0.001, retries=0)
                except CommandTimeout:
                    pass
                except LinkError as e:
                    outcome["error"] = e
                    return
                outcome["sent"] += 1

        writer = threading.Thread(target=flood, daemon=True)  # a blocked write must fail the test, not hang it
        writer.start()
        writer.join(30)
        assert not writer.is_alive(), f"a write is still blocked after 30 s ({outcome['sent']} pings went out)"
        assert outcome["sent"] > 100, "the pty should have taken some pings before its buffer filled"
        assert isinstance(outcome["error"], LinkClosed), repr(outcome["error"])
        assert f"device stopped reading: a write did not finish within {cam.link.WRITE_TIMEOUT_S:g} s" \
            in str(outcome["error"])
        assert cam.link.closed and "device stopped reading" in cam.link.close_reason
        with Within(0.5), pytest.raises(LinkClosed):
            cam.set_lens_position(5)  # the link stays closed: no second wait
        with Within(1.0):
            cam.close()  # no DISCONNECT queued behind a full buffer
    finally:
        dev.close()


def test_a_module_that_refuses_not_attached_with_its_rail_on_ends_a_burst_instead_of_looping():
    """A series waits for the rail when a module says not_attached (snapped off). One that says
    so while reporting its rail on would have been waited for at once, over and over, forever."""
    def capture(dev, seq, msg):
        if dev.frame_id:  # the first frame is fine, then it refuses with the rail on
            dev.send(P.NAK, (seq, P.NAK_NOT_ATTACHED), "sensor rail is off (module detached or faulted)")
            return
        dev.frame_id += 1
        dev.ack(seq, dev.frame_id)
        data = bytes(msg["width"] * msg["height"] * 2)
        dev.begin(dev.frame_id, msg["width"], msg["height"])
        dev.send(P.FRAME_CHUNK, (dev.frame_id, 0), data)
        dev.send(P.FRAME_END, (dev.frame_id, len(data), P.crc32(data), 0))

    dev = _device(on={P.CMD_CAPTURE: capture})
    outcome = {}
    try:
        with magcam.connect(dev.port, connect_timeout=3) as cam:
            worker = threading.Thread(target=lambda: outcome.update(r=cam.capture_burst(3, 64, 48, retries=1)),
                                      daemon=True)
            worker.start()
            worker.join(10)
            assert not worker.is_alive(), "the burst is still waiting for a rail that says it is on"
    finally:
        dev.close()
    res = outcome["r"]
    assert len(res.frames) == 1 and [lost.index for lost in res.lost] == [1, 2]
    assert "refused while its rail is on" in res.lost[0].reason, res.lost[0].reason
    assert res.reattaches == 0


def test_device_that_never_reports_power_delays_capture_by_the_rail_settle_time():
    """capture_raw first waits (up to camera.RAIL_SETTLE_S = 3 s) for the rail to be up: a device
    that never sends EV_POWER costs that on top of ``timeout``. Pinned here as the real bound."""
    from magcam.camera import RAIL_SETTLE_S

    def never(dev, fid, w, h):
        pass

    dev = _device(power_state=None, on={P.CMD_CAPTURE: _capture_then(never)})
    try:
        with magcam.connect(dev.port, connect_timeout=3) as cam:
            with Within(RAIL_SETTLE_S + 0.5 + 0.5) as w, pytest.raises(FrameError, match="not received within 0.5 s"):
                cam.capture_raw(64, 48, timeout=0.5)
            assert w.took >= RAIL_SETTLE_S  # the wait is real: not counted in ``timeout``
    finally:
        dev.close()


# ---------------------------------------------------------------------- versions


def test_hello_with_a_future_version_is_refused_with_advice():
    dev = _device(hello_version=2)
    try:
        with Within(3.5), pytest.raises(LinkError) as e:
            magcam.connect(dev.port, connect_timeout=3)
        msg = str(e.value)
        assert "protocol 2" in msg and "protocol 1" in msg and "cannot talk" in msg, msg
    finally:
        dev.close()


def test_device_answering_connect_with_nak_version():
    def nak(dev, seq, msg):
        dev.send(P.NAK, (seq, P.NAK_VERSION), "device speaks protocol v3")

    dev = _device(on={P.CMD_CONNECT: nak})
    try:
        with Within(3.5), pytest.raises(LinkError) as e:
            magcam.connect(dev.port, connect_timeout=3)
        assert "protocol 3" in str(e.value), str(e.value)
    finally:
        dev.close()


def test_device_framing_everything_in_another_version():
    dev = _device(frame_version=4)  # a v4 device answers in v4 framing, which v1 drops
    try:
        with Within(3.5), pytest.raises(LinkError) as e:
            magcam.connect(dev.port, connect_timeout=3)
        assert "protocol 4" in str(e.value), str(e.value)
    finally:
        dev.close()


# ---------------------------------------------------------------------- descriptor


def test_descriptor_that_is_not_json_is_time_bounded():
    dev = _device(descriptor="{this is not json")
    try:
        with Within(1.0 + 1.0), pytest.raises(LinkError):
            magcam.connect(dev.port, connect_timeout=1)
    finally:
        dev.close()


def test_descriptor_that_is_not_json_is_named():
    dev = _device(descriptor="{this is not json")
    try:
        with pytest.raises(LinkError) as e:
            magcam.connect(dev.port, connect_timeout=1)
        assert "JSON" in str(e.value) or "json" in str(e.value), str(e.value)
    finally:
        dev.close()


def test_descriptor_that_is_not_an_object_is_named():
    dev = _device(descriptor="[1, 2]")
    try:
        with pytest.raises(LinkError, match="descriptor"):
            with magcam.connect(dev.port, connect_timeout=1) as cam:
                cam.capture_raw(64, 48)
    finally:
        dev.close()


def test_descriptor_nested_too_deep_is_named_and_does_not_kill_the_reader():
    # json.loads raises RecursionError, not ValueError, on 2000 nested lists: the reader thread
    # must survive it and the user must learn what is wrong, within the timeout.
    dev = _device(descriptor="[" * 2000 + "]" * 2000)
    try:
        with Within(1.0 + 1.0), pytest.raises(LinkError, match="descriptor is not valid JSON"):
            magcam.connect(dev.port, connect_timeout=1)
    finally:
        dev.close()


# ---------------------------------------------------------------------- floods and stray replies


def test_event_flood_stays_bounded_and_the_host_answers(bounded):
    stop = threading.Event()

    def flood(dev):
        i = 0
        while not stop.is_set():
            dev.send(P.EV_ENCODER, (i, i, i, 0, 0, 0))
            dev.send(P.EV_LOG, (i, 1), "x" * 200)
            i += 1

    dev = _device()
    try:
        with magcam.connect(dev.port, connect_timeout=3) as cam:
            t = threading.Thread(target=flood, args=(dev,), daemon=True)
            t.start()
            deadline = time.monotonic() + 8
            while cam.link.events_dropped < 5000 and time.monotonic() < deadline:
                time.sleep(0.05)
            with Within(2.1):
                assert cam.set_lens_position(77) == 77
            stop.set()
            t.join(timeout=2)
            assert cam.link.events_dropped >= 5000, cam.link.stats()
            assert len(cam.link._events) <= 10000
    finally:
        stop.set()
        dev.close()
    # 10 000 queued events and a latest-of-each-type table; not the whole flood.
    assert bounded() < 32 * MiB


def test_acks_for_commands_never_sent_are_ignored(bounded):
    dev = _device()
    try:
        with magcam.connect(dev.port, connect_timeout=3) as cam:
            mine = cam.link._seq
            for s in range(1, 2000):  # answers to commands nobody sent (but the next ones)
                if not 0 <= (s - mine) % 0xFFFF <= 20:
                    dev.send(P.ACK if s % 2 else P.NAK, (s, 666) if s % 2 else (s, 3), None if s % 2 else "stray")
            time.sleep(0.3)
            with Within(1.0):
                assert cam.set_lens_position(12) == 12
            assert len(cam.link._replies) <= 64
    finally:
        dev.close()
    assert bounded() < 8 * MiB


def test_a_reply_that_came_before_its_command_is_not_taken():
    def slow_ack(dev, seq, msg):  # a real device over USB answers in a millisecond or more
        threading.Timer(0.05, dev.ack, (seq, msg["position"])).start()

    dev = _device(on={P.CMD_SET_LENS: slow_ack})
    try:
        with magcam.connect(dev.port, connect_timeout=3) as cam:
            seq = cam.link._seq
            nxt = [seq := seq % 0xFFFF + 1 for _ in range(5)]  # the next seqs (a heartbeat may take one)
            for s in nxt:
                dev.send(P.ACK, (s, -999))  # "answers" to commands not sent yet
            deadline = time.monotonic() + 2
            while not set(nxt) <= set(cam.link._replies) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert cam.set_lens_position(12) == 12  # the real answer, not the stray -999
    finally:
        dev.close()
