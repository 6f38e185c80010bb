"""Host end of the magcam protocol over pyserial.

A reader thread decodes everything the device sends; commands wait for their ACK/NAK and are
retried with the same sequence number (the device answers a retry without acting twice);
events go to a bounded queue; RAW frames are assembled, bounded by the protocol's caps, and
checked (contiguous chunks, byte count, CRC-32) before anyone sees them.

Usage::

    with Link("/dev/ttyACM0") as link:
        hello = link.open_session()
        ack = link.command(protocol.CMD_PING)
        ev = link.next_event(timeout=1.0)
"""

from __future__ import annotations

import collections
import json
import random
import re
import threading
import time

import numpy as np
import serial

from magcam_fw import protocol as P

from .discovery import port_hint
from .events import to_event
from .frame import RawFrame


DEFAULT_POWER_BUDGET_MW = 4500  # what a phone's reverse charging comfortably gives (5 V, 0.9 A)


CLOSED_BY_HOST = "closed by host"  # close_reason after close(): not a loss to make good


class LinkError(RuntimeError):
    """The link failed: closed, timed out, or the device broke the protocol."""


class LinkClosed(LinkError):
    pass


class CommandTimeout(LinkError):
    pass


class CommandRejected(LinkError):
    def __init__(self, command: str, code: int, message: str):
        name = P.NAK_NAMES[code] if 0 <= code < len(P.NAK_NAMES) else str(code)
        super().__init__(f"{command} rejected by the device: {name}: {message}")
        self.code = code
        self.reason = name
        self.message = message


def check_budget(mw) -> int:
    """A power grant in mW: an int 0..65535 (the wire's u16)."""
    if isinstance(mw, bool) or not isinstance(mw, int) or not 0 <= mw <= 0xFFFF:
        raise ValueError(f"power budget must be an int 0..65535 mW, got {mw!r}")
    return mw


class FrameError(LinkError):
    """A frame arrived broken or was aborted; ``frame_id`` says which (None: no frame came)."""

    def __init__(self, frame_id: int | None, reason: str):
        super().__init__(reason if frame_id is None else f"frame {frame_id}: {reason}")
        self.frame_id = frame_id
        self.reason = reason


class _Assembly:
    def __init__(self, hdr: dict):
        self.hdr = hdr
        self.buf = np.empty(hdr["total_bytes"], dtype=np.uint8)
        self.received = 0
        self.crc = 0


