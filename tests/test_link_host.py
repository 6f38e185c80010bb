"""The host link against a scripted device on a real pty: lies about lengths, broken frames."""

from __future__ import annotations

import os
import time
import tty

import numpy as np
import pytest

from magcam.link import FrameError, Link, LinkError
from magcam_fw import protocol as P


class FakeDevice:
    """The device end of a pty, speaking protocol v1 from a script."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.enc = P.Encoder()
        self.seq = 0

    def send(self, mtype, values=(), tail=None):
        self.seq += 1
        os.write(self.master, bytes(self.enc.encode(mtype, self.seq, values, tail)))

    def begin(self, frame_id, w, h, total=None, chunk=4096, bits=12):
        self.send(P.FRAME_BEGIN, (frame_id, w, h, 0, bits, 256, 4095, 1000, 1.0, 0, 0,
                                  w * h * 2 if total is None else total, chunk))

    def close(self):
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def dev_link():
    dev = FakeDevice()
    link = Link(dev.port)
    yield dev, link
    link.close()
    dev.close()


def frame_bytes(w, h, seed=1):
    return np.random.default_rng(seed).integers(0, 4096, size=(h, w), dtype=np.uint16).astype("<u2").tobytes()


def send_frame(dev, fid, w, h, data, crc=None, status=0, chunk=4096):
    dev.begin(fid, w, h)
    for off in range(0, len(data), chunk):
        dev.send(P.FRAME_CHUNK, (fid, off), data[off : off + chunk])
    dev.send(P.FRAME_END, (fid, len(data), P.crc32(data) if crc is None else crc, status))


def test_good_frame_is_assembled_exactly(dev_link):
    dev, link = dev_link
    data = frame_bytes(64, 48)
    send_frame(dev, 1, 64, 48, data)
    frame = link.wait_frame(1, timeout=5)
    assert frame.data.astype("<u2").tobytes() == data and frame.cfa == "RGGB"


@pytest.mark.parametrize(
    "w,h,total,why",
    [
        (65534, 65534, 0xFFFFFFF0, "size out of range"),  # ~4 GiB: refused before allocating
        (64, 48, 64 * 48 * 2 + 2, "total_bytes disagrees"),
        (63, 48, None, "even"),
    ],
)
def test_lying_headers_are_refused_before_any_allocation(dev_link, w, h, total, why):
    dev, link = dev_link
    dev.begin(7, w, h, total=total)
    with pytest.raises(FrameError, match=why):
        link.wait_frame(7, timeout=5)
    assert link._asm is None


def test_more_data_than_announced_is_a_frame_error(dev_link):
    dev, link = dev_link
    data = frame_bytes(64, 48)
    dev.begin(2, 64, 48)
    dev.send(P.FRAME_CHUNK, (2, 0), data)
    dev.send(P.FRAME_CHUNK, (2, len(data)), b"\x01" * 100)  # one chunk too many
    with pytest.raises(FrameError, match="more data than announced"):
        link.wait_frame(2, timeout=5)


def test_missing_chunk_and_bad_crc_and_abort_are_reported(dev_link):
    dev, link = dev_link
    data = frame_bytes(128, 64)
    dev.begin(3, 128, 64)
    dev.send(P.FRAME_CHUNK, (3, 0), data[:4096])
    dev.send(P.FRAME_CHUNK, (3, 8192), data[8192:12288])  # 4096..8191 never came
    with pytest.raises(FrameError, match="chunk missing"):
        link.wait_frame(3, timeout=5)
    send_frame(dev, 4, 128, 64, data, crc=123)
    with pytest.raises(FrameError, match="CRC-32 mismatch"):
        link.wait_frame(4, timeout=5)
    dev.begin(5, 128, 64)
    dev.send(P.FRAME_END, (5, 0, 0, 1))
    with pytest.raises(FrameError, match="aborted"):
        link.wait_frame(5, timeout=5)
    # After all that, a good frame still comes through and the errors were counted.
    send_frame(dev, 6, 128, 64, data)
    assert link.wait_frame(6, timeout=5).data.shape == (64, 128)
    assert link.stats()["frame_errors"] == 3


def test_corrupted_bytes_on_the_wire_resync(dev_link):
    dev, link = dev_link
    data = frame_bytes(64, 48)
    wire = bytes(dev.enc.encode(P.EV_LOG, 1, (5, 1), "x" * 50))
    os.write(dev.master, b"noise" + wire[:-10] + bytes([wire[-10] ^ 0x10]) + wire[-9:])  # a flipped bit
    send_frame(dev, 9, 64, 48, data)
    assert link.wait_frame(9, timeout=5).data.shape == (48, 64)
    stats = link.stats()
    assert stats["crc_errors"] + stats["framing_errors"] >= 1


def test_event_flood_stays_bounded():
    dev = FakeDevice()
    link = Link(dev.port, event_queue=100)
    try:
        for i in range(1000):
            dev.send(P.EV_ENCODER, (i, i, i, 0, 0, 0))
        deadline = time.monotonic() + 5
        while link.events_dropped < 900 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(link._events) == 100 and link.events_dropped == 900
        assert link.next_event(0)["count"] == 900  # the newest are kept
    finally:
        link.close()
        dev.close()


def test_unreadable_frames_are_not_counted_as_lost(dev_link):
    dev, link = dev_link
    dev.send(P.EV_ATTACH, (1, 2, 1))
    dev.seq += 1  # a frame of a type this host does not know, with the next seq
    raw = bytearray(P.struct.pack("<BBHH", P.VERSION, 0x3E, dev.seq, 2) + b"hi")
    raw += P.struct.pack("<I", P.crc32(raw))
    out = bytearray(32)
    os.write(dev.master, bytes(memoryview(out)[: P.cobs_encode_into(raw, len(raw), out)]))
    dev.send(P.EV_ATTACH, (2, 0, 1))
    assert [link.next_event(5)["t"] for _ in range(2)] == [1, 2]
    assert link.stats()["seq_gaps"] == 0


def _opening_error(port) -> str:
    with pytest.raises(LinkError) as caught:
        Link(str(port))
    return str(caught.value)


def test_a_port_that_is_not_a_serial_device_is_named_as_such(tmp_path):
    regular = tmp_path / "regular.txt"
    regular.write_text("")
    for port in (regular, "/dev/null"):
        assert "not a serial device" in _opening_error(port)
    assert "no such port: check the cable" in _opening_error(tmp_path / "ttyACM9")


def test_a_port_held_by_another_link_is_busy():
    master, slave = os.openpty()
    try:
        tty.setraw(master)
        first = Link(os.ttyname(slave), power_budget_mw=None)
        try:
            assert "the port is busy: close `magcam monitor`" in _opening_error(os.ttyname(slave))
        finally:
            first.close()
    finally:
        os.close(master)
        os.close(slave)
