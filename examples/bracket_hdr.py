"""Capture an exposure bracket (-2, 0, +2 EV) and write each frame as DNG.

    python examples/bracket_hdr.py [--port auto] [--out bracket]
"""

import argparse
from pathlib import Path

import magcam
from magcam.dng import write_dng

ap = argparse.ArgumentParser()
ap.add_argument("--port", default="auto")
ap.add_argument("--out", type=Path, default=Path("bracket"))
args = ap.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

with magcam.connect(args.port) as cam:
    result = cam.capture_bracket([-2, 0, 2], 1024, 768, exposure_us=10000)
    for frame in result.frames:
        ev = frame.extra["ev"]
        path = write_dng(args.out / f"bracket_{ev:+.0f}ev.dng", frame, cam.descriptor)
        print(f"{path}  {frame.exposure_us} us  mean {frame.data.mean():.0f}")
    raise SystemExit(0 if result.complete else 1)
