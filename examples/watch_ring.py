"""Watch the focus ring, attach state and power for a few seconds, then drive the lens.

    python examples/watch_ring.py [--port auto] [--seconds 5]
"""

import argparse

import magcam

ap = argparse.ArgumentParser()
ap.add_argument("--port", default="auto")
ap.add_argument("--seconds", type=float, default=5.0)
args = ap.parse_args()

with magcam.connect(args.port) as cam:
    print(f"{cam.descriptor['model']} serial {cam.descriptor['serial']}, firmware {cam.firmware}")
    for ev in cam.events(duration=args.seconds):
        if ev["type"] == "encoder":
            print(f"ring {ev['count']:+5d}  lens {ev['lens']:4d}  {ev['velocity']:+5d}/s")
        elif ev["type"] in ("attach", "fault"):
            print(ev)
    print("power:", cam.power)
    was = cam.lens_position
    print("lens moved to", cam.set_lens_position(250), "was", was)
