"""End to end: the real firmware in the MicroPython unix port, a real pty, pyserial, the CLI."""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import rawpy

import magcam
from conftest import REPO, mount_tmpfs, tool
from magcam.link import CommandRejected, Link
from magcam.sim import Simulator
from magcam.sim.sensor import SensorModel
from magcam_fw import protocol as P

MAGCAM = [sys.executable, "-m", "magcam.cli"]
sys.path.insert(0, str(REPO / "tools"))
from chaos import processes_marked  # noqa: E402

TURNS = """\
{"t": 50, "do": "turn", "steps": 200, "rate": 2000}
{"t": 300, "do": "turn", "steps": -60, "rate": 1000}
"""
SCENARIO = TURNS + """\
{"t": 600, "do": "detach"}
{"t": 900, "do": "attach"}
{"t": 1200, "do": "load", "ma": 2500}
{"t": 1300, "do": "load", "ma": 250}
{"t": 1400, "do": "temp", "c": 58.5}
"""



def raw_wire(version: int, mtype: int, seq: int, payload: bytes) -> bytes:
    """A frame built by hand, for what the Encoder refuses to make (other versions, bad types)."""
    raw = bytearray(struct.pack("<BBHH", version, mtype, seq, len(payload)) + payload)
    raw += struct.pack("<I", P.crc32(raw))
    out = bytearray(len(raw) + 8)
    return bytes(memoryview(out)[: P.cobs_encode_into(raw, len(raw), out)])


def wait_replies(link: Link, seqs: set[int]) -> None:
    deadline = time.monotonic() + 5
    while not seqs <= set(link._replies) and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "scenario.jsonl"
    path.write_text(SCENARIO)
    return path


