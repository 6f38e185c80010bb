"""Scenario player: replays stimuli onto the simulated HAL, one JSON object per line.

``t`` is in ms from the first host connection, so a test that connects late still sees the
whole script. Stimuli::

    {"t": 0,   "do": "turn", "steps": 200, "rate": 1000}   # quadrature transitions; <0 turns back
    {"t": 0,   "do": "turn", "steps": 40, "rate": 50, "bounce": 3}   # contact bounce, see below
    {"t": 300, "do": "glitch", "n": 2}                      # impossible transitions, see below
    {"t": 500, "do": "detach"}
    {"t": 900, "do": "attach"}
    {"t": 950, "do": "detach", "only": "vbus"}             # the magnet holds, VBUS goes; or "magnet"
    {"t": 1000, "do": "load", "ma": 1800}
    {"t": 1500, "do": "temp", "c": 72}

``turn``: ``steps`` transitions at ``rate`` per second (0 < rate <= 1e6), one line changing
at a time, spread evenly from ``t``. With ``"bounce": B`` (0..100) every transition is followed
at once by B bounce pairs: the line that just changed goes back and forth again (two legal
transitions that net zero), as a worn contact does. The net count at any time is exactly the
transitions due by then, whatever the rate and the bounce.

``detach`` / ``attach``: the Hall sensor (magnet) and VBUS go away / come back; with
``"only": "magnet"`` or ``"only": "vbus"`` just that one (the module counts as attached only while
both are present). Lines starting with ``#`` are comments; a field a kind does not take is refused.

``glitch``: ``n`` glitches (1..10000), each an impossible transition out and back: both lines
flip at once (as when the IRQ misses an edge), twice, so the lines end where they started. The
decoder must reject them: its count does not move, its ``glitches`` counter rises by 2 per
glitch (one per two-line jump it sees).

Usage::

    player = Player(parse(open("demo.jsonl").read()))
    hal = SimHal(scenario=player)     # the app starts it on CONNECT and runs player.run(hal)
"""

import json

from magcam_fw.compat import const, sleep_ms, ticks_diff, ticks_ms

_STEP_MS = const(1)
# Forward quadrature sequence of (A << 1) | B levels.
_GRAY = (0, 1, 3, 2)
_GRAY_INDEX = (0, 1, 3, 2)  # position of each (A << 1) | B state in that sequence

KINDS = ("turn", "detach", "attach", "load", "temp", "vbus", "glitch")
_MAX_BOUNCE = const(100)
_MAX_GLITCHES = const(10000)
# The number each kind needs, and its range.
_NEEDS = {"load": ("ma", 0, 100000), "temp": ("c", -60, 200), "vbus": ("mv", 0, 30000)}
# The fields each kind takes besides "t" and "do": a misspelt one ("mA") is refused, not ignored.
_FIELDS = {"turn": ("steps", "rate", "bounce"), "glitch": ("n",), "detach": ("only",), "attach": ("only",),
           "load": ("ma",), "temp": ("c",), "vbus": ("mv",)}
# Which attach signal a partial detach / attach moves (a weak magnet, a cable without VBUS).
_ONLY = ("magnet", "vbus")
_MAX_T = const(1000000000)  # ms: 11 days of scenario
_MAX_STEPS = const(100000000)  # transitions of one turn, either way


