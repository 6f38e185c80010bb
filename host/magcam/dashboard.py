"""The live terminal dashboard of `magcam monitor`: what the module reports, on one screen.

Two halves, so that what the screen shows can be tested without a terminal:

* :class:`Dashboard` keeps the state: feed it the public event dicts (``update(event)``,
  the same dicts ``magcam monitor --json`` prints) and, a few times per second, the host
  link's counters (``tick(stats=link.stats())``). It computes the rates over a sliding window
  on an injectable clock.
* :class:`DashboardView` renders a Dashboard with rich (panels and tables), and
  :func:`run_dashboard` drives a ``rich.live.Live`` from an open :class:`~magcam.camera.Camera`.

Usage::

    from magcam.dashboard import Dashboard, DashboardView

    dash = Dashboard(descriptor=cam.descriptor, hello=cam.hello, port=cam.port)
    dash.update({"type": "power", "t": 120, "state": "on", "mv": 4963, "ma": 250, "budget_mw": 4500})
    dash.tick(stats=cam.link.stats())
    rich.print(DashboardView(dash))

What each panel shows and how the rates are defined: docs/monitor.md.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable

from magcam_fw import protocol as P

from magcam.report import printable

WINDOW_S = 2.0  # the rates are averaged over this many seconds
REFRESH_PER_SECOND = 4
RING_AT_REST_S = 0.25  # the device's own definition of "at rest" (docs/protocol.md, EV_ENCODER)
HISTORY = 5  # faults and log lines kept for the short lists
DEVICE_TIME_MODULO = 1 << 30  # device times wrap (docs/protocol.md, section 6)

# EV_FAULT `value` units, per cause (docs/protocol.md, section 7.5).
_FAULT_UNITS = {"over_current": "mA", "under_voltage": "mV", "over_voltage": "mV", "over_temperature": "m°C",
                "over_budget": "mW"}


class RateWindow:
    """The rate of a growing counter over the last ``window`` seconds.

    Samples ``(t, value)`` are kept from the newest one back to the latest one that is at least
    ``window`` seconds older (so two samples always remain once there are two, even when they
    come less often than ``window``); the rate is the counter's change between the oldest and
    the newest kept sample divided by their time difference. A counter that goes down (a new
    link, a device reset) starts the window over.
    """

    def __init__(self, window: float = WINDOW_S):
        self.window = window
        self.samples: collections.deque[tuple[float, float]] = collections.deque()

    def add(self, t: float, value: float) -> None:
        if self.samples:
            last_t, last_v = self.samples[-1]
            if value < last_v:
                self.samples.clear()
            elif t <= last_t:
                if t == last_t:  # same instant: the newer reading wins
                    self.samples[-1] = (t, value)
                return
        self.samples.append((t, value))
        while len(self.samples) > 2 and self.samples[1][0] <= t - self.window:
            self.samples.popleft()

    def rate(self) -> float | None:
        """Units per second, or None until two samples span some time."""
        if len(self.samples) < 2:
            return None
        (t0, v0), (t1, v1) = self.samples[0], self.samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else None


def _device_dt_ms(t0: int, t1: int) -> int:
    """Milliseconds from device time t0 to t1, across the 2^30 wrap."""
    return (t1 - t0) % DEVICE_TIME_MODULO


def _name(table: tuple, value) -> str:
    if isinstance(value, int):
        return table[value] if 0 <= value < len(table) else f"unknown({value})"
    return str(value)


class Dashboard:
    """What the dashboard shows, fed with events; no terminal needed.

    ``clock`` (default ``time.monotonic``) stamps events and samples that come without an
    explicit ``now``; tests pass their own.
    """

    def __init__(self, descriptor: dict | None = None, hello: dict | None = None, port: str | None = None, *,
                 clock: Callable[[], float] = time.monotonic, window: float = WINDOW_S, history: int = HISTORY):
        self.clock = clock
        self.window = window
        self.port = port
        self.descriptor: dict = {}
        self.hello: dict = {}
        self.set_module(descriptor, hello)
        # The latest event of each kind (None until one came).
        self.encoder: dict | None = None
        self._encoder_seen_at = 0.0
        self.attach: dict | None = None
        self.focus: dict | None = None  # the latest focus-meter event (monitor --focus)
        self.power: dict | None = None
        self.thermal: dict | None = None
        self.last_event_t: int | None = None  # device time of the latest timestamped event
        self.events = 0
        self.counts: collections.Counter[str] = collections.Counter()
        # Faults
        self.faults: collections.deque[dict] = collections.deque(maxlen=history)  # newest last
        self.faults_since_boot: int | None = None  # the device's count (EV_POWER `faults`, EV_FAULT `count`)
        self.faults_seen = 0
        # Frames (captures and stream frames that went over this link)
        self.frames_ok = 0
        self.frames_failed = 0
        self.last_frame: dict | None = None
        self.last_frame_error: dict | None = None
        self._frame_rate = RateWindow(window)
        # Log lines
        self.logs: collections.deque[dict] = collections.deque(maxlen=history)
        # Link
        self.host_link: dict | None = None  # Link.stats(): the device -> host direction, counted by the host
        self.device_link: dict | None = None  # EV_LINK counters: host -> device rx, device tx
        self.device_link_rates: dict[str, float] = {}
        self._prev_device_link: dict | None = None
        self.link_closed: str | None = None  # the reason, once the host's link closed
        self._bytes_rate = RateWindow(window)
        self._msgs_rate = RateWindow(window)
        self._polled = False  # tick() brought host stats: link events' copies are then not sampled

    # ---- feeding ----------------------------------------------------------------------
    def set_module(self, descriptor: dict | None = None, hello: dict | None = None) -> None:
        """The module's identity: its descriptor (model, serial, lens range) and HELLO (firmware,
        session, mode). Either the raw HELLO message (``cam.hello``) or a hello event."""
        if descriptor is not None:
            self.descriptor = descriptor
        if hello is not None:
            self.hello = dict(hello, mode=_name(P.MODES, hello.get("mode", 0)))

    def update(self, event: dict, now: float | None = None) -> None:
        """Take one event (the public dict of events.py, or the host's frame/link-closed ones)."""
        now = self.clock() if now is None else now
        kind = event.get("type", "?")
        self.events += 1
        self.counts[kind] += 1
        if isinstance(event.get("t"), int) and kind != "link":
            self.last_event_t = event["t"]
        if kind == "hello":
            self.set_module(hello=event)
        elif kind == "encoder":
            self.encoder = event
            self._encoder_seen_at = now
        elif kind == "attach":
            self.attach = event
        elif kind == "power":
            self.power = event
            if isinstance(event.get("faults"), int):
                self.faults_since_boot = event["faults"]
        elif kind == "thermal":
            self.thermal = event
        elif kind == "fault":
            self.faults_seen += 1
            self.faults_since_boot = event.get("count")
            self.faults.append(dict(event, seen_at=now))
        elif kind == "log":
            self.logs.append(dict(event, seen_at=now))
        elif kind == "frame":
            self._on_frame(event, now)
        elif kind == "link":
            self._on_link(event, now)
        elif kind == "focus":
            self.focus = event

    def feed(self, events: Iterable[dict], now: float | None = None) -> None:
        for ev in events:
            self.update(ev, now)

    def tick(self, now: float | None = None, stats: dict | None = None, descriptor: dict | None = None) -> None:
        """A refresh: sample the host link's counters (``Link.stats()``) and let the rates move
        on even when no event comes."""
        now = self.clock() if now is None else now
        if descriptor is not None:
            self.descriptor = descriptor
        if stats is not None:
            self._polled = True
            self._sample_host(stats, now)
        self._frame_rate.add(now, self.frames_ok)

    def _sample_host(self, stats: dict, now: float) -> None:
        self.host_link = dict(stats)
        self._bytes_rate.add(now, stats.get("bytes_in", 0))
        self._msgs_rate.add(now, stats.get("frames", 0))

    def _on_frame(self, event: dict, now: float) -> None:
        if event.get("ok"):
            self.frames_ok += 1
            self.last_frame = event
            self._frame_rate.add(now, self.frames_ok)
        else:
            self.frames_failed += 1
            self.last_frame_error = event

    def _on_link(self, event: dict, now: float) -> None:
        state = event.get("state")
        if state == "closed":
            self.link_closed = event.get("reason") or "closed"
            return
        if state in ("session_lost", "resumed", "grant_refused"):  # the host's own notes, shown with the device's logs
            text = f"new session {event.get('session')} opened" if state == "resumed" else event.get("reason")
            self.logs.append({"type": "log", "t": event.get("t"), "level": P.LOG_WARNING,
                              "text": f"link: {text}", "seen_at": now})
            return
        device = event.get("device")
        if device is not None:
            prev = self._prev_device_link
            if prev is not None:
                dt = _device_dt_ms(prev["t"], event["t"])
                if dt > 0:
                    self.device_link_rates = {
                        k: (device[k] - prev["device"][k]) * 1000 / dt
                        for k in ("rx_frames", "tx_frames") if device[k] >= prev["device"].get(k, 0)
                    }
            self._prev_device_link = {"t": event["t"], "device": device}
            self.device_link = device
        if event.get("host") is not None and not self._polled:
            self._sample_host(event["host"], now)

    # ---- what the screen shows ----------------------------------------------------------
    @property
    def model(self) -> str:
        return self.descriptor.get("model") or self.descriptor.get("module") or "?"

    @property
    def serial(self) -> str:
        return self.descriptor.get("serial", "?")

    @property
    def firmware(self) -> str:
        return self.hello.get("firmware", "?")

    @property
    def safe_mode(self) -> bool:
        return self.hello.get("mode") == "safe"

    @property
    def lens_range(self) -> tuple[int, int] | None:
        lens = self.descriptor.get("lens") or {}
        lo, hi = lens.get("position_min"), lens.get("position_max")
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and hi > lo:
            return int(lo), int(hi)
        return None

    @property
    def lens_fraction(self) -> float | None:
        """Where the lens is across its range: 0.0 at position_min, 1.0 at position_max."""
        rng = self.lens_range
        if self.encoder is None or rng is None:
            return None
        lo, hi = rng
        return min(max((self.encoder["lens"] - lo) / (hi - lo), 0.0), 1.0)

    @property
    def velocity(self) -> int | None:
        """Ring speed, detents/s. The device sends EV_ENCODER only when the count, the lens or
        the end-stop flags change, not when its estimate decays to 0, so after
        ``RING_AT_REST_S`` without an encoder event the ring is at rest: 0."""
        if self.encoder is None:
            return None
        return self.encoder["velocity"] if self.clock() - self._encoder_seen_at < RING_AT_REST_S else 0

    @property
    def volts(self) -> float | None:
        return None if self.power is None else self.power["mv"] / 1000

    @property
    def watts(self) -> float | None:
        return None if self.power is None else self.power["mv"] * self.power["ma"] / 1e6

    @property
    def allowed_fps(self) -> float | None:
        return None if self.thermal is None else self.thermal["fps_x10"] / 10

    @property
    def last_fault(self) -> dict | None:
        return self.faults[-1] if self.faults else None

    def rates(self) -> dict[str, float | None]:
        """Device -> host, measured by the host: protocol frames/s, MB/s (10^6 bytes), and
        RAW image frames/s; each None until the window holds two samples."""
        bps = self._bytes_rate.rate()
        return {"frames_per_s": self._msgs_rate.rate(), "mb_per_s": None if bps is None else bps / 1e6,
                "images_per_s": self._frame_rate.rate()}

    @property
    def host_resyncs(self) -> int | None:
        """Times the host's decoder lost the frame boundaries and hunted for the next 0x00:
        framing errors + overflows (CRC errors are counted on their own)."""
        s = self.host_link
        return None if s is None else s.get("framing_errors", 0) + s.get("overflows", 0)

    @property
    def device_resyncs(self) -> int | None:
        d = self.device_link
        return None if d is None else d.get("rx_framing_errors", 0) + d.get("rx_overflows", 0)


# ---- rendering --------------------------------------------------------------------------

_STATE_STYLES = {
    "attached": "green", "attaching": "yellow", "detaching": "yellow", "detached": "red",
    "on": "green", "off": "dim", "requesting": "yellow", "granted": "yellow", "soft_start": "yellow",
    "fault": "bold red", "retry_wait": "red", "latched": "bold red",
    "normal": "green", "derated": "yellow", "suspended": "bold red",
}
_LEVEL_STYLES = {"debug": "dim", "info": "", "warning": "yellow", "error": "bold red"}
_DASH = "-"
# What holds the rail's switch open (EV_POWER `blocked`), as a tester reads it.
_HELD_OFF = {"over_temperature": "too hot", "under_voltage": "VBUS too low", "over_voltage": "VBUS too high"}


def lens_bar(fraction: float, width: int, ascii_only: bool = False) -> str:
    """A bar ``width`` characters long, filled to ``fraction`` (0..1)."""
    fill, empty = ("#", ".") if ascii_only else ("█", "░")
    n = round(min(max(fraction, 0.0), 1.0) * width)
    return fill * n + empty * (width - n)


def _fmt(value, spec: str = "", unit: str = "") -> str:
    if value is None:
        return _DASH
    return f"{value:{spec}}{(' ' + unit) if unit else ''}"


def _mb(v: float | None) -> str:
    """MB/s with three decimals, six below 0.1 MB/s (event traffic is a few hundred B/s)."""
    return _DASH if v is None else f"{v:.3f}" if v >= 0.1 else f"{v:.6f}"


def _secs(ms: int | None) -> str:
    return _DASH if ms is None else f"{ms / 1000:.3f} s"


def fault_value(cause: str, value: int, ascii_only: bool = False) -> str:
    unit = _FAULT_UNITS.get(cause)
    if unit == "m°C":
        return f"{value / 1000:g} {'C' if ascii_only else '°C'}"
    return f"{value} {unit}" if unit else str(value)


class DashboardView:
    """A rich renderable of a :class:`Dashboard`: laid out for the width it is given
    (three columns from 120 characters, two from 80, else one)."""

    def __init__(self, dash: Dashboard):
        self.dash = dash

    def __rich_console__(self, console, options):
        from rich.console import Group
        from rich.table import Table

        ascii_only = options.ascii_only
        width = options.max_width
        cols = 3 if width >= 120 else 2 if width >= 80 else 1
        focus, power, thermal = self._focus(ascii_only, width // cols), self._power(), self._thermal(ascii_only)
        faults, link, frames = self._faults(ascii_only), self._link(ascii_only), self._frames_log()
        if cols == 3:
            stacks = [[focus, thermal], [power, faults], [link, frames]]
        elif cols == 2:
            stacks = [[focus, power, thermal], [link, faults, frames]]
        else:
            stacks = [[focus, power, thermal, faults, link, frames]]
        grid = Table.grid(expand=True, padding=0)
        for _ in stacks:
            grid.add_column(ratio=1)
        grid.add_row(*(Group(*stack) for stack in stacks))
        yield Group(self._header(), grid)

    # -- panels
    def _panel(self, body, title: str, style: str = "blue"):
        from rich.panel import Panel

        return Panel(body, title=f"[bold]{title}[/]", title_align="left", border_style=style)

    @staticmethod
    def _kv():
        from rich.table import Table

        t = Table.grid(padding=(0, 1))
        t.add_column(style="dim", no_wrap=True, min_width=11)
        t.add_column(no_wrap=True, overflow="ellipsis")
        return t

    @staticmethod
    def _state(name: str | None):
        from rich.text import Text

        return Text(_DASH) if name is None else Text(name, style=_STATE_STYLES.get(name, ""))

    def _header(self):
        from rich.text import Text

        d = self.dash
        text = Text()
        text.append(d.model, style="bold")
        text.append(f"  serial {d.serial}  firmware {d.firmware}")
        if d.hello.get("version") is not None:
            text.append(f"  protocol v{d.hello['version']}")
        text.append(f"  session {d.hello.get('session', _DASH)}")
        if d.port:
            text.append(f"  port {d.port}")
        if d.last_event_t is not None:
            text.append(f"  device t {_secs(d.last_event_t)}")
        if d.safe_mode:
            text.append("  SAFE MODE", style="bold red")
        if d.link_closed:
            text.append(f"  LINK CLOSED: {d.link_closed}", style="bold red")
        return self._panel(text, "magcam monitor", "red" if (d.link_closed or d.safe_mode) else "blue")

    def _focus(self, ascii_only: bool, col_width: int):
        from rich.text import Text

        d = self.dash
        t = self._kv()
        enc = d.encoder
        t.add_row("ring count", _fmt(enc and enc["count"], "", "detents"))
        rng = d.lens_range
        t.add_row("lens", _DASH if enc is None else
                  f"{enc['lens']}" + (f" of {rng[0]}..{rng[1]}" if rng else ""))
        frac = d.lens_fraction
        if frac is not None:
            bar_w = max(min(col_width - 24, 40), 8)
            t.add_row("", f"{lens_bar(frac, bar_w, ascii_only)} {frac * 100:3.0f}%")
        t.add_row("velocity", _fmt(d.velocity, "", "detents/s"))
        stops = []
        if enc and enc.get("at_min"):
            stops.append("at MIN")
        if enc and enc.get("at_max"):
            stops.append("at MAX")
        t.add_row("end-stop", _DASH if enc is None else (", ".join(stops) or "free"))
        # Impossible transitions since boot: a rising count means noise or a slow IRQ (docs/focus.md).
        glitches = enc and enc.get("glitches")
        t.add_row("glitches", Text(_fmt(glitches), style="yellow" if glitches else ""))
        if d.focus is not None:  # the focus meter: this frame's sharpness against the best seen
            f = d.focus
            bar_w = max(min(col_width - 24, 40), 8)
            t.add_row("focus", f"{lens_bar(min(max(f['relative'], 0.0), 1.0), bar_w, ascii_only)} "
                               f"{f['relative'] * 100:3.0f}%")
            t.add_row("", f"{f['measure']:.3g} (best {f['peak']:.3g} @ {f['peak_lens']})")
        return self._panel(t, "Focus")

    def _power(self):
        from rich.text import Text

        d = self.dash
        t = self._kv()
        t.add_row("attach", self._state(d.attach and d.attach["state"]))
        t.add_row("attach #", _fmt(d.attach and d.attach["session"]))
        p = d.power
        t.add_row("rail", self._state(p and p["state"]))
        if p and p.get("blocked"):
            t.add_row("held off", Text(_HELD_OFF.get(p["blocked"], p["blocked"]), style="yellow"))
        t.add_row("VBUS", _fmt(d.volts, ".3f", "V"))
        t.add_row("current", _fmt(p and p["ma"], "", "mA"))
        t.add_row("power", _fmt(d.watts, ".2f", "W"))
        t.add_row("budget", _fmt(p and p["budget_mw"], "", "mW"))
        return self._panel(t, "Attach / power")

    def _thermal(self, ascii_only: bool):
        d = self.dash
        t = self._kv()
        th = d.thermal
        t.add_row("temperature", _fmt(th and th["c"], ".1f", "C" if ascii_only else "°C"))
        t.add_row("state", self._state(th and th["state"]))
        if th is not None and th["fps_x10"] == 0 and th["state"] != "suspended":
            t.add_row("allowed", "- (no stream requested)")
        else:
            t.add_row("allowed", _fmt(d.allowed_fps, ".1f", "fps"))
        return self._panel(t, "Thermal")

    def _faults(self, ascii_only: bool):
        from rich.console import Group
        from rich.text import Text

        d = self.dash
        t = self._kv()
        t.add_row("since boot", _fmt(d.faults_since_boot))
        t.add_row("seen here", str(d.faults_seen))
        last = d.last_fault
        if last is not None:
            ago = d.clock() - last["seen_at"]
            t.add_row("last", Text(f"{last['cause']} {fault_value(last['cause'], last['value'], ascii_only)}",
                                   style="bold red"))
            t.add_row("at", f"t {_secs(last['t'])}, {ago:.1f} s ago")
        lines = [Text(f"{_secs(f['t']):>11}  {f['cause']} {fault_value(f['cause'], f['value'], ascii_only)}",
                      style="red") for f in reversed(d.faults)]
        return self._panel(Group(t, *lines) if lines else t, "Faults", "red" if d.faults else "blue")

    def _link(self, ascii_only: bool):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        d = self.dash
        h, dev, r, dr = d.host_link or {}, d.device_link or {}, d.rates(), d.device_link_rates
        t = Table(box=None, padding=(0, 1), show_edge=False, expand=False)
        t.add_column("", style="dim", no_wrap=True)
        arrow = "->" if ascii_only else "→"
        t.add_column(f"dev{arrow}host", justify="right", no_wrap=True)
        t.add_column(f"host{arrow}dev", justify="right", no_wrap=True)

        def n(src: dict, key: str):
            return _fmt(src.get(key)) if src else _DASH

        t.add_row("frames/s", _fmt(r["frames_per_s"], ".1f"), _fmt(dr.get("rx_frames"), ".1f"))
        t.add_row("MB/s", _mb(r["mb_per_s"]), _DASH)
        t.add_row("frames", n(h, "frames"), n(dev, "rx_frames"))
        t.add_row("CRC errors", n(h, "crc_errors"), n(dev, "rx_crc_errors"))
        t.add_row("resyncs", _fmt(d.host_resyncs), _fmt(d.device_resyncs))
        t.add_row("bytes dropped", n(h, "bytes_dropped"), _DASH)
        t.add_row("seq gaps", n(h, "seq_gaps"), _DASH)
        t.add_row("retries", _DASH, n(h, "retries"))
        foot = Text(f"device tx {n(dev, 'tx_frames')} frames ({_fmt(dr.get('tx_frames'), '.1f')}/s), "
                    f"{n(dev, 'tx_dropped')} dropped; host: {n(h, 'frame_errors')} frame errors, "
                    f"{n(h, 'events_dropped')} events dropped", style="dim")
        bad = any(h.get(k) for k in ("crc_errors", "framing_errors", "overflows", "seq_gaps", "frame_errors")) \
            or any(dev.get(k) for k in ("rx_crc_errors", "rx_framing_errors", "rx_overflows", "tx_dropped"))
        body = Group(t, foot)
        if d.link_closed:
            body = Group(t, foot, Text(f"closed: {d.link_closed}", style="bold red"))
        return self._panel(body, "Link", "red" if d.link_closed else "yellow" if bad else "blue")

    def _frames_log(self):
        from rich.console import Group
        from rich.text import Text

        d = self.dash
        t = self._kv()
        t.add_row("frames", f"{d.frames_ok} ok, {d.frames_failed} failed")
        t.add_row("rate", _fmt(d.rates()["images_per_s"], ".1f", "frames/s"))
        f = d.last_frame
        if f is not None:
            t.add_row("last", f"#{f['frame_id']} {f.get('width')}x{f.get('height')} lens {f.get('lens')}")
        e = d.last_frame_error
        if e is not None:
            t.add_row("last error", Text(f"#{e['frame_id']} {e.get('error', '')}", style="red"))
        lines = []
        for ev in reversed(d.logs):
            level = _name(P.LOG_LEVELS, ev.get("level", 1))
            lines.append(Text(f"{level}: {printable(str(ev.get('text', '')))}", style=_LEVEL_STYLES.get(level, "")))
        body = Group(t, Text("log", style="dim"), *lines) if lines else t
        return self._panel(body, "Frames / log")


# ---- driving it from a camera -------------------------------------------------------------

def run_dashboard(cam, *, duration: float | None = None, console=None,
                  refresh_per_second: float = REFRESH_PER_SECOND, clock: Callable[[], float] = time.monotonic,
                  focus_meter=None) -> Dashboard:
    """Show the dashboard of ``cam`` (an open Camera) until ``duration`` seconds have passed or
    the link closes (the caller checks ``cam.link.closed``). Events are taken as they come;
    the screen is redrawn ``refresh_per_second`` times per second, in this thread (so the state
    is never read while it changes)."""
    from rich.console import Console
    from rich.live import Live

    dash = Dashboard(descriptor=cam.descriptor, hello=cam.hello, port=cam.port, clock=clock)
    period = 1.0 / refresh_per_second
    end = None if duration is None else clock() + duration
    with Live(DashboardView(dash), console=console or Console(), auto_refresh=False) as live:
        next_draw = clock()
        while True:
            link = cam.link  # a Camera may replace its link when it reconnects
            now = clock()
            if now >= next_draw:
                dash.tick(now, stats=link.stats(), descriptor=link.descriptor)
                live.refresh()
                next_draw = now + period
            if end is not None and now >= end:
                break
            wait = next_draw - now if end is None else min(next_draw, end) - now
            ev = link.next_event(max(wait, 0.0))
            if ev is None:
                if link.closed:
                    break
                continue
            dash.update(ev)
            if focus_meter is not None and ev.get("type") == "frame" and ev.get("ok"):
                focus_ev = focus_meter.take(cam, ev)  # a magcam.focus_assist.FocusMeter
                if focus_ev:
                    dash.update(focus_ev)
        dash.tick(stats=cam.link.stats())  # Live draws the last frame as it stops
    return dash
