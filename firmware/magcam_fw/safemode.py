"""Watchdog and safe mode: a crash counter that survives resets, and the HAL safe mode runs on.

``BootState`` keeps, in a small file on the device's filesystem (or in CircuitPython's
``microcontroller.nvm``), how many boots in a row ended without a clean run and why the last
one died. Boot calls ``begin()`` first: it counts this boot as "not yet clean" and says
whether to come up in safe mode: after ``after_crashes`` (default 3) boots in a row that never
reached ``mark_stable()``. The app's supervisor calls ``mark_stable()`` once the app has run
for a while with its control loop alive (``safe_mode.stable_ms`` in the board file), which
resets the count. A crash handler calls ``record_crash(exc_text(e))`` before resetting.

- A power-on reset (``begin("power-on")``) restarts the count: unplugging the module is not a
  crash. Watchdog, brown-out and software resets count.
- Entering safe mode also restarts the count, so the next reset (after the cause is fixed)
  tries normal mode again; safe mode itself never resets the board on purpose.
- Writes are rare (one per boot, one on a crash, one when stable) and atomic (a temporary file
  renamed over the old one). A filesystem that cannot be written (CircuitPython's, while USB
  owns it) leaves ``persistent`` False and ``error`` set: the count then lives in RAM only.

Safe mode (``SafeHal``): the link and the REPL stay up, nothing is driven but the load switch,
which is held open; the app reports ``safe_reason`` (HELLO.mode = protocol.MODE_SAFE and an
EV_LOG with the reason; see docs/boards.md).

Usage::

    state = BootState("/magcam_boot.json", after_crashes=3)
    safe, reason = state.begin(platform.reset_cause())
    if safe:
        hal = SafeHal(reason, platform)          # rail held open, no other hardware touched
    ...
    try:
        asyncio.run(supervise(app, hal, state, stable_ms, sleep_ms))  # marks the boot stable
    except Exception as e:
        state.record_crash(exc_text(e))
        platform.reset()
"""

import json
import os

from magcam_fw.board import Inert
from magcam_fw.compat import const, ticks_ms

DEFAULT_AFTER_CRASHES = const(3)
REASON_MAX = const(240)  # characters of crash text kept (the end: the exception and innermost frames)
_NVM_MAGIC = b"MCBS"
_NVM_HDR = const(6)  # magic + u16 length
_SAFE_TEMP_MC = const(25000)


def traceback_text(e):
    """The full traceback of ``e`` as text, on MicroPython and CPython."""
    try:
        import sys

        if hasattr(sys, "print_exception"):
            import io

            buf = io.StringIO()
            sys.print_exception(e, buf)
            return buf.getvalue()
        import traceback

        return "".join(traceback.format_exception(type(e), e, e.__traceback__))
    except Exception:  # noqa: BLE001 - a crash handler must not crash
        return ""


def exc_text(e, limit=REASON_MAX):
    """``e`` in one line for the crash record: ``"OSError: ... (at hal_machine.py:120 in
    read_power)"``, the innermost frame of its traceback; at most ``limit`` characters (the
    message is shortened, the location kept)."""
    msg = str(e)
    head = "%s: %s" % (type(e).__name__, msg) if msg else type(e).__name__
    where = ""
    for line in traceback_text(e).split("\n"):
        line = line.strip()
        if line.startswith('File "'):
            where = line
    if where:
        # 'File "/x/y/hal_machine.py", line 120, in read_power' -> 'hal_machine.py:120 in read_power'
        parts = where.split('"')
        name = parts[1].rsplit("/", 1)[-1] if len(parts) > 2 else ""
        rest = parts[-1].replace(", line ", ":").replace(", in ", " in ").strip(", ")
        where = " (at %s%s)" % (name, rest)
    if len(head) + len(where) > limit:
        keep = limit - len(where) - 3
        head = head[:keep] + "..." if keep > 0 else ""
    return (head + where)[-limit:] if len(head + where) > limit else head + where


