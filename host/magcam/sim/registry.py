"""Where running simulators announce themselves with a USB-like identity, so `magcam ports`,
`--port auto` and hot-plug reconnection find a simulated module as they find a board.

One small JSON file per running simulator in ``registry_dir()`` (``$MAGCAM_SIM_REGISTRY``, or
a per-user directory under the temp dir). An entry whose process is gone is stale and ignored.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..atomic import write_bytes_atomic

# pid.codes' test VID/PID: never a real product, so a simulator cannot be mistaken for a board.
SIM_VID = 0x1209
SIM_PID = 0x0001


def registry_dir() -> Path:
    env = os.environ.get("MAGCAM_SIM_REGISTRY")
    path = Path(env) if env else Path(tempfile.gettempdir()) / f"magcam-sim-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def register(device: str, serial_number: str, description: str) -> Path:
    entry = {"device": device, "vid": SIM_VID, "pid": SIM_PID, "serial_number": serial_number,
             "description": description, "process": os.getpid()}
    path = registry_dir() / f"{os.getpid()}-{Path(device).name}.json"
    write_bytes_atomic(path, json.dumps(entry).encode())
    return path


def unregister(path: Path) -> None:
    path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def entries() -> list[dict]:
    """Live simulators: their device, USB-like ids and serial number."""
    out = []
    for path in sorted(registry_dir().glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if _alive(int(entry.get("process", 0))) and os.path.exists(entry.get("device", "")):
            out.append(entry)
        else:
            path.unlink(missing_ok=True)  # a simulator killed outright cannot unregister itself
    return out
