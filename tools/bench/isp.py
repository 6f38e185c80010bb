"""ISP benchmark: magcam's pipeline against LibRaw (rawpy) on the same DNG, in one run.

    python tools/bench/isp.py [--sizes 24,100] [--engines magcam,magcam-fast,linear,ahd,aahd] [--json]

Engines: ``magcam`` is ``magcam process``'s default path (RIAS demosaic), ``magcam-fast`` its
``fast`` preset (Malvar demosaic, no denoise or sharpening): the pipeline's own floor, what every
path pays besides the default demosaic; ``linear``, ``ahd``, ``aahd`` are rawpy (LibRaw).

For each size it builds a 12-bit DNG of the drawn test chart through the simulator's sensor model
(made noise-free: a huge full well, no read noise), so the true camera-RGB image is known. Then
every engine runs in its own process on that file, twice:

- timed: file -> 8-bit sRGB image in memory. "cold" is the first file in a fresh process,
  imports and JIT kernel loading included (what `magcam process one.dng` costs); "warm" the same
  file again in that process (each further file of a batch, or a long-running app). Peak RSS is
  the process's own high-water mark after the first file;
- quality: file -> linear camera RGB (rawpy: ``output_color=raw, gamma=(1, 1)``; magcam:
  ``output_color="raw", gamma="linear"``), compared with the truth: CPSNR in linear light with
  the white level as peak, 10-pixel border cropped.

It prints each engine's cold and warm time, their ratios to rawpy AHD, peak RSS and CPSNR.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SIZES_MP = {2: (1632, 1224), 24: (5664, 4248), 100: (11552, 8672)}
ENGINES = ("magcam", "magcam-fast", "linear", "ahd", "aahd")
_MAGCAM_PRESETS = {"magcam": "default", "magcam-fast": "fast"}  # engine -> magcam.process preset
_CHILD = "--child"


def build_dng(mp: int, path: Path) -> np.ndarray:
    """Write the DNG; return the true linear camera RGB on rawpy's 0..65535 scale (float32)."""
    from magcam.dng import write_dng
    from magcam.frame import RawFrame
    from magcam.pipeline import color
    from magcam.sim.chart import draw_chart
    from magcam.sim.sensor import REF_FILL, SensorModel

    w, h = SIZES_MP[mp]
    descriptor = json.loads((REPO / "firmware/magcam_fw/descriptor.json").read_text())
    descriptor["sensor"].update(full_well_e=1e9, read_noise_e=0.0)  # noise-free: a known truth
    raw = SensorModel(descriptor).render(w, h, 10000, 1.0, frame_id=1)
    s = descriptor["sensor"]
    write_dng(path, RawFrame(data=raw, frame_id=1, black_level=s["black_level"], white_level=s["white_level"]),
              descriptor)
    del raw
    truth = np.empty((h, w, 3), np.float32)
    m = color.linear_srgb_to_camera(descriptor).astype(np.float32) * np.float32(REF_FILL * 65535)
    chart = draw_chart(w, h)
    for y in range(0, h, 512):  # in strips: the whole float image at once would double the memory
        lin = color.srgb_to_linear(chart[y : y + 512] / np.float32(255))
        truth[y : y + 512] = np.clip(lin @ m.T, 0, 65535)
    return truth