class BootState:
    def __init__(self, path, after_crashes=DEFAULT_AFTER_CRASHES, nvm=None, nvm_offset=0, nvm_size=256):
        if after_crashes < 1:
            raise ValueError("after_crashes must be >= 1")
        self.path = path
        self.after_crashes = after_crashes
        self._nvm = nvm
        self._nvm_off = nvm_offset
        self._nvm_size = nvm_size
        self.boots = 0  # begin() calls ever recorded
        self.unclean = 0  # boots in a row without mark_stable(), this one included after begin()
        self.reason = None  # why this boot is ending (record_crash), persisted for the next begin()
        self.last = None  # why the previous boot ended, if it was not clean (set by begin())
        self.safe = False
        self.persistent = True
        self.error = None

    # ---- storage ------------------------------------------------------------------------
    def _load(self):
        try:
            if self._nvm is not None:
                raw = self._nvm_read()
            else:
                with open(self.path) as f:
                    raw = f.read()
            d = json.loads(raw) if raw else {}
        except OSError:
            d = {}  # first boot: no state yet
        except ValueError:
            self.error = "boot state unreadable; starting afresh"
            d = {}
        if not isinstance(d, dict):
            d = {}
        b = d.get("boots", 0)
        u = d.get("unclean", 0)
        r = d.get("reason")
        self.boots = b if isinstance(b, int) and b >= 0 else 0
        self.unclean = u if isinstance(u, int) and u >= 0 else 0
        self.reason = r if isinstance(r, str) else None

    def _nvm_read(self):
        nvm = self._nvm
        o = self._nvm_off
        if bytes(nvm[o:o + 4]) != _NVM_MAGIC:
            return ""
        n = nvm[o + 4] | (nvm[o + 5] << 8)
        if n > self._nvm_size - _NVM_HDR:
            raise ValueError("length")
        return bytes(nvm[o + _NVM_HDR:o + _NVM_HDR + n]).decode()

    def _save(self):
        data = json.dumps({"boots": self.boots, "unclean": self.unclean, "reason": self.reason})
        try:
            if self._nvm is not None:
                b = data.encode()
                if len(b) > self._nvm_size - _NVM_HDR:
                    raise OSError("boot state larger than its NVM area")
                o = self._nvm_off
                rec = bytearray(_NVM_MAGIC) + bytearray((len(b) & 0xFF, len(b) >> 8)) + b
                self._nvm[o:o + len(rec)] = rec
            else:
                tmp = self.path + ".tmp"
                with open(tmp, "w") as f:
                    f.write(data)
                os.rename(tmp, self.path)  # atomic: a reset mid-write keeps the old state
            self.persistent = True
        except OSError as e:
            self.persistent = False
            self.error = "cannot save the boot state to %s: %s" % (self.path, e)

    # ---- the boot cycle -----------------------------------------------------------------
    def begin(self, reset_cause=None):
        """Count this boot; returns (safe, reason).

        ``safe`` is True when the previous ``after_crashes`` boots all ended without a clean
        run; ``reason`` then says so and why the latest of them ended (its recorded crash text,
        else ``reset_cause``, e.g. "watchdog"). When not safe, ``reason`` is why the previous
        boot ended if it was not clean (for a log line), else None. ``last`` keeps the latter.
        """
        self._load()
        if reset_cause == "power-on":
            self.unclean = 0
        crashed = self.unclean  # boots since the last clean run that did not get there
        self.last = (self.reason or reset_cause or "unknown") if crashed else None
        self.reason = None  # record_crash() fills it for this boot
        self.boots += 1
        if crashed >= self.after_crashes:
            self.safe = True
            self.reason = "%d boots in a row ended without a clean run; last: %s" % (crashed, self.last)
            self.unclean = 0  # the next reset tries normal mode again
            self._save()
            return True, self.reason
        self.safe = False
        self.unclean = crashed + 1
        self._save()
        return False, self.last

    def record_crash(self, text):
        """Keep why this boot is about to end (``exc_text(e)``); call before resetting."""
        text = str(text)
        self.reason = text[-REASON_MAX:] if len(text) > REASON_MAX else text
        self._save()

    def mark_stable(self):
        """The app has run cleanly for a while: the crash count starts again from zero."""
        if self.unclean or self.reason:
            self.unclean = 0
            self.reason = None
            self._save()


async def supervise(app, hal, state, stable_ms, sleep_ms, poll_ms=1000):
    """Run ``app.run()`` and call ``state.mark_stable()`` once it has run ``stable_ms`` with the
    control loop alive (the HAL's ``last_feed`` recent: the control tick reads power every
    10 ms, which feeds the watchdog). Exceptions from the app propagate to the caller."""
    from magcam_fw.compat import asyncio, ticks_diff

    async def _watch():
        t0 = ticks_ms()
        while True:
            await sleep_ms(poll_ms)
            now = ticks_ms()
            last = getattr(hal, "last_feed", None)
            alive = last is not None and ticks_diff(now, last) < 2 * poll_ms
            if not alive:
                t0 = now  # the loop stalled: the clean run starts again
            elif ticks_diff(now, t0) >= stable_ms:
                state.mark_stable()
                return

    watcher = asyncio.create_task(_watch())
    try:
        await app.run()
    finally:
        watcher.cancel()


class _IdleCounter:
    """The ring counter of safe mode: the ring is not read (its pins are not touched)."""

    glitches = 0
    divisor = 1

    def value(self):
        return 0

    def raw(self):
        return 0


class SafeHal:
    """The HAL of safe mode: no hardware touched but the load switch, held open.

    ``platform`` (``hal_machine.Platform`` / ``hal_circuitpython.Platform``) gives
    ``rail_off()``, the watchdog and reset; None (tests, a board file too broken to know the
    load switch) drives nothing. The ring, Hall and VBUS read as a detached, idle module, so the
    app's power rail stays off whatever it decides; ``safe_reason`` is what the app reports.
    """

    def __init__(self, reason, platform=None, storage="/"):
        self.safe_reason = reason
        self.ring_a = Inert(0)
        self.ring_b = Inert(0)
        self.ring = _IdleCounter()
        self.ring_switch = None
        self.hall = Inert(0)
        self.vbus = Inert(0)
        self.sensor = None
        self.storage = storage
        self.rail_on = False
        self.last_feed = None
        self._p = platform
        self.set_rail(False)

    def set_rail(self, on):
        # Whatever is asked: open. Re-driven every call, in case something else touched the pin.
        if self._p is not None:
            self._p.rail_off()

    def lens_actuator(self, position):
        pass

    def read_power(self):
        self.feed()  # the control tick calls this every period: proof the loop is alive
        return 0, 0

    def read_temp_mc(self):
        return _SAFE_TEMP_MC

    def on_connect(self):
        pass

    def tasks(self):
        return []

    def feed(self):
        self.last_feed = ticks_ms()
        if self._p is not None:
            self._p.feed()

    def watchdog(self, timeout_ms):
        return self._p.watchdog(timeout_ms) if self._p is not None else None

    def reset(self):
        if self._p is not None:
            self._p.reset()
