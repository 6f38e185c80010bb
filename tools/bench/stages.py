"""Where the time of ``magcam process`` goes: a stage-by-stage profile of the default path.

    python tools/bench/stages.py                 # 24 MP chart DNG, built as tools/bench/isp.py builds it
    python tools/bench/stages.py --mp 2 --json   # a small frame, one JSON object on stdout
    python tools/bench/stages.py --dng shot.dng --preset quality --tile 1024

The DNG is built in this process; the measuring runs in a fresh child process (as isp.py's
timed run does), so the import and the numba kernel loading are a cold process's. It reports

- the one-off costs: importing ``magcam.process``, loading the demosaic's numba kernels from
  the cache (the first call), reading the DNG, the plan (its analysis passes: noise model,
  grey world) -- wall time, single-threaded;
- every tile stage's CPU time (``time.thread_time`` in the tile's thread, through the
  ``Plan.lap`` hook of ``magcam.process``), summed over all tiles, in ms per megapixel of the
  frame: what one core spends on each stage, margins included;
- the wall time of all tiles with 1 thread and with the default thread count, and
  ``process_to_array`` end to end (what isp.py times).

Timings on a shared machine are noisy: each wall figure is the best of ``--repeat`` runs, and
CPU times are less disturbed by other processes than wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_CHILD = "--child"


class Stopwatch:
    """``Plan.lap`` hook: CPU time per stage name, per thread, summed over tiles."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self._local = threading.local()
        self._lock = threading.Lock()

    def __call__(self, name: str) -> None:
        now = time.thread_time()
        last = getattr(self._local, "last", None)
        self._local.last = now
        if name and last is not None:
            with self._lock:
                self.totals[name] += now - last


def measure(dng: str, preset: str, repeat: int, tile: int | None = None) -> dict:
    """Runs in a fresh process."""
    t = time.perf_counter()
    import numpy as np

    from magcam import process, rawio
    from magcam.pipeline import demosaic

    res: dict = {"once": {}, "stages_ms_per_mp": {}, "wall": {}}
    once = res["once"]
    once["import"] = time.perf_counter() - t
    opts = process.Options(preset=preset) if tile is None else process.Options(preset=preset, tile=tile)
    t = time.perf_counter()
    method = opts.resolved().demosaic
    demosaic.METHODS[method](np.zeros((demosaic.MIN_SIZE,) * 2, np.float32), "RGGB")
    once["kernel_load"] = time.perf_counter() - t
    t = time.perf_counter()
    raw = rawio.read(dng)
    once["read"] = time.perf_counter() - t
    mp = raw.height * raw.width / 1e6
    res.update(width=raw.width, height=raw.height, mp=mp, preset=preset, method=method, cpus=os.cpu_count())
    t = time.perf_counter()
    plan = process.make_plan(raw, opts)
    once["plan"] = time.perf_counter() - t
    res["margin"] = plan.margin
    res["tile"] = plan.opts.tile

    def tiles(jobs: int, lap=None) -> float:
        plan.opts.jobs, plan.lap = jobs, lap
        t0 = time.perf_counter()
        for _ in process.iter_bands(plan):
            pass
        return time.perf_counter() - t0

    watch = Stopwatch()
    tiles(1, watch)  # also the warm-up of every kernel the tiles use
    res["stages_ms_per_mp"] = {k: v * 1e3 / mp for k, v in watch.totals.items()}
    jobs = os.cpu_count() or 1
    res["wall"]["tiles_1_thread"] = min(tiles(1) for _ in range(repeat))
    res["wall"][f"tiles_{jobs}_threads"] = min(tiles(jobs) for _ in range(repeat))
    plan.opts.jobs = None
    best = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        process.process_to_array(dng, preset=preset, tile=plan.opts.tile)
        best.append(time.perf_counter() - t0)
    res["wall"]["process_to_array_warm"] = min(best)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mp", type=int, default=24, help="chart size in megapixels (2, 24 or 100), as isp.py")
    ap.add_argument("--dng", help="profile this file instead of a chart")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--tile", type=int, help="tile size (default: magcam's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="magcam-stages-") as tmp:
        dng = args.dng
        if dng is None:
            sys.path.insert(0, str(_HERE))
            import isp

            dng = str(Path(tmp) / f"chart_{args.mp}mp.dng")
            isp.build_dng(args.mp, Path(dng))
        r = subprocess.run([sys.executable, __file__, _CHILD, dng, args.preset, str(args.repeat), str(args.tile or "")],
                           capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        print(r.stderr, file=sys.stderr)
        return 1
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(res))
        return 0
    mp = res["mp"]
    print(f"{res['width']}x{res['height']} ({mp:.1f} MP), preset {res['preset']} ({res['method']}), "
          f"tile {res['tile']} + margin {res['margin']}, {res['cpus']} CPUs")
    print("one-off (wall, s):  " + "  ".join(f"{k} {v:.3f}" for k, v in res["once"].items()))
    stages = res["stages_ms_per_mp"]
    total = sum(stages.values())
    print(f"tile stages (CPU ms/MP of the frame, 1 thread): total {total:.1f}")
    for k, v in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<12} {v:7.1f}  {100 * v / total:5.1f} %")
    print("wall (s, best of %d): " % args.repeat + "  ".join(f"{k} {v:.3f}" for k, v in res["wall"].items()))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == _CHILD:
        print(json.dumps(measure(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if sys.argv[5] else None)))
    else:
        sys.exit(main())
