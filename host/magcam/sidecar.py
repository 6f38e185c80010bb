"""The JSON sidecar written beside every captured DNG: all the telemetry there was at exposure.

The document is described by ``docs/sidecar.schema.json`` (JSON Schema draft 2020-12, id
``SCHEMA_ID``); ``docs/capture.md`` explains each field. In short::

    {
      "schema": "urn:magcam:capture-sidecar:1",
      "dng": {"file": "20250101-120000-1.dng", "sha256": "...", "bytes": 1573632},
      "frame": {frame header: frame_id, width, height, cfa, bits, black_level, white_level,
                exposure_us, analog_gain, timestamp_ms, lens_position},
      "capture": {"mode": "bracket", "index": 0, "number": 1, "count": 3, "ev": -2.0,
                  "base_exposure_us": 10000, "analog_gain": 1.0},
      "module": {module, serial, make, model, firmware, protocol_version, session, descriptor},
      "events": {"encoder": {...}, "attach": {...}, "power": {...}, "thermal": {...},
                 "fault": {...}, "link": {...}},           # the latest of each type, or null
      "link": {host link counters: bytes_in, crc_errors, retries, ...},
      "host": {"time": "2025-01-01T12:00:00.123+01:00", "magcam_version": "0.1.0",
               "python": "3.11.7", "port": "/dev/ttyACM0"}
    }

Two steps, because the telemetry must be taken when the frame arrives and the file name and
hash are only known once the DNG is on disk:

    telemetry = sidecar.telemetry(cam, mode="burst", index=i, count=n, base_exposure_us=e,
                                  analog_gain=g)          # in on_frame, as the frame arrives
    doc = sidecar.build(frame, telemetry, dng_name=..., dng_sha256=..., dng_bytes=...)
    data = sidecar.dumps(doc)
"""

from __future__ import annotations

import copy
import json
import platform
from datetime import datetime

from .frame import RawFrame

SCHEMA_ID = "urn:magcam:capture-sidecar:1"

# The event types whose latest instance goes in "events". The first four are always present
# (null when the module has not sent one yet); the others only once the module sent one.
REQUIRED_EVENTS = ("encoder", "attach", "power", "thermal")
OPTIONAL_EVENTS = ("fault", "link")

MODES = ("single", "burst", "bracket")

_FRAME_FIELDS = ("frame_id", "width", "height", "cfa", "bits", "black_level", "white_level", "exposure_us",
                 "analog_gain", "timestamp_ms", "lens_position")


def host_time(now: datetime | None = None) -> str:
    """Local time with its UTC offset, ISO 8601 to the millisecond."""
    return (now or datetime.now()).astimezone().isoformat(timespec="milliseconds")


def telemetry(cam, *, mode: str, index: int, count: int, base_exposure_us: int, analog_gain: float,
              ev: float | None = None, now: datetime | None = None, state: dict | None = None) -> dict:
    """Everything the sidecar needs from the session.

    ``cam`` is a connected ``magcam.Camera``. The events are the latest of each type the host
    had received when the exposure started (``state``: ``frame.extra["state_at_exposure"]``,
    taken as the device accepted the capture), else at this moment; compare their ``t`` with
    the frame's ``timestamp_ms`` (both device milliseconds) to see how old each was.
    """
    from . import __version__

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    state = dict(cam.link.state if state is None else state)  # a copy: the reader keeps replacing entries
    events = {kind: _plain(state.get(kind)) for kind in REQUIRED_EVENTS}
    events.update({kind: _plain(state[kind]) for kind in OPTIONAL_EVENTS if kind in state})
    descriptor = cam.descriptor or {}
    hello = cam.hello or {}
    return {
        "capture": {"mode": mode, "index": int(index), "number": int(index) + 1, "count": int(count),
                    "ev": None if ev is None else float(ev), "base_exposure_us": int(base_exposure_us),
                    "analog_gain": float(analog_gain)},
        "module": {
            "module": descriptor.get("module"),
            "serial": descriptor.get("serial"),
            "make": descriptor.get("make"),
            "model": descriptor.get("model"),
            "firmware": hello.get("firmware"),
            "protocol_version": hello.get("version"),
            "session": hello.get("session"),
            "descriptor": _plain(descriptor),
        },
        "events": events,
        "link": _plain(cam.link.stats()),
        "host": {"time": host_time(now), "magcam_version": __version__, "python": platform.python_version(),
                 "port": getattr(cam, "port", None)},
    }


def build(frame: RawFrame, telemetry: dict, *, dng_name: str, dng_sha256: str, dng_bytes: int) -> dict:
    """The sidecar document for ``frame`` saved as ``dng_name`` (a bare file name: the sidecar
    sits in the same directory)."""
    header = frame.header()
    doc = {
        "schema": SCHEMA_ID,
        "dng": {"file": dng_name, "sha256": dng_sha256, "bytes": int(dng_bytes)},
        "frame": _plain({k: header[k] for k in _FRAME_FIELDS}),
    }
    for key in ("capture", "module", "events", "link", "host"):
        doc[key] = copy.deepcopy(telemetry[key])
    capture = doc["capture"]
    if capture["ev"] is None and frame.extra.get("ev") is not None:
        capture["ev"] = float(frame.extra["ev"])
    return doc


def dumps(doc: dict) -> bytes:
    """The bytes written to disk: UTF-8 JSON, indented, newline-terminated."""
    return (json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def _plain(value):
    """A deep, JSON-only copy (tuples become lists; numpy scalars become Python numbers)."""
    if value is None:
        return None
    return json.loads(json.dumps(value, default=_default))


def _default(obj):
    if hasattr(obj, "item"):  # numpy scalar
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
