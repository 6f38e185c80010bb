"""`magcam demo`: the whole path on the simulator, end to end.

Start the simulated module, watch live events while a scripted hand turns the focus ring,
capture one RAW frame, write it as DNG plus a developed JPEG.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .atomic import output_problem
from .camera import connect
from .dng import write_dng
from .pipeline import develop, write_jpeg
from .report import Reporter
from .sim import Simulator

# A hand turning the ring forward, pausing, then back a little.
DEMO_SCENARIO = """\
{"t": 100, "do": "turn", "steps": 120, "rate": 400}
{"t": 600, "do": "turn", "steps": -40, "rate": 200}
"""
EVENT_WINDOW_S = 1.2
CAPTURE_SIZE = (1024, 768)


def run_demo(out_dir: Path, out: Reporter, *, scene: str | None = None, seed: int = 0) -> dict:
    problem = output_problem(out_dir / "demo.dng", make_dirs=True)  # said now, not after the run
    if problem:
        raise OSError(f"cannot write into {out_dir}: {problem}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="magcam-demo-") as tmp:
        scenario = Path(tmp) / "demo.jsonl"
        scenario.write_text(DEMO_SCENARIO)
        with Simulator(scenario=scenario, scene=scene, seed=seed) as sim:
            out.info(f"simulated module on {sim.port}")
            with connect(sim.port) as cam:
                out.info(f"connected: {cam.descriptor['model']} (firmware {cam.firmware}, serial {cam.descriptor['serial']})")
                seen = 0
                for ev in cam.events(duration=EVENT_WINDOW_S):
                    if ev["type"] != "link":
                        out.event(ev)
                        seen += 1
                out.info(f"capturing {CAPTURE_SIZE[0]}x{CAPTURE_SIZE[1]} RAW")
                frame = cam.capture_raw(*CAPTURE_SIZE)
                descriptor = cam.descriptor
                stats = cam.link.stats()
    stem = f"demo_{frame.frame_id:04d}"
    dng = write_dng(out_dir / f"{stem}.dng", frame, descriptor)
    jpg = write_jpeg(out_dir / f"{stem}.jpg", develop(frame, descriptor))
    result = {"dng": str(dng), "jpeg": str(jpg), "events": seen, "lens_position": frame.lens_position,
              "crc_errors": stats["crc_errors"]}
    out.result(result)
    return result
