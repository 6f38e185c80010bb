"""Autofocus from the host, then capture a sharp frame: contrast AF commands lens positions over
the protocol, measures each frame and leaves the lens at the sharpest one (`magcam focus --sweep`).

    python examples/autofocus.py [--port auto] [--out sharp.dng]

With the simulator, give the scene a distance so the lens has something to focus on:
``magcam sim --focus-distance 1.5``.
"""

import argparse
from pathlib import Path

import magcam
from magcam.autofocus import AutofocusFailed

ap = argparse.ArgumentParser()
ap.add_argument("--port", default="auto")
ap.add_argument("--out", type=Path, default=Path("sharp.dng"))
args = ap.parse_args()

with magcam.connect(args.port) as cam:
    try:
        af = cam.autofocus(on_point=lambda n, pos, measure: print(f"  frame {n:2d}  lens {pos:5d}  focus {measure:.4f}"))
    except AutofocusFailed as e:  # a featureless region: the lens is back where it was
        raise SystemExit(f"error: {e}")
    print(f"focused at lens position {af.position} (fitted peak {af.peak:.2f}), "
          f"{af.frames} frames in {af.seconds:.1f} s")
    path = cam.capture_dng(args.out, width=1024, height=768)
    print(f"{path} at lens {cam.lens_position}")
