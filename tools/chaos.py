#!/usr/bin/env python3
"""Chaos and robustness figures for magcam: protocol fuzzing on both runtimes, hot-plug, power
faults during streaming. A library (used by the tests) and a CLI (prints the figures).

    python tools/chaos.py --report                 # CI-ish sizes: 10^4 fuzz inputs per runtime, 20 cycles
    python tools/chaos.py --report --large         # 10^6 inputs per runtime, 200 hot-plug cycles
    python tools/chaos.py --report --json          # the same figures as one JSON object
    python tools/chaos.py --report --only fuzz,faults
    python tools/chaos.py fuzz --inputs 100000 --seed 7
    python tools/chaos.py hotplug --cycles 50 --seed 3
    python tools/chaos.py faults [--repeat 3]

Library (``sys.path.insert(0, "tools"); import chaos``)::

    chaos.fuzz(n, seed)            -> {"micropython": {...}, "cpython": {...}}  (tests/firmware/fuzz.py)
    chaos.hotplug(cycles, seed, burst=4, size=(640, 480))  -> dict
    chaos.faults(kinds=None, repeat=1)                      -> dict
    chaos.report(large=False, only=None)                    -> dict (what --report prints)

Exit status 1 when any check failed (a crash, a corrupt frame, a late cut-off, a leftover
process...), so the CLI can gate a pipeline.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FUZZ = REPO / "tests" / "firmware" / "fuzz.py"
MAGCAM = [sys.executable, "-m", "magcam.cli"]

SIZES = {
    "default": {"inputs": 10_000, "cycles": 20, "bad_files": 200},
    "large": {"inputs": 1_000_000, "cycles": 200, "bad_files": 5000},
}
TICK_MS = 10  # the firmware's control tick (app._TICK_MS)
# Cut-off latency allowed beyond one tick. The stimulus time is the scenario's nominal time
# (HELLO uptime + t); the cut is stamped at the start of the control tick that saw it. In
# between: the tick period itself (10 ms sleep + the tick's own work), the scenario player's
# 1 ms step running late, and the asyncio loop being held by the capture task writing a chunk
# to a pipe the relay drains (the host and two simulator processes share the CPUs). Measured
# worst on a 2-CPU CI box while streaming 320x240 at 20 fps: see docs/reliability.md.
LATENCY_SLACK_MS = 5


# ============================================================================ fuzzing


def fuzz(n: int, seed: int = 1, runtimes=("micropython", "cpython"), timeout: float | None = None) -> dict:
    """Run tests/firmware/fuzz.py with ``n`` inputs on each runtime, in parallel; figures per runtime.

    A runtime whose run did not produce its JSON (it crashed, ran out of heap, timed out) gets
    ``{"error": ...}`` and counts as a crash.
    """
    from magcam.sim.runner import micropython_executable

    exe = {"micropython": micropython_executable(), "cpython": sys.executable}
    timeout = timeout or max(120.0, n / 2000)
    procs = {}
    for rt in runtimes:
        procs[rt] = subprocess.Popen([exe[rt], str(FUZZ), str(n), str(seed)], cwd=FUZZ.parent,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    for rt, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
            out[rt] = {"error": f"timed out after {timeout:.0f} s", "crashes": 1, "failures": 0, "inputs": 0}
            continue
        try:
            out[rt] = json.loads(stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out[rt] = {"error": f"exit {p.returncode}: {(stderr or stdout)[-2000:]}", "crashes": 1, "failures": 0,
                       "inputs": 0}
    return out


def runtimes_agree(results: dict) -> bool | None:
    """Same seed, same inputs (fuzz.py's own generator): the decoder's counters and deliveries
    must be identical on MicroPython and CPython. None if one runtime is missing."""
    mp, cp = results.get("micropython"), results.get("cpython")
    if not mp or not cp or "error" in mp or "error" in cp:
        return None
    return mp["totals"] == cp["totals"] and mp["delivered"] == cp["delivered"] and mp["by_kind"] == cp["by_kind"]


# ============================================================================ hot-plug


def processes_marked(marker: str) -> list[int]:
    """Processes whose environment carries ``marker`` (children inherit it from whoever we start)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


@contextlib.contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _dng_matches(path: Path, frame) -> str:
    """'' if rawpy opens the DNG and its CFA samples are the frame's, else what is wrong."""
    import numpy as np
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            samples = raw.raw_image.copy()
    except Exception as e:  # LibRaw's errors are many classes
        return f"rawpy cannot open it: {type(e).__name__}: {e}"
    if samples.shape != frame.data.shape or not np.array_equal(samples, frame.data):
        return "samples differ from the frame"
    return ""


def hotplug(cycles: int, seed: int = 1234, burst: int = 4, size=(640, 480), *, workdir: str | os.PathLike | None = None,
            descriptor: dict | None = None, reconnect_timeout: float = 20.0, log=None) -> dict:
    """Kill the simulated module (``magcam sim --flash F``, SIGKILL) at a random point of each of
    ``cycles`` bursts of ``burst`` frames, plug a new one in (new pty, same serial), and check:

    - the host reconnects (within the burst, or afterwards if the burst beat the unplug);
    - every frame index is either captured or listed as lost, never silently missing;
    - every captured frame is bit-exact (re-rendered by ``SensorModel``): else ``corrupt``;
    - every frame was written with ``write_dng`` and nothing else is in the cycle's directory
      (no partial or stray file), and rawpy reopens each DNG with exactly the frame's samples;
    - no process is left behind (a marker env var, looked up in /proc/*/environ), and how many
      temp dirs and registry entries the killed simulators left.

    Uses a private ``MAGCAM_SIM_REGISTRY`` and ``TMPDIR`` under ``workdir`` (a temp dir if None).
    """
    import numpy as np

    import magcam
    from magcam.dng import write_dng
    from magcam.sim.runner import DEFAULT_DESCRIPTOR
    from magcam.sim.sensor import SensorModel

    say = log or (lambda *_: None)
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="magcam-chaos-") if own_dir else workdir)
    registry, tmp = work / "registry", work / "tmp"
    registry.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(exist_ok=True)
    descriptor = descriptor or json.loads(DEFAULT_DESCRIPTOR.read_text())
    model = SensorModel(descriptor, seed=0)
    marker = f"magcam-chaos-{uuid.uuid4().hex}"
    env = dict(os.environ, MAGCAM_SIM_REGISTRY=str(registry), TMPDIR=str(tmp), MAGCAM_CHAOS_MARKER=marker)
    flash = work / "flash"
    rng = random.Random(seed)
    res = {"cycles": cycles, "burst": burst, "size": list(size), "seed": seed, "frames": 0, "lost": 0, "corrupt": 0,
           "reconnects": 0, "late_reconnects": 0, "late_reconnect_failures": 0, "dng_checked": 0,
           "dng_bad": 0, "stray_files": 0, "errors": [], "lost_reasons": collections.Counter(), "per_cycle": []}
    t_start = time.monotonic()

    def start_sim() -> subprocess.Popen:
        proc = subprocess.Popen([*MAGCAM, "sim", "--flash", str(flash)], stdout=subprocess.PIPE, text=True, env=env)
        proc.stdout.readline()  # the port: the simulator is registered and its firmware booting
        return proc

    with _env(MAGCAM_SIM_REGISTRY=registry):
        for cycle in range(cycles):
            out = work / f"cycle{cycle}"
            out.mkdir()
            sims = [start_sim()]
            delay = rng.uniform(0.02, 0.2)
            frames_seen = {}

            def pull_the_plug():
                time.sleep(delay)
                sims[0].send_signal(signal.SIGKILL)  # no goodbye: as an unplug
                sims[0].wait()
                time.sleep(0.2)
                sims.append(start_sim())  # plugged back in: a new device path, same serial

            def save(i, frame):
                write_dng(out / f"frame{i}.dng", frame, descriptor)
                frames_seen[i] = frame

            entry = {"cycle": cycle, "delay_s": round(delay, 3), "got": [], "lost": [], "corrupt": [], "files": [],
                     "reconnects": 0, "late_reconnect": None}
            plug = threading.Thread(target=pull_the_plug)
            try:
                with magcam.connect("auto", reconnect_timeout=reconnect_timeout) as cam:
                    plug.start()
                    result = cam.capture_burst(burst, *size, on_frame=save)
                    plug.join()
                    if result.reconnects == 0:  # the burst beat the unplug: it must reconnect now
                        res["late_reconnects"] += 1
                        ok = cam._reconnect() and cam.capture_raw(64, 48).data.shape == (48, 64)
                        entry["late_reconnect"] = bool(ok)
                        if not ok:
                            res["late_reconnect_failures"] += 1
                entry["got"] = [f.extra["index"] for f in result.frames]
                entry["lost"] = [(x.index, x.reason) for x in result.lost]
                entry["reconnects"] = result.reconnects
                if sorted(entry["got"] + [i for i, _ in entry["lost"]]) != list(range(burst)):
                    res["errors"].append(f"cycle {cycle}: frames neither captured nor listed as lost: "
                                         f"got {entry['got']}, lost {entry['lost']}")
                for frame in result.frames:  # what arrived is exactly what the sensor produced
                    expected = model.render(*size, frame.exposure_us, frame.analog_gain, frame.frame_id,
                                            frame.lens_position)
                    if not np.array_equal(frame.data, expected):
                        entry["corrupt"].append(frame.frame_id)
                for i, frame in frames_seen.items():
                    why = _dng_matches(out / f"frame{i}.dng", frame)
                    res["dng_checked"] += 1
                    if why:
                        res["dng_bad"] += 1
                        res["errors"].append(f"cycle {cycle}: frame{i}.dng: {why}")
                entry["files"] = sorted(os.listdir(out))
                expected_files = sorted(f"frame{i}.dng" for i in entry["got"])
                if entry["files"] != expected_files:
                    res["stray_files"] += len(set(entry["files"]) ^ set(expected_files))
                    res["errors"].append(f"cycle {cycle}: partial or stray files {entry['files']}")
            except Exception as e:  # a cycle that blew up is a finding, not the end of the run
                res["errors"].append(f"cycle {cycle}: {type(e).__name__}: {e}")
            finally:
                if plug.is_alive() or plug.ident is not None:
                    plug.join(timeout=30)
                for s in sims:
                    if s.poll() is None:
                        s.terminate()
                        try:
                            s.wait(timeout=10)
                        except subprocess.TimeoutExpired:
                            s.kill()
                            s.wait()
                    s.stdout.close()
            res["frames"] += len(entry["got"])
            res["lost"] += len(entry["lost"])
            res["corrupt"] += len(entry["corrupt"])
            res["reconnects"] += entry["reconnects"]
            for _, why in entry["lost"]:
                res["lost_reasons"][why.split(":")[0]] += 1
            res["per_cycle"].append(entry)
            say(f"hotplug cycle {cycle + 1}/{cycles}: got {len(entry['got'])}, lost {len(entry['lost'])}, "
                f"corrupt {len(entry['corrupt'])}, reconnects {entry['reconnects']}")
    # Leftovers: give orphans a moment to see their stdin close, then name and end them.
    deadline = time.monotonic() + 5
    left = processes_marked(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_marked(marker)
    res["leftover_processes"] = [f"{pid}: {_cmdline(pid)}" for pid in left]
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    res["tmp_leftovers"] = len(list(tmp.iterdir()))  # sim temp dirs a SIGKILL never removed
    res["stale_registry_entries"] = len(list(registry.glob("*.json")))
    res["lost_reasons"] = dict(res["lost_reasons"])
    res["seconds"] = round(time.monotonic() - t_start, 1)
    res["ok"] = not (res["errors"] or res["corrupt"] or res["leftover_processes"] or res["late_reconnect_failures"]
                     or res["frames"] + res["lost"] != cycles * burst)
    if own_dir:
        shutil.rmtree(work, ignore_errors=True)
    return res


# ============================================================================ power faults

FAULT_AT_MS = 700  # scenario time of the stimulus: the stream is running by then
RETRY_MS = 1000  # power.DEFAULT_LIMITS
SOFT_START_MS = 50

# kind -> (scenario lines relative to FAULT_AT_MS, expected EV_FAULT cause or None, seconds to
# watch, ms (scenario time) from which the cause is gone)
FAULT_KINDS = {
    "over_current": ([(0, {"do": "load", "ma": 2500}), (300, {"do": "load", "ma": 250})], "over_current", 2.6, 300),
    "under_voltage": ([(0, {"do": "vbus", "mv": 4000}), (300, {"do": "vbus", "mv": 5000})], "under_voltage", 2.6,
                      300),
    "over_temperature": ([(0, {"do": "temp", "c": 85}), (300, {"do": "temp", "c": 30})], "over_temperature", 2.6,
                         300),
    # VBUS gone for 1.5 s: longer than the 1 s back-off, so the rail must wait for it (never
    # close into a known fault).
    "vbus_drop": ([(0, {"do": "vbus", "mv": 0}), (1500, {"do": "vbus", "mv": 5000})], "under_voltage", 3.0, 1500),
    # A 30 ms dip to 3.6 V: three ticks long, must still be caught.
    "brownout": ([(0, {"do": "vbus", "mv": 3600}), (30, {"do": "vbus", "mv": 5000})], "under_voltage", 2.6, 30),
    # Pulled off the phone: not a fault (no EV_FAULT), the rail opens in the tick that sees it.
    "detach": ([(0, {"do": "detach"}), (400, {"do": "attach"})], None, 2.4, 400),
    # A dead short that stays: 1 s, then 2 s back-off, third fault latches; the host resets
    # the latch once the load is gone.
    "latch": ([(0, {"do": "load", "ma": 3000}), (3600, {"do": "load", "ma": 250})], "over_current", 5.6, 3600),
}


def _stream_events(kind: str, stream=(1024, 768, 10.0)) -> dict:
    """One simulator run: stream, inject, watch. Raw material for _judge_fault."""
    import magcam
    from magcam.sim import Simulator

    lines, cause, watch_s, clear_ms = FAULT_KINDS[kind]
    with tempfile.TemporaryDirectory(prefix="magcam-fault-") as d:
        scenario = Path(d) / f"{kind}.jsonl"
        scenario.write_text("".join(json.dumps({"t": FAULT_AT_MS + dt, **x}) + "\n" for dt, x in lines))
        events, reset_at = [], None
        with Simulator(scenario=scenario, flash=Path(d) / "flash") as sim, magcam.connect(sim.port) as cam:
            hello_t = cam.hello["uptime_ms"]
            cam.start_stream(stream[0], stream[1], fps=stream[2])
            for ev in cam.events(duration=watch_s):
                events.append(ev)
                if (kind == "latch" and reset_at is None and ev["type"] == "power" and ev["state"] == "latched"
                        and ev["t"] >= hello_t + FAULT_AT_MS + clear_ms):
                    reset_at = ev["t"]
                    cam.reset_power()  # the short is gone: clear the latch, as the docs say
            faults = cam.faults()
            stats = cam.link.stats()
    return {"kind": kind, "hello_t": hello_t, "events": events, "faultlog": faults, "reset_at": reset_at,
            "stats": stats}


def _judge_fault(run: dict) -> dict:
    """Latency, logging, reporting, recovery policy and stream gating of one run."""
    kind, hello_t, events = run["kind"], run["hello_t"], run["events"]
    lines, cause, watch_s, clear_ms = FAULT_KINDS[kind]
    stim = hello_t + FAULT_AT_MS  # the stimulus, in device time
    cleared = hello_t + FAULT_AT_MS + clear_ms
    problems = []
    power = [(i, e) for i, e in enumerate(events) if e["type"] == "power"]
    faults = [e for e in events if e["type"] == "fault"]
    frames = [(i, e) for i, e in enumerate(events) if e["type"] == "frame"]
    ok_before = [e for _, e in frames if e["ok"] and e["t"] < stim]
    if not ok_before:
        problems.append("no frame streamed before the stimulus")
    early_faults = [e for e in faults if e["t"] < stim - 1]
    if early_faults:
        problems.append(f"fault before the stimulus: {early_faults[0]}")
    cut_state = "off" if kind == "detach" else "fault"
    cut = next(((i, e) for i, e in power if e["state"] == cut_state and e["t"] >= stim - 1), None)
    out = {"kind": kind, "cause": None, "value": None, "latency_ms": None, "latency_ticks": None, "faults": len(faults),
           "frames_before": len(ok_before), "frames_after": 0, "aborted": 0, "back_on_ms": None}
    if cut is None:
        problems.append(f"the rail was never cut ({cut_state})")
        out["problems"] = problems
        return out
    cut_i, cut_ev = cut
    out["latency_ms"] = cut_ev["t"] - stim
    out["latency_ticks"] = round(out["latency_ms"] / TICK_MS, 2)
    if out["latency_ms"] > TICK_MS + LATENCY_SLACK_MS:
        problems.append(f"cut {out['latency_ms']} ms after the stimulus (> 1 tick + {LATENCY_SLACK_MS} ms slack)")
    if cause is None:
        if faults:
            problems.append(f"a detach is not a fault, but EV_FAULT came: {faults[0]}")
    else:
        first = faults[0] if faults else None
        if first is None:
            problems.append("no EV_FAULT reported")
        else:
            out["cause"], out["value"] = first["cause"], first["value"]
            if first["cause"] != cause:
                problems.append(f"EV_FAULT cause {first['cause']}, expected {cause}")
            if first["t"] != cut_ev["t"]:
                problems.append(f"EV_FAULT at {first['t']}, the rail was cut at {cut_ev['t']} (not the same tick)")
            logged = [r for r in run["faultlog"] if r["t"] == first["t"] and r["cause"] == first["cause"]]
            if not logged:
                problems.append(f"fault not in the persisted log: {run['faultlog']}")
            if kind == "vbus_drop" and first["value"] > 100:
                problems.append(f"VBUS drop reported {first['value']} mV")
    # Recovery: when did the rail close again (soft_start) and come on?
    back = next(((i, e) for i, e in power if i > cut_i and e["state"] == "on"), None)
    closed = next(((i, e) for i, e in power if i > cut_i and e["state"] == "soft_start"), None)
    states = [e["state"] for i, e in power if i >= cut_i]
    if kind == "latch":
        n_faults = len([f for f in faults if f["t"] >= stim])
        if n_faults != 3 or "latched" not in states:
            problems.append(f"a persistent short must latch on its 3rd fault: {n_faults} faults, states {states}")
        gaps = [b["t"] - a["t"] for a, b in zip(faults, faults[1:])]
        # fault k+1 comes when the k-th back-off ends (plus soft start 50 ms and a tick or two)
        for k, (g, want) in enumerate(zip(gaps, (RETRY_MS, 2 * RETRY_MS))):
            if not want <= g <= want + SOFT_START_MS + 3 * TICK_MS + LATENCY_SLACK_MS:
                problems.append(f"back-off {k + 1}: {g} ms between faults, expected ~{want} + soft start")
        out["backoffs_ms"] = gaps
        if run["reset_at"] is None:
            problems.append("never saw the latch after the short was gone")
        latched_i = next((i for i, e in power if e["state"] == "latched"), None)
        back = next(((i, e) for i, e in power if latched_i is not None and i > latched_i and e["state"] == "on"), None)
        if latched_i is not None:
            early = [e for i, e in frames if e["ok"] and latched_i < i and (back is None or i < back[0])]
            if early:
                problems.append(f"frames while latched: {early[:2]}")
    elif kind != "detach" and closed is not None:
        # The back-off counts from the fault, and the switch never closes into a known fault.
        earliest = max(cut_ev["t"] + RETRY_MS, cleared)
        late = closed[1]["t"] - earliest
        out["reclose_after_fault_ms"] = closed[1]["t"] - cut_ev["t"]
        if late < 0:
            problems.append(f"rail closed {-late} ms too early (back-off {RETRY_MS} ms, cause gone at {cleared})")
        elif late > TICK_MS + LATENCY_SLACK_MS:
            problems.append(f"rail closed {late} ms after it could have")
        if not all(s in ("fault", "retry_wait", "soft_start", "on") for s in states):
            problems.append(f"unexpected rail states after a single fault: {states}")
    if back is None:
        problems.append("the rail never came back on")
        out["problems"] = problems
        return out
    back_i, back_ev = back
    out["back_on_ms"] = back_ev["t"] - cut_ev["t"]
    # Stream gating: no frame started while the rail was off; frames again once it is on.
    for i, e in frames:
        if cut_i < i < back_i and e["ok"] and e["t"] >= cut_ev["t"]:
            problems.append(f"frame {e['frame_id']} started at {e['t']} while the rail was off")
        if cut_i < i and not e["ok"]:
            out["aborted"] += 1
            if "aborted" not in e["error"]:
                problems.append(f"frame {e['frame_id']} failed: {e['error']}")
    after = [e for i, e in frames if i > back_i and e["ok"]]
    out["frames_after"] = len(after)
    if len(after) < 2:
        problems.append(f"streaming did not resume: {len(after)} frames after the rail came back")
    elif after[0]["t"] < back_ev["t"]:
        problems.append(f"first frame after the fault started at {after[0]['t']}, before the rail was on")
    out["tick_lateness_ms"] = _tick_lateness(power)
    if run["stats"]["crc_errors"] or run["stats"]["framing_errors"]:
        problems.append(f"link errors during the run: {run['stats']}")
    out["problems"] = problems
    return out


def _tick_lateness(power) -> int | None:
    """How late the control tick ran, seen from the periodic EV_POWER (due 500 ms after the
    previous one; it goes out in the first tick at or after that): the largest lateness
    observed. A lateness of L ms means a tick period of at least L + 1 ms somewhere."""
    late = [b["t"] - a["t"] - 500 for (_, a), (_, b) in zip(power, power[1:])
            if a["state"] == b["state"] and b["t"] - a["t"] >= 500]
    return max(late) if late else None


def faults(kinds=None, repeat: int = 1, log=None) -> dict:
    """Inject each fault kind (``FAULT_KINDS``) ``repeat`` times while streaming; judged runs
    and the summary: injected, worst latency (ms, ticks), problems."""
    say = log or (lambda *_: None)
    runs = []
    t0 = time.monotonic()
    for _ in range(repeat):
        for kind in kinds or FAULT_KINDS:
            try:
                judged = _judge_fault(_stream_events(kind))
            except Exception as e:
                judged = {"kind": kind, "latency_ms": None, "problems": [f"{type(e).__name__}: {e}"]}
            runs.append(judged)
            say(f"fault {kind}: latency {judged.get('latency_ms')} ms, back on after {judged.get('back_on_ms')} ms, "
                f"problems {judged['problems']}")
    lat = [r["latency_ms"] for r in runs if r.get("latency_ms") is not None]
    late = [r["tick_lateness_ms"] for r in runs if r.get("tick_lateness_ms") is not None]
    return {
        "injected": len(runs),
        "kinds": sorted({r["kind"] for r in runs}),
        "worst_latency_ms": max(lat) if lat else None,
        "worst_latency_ticks": round(max(lat) / TICK_MS, 2) if lat else None,
        "mean_latency_ms": round(sum(lat) / len(lat), 1) if lat else None,
        "slack_ms": LATENCY_SLACK_MS,
        "tick_lateness_max_ms": max(late) if late else None,
        "frames_aborted": sum(r.get("aborted", 0) for r in runs),
        "problems": sum(len(r["problems"]) for r in runs),
        "runs": runs,
        "seconds": round(time.monotonic() - t0, 1),
        "ok": all(not r["problems"] for r in runs),
    }


# ============================================================================ bad files


def bad_files(n: int, seed: int = 7, *, workdir: str | os.PathLike | None = None,
              tools=("process", "hdr", "merge")) -> dict:
    """``n`` corrupted copies of a valid DNG (truncated, bytes flipped in the header and tag area,
    or in the samples, or empty), each given to every tool in ``tools``: ``magcam process``'s
    library path alone, ``hdr`` as one exposure of a bracket beside a good frame, ``merge`` as one
    frame of a burst beside a good frame. Each run must be refused with a PipelineError (leaving
    no output) or produce readable output; anything else is a crash. Returns the counts per tool
    and over all of them."""
    import json as _json
    import random
    import tempfile

    import cv2

    from magcam import burst, hdr
    from magcam.dng import write_dng
    from magcam.frame import RawFrame
    from magcam.pipeline.errors import PipelineError
    from magcam.process import process_file
    from magcam.sim.sensor import SensorModel

    def run_process(src, out):
        process_file(src, out / "out.png", preset="fast")
        return [out / "out.png"]

    def run_hdr(src, out):
        r = hdr.merge_files([src, bright], out / "hdr.dng")
        return [Path(r["dng"]), Path(r["jpeg"])]

    def run_merge(src, out):
        burst.merge_files([good, src], out / "merged.dng")
        return [out / "merged.dng"]

    runners = {"process": run_process, "hdr": run_hdr, "merge": run_merge}
    unknown = set(tools) - set(runners)
    if unknown:
        raise ValueError(f"unknown tools {sorted(unknown)}; expected some of {sorted(runners)}")

    def readable(path: Path) -> bool:
        if path.suffix == ".dng":
            from magcam import rawio
            try:
                rawio.read(path)
            except PipelineError:
                return False
            return True
        return cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None

    rng = random.Random(seed)
    t0 = time.monotonic()
    per_tool = {t: {"tried": 0, "refused": 0, "processed": 0, "crashes": 0, "partial_outputs": 0, "seconds": 0.0}
                for t in tools}
    examples = []
    with tempfile.TemporaryDirectory(prefix="magcam-badfiles-", dir=workdir) as tmp:
        tmp = Path(tmp)
        descriptor = _json.loads((REPO / "firmware/magcam_fw/descriptor.json").read_text())
        sensor = SensorModel(descriptor)
        good, bright = tmp / "good.dng", tmp / "bright.dng"
        for path, exposure_us in ((good, 10000), (bright, 40000)):  # a -2 EV / 0 EV bracket of one scene
            write_dng(path, RawFrame(data=sensor.render(96, 64, exposure_us, 1.0, 1), frame_id=1, black_level=256,
                                     white_level=4095, exposure_us=exposure_us), descriptor)
        original = good.read_bytes()
        for i in range(n):
            data = bytearray(original)
            kind = rng.choice(("truncate", "flip_header", "flip_samples", "empty"))
            if kind == "truncate":
                data = data[: rng.randrange(0, len(data))]
            elif kind == "flip_header":  # the TIFF header, IFD and tag values live in the first KiB here
                for _ in range(rng.randint(1, 8)):
                    data[rng.randrange(0, min(1024, len(data)))] = rng.randrange(256)
            elif kind == "flip_samples":
                for _ in range(rng.randint(1, 64)):
                    data[rng.randrange(0, len(data))] = rng.randrange(256)
            else:
                data = bytearray()
            src = tmp / f"bad{i}.dng"
            src.write_bytes(bytes(data))
            for name in tools:
                out = tmp / f"out-{name}-{i}"
                out.mkdir()
                counts = per_tool[name]
                counts["tried"] += 1
                t1 = time.monotonic()
                try:
                    outputs = runners[name](src, out)
                except PipelineError:
                    counts["refused"] += 1
                    counts["partial_outputs"] += sum(1 for _ in out.iterdir())  # not even a temporary file
                except Exception as e:  # noqa: BLE001 - counting exactly these is the point
                    counts["crashes"] += 1
                    if len(examples) < 5:
                        examples.append(f"{name}, {kind} #{i}: {type(e).__name__}: {e}")
                else:
                    ok = all(p.exists() and readable(p) for p in outputs)
                    counts["processed" if ok else "crashes"] += 1
                    if not ok and len(examples) < 5:
                        examples.append(f"{name}, {kind} #{i}: output missing or unreadable")
                counts["seconds"] += time.monotonic() - t1
                shutil.rmtree(out)
            src.unlink()
    totals = {k: sum(c[k] for c in per_tool.values()) for k in ("tried", "refused", "processed", "crashes",
                                                               "partial_outputs")}
    totals.update(tools=per_tool, files=n, seconds=time.monotonic() - t0, crash_examples=examples,
                  ok=totals["crashes"] == 0 and totals["partial_outputs"] == 0)
    return totals


# ============================================================================ report


def report(large: bool = False, only=None, seed: int = 1, log=None) -> dict:
    size = SIZES["large" if large else "default"]
    only = set(only or ("fuzz", "hotplug", "faults", "bad_files"))
    out = {"size": "large" if large else "default", "seed": seed}
    if "fuzz" in only:
        if log:
            log(f"fuzzing {size['inputs']} inputs on each runtime ...")
        out["fuzz"] = fuzz(size["inputs"], seed)
        out["fuzz_runtimes_agree"] = runtimes_agree(out["fuzz"])
    if "hotplug" in only:
        out["hotplug"] = hotplug(size["cycles"], seed, log=log)
    if "faults" in only:
        out["faults"] = faults(repeat=5 if large else 1, log=log)
    if "bad_files" in only:
        if log:
            log(f"{size['bad_files']} corrupted DNGs through process, hdr and merge ...")
        out["bad_files"] = bad_files(size["bad_files"], seed)
    return out


def _ok(r: dict) -> bool:
    good = True
    for rt in (r.get("fuzz") or {}).values():
        good &= not rt.get("crashes") and not rt.get("failures") and "error" not in rt
    if r.get("fuzz_runtimes_agree") is False:
        good = False
    if "hotplug" in r:
        good &= r["hotplug"]["ok"]
    if "faults" in r:
        good &= r["faults"]["ok"]
    if isinstance(r.get("bad_files"), dict):
        good &= r["bad_files"]["ok"]
    return good


def _kib(n) -> str:
    return "-" if n is None else f"{n / 1024:.0f} KiB"


def table(r: dict) -> str:
    rows = [("area", "figure", "value")]
    names = {"micropython": "MicroPython", "cpython": "CPython"}
    for rt, f in (r.get("fuzz") or {}).items():
        n = names.get(rt, rt)
        if "error" in f:
            rows.append(("fuzz", f"{n}", f"ERROR {f['error'][:60]}"))
            continue
        rows.append(("fuzz", f"{n}: inputs / crashes / failures",
                     f"{f['inputs']:,} / {f['crashes']} / {f['failures']}  ({f['runtime']}, {f['seconds']:.1f} s)"))
        base = f" from {_kib(f['heap_base_bytes'])} after setup" if f.get("heap_base_bytes") else ""
        rows.append(("fuzz", f"{n}: peak memory", f"{_kib(f['peak_heap_bytes'])}{base} "
                     f"({f['heap_method'].split(' ')[0]}); decoder buffers {_kib(f['decoder_buffer_bytes'])}"))
    if r.get("fuzz_runtimes_agree") is not None:
        rows.append(("fuzz", "both runtimes: identical counters", "yes" if r["fuzz_runtimes_agree"] else "NO"))
    h = r.get("hotplug")
    if h:
        w, hh = h["size"]
        rows.append(("hot-plug", "cycles (burst x size)",
                     f"{h['cycles']} ({h['burst']} x {w}x{hh}), {h['seconds']:.0f} s"))
        rows.append(("hot-plug", "frames complete / lost / corrupt", f"{h['frames']} / {h['lost']} / {h['corrupt']}"))
        rows.append(("hot-plug", "reconnects (late) / DNGs reopened (bad)",
                     f"{h['reconnects']} ({h['late_reconnects']}) / {h['dng_checked']} ({h['dng_bad']})"))
        rows.append(("hot-plug", "processes left / errors", f"{len(h['leftover_processes'])} / {len(h['errors'])}"))
        rows.append(("hot-plug", "temp dirs / registry entries a SIGKILL left",
                     f"{h['tmp_leftovers']} / {h['stale_registry_entries']}"))
    fl = r.get("faults")
    if fl:
        rows.append(("power", "faults injected while streaming", f"{fl['injected']} ({', '.join(fl['kinds'])})"))
        worst = fl["worst_latency_ms"]
        rows.append(("power", "worst cut-off latency",
                     "-" if worst is None else (f"{worst} ms = {fl['worst_latency_ticks']} ticks (limit 1 tick + "
                                                f"{fl['slack_ms']} ms; mean {fl['mean_latency_ms']} ms)")))
        rows.append(("power", "control tick late by (max, periodic EV_POWER)",
                     "-" if fl.get("tick_lateness_max_ms") is None else f"{fl['tick_lateness_max_ms']} ms"))
        rows.append(("power", "frames aborted by a cut / policy+gating problems",
                     f"{fl.get('frames_aborted', 0)} / {fl['problems']}  ({fl['seconds']:.0f} s)"))
    b = r.get("bad_files")
    if isinstance(b, dict):
        for name, c in b["tools"].items():
            rows.append(("bad files", f"{name}: tried / refused / processed / crashes",
                         f"{c['tried']} / {c['refused']} / {c['processed']} / {c['crashes']}  "
                         f"(partial outputs {c['partial_outputs']}, {c['seconds']:.0f} s)"))
    rows.append(("all", "verdict", "PASS" if _ok(r) else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", choices=["report", "fuzz", "hotplug", "faults"], default="report")
    ap.add_argument("--report", action="store_true", help="all of it, as one table (the default)")
    ap.add_argument("--large", action="store_true", help="10^6 fuzz inputs per runtime, 200 hot-plug cycles")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    ap.add_argument("--only", help="comma-separated subset of fuzz,hotplug,faults (with --report)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--inputs", type=int, help="fuzz: inputs per runtime")
    ap.add_argument("--cycles", type=int, help="hotplug: cycles")
    ap.add_argument("--repeat", type=int, default=1, help="faults: runs per kind")
    ap.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    a = ap.parse_args(argv)
    log = None if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    size = SIZES["large" if a.large else "default"]
    if a.what == "fuzz":
        r = {"fuzz": fuzz(a.inputs or size["inputs"], a.seed)}
        r["fuzz_runtimes_agree"] = runtimes_agree(r["fuzz"])
    elif a.what == "hotplug":
        r = {"hotplug": hotplug(a.cycles or size["cycles"], a.seed, log=log)}
    elif a.what == "faults":
        r = {"faults": faults(repeat=a.repeat, log=log)}
    else:
        r = report(a.large, a.only.split(",") if a.only else None, a.seed, log)
    if a.json:
        print(json.dumps(r, default=str))
    else:
        print(table(r))
    return 0 if _ok(r) else 1


if __name__ == "__main__":
    sys.exit(main())
