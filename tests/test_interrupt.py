"""Stopping a long command: Ctrl-C, `kill` (SIGTERM) and a closed terminal (SIGHUP) all leave
only complete files behind, say so in one line, and exit 130 / 128 + the signal's number.

Each test runs the real `magcam` command in its own process and signals it while it works
(after a progress or frame event on its --json stdout), as a shell, `timeout` or a service
manager would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import DESCRIPTOR_PATH
from magcam.dng import write_dng
from magcam.frame import RawFrame
from magcam.sim import Simulator

MAGCAM = [sys.executable, "-m", "magcam.cli"]
DESC = json.loads(DESCRIPTOR_PATH.read_text())


def exit_code(sig: signal.Signals) -> int:
    return 130 if sig == signal.SIGINT else 128 + sig


def signal_when(args: list[str], ready, sig: signal.Signals, timeout: float = 120.0):
    """Run magcam with ``args``; send ``sig`` once ``ready(event)`` is true for a JSON line it
    prints. Returns (exit code, the events before and after, stderr)."""
    proc = subprocess.Popen([*MAGCAM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events, sent = [], False
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            events.append(json.loads(line))
            if not sent and ready(events[-1]):
                proc.send_signal(sig)
                sent = True
            assert time.monotonic() < deadline, "the command ran past the test's timeout"
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sent, f"the command finished before the moment to signal it: {events[-3:]}"
    return code, events, proc.stderr.read()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix in (".part", ".staged"))


def noise_dng(path: Path, w: int, h: int, seed: int) -> Path:
    data = np.random.default_rng(seed).integers(300, 3800, (h, w), dtype=np.uint16)
    return write_dng(path, RawFrame(data=data, frame_id=seed, black_level=256, white_level=4095), DESC)


@pytest.fixture(scope="module")
def two_dngs(tmp_path_factory):
    d = tmp_path_factory.mktemp("raws")
    return [noise_dng(d / f"{name}.dng", 3000, 2000, seed) for seed, name in enumerate(("first", "second"))]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_process_stopped_mid_batch_keeps_the_finished_file_and_nothing_else(two_dngs, tmp_path, sig):
    out = tmp_path / "out"
    second = two_dngs[1].name
    code, events, err = signal_when(
        ["process", *map(str, two_dngs), "-o", f"{out}/", "--format", "tiff", "--jobs", "1", "--json"],
        lambda ev: ev["type"] == "progress" and second in ev["stage"], sig)
    assert code == exit_code(sig), (code, err)
    said = [ev["message"] for ev in events if ev["type"] == "error"]
    assert said == ["interrupted at %s; 1 file(s) written, each complete" % two_dngs[1]], (said, err)
    assert sorted(p.name for p in out.iterdir()) == ["first.tif"], leftovers(out)
    assert tifffile.imread(out / "first.tif").shape == (2000, 3000, 3)


def test_hdr_stopped_by_sigterm_writes_nothing(tmp_path):
    from test_hdr import EVS, radiance, shoot

    lum = radiance(1200, 1600)
    raws = [write_dng(tmp_path / f"b{i}.dng", shoot(lum, ev, i).frame, DESC) for i, ev in enumerate(EVS)]
    out = tmp_path / "hdr"
    out.mkdir()
    code, events, err = signal_when(["hdr", *map(str, raws), "-o", str(out / "merged"), "--json"],
                                    lambda ev: ev["type"] == "progress", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, (code, err)
    assert [ev["message"] for ev in events if ev["type"] == "error"] == ["interrupted; nothing written"]
    assert list(out.iterdir()) == []


def test_capture_stopped_by_sigterm_keeps_whole_frames_only(tmp_path):
    out = tmp_path / "shots"
    with Simulator() as sim:
        code, events, err = signal_when(
            ["capture", "--port", sim.port, "--out", str(out), "--burst", "8", "--width", "2000", "--height", "1500",
             "--json"], lambda ev: ev["type"] == "frame", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, (code, err)
    frames = [ev for ev in events if ev["type"] == "frame"]
    said = [ev["message"] for ev in events if ev["type"] == "error"]
    assert said == [f"interrupted; {len(frames)} frame(s) written, each complete"], (said, err)
    assert len(frames) < 8
    assert leftovers(out) == []
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(n for ev in frames for n in (Path(ev["path"]).name, Path(ev["sidecar"]).name))


def test_process_stopped_before_its_first_file_leaves_no_new_folder(two_dngs, tmp_path):
    out = tmp_path / "new" / "deeper"
    code, events, err = signal_when(
        ["process", *map(str, two_dngs), "-o", f"{out}/", "--jobs", "1", "--json"],
        lambda ev: ev["type"] == "progress", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, (code, err)
    assert list(tmp_path.iterdir()) == []  # both folders it made are gone again


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_monitor_and_sim_say_how_they_were_stopped(tmp_path, sig):
    """Ctrl-C is how a monitor or simulator is ended (0); kill and a closed terminal exit 128 +
    the signal as for every command (both exited 0, so a script could not tell)."""
    port_file = tmp_path / "port"
    sim = subprocess.Popen([*MAGCAM, "sim", "--port-file", str(port_file)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        port = sim.stdout.readline().strip()
        code, events, err = signal_when(["monitor", "--port", port, "--json"],
                                        lambda ev: ev["type"] == "hello", sig, timeout=60)
        assert code == (0 if sig == signal.SIGINT else 128 + sig), (code, err)
        assert "Traceback" not in err
        sim.send_signal(sig)
        assert sim.wait(timeout=30) == (0 if sig == signal.SIGINT else 128 + sig)
        assert not port_file.exists()  # removed on the way out
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
