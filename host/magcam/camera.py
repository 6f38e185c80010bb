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

import contextlib
import errno
import json
import math
import numbers
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from magcam_fw import protocol as P

from .discovery import PortInfo, find_serial, resolve
from .frame import RawFrame
from .link import (
    CLOSED_BY_HOST, DEFAULT_POWER_BUDGET_MW, CommandRejected, FrameError, Link, LinkClosed, LinkError, check_budget,
)

DEFAULT_SIZE = (1024, 768)
_RAIL_COMING_UP = ("requesting", "granted", "soft_start")
RAIL_SETTLE_S = 3.0  # budget handshake + soft start take tens of ms; a retry back-off up to 8 s


@dataclass
class LostFrame:
    """A frame of a burst or bracket that could not be captured, and why."""

    index: int
    reason: str


@dataclass
class CaptureResult:
    """What a burst or bracket produced: the frames in order, and exactly which were lost."""

    frames: list[RawFrame] = field(default_factory=list)
    lost: list[LostFrame] = field(default_factory=list)
    reconnects: int = 0  # new sessions the series needed: after an unplug, or a reboot of the module
    reattaches: int = 0  # times the series waited for the module to be snapped back on

    @property
    def complete(self) -> bool:
        return not self.lost


MAX_EV = 30  # a bracket step beyond +-30 EV is outside any exposure range (1 us .. 60 s is 26 EV)


def check_evs(evs) -> list[float]:
    """A bracket's EVs as floats, or a ValueError saying what is wrong with them."""
    if isinstance(evs, (str, bytes)) or not isinstance(evs, Sequence) or not evs:
        raise ValueError(f"evs must be a non-empty sequence of numbers, e.g. [-2, 0, 2], not {evs!r}")
    for ev in evs:
        if isinstance(ev, bool) or not isinstance(ev, numbers.Real) or not -MAX_EV <= ev <= MAX_EV:
            raise ValueError(f"each EV must be a number within -{MAX_EV}..{MAX_EV}, not {ev!r}")
    return [float(ev) for ev in evs]