def test_sim_cli_events_and_bit_exact_capture(tmp_path, descriptor):
    """`magcam sim` as its own process; the host only knows the pty path, as with a board."""
    scenario = tmp_path / "turns.jsonl"
    scenario.write_text(TURNS)
    port_file = tmp_path / "port"
    proc = subprocess.Popen([*MAGCAM, "sim", "--scenario", str(scenario), "--seed", "7", "--port-file", str(port_file)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/")
        for _ in range(100):
            if port_file.exists():
                break
            time.sleep(0.05)
        assert port_file.read_text().strip() == port
        with magcam.connect(port) as cam:
            assert cam.hello["version"] == P.VERSION
            assert cam.descriptor == descriptor
            events = list(cam.events(duration=0.8))
            encoder = [e for e in events if e["type"] == "encoder"]
            # 200 forward then 60 back, exactly; the lens followed forward from mid-range.
            assert encoder[-1]["count"] == 140
            assert max(e["count"] for e in encoder) == 200
            lens = encoder[-1]["lens"]
            assert 0 <= lens <= 1000 and lens != 500  # the lens followed, through the acceleration curve
            frame = cam.capture_raw(640, 480, exposure_us=8000, analog_gain=2.0)
        assert (frame.width, frame.height, frame.cfa) == (640, 480, descriptor["sensor"]["cfa"])
        assert (frame.black_level, frame.white_level, frame.bits) == (256, 4095, 12)
        assert (frame.exposure_us, frame.analog_gain, frame.lens_position) == (8000, 2.0, lens)
        # The simulator's source of truth: the same sensor model, seed and frame id.
        expected = SensorModel(descriptor, seed=7).render(640, 480, 8000, 2.0, frame.frame_id, lens)
        assert np.array_equal(frame.data, expected)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM  # stopped by kill, as for every command; Ctrl-C: 0
    assert not port_file.exists()


def test_monitor_json_reports_every_event_type(scenario):
    with Simulator(scenario=scenario) as sim:
        out = subprocess.run([*MAGCAM, "monitor", "--port", sim.port, "--json", "--duration", "2.5"],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert all("type" in e and isinstance(e.get("t"), int) for e in events)
    by_type: dict[str, list[dict]] = {}
    for e in events:
        by_type.setdefault(e["type"], []).append(e)
    assert {"hello", "encoder", "attach", "power", "thermal", "fault", "link"} <= set(by_type)
    assert by_type["encoder"][-1]["count"] == 140 and by_type["encoder"][-1]["lens"] != 500
    states = [e["state"] for e in by_type["attach"]]
    assert states[0] == "attached" and "detached" in states and states[-1] == "attached"
    # The first sign of a detach cuts the rail in that same tick: same timestamp, no current.
    leaving_at = next(e["t"] for e in by_type["attach"] if e["state"] != "attached")
    after = [e for e in by_type["power"] if e["t"] >= leaving_at]
    assert after[0]["t"] == leaving_at and after[0]["state"] == "off" and after[0]["ma"] == 0
    faults = by_type["fault"]
    assert faults[0]["cause"] == "over_current" and faults[0]["value"] == 2500
    assert all({"state", "mv", "ma"} <= set(e) for e in by_type["power"])
    assert by_type["thermal"][-1]["c"] == 58.5 and by_type["thermal"][-1]["state"] == "derated"


def test_demo_writes_dng_readers_accept(tmp_path):
    marker = f"MAGCAM_TEST_MARK={uuid.uuid4()}"
    env = dict(os.environ, MAGCAM_TEST_MARK=marker.split("=", 1)[1])
    out = subprocess.run([*MAGCAM, "demo", "--out", str(tmp_path), "--json"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    result = [json.loads(line) for line in out.stdout.splitlines() if '"result"' in line][-1]
    dng, jpg = Path(result["dng"]), Path(result["jpeg"])
    assert dng.parent == tmp_path and jpg.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dng.name, jpg.name])  # no temp files left
    with rawpy.imread(str(dng)) as raw:
        assert raw.raw_image.shape == (768, 1024)
        assert raw.color_desc == b"RGBG" and raw.raw_pattern.tolist() == [[0, 1], [3, 2]]
        assert raw.black_level_per_channel == [256] * 4 and raw.white_level == 4095
        rgb = raw.postprocess(use_camera_wb=True, no_auto_bright=True)
        assert rgb.shape == (768, 1024, 3)
    info = subprocess.run([tool("dcraw"), "-i", "-v", str(dng)], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "magcam" in info.stdout and "1024 x 768" in info.stdout
    exif = json.loads(subprocess.run([tool("exiftool"), "-j", str(dng)], capture_output=True, text=True).stdout)[0]
    assert exif["DNGVersion"] == "1.4.0.0" and exif["Make"] == "magcam"
    assert exif["BlackLevel"] == 256 and exif["WhiteLevel"] == 4095 and exif["FNumber"] == 1.4
    assert processes_marked(marker) == [], "the demo left a process behind"


def _demo(out: Path, monkeypatch=None, full_disk: bool = False):
    """`magcam demo --out OUT`: a real process, or in-process with every atomic write failing
    with ENOSPC when this machine refuses to mount a small tmpfs (not root)."""
    if not full_disk:
        return subprocess.run([*MAGCAM, "demo", "--out", str(out)], capture_output=True, text=True, timeout=120)
    from click.testing import CliRunner

    import magcam.atomic
    from magcam.cli import main

    def full_open(*args, **kw):
        f = open(*args, **kw)
        if Path(args[0]).parent != out:  # the simulator's own files are not on the full disk
            return f

        def write(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        f.write = write
        return f
    monkeypatch.setattr(magcam.atomic, "open", full_open, raising=False)
    res = CliRunner().invoke(main, ["demo", "--out", str(out)])
    return subprocess.CompletedProcess([], res.exit_code, res.stdout, res.stderr)


def test_demo_on_a_full_disk_names_the_file_and_leaves_nothing_partial(tmp_path, monkeypatch):
    disk = tmp_path / "disk"
    refused = mount_tmpfs(disk, "64k")  # less than the 1.6 MB DNG
    try:
        run = _demo(disk / "out", monkeypatch, full_disk=refused is not None)
        left = sorted(p.name for p in (disk / "out").iterdir())
    finally:
        if refused is None:
            subprocess.run(["umount", str(disk)], check=False, timeout=30)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.splitlines()[-1] == (f"error: disk full ({disk / 'out' / 'demo_0001.dng'}): No space left on "
                                           "device; no partial file was left"), run.stderr
    assert left == []


def test_demo_refuses_an_unwritable_folder_before_it_starts(tmp_path):
    ro = tmp_path / "ro"
    if os.geteuid() == 0:  # root writes through modes: a read-only filesystem refuses even root
        refused = mount_tmpfs(ro, "64k")
        assert refused is None, refused  # root may mount
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True, timeout=30)
    else:
        ro.mkdir()
        ro.chmod(0o555)
    try:
        run = _demo(ro / "out")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=False, timeout=30)
        else:
            ro.chmod(0o755)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.splitlines()[-1] == f"error: cannot write into {ro / 'out'}: directory {ro} is not writable"
    assert "simulated module" not in run.stdout  # said at once, not after the whole run


def test_capture_is_not_repeated_when_a_command_is_retried():
    """The device answers a retried seq from its cache: one capture, two identical ACKs."""
    with Simulator() as sim, Link(sim.port) as link:
        link.open_session()
        assert link.wait_state("power", lambda e: e["state"] == "on", 3)
        enc = P.Encoder(256)
        wire = bytes(enc.encode(P.CMD_CAPTURE, 4242, (64, 48, 1000, 1.0)))
        link._write(wire)
        link._write(wire)
        frame = link.wait_frame(1, timeout=10)
        assert frame.data.shape == (48, 64)
        time.sleep(0.3)
        assert link.command(P.CMD_PING)["type"] == "ack"
        with pytest.raises(Exception):
            link.wait_frame(2, timeout=0.5)  # no second capture happened


def test_a_new_session_is_not_answered_from_the_last_ones_replies():
    """A host that counts its seqs as the previous one did (a phone app starting from 1) must
    have its commands done, not answered from the previous session's reply cache."""
    with Simulator() as sim:
        for position in (100, 900):
            with Link(sim.port) as link:
                link.open_session()
                link._seq = 10  # both hosts send SET_LENS with seq 11
                assert link.command(P.CMD_SET_LENS, {"position": position})["value"] == position
                link.command(P.CMD_DISCONNECT)


def test_garbage_and_bad_commands_are_survived(descriptor):
    with Simulator() as sim, Link(sim.port) as link:
        link.open_session()
        link._write(b"\x00\x13\x37garbage\xff\xfe" * 10 + b"\x00")
        with pytest.raises(CommandRejected) as e:
            link.command(P.CMD_CAPTURE, {"width": 15, "height": 10, "exposure_us": 1000, "analog_gain": 1.0})
        assert e.value.reason == "bad_args"
        assert link.command(P.CMD_SET_LENS, {"position": 5000})["value"] == descriptor["lens"]["position_max"]
        assert link.command(P.CMD_SET_LENS, {"position": -3})["value"] == descriptor["lens"]["position_min"]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the device counts what it threw away
            ev = link.next_event(timeout=1)
            if ev and ev["type"] == "link" and ev["device"]["rx_framing_errors"] > 0:
                break
        else:
            pytest.fail("device never reported the garbage in a link event")


def test_version_mismatch_is_refused_with_advice():
    with Simulator() as sim, Link(sim.port) as link:
        with pytest.raises(CommandRejected) as e:
            link.command(P.CMD_CONNECT, {"version": P.VERSION + 1, "host": "future-host"})
        assert e.value.reason == "version" and f"v{P.VERSION}" in e.value.message
        # A future host frames everything as its own version; CONNECT is frozen, so it still
        # gets told (the NAK comes back in v1 framing, whose NAK layout is frozen too).
        link._write(raw_wire(P.VERSION + 1, P.CMD_CONNECT, 77, bytes([P.VERSION + 1]) + b"v2!!"))
        wait_replies(link, {77})
        assert link._replies[77]["code"] == P.NAK_VERSION


def test_unknown_and_short_commands_get_an_answer_not_silence():
    with Simulator() as sim, Link(sim.port) as link:
        link.open_session()
        link._write(raw_wire(P.VERSION, 0x7A, 501, b"\x01"))
        link._write(raw_wire(P.VERSION, P.CMD_SET_LENS, 502, b"\x01"))
        wait_replies(link, {501, 502})
        assert link._replies[501]["code"] == P.NAK_UNKNOWN
        assert link._replies[502]["code"] == P.NAK_BAD_ARGS


@pytest.mark.parametrize("stimulus,why", [
    ({"t": 0, "do": "detach"}, "module detached: snap it onto the phone"),
    # Attached, nothing faulted: these were all "sensor rail is off (module detached or faulted)".
    ({"t": 0, "do": "temp", "c": 71}, "sensor rail held off: too hot (71.0 C, limit 70.0 C)"),
    ({"t": 0, "do": "vbus", "mv": 4000}, "sensor rail held off: VBUS 4000 mV is below 4400 mV"),
    ({"t": 0, "do": "vbus", "mv": 9000}, "sensor rail held off: VBUS 9000 mV is above 5500 mV"),
    ({"t": 200, "do": "load", "ma": 2600}, "sensor rail off after a fault (over_current); retrying"),
])
def test_a_refused_capture_says_why_the_rail_is_off(tmp_path, stimulus, why):
    path = tmp_path / "scenario.jsonl"
    path.write_text(json.dumps(stimulus) + "\n")
    with Simulator(scenario=path) as sim, magcam.connect(sim.port) as cam:
        if stimulus["do"] == "load":  # capture within the back-off, before the rail retries
            assert cam.link.wait_state("power", lambda e: e["state"] == "retry_wait", 5)
        else:
            list(cam.events(duration=0.5))
        with pytest.raises(CommandRejected) as e:
            cam.capture_raw(64, 48)
        assert e.value.reason == "not_attached" and e.value.message == why
        # The power events say the same to a monitor: what holds the switch open, and the faults.
        power = cam.link.state["power"]
        held = {"temp": "over_temperature", "vbus": "under_voltage" if stimulus.get("mv", 0) < 5000 else "over_voltage"}
        assert power["blocked"] == held.get(stimulus["do"]), power
        assert power["faults"] == (1 if stimulus["do"] == "load" else 0), power


def test_sim_rejects_a_bad_scenario_clearly(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"t": 0, "do": "turn", "steps": 5, "rate": 100}\n{"t": 10, "do": "explode"}\n')
    out = subprocess.run([*MAGCAM, "sim", "--scenario", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "line 2" in out.stderr and "Traceback" not in out.stderr
    # A JSON true passed CPython's check (True is an int there) and failed in the firmware, after
    # the port was printed; a negative time was taken silently.
    for line in ('{"t": true, "do": "detach"}', '{"t": 0, "do": "turn", "steps": true, "rate": 5}',
                 '{"t": -100, "do": "attach"}'):
        path.write_text(line + "\n")
        out = subprocess.run([*MAGCAM, "sim", "--scenario", str(path)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and "line 1" in out.stderr and "Traceback" not in out.stderr, (line, out.stderr)
        assert out.stdout == "", line  # refused before any port was offered


def test_sim_option_errors_are_said_before_it_starts(tmp_path):
    """Once: --duration nan ran forever, -1 exited 0 at once; a --port-file in a missing folder
    printed the port, then a traceback; /dev/null was replaced by a file."""
    cases = [(["--port-file", str(tmp_path / "no" / "p")], "does not exist"),
             (["--port-file", "/dev/null"], "not a regular file"),
             (["--truth", "nosuchfile"], "--truth nosuchfile: neither a file nor JSON"),
             (["--truth", "[]"], "must be a dict")]
    for args, said in cases:
        out = subprocess.run([*MAGCAM, "sim", *args], capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and said in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
        assert out.stdout == "", args  # no port was offered
    assert not (tmp_path / "no").exists() and os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    for command in (["sim"], ["monitor", "--port", "/dev/null"]):  # usage errors, before any port is opened
        for value in ("nan", "-1", "0", "inf"):
            out = subprocess.run([*MAGCAM, *command, "--duration", value], capture_output=True, text=True, timeout=30)
            assert out.returncode == 2 and "seconds above 0" in out.stderr, (command, value, out.stderr)


def test_host_outlives_the_device():
    """Killing the simulator closes the link with a reason; nothing hangs."""
    sim = Simulator().start()
    try:
        cam = magcam.connect(sim.port)
        os.kill(sim.proc.pid, 9)
        sim.stop()
        deadline = time.monotonic() + 10
        while not cam.link.closed and time.monotonic() < deadline:
            try:
                cam.link.command(P.CMD_PING, timeout=0.2, retries=0)
            except magcam.LinkError:
                pass
        assert cam.link.closed and cam.link.close_reason
        cam.close()
    finally:
        sim.stop()


def test_detach_mid_frame_aborts_and_the_next_capture_is_clean(tmp_path):
    path = tmp_path / "yank.jsonl"
    path.write_text('{"t": 400, "do": "detach"}\n{"t": 700, "do": "attach"}\n')
    with Simulator(scenario=path) as sim, magcam.connect(sim.port) as cam:
        with pytest.raises(magcam.FrameError, match="aborted"):
            cam.capture_raw(4608, 3456)  # ~32 MB: still streaming when the module is pulled off
        list(cam.events(duration=0.8))  # re-attached by now
        frame = cam.capture_raw(320, 240)
        expected = sim.render({"w": 320, "h": 240, "exposure_us": frame.exposure_us, "gain": frame.analog_gain,
                               "frame_id": frame.frame_id, "lens": frame.lens_position})
        assert np.array_equal(frame.data, expected)


def test_restart_keeps_port_and_flash_and_the_host_can_reconnect(tmp_path):
    flash = tmp_path / "flash"
    with Simulator(flash=flash) as sim:
        port = sim.port
        assert json.loads((flash / "descriptor.json").read_text())["serial"] == "SIM-000001"
        with magcam.connect(port) as cam:
            first_session = cam.hello["session"]
            cam.capture_raw(64, 48)
        sim.restart()
        assert sim.port == port and sim.boots == 2
        with magcam.connect(port) as cam:
            assert cam.hello["session"] == first_session  # a fresh boot counts sessions from 1 again
            assert cam.capture_raw(64, 48).frame_id == 1


def test_monitor_exits_with_an_error_when_the_device_goes_away():
    sim = Simulator().start()
    try:
        mon = subprocess.Popen([*MAGCAM, "monitor", "--port", sim.port, "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        assert json.loads(mon.stdout.readline())["type"] == "hello"
    finally:
        sim.stop()  # unplugged
    out, err = mon.communicate(timeout=30)
    last = json.loads(out.splitlines()[-1])  # with --json the error is an event scripts can read
    assert mon.returncode == 1 and last["type"] == "error" and "link closed" in last["message"]
    assert "Traceback" not in err


def test_a_frame_that_came_too_late_never_answers_a_later_capture(shared_sim):
    """A timed-out capture's frame, arriving afterwards, used to be handed to the next capture
    or stream that got its id."""
    with magcam.connect(shared_sim.port) as cam:
        with pytest.raises(magcam.FrameError, match=r"not received within 0\.01 s"):
            cam.capture_raw(2048, 1536, timeout=0.01)
        time.sleep(1.0)  # it arrives now
        frame = cam.capture_raw(64, 48, exposure_us=5000)
        assert (frame.width, frame.height, frame.exposure_us) == (64, 48, 5000)
        cam.start_stream(64, 48, fps=20)
        try:
            assert all(cam.next_frame(3).width == 64 for _ in range(3))
        finally:
            cam.stop_stream()


def test_a_capture_right_after_an_interrupted_one_waits_for_the_module_instead_of_busy(shared_sim):
    """Ctrl-C in a REPL, or a capture that timed out, leaves the module sending that frame: the
    next capture was refused with "busy: capture in progress" until it had ended."""
    import _thread

    with magcam.connect(shared_sim.port) as cam:
        timer = threading.Timer(0.3, _thread.interrupt_main)  # as Ctrl-C in a REPL
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                cam.capture_raw(4096, 3072)
        finally:
            timer.cancel()
        frame = cam.capture_raw(64, 48, exposure_us=5000)
        assert (frame.width, frame.height, frame.exposure_us) == (64, 48, 5000)
        with pytest.raises(magcam.FrameError, match="not received within"):
            cam.capture_raw(4096, 3072, timeout=0.05)
        frame = cam.capture_raw(96, 64)
        assert (frame.width, frame.height) == (96, 64)
        assert not cam.link.has_abandoned()  # both big frames came, and were dropped


def test_events_start_with_the_queue_and_clear_events_drops_it(shared_sim):
    with magcam.connect(shared_sim.port) as cam:
        time.sleep(0.5)
        queued = cam.link.state.copy()
        assert "hello" in queued
        first = next(cam.events(timeout=1))
        assert first["type"] == "hello"  # none missed: the connect-time snapshot comes first
        dropped = cam.clear_events()
        assert dropped >= 2  # the rest of the snapshot (attach, power, ...) and telemetry since
        latest = max(ev.get("t", 0) for ev in cam.link.state.values())
        fresh = list(cam.events(duration=1.5))
        assert fresh, "telemetry keeps coming"
        assert all(ev["type"] != "hello" and ev.get("t", latest) >= latest for ev in fresh), fresh
        assert cam.lens_position is not None and cam.power is not None  # the latest values stay


def test_an_exception_in_a_burst_keeps_the_frames_already_taken(shared_sim):
    """An on_frame callback that raised (or Ctrl-C) threw the whole CaptureResult away."""
    def stop_at_1(i, frame):
        if i == 1:
            raise RuntimeError("my script's own error")

    with magcam.connect(shared_sim.port) as cam:
        with pytest.raises(RuntimeError, match="my script's own error") as caught:
            cam.capture_burst(4, 64, 48, on_frame=stop_at_1)
        result = caught.value.result
        assert [f.extra["index"] for f in result.frames] == [0, 1]
        assert all(f.data.shape == (48, 64) for f in result.frames)
        assert [lf.index for lf in result.lost] == [2, 3] and not result.complete
        assert result.lost[0].reason == "not taken: the series stopped (RuntimeError)"
        assert "2 frame(s) of the series were taken before this" in "\n".join(caught.value.__notes__)
        with pytest.raises(TypeError) as caught:  # a callback of the wrong arity fails at frame 0
            cam.capture_bracket([0, 1], 64, 48, on_frame=lambda frame: None)
        assert len(caught.value.result.frames) == 1 and [lf.index for lf in caught.value.result.lost] == [1]
        assert cam.capture_raw(64, 48).width == 64  # the camera goes on


def test_next_frame_gives_the_new_stream_not_the_old_one(shared_sim):
    with magcam.connect(shared_sim.port) as cam:
        cam.start_stream(64, 48, fps=30)
        time.sleep(0.5)  # frames nobody takes pile up
        cam.stop_stream()
        cam.start_stream(128, 96, fps=5)
        try:
            assert [cam.next_frame(3).width for _ in range(2)] == [128, 128]
        finally:
            cam.stop_stream()


def test_frames_of_before_a_reboot_never_answer_after_it(tmp_path):
    """Frame ids start over at every boot: an uncollected frame of the old boot used to answer
    the new boot's capture with that id (another size, another exposure)."""
    with Simulator(flash=tmp_path / "flash") as sim, magcam.connect(sim.port) as cam:
        for _ in range(3):
            cam.capture_raw(64, 48)
        with pytest.raises(magcam.FrameError):
            cam.capture_raw(2048, 1536, exposure_us=20000, timeout=0.01)  # id 4, arrives late
        time.sleep(1.0)
        sim.restart()
        deadline = time.monotonic() + 10
        while cam.link.sessions_resumed == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cam.link.sessions_resumed == 1
        frames = [cam.capture_raw(64, 48, exposure_us=5000) for _ in range(5)]
        assert [(f.width, f.height, f.exposure_us) for f in frames] == [(64, 48, 5000)] * 5
        assert [f.frame_id for f in frames] == [1, 2, 3, 4, 5]


def test_connect_takes_a_path_like_port_and_refuses_none_clearly(shared_sim):
    from pathlib import Path

    with magcam.connect(Path(shared_sim.port)) as cam:  # was pyserial's '"port" must be None or a string'
        assert cam.port == shared_sim.port
        with pytest.raises(magcam.FrameError) as caught:  # no stream running
            cam.next_frame(0.2)
        assert str(caught.value).startswith("no frame within 0.2 s") and caught.value.frame_id is None
    for bad in (None, "", 3):
        with pytest.raises(magcam.PortError, match=r"give the serial port as a path"):
            magcam.connect(bad)  # None was a serial.PortNotOpenError, not a LinkError


def test_a_closed_camera_stays_closed(shared_sim):
    """capture_burst on a closed camera used to take it for an unplug and reconnect."""
    with magcam.connect(shared_sim.port) as cam:
        pass
    for call in (lambda: cam.capture_burst(2, 64, 48), lambda: cam.capture_bracket([0, 1], 64, 48),
                 lambda: cam.capture_raw(64, 48)):
        with pytest.raises(magcam.LinkClosed, match="closed by host"):
            call()
    assert cam.link.closed
    with magcam.connect(shared_sim.port) as other:  # the port is free for another script
        assert other.capture_raw(64, 48).width == 64


def test_a_helpers_with_block_does_not_close_the_callers_camera(shared_sim):
    def helper(cam):
        with cam:  # a helper written to stand alone, handed an open camera
            return cam.set_lens_position(300)

    with magcam.connect(shared_sim.port) as cam:
        assert helper(cam) == 300
        assert cam.set_lens_position(400) == 400  # closed by the helper's block once: LinkClosed here
    assert cam.link.closed  # the outermost block closes it


@pytest.fixture(scope="module")
def shared_sim():
    with Simulator() as s:
        yield s


@pytest.mark.parametrize("call, message", [
    (lambda cam: cam.start_stream(64, 48, fps=float("nan")), r"fps must be 0\.1\.\.60 frames per second, not nan"),
    (lambda cam: cam.start_stream(64, 48, fps=float("inf")), r"fps must be 0\.1\.\.60"),
    (lambda cam: cam.start_stream(64, 48, fps=0), r"not 0 \(stop_stream\(\) stops\)"),
    (lambda cam: cam.start_stream(64, 48, fps=61), r"not 61"),
    (lambda cam: cam.start_stream(63, 48), r"width and height must be even: 63x48"),
    (lambda cam: cam.capture_raw(-5, 48), r"size out of range: -5x48 \(each side even and 16\.\.16384 px"),
    (lambda cam: cam.capture_raw(100000, 100000), r"size out of range: 100000x100000"),
    (lambda cam: cam.capture_raw(64, 48.5), r"height must be a whole number of pixels, not 48\.5"),
    (lambda cam: cam.capture_raw(64, 48, exposure_us=float("nan")), r"exposure_us must be a finite number, not nan"),
    (lambda cam: cam.capture_raw(64, 48, exposure_us=-1), r"exposure_us -1 is out of range \(1\.\.60000000\)"),
    (lambda cam: cam.capture_raw(64, 48, analog_gain=float("inf")), r"analog_gain must be a finite number"),
    (lambda cam: cam.capture_raw(64, 48, analog_gain=0), r"analog_gain 0 is out of range"),
    (lambda cam: cam.capture_burst(2, 64, 48, exposure_us=float("nan")), r"exposure_us must be a finite number"),
    # Walk-through findings: 0 meant "default size", the rest were OverflowError / TypeError /
    # struct errors, or a device NAK for a gain float32 makes 0.
    (lambda cam: cam.capture_raw(0, 0), r"size out of range: 0x0"),
    (lambda cam: cam.capture_raw(64, 48, analog_gain=1e-50), r"analog_gain 1e-50 is out of range"),
    (lambda cam: cam.capture_burst(0, 64, 48), r"a burst is 1 or more frames, not 0"),
    (lambda cam: cam.capture_burst(2.0, 64, 48), r"a burst is 1 or more frames, not 2\.0"),
    (lambda cam: cam.capture_burst(2, 64, 48, retries=-1), r"retries must be a whole number >= 0"),
    # A frame was exposed before the TypeError "'str' object is not callable".
    (lambda cam: cam.capture_burst(2, 64, 48, on_frame="save"), r"on_frame must be a function on_frame\(index, frame\)"),
    (lambda cam: cam.capture_bracket([0, float("nan")], 64, 48), r"each EV must be a number within -30\.\.30, not nan"),
    (lambda cam: cam.capture_bracket([2000], 64, 48), r"not 2000"),
    (lambda cam: cam.capture_bracket("-2,0,2", 64, 48), r"evs must be a non-empty sequence"),
    (lambda cam: cam.capture_bracket([], 64, 48), r"evs must be a non-empty sequence"),
    (lambda cam: cam.capture_bracket([0], 64, 48, exposure_us=0), r"exposure_us 0 is out of range"),
    (lambda cam: cam.set_lens_position(10**12), r"lens position must be a whole number of steps"),
    (lambda cam: cam.set_lens_position(3.7), r"not 3\.7"),
    (lambda cam: cam.write_descriptor({**cam.descriptor, "pad": "x" * 200000}),
     r"the descriptor is \d+ bytes as JSON; the module holds at most 4104"),
    (lambda cam: cam.write_descriptor({**cam.descriptor, "x": float("nan")}), r"cannot be written as JSON"),
])
def test_bad_capture_and_stream_arguments_are_value_errors_before_anything_is_sent(shared_sim, call, message):
    """They used to be struct errors ("ushort format requires ...") or device NAKs."""
    with magcam.connect(shared_sim.port) as cam:
        sent = cam.link.frames_out
        with pytest.raises(ValueError, match=message):
            call(cam)
        assert cam.link.frames_out == sent
        assert cam.capture_raw(64, 48).width == 64  # and the camera is still fine
