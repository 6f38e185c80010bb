"""Thermal derating with hysteresis: normal -> derated -> suspended, and back.

``state`` is an index into ``protocol.THERMAL_STATES``. Going up: derated from ``derate_mc``,
suspended from ``suspend_mc``. Going down, each step needs the temperature ``hysteresis_mc``
below the threshold it crossed on the way up (suspended -> derated below
``suspend_mc - hysteresis_mc``, derated -> normal below ``derate_mc - hysteresis_mc``), so a
temperature sitting on a threshold does not flap. Streaming runs at the requested rate when
normal, at ``derate_pct`` percent of it when derated, and not at all (0) when suspended.

Usage::

    th = Thermal()                      # 55 C / 65 C / 3 C hysteresis, derated = half rate
    if th.update(mc):                   # milli-degrees C; True when the state changed
        print(th.state)                 # index into protocol.THERMAL_STATES
    fps_x10 = th.fps_x10(200)           # 20.0 fps asked -> 200, 100 or 0
"""

from magcam_fw.compat import const

NORMAL = const(0)
DERATED = const(1)
SUSPENDED = const(2)


class Thermal:
    def __init__(self, derate_mc=55000, suspend_mc=65000, hysteresis_mc=3000, derate_pct=50):
        self.derate = derate_mc
        self.suspend = suspend_mc
        self.hyst = hysteresis_mc
        self.derate_pct = derate_pct
        self.state = NORMAL

    def update(self, mc):
        """Judge a new temperature; True when the state changed (one event per change)."""
        old = self.state
        if mc >= self.suspend:
            self.state = SUSPENDED
        elif mc >= self.derate:
            if old != SUSPENDED or mc < self.suspend - self.hyst:
                self.state = DERATED
        elif old == NORMAL or mc < self.derate - self.hyst:
            self.state = NORMAL
        elif old == SUSPENDED:
            self.state = DERATED
        return old != self.state

    def fps_x10(self, requested_x10):
        """The streaming rate (fps x 10) allowed now for a requested one; 0 when suspended."""
        s = self.state
        if s == NORMAL:
            return requested_x10
        if s == DERATED:
            return requested_x10 * self.derate_pct // 100
        return 0