def _frame_request(width, height, exposure_us, analog_gain) -> dict:
    """A CAPTURE/STREAM request's common fields, checked on the host with the caps the device
    uses (protocol.check_capture): a clear ValueError here rather than a struct error or a NAK."""
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ValueError(f"{name} must be a whole number of pixels, not {v!r}")
    for name, v in (("exposure_us", exposure_us), ("analog_gain", analog_gain)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, not {v!r}")
    exposure = round(exposure_us)
    why = P.check_capture(int(width), int(height), exposure, float(analog_gain))
    if why is None and not struct.unpack("<f", struct.pack("<f", analog_gain))[0] > 0:
        why = "gain"  # so small that the wire's float32 makes it 0
    if why is not None:
        if why.startswith("exposure"):
            raise ValueError(f"exposure_us {exposure_us} is out of range (1..60000000)")
        if why.startswith("gain"):
            raise ValueError(f"analog_gain {analog_gain} is out of range (above 0, at most 64)")
        raise ValueError(f"{why}: {width}x{height} (each side even and 16..{P.MAX_FRAME_DIM} px, "
                         f"at most {P.MAX_FRAME_BYTES >> 20} MiB at 16 bits a pixel)")
    return {"width": int(width), "height": int(height), "exposure_us": exposure, "analog_gain": float(analog_gain)}


class Camera:
    """A connected module. ``port`` is a device path or ``"auto"`` (the single board found).

    Unplug is normal: when the link drops (or the module reboots), burst and bracket captures
    reconnect to the same module, found again by its USB serial number wherever it reappears,
    within ``reconnect_timeout`` seconds.

    The host plays the phone: it grants the module's power requests up to ``power_budget_mw``
    (default 4500 mW, 5 V at 0.9 A; 0 grants nothing). ``grant_power`` changes it while
    connected."""

    _entered = 0  # depth of ``with`` blocks on this camera

    def __init__(self, port: str = "auto", *, connect_timeout: float = 10.0, reconnect_timeout: float = 15.0,
                 max_frame_bytes: int = P.MAX_FRAME_BYTES, power_budget_mw: int = DEFAULT_POWER_BUDGET_MW):
        check_budget(power_budget_mw)  # before any port is opened
        info = resolve(port)
        self.port = info.device
        self.usb_serial = info.serial_number
        self.reconnect_timeout = reconnect_timeout
        self.max_frame_bytes = max_frame_bytes  # the most a (lying) device can make us allocate
        self._link = Link(self.port, max_frame_bytes=max_frame_bytes, power_budget_mw=power_budget_mw)
        try:
            self._link.open_session(timeout=connect_timeout)
        except BaseException:
            self._link.close()
            raise
        # Same protocol but other firmware: it works, but say exactly how to bring it in line.
        from .deploy import version_advice

        self.version_warning = version_advice(self.hello["firmware"], self.hello["version"], None, port=self.port)
        if self.version_warning:
            self._link._push({"type": "log", "t": self.hello["uptime_ms"], "level": P.LOG_WARNING,
                              "text": self.version_warning})

    @property
    def hello(self) -> dict:
        """The module's latest HELLO: it changes when a re-attach or a reboot opens a new session."""
        return self._link.hello

    @property
    def descriptor(self) -> dict:
        return self._link.descriptor

    @property
    def firmware(self) -> str:
        return self.hello["firmware"]

    @property
    def link(self) -> Link:
        return self._link

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> "Camera":
        self._entered += 1
        return self

    def __exit__(self, *exc) -> None:
        # Re-entrant: a helper's own ``with cam:`` inside the caller's does not close the
        # caller's camera; the outermost block does.
        self._entered -= 1
        if self._entered <= 0:
            self._entered = 0
            self.close()

    def events(self, timeout: float | None = None, duration: float | None = None) -> Iterator[dict]:
        """Events in order, none missed: first those queued since connect (or since they were
        last taken; the connect-time snapshot of the module's state among them), then as they
        arrive. ``clear_events()`` first to watch only what comes next. Ends when none comes
        for ``timeout`` seconds, when ``duration`` seconds have passed (telemetry keeps coming:
        this is how to watch for a while), or when the link closes."""
        end = None if duration is None else time.monotonic() + duration
        while True:
            wait = timeout
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return
                wait = left if wait is None else min(wait, left)
            ev = self._link.next_event(wait)
            if ev is None:
                if end is None or self._link.closed or timeout is not None:
                    return
                continue
            yield ev

    def clear_events(self) -> int:
        """Drop the queued events, so ``events()`` gives only what comes next (the properties,
        ``lens_position``, ``power``, keep the latest values); returns how many were dropped."""
        return self._link.clear_events()

    @property
    def lens_position(self) -> int | None:
        """Where the lens is now, as the module last reported it (ring or host moves)."""
        ev = self._link.state.get("encoder")
        return None if ev is None else ev["lens"]

    def set_lens_position(self, position: int) -> int:
        """Drive the lens actuator; returns the position reached (clamped at the end-stops),
        which ``lens_position`` reports from now on."""
        if (isinstance(position, bool) or not isinstance(position, numbers.Integral)
                or not -(1 << 31) <= position < (1 << 31)):
            raise ValueError(f"lens position must be a whole number of steps, not {position!r}")
        reached = self._link.command(P.CMD_SET_LENS, {"position": int(position)})["value"]
        ev = self._link.state.get("encoder")  # the device's next event would say it only later
        self._link.state["encoder"] = {**(ev or {"type": "encoder"}), "lens": reached}
        return reached

    def autofocus(self, **kw):
        """Host-driven contrast AF; leaves the lens at the sharpest position. Returns an
        :class:`~magcam.autofocus.AfResult`; keywords as :func:`magcam.autofocus.autofocus`."""
        from .autofocus import autofocus

        return autofocus(self, **kw)

    def capture_raw(self, width: int | None = None, height: int | None = None, *, exposure_us: int = 10000,
                    analog_gain: float = 1.0, timeout: float | None = None) -> RawFrame:
        """Capture one RAW frame; raises FrameError if it arrives damaged or is aborted."""
        w = DEFAULT_SIZE[0] if width is None else width  # 0 is refused as a size, not taken as "default"
        h = DEFAULT_SIZE[1] if height is None else height
        # Right after connect or re-attach the rail is still coming up: give it a moment.
        request = _frame_request(w, h, exposure_us, analog_gain)
        self._link.wait_state("power", lambda e: e["state"] not in _RAIL_COMING_UP, RAIL_SETTLE_S)
        # Generous: the exposure, plus 2 s, plus 1 s per 2 MB even over a slow full-speed USB link.
        wait = timeout if timeout is not None else 2.0 + request["exposure_us"] / 1e6 + w * h * 2 / 2e6
        ack = self._send_capture(request, wait)
        # The exposure starts as the device accepts the command: what we knew then is what a
        # sidecar should say about the module at exposure (the frame itself arrives later).
        state_at_exposure = dict(self._link.state)
        frame = self._link.wait_frame(ack["value"], wait)
        frame.extra["descriptor_serial"] = self.descriptor.get("serial")
        frame.extra["state_at_exposure"] = state_at_exposure
        return frame

    def _send_capture(self, request: dict, wait: float) -> dict:
        """Send a capture; if the module is still sending a frame this host gave up on (a capture
        interrupted with Ctrl-C in a REPL, or timed out), wait up to ``wait`` for it to end
        instead of failing as busy: the module sends one frame at a time."""
        try:
            return self._link.command(P.CMD_CAPTURE, request, timeout=1.0)
        except CommandRejected as e:
            if e.reason != "busy" or not self._link.has_abandoned() or not self._link.wait_abandoned(wait):
                raise
        deadline = time.monotonic() + 1.0  # it has ended the frame: the busy flag clears as it does
        while True:
            try:
                return self._link.command(P.CMD_CAPTURE, request, timeout=1.0)
            except CommandRejected as e:
                if e.reason != "busy" or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @property
    def power(self) -> dict | None:
        """The latest power event: state, mV, mA, budget."""
        return self._link.state.get("power")

    @property
    def power_budget_mw(self) -> int:
        """What the host, playing the phone, grants the module's power requests up to (0: nothing)."""
        return self._link.power_budget_mw or 0

    def grant_power(self, mw: int) -> int:
        """Play the phone's side of the power handshake (docs/power.md): grant the module ``mw``
        milliwatts now, and its later requests (after a re-attach, a withdrawal, a reboot) up to
        ``mw``. Returns the grant the module took: ``mw``, or 0 for one below its
        ``min_grant_mw`` (2000 by default), which a requesting rail refuses and a granted one
        takes as a withdrawal (switch open, requesting again; not a fault). A rail that is on
        then judges over_budget against the new grant. ``grant_power(0)``: a phone that stops
        its reverse charging; nothing is granted until the next ``grant_power``."""
        return self._link.grant_power(mw)

    def faults(self) -> list[dict]:
        """The module's persisted fault log, oldest first (it survives resets)."""
        out, first = [], 0
        while True:
            ack = self._link.command(P.CMD_FAULTS_READ, {"first": first})
            data = ack["data"]
            for off in range(0, len(data) - P.FAULT_RECORD_SIZE + 1, P.FAULT_RECORD_SIZE):
                boot, t, cause, value = struct.unpack_from(P.FAULT_RECORD, data, off)
                name = P.FAULT_CAUSES[cause] if cause < len(P.FAULT_CAUSES) else f"unknown({cause})"
                out.append({"boot": boot, "t": t, "cause": name, "value": value})
            first += len(data) // P.FAULT_RECORD_SIZE
            if not data or first >= ack["value"]:
                return out

    def clear_faults(self) -> int:
        """Erase the fault log; returns how many records it held."""
        return self._link.command(P.CMD_FAULTS_CLEAR)["value"]

    def reset_power(self) -> None:
        """Clear a latched-off power rail (after the cause was dealt with)."""
        self._link.command(P.CMD_POWER_RESET)

    def write_descriptor(self, descriptor: dict) -> None:
        """Replace the module descriptor on the device (committed atomically on the last chunk).
        ValueError, before anything is sent, for what JSON cannot carry (NaN) or the module
        cannot hold (longer than HELLO's ``max_payload``)."""
        try:
            blob = json.dumps(descriptor, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise ValueError(f"the descriptor cannot be written as JSON: {e}") from None
        cap = self.hello["max_payload"]
        if len(blob) > cap:
            raise ValueError(f"the descriptor is {len(blob)} bytes as JSON; the module holds at most {cap}")
        step = self.hello["rx_max_payload"] - 4
        for off in range(0, len(blob), step):
            self._link.command(P.CMD_DESCRIPTOR_WRITE, {"offset": off, "total": len(blob),
                                                         "data": blob[off : off + step]}, timeout=2.0)
        self._link.descriptor = json.loads(blob)

    def start_stream(self, width: int, height: int, *, fps: float = 10.0, exposure_us: int = 10000,
                     analog_gain: float = 1.0) -> None:
        """Live frames at up to ``fps`` (0.1..60; the module may derate when hot); read with
        next_frame(). Out-of-range arguments raise ValueError before anything is sent."""
        request = _frame_request(width, height, exposure_us, analog_gain)
        if (isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps)
                or not 1 <= round(fps * 10) <= 600):
            raise ValueError(f"fps must be 0.1..60 frames per second, not {fps!r} (stop_stream() stops)")
        self._link.frames_from_now()  # next_frame() gives this stream's frames, not older ones
        self._link.command(P.CMD_STREAM, dict(request, fps_x10=round(fps * 10)))

    def stop_stream(self) -> None:
        self._link.command(P.CMD_STREAM, {"width": 16, "height": 16, "exposure_us": 1, "analog_gain": 1.0,
                                          "fps_x10": 0})

    def next_frame(self, timeout: float = 5.0) -> RawFrame:
        return self._link.next_frame(timeout)

    def capture_burst(self, n: int, width: int | None = None, height: int | None = None, *,
                      exposure_us: int = 10000, analog_gain: float = 1.0, retries: int = 2,
                      on_frame=None) -> CaptureResult:
        """``n`` frames in a row. A frame that arrives broken, or whose transfer an unplug cut
        short, is taken again (up to ``retries`` times, reconnecting first if the module went
        away); what still fails is listed in ``lost``, never silently dropped.
        ``on_frame(index, frame)`` is called as each frame arrives (for progress, or to write it)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"a burst is 1 or more frames, not {n!r}")
        return self._series([(exposure_us, {}) for _ in range(n)], width, height, analog_gain, retries, on_frame)

    def capture_bracket(self, evs: Sequence[float], width: int | None = None, height: int | None = None, *,
                        exposure_us: int = 10000, analog_gain: float = 1.0, retries: int = 2,
                        on_frame=None) -> CaptureResult:
        """One frame per exposure value: ``exposure_us * 2**ev`` (EV from the base exposure),
        clamped to the sensor's limits; each frame's ``extra["ev"]`` says which it was."""
        check_evs(evs)
        _frame_request(16, 16, exposure_us, analog_gain)  # the base exposure and gain, checked before any scaling
        steps = [(min(max(round(exposure_us * 2.0 ** ev), 1), 60_000_000), {"ev": float(ev)}) for ev in evs]
        return self._series(steps, width, height, analog_gain, retries, on_frame)

    def _series(self, steps, width, height, analog_gain, retries, on_frame) -> CaptureResult:
        if isinstance(retries, bool) or not isinstance(retries, numbers.Integral) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, not {retries!r}")
        if on_frame is not None and not callable(on_frame):  # said before a frame is exposed, not after
            raise ValueError(f"on_frame must be a function on_frame(index, frame), not {on_frame!r}")
        result = CaptureResult()
        gone = None  # why the module is gone for good: the frames left are lost without waiting again
        mark = (self._link, self._link.sessions_resumed)
        try:
            for i, (exposure, extra) in enumerate(steps):
                if gone is not None:
                    result.lost.append(LostFrame(i, gone))
                    continue
                mark = self._count_resumes(result, mark)
                frame, reason, gone = self._persistent_capture(width, height, exposure, analog_gain, retries, result)
                if frame is None:
                    result.lost.append(LostFrame(i, reason))
                    continue
                frame.extra.update(extra, index=i)
                result.frames.append(frame)
                if on_frame:
                    on_frame(i, frame)
        except BaseException as e:
            # Stopped by on_frame's own error, Ctrl-C, a refusal of the first frame: the frames
            # already taken are not lost with the exception, they ride on it as ``e.result``.
            done = {f.extra["index"] for f in result.frames} | {lf.index for lf in result.lost}
            result.lost.extend(LostFrame(j, f"not taken: the series stopped ({type(e).__name__})")
                               for j in range(len(steps)) if j not in done)
            e.result = result
            e.add_note(f"{len(result.frames)} frame(s) of the series were taken before this; they are in "
                       "the exception's .result (a CaptureResult)")
            raise
        self._count_resumes(result, mark)
        return result

    def _count_resumes(self, result: CaptureResult, mark: tuple) -> tuple:
        """Add to ``reconnects`` the sessions the link opened again by itself since ``mark`` (the
        module rebooted, or ended ours, and beaconed); the new mark. (A reconnect by reopening
        the port replaces the link and is counted where it happens.)"""
        link, resumed = mark
        if self._link is link:
            result.reconnects += link.sessions_resumed - resumed
        return self._link, self._link.sessions_resumed

    def _persistent_capture(self, width, height, exposure, analog_gain, retries, result):
        """(frame, "", None), or (None, why the last try failed, None), or, when the module is
        gone for good, (None, why, what to say of the frames left)."""
        reason = ""
        failures = 0
        accepted = False  # the module took this frame on once: it was attached when the run began
        while failures <= retries:
            try:
                return self.capture_raw(width, height, exposure_us=exposure, analog_gain=analog_gain), "", None
            except FrameError as e:
                reason = e.reason
                failures += 1
                accepted = True
            except CommandRejected as e:
                started = bool(result.frames or result.lost) or accepted
                if e.code == P.NAK_NOT_ATTACHED and started:
                    # Snapped off (or the rail cut for a fault) between two frames: hot-swap is
                    # normal, so wait for the rail as for an unplugged cable. Not a failed try,
                    # unless the rail already said "on" (a module that refuses anyway).
                    power = self._link.state.get("power") or {}
                    if power.get("state") == "on":
                        failures += 1
                        reason = f"refused while its rail is on: {e.message}"
                        time.sleep(0.05)
                        continue
                    if not self._wait_rail():
                        why = (f"the module was detached (sensor rail off) and its rail was not back on "
                               f"within {self.reconnect_timeout:g} s")
                        return None, why, f"not taken: {why}"
                    result.reattaches += 1
                elif e.code == P.NAK_TOO_HOT and started:
                    # Cooling takes minutes, not a retry's 50 ms: the frames left are lost now.
                    why = f"the module is too hot: {e.message}"
                    return None, why, f"not taken: {why}"
                elif e.code == P.NAK_BUSY:  # a stream frame in progress: the next slot is free
                    reason = f"device busy: {e.message}"
                    failures += 1
                    time.sleep(0.05)
                elif e.code == P.NAK_NO_SESSION:
                    failures += 1
                    reason = f"link lost: {e}"
                    if not self._reconnect():
                        return None, reason + " (module did not come back)", self._gone_unplugged()
                    result.reconnects += 1
                elif started:
                    # Refused mid-series: the frames already taken must not be lost with a raise.
                    why = f"refused by the module: {e.reason}: {e.message}"
                    return None, why, f"not taken: {why}"
                else:
                    raise
            except LinkClosed as e:
                if self._link.close_reason == CLOSED_BY_HOST:  # close() was called: not an unplug
                    raise
                failures += 1
                reason = f"link lost: {e}"  # unplugged, or the module rebooted
                if not self._reconnect():
                    return None, reason + " (module did not come back)", self._gone_unplugged()
                result.reconnects += 1
        return None, reason, None

    def _gone_unplugged(self) -> str:
        return f"not taken: the module was unplugged and did not come back within {self.reconnect_timeout:g} s"

    def _wait_rail(self) -> bool:
        """Wait (up to ``reconnect_timeout``) for the sensor rail to be on again; False if it is
        not, or if it latched off (a repeated fault: it will not come back by itself)."""
        ev = self._link.wait_state("power", lambda e: e["state"] in ("on", "latched"), self.reconnect_timeout)
        return ev is not None and ev["state"] == "on"

    def _reconnect(self) -> bool:
        """Find the same module again and open a new session with it; False after the timeout."""
        self._link.close()
        deadline = time.monotonic() + self.reconnect_timeout
        while time.monotonic() < deadline:
            info = find_serial(self.usb_serial) if self.usb_serial else PortInfo(self.port)
            if info is not None and os.path.exists(info.device):
                try:
                    link = Link(info.device, max_frame_bytes=self.max_frame_bytes,
                                power_budget_mw=self.power_budget_mw)  # the phone stays the same
                except LinkError:
                    link = None
                if link is not None:
                    try:
                        link.open_session(timeout=min(3.0, max(deadline - time.monotonic(), 0.1)))
                        same = link.descriptor.get("serial") == self.descriptor.get("serial")
                    except LinkError:
                        same = False
                    if same:
                        self._link, self.port = link, info.device
                        return True
                    link.close()  # not answering yet, or another module on that port
            time.sleep(0.1)
        return False

    def capture_dng(self, path: str | os.PathLike, *, overwrite: bool = False, **kw) -> Path:
        """Capture one frame (``capture_raw``'s keywords) and write it to ``path`` as a DNG,
        atomically. An existing file is kept (FileExistsError) unless ``overwrite``; a name
        that does not end in .dng (ValueError) or an output that cannot be written (OSError)
        is refused before the exposure."""
        from .atomic import link_new, output_problem
        from .dng import write_dng

        path = Path(path)
        if path.suffix.lower() != ".dng":
            raise ValueError(f"{path}: capture_dng writes a DNG, so the name must end in .dng; nothing was captured")
        why = output_problem(path)
        if why is not None:
            raise OSError(f"{path}: {why}; nothing was captured")
        if not overwrite and os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists (overwrite=True replaces it); nothing was captured", str(path))
        frame = self.capture_raw(**kw)
        if overwrite:
            return write_dng(path, frame, self.descriptor)
        stage = write_dng(path.with_name(f".{path.name}.{os.getpid()}.new"), frame, self.descriptor)
        try:  # the name appears complete, and never over a file that appeared meanwhile
            if not link_new(stage, path):
                e = FileExistsError(errno.EEXIST, "appeared during the capture; the frame is the error's .frame",
                                    str(path))
                e.frame = frame  # not lost: the script can save it elsewhere
                raise e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stage)
        return path


def connect(port: str = "auto", **kw) -> Camera:
    """Open a session with the module on ``port`` (a device path, or "auto"); a context manager."""
    return Camera(port, **kw)
