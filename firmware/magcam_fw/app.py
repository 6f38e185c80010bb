"""The module's main loop: owns the link, answers commands, streams events and RAW frames.

Hardware comes in as a HAL object (``hal_sim.SimHal`` in the simulator); the app never
imports ``machine`` or ``board``. Three cooperative tasks share the CPU:

- control (every ``_TICK_MS``): ring -> lens, attach, power rail, thermal, telemetry events;
- link: reads commands and answers them;
- capture: streams one RAW frame in chunks, yielding between chunks so the control tick
  keeps its period (a detach cuts the rail and stops streaming in the same tick);
- stream: live frames at the host's rate, derated by temperature.

Usage::

    app = App(hal, StdioTransport(), descriptor_json)
    asyncio.run(app.run())
"""

import json

from magcam_fw import FIRMWARE_VERSION, descriptor, protocol as P
from magcam_fw.attach import AttachDetector, ATTACHED
from magcam_fw.compat import asyncio, const, sleep_ms, ticks_add, ticks_diff, ticks_ms
from magcam_fw.faultlog import FaultLog
from magcam_fw.focus import Focus
from magcam_fw.link import Link
from magcam_fw.power import (
    FAULT, LATCHED, ON, OVER_TEMPERATURE, OVER_VOLTAGE, RETRY_WAIT, SOFT_START, UNDER_VOLTAGE, PowerRail,
)
from magcam_fw.thermal import Thermal, SUSPENDED

_TICK_MS = const(10)
_LINK_MS = const(2)
_BEACON_MS = const(1000)
_SESSION_TIMEOUT_MS = const(5000)
_POWER_EVERY_MS = const(500)
_THERMAL_EVERY_MS = const(1000)
_LINK_EVERY_MS = const(2000)
_SENSOR_TIMEOUT_MS = const(20000)
_MIN_PAYLOAD = const(4096)  # descriptor JSON and replies must fit too
_TICKS_MASK = const(0x3FFFFFFF)  # device time is ms modulo 2**30, the ticks period
_REPLY_CACHE = const(4)  # answers kept for retried commands (a heartbeat may come in between)


