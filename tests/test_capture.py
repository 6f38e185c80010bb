"""`magcam capture`: DNG + JSON sidecar pairs from the simulator over a real pty, file name
templates, progress output in a pipe and on a terminal, lost frames, and a full disk."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import rawpy
import tifffile
from jsonschema import Draft202012Validator

import magcam
from conftest import REPO, mount_tmpfs, tool
from magcam import sidecar
from magcam.capture import (
    DEFAULT_TEMPLATE, Plan, TemplateError, camera_name, check_template, expand_filename, format_ev, save_capture,
)
from magcam.frame import RawFrame
from magcam.sim import Simulator

MAGCAM = [sys.executable, "-m", "magcam.cli"]
W, H = 256, 192  # small, quick frames every DNG reader still opens (LibRaw wants >= 22 px a side)
SIZE = ["--width", str(W), "--height", str(H)]
SCHEMA = json.loads((REPO / "docs" / "sidecar.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
ANSI = re.compile(r"\x1b[\[\]()]")
WHEN = datetime(2025, 3, 7, 14, 5, 9)


@pytest.fixture(scope="module")
def sim():
    with Simulator() as s:
        yield s


@pytest.fixture(scope="module")
def shot(sim):
    """One real frame, the descriptor and the telemetry as the module sent them."""
    with magcam.connect(sim.port) as cam:
        frame = cam.capture_raw(64, 48)
        telemetry = sidecar.telemetry(cam, mode="single", index=0, count=1, base_exposure_us=10000,
                                      analog_gain=1.0)
        return frame, cam.descriptor, telemetry


def run_cli(*args, timeout=120, **kw):
    return subprocess.run([*MAGCAM, *args], capture_output=True, text=True, timeout=timeout, **kw)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def listing(directory: Path) -> list[str]:
    """Every entry, hidden ones included, recursively (staging files would show here)."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def exposure_time(dng: Path) -> Fraction:
    with tifffile.TiffFile(dng) as tif:
        num, den = tif.pages[0].tags[33434].value
    return Fraction(num, den)


