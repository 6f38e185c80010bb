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
    """The registry directory, created if missing (OSError with the reason if it cannot be)."""
    env = os.environ.get("MAGCAM_SIM_REGISTRY")
    path = Path(env) if env else Path(tempfile.gettempdir()) / f"magcam-sim-{os.getuid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"simulator registry {path} is not a directory"
                                 + (" (MAGCAM_SIM_REGISTRY)" if env else "")) from None
    return path


def _valid(entry) -> bool:
    """An entry this version wrote: anything else (another tool's file, a half-edited one) is
    not a simulator to offer."""
    return (isinstance(entry, dict) and isinstance(entry.get("device"), str)
            and all(isinstance(entry.get(k), int) and not isinstance(entry.get(k), bool) and entry[k] > 0
                    for k in ("process", "vid", "pid"))
            and isinstance(entry.get("serial_number"), str))


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
    try:
        paths = sorted(registry_dir().glob("*.json"))
    except OSError:  # no usable registry: no simulators to find (starting one says why)
        return out
    for path in paths:
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not _valid(entry):
            continue
        if _alive(entry["process"]) and os.path.exists(entry["device"]):
            out.append(entry)
        else:
            path.unlink(missing_ok=True)  # a simulator killed outright cannot unregister itself
    return out


def entry_for(device: str) -> dict | None:
    """The live simulator serving ``device`` (any path to the same pty), or None."""
    real = os.path.realpath(device)
    return next((e for e in entries() if os.path.realpath(e["device"]) == real), None)
