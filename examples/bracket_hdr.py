"""Capture an exposure bracket (-2, 0, +2 EV), write each frame as DNG, then merge them into one
HDR: a linear DNG and a tone-mapped JPEG (what `magcam hdr` does).

    python examples/bracket_hdr.py [--port auto] [--out bracket]
"""

import argparse
from pathlib import Path

import magcam
from magcam import hdr
from magcam.dng import write_dng

ap = argparse.ArgumentParser()
ap.add_argument("--port", default="auto")
ap.add_argument("--out", type=Path, default=Path("bracket"))
args = ap.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

with magcam.connect(args.port) as cam:
    result = cam.capture_bracket([-2, 0, 2], 1024, 768, exposure_us=10000)
    paths = []
    for frame in result.frames:
        ev = frame.extra["ev"]
        path = write_dng(args.out / f"bracket_{ev:+.0f}ev.dng", frame, cam.descriptor)
        paths.append(path)
        print(f"{path}  {frame.exposure_us} us  mean {frame.data.mean():.0f}")
    if not result.complete:
        raise SystemExit(f"lost {len(result.lost)} frame(s) of the bracket; not merging")

merged = hdr.merge_files(paths, args.out / "hdr")
print(f"HDR: {merged['dng']} + {merged['jpeg']} (reference {Path(merged['reference_file']).name}, "
      f"BaselineExposure {merged['baseline_exposure']:+.2f})")