def parse(text):
    """Lines of JSON -> list of stimuli sorted by time. Raises ValueError naming the bad line."""
    out = []
    lineno = 0
    for line in text.split("\n"):
        lineno += 1
        line = line.strip()
        if not line or line[0] == "#":
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            raise ValueError("scenario line %d: not JSON" % lineno)
        # _int_in, not isinstance(.., int): CPython's True is an int (the host's pre-check passed
        # it), MicroPython's is not (the firmware then refused it after the port was printed).
        if not isinstance(ev, dict) or ev.get("do") not in KINDS or not _int_in(ev.get("t", 0), 0, _MAX_T):
            raise ValueError("scenario line %d: need an integer 't' in 0..%d (ms) and 'do' in %s"
                             % (lineno, _MAX_T, KINDS))
        kind = ev["do"]
        for key in ev:
            if key != "t" and key != "do" and key not in _FIELDS[kind]:
                raise ValueError("scenario line %d: %s takes no field '%s' (its fields: %s)"
                                 % (lineno, kind, key, ", ".join(_FIELDS[kind]) or "none"))
        if kind == "turn":
            rate = ev.get("rate")
            if not _int_in(ev.get("steps"), -_MAX_STEPS, _MAX_STEPS) or not _number(rate) or not (0 < rate <= 1000000):
                raise ValueError("scenario line %d: turn needs integer 'steps' and 0 < 'rate' <= 1e6" % lineno)
            if not _int_in(ev.get("bounce", 0), 0, _MAX_BOUNCE):
                raise ValueError("scenario line %d: turn 'bounce' must be an integer 0..%d" % (lineno, _MAX_BOUNCE))
        elif kind == "glitch":
            n = ev.get("n")
            if not _int_in(n, 1, _MAX_GLITCHES):
                raise ValueError("scenario line %d: glitch needs an integer 'n' in 1..%d" % (lineno, _MAX_GLITCHES))
        elif kind == "attach" or kind == "detach":
            if "only" in ev and ev["only"] not in _ONLY:
                raise ValueError("scenario line %d: %s 'only' must be \"magnet\" or \"vbus\"" % (lineno, kind))
        elif kind in _NEEDS:
            key, lo, hi = _NEEDS[kind]
            v = ev.get(key)
            if not _number(v) or not (lo <= v <= hi):
                raise ValueError("scenario line %d: %s needs a number '%s' in %d..%d" % (lineno, kind, key, lo, hi))
        out.append((ev.get("t", 0), len(out), ev))
    # Sort on (t, line order): MicroPython's sort is not stable, and equal times must keep order.
    out.sort()
    return [e[2] for e in out]


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_in(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


class Player:
    def __init__(self, events):
        self.events = events
        self._t0 = None
        self._next = 0
        self._turns = []  # [start_ms, steps_done, total_steps, rate, direction, bounce]

    def start(self):
        if self._t0 is None:
            self._t0 = ticks_ms()

    @property
    def done(self):
        return self._t0 is not None and self._next >= len(self.events) and not self._turns

    def step(self, hal, now):
        """Apply everything due by ``now`` (ms since start)."""
        evs = self.events
        while self._next < len(evs) and evs[self._next].get("t", 0) <= now:
            self._apply(hal, evs[self._next])
            self._next += 1
        finished = False
        for turn in self._turns:
            due = min(turn[2], (now - turn[0]) * turn[3] // 1000)
            while turn[1] < due:
                self._transition(hal, turn[4], turn[5])
                turn[1] += 1
            if turn[1] >= turn[2]:
                finished = True
        if finished:  # rebuilt only when a turn ends: no garbage on every 1 ms step
            self._turns = [t for t in self._turns if t[1] < t[2]]

    def _apply(self, hal, ev):
        kind = ev["do"]
        if kind == "turn":
            steps = ev["steps"]
            self._turns.append([ev.get("t", 0), 0, abs(steps), ev["rate"], 1 if steps > 0 else -1, ev.get("bounce", 0)])
        elif kind == "glitch":
            for _ in range(ev["n"]):
                self._flip_both(hal)  # out to the opposite state ...
                self._flip_both(hal)  # ... and back
        elif kind == "detach" or kind == "attach":
            level = 1 if kind == "attach" else 0
            only = ev.get("only")
            if only != "vbus":
                hal.hall.value(level)
            if only != "magnet":
                hal.vbus.value(level)
        elif kind == "load":
            hal.load_ma = int(ev["ma"])
        elif kind == "temp":
            hal.temp_mc = int(round(ev["c"] * 1000))
        elif kind == "vbus":
            hal.vbus_mv = int(ev["mv"])

    @staticmethod
    def _transition(hal, direction, bounce=0):
        a = hal.ring_a
        b = hal.ring_b
        state = (a.value() << 1) | b.value()
        nxt = _GRAY[(_GRAY_INDEX[state] + direction) & 3]
        # Exactly one line changes per transition, as on a real encoder.
        if (nxt >> 1) != (state >> 1):
            pin = a
            level = nxt >> 1
        else:
            pin = b
            level = nxt & 1
        pin.value(level)
        for _ in range(bounce):  # contact bounce: the same line back and forth, netting zero
            pin.value(1 - level)
            pin.value(level)

    @staticmethod
    def _flip_both(hal):
        """Both ring lines change before either interrupt runs: an impossible transition."""
        a = hal.ring_a
        b = hal.ring_b
        # VirtualPin fires its handler on every change, so A changes with its handler off
        # (the IRQ is pending), then B's handler sees both lines changed at once.
        handler = a._handler
        a._handler = None
        a.value(1 - a.value())
        a._handler = handler
        b.value(1 - b.value())
        if handler:
            handler(a)  # A's pending interrupt: nothing further changed

    async def run(self, hal):
        while True:
            if self._t0 is not None:
                self.step(hal, ticks_diff(ticks_ms(), self._t0))
            await sleep_ms(_STEP_MS)
