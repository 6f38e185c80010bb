"""Hot-plug: the module disappears mid-burst (its simulator is killed outright) and comes back on
a different device path; the host finds it again by serial number and finishes the burst."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import magcam
from magcam.dng import write_dng
from magcam.discovery import candidates, resolve
from magcam.sim.sensor import SensorModel

MAGCAM = [sys.executable, "-m", "magcam.cli"]
CYCLES = 20
BURST = 4
SIZE = (640, 480)


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A private simulator registry, so parallel runs and other tests cannot interfere."""
    path = tmp_path / "registry"
    monkeypatch.setenv("MAGCAM_SIM_REGISTRY", str(path))
    return path


def start_sim(flash) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([*MAGCAM, "sim", "--flash", str(flash)], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_ports_and_auto_find_the_simulator(registry, tmp_path):
    proc, port = start_sim(tmp_path / "flash")
    try:
        out = subprocess.run([*MAGCAM, "ports", "--json"], capture_output=True, text=True, timeout=30)
        listed = [json.loads(line) for line in out.stdout.splitlines()]
        assert [(p["device"], p["vid"], p["pid"], p["serial_number"]) for p in listed] == [
            (port, 0x1209, 0x0001, "SIM-000001")]
        assert resolve("auto").device == port
        with magcam.connect("auto") as cam:
            assert cam.port == port and cam.usb_serial == "SIM-000001"
        second, port2 = start_sim(tmp_path / "flash2")
        try:
            with pytest.raises(magcam.discovery.PortError, match="several boards"):
                resolve("auto")
        finally:
            second.terminate()
            second.wait(timeout=10)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert candidates() == []  # gone when the simulators stop


def test_killed_mid_burst_reconnects_and_loses_nothing_silently(registry, tmp_path, descriptor):
    flash = tmp_path / "flash"
    rng = random.Random(1234)
    model = SensorModel(descriptor, seed=0)
    totals = {"frames": 0, "lost": 0, "reconnects": 0}
    for cycle in range(CYCLES):
        out = tmp_path / f"cycle{cycle}"
        out.mkdir()
        sims = [start_sim(flash)[0]]

        def pull_the_plug(delay=rng.uniform(0.02, 0.2)):
            time.sleep(delay)
            sims[0].send_signal(signal.SIGKILL)  # no goodbye: as an unplug
            sims[0].wait()
            time.sleep(0.2)
            sims.append(start_sim(flash)[0])  # plugged back in: a new device path, same serial

        def save(i, frame):
            write_dng(out / f"frame{i}.dng", frame, descriptor)

        try:
            with magcam.connect("auto", reconnect_timeout=20) as cam:
                plug = threading.Thread(target=pull_the_plug)
                plug.start()
                result = cam.capture_burst(BURST, *SIZE, on_frame=save)
                plug.join()
                if result.reconnects == 0:  # the burst beat the unplug: it must reconnect later
                    assert cam._reconnect() and cam.capture_raw(64, 48).data.shape == (48, 64)
            # Every index is accounted for: captured (and written) or listed as lost.
            got = [f.extra["index"] for f in result.frames]
            assert sorted(got + [x.index for x in result.lost]) == list(range(BURST))
            for frame in result.frames:  # and what arrived is exactly what the sensor produced
                expected = model.render(*SIZE, frame.exposure_us, frame.analog_gain, frame.frame_id,
                                        frame.lens_position)
                assert np.array_equal(frame.data, expected), f"cycle {cycle}: frame {frame.frame_id} corrupt"
            names = sorted(os.listdir(out))
            assert names == sorted(f"frame{i}.dng" for i in got), f"cycle {cycle}: partial or stray files {names}"
            totals["frames"] += len(result.frames)
            totals["lost"] += len(result.lost)
            totals["reconnects"] += result.reconnects
        finally:
            for s in sims:
                if s.poll() is None:
                    s.terminate()
                    s.wait(timeout=10)
    print(f"\nhot-plug over {CYCLES} cycles: {totals}")
    assert totals["frames"] + totals["lost"] == CYCLES * BURST
    assert totals["reconnects"] >= CYCLES // 2  # most unplugs landed inside a burst