def cpsnr(out: np.ndarray, truth: np.ndarray, border: int = 10) -> float:
    a = out[border:-border, border:-border].astype(np.float64)
    b = truth[border:-border, border:-border].astype(np.float64)
    mse = float(np.mean((np.clip(a, 0, 65535) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(65535.0**2 / mse)


# ---- the measured process --------------------------------------------------------------------
def child(engine: str, dng: str, mode: str, out: str) -> None:
    """Runs in its own process: one engine, one mode; prints a JSON line. In speed mode the
    same file is developed twice: ``seconds`` is the first run, imports included (one file from
    a fresh process, what a user of the CLI waits for), ``warm_seconds`` the second (each further
    file of a batch, or in a long-running app)."""
    import resource

    def develop():
        if engine in _MAGCAM_PRESETS:
            from magcam import process as mp_process

            opts = {"output_color": "raw", "gamma": "linear", "bits": 16} if mode == "quality" else {}
            return mp_process.process_to_array(dng, preset=_MAGCAM_PRESETS[engine], **opts)
        import rawpy

        algo = {"linear": rawpy.DemosaicAlgorithm.LINEAR, "ahd": rawpy.DemosaicAlgorithm.AHD,
                "aahd": rawpy.DemosaicAlgorithm.AAHD}[engine]
        with rawpy.imread(dng) as raw:
            if mode == "quality":
                return raw.postprocess(demosaic_algorithm=algo, output_color=rawpy.ColorSpace.raw, gamma=(1, 1),
                                       no_auto_bright=True, output_bps=16, user_wb=[1, 1, 1, 1],
                                       adjust_maximum_thr=0, user_flip=0)
            return raw.postprocess(demosaic_algorithm=algo, use_camera_wb=True, output_bps=8)

    t0 = time.perf_counter()
    img = develop()
    seconds = time.perf_counter() - t0
    warm = None
    if mode == "quality":
        np.save(out, img)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:  # ru_maxrss of a spawned child also counts the parent's RSS at the spawn (Linux's exec
        # keeps the old mm's high-water mark), and the parent holds the truth image; VmHWM is ours
        with open("/proc/self/status") as f:
            rss_mb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        pass
    if mode == "speed":  # after the RSS reading: the second run's peak is the same, plus the first's garbage
        del img
        t0 = time.perf_counter()
        img = develop()
        warm = time.perf_counter() - t0
    print(json.dumps({"engine": engine, "mode": mode, "seconds": seconds, "warm_seconds": warm, "rss_mb": rss_mb,
                      "shape": list(img.shape)}))


def run_child(engine: str, dng: Path, mode: str, out: Path) -> dict:
    r = subprocess.run([sys.executable, __file__, _CHILD, engine, str(dng), mode, str(out)],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        return {"engine": engine, "mode": mode, "error": r.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench(mp: int, engines: list[str], tmp: Path) -> list[dict]:
    dng = tmp / f"chart_{mp}mp.dng"
    truth = build_dng(mp, dng)
    rows = []
    for engine in engines:
        timed = run_child(engine, dng, "speed", tmp / "unused.npy")
        qual = run_child(engine, dng, "quality", tmp / f"{engine}.npy")
        row = {"mp": mp, "engine": engine, **{k: timed.get(k) for k in ("seconds", "warm_seconds", "rss_mb")}}
        if "error" in timed or "error" in qual:
            row["error"] = (timed.get("error") or qual.get("error"))[0]
        else:
            out = np.load(tmp / f"{engine}.npy", mmap_mode="r")
            row["cpsnr_db"] = cpsnr(out, truth)
            (tmp / f"{engine}.npy").unlink()
        rows.append(row)
    ahd = next((r for r in rows if r["engine"] == "ahd" and r.get("seconds")), None)
    for r in rows:
        r["vs_ahd"] = r["seconds"] / ahd["seconds"] if ahd and r.get("seconds") else None
        r["warm_vs_ahd"] = (r["warm_seconds"] / ahd["warm_seconds"]
                            if ahd and ahd.get("warm_seconds") and r.get("warm_seconds") else None)
    dng.unlink()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="24,100", help="megapixels, from %s" % sorted(SIZES_MP))
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    engines = args.engines.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="magcam-isp-") as tmp:
        for mp in sizes:
            rows += bench(mp, engines, Path(tmp))
    if args.json:
        print(json.dumps({"rows": rows, "cpus": os.cpu_count()}))
    else:
        print(f"ISP benchmark: noise-free 12-bit chart DNGs, {os.cpu_count()} CPUs; CPSNR in linear light vs truth")
        print("  cold: first file in a fresh process, imports included; warm: the same file again in that process")
        print(f"{'MP':>4} {'engine':<12} {'cold s':>7} {'x AHD':>6} {'warm s':>7} {'x AHD':>6} {'peak RSS':>9} "
              f"{'CPSNR':>8}")
        for r in rows:
            if "error" in r:
                print(f"{r['mp']:>4} {r['engine']:<12} error: {r['error']}")
                continue
            ratio = f"{r['vs_ahd']:.2f}" if r["vs_ahd"] else "-"
            warm = f"{r['warm_seconds']:7.2f}" if r.get("warm_seconds") else "      -"
            wratio = f"{r['warm_vs_ahd']:.2f}" if r.get("warm_vs_ahd") else "-"
            print(f"{r['mp']:>4} {r['engine']:<12} {r['seconds']:7.2f} {ratio:>6} {warm} {wratio:>6} "
                  f"{r['rss_mb']:7.0f}MB {r['cpsnr_db']:7.2f}dB")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == _CHILD:
        child(*sys.argv[2:6])
    else:
        sys.exit(main())
