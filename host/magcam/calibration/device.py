"""Calibration shots from a connected module, and storing the result on it.

Exposure is found by trial frames (the module has no auto-exposure): the chart's white patch,
or the flat field's brightest part, is brought to about 60 % of full scale. Dark frames are the
shortest exposure the module takes (1 us; light contributes ~1e-4 of a 10 ms flat) unless the
lens is covered, then they use the flat fields' exposure (dark current included).

    >>> import magcam
    >>> from magcam.calibration import device
    >>> with magcam.connect("auto") as cam:
    ...     raw, corners = device.capture_chart(cam, 1024, 768)
    ...     flats, darks, exp = device.capture_flats(cam, 1024, 768, frames=8, dark_frames=2)
    ...     device.store(cam, new_descriptor)            # checked against the device's cap
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from magcam.calibration import colorchecker
from magcam.pipeline.errors import PipelineError
from magcam.rawio import RawImage, from_frame

from magcam_fw import protocol as P

# The firmware's largest message (app.py: Link(transport, chunk_size, _MIN_PAYLOAD=4096) gives
# max(4096, chunk + 8)); a descriptor must fit in one. The HELLO of a live module says exactly.
DEFAULT_MAX_BYTES = max(4096, P.CHUNK_SIZE + 8)
RESERVE_BYTES = 384  # left free for later calibrations (focus table) when sizing the shading grid
TARGET = 0.6  # brightest signal of interest, fraction of full scale
MIN_EXPOSURE_US, MAX_EXPOSURE_US = 1, 2_000_000

Progress = Callable[[str], None]


def max_descriptor_bytes(cam) -> int:
    return int(cam.hello.get("max_payload", DEFAULT_MAX_BYTES))


def capture_raw(cam, width: int, height: int, exposure_us: int, gain: float) -> RawImage:
    """One frame as a RawImage, with the module's current descriptor (its shading map included)."""
    frame = cam.capture_raw(width, height, exposure_us=int(exposure_us), analog_gain=gain)
    return from_frame(frame, cam.descriptor, source=f"{cam.port} frame {frame.frame_id}")


def _clamp(us: float) -> int:
    return int(min(max(round(us), MIN_EXPOSURE_US), MAX_EXPOSURE_US))


def capture_chart(cam, width: int, height: int, corners=None, exposure_us: int = 10000, gain: float = 1.0,
                  progress: Progress = lambda s: None, tries: int = 5) -> tuple[RawImage, np.ndarray]:
    """A frame of the ColorChecker with its white patch at about 60 % of full scale, and the
    chart's corners (found on the first frame unless given)."""
    exp = exposure_us
    for _ in range(tries):
        progress(f"chart frame {width}x{height} at {exp} us")
        raw = capture_raw(cam, width, height, exp, gain)
        if corners is None:
            corners = colorchecker.detect(raw)
            progress("chart found at " + " ".join(f"({x:.0f},{y:.0f})" for x, y in corners))
        p = colorchecker.sample(raw, corners)
        white = float(p.rgb[colorchecker.NEUTRALS.start].max())
        if p.clipped.any():
            exp = _clamp(exp / 2)
        elif white < 0.3:
            exp = _clamp(exp * TARGET / max(white, 0.01))
        else:
            return raw, np.asarray(corners)
    raise PipelineError(f"could not expose the chart well in {tries} frames (white patch at {white:.0%} of full "
                        f"scale, {int(p.clipped.sum())} clipped patches): check the lighting")


def _bright(raw: RawImage) -> float:
    """99.9th percentile of the black-subtracted frame (its brightest CFA site), fraction of full scale."""
    black = float(np.mean(raw.black))
    top = max(np.percentile(raw.frame.data[dy::4, dx::4], 99.9) for dy in range(2) for dx in range(2))
    return float((top - black) / (raw.white - black))


def capture_flats(cam, width: int, height: int, frames: int, dark_frames: int = 1, exposure_us: int | None = None,
                  gain: float = 1.0, cover: Callable[[], None] | None = None,
                  progress: Progress = lambda s: None) -> tuple[list[RawImage], list[RawImage], int]:
    """Flat-field frames at an exposure that puts their brightest part near 60 % (or the one
    given), then ``dark_frames`` dark frames: after ``cover()`` at the same exposure when given,
    else at the shortest exposure."""
    if frames < 1:
        raise PipelineError("need at least one flat-field frame")
    exp = exposure_us or 10000
    if exposure_us is None:
        for _ in range(6):
            b = _bright(capture_raw(cam, width, height, exp, gain))
            progress(f"exposure {exp} us: brightest {b:.0%} of full scale")
            if 0.4 <= b <= 0.8:
                break
            exp = _clamp(exp * TARGET / max(b, 0.005) if b < 0.95 else exp / 3)
        else:
            raise PipelineError(f"could not expose the flat field (brightest {b:.0%} of full scale): check the light")
    flats = []
    for i in range(frames):
        progress(f"flat field {i + 1}/{frames}")
        flats.append(capture_raw(cam, width, height, exp, gain))
    darks = []
    if dark_frames:
        if cover is not None:
            cover()
        dexp = exp if cover is not None else MIN_EXPOSURE_US
        for i in range(dark_frames):
            progress(f"dark frame {i + 1}/{dark_frames} at {dexp} us")
            darks.append(capture_raw(cam, width, height, dexp, gain))
    return flats, darks, exp


def store(cam, descriptor: dict) -> None:
    """Write the descriptor to the module (it commits it atomically and uses it at once)."""
    from magcam.calibration.shading import descriptor_bytes

    size, cap = descriptor_bytes(descriptor), max_descriptor_bytes(cam)
    if size > cap:
        raise PipelineError(f"the new descriptor is {size} bytes; the module takes at most {cap}")
    cam.write_descriptor(descriptor)
