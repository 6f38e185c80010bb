"""Scenario player: replays stimuli onto the simulated HAL, one JSON object per line.

``t`` is in ms from the first host connection, so a test that connects late still sees the
whole script. Stimuli::

    {"t": 0,   "do": "turn", "steps": 200, "rate": 1000}   # quadrature transitions; <0 turns back
    {"t": 500, "do": "detach"}
    {"t": 900, "do": "attach"}
    {"t": 1000, "do": "load", "ma": 1800}
    {"t": 1500, "do": "temp", "c": 72}

Usage::

    player = Player(parse(open("demo.jsonl").read()))
    hal = SimHal(scenario=player)     # the app starts it on CONNECT and runs player.run(hal)
"""

import json

from magcam_fw.compat import const, sleep_ms, ticks_diff, ticks_ms

_STEP_MS = const(1)
# Forward quadrature sequence of (A << 1) | B levels.
_GRAY = (0, 1, 3, 2)

KINDS = ("turn", "detach", "attach", "load", "temp", "vbus")
# The number each kind needs, and its range.
_NEEDS = {"load": ("ma", 0, 100000), "temp": ("c", -60, 200), "vbus": ("mv", 0, 30000)}


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
        if not isinstance(ev, dict) or ev.get("do") not in KINDS or not isinstance(ev.get("t", 0), int):
            raise ValueError("scenario line %d: need an integer 't' and 'do' in %s" % (lineno, KINDS))
        kind = ev["do"]
        if kind == "turn":
            rate = ev.get("rate")
            if not isinstance(ev.get("steps"), int) or not _number(rate) or not (0 < rate <= 1000000):
                raise ValueError("scenario line %d: turn needs integer 'steps' and 0 < 'rate' <= 1e6" % lineno)
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


class Player:
    def __init__(self, events):
        self.events = events
        self._t0 = None
        self._next = 0
        self._turns = []  # [start_ms, steps_done, total_steps, rate, direction]

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
        for turn in self._turns:
            due = min(turn[2], (now - turn[0]) * turn[3] // 1000)
            while turn[1] < due:
                self._transition(hal, turn[4])
                turn[1] += 1
        self._turns = [t for t in self._turns if t[1] < t[2]]

    def _apply(self, hal, ev):
        kind = ev["do"]
        if kind == "turn":
            steps = ev["steps"]
            self._turns.append([ev.get("t", 0), 0, abs(steps), ev["rate"], 1 if steps > 0 else -1])
        elif kind == "detach":
            hal.hall.value(0)
            hal.vbus.value(0)
        elif kind == "attach":
            hal.hall.value(1)
            hal.vbus.value(1)
        elif kind == "load":
            hal.load_ma = int(ev["ma"])
        elif kind == "temp":
            hal.temp_mc = int(round(ev["c"] * 1000))
        elif kind == "vbus":
            hal.vbus_mv = int(ev["mv"])

    @staticmethod
    def _transition(hal, direction):
        state = (hal.ring_a.value() << 1) | hal.ring_b.value()
        nxt = _GRAY[(_GRAY.index(state) + direction) % 4]
        # Exactly one line changes per transition, as on a real encoder.
        if (nxt >> 1) != (state >> 1):
            hal.ring_a.value(nxt >> 1)
        else:
            hal.ring_b.value(nxt & 1)

    async def run(self, hal):
        while True:
            if self._t0 is not None:
                self.step(hal, ticks_diff(ticks_ms(), self._t0))
            await sleep_ms(_STEP_MS)
