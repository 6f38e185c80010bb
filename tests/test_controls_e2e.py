"""The module's controls end to end: `magcam sim --scenario` + `magcam monitor --json`, the real
firmware in the MicroPython unix port, every state the firmware-controls issue names."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import magcam
from magcam.sim import Simulator
from magcam_fw import protocol as P

MAGCAM = [sys.executable, "-m", "magcam.cli"]


def run_scenario(tmp_path: Path, lines: list[dict], seconds: float, flash: Path | None = None) -> list[dict]:
    """Start `magcam sim` with the scenario, watch it with `magcam monitor --json`; all events."""
    scenario = tmp_path / "scenario.jsonl"
    scenario.write_text("".join(json.dumps(x) + "\n" for x in lines))
    port_file = tmp_path / "port"
    cmd = [*MAGCAM, "sim", "--scenario", str(scenario), "--port-file", str(port_file)]
    if flash:
        cmd += ["--flash", str(flash)]
    sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        port = sim.stdout.readline().strip()
        mon = subprocess.run([*MAGCAM, "monitor", "--port", port, "--json", "--duration", str(seconds)],
                             capture_output=True, text=True, timeout=seconds + 60)
        assert mon.returncode == 0, mon.stderr
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    return [json.loads(line) for line in mon.stdout.splitlines()]


def of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


@pytest.mark.parametrize("rate", [50, 1000, 10000])
def test_ring_counts_exactly_with_bounce_and_reversals(tmp_path, rate):
    n = max(rate // 5, 20)  # about 0.2 s of turning each way
    events = run_scenario(tmp_path, [
        {"t": 0, "do": "turn", "steps": n, "rate": rate, "bounce": 2},
        {"t": 50 + n * 1000 // rate, "do": "glitch", "n": 5},
        {"t": 100 + n * 1000 // rate, "do": "turn", "steps": -(n // 2), "rate": rate, "bounce": 1},
    ], seconds=1.0 + 2 * n / rate)
    enc = of(events, "encoder")
    assert enc[-1]["count"] == n - n // 2
    assert max(e["count"] for e in enc) == n
    assert enc[-1]["velocity"] == 0  # the ring's coming to rest is reported too
    # The glitches are on the wire, in an event of their own (the count did not move for them).
    assert enc[-1]["glitches"] == 10
    first = next(e for e in enc if e["glitches"])
    assert first["glitches"] == 10 and first["count"] == n


def test_fast_turns_move_the_lens_further_than_slow_ones(tmp_path):
    detents = 40
    slow = run_scenario(tmp_path, [{"t": 0, "do": "turn", "steps": detents, "rate": 50}], seconds=1.3)
    fast = run_scenario(tmp_path, [{"t": 0, "do": "turn", "steps": detents, "rate": 5000}], seconds=0.5)
    slow_move = of(slow, "encoder")[-1]["lens"] - of(slow, "encoder")[0]["lens"]
    fast_move = of(fast, "encoder")[-1]["lens"] - of(fast, "encoder")[0]["lens"]
    assert of(slow, "encoder")[-1]["count"] == of(fast, "encoder")[-1]["count"] == detents
    assert 0 < slow_move and fast_move >= 3 * slow_move


def test_end_stops_clamp_and_are_reported(tmp_path):
    events = run_scenario(tmp_path, [
        {"t": 0, "do": "turn", "steps": 3000, "rate": 10000},
        {"t": 500, "do": "turn", "steps": -6000, "rate": 10000},
    ], seconds=1.6)
    enc = of(events, "encoder")
    assert max(e["lens"] for e in enc) == 1000 and min(e["lens"] for e in enc) == 0
    assert any(e["at_max"] for e in enc) and enc[-1]["at_min"] and enc[-1]["lens"] == 0


def test_attach_chatter_is_debounced(tmp_path):
    lines = []
    # 2 ms drop-outs of the magnet at irregular times (no aliasing with the 10 ms control
    # tick): never long enough to count as a detach.
    for t in (100, 117, 131, 152, 166, 183, 197, 214, 232, 249):
        lines.append({"t": t, "do": "detach"})
        lines.append({"t": t + 2, "do": "attach"})
    lines += [{"t": 400, "do": "detach"}, {"t": 800, "do": "attach"}]
    events = run_scenario(tmp_path, lines, seconds=1.5)
    states = [e["state"] for e in of(events, "attach")]
    assert states.count("detached") == 1 and states[-1] == "attached"
    hellos = of(events, "hello")
    assert len({h["session"] for h in hellos}) == 2  # re-attach: a new session, HELLO again
    # The new session's snapshot is the only report of the re-attach (each event came twice).
    (again,) = [e for e in of(events, "attach") if e["state"] == "attached" and e["session"] == 2]
    assert [e["state"] for e in of(events, "power") if e["t"] == again["t"]] == ["requesting"]


@pytest.mark.parametrize("stimulus,cause", [
    ({"do": "load", "ma": 2500}, "over_current"),
    ({"do": "vbus", "mv": 4000}, "under_voltage"),
    ({"do": "vbus", "mv": 20000}, "over_voltage"),
    ({"do": "temp", "c": 85}, "over_temperature"),
])
def test_faults_cut_the_rail_in_the_same_tick(tmp_path, stimulus, cause):
    events = run_scenario(tmp_path, [{"t": 300, **stimulus}], seconds=1.0)
    fault = of(events, "fault")[0]
    assert fault["cause"] == cause
    cut = [e for e in of(events, "power") if e["t"] == fault["t"]]
    assert cut and cut[0]["state"] == "fault"
    # The switch is open from that tick on: no current is reported through it (the reading
    # that tripped is the fault's value), and none in any later event while it stays open.
    assert cut[0]["ma"] == 0, cut[0]
    assert all(e["ma"] == 0 for e in of(events, "power") if e["state"] not in ("on", "soft_start"))


def test_repeated_faults_latch_the_rail_off(tmp_path):
    events = run_scenario(tmp_path, [{"t": 300, "do": "load", "ma": 3000}], seconds=6.0)
    states = [e["state"] for e in of(events, "power")]
    assert "latched" in states and states[-1] == "latched"
    assert len(of(events, "fault")) >= 2


def test_fault_log_survives_a_restart_and_can_be_cleared(tmp_path):
    flash = tmp_path / "flash"
    scenario = tmp_path / "oc.jsonl"
    scenario.write_text('{"t": 200, "do": "load", "ma": 2600}\n')
    with Simulator(scenario=scenario, flash=flash) as sim:
        with magcam.connect(sim.port) as cam:
            assert of(cam.events(duration=1.0), "fault")
        sim.restart(scenario=None)
        with magcam.connect(sim.port) as cam:
            faults = cam.faults()
            assert faults and faults[0]["cause"] == "over_current" and faults[0]["value"] == 2600
            assert cam.clear_faults() == len(faults)
            assert cam.faults() == []


def test_detach_while_streaming_cuts_rail_and_stream_in_the_same_tick(tmp_path):
    scenario = tmp_path / "yank.jsonl"
    scenario.write_text('{"t": 600, "do": "detach"}\n')
    with Simulator(scenario=scenario) as sim, magcam.connect(sim.port) as cam:
        cam.start_stream(320, 240, fps=20)
        frames = [cam.next_frame(timeout=5) for _ in range(3)]
        assert all(f.data.shape == (240, 320) for f in frames)
        events = list(cam.events(duration=1.0))
        leaving = next(e for e in events if e["type"] == "attach" and e["state"] != "attached")
        cut = next(e for e in events if e["type"] == "power" and e["state"] == "off")
        assert cut["t"] == leaving["t"]
        after = [e for e in events if e["type"] == "frame" and e.get("ok") and e.get("t", 0) > leaving["t"]]
        assert after == []  # no frame started after the detach


def test_hot_module_derates_then_suspends_then_resumes(tmp_path):
    scenario = tmp_path / "heat.jsonl"
    scenario.write_text('{"t": 300, "do": "temp", "c": 58}\n{"t": 700, "do": "temp", "c": 68}\n'
                        '{"t": 1100, "do": "temp", "c": 40}\n')
    with Simulator(scenario=scenario) as sim, magcam.connect(sim.port) as cam:
        cam.start_stream(64, 48, fps=20)
        thermal = of(cam.events(duration=1.5), "thermal")
    steps = [(e["state"], e["fps_x10"]) for e in thermal]
    assert ("normal", 200) in steps and ("derated", 100) in steps and ("suspended", 0) in steps
    assert steps[-1] == ("normal", 200)


def test_descriptor_write_persists_across_restart_and_bad_ones_are_refused(tmp_path, descriptor):
    flash = tmp_path / "flash"
    calibrated = json.loads(json.dumps(descriptor))
    calibrated["serial"] = "CAL-0042"
    calibrated["color"]["color_matrix_1"] = [0.8, -0.2, -0.05, -0.4, 1.2, 0.25, -0.1, 0.25, 0.6]
    calibrated["lens"]["position_max"] = 800
    with Simulator(flash=flash) as sim:
        with magcam.connect(sim.port) as cam:
            cam.write_descriptor(calibrated)
            assert cam.link.descriptor == calibrated
            assert cam.set_lens_position(5000) == 800  # the new lens range applies at once
            assert cam.lens_position == 800  # at once, not when the next event comes (it was stale)
            broken = dict(calibrated)
            del broken["lens"]
            with pytest.raises(magcam.CommandRejected, match="lens"):
                cam.write_descriptor(broken)
            wrong_type = json.loads(json.dumps(calibrated))
            wrong_type["color"] = "x"  # once accepted, then crashed the firmware's link task
            with pytest.raises(magcam.CommandRejected, match="'color' must be an object"):
                cam.write_descriptor(wrong_type)
            dark = json.loads(json.dumps(calibrated))
            dark["color"]["color_matrix_1"] = [0] * 9  # once stored; then every capture_dng failed
            with pytest.raises(magcam.CommandRejected, match="must map white"):
                cam.write_descriptor(dark)
            assert cam.capture_dng(tmp_path / "still.dng", width=64, height=48).stat().st_size > 0
            assert cam.set_lens_position(100) == 100  # the link still answers
        sim.restart()
        with magcam.connect(sim.port) as cam:
            assert cam.descriptor == calibrated  # the device kept the good one across the reset
    assert json.loads((flash / "descriptor.json").read_text()) == calibrated


def test_an_unusable_descriptor_on_the_flash_falls_back_to_the_factory_one(tmp_path, descriptor):
    flash = tmp_path / "flash"
    flash.mkdir()
    for text, why in (("{bad", "not JSON"), (json.dumps({"module": "x"}), "missing 'serial'")):
        (flash / "descriptor.json").write_text(text)
        with Simulator(flash=flash) as sim:  # comes up, as a board does
            with magcam.connect(sim.port) as cam:
                assert cam.descriptor == descriptor
                # ... and says so to the host, or a capture's DNG would quietly carry factory colour
                logs = [e for e in cam.events(duration=0.5) if e["type"] == "log"]
                assert [(e["level"], e["text"]) for e in logs] == [
                    (P.LOG_WARNING, f"descriptor: {why}; using the factory one")], logs
        assert (flash / "descriptor.json").read_text() == text  # kept for the user to look at
    (flash / "descriptor.json").write_text(json.dumps(descriptor))
    with Simulator(flash=flash) as sim, magcam.connect(sim.port) as cam:
        assert not [e for e in cam.events(duration=0.5) if e["type"] == "log"]


def test_a_stream_ends_with_its_session():
    with Simulator() as sim:
        with magcam.connect(sim.port) as cam:
            cam.start_stream(64, 48, fps=20)
            cam.next_frame(timeout=5)
        with magcam.connect(sim.port) as cam:  # a new session: nobody asked for frames
            frames = [e for e in cam.events(duration=1.0) if e["type"] == "frame"]
            assert frames == []


def _wait_event(cam, predicate, seconds):
    for ev in cam.events(duration=seconds):
        if predicate(ev):
            return ev
    return None


def test_a_module_reboot_behind_the_same_port_is_a_new_session_and_the_stream_goes_on():
    """A UART bridge keeps its port across a module reset: the host sees only session-0 beacons.
    It must open a new session by itself, ask again for its stream, and say so in events."""
    with Simulator() as sim:
        with magcam.connect(sim.port) as cam:
            before = cam.hello
            cam.start_stream(64, 48, fps=10)
            cam.next_frame(timeout=5)
            restarted = time.monotonic()
            sim.restart()  # power-cycle: the firmware forgets the session and the stream
            lost = _wait_event(cam, lambda e: e["type"] == "link" and e.get("state") == "session_lost", 5)
            assert lost is not None and "rebooted" in lost["reason"]
            resumed = _wait_event(cam, lambda e: e["type"] == "link" and e.get("state") == "resumed", 5)
            assert resumed is not None, "the host did not open a new session"
            assert cam.hello["session"] == resumed["session"]
            assert cam.hello is not before  # cam.hello follows the new session
            assert cam.hello["uptime_ms"] <= (time.monotonic() - restarted) * 1000 + 100
            frame = _wait_event(cam, lambda e: e["type"] == "frame" and e.get("ok"), 5)
            assert frame is not None, "the stream did not come back after the reboot"
            assert cam.next_frame(timeout=5).width == 64
            assert cam.link.stats()["sessions_resumed"] == 1
            assert not cam.link.closed
            cam.stop_stream()


def test_a_session_ended_for_host_silence_is_won_back_without_the_stream_coming_back_by_itself():
    """The device ends a session after 5 s without hearing the host (and clears the stream, so a
    host connecting next gets none); the host that was merely slow opens a new one and asks
    for its stream again."""
    with Simulator() as sim:
        with magcam.connect(sim.port) as cam:
            cam.start_stream(64, 48, fps=10)
            cam.next_frame(timeout=5)
            session = cam.hello["session"]
            cam.link.HEARTBEAT_S = 60.0  # the host goes quiet (a laptop asleep, a stalled process)
            lost = _wait_event(cam, lambda e: e["type"] == "link" and e.get("state") == "session_lost", 10)
            assert lost is not None
            cam.link.HEARTBEAT_S = 1.0
            resumed = _wait_event(cam, lambda e: e["type"] == "link" and e.get("state") == "resumed", 5)
            assert resumed is not None and resumed["session"] == cam.hello["session"] != session
            assert _wait_event(cam, lambda e: e["type"] == "frame" and e.get("ok"), 5) is not None
            cam.stop_stream()


def test_periodic_events_count_their_period_from_the_snapshot():
    """A second host's snapshot is followed by thermal and power events a full period later, not
    by one left over from the previous host's timer (a thermal one came 0.77 s later)."""
    with Simulator() as sim:
        for _ in range(2):
            with magcam.connect(sim.port) as cam:
                events = list(cam.events(duration=1.3))
            for kind, period in (("thermal", 1000), ("power", 500)):
                seen = [e for e in events if e["type"] == kind]
                assert len(seen) >= 2, (kind, seen)
                # Periodic ones only: a state change (the rail coming up) is sent when it happens.
                gaps = [b["t"] - a["t"] for a, b in zip(seen, seen[1:]) if a["state"] == b["state"]]
                assert gaps and all(gap >= period - 15 for gap in gaps), (kind, [e["t"] for e in seen])
