"""Capture a burst of RAW frames to DNG; unplugging the module mid-burst is survived.

    python examples/capture_burst.py [--port auto] [--count 5] [--out burst]
"""

import argparse
from pathlib import Path

import magcam
from magcam.dng import write_dng

ap = argparse.ArgumentParser()
ap.add_argument("--port", default="auto")
ap.add_argument("--count", type=int, default=5)
ap.add_argument("--out", type=Path, default=Path("burst"))
args = ap.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

with magcam.connect(args.port) as cam:
    def save(i, frame):
        path = write_dng(args.out / f"burst_{i:03d}.dng", frame, cam.descriptor)
        print(f"{path}  exposure {frame.exposure_us} us  lens {frame.lens_position}")

    result = cam.capture_burst(args.count, 1024, 768, exposure_us=8000, on_frame=save)
    for lost in result.lost:
        print(f"frame {lost.index} lost: {lost.reason}")
    raise SystemExit(0 if result.complete else 1)