def _celsius(mc):
    """m°C as text with one decimal, in integer arithmetic (no float formatting on the board)."""
    sign = "-" if mc < 0 else ""
    mc = -mc if mc < 0 else mc
    return "%s%d.%d" % (sign, mc // 1000, mc % 1000 // 100)


class App:
    def __init__(self, hal, transport, descriptor_json, chunk_size=P.CHUNK_SIZE, descriptor_problem=None):
        self.hal = hal
        # Why the device's own descriptor was not used (descriptor.usable), said in every snapshot.
        self._descriptor_problem = descriptor_problem
        self.descriptor = json.loads(descriptor_json)
        self._descriptor_json = descriptor_json
        self.link = Link(transport, chunk_size, _MIN_PAYLOAD)
        if len(descriptor_json) > self.link.max_payload:
            raise ValueError("descriptor too large for one message")
        sensor = self.descriptor["sensor"]
        lens = self.descriptor["lens"]
        self._cfa = P.CFA_NAMES.index(sensor["cfa"])
        self.encoder = hal.ring  # a QuadratureDecoder or HardwareCounter: value() in detents
        self.focus = Focus(hal.lens_actuator, lens["position_min"], lens["position_max"])
        self.attach = AttachDetector(hal.hall, hal.vbus)
        self._attach_session = self.attach.session
        self.rail = PowerRail(hal.set_rail, self.descriptor.get("power"))
        self.thermal = Thermal()
        self._safe_reason = getattr(hal, "safe_reason", None)  # set by the safe-mode HAL
        self.faultlog = FaultLog(hal.storage.rstrip("/") + "/faults.bin")
        self.boot = self.faultlog.next_boot()
        self._t0 = ticks_ms()
        self.session = 0  # link session id; 0 while no host is connected
        self._sessions = 0
        self._host_seen = 0
        self._replies = [[-1, None] for _ in range(_REPLY_CACHE)]  # [seq, wire], oldest overwritten
        self._reply_next = 0
        self._frame_id = 0
        self._capturing = False
        self._abort = False
        self._chunk = bytearray(chunk_size)
        self._stream = None  # the CMD_STREAM request while streaming, else None
        self._upload = descriptor.Upload(self.link.max_payload)
        self._mc = hal.read_temp_mc()
        self._mv = 0
        self._ma = 0
        self._last_count = 0
        self._moving = False
        self._glitches = 0  # the ring's count of impossible transitions in the last EV_ENCODER
        self._next_power = self._next_thermal = self._next_link = self._next_beacon = 0
        self.running = True

    def now(self):
        """Device time in ms since boot, modulo 2**30 (never negative; hosts unwrap it)."""
        return (ticks_ms() - self._t0) & _TICKS_MASK

    def _end_session(self):
        self.session = 0
        self._stream = None  # nobody is listening: stop streaming
        if self._capturing:
            self._abort = True

    # ---- outgoing ---------------------------------------------------------------------
    def _event(self, mtype, values, tail=None):
        if self.session:
            self.link.send(mtype, values, tail)

    def _hello(self):
        lk = self.link
        self.link.send(
            P.HELLO,
            (P.VERSION, self.session, self.now(), lk.max_payload, lk.rx_max_payload, lk.chunk_size,
             P.MODE_SAFE if self._safe_reason else 0),
            FIRMWARE_VERSION,
        )

    def _power_event(self, now):
        self._next_power = ticks_add(now, _POWER_EVERY_MS)
        # Only a closed switch carries current. In the tick that opens it the reading is still
        # the one from before the cut (EV_FAULT reports it): 0, as the wire promises.
        ma = self._ma if self.rail.state == ON or self.rail.state == SOFT_START else 0
        rail = self.rail
        self._event(P.EV_POWER, (now, rail.state, self._mv, ma, rail.budget_mw, rail.blocked, min(rail.faults, 0xFFFF)))

    def _encoder_event(self, now, count):
        self._glitches = g = self.encoder.glitches
        f = self.focus
        self._event(P.EV_ENCODER, (now, count, f.position, f.velocity, f.flags, g & 0xFFFFFFFF))

    def _snapshot(self):
        """Everything a host that just (re)joined needs to know, including why things are odd."""
        t = self.now()
        if self._safe_reason:
            self.link.send(P.EV_LOG, (t, P.LOG_WARNING), "safe mode: " + self._safe_reason)
        if self.faultlog.status in ("reset", "ram"):
            self.link.send(P.EV_LOG, (t, P.LOG_WARNING), "fault log: " + self.faultlog.reason)
        if self._descriptor_problem:
            self.link.send(P.EV_LOG, (t, P.LOG_WARNING),
                           "descriptor: %s; using the factory one" % self._descriptor_problem)
        self._event(P.EV_ATTACH, (t, self.attach.state, self.attach.session))
        self._power_event(t)
        self._next_thermal = ticks_add(t, _THERMAL_EVERY_MS)  # the periodic one counts from here, as power's does
        self._event(P.EV_THERMAL, (t, self._mc, self.thermal.state, self._stream_fps()))
        self._encoder_event(t, self.encoder.value())

    # ---- control ----------------------------------------------------------------------
    def control_tick(self):
        """One control period. Safety first: readings -> rail decision -> events."""
        hal = self.hal
        now = self.now()
        attach_changed = self.attach.update(now)
        self._mv, self._ma = hal.read_power()
        self._mc = hal.read_temp_mc()
        before, held = self.rail.state, self.rail.blocked
        cause = self.rail.update(self.attach.attached, self._mv, self._ma, self._mc, now)
        if self.rail.state != ON and self._capturing:
            self._abort = True  # the sensor lost power: stop streaming in this same tick
        if attach_changed:
            reattached = self.attach.session != self._attach_session
            self._attach_session = self.attach.session
            if reattached and self.session:
                # Re-attached after a detach: the host resumes on a fresh session, whose snapshot
                # carries the attach and rail states (each once, not again below).
                self._new_session()
                before, held = self.rail.state, self.rail.blocked
            else:
                self._event(P.EV_ATTACH, (now, self.attach.state, self.attach.session))
        if cause:
            self._event(P.EV_FAULT, (now, cause, self.rail.last_value, min(self.rail.faults, 0xFFFF)))
            self.faultlog.append(self.boot, now, cause, self.rail.last_value)
        if self.rail.state != before or self.rail.blocked != held or ticks_diff(now, self._next_power) >= 0:
            self._power_event(now)
        if self.thermal.update(self._mc) or ticks_diff(now, self._next_thermal) >= 0:
            self._next_thermal = ticks_add(now, _THERMAL_EVERY_MS)
            self._event(P.EV_THERMAL, (now, self._mc, self.thermal.state, self._stream_fps()))
            if self.thermal.state == SUSPENDED and self._capturing:
                self._abort = True
        count = self.encoder.value()
        changed = self.focus.update(count, now)
        moving = self.focus.velocity != 0
        # An event on every move or glitch, and one more when the ring comes to rest (velocity 0).
        if changed or count != self._last_count or moving != self._moving or self.encoder.glitches != self._glitches:
            self._encoder_event(now, count)
        self._last_count = count
        self._moving = moving
        if self.session:
            if ticks_diff(now, self._host_seen) > _SESSION_TIMEOUT_MS:
                self._end_session()  # host went away: stop streaming, beacon again
            elif ticks_diff(now, self._next_link) >= 0:
                self._next_link = ticks_add(now, _LINK_EVERY_MS)
                self._event(P.EV_LINK, self.link.stats(now))
        elif ticks_diff(now, self._next_beacon) >= 0:
            self._next_beacon = ticks_add(now, _BEACON_MS)
            self._hello()

    async def _control_task(self):
        while self.running:
            self.control_tick()
            await sleep_ms(_TICK_MS)

    # ---- commands ---------------------------------------------------------------------
    def _reply(self, seq, ok, value=0, text=None):
        wire = self.link.encode(P.ACK if ok else P.NAK, (seq, value), text)
        slot = self._replies[self._reply_next]
        slot[0], slot[1] = seq, wire
        self._reply_next = (self._reply_next + 1) % _REPLY_CACHE
        self.link.write(wire)

    def _cached_reply(self, seq):
        for s, wire in self._replies:
            if s == seq:
                return wire
        return None

    def on_message(self, mtype, seq, payload):
        """Answer one command. Whatever goes wrong in it is answered with NAK_INTERNAL and
        logged: one bad command must never end the link task (the host would lose the module
        until a reset, and the watchdog, fed by the control tick, would not reset it)."""
        try:
            self._handle(mtype, seq, payload)
        except Exception as e:
            why = ("command 0x%02x failed: %r" % (mtype, e))[:200]
            if self._cached_reply(seq) is None:  # not answered before it failed
                self._reply(seq, False, P.NAK_INTERNAL, why)
            self.link.send(P.EV_LOG, (self.now(), P.LOG_ERROR), why)

    def _handle(self, mtype, seq, payload):
        self._host_seen = self.now()
        if mtype == P.CMD_CONNECT:
            if not len(payload) or payload[0] != P.VERSION:  # byte 0: the host's version, in every version
                self._reply(seq, False, P.NAK_VERSION, "device speaks protocol v%d" % P.VERSION)
                return
            if self._cached_reply(seq) is None or not self.session:
                self._sessions += 1
                self.session = self._sessions
                # A new host may count its seqs from where the last one did (from 1, say): the
                # last session's replies must not answer its commands, which would not be done.
                for slot in self._replies:
                    slot[0] = -1
                    slot[1] = None
                self.hal.on_connect()
            self._reply(seq, True, self.session)
            self._hello()
            self.link.send(P.DESCRIPTOR, (), self._descriptor_json)
            self._snapshot()
            return
        if mtype < P.CMD_CONNECT or not P.readable(mtype, payload):
            if mtype in P.SCHEMA and mtype >= P.CMD_CONNECT:
                self._reply(seq, False, P.NAK_BAD_ARGS, "payload too short")
            else:
                self._reply(seq, False, P.NAK_UNKNOWN, "unknown command 0x%02x" % mtype)
            return
        cached = self._cached_reply(seq)
        if cached is not None:
            self.link.write(cached)  # a retry: answer again, do not act twice
            return
        if not self.session:
            self._reply(seq, False, P.NAK_NO_SESSION, "send CONNECT first")
            return
        if mtype == P.CMD_PING:
            self._reply(seq, True, self.now())
        elif mtype == P.CMD_GET_DESCRIPTOR:
            self._reply(seq, True, len(self._descriptor_json))
            self.link.send(P.DESCRIPTOR, (), self._descriptor_json)
        elif mtype == P.CMD_CAPTURE:
            self._start_capture(seq, P.unpack(mtype, payload))
        elif mtype == P.CMD_SET_LENS:
            self.focus.move_to(P.unpack(mtype, payload)["position"])
            self._reply(seq, True, self.focus.position)
        elif mtype == P.CMD_DISCONNECT:
            self._reply(seq, True, self.session)
            self._end_session()
        elif mtype == P.CMD_POWER_GRANT:
            self.rail.grant(P.unpack(mtype, payload)["budget_mw"], self.now())
            self._reply(seq, True, self.rail.granted_mw)
            self._power_event(self.now())
        elif mtype == P.CMD_POWER_RESET:
            self.rail.reset()
            self._reply(seq, True, self.rail.state)
            self._power_event(self.now())
        elif mtype == P.CMD_FAULTS_READ:
            first = P.unpack(mtype, payload)["first"]
            records = self.faultlog.read(first, (self.link.max_payload - 6) // P.FAULT_RECORD_SIZE)
            self._reply(seq, True, self.faultlog.count(), records)
        elif mtype == P.CMD_FAULTS_CLEAR:
            n = self.faultlog.count()
            self.faultlog.clear()
            self._reply(seq, True, n)
        elif mtype == P.CMD_STREAM:
            self._set_stream(seq, P.unpack(mtype, payload))
        elif mtype == P.CMD_DESCRIPTOR_WRITE:
            self._descriptor_chunk(seq, P.unpack(mtype, payload))

    def _refusal(self, c):
        """(NAK code, reason) if a capture cannot start now, else None."""
        why = P.check_capture(c["width"], c["height"], c["exposure_us"], c["analog_gain"])
        if why:
            return P.NAK_BAD_ARGS, why
        if self.attach.state != ATTACHED:
            return P.NAK_NOT_ATTACHED, "module detached: snap it onto the phone"
        if self.rail.state != ON:
            return P.NAK_NOT_ATTACHED, self._rail_off_reason()
        if self.thermal.state == SUSPENDED:
            # Not busy: cooling takes minutes, so a host must not retry it as a busy slot.
            return P.NAK_TOO_HOT, "captures suspended at %s C until the module cools below %s C" % (
                _celsius(self._mc), _celsius(self.thermal.suspend - self.thermal.hyst))
        if self._capturing or self.hal.sensor is None:
            return P.NAK_BUSY, "capture in progress"
        return None

    def _rail_off_reason(self):
        """Why the attached module's sensor rail is off, as a tester can act on it."""
        rail, lim = self.rail, self.rail.limits
        if rail.blocked == OVER_TEMPERATURE:
            return "sensor rail held off: too hot (%s C, limit %s C)" % (_celsius(self._mc), _celsius(lim["max_mc"]))
        if rail.blocked == UNDER_VOLTAGE:
            return "sensor rail held off: VBUS %d mV is below %d mV" % (self._mv, lim["min_mv"])
        if rail.blocked == OVER_VOLTAGE:
            return "sensor rail held off: VBUS %d mV is above %d mV" % (self._mv, lim["max_mv"])
        if rail.state == LATCHED:
            return "sensor rail latched off after repeated faults (last: %s); a power reset or detach clears it" % (
                P.FAULT_CAUSES[rail.last_cause])
        if rail.state in (FAULT, RETRY_WAIT):
            return "sensor rail off after a fault (%s); retrying" % P.FAULT_CAUSES[rail.last_cause]
        return "sensor rail is not on yet (power %s)" % P.POWER_STATES[rail.state]

    def _begin_capture(self, c):
        self._frame_id += 1
        self._capturing = True
        self._abort = False
        asyncio.create_task(self._capture(self._frame_id, c, self.focus.position))
        return self._frame_id

    def _start_capture(self, seq, c):
        refused = self._refusal(c)
        if refused:
            self._reply(seq, False, refused[0], refused[1])
        else:
            self._reply(seq, True, self._begin_capture(c))

    def _set_stream(self, seq, s):
        if s["fps_x10"] == 0:
            self._stream = None
            self._reply(seq, True, 0)
            return
        why = P.check_capture(s["width"], s["height"], s["exposure_us"], s["analog_gain"])
        if why or s["fps_x10"] > 600:
            self._reply(seq, False, P.NAK_BAD_ARGS, why or "fps above 60")
            return
        self._stream = s
        self._reply(seq, True, self._stream_fps())

    def _stream_fps(self):
        """The streaming rate (x10) the temperature allows now; 0 when not streaming."""
        return self.thermal.fps_x10(self._stream["fps_x10"]) if self._stream else 0

    async def _stream_task(self):
        next_at = self.now()
        while self.running:
            fps = self._stream_fps()
            if fps and self.session and ticks_diff(self.now(), next_at) >= 0:
                if self._refusal(self._stream) is None:
                    self._begin_capture(self._stream)
                next_at = ticks_add(self.now(), 10000 // fps)
            await sleep_ms(_TICK_MS)

    def _descriptor_chunk(self, seq, w):
        done, why = self._upload.chunk(w["offset"], w["total"], w["data"])
        if why:
            self._reply(seq, False, P.NAK_BAD_ARGS, why)
            return
        if done:
            text = self._upload.text()
            try:
                descriptor.save(self.hal.storage, text)
            except OSError as e:
                self._reply(seq, False, P.NAK_INTERNAL, "cannot save the descriptor: %r" % e)
                return
            self._apply_descriptor(text)
        self._reply(seq, True, 1 if done else 0)
        if done:
            self.link.send(P.DESCRIPTOR, (), self._descriptor_json)

    def _apply_descriptor(self, text):
        """Take a new descriptor into use now: RAW format of the next frame, the lens range."""
        self._descriptor_json = text
        self.descriptor = d = json.loads(text)
        self._cfa = P.CFA_NAMES.index(d["sensor"]["cfa"])
        self.focus.lo, self.focus.hi = d["lens"]["position_min"], d["lens"]["position_max"]
        self.focus.move_to(self.focus.position)  # back inside a narrower range at once

    def _new_session(self):
        self._sessions += 1
        self.session = self._sessions
        self._hello()
        self._snapshot()

    async def _link_task(self):
        while self.running:
            if not self.link.poll(self.on_message):
                self.running = False  # the host side of the stream is gone for good
                break
            await sleep_ms(_LINK_MS)

    # ---- capture ----------------------------------------------------------------------
    async def _capture(self, frame_id, c, lens):
        sensor = self.hal.sensor
        w, h = c["width"], c["height"]
        total = w * h * 2
        status = 0
        crc = 0
        sent = 0
        try:
            t_exp = self.now()
            sensor.start(w, h, c["exposure_us"], c["analog_gain"], frame_id, lens)
            while not sensor.ready():
                if self._abort or ticks_diff(self.now(), t_exp) > _SENSOR_TIMEOUT_MS:
                    status = 1 if self._abort else 2
                    break
                await sleep_ms(_LINK_MS)
            if status == 0 and sensor.frame_bytes() != total:
                status = 2
            if status == 0:
                s = self.descriptor["sensor"]
                self.link.send(
                    P.FRAME_BEGIN,
                    (frame_id, w, h, self._cfa, s["bits"], s["black_level"], s["white_level"],
                     c["exposure_us"], c["analog_gain"], t_exp, lens, total, self.link.chunk_size),
                )
                chunk = self._chunk
                view = memoryview(chunk)
                while sent < total:
                    if self._abort:
                        status = 1
                        break
                    n = sensor.readinto(view[: min(len(chunk), total - sent)])
                    if n <= 0:
                        status = 2
                        break
                    crc = P.crc32(view[:n], crc)
                    self.link.send(P.FRAME_CHUNK, (frame_id, sent), view[:n])
                    sent += n
                    await sleep_ms(0)
        except Exception as e:  # a sensor failure ends this frame, never the app
            status = 2
            self.link.send(P.EV_LOG, (self.now(), P.LOG_ERROR), "capture failed: %r" % e)
        finally:
            if status:
                sensor.abort()
            self.link.send(P.FRAME_END, (frame_id, sent, crc, status))
            self._capturing = False

    # ---- run --------------------------------------------------------------------------
    async def run(self):
        tasks = [asyncio.create_task(self._control_task()), asyncio.create_task(self._link_task()),
                 asyncio.create_task(self._stream_task())]
        for coro in self.hal.tasks():
            tasks.append(asyncio.create_task(coro))
        while self.running:
            await sleep_ms(50)
        for t in tasks:
            t.cancel()
