"""Move a running simulator's scene from another process: the simulated "place the target at D m".

A person calibrating focus puts a target at each distance; against `magcam sim` the calibration
command writes the distance to a small control file beside the simulator's registry entry, and
the simulator applies it before the next frame it renders. Boards have no such file: the
command then asks the person instead.

Usage::

    from magcam.sim import scenectl
    if not scenectl.set_scene_distance(cam.port, 1.0):   # False: not a simulator on this machine
        input("place the target at 1 m, then press Enter")

    watcher = scenectl.Watcher(control_path(os.getpid(), port))  # in the simulator
    watcher.apply(sensor)                                        # before each frame
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_bytes_atomic
from . import registry


def control_path(pid: int, device: str) -> Path:
    # Not *.json: the registry lists those as simulators.
    return registry.registry_dir() / f"{pid}-{Path(device).name}.scene"


def set_scene_distance(device: str, metres: float | None) -> bool:
    """Tell the simulator serving ``device`` to put its scene at ``metres`` (None: no defocus).
    False if no running simulator serves that device."""
    entry = registry.entry_for(device)
    if entry is None:
        return False
    write_bytes_atomic(control_path(entry["process"], entry["device"]), json.dumps({"focus_distance": metres}).encode())
    return True


class Watcher:
    """Applies the control file to a SensorModel when it changes (one stat per frame)."""

    def __init__(self, path: Path):
        self.path = path
        self._seen = None

    def apply(self, sensor) -> None:
        try:
            st = self.path.stat()
        except OSError:
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._seen:
            return
        self._seen = stamp
        try:
            sensor.scene_distance_m = json.loads(self.path.read_text())["focus_distance"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a bad request leaves the scene where it was

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