class Link:
    HEARTBEAT_S = 1.0
    # A device that stops reading (firmware hung, USB stalled) fills the port's buffer and a
    # write would block for as long as it stays deaf; past this the link is given up instead.
    WRITE_TIMEOUT_S = 2.0

    def __init__(self, port: str, *, baudrate: int = 115200, event_queue: int = 10000,
                 max_frame_bytes: int = P.MAX_FRAME_BYTES, exclusive: bool = True,
                 power_budget_mw: int | None = DEFAULT_POWER_BUDGET_MW):
        try:
            self.ser = serial.Serial(port, baudrate=baudrate, timeout=0.05, exclusive=exclusive,
                                     write_timeout=self.WRITE_TIMEOUT_S)
        except (serial.SerialException, OSError) as e:
            hint = port_hint(str(e))
            raise LinkError(f"cannot open {port}: {e}" + (f" -- {hint}" if hint else "")) from None
        self.port = port
        self.ser.reset_input_buffer()  # stale bytes from before we opened the port
        self.max_frame_bytes = max_frame_bytes
        # The host plays the phone: it grants the module's power requests up to this budget
        # (None or 0: never; the caller grants with CMD_POWER_GRANT itself, or grant_power).
        self.power_budget_mw = check_budget(power_budget_mw) if power_budget_mw is not None else None
        self._grant_refused: int | None = None  # an automatic grant the module did not take
        self.state: dict[str, dict] = {}  # the latest event of each type
        self._chores: collections.deque = collections.deque()  # commands the reader may not wait on
        self._dec = P.Decoder()
        self._enc = P.Encoder(1024)
        self._seq = random.randrange(1, 0xFFFF)
        self._wlock = threading.Lock()
        self._cond = threading.Condition()
        self._replies: dict[int, dict] = {}
        self._events: collections.deque = collections.deque(maxlen=event_queue)
        self.events_dropped = 0
        self._frames: collections.OrderedDict[int, RawFrame | FrameError] = collections.OrderedDict()
        self._asm: _Assembly | None = None
        # Frame ids count from 1 at every boot: whenever the module may have started over (it
        # ended our session), frames of before are forgotten and their waiters told at once.
        self._frame_epoch = 0
        self.last_frame_id = 0  # the newest id the module began a frame with, this epoch
        self._abandoned: set[int] = set()  # ids a wait_frame gave up on: a late arrival is dropped
        self._stream_floor: int | None = None  # next_frame skips ids up to it (cleared with the epoch)
        self.hello: dict | None = None
        self.descriptor: dict | None = None
        self.device_seq_gaps = 0
        self.last_device_t = 0  # device clock (ms) of the latest timestamped message
        self._last_dev_seq: int | None = None
        self.frame_errors = 0
        self.retries = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames_out = 0
        self.descriptor_errors = 0
        self.descriptor_problem = ""
        self.handler_errors = 0  # messages whose handling raised (the reader carries on)
        self.last_handler_error = ""
        self.closed = False
        self.close_reason = ""
        self._last_tx = 0.0
        self._session = False  # True from open_session until close: we hold a session
        self._resuming = False  # a CONNECT to win back a session the module ended is queued
        self._stream_request: dict | None = None  # the last STREAM the device ACKed, to restore
        self.sessions_resumed = 0
        self._reader = threading.Thread(target=self._read_loop, name="magcam-link-rx", daemon=True)
        self._reader.start()
        self._beat = threading.Thread(target=self._housekeeping, name="magcam-link-chores", daemon=True)
        self._beat.start()

    # ---- lifecycle --------------------------------------------------------------------
    def close(self) -> None:
        held, self._session = self._session, False  # its end is not a loss to make good
        if held and not self.closed:
            try:
                self.command(P.CMD_DISCONNECT, timeout=0.3, retries=0)
            except LinkError:
                pass
        self._shut(CLOSED_BY_HOST)
        try:
            self.ser.cancel_write()  # a write waiting on a deaf device gives up now
        except (serial.SerialException, OSError):
            pass
        for worker in (self._reader, self._beat):
            if worker is not threading.current_thread():  # close() may come from an event callback
                worker.join(timeout=2)
        # No writer may be inside pyserial when the port closes under it.
        locked = self._wlock.acquire(timeout=self.WRITE_TIMEOUT_S + 1)
        try:
            self.ser.close()
        finally:
            if locked:
                self._wlock.release()

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _shut(self, reason: str) -> None:
        with self._cond:
            if not self.closed:
                self.closed = True
                self.close_reason = reason
                self._push({"type": "link", "t": self.last_device_t, "state": "closed", "reason": reason})
            self._cond.notify_all()

    # ---- sending ----------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = (self._seq % 0xFFFF) + 1
        return self._seq

    def command(self, mtype: int, fields: dict | None = None, *, timeout: float = 0.5, retries: int = 3) -> dict:
        """Send a command and wait for its ACK; retried on silence, raises on NAK."""
        name = P.SCHEMA[mtype][0]
        if self.closed:  # not one more write into a port that is gone or deaf
            raise LinkClosed(f"{name}: link closed ({self.close_reason})")
        values, tail = P.pack_fields(mtype, fields or {})
        with self._wlock:
            seq = self._next_seq()
            wire = bytes(self._enc.encode(mtype, seq, values, tail))
        with self._cond:
            self._replies.pop(seq, None)  # a stray answer that came before the question is not one
        for attempt in range(retries + 1):
            if attempt:
                self.retries += 1
            self._write(wire)
            deadline = time.monotonic() + timeout
            with self._cond:
                while seq not in self._replies and not self.closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                reply = self._replies.pop(seq, None)
                if reply is None and self.closed:
                    raise LinkClosed(f"{name}: link closed ({self.close_reason})")
            if reply is None:
                continue
            if reply["type"] == "nak":
                raise CommandRejected(name, reply["code"], reply["message"])
            if mtype == P.CMD_STREAM:
                self._stream_request = fields if fields and fields.get("fps_x10") else None
            return reply
        raise CommandTimeout(f"{name}: no answer from the device after {retries + 1} tries")

    def _write(self, wire: bytes) -> None:
        try:
            with self._wlock:
                if self.closed:
                    raise LinkClosed(f"link closed ({self.close_reason})")
                self.ser.write(wire)
                self._last_tx = time.monotonic()
                self.bytes_out += len(wire)
                self.frames_out += 1
        except serial.SerialTimeoutException:
            reason = f"the device stopped reading: a write did not finish within {self.WRITE_TIMEOUT_S:g} s"
            self._shut(reason)
            raise LinkClosed(reason) from None
        except (serial.SerialException, OSError) as e:
            self._shut(f"write failed: {e}")
            raise LinkClosed(str(e)) from None

    def open_session(self, timeout: float = 5.0) -> dict:
        """CONNECT, check versions, and wait for HELLO and the module descriptor."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.command(P.CMD_CONNECT, {"version": P.VERSION, "host": "magcam-host"}, timeout=0.5, retries=0)
                break
            except CommandRejected as e:
                if e.code == P.NAK_VERSION:
                    raise LinkError(self._refused_version_advice(e)) from None
                raise
            except CommandTimeout:
                if self._dec.foreign_version:
                    raise LinkError(self._version_advice(self._dec.foreign_version)) from None
                if time.monotonic() > deadline:
                    raise CommandTimeout(f"no magcam device answering on {self.port}") from None
        with self._cond:
            while (self.hello is None or self.descriptor is None) and not self.closed:
                if self.descriptor_problem:
                    raise LinkError(f"{self.descriptor_problem}: rewrite it (Camera.write_descriptor) or "
                                    "re-deploy the factory one (magcam deploy --descriptor ...)")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommandTimeout("device did not send HELLO and its descriptor")
                self._cond.wait(left)
        if self.closed:
            raise LinkClosed(self.close_reason)
        if self.hello["version"] != P.VERSION:
            raise LinkError(self._version_advice(self.hello["version"], self.hello.get("firmware", "unknown")))
        self._session = True
        return self.hello

    def _refused_version_advice(self, nak: CommandRejected) -> str:
        """The advice for a CONNECT refused with NAK version ("device speaks protocol vN")."""
        theirs = re.search(r"protocol v(\d+)", nak.message)
        return self._version_advice(int(theirs.group(1)) if theirs else None)

    def _version_advice(self, device_version: int | None = None, firmware: str = "unknown") -> str:
        """What to run so host and module speak the same protocol (the exact command line)."""
        from .deploy import version_advice

        return version_advice(firmware, device_version or 0, None, port=self.port) or ""

    def _housekeeping(self) -> None:
        """Commands the reader thread must not wait on itself: power grants, heartbeats."""
        while not self.closed:
            time.sleep(0.02)
            try:
                while self._chores:
                    mtype, fields = self._chores.popleft()
                    if mtype is None:
                        self._resume_session()
                    elif mtype == P.CMD_POWER_GRANT:
                        if self.command(mtype, fields)["value"] == 0:
                            self._refused(fields["budget_mw"])
                    else:
                        self.command(mtype, fields)
                # The device ends a session after 5 s of host silence; keep ours alive.
                if self._session and time.monotonic() - self._last_tx > self.HEARTBEAT_S:
                    self.command(P.CMD_PING, timeout=1.0, retries=0)
            except LinkError:
                pass

    def _refused(self, mw: int) -> None:
        """An automatic grant the module did not take: say so once, and do not offer the same
        again until the rail asks anew (a module that left meanwhile is not refusing)."""
        if (self.state.get("power") or {}).get("state") != "requesting" or mw == self._grant_refused:
            return
        self._grant_refused = mw
        self._push({"type": "link", "t": self.last_device_t, "state": "grant_refused", "offered_mw": mw,
                    "reason": f"the module did not take a {mw} mW grant: less than its min_grant_mw "
                              f"({self._min_grant_mw()} mW); its rail keeps requesting"})

    def _min_grant_mw(self):
        """The module's smallest grant: its descriptor's, else the firmware's own default."""
        from magcam_fw.power import DEFAULT_LIMITS

        power = (self.descriptor or {}).get("power")
        mw = power.get("min_grant_mw") if isinstance(power, dict) else None
        return mw if isinstance(mw, int) and not isinstance(mw, bool) else DEFAULT_LIMITS["min_grant_mw"]

    def _resume_session(self) -> None:
        """Open a new session after the module ended ours, and ask again for the stream we had
        (a reboot forgets it, and so does the end of a session)."""
        self._push({"type": "link", "t": self.last_device_t, "state": "session_lost",
                    "reason": "the module ended the session (it rebooted, or did not hear this host for 5 s)"})
        self._grant_refused = None  # new firmware or descriptor may take it
        try:
            ack = self.command(P.CMD_CONNECT, {"version": P.VERSION, "host": "magcam-host"}, timeout=0.5, retries=2)
            if self._stream_request is not None:
                self.command(P.CMD_STREAM, self._stream_request)
        except CommandRejected as e:
            if e.code == P.NAK_VERSION:  # new firmware behind the same port, speaking another version
                self._shut(self._refused_version_advice(e))
            return
        except LinkError:
            return  # the next beacon tries again
        finally:
            self._resuming = False
        self.sessions_resumed += 1
        self._push({"type": "link", "t": self.last_device_t, "state": "resumed", "session": ack["value"]})

    # ---- receiving --------------------------------------------------------------------
    def _read_loop(self) -> None:
        while not self.closed:
            try:
                data = self.ser.read(max(1, min(self.ser.in_waiting, 1 << 20)))
            except (serial.SerialException, OSError, TypeError) as e:
                self._shut(f"device gone: {e}")
                return
            if data:
                self.bytes_in += len(data)
                try:
                    self._dec.feed(data, self._on_message)
                except Exception as e:  # noqa: BLE001 - whatever a device sends, the reader must live
                    self.handler_errors += 1
                    self.last_handler_error = f"{type(e).__name__}: {e}"

    def _on_message(self, mtype: int, seq: int, payload: memoryview) -> None:
        if self._last_dev_seq is not None and seq != (self._last_dev_seq + 1) & 0xFFFF:
            self.device_seq_gaps += 1
        self._last_dev_seq = seq
        if not P.readable(mtype, payload):
            return  # well-formed but not for us (the decoder counted it): go on
        msg = P.unpack(mtype, payload)
        kind = msg["type"]
        self.last_device_t = msg.get("t", self.last_device_t)
        with self._cond:
            if kind in ("ack", "nak"):
                self._replies[msg["ack_seq"]] = msg
                if len(self._replies) > 64:  # answers nobody waits for any more
                    self._replies.pop(next(iter(self._replies)))
            elif kind == "hello":
                if msg["session"]:  # session 0 is the presence beacon of a device nobody talks to
                    self.hello = msg
                    self._push(to_event(msg))
                elif self._session and not self._resuming and not self.closed:
                    # Beacons while we hold a session: the module rebooted, or ended it after
                    # 5 s without hearing us. Win it back (the reader must not wait: a chore).
                    self._resuming = True
                    self._chores.append((None, None))
                    self._forget_frames()
            elif kind == "descriptor":
                self._on_descriptor(msg)
            elif kind.startswith("frame_"):
                self._on_frame_msg(msg)
            elif mtype < P.CMD_CONNECT:
                self._push(to_event(msg, self))
            self._cond.notify_all()

    def _forget_frames(self) -> None:
        """The module's frame ids may start over: nothing of before may answer a new id."""
        self._frames.clear()
        self._asm = None
        self._abandoned.clear()
        self._stream_floor = None
        self.last_frame_id = 0
        self._frame_epoch += 1

    def _on_descriptor(self, msg: dict) -> None:
        try:
            descriptor = json.loads(msg["json"])
        except (ValueError, RecursionError) as e:
            self.descriptor_errors += 1
            self.descriptor_problem = f"the module's descriptor is not valid JSON ({type(e).__name__})"
            return
        if not isinstance(descriptor, dict):
            self.descriptor_errors += 1
            self.descriptor_problem = "the module's descriptor is JSON but not an object"
            return
        self.descriptor = descriptor

    def grant_power(self, mw: int) -> int:
        """Play the phone: grant ``mw`` now, and later requests up to ``mw`` (0: none); returns
        the grant the module took (0: refused, or a withdrawal). See ``Camera.grant_power``."""
        mw = check_budget(mw)
        self.power_budget_mw = mw or None
        self._grant_refused = None
        taken = self.command(P.CMD_POWER_GRANT, {"budget_mw": mw})["value"]
        if mw and not taken:
            self._grant_refused = mw  # the caller has the answer: no automatic offer of the same
        return taken

    def _push(self, event: dict) -> None:
        self.state[event["type"]] = event
        if event["type"] == "power":
            requesting = event.get("state") == "requesting"
            if not requesting:
                self._grant_refused = None  # a new request (after a detach, a withdrawal) gets a new offer
            grant = min(event["budget_mw"], self.power_budget_mw) if requesting and self.power_budget_mw else 0
            if (grant and grant != self._grant_refused
                    and not any(c[0] == P.CMD_POWER_GRANT for c in self._chores)):
                self._chores.append((P.CMD_POWER_GRANT, {"budget_mw": grant}))
        if len(self._events) == self._events.maxlen:
            self.events_dropped += 1
        self._events.append(event)

    def _on_frame_msg(self, msg: dict) -> None:
        kind = msg["type"]
        asm = self._asm
        if kind == "frame_begin":
            self.last_frame_id = msg["frame_id"]
            if self._abandoned:  # one frame at a time: one given up on before this can no longer come
                self._abandoned = {i for i in self._abandoned if i >= msg["frame_id"]}
            if asm is not None:
                self._frame_done(asm.hdr["frame_id"], FrameError(asm.hdr["frame_id"], "no FRAME_END before the next frame"))
            why = P.check_frame_begin(msg)
            if why is None and msg["total_bytes"] > self.max_frame_bytes:
                why = f"{msg['total_bytes']} bytes exceeds this host's limit of {self.max_frame_bytes}"
            if why:
                self._asm = None
                self._frame_done(msg["frame_id"], FrameError(msg["frame_id"], f"bad header: {why}"))
                return
            self._asm = _Assembly(msg)
        elif kind == "frame_chunk":
            if asm is None or msg["frame_id"] != asm.hdr["frame_id"]:
                return  # a chunk of a frame we are not assembling (its header was lost)
            data = msg["data"]
            if msg["offset"] != asm.received or asm.received + len(data) > len(asm.buf):
                self._asm = None
                why = "chunk missing or out of place" if msg["offset"] != asm.received else "more data than announced"
                self._frame_done(asm.hdr["frame_id"], FrameError(asm.hdr["frame_id"], why))
                return
            asm.buf[asm.received : asm.received + len(data)] = np.frombuffer(data, dtype=np.uint8)
            asm.received += len(data)
            asm.crc = P.crc32(data, asm.crc)
        elif kind == "frame_end":
            fid = msg["frame_id"]
            status = msg["status"]
            if status != 0:  # the device gave up on it, possibly before FRAME_BEGIN
                if asm is not None and asm.hdr["frame_id"] == fid:
                    self._asm = None
                name = P.FRAME_STATUS[status] if status < len(P.FRAME_STATUS) else f"status {status}"
                self._frame_done(fid, FrameError(fid, f"device ended the frame: {name}"))
                return
            if asm is None or asm.hdr["frame_id"] != fid:
                if fid not in self._frames:
                    self._frame_done(fid, FrameError(fid, "frame header was lost"))
                return
            self._asm = None
            if asm.received != asm.hdr["total_bytes"] or msg["total_bytes"] != asm.received:
                self._frame_done(fid, FrameError(fid, f"incomplete: {asm.received} of {asm.hdr['total_bytes']} bytes"))
            elif msg["crc32"] != asm.crc:
                self._frame_done(fid, FrameError(fid, "CRC-32 mismatch over the frame"))
            else:
                self._frame_done(fid, _to_raw_frame(asm))

    def _frame_done(self, fid: int, result: RawFrame | FrameError) -> None:
        if isinstance(result, FrameError):
            self.frame_errors += 1
        if fid in self._abandoned:  # its capture timed out: it must not pass for a later frame
            self._abandoned.discard(fid)
        else:
            self._frames[fid] = result
            while len(self._frames) > 8:  # finished frames nobody collected
                self._frames.popitem(last=False)
        ev = {"type": "frame", "frame_id": fid, "ok": not isinstance(result, FrameError)}
        if isinstance(result, RawFrame):
            ev.update(t=result.timestamp_ms, width=result.width, height=result.height, lens=result.lens_position)
        else:
            ev["error"] = result.reason
        self._push(ev)

    # ---- consumers --------------------------------------------------------------------
    def next_event(self, timeout: float | None = None) -> dict | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._events:
                if self.closed:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            return self._events.popleft()

    def clear_events(self) -> int:
        """Drop the events queued so far (the latest of each kind stays in ``state``); how many."""
        with self._cond:
            n = len(self._events)
            self._events.clear()
            return n

    def wait_frame(self, frame_id: int, timeout: float) -> RawFrame:
        deadline = time.monotonic() + timeout
        with self._cond:
            epoch = self._frame_epoch
            try:
                while frame_id not in self._frames:
                    if self.closed:
                        raise LinkClosed(f"frame {frame_id}: link closed ({self.close_reason})")
                    if self._frame_epoch != epoch:
                        raise FrameError(frame_id, "the module ended the session before the frame arrived (it "
                                                   "rebooted, or did not hear this host)")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise FrameError(frame_id, f"not received within {timeout:.3g} s")
                    self._cond.wait(left)
            except BaseException:  # timed out, or Ctrl-C: a late arrival must not pass for a later frame
                if self._frame_epoch == epoch and not self.closed:
                    if len(self._abandoned) >= 64:
                        self._abandoned.clear()
                    self._abandoned.add(frame_id)
                raise
            result = self._frames.pop(frame_id)
        if isinstance(result, FrameError):
            raise result
        return result

    def has_abandoned(self) -> bool:
        """Whether a frame a wait_frame gave up on may still be arriving."""
        with self._cond:
            return bool(self._abandoned)

    def wait_abandoned(self, timeout: float) -> bool:
        """Wait until every frame a wait_frame gave up on has ended (arrived and been dropped,
        or been aborted): the module sends one frame at a time and refuses a capture as busy
        until it has. True if none is left within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._abandoned and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return not self._abandoned

    def wait_state(self, kind: str, predicate, timeout: float) -> dict | None:
        """Wait until the latest ``kind`` event satisfies ``predicate``; that event, or None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                ev = self.state.get(kind)
                if ev is not None and predicate(ev):
                    return ev
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self._cond.wait(left)

    def frames_from_now(self) -> None:
        """Before a new stream: finished frames nobody took are dropped, and next_frame skips
        any frame the module had begun by now (the old stream's last one, still arriving)."""
        with self._cond:
            self._frames.clear()
            self._stream_floor = self.last_frame_id

    def next_frame(self, timeout: float) -> RawFrame:
        """The oldest finished frame, whichever it is (streaming); raises FrameError if broken."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while not self._frames:
                    if self.closed:
                        raise LinkClosed(f"link closed ({self.close_reason})")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise FrameError(None, f"no frame within {timeout:.3g} s (is a stream running? "
                                               "start_stream starts one)")
                    self._cond.wait(left)
                fid, result = self._frames.popitem(last=False)
                if self._stream_floor is None or fid > self._stream_floor:
                    break
        if isinstance(result, FrameError):
            raise result
        return result

    def stats(self) -> dict:
        d = self._dec.stats()
        return {
            "bytes_in": self.bytes_in,
            "frames": d["frames"],
            "crc_errors": d["crc_errors"],
            "framing_errors": d["framing_errors"],
            "overflows": d["overflows"],
            "version_errors": d["version_errors"],
            "unknown_types": d["unknown_types"],
            "bytes_dropped": d["bytes_dropped"],
            "bytes_out": self.bytes_out,
            "frames_out": self.frames_out,
            "descriptor_errors": self.descriptor_errors,
            "seq_gaps": self.device_seq_gaps,
            "retries": self.retries,
            "frame_errors": self.frame_errors,
            "events_dropped": self.events_dropped,
            "sessions_resumed": self.sessions_resumed,
        }


def _to_raw_frame(asm: _Assembly) -> RawFrame:
    h = asm.hdr
    data = asm.buf.view("<u2").reshape(h["height"], h["width"]).astype(np.uint16, copy=False)
    return RawFrame(
        data=data,
        frame_id=h["frame_id"],
        cfa=P.CFA_NAMES[h["cfa"]],
        bits=h["bits"],
        black_level=h["black_level"],
        white_level=h["white_level"],
        exposure_us=h["exposure_us"],
        analog_gain=h["analog_gain"],
        timestamp_ms=h["timestamp_ms"],
        lens_position=h["lens_position"],
    )
