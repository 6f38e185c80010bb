"""The firmware's virtual-sensor client (hal_sim.SimSensor) over real FIFOs, both abort paths."""

from __future__ import annotations

import json
import os
import struct
import threading

import pytest

from magcam_fw.hal_sim import SimSensor


class SensorServer:
    """Answers each request line with a header and `w*h*2` bytes, the value = frame_id."""

    def __init__(self, d):
        os.mkfifo(f"{d}/sensor.req")
        os.mkfifo(f"{d}/sensor.resp")
        self.requests = []
        self._t = threading.Thread(target=self._serve, args=(d,), daemon=True)
        self._t.start()

    def _serve(self, d):
        with open(f"{d}/sensor.req", "rb") as req, open(f"{d}/sensor.resp", "wb") as resp:
            for line in req:
                r = json.loads(line)
                self.requests.append(r)
                n = r["w"] * r["h"] * 2
                resp.write(struct.pack("<HHI", 0, 0, n) + bytes([r["frame_id"]]) * n)
                resp.flush()


def wait_ready(s: SimSensor) -> None:
    for _ in range(100000):
        if s.ready():
            return
    pytest.fail("sensor never became ready")


def read_all(s: SimSensor) -> bytes:
    buf, out = memoryview(bytearray(4096)), bytearray()
    while (n := s.readinto(buf)) > 0:
        out += buf[:n]
    return bytes(out)


def test_frames_after_aborts_before_and_after_the_header_are_clean(tmp_path):
    d = str(tmp_path)
    server = SensorServer(d)
    s = SimSensor(d)
    s.start(512, 512, 1000, 1.0, 1, 0)
    s.abort()  # before its header was read
    s.start(512, 512, 1000, 1.0, 2, 0)
    wait_ready(s)
    assert s.frame_bytes() == 512 * 512 * 2
    s.readinto(memoryview(bytearray(1000)))
    s.abort()  # mid-frame, after the header
    s.start(64, 32, 1000, 1.0, 3, 0)
    wait_ready(s)
    assert read_all(s) == bytes([3]) * (64 * 32 * 2)
    s.start(16, 16, 1000, 1.0, 4, 0)  # and a plain one after a complete frame
    wait_ready(s)
    assert read_all(s) == bytes([4]) * (16 * 16 * 2)
    assert [r["frame_id"] for r in server.requests] == [1, 2, 3, 4]
