"""Hot-plug: the module disappears mid-burst (its simulator is killed outright) and comes back on
a different device path; the host finds it again by serial number and finishes the burst."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import magcam
from magcam.discovery import candidates, resolve
from magcam.sim.runner import usb_serial

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import chaos  # noqa: E402  (tools/chaos.py: the hot-plug chaos library)

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


def test_malformed_registry_entries_are_skipped(registry, tmp_path, monkeypatch):
    """Files that are not our entries once crashed `magcam ports` and every `--port auto`."""
    registry.mkdir()
    (registry / "a.json").write_text('{"process": "abc"}')
    (registry / "b.json").write_text("[1, 2]")
    (registry / "c.json").write_text(json.dumps({"process": os.getpid(), "device": "/dev/null"}))  # no ids
    (registry / "d.json").write_text("{not json")
    proc, port = start_sim(tmp_path / "flash")
    try:
        out = subprocess.run([*MAGCAM, "ports", "--json"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert [json.loads(line)["device"] for line in out.stdout.splitlines()] == [port]
        assert resolve("auto").device == port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    not_a_dir = tmp_path / "registry-file"
    not_a_dir.write_text("")
    monkeypatch.setenv("MAGCAM_SIM_REGISTRY", str(not_a_dir))
    assert candidates() == []  # nothing to find, and no crash
    out = subprocess.run([*MAGCAM, "sim", "--duration", "1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "is not a directory" in out.stderr and "Traceback" not in out.stderr


def test_ports_and_auto_find_the_simulator(registry, tmp_path):
    proc, port = start_sim(tmp_path / "flash")
    try:
        out = subprocess.run([*MAGCAM, "ports", "--json"], capture_output=True, text=True, timeout=30)
        listed = [json.loads(line) for line in out.stdout.splitlines()]
        assert [(p["device"], p["vid"], p["pid"], p["serial_number"]) for p in listed] == [
            (port, 0x1209, 0x0001, usb_serial(tmp_path / "flash"))]
        assert resolve("auto").device == port
        with magcam.connect("auto") as cam:
            assert cam.port == port and cam.usb_serial == usb_serial(tmp_path / "flash")
            assert cam.descriptor["serial"] == "SIM-000001"  # the module's own serial, from its descriptor
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


def test_an_unplugged_module_is_not_swapped_for_another_and_a_burst_stops_waiting(registry, tmp_path):
    """With another module plugged in, a burst whose module went away once carried on with the
    other one (every simulator had the same USB serial) and said nothing; one that did not come
    back waited the reconnect timeout again for every frame left."""
    other, _ = start_sim(tmp_path / "flash_other")
    victim, port = start_sim(tmp_path / "flash_victim")
    try:
        with magcam.connect(port, reconnect_timeout=2.0) as cam:
            cam.capture_raw(64, 48)
            victim.terminate()  # unplugged, for good
            victim.wait(timeout=10)
            t0 = time.monotonic()
            res = cam.capture_burst(5, 64, 48)
            took = time.monotonic() - t0
        assert res.frames == [] and res.reconnects == 0 and [lost.index for lost in res.lost] == [0, 1, 2, 3, 4]
        assert res.lost[0].reason.endswith("(module did not come back)"), res.lost[0].reason
        assert all("unplugged and did not come back within 2 s" in lost.reason for lost in res.lost[1:])
        assert took < 2.0 + 3.0, took  # one reconnect wait, not one per frame
    finally:
        other.terminate()
        other.wait(timeout=10)


def test_killed_mid_burst_reconnects_and_loses_nothing_silently(tmp_path, descriptor):
    # tools/chaos.py does the unplugging (SIGKILL at a random point of each burst, a new
    # simulator on a new pty with the same serial) and the bookkeeping; the assertions are here.
    r = chaos.hotplug(CYCLES, seed=1234, burst=BURST, size=SIZE, workdir=tmp_path, descriptor=descriptor)
    assert r["errors"] == [], r["errors"]  # no cycle blew up, every DNG reopened (rawpy) exactly
    for c in r["per_cycle"]:
        cycle, got = c["cycle"], c["got"]
        # Every index is accounted for: captured (and written) or listed as lost.
        assert sorted(got + [i for i, _ in c["lost"]]) == list(range(BURST)), c
        # and what arrived is exactly what the sensor produced (re-rendered by SensorModel)
        assert c["corrupt"] == [], f"cycle {cycle}: frames {c['corrupt']} corrupt"
        assert c["files"] == sorted(f"frame{i}.dng" for i in got), f"cycle {cycle}: partial or stray files {c['files']}"
        if c["reconnects"] == 0:  # the burst beat the unplug: it must reconnect later
            assert c["late_reconnect"], f"cycle {cycle}: no reconnect after the unplug"
    assert r["dng_checked"] == r["frames"] and r["dng_bad"] == 0
    assert r["leftover_processes"] == [], "a killed simulator left a process behind"
    totals = {k: r[k] for k in ("frames", "lost", "reconnects")}
    print(f"\nhot-plug over {CYCLES} cycles: {totals}, lost because {r['lost_reasons']}, {r['seconds']} s")
    assert totals["frames"] + totals["lost"] == CYCLES * BURST
    assert totals["reconnects"] >= CYCLES // 2  # most unplugs landed inside a burst


def _scenario(tmp_path, lines):
    path = tmp_path / "scenario.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_a_module_snapped_off_and_on_mid_burst_is_waited_for(tmp_path):
    """A magnetic detach keeps the USB link but cuts the rail: the module refuses CAPTURE with
    not_attached. A burst waits for the rail to come back and finishes, every frame bit-exact
    in order; the wait is counted, and it is not spent from the frame's retries (with one retry,
    the frame the detach aborts is taken again after the wait)."""
    from magcam.sim import Simulator

    scenario = _scenario(tmp_path, [{"t": 700, "do": "detach"}, {"t": 1000, "do": "attach"}])
    with Simulator(scenario=scenario) as sim, magcam.connect(sim.port) as cam:
        res = cam.capture_burst(40, 640, 480, retries=1)
    assert res.complete, res.lost
    assert [f.extra["index"] for f in res.frames] == list(range(40))
    assert res.reattaches >= 1 and res.reconnects == 0


def test_a_module_that_reboots_mid_burst_is_counted_as_a_reconnect(tmp_path):
    """The link opens a new session by itself when a rebooted module beacons; the burst goes on,
    and said nothing of it (reconnects 0) before."""
    from magcam.sim import Simulator

    with Simulator() as sim, magcam.connect(sim.port) as cam:

        def reboot_after_the_first(i, frame):
            if i == 0:
                sim.restart()
                assert cam.link.wait_state("power", lambda e: e["state"] == "on", 10)
                deadline = time.monotonic() + 5
                while cam.link.stats()["sessions_resumed"] == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)

        res = cam.capture_burst(3, 64, 48, on_frame=reboot_after_the_first)
    assert res.complete and len(res.frames) == 3, res.lost
    assert res.reconnects == 1 and res.reattaches == 0


def test_a_detach_during_the_first_frame_is_waited_for_too(tmp_path):
    """The run had begun (the module took the first frame on), so a snap-off that aborts that
    frame is a hot-swap to wait for, not a module that was never attached."""
    from magcam.sim import Simulator

    scenario = _scenario(tmp_path, [{"t": 600, "do": "detach"}, {"t": 1500, "do": "attach"}])
    with Simulator(scenario=scenario) as sim, magcam.connect(sim.port) as cam:
        res = cam.capture_burst(2, 4608, 3456, retries=1)  # 32 MB frames: the first is in flight at 600 ms
    assert res.complete, res.lost
    assert [f.extra["index"] for f in res.frames] == [0, 1]
    assert res.reattaches == 1 and res.reconnects == 0


def test_a_module_that_stays_detached_keeps_the_frames_already_taken(tmp_path):
    """Taken off for good mid-burst: what was taken is returned, the rest is listed as lost
    (once, after one wait), never an exception that loses the frames in hand."""
    from magcam.sim import Simulator

    scenario = _scenario(tmp_path, [{"t": 700, "do": "detach"}])
    with Simulator(scenario=scenario) as sim, magcam.connect(sim.port, reconnect_timeout=1.5) as cam:
        t0 = time.monotonic()
        res = cam.capture_burst(40, 640, 480)
        took = time.monotonic() - t0
    assert res.frames and res.lost and len(res.frames) + len(res.lost) == 40
    assert [f.extra["index"] for f in res.frames] == list(range(len(res.frames)))
    assert "detached (sensor rail off)" in res.lost[0].reason and "within 1.5 s" in res.lost[0].reason
    assert all(lost.reason.startswith("not taken: the module was detached") for lost in res.lost[1:])
    assert took < 40 * 0.5, took  # one wait of 1.5 s, not one per frame


def test_a_module_detached_before_a_burst_is_refused_at_once(tmp_path):
    from magcam.link import CommandRejected
    from magcam.sim import Simulator

    scenario = _scenario(tmp_path, [{"t": 0, "do": "detach"}])
    with Simulator(scenario=scenario) as sim, magcam.connect(sim.port, reconnect_timeout=5) as cam:
        cam.link.wait_state("power", lambda e: e["state"] == "off", 3)
        t0 = time.monotonic()
        with pytest.raises(CommandRejected, match="not_attached"):
            cam.capture_burst(3, 64, 48)
        assert time.monotonic() - t0 < 3.5  # the rail settle wait at most, not the reconnect timeout