def check_pair(dng: Path, side: Path) -> dict:
    """The sidecar validates, describes this DNG (name, size, SHA-256, header) and the DNG opens."""
    assert side.parent == dng.parent and side.name == dng.with_suffix(".json").name
    doc = json.loads(side.read_text())
    errors = sorted(VALIDATOR.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    data = dng.read_bytes()
    assert doc["dng"] == {"file": dng.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    datetime.fromisoformat(doc["host"]["time"])  # ISO 8601, as the schema's pattern says
    assert doc["host"]["magcam_version"] == magcam.__version__
    frame = doc["frame"]
    assert (frame["width"], frame["height"]) == (W, H)
    with rawpy.imread(str(dng)) as raw:
        assert raw.raw_image.shape == (H, W)
        assert raw.black_level_per_channel == [frame["black_level"]] * 4 and raw.white_level == frame["white_level"]
    assert exposure_time(dng) == Fraction(frame["exposure_us"], 1_000_000)
    with tifffile.TiffFile(dng) as tif:
        meta = json.loads(tif.pages[0].description)["magcam"]
    assert meta["frame_id"] == frame["frame_id"] and meta["lens_position"] == frame["lens_position"]
    # The events of the session are there, as `magcam monitor --json` prints them.
    for kind in ("encoder", "attach", "power", "thermal"):
        assert doc["events"][kind]["type"] == kind
    assert doc["events"]["attach"]["state"] == "attached" and doc["events"]["power"]["state"] == "on"
    assert doc["module"]["serial"] == "SIM-000001" and doc["module"]["protocol_version"] == magcam.PROTOCOL_VERSION
    return doc


def dcraw_and_exiftool(dng: Path) -> tuple[str, dict]:
    info = subprocess.run([tool("dcraw"), "-i", "-v", str(dng)], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert "magcam" in info.stdout and f"{W} x {H}" in info.stdout
    out = subprocess.run([tool("exiftool"), "-j", str(dng)], capture_output=True, text=True, timeout=60)
    exif = json.loads(out.stdout)[0]
    assert exif["DNGVersion"] == "1.4.0.0" and exif["Make"] == "magcam" and exif["CameraSerialNumber"] == "SIM-000001"
    return info.stdout, exif


def dcraw_shutter(text: str) -> Fraction:
    value = re.search(r"Shutter: (\S+) sec", text).group(1)  # "1/100.0" or "2.0"
    num, _, den = value.partition("/")
    return (Fraction(num) / Fraction(den or "1")).limit_denominator(1_000_000)


# ---- capture modes, end to end through the CLI ------------------------------------------------------
def test_single_capture_in_a_pipe_prints_plain_lines(sim, tmp_path):
    out = run_cli("capture", "--port", sim.port, "--out", str(tmp_path), *SIZE, "--exposure-us", "8000")
    assert out.returncode == 0, out.stderr
    assert not ANSI.search(out.stdout) and not ANSI.search(out.stderr) and "━" not in out.stdout
    lines = out.stdout.splitlines()
    assert lines[0].startswith("capturing 1 frame, 256x192, 8000 us")
    assert re.fullmatch(r"frame 1/1: .+\.dng \+ .+\.json", lines[1])
    assert lines[-1] == "done: 1 of 1 frame(s) written, 0 lost"
    files = listing(tmp_path)
    assert len(files) == 2  # the pair and nothing else: no staging or temp files
    dng = tmp_path / next(f for f in files if f.endswith(".dng"))
    assert re.fullmatch(r"\d{8}-\d{6}-1\.dng", dng.name)  # the default %Y%m%d-%H%M%S-%n.dng
    doc = check_pair(dng, dng.with_suffix(".json"))
    assert doc["capture"] == {"mode": "single", "index": 0, "number": 1, "count": 1, "ev": None,
                              "base_exposure_us": 8000, "analog_gain": 1.0}
    assert doc["frame"]["exposure_us"] == 8000
    info, exif = dcraw_and_exiftool(dng)
    assert dcraw_shutter(info) == Fraction(8, 1000)
    assert Fraction(str(exif["ExposureTime"])) == Fraction(8, 1000)


def test_burst_of_three_with_json_lines(sim, tmp_path):
    out = run_cli("capture", "--port", sim.port, "--out", str(tmp_path), *SIZE, "--burst", "3", "--gain", "2",
                  "--filename", "burst/%Y%m%d-%03n.dng", "--json")
    assert out.returncode == 0, out.stderr
    events = json_lines(out.stdout)  # every line is one JSON object
    assert [e["type"] for e in events] == ["started", "frame", "frame", "frame", "done"]
    assert events[0]["mode"] == "burst" and events[0]["count"] == 3
    frames = events[1:4]
    assert [e["index"] for e in frames] == [0, 1, 2]
    for i, e in enumerate(frames, 1):
        assert re.fullmatch(rf"\d{{8}}-{i:03d}\.dng", Path(e["path"]).name)
    assert events[-1] == {"type": "done", "requested": 3, "written": 3, "lost": 0, "reconnects": 0, "reattaches": 0,
                          "complete": True}
    ids = []
    for e in frames:
        dng, side = Path(e["path"]), Path(e["sidecar"])
        assert dng.parent == tmp_path / "burst"
        doc = check_pair(dng, side)
        assert doc["capture"]["mode"] == "burst" and doc["capture"]["index"] == e["index"]
        assert doc["capture"]["count"] == 3 and doc["frame"]["analog_gain"] == 2.0
        ids.append(doc["frame"]["frame_id"])
    assert len(set(ids)) == 3 and ids == sorted(ids)
    assert len(listing(tmp_path / "burst")) == 6
    _, exif = dcraw_and_exiftool(Path(frames[1]["path"]))
    assert exif["ISO"] == 200


@pytest.mark.parametrize("json_mode", [True, False])
def test_a_reader_that_leaves_stops_the_capture_quietly(sim, tmp_path, json_mode):
    """``capture ... | head -1``: the reader goes away, so the capture stops as cat would, with
    no "cannot write: Broken pipe" error (the disk is fine), and each frame written is whole."""
    proc = subprocess.Popen([*MAGCAM, "capture", "--port", sim.port, "--out", str(tmp_path), *SIZE,
                             "--burst", "20", *(["--json"] if json_mode else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    proc.stdout.close()  # as head does after its line
    _, err = proc.communicate(timeout=120)
    assert first.strip() and proc.returncode == 1
    assert "error" not in err and "Traceback" not in err, err
    names = listing(tmp_path)
    dngs = [n for n in names if n.endswith(".dng")]
    assert len(dngs) < 20 and names == sorted(dngs + [n[:-4] + ".json" for n in dngs])
    for name in dngs:
        check_pair(tmp_path / name, tmp_path / (name[:-4] + ".json"))


def test_bracket_exposures_follow_the_evs(sim, tmp_path):
    out = run_cli("capture", "--port", sim.port, "--out", str(tmp_path), *SIZE, "--bracket", "-2,0,2",
                  "--exposure-us", "10000", "--filename", "brk-%n_%E.dng", "--json")
    assert out.returncode == 0, out.stderr
    frames = [e for e in json_lines(out.stdout) if e["type"] == "frame"]
    assert [Path(e["path"]).name for e in frames] == ["brk-1_-2.dng", "brk-2_+0.dng", "brk-3_+2.dng"]
    ratios = []
    for e in frames:
        dng = Path(e["path"])
        doc = check_pair(dng, Path(e["sidecar"]))
        assert doc["capture"]["mode"] == "bracket" and doc["capture"]["ev"] == e["ev"]
        assert doc["capture"]["base_exposure_us"] == 10000
        ratios.append(Fraction(doc["frame"]["exposure_us"], 10000))
        assert exposure_time(dng) == Fraction(doc["frame"]["exposure_us"], 1_000_000)
    # exposure = base * 2**ev (camera.capture_bracket): EV -2, 0, +2 -> 0.25x, 1x, 4x.
    assert ratios == [Fraction(1, 4), 1, 4]
    info, _ = dcraw_and_exiftool(Path(frames[2]["path"]))
    assert dcraw_shutter(info) == Fraction(40, 1000)
    exif = json.loads(subprocess.run([tool("exiftool"), "-j", *(e["path"] for e in frames)], capture_output=True,
                                     text=True, timeout=60).stdout)
    assert [Fraction(str(x["ExposureTime"])) for x in exif] == [Fraction(25, 10000), Fraction(1, 100), Fraction(4, 100)]


def test_progress_bar_on_a_terminal(sim, tmp_path):
    """Under a pty (stdout a terminal) the rich progress bar is drawn: ANSI control sequences and
    the bar's characters; the frame lines are there too."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM", "COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([*MAGCAM, "capture", "--port", sim.port, "--out", str(tmp_path), *SIZE, "--burst", "2"],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    raw = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not chunk:
                    break
                raw += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    text = raw.decode("utf-8", "replace")
    assert "\x1b[" in text  # cursor and colour control: rich is drawing
    assert "━" in text  # the bar itself
    assert "2/2" in text and "frame 1/2:" in text and "frame 2/2:" in text
    assert len([f for f in listing(tmp_path) if f.endswith(".dng")]) == 2


def test_lost_frames_are_reported_and_exit_non_zero(tmp_path):
    """The virtual sensor fails every EV +2 exposure: the firmware ends those frames with
    sensor_error, the camera retries, then lists the frame as lost; the others are written."""
    with Simulator() as s:
        render = s.render

        def failing(req):
            if int(req["exposure_us"]) == 40000:
                raise ValueError("simulated sensor failure")
            return render(req)

        s.render = failing
        out = run_cli("capture", "--port", s.port, "--out", str(tmp_path / "j"), *SIZE, "--bracket", "-2,0,2",
                      "--json")
        plain = run_cli("capture", "--port", s.port, "--out", str(tmp_path / "p"), *SIZE, "--bracket", "0,2")
    assert out.returncode == 3, out.stderr
    events = json_lines(out.stdout)
    assert [e["type"] for e in events] == ["started", "frame", "frame", "lost", "done"]
    lost = events[3]
    assert lost["index"] == 2 and "sensor_error" in lost["reason"]
    assert events[-1]["written"] == 2 and events[-1]["lost"] == 1 and events[-1]["complete"] is False
    for e in events[1:3]:
        check_pair(Path(e["path"]), Path(e["sidecar"]))
    assert len(listing(tmp_path / "j")) == 4
    assert plain.returncode == 3 and "lost 2/2: device ended the frame: sensor_error" in plain.stdout
    assert "error: 1 of 2 frame(s) lost" in plain.stderr and "Traceback" not in plain.stderr


# ---- errors -----------------------------------------------------------------------------------------
def test_a_module_too_hot_is_an_error_that_says_when_it_can_go_on(tmp_path):
    """Thermally suspended, it once gave "lost 1/1: device busy: streaming suspended: too hot"
    (exit 3, every frame retried as if busy) and left the empty --out folder."""
    scenario = tmp_path / "hot.jsonl"
    scenario.write_text('{"t": 0, "do": "temp", "c": 67}\n')
    with Simulator(scenario=scenario) as s:
        with magcam.connect(s.port) as cam:
            assert cam.link.wait_state("thermal", lambda e: e["state"] == "suspended", 5)
        out = run_cli("capture", "--port", s.port, "--out", str(tmp_path / "new" / "shots"), *SIZE, "--burst", "3")
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "too_hot: captures suspended at 67.0 C until the module cools below 62.0 C" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "lost" not in out.stdout
    assert not (tmp_path / "new").exists()  # the folders it made for nothing are gone again


def test_a_burst_that_gets_too_hot_keeps_its_frames_and_loses_the_rest_at_once(tmp_path):
    scenario = tmp_path / "warming.jsonl"
    scenario.write_text('{"t": 1500, "do": "temp", "c": 67}\n')
    with Simulator(scenario=scenario) as s, magcam.connect(s.port) as cam:

        def wait_for_the_heat(i, frame):
            if i == 0:
                assert cam.link.wait_state("thermal", lambda e: e["state"] == "suspended", 10)

        result = cam.capture_burst(4, 64, 48, on_frame=wait_for_the_heat)
    assert len(result.frames) == 1 and [lf.index for lf in result.lost] == [1, 2, 3]
    # Not retried as "device busy" three times per frame: the refusal's reason, for each.
    assert all("too hot" in lf.reason and "cools below 62.0 C" in lf.reason for lf in result.lost), result.lost


def test_bad_port_is_a_clear_error(tmp_path):
    out = run_cli("capture", "--port", "/dev/nonexistent-magcam", "--out", str(tmp_path / "o"))
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and "/dev/nonexistent-magcam" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    js = run_cli("capture", "--port", "/dev/nonexistent-magcam", "--out", str(tmp_path / "o"), "--json")
    assert js.returncode == 1 and "Traceback" not in js.stderr
    (err,) = json_lines(js.stdout)
    assert err["type"] == "error" and "/dev/nonexistent-magcam" in err["message"]


@pytest.mark.parametrize("args, message", [
    (["--filename", "../x-%n.dng"], "escapes the output directory"),
    (["--filename", "/tmp/x-%n.dng"], "outside the output directory"),
    (["--filename", "same.dng", "--burst", "2"], "names frames 1 and 2 of this run alike"),
    (["--filename", "x-%q.dng"], "unknown conversion %q"),
    (["--filename", "x-%n.tif"], "must end in .dng"),
    (["--burst", "2", "--bracket", "0,1"], "cannot be combined"),
    (["--bracket", "-2,,2"], "comma-separated list of EVs"),
    (["--width", "255"], "width must be even"),
    (["--width", "16384", "--height", "16384"], "a 16384x16384 frame is 512 MiB, over the 256 MiB"),
])
def test_usage_errors_exit_2_before_connecting(tmp_path, args, message):
    # The port does not exist: these must be refused before any attempt to open it.
    out = run_cli("capture", "--port", "/dev/nonexistent-magcam", "--out", str(tmp_path / "o"), *args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("make, template, message", [
    (lambda o: (o / "link").symlink_to("/tmp"), "link/%n.dng", "'link/1.dng' leads outside"),
    (lambda o: (o / "sub").write_text("a file"), "sub/%n.dng", "needs " + "{o}/sub to be a folder, but it is a file"),
])
def test_template_folders_on_disk_are_checked_before_connecting(tmp_path, make, template, message):
    """They used to be found when the first frame had been exposed (exit 1, a frame spent)."""
    o = tmp_path / "o"
    o.mkdir()
    make(o)
    out = run_cli("capture", "--port", "/dev/nonexistent-magcam", "--out", str(o), "--filename", template)
    assert out.returncode == 2, out.stderr
    assert message.format(o=o) in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("out_dir", ["/dev/full", "/dev/null"])
def test_an_out_that_is_a_device_is_a_usage_error_before_connecting(out_dir):
    out = run_cli("capture", "--port", "/dev/nonexistent-magcam", "--out", out_dir)
    assert out.returncode == 2, out.stderr
    assert f"{out_dir} is not a directory" in out.stderr and "Traceback" not in out.stderr


def test_full_disk_leaves_no_partial_file(sim, tmp_path, monkeypatch, record_property):
    """A genuinely full filesystem: a 256 KiB tmpfs holds two 256x192 pairs (25 + 1 pages each) and
    not the third DNG. If mounting is refused, writes are made to fail with ENOSPC instead."""
    disk = tmp_path / "disk"
    refused = mount_tmpfs(disk, "256k")
    if refused is None:
        record_property("enospc", "tmpfs")
        print("ENOSPC: a real 256 KiB tmpfs")
        try:
            assert os.statvfs(disk).f_blocks * os.statvfs(disk).f_frsize == 256 * 1024
            out = run_cli("capture", "--port", sim.port, "--out", str(disk), *SIZE, "--burst", "5",
                          "--filename", "full-%n.dng")
            js = None
            if out.returncode == 1:  # the disk is still full: --json reports it as an error object
                js = run_cli("capture", "--port", sim.port, "--out", str(disk), *SIZE, "--filename", "more-%n.dng",
                             "--json")
            files = listing(disk)
            pairs = [(disk / f, (disk / f).with_suffix(".json")) for f in files if f.endswith(".dng")]
            docs = [check_pair(d, s) for d, s in pairs]
        finally:
            subprocess.run(["umount", str(disk)], check=False, timeout=30)
        assert js is not None and js.returncode == 1
        assert json_lines(js.stdout)[-1]["type"] == "error" and "disk full" in json_lines(js.stdout)[-1]["message"]
    else:
        record_property("enospc", f"injected (mount refused: {refused})")
        print(f"ENOSPC: injected, mounting was refused: {refused}")
        out, files, docs = _injected_enospc(sim, disk, monkeypatch)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "disk full (" in out.stderr and "full-3.dng): No space left on device" in out.stderr
    assert "no partial file was left" in out.stderr and "Traceback" not in out.stderr
    assert "frame 1/5:" in out.stdout and "frame 2/5:" in out.stdout and "frame 3/5:" not in out.stdout
    # Exactly the two complete pairs: no partial DNG, no staging or temp file, no lone sidecar.
    assert files == ["full-1.dng", "full-1.json", "full-2.dng", "full-2.json"], files
    assert [d["capture"]["index"] for d in docs] == [0, 1]


def _next_frame_id(sim) -> int:
    with magcam.connect(sim.port) as cam:
        return cam.capture_raw(64, 48).frame_id


def test_capture_dng_keeps_existing_files_and_wants_a_dng_name(sim, tmp_path):
    """The API replaced an existing file (a loop reusing "shot.dng" lost every shot but the last)
    and wrote DNG data under any name ("x.jpg"). Both are refused before the exposure (the frame
    ids on either side are consecutive); overwrite=True replaces, atomically."""
    old = tmp_path / "shot.dng"
    old.write_bytes(b"an earlier shot")
    link = tmp_path / "link.dng"
    link.symlink_to(tmp_path / "elsewhere.dng")
    before = _next_frame_id(sim)
    with magcam.connect(sim.port) as cam:
        with pytest.raises(FileExistsError, match=r"exists \(overwrite=True replaces it\); nothing was captured"):
            cam.capture_dng(old, width=64, height=48)
        with pytest.raises(FileExistsError):
            cam.capture_dng(link, width=64, height=48)  # a dangling link is a name in use too
        for name in ("x.jpg", "x", "x.dng.tmp"):
            with pytest.raises(ValueError, match=r"must end in \.dng; nothing was captured"):
                cam.capture_dng(tmp_path / name, width=64, height=48)
    assert _next_frame_id(sim) == before + 1
    assert old.read_bytes() == b"an earlier shot" and not (tmp_path / "elsewhere.dng").exists()
    with magcam.connect(sim.port) as cam:
        new = cam.capture_dng(tmp_path / "new.DNG", width=64, height=48)
        replaced = cam.capture_dng(old, width=64, height=48, overwrite=True)
    assert new == tmp_path / "new.DNG" and replaced == old
    for path in (new, old):
        with rawpy.imread(str(path)) as raw:
            assert raw.raw_image.shape == (48, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.dng", "new.DNG", "shot.dng"]  # nothing staged left


def test_an_unwritable_folder_is_refused_before_a_frame_is_taken(sim, tmp_path, record_property):
    """A read-only mount (or, not as root, a read-only folder): the error names the folder, not
    a hidden staging file, and comes before the exposure. The frame ids on either side of the
    refused commands are consecutive: the module took no frame for them."""
    folder = tmp_path / "ro"
    refused = mount_tmpfs(folder, "64k")
    if refused is None:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, timeout=30)
        record_property("read_only", "tmpfs mounted ro")
    else:
        if os.geteuid() == 0:
            pytest.skip(f"root without a read-only mount cannot make an unwritable folder: {refused}")
        folder.chmod(0o555)
        record_property("read_only", "mode 0555")
    try:
        before = _next_frame_id(sim)
        out = run_cli("capture", "--port", sim.port, "--out", str(folder), *SIZE)
        api_error = missing_error = None
        with magcam.connect(sim.port) as cam:
            try:
                cam.capture_dng(folder / "shot.dng", width=64, height=48)
            except OSError as e:
                api_error = str(e)
            try:
                cam.capture_dng(tmp_path / "missing" / "shot.dng", width=64, height=48)
            except OSError as e:
                missing_error = str(e)
        after = _next_frame_id(sim)
    finally:
        if refused is None:
            subprocess.run(["umount", str(folder)], check=False, timeout=30)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"cannot write ({folder})" in out.stderr and ".staged" not in out.stderr, out.stderr
    assert "capturing" not in out.stdout
    assert api_error and f"directory {folder} is not writable; nothing was captured" in api_error
    assert f"directory {tmp_path / 'missing'} does not exist; nothing was captured" in missing_error
    assert after == before + 1


def _injected_enospc(sim, disk: Path, monkeypatch):
    """Fallback when tmpfs cannot be mounted: run the command in-process with file writes
    failing with ENOSPC after two frames' worth of bytes (part of the third DNG is written)."""
    from click.testing import CliRunner

    import magcam.atomic
    from magcam.cli import main

    budget = {"left": 2 * (99_200 + 8192) + 40_000}
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            n = len(memoryview(data).cast("B"))
            if n > budget["left"]:
                self._f.write(memoryview(data).cast("B")[: budget["left"]])
                budget["left"] = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            budget["left"] -= n
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

    monkeypatch.setattr(magcam.atomic.os, "fdopen", lambda *a, **k: FullDisk(real_fdopen(*a, **k)))
    disk.mkdir(exist_ok=True)
    result = CliRunner().invoke(main, ["capture", "--port", sim.port, "--out", str(disk), *SIZE, "--burst", "5",
                                       "--filename", "full-%n.dng"])
    monkeypatch.undo()
    out = subprocess.CompletedProcess([], result.exit_code, result.stdout, result.stderr)
    files = listing(disk)
    docs = [check_pair(disk / f, (disk / f).with_suffix(".json")) for f in files if f.endswith(".dng")]
    return out, files, docs


# ---- file name templates ----------------------------------------------------------------------------
def fake(frame_id=7, ev=None) -> RawFrame:
    return RawFrame(data=np.zeros((2, 2), np.uint16), frame_id=frame_id, extra={} if ev is None else {"ev": ev})


def expand(template, n=7, frame=None):
    return expand_filename(template, when=WHEN, n=n, frame=frame or fake(), descriptor={})


@pytest.mark.parametrize("kw, said", [
    (dict(width="1024"), "width must be a whole number, got '1024'"),  # was a TypeError from a comparison
    (dict(mode="burst", count=2.5), "count must be a whole number, got 2.5"),
    (dict(exposure_us=float("nan")), "exposure_us must be a finite number"),
    (dict(analog_gain=True), "analog_gain must be a finite number"),
    (dict(mode="bracket", evs="-2,0,2"), "evs must be a non-empty sequence of numbers"),  # was split into characters
    (dict(mode="bracket", evs=[0, "2"]), "each EV must be a number within -30..30, not '2'"),
    (dict(mode="bracket", evs=[40]), "each EV must be a number within -30..30, not 40"),
    (dict(width=1023), "width must be even and within 16..16384, got 1023"),
])
def test_plan_refuses_what_a_capture_cannot_use(kw, said):
    with pytest.raises(ValueError) as e:
        Plan(**kw)
    assert said in str(e.value)


def test_template_date_time_and_number():
    assert expand(DEFAULT_TEMPLATE) == "20250307-140509-7.dng"
    assert expand("%y-%m-%d_%H.%M.%S_%j.dng") == "25-03-07_14.05.09_066.dng"
    assert expand("%a_%A_%b_%B.dng") == WHEN.strftime("%a_%A_%b_%B") + ".dng"
    assert expand("%I.dng") == "02.dng"
    assert expand("[%k][%l].dng") == "[14][ 2].dng"  # date(1): space padded hours
    assert expand("x%n.dng", n=1) == "x1.dng"
    assert expand("x%3n.dng", n=7) == "x007.dng" and expand("x%03n.dng", n=7) == "x007.dng"
    assert expand("x%03n.dng", n=12345) == "x12345.dng"  # padding is a minimum width
    assert expand("x%1n.dng", n=42) == "x42.dng"
    assert expand("x%099n.dng", n=1) == "x" + "1".zfill(20) + ".dng"  # gphoto2 caps the width at 20
    assert expand("100%%-%n.dng") == "100%-7.dng"


def test_template_camera_name_conversions():
    frame = fake(frame_id=42)
    assert camera_name(frame) == "MAGC0042.DNG"
    assert expand("%f.%C", frame=frame) == "MAGC0042.DNG"
    assert expand("%:", frame=frame) == "magc0042.dng"  # gphoto2: the whole name, lower case
    assert expand("%f-%n.dng", frame=fake(frame_id=123456)) == "MAGC123456-7.dng"


def test_template_bracket_ev():
    assert [format_ev(ev) for ev in (-2, 0, 2, 0.5, -1 / 3, 1.25)] == ["-2", "+0", "+2", "+0.5", "-0.33", "+1.25"]
    assert expand("b%n_%E.dng", n=1, frame=fake(ev=-2.0)) == "b1_-2.dng"
    with pytest.raises(TemplateError, match="only available with --bracket"):
        expand("%E.dng")


def test_template_subdirectories_stay_inside():
    assert expand("%Y/%m/%d/%n.dng") == "2025/03/07/7.dng"
    assert expand("./a//b/%n.dng") == "a/b/7.dng"  # normalised
    for bad, why in [("/abs/%n.dng", "outside the output directory"), ("../%n.dng", "escapes"),
                     ("a/../../%n.dng", "escapes"), ("a/..", "escapes"), ("%n.dng/", "directory"),
                     ("x\\y%n.dng", "outside"), ("x\0%n.dng", "NUL")]:
        with pytest.raises(TemplateError, match=why):
            expand(bad)


@pytest.mark.parametrize("template, why", [
    ("", "empty"), ("x%", "lone '%'"), ("x%3", "ends inside a conversion"), ("x%q.dng", "unknown conversion %q"),
    ("x%F.dng", "no folders"), ("x%0n.dng", "needs a width"), ("x%3d.dng", "only possible with %n"),
    ("x%03Y.dng", "only possible with %n"), ("x-%n.jpg", "must end in .dng"), ("%n", "must end in .dng"),
    (".dng", "empty file name"),
])
def test_template_errors_are_clear(template, why):
    with pytest.raises(TemplateError, match=re.escape(why)):
        expand(template)


def test_template_duplicates_are_refused_before_capturing():
    check_template(DEFAULT_TEMPLATE, count=100)
    check_template("x.dng", count=1)
    check_template("%f.dng", count=5)  # frame ids differ within a session
    check_template("b_%E.dng", evs=[-2, 0, 2])
    with pytest.raises(TemplateError, match="names frames 1 and 2 of this run alike"):
        check_template("%Y%m%d-%H%M%S.dng", count=3, when=WHEN)
    with pytest.raises(TemplateError, match="the EVs repeat"):
        check_template("b_%E.dng", evs=[0, 1, 0])
    with pytest.raises(TemplateError, match="alike"):
        check_template("x.dng", count=2)
    with pytest.raises(TemplateError, match="alike"):
        check_template("x-%E.DNG", evs=[1, 1.0])


# ---- save_capture: atomic pairs, never overwriting --------------------------------------------------
def test_save_capture_writes_a_valid_pair(shot, tmp_path):
    frame, descriptor, telemetry = shot
    dng, side = save_capture(tmp_path, "%Y/%f-%03n.dng", frame, descriptor, telemetry, 3, when=WHEN)
    assert dng == tmp_path / "2025" / f"MAGC{frame.frame_id:04d}-003.dng" and side == dng.with_suffix(".json")
    doc = json.loads(side.read_text())
    assert not list(VALIDATOR.iter_errors(doc))
    assert doc["dng"]["sha256"] == hashlib.sha256(dng.read_bytes()).hexdigest()
    assert doc["frame"]["frame_id"] == frame.frame_id and doc["frame"]["width"] == 64
    assert listing(tmp_path) == ["2025", f"2025/{dng.name}", f"2025/{side.name}"]


def test_save_capture_never_overwrites(shot, tmp_path):
    frame, descriptor, telemetry = shot
    (tmp_path / "a.dng").write_bytes(b"precious")
    (tmp_path / "b.json").write_text("{}")  # a lone sidecar also holds its name
    first = save_capture(tmp_path, "a.dng", frame, descriptor, telemetry, 1)
    second = save_capture(tmp_path, "a.dng", frame, descriptor, telemetry, 1)
    other = save_capture(tmp_path, "b.dng", frame, descriptor, telemetry, 1)
    assert (tmp_path / "a.dng").read_bytes() == b"precious" and (tmp_path / "b.json").read_text() == "{}"
    assert [p.name for p in first] == ["a_2.dng", "a_2.json"]
    assert [p.name for p in second] == ["a_3.dng", "a_3.json"]
    assert [p.name for p in other] == ["b_2.dng", "b_2.json"]
    for dng, side in (first, second, other):
        doc = json.loads(side.read_text())
        assert doc["dng"]["file"] == dng.name and not list(VALIDATOR.iter_errors(doc))
    assert not [f for f in listing(tmp_path) if f.startswith(".")]


@pytest.mark.parametrize("hard_links", [True, False])
def test_save_capture_loses_a_race_for_a_name_cleanly(shot, tmp_path, monkeypatch, hard_links):
    """Someone else takes the sidecar's name between our look and our link: our DNG, already
    linked, is taken back and the pair goes to the next free name; theirs is untouched. Also
    where the filesystem has no hard links (the O_EXCL + rename fallback)."""
    from magcam import capture

    frame, descriptor, telemetry = shot
    if not hard_links:
        def no_link(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(capture.os, "link", no_link)
    real_write = capture.write_bytes_atomic
    calls = []

    def racing_write(path, data):
        real_write(path, data)
        if not calls:
            (tmp_path / "r.json").write_text("theirs")  # a concurrent writer, just after our check
        calls.append(path)

    monkeypatch.setattr(capture, "write_bytes_atomic", racing_write)
    dng, side = save_capture(tmp_path, "r.dng", frame, descriptor, telemetry, 1)
    monkeypatch.undo()
    assert (dng.name, side.name) == ("r_2.dng", "r_2.json") and len(calls) == 2
    assert (tmp_path / "r.json").read_text() == "theirs" and not (tmp_path / "r.dng").exists()
    assert listing(tmp_path) == ["r.json", "r_2.dng", "r_2.json"]
    doc = json.loads(side.read_text())
    assert doc["dng"]["file"] == "r_2.dng" and doc["dng"]["sha256"] == hashlib.sha256(dng.read_bytes()).hexdigest()


def test_save_capture_refuses_a_name_twice_in_a_run(shot, tmp_path):
    frame, descriptor, telemetry = shot
    used: set = set()
    save_capture(tmp_path, "%f.dng", frame, descriptor, telemetry, 1, used=used)
    with pytest.raises(TemplateError, match="second time in this run"):
        save_capture(tmp_path, "%f.dng", frame, descriptor, telemetry, 2, used=used)
    save_capture(tmp_path, "Case.dng", frame, descriptor, telemetry, 3, used=used)
    with pytest.raises(TemplateError, match="second time"):  # a case-insensitive disk would merge them
        save_capture(tmp_path, "CASE.dng", frame, descriptor, telemetry, 4, used=used)
    assert len(listing(tmp_path)) == 4


def test_save_capture_will_not_follow_a_symlink_out(shot, tmp_path):
    frame, descriptor, telemetry = shot
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(outside)
    with pytest.raises(TemplateError, match="symbolic link"):
        save_capture(tmp_path / "out", "link/sub/%n.dng", frame, descriptor, telemetry, 1)
    assert list(outside.iterdir()) == []


def test_sidecar_schema_is_strict_where_it_should_be(shot, tmp_path):
    frame, descriptor, telemetry = shot
    _, side = save_capture(tmp_path, "s.dng", frame, descriptor, telemetry, 1)
    doc = json.loads(side.read_text())
    Draft202012Validator.check_schema(SCHEMA)
    assert not list(VALIDATOR.iter_errors(doc))
    for mutate in (lambda d: d["dng"].update(sha256="XYZ"), lambda d: d["frame"].pop("exposure_us"),
                   lambda d: d["capture"].update(ev=1.0),  # an EV on a single frame
                   lambda d: d["host"].update(time="yesterday"), lambda d: d.update(extra=1),
                   lambda d: d["events"].update(power={"type": "power"}), lambda d: d.update(schema="v2")):
        bad = json.loads(json.dumps(doc))
        mutate(bad)
        assert list(VALIDATOR.iter_errors(bad)), "the schema accepted a broken sidecar"
