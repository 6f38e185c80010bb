"""Thermal derating with hysteresis: normal -> derated -> suspended, and back.

Usage::

    th = Thermal()
    if th.update(mc):      # milli-degrees C; True when the state changed
        print(th.state)    # index into protocol.THERMAL_STATES
"""

from magcam_fw.compat import const

NORMAL = const(0)
DERATED = const(1)
SUSPENDED = const(2)


class Thermal:
    def __init__(self, derate_mc=55000, suspend_mc=65000, hysteresis_mc=3000):
        self.derate = derate_mc
        self.suspend = suspend_mc
        self.hyst = hysteresis_mc
        self.state = NORMAL

    def update(self, mc):
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
