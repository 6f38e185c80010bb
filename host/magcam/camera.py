"""Scripting API: ``with magcam.connect(port) as cam:`` then capture, events, lens control.

Usage::

    import magcam

    with magcam.connect("/dev/ttyACM0") as cam:
        print(cam.descriptor["model"], cam.firmware)
        frame = cam.capture_raw(width=1024, height=768, exposure_us=10000)
        cam.capture_dng("shot.dng")
        for ev in cam.events(timeout=2.0):
            print(ev)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from magcam_fw import protocol as P

from .frame import RawFrame
from .link import Link

DEFAULT_SIZE = (1024, 768)


class Camera:
    def __init__(self, port: str, *, connect_timeout: float = 10.0):
        self._link = Link(port)
        try:
            self.hello = self._link.open_session(timeout=connect_timeout)
        except BaseException:
            self._link.close()
            raise
        self.descriptor: dict = self._link.descriptor
        self.port = port

    @property
    def firmware(self) -> str:
        return self.hello["firmware"]

    @property
    def link(self) -> Link:
        return self._link

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> "Camera":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def events(self, timeout: float | None = None) -> Iterator[dict]:
        """Events as they arrive; ends when none comes for ``timeout`` seconds or the link closes."""
        while True:
            ev = self._link.next_event(timeout)
            if ev is None:
                return
            yield ev

    def set_lens_position(self, position: int) -> int:
        """Drive the lens actuator; returns the position reached (clamped at the end-stops)."""
        return self._link.command(P.CMD_SET_LENS, {"position": int(position)})["value"]

    def capture_raw(self, width: int | None = None, height: int | None = None, *, exposure_us: int = 10000,
                    analog_gain: float = 1.0, timeout: float | None = None) -> RawFrame:
        """Capture one RAW frame; raises FrameError if it arrives damaged or is aborted."""
        w, h = (width or DEFAULT_SIZE[0]), (height or DEFAULT_SIZE[1])
        ack = self._link.command(P.CMD_CAPTURE, {"width": w, "height": h, "exposure_us": int(exposure_us),
                                                  "analog_gain": float(analog_gain)}, timeout=1.0)
        # Generous: 2 s plus 1 s per 2 MB even over a slow full-speed USB link.
        wait = timeout if timeout is not None else 2.0 + w * h * 2 / 2e6
        frame = self._link.wait_frame(ack["value"], wait)
        frame.extra["descriptor_serial"] = self.descriptor.get("serial")
        return frame

    def capture_dng(self, path: str | os.PathLike, **kw) -> Path:
        from .dng import write_dng

        return write_dng(path, self.capture_raw(**kw), self.descriptor)


def connect(port: str, **kw) -> Camera:
    """Open a session with the module on ``port`` (a context manager)."""
    return Camera(port, **kw)
