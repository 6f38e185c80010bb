#!/usr/bin/env python3
"""Demosaic benchmark: CPSNR on Kodak24 and McMaster18 for our methods and LibRaw's, and speed.

CPSNR as in the image-pipeline issue (the anchors in ../shared/README.md use the same):
8-bit RGB -> Bayer mosaic (RGGB, red at (0, 0)) -> demosaic -> clip to [0, 1], x 255, round ->
one MSE over all three channels with a 10-pixel border cropped -> PSNR, averaged over the set.
Our methods get the mosaic as float32 8-bit values / 255.

LibRaw (via rawpy) gets the same mosaic as a DNG written by ``magcam.dng.write_dng`` (8-bit
values x 257 in 16 bits, black 0, white 65535, the project's descriptor), developed with no
colour transform, no white balance, linear gamma and 16-bit output, then / 257 and rounded.
The harness reproduces the shared anchors (LINEAR 30.24 / 32.30, AHD 37.05 / 35.06).

Speed: milliseconds per megapixel on a synthetic mosaic (``--mp`` megapixels, default 24: a
4000 x 6000 frame), best of ``--repeat`` runs after a warm-up; plus the numba JIT warm-up of
a cold process (compile, or load from numba's cache).

    python tools/bench/demosaic.py            # full sets, our methods + LibRaw's
    python tools/bench/demosaic.py --quick    # 3 + 3 images, a 4 MP timing: a smoke test
    python tools/bench/demosaic.py --json     # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
BORDER = 10
RAWPY_METHODS = ("LINEAR", "VNG", "PPG", "AHD", "DCB", "DHT", "AAHD")
QUICK = {"kodak24": ["kodim01.png", "kodim05.png", "kodim19.png"], "mcmaster18": ["1.tif", "5.tif", "9.tif"]}


def image_paths(name: str, quick: bool) -> list[Path]:
    folder = SHARED / name
    if quick:
        files = QUICK[name]
    elif name == "kodak24":
        files = [f"kodim{i:02d}.png" for i in range(1, 25)]
    else:
        files = [f"{i}.tif" for i in range(1, 19)]
    paths = [folder / f for f in files]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"missing test images (../shared/data beside the repo): {missing[:3]}")
    return paths


def load_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1])


def mosaic_rggb(rgb: np.ndarray) -> np.ndarray:
    m = np.empty(rgb.shape[:2], rgb.dtype)
    m[0::2, 0::2] = rgb[0::2, 0::2, 0]
    m[0::2, 1::2] = rgb[0::2, 1::2, 1]
    m[1::2, 0::2] = rgb[1::2, 0::2, 1]
    m[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return m


def cpsnr(reference: np.ndarray, out8: np.ndarray) -> float:
    d = (out8.astype(np.float64) - reference.astype(np.float64))[BORDER:-BORDER, BORDER:-BORDER]
    return float(10 * np.log10(255.0**2 / np.mean(d * d)))


def to8(rgb_float: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgb_float, 0.0, 1.0) * 255.0)


def rawpy_develop(mosaic8: np.ndarray, method: str, dng: Path, descriptor: dict) -> np.ndarray:
    import rawpy

    from magcam.dng import write_dng
    from magcam.frame import RawFrame

    data = mosaic8.astype(np.uint16) * 257
    frame = RawFrame(data=data, frame_id=1, cfa="RGGB", bits=16, black_level=0, white_level=65535)
    write_dng(dng, frame, descriptor)
    with rawpy.imread(str(dng)) as raw:
        out = raw.postprocess(
            demosaic_algorithm=getattr(rawpy.DemosaicAlgorithm, method),
            output_color=rawpy.ColorSpace.raw,
            gamma=(1, 1),
            no_auto_bright=True,
            output_bps=16,
            user_wb=[1.0, 1.0, 1.0, 1.0],
            adjust_maximum_thr=0.0,
            user_black=0,
            user_sat=65535,
            user_flip=0,
        )
    return np.round(out.astype(np.float64) / 257.0)


def quality(sets: dict, methods: list[str], rawpy_methods: list[str]) -> dict:
    from magcam.pipeline import demosaic as dm

    descriptor = json.loads((REPO / "firmware" / "magcam_fw" / "descriptor.json").read_text())
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        dng = Path(tmp) / "mosaic.dng"
        for set_name, paths in sets.items():
            scores: dict[str, list[float]] = {m: [] for m in methods}
            scores.update({f"libraw_{m}": [] for m in rawpy_methods})
            for path in paths:
                rgb = load_rgb(path)
                m8 = mosaic_rggb(rgb)
                cfa = m8.astype(np.float32) / np.float32(255)
                for m in methods:
                    scores[m].append(cpsnr(rgb, to8(dm.demosaic(cfa, "RGGB", m))))
                for m in rawpy_methods:
                    scores[f"libraw_{m}"].append(cpsnr(rgb, rawpy_develop(m8, m, dng, descriptor)))
            result[set_name] = {
                k: {"cpsnr": round(float(np.mean(v)), 2), "per_image": [round(x, 2) for x in v]}
                for k, v in scores.items()
            }
    return result


def speed(methods: list[str], megapixels: float, repeat: int) -> dict:
    from magcam.pipeline import demosaic as dm

    h = int(round(np.sqrt(megapixels * 1e6 / 1.5) / 2)) * 2
    w = int(round(h * 1.5 / 2)) * 2
    rng = np.random.default_rng(0)
    # a plausible mosaic: a smooth gradient plus texture and noise
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cfa = (0.4 + 0.3 * np.sin(xx / 37.0) * np.cos(yy / 23.0)).astype(np.float32)
    cfa += rng.normal(0, 0.02, cfa.shape).astype(np.float32)
    out = {"width": w, "height": h, "megapixels": round(h * w / 1e6, 2), "methods": {}}
    for m in methods:
        dm.demosaic(cfa[:64, :64], "RGGB", m)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            dm.demosaic(cfa, "RGGB", m)
            times.append(time.perf_counter() - t)
        best = min(times)
        out["methods"][m] = {"seconds": round(best, 4), "ms_per_mp": round(best * 1e3 / (h * w / 1e6), 2)}
    return out


def jit_warmup() -> dict:
    """Seconds for a fresh process to import the module and run every method once (tiny input)."""
    code = (
        "import time; t=time.perf_counter(); from magcam.pipeline import demosaic as dm; t1=time.perf_counter(); "
        "dm.warm_up(); t2=time.perf_counter(); print(t1-t, t2-t1)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return {"error": r.stderr[-500:]}
    imp, warm = (float(v) for v in r.stdout.split())
    return {"import_s": round(imp, 2), "first_call_s": round(warm, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 Kodak + 3 McMaster images, 4 MP timing")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--no-rawpy", action="store_true", help="skip LibRaw's methods")
    ap.add_argument("--methods", default=None, help="comma-separated subset of our methods")
    ap.add_argument("--mp", type=float, default=None, help="megapixels for the timing (default 24, quick 4)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from magcam.pipeline import demosaic as dm

    methods = args.methods.split(",") if args.methods else list(dm.METHODS)
    rawpy_methods = [] if args.no_rawpy else list(RAWPY_METHODS)
    sets = {name: image_paths(name, args.quick) for name in ("kodak24", "mcmaster18")}
    report = {
        "quick": args.quick,
        "default": dm.DEFAULT,
        "preview": dm.PREVIEW,
        "jit_warmup": jit_warmup(),
        "quality": quality(sets, methods, rawpy_methods),
        "speed": speed(methods, args.mp or (4.0 if args.quick else 24.0), args.repeat),
    }
    report["ok"] = all(
        np.isfinite(v["cpsnr"]) for s in report["quality"].values() for v in s.values()
    ) and "error" not in report["jit_warmup"]
    if args.json:
        print(json.dumps(report))
        return 0 if report["ok"] else 1
    q = report["quality"]
    print(f"CPSNR (dB), {'quick: 3 + 3 images' if args.quick else 'Kodak24 / McMaster18'}; 10-px border")
    print(f"{'method':18s} {'kodak24':>8s} {'mcmaster18':>10s}")
    for k in q["kodak24"]:
        tag = " (default)" if k == dm.DEFAULT else " (preview)" if k == dm.PREVIEW else ""
        print(f"{k + tag:18s} {q['kodak24'][k]['cpsnr']:8.2f} {q['mcmaster18'][k]['cpsnr']:10.2f}")
    sp = report["speed"]
    print(f"\nspeed on a {sp['width']}x{sp['height']} mosaic ({sp['megapixels']} MP), best of {args.repeat}:")
    for k, v in sp["methods"].items():
        print(f"  {k:10s} {v['seconds']:7.3f} s  {v['ms_per_mp']:7.1f} ms/MP")
    jw = report["jit_warmup"]
    print(f"\nJIT warm-up in a fresh process: {jw}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
