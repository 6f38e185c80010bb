"""Power share: the load switch follows attach, and a bad reading cuts it in the same tick.

Usage::

    rail = PowerRail(set_switch, limits)      # limits from the descriptor's "power" section
    cause = rail.update(attached, mv, ma, mc) # call once per control tick with fresh readings
    rail.state                                 # index into protocol.POWER_STATES
"""

from magcam_fw.compat import const, ticks_diff

OFF = const(0)
ON = const(4)
FAULT = const(5)
RETRY_WAIT = const(6)

OVER_CURRENT = const(1)
UNDER_VOLTAGE = const(2)
OVER_TEMPERATURE = const(3)

DEFAULT_LIMITS = {"max_ma": 1500, "min_mv": 4400, "max_mc": 70000, "retry_ms": 1000, "budget_mw": 5000}


class PowerRail:
    def __init__(self, switch, limits=None):
        self._switch = switch
        lim = dict(DEFAULT_LIMITS)
        if limits:
            lim.update(limits)
        self.limits = lim
        self.state = OFF
        self.faults = 0
        self.last_cause = 0
        self.last_value = 0
        self._fault_at = 0
        switch(False)

    def _set(self, state):
        self.state = state
        self._switch(state == ON)

    def check(self, mv, ma, mc):
        """The fault cause for these readings, 0 if they are safe."""
        lim = self.limits
        if ma > lim["max_ma"]:
            return OVER_CURRENT
        if mv < lim["min_mv"]:
            return UNDER_VOLTAGE
        if mc > lim["max_mc"]:
            return OVER_TEMPERATURE
        return 0

    def update(self, attached, mv, ma, mc, now):
        """Advance one control tick; returns a new fault cause, or 0."""
        if not attached:
            if self.state != OFF:
                self._set(OFF)
            return 0
        if self.state == ON:
            cause = self.check(mv, ma, mc)
            if cause:
                self._set(FAULT)
                self.faults += 1
                self.last_cause = cause
                self.last_value = ma if cause == OVER_CURRENT else (mv if cause == UNDER_VOLTAGE else mc)
                self._fault_at = now
                return cause
        elif self.state == FAULT:
            self._set(RETRY_WAIT)
        elif self.state == RETRY_WAIT:
            if ticks_diff(now, self._fault_at) >= self.limits["retry_ms"]:
                self._switch_on_if_safe(mv, mc, now)
        else:  # OFF and attached
            self._switch_on_if_safe(mv, mc, now)
        return 0

    def _switch_on_if_safe(self, mv, mc, now):
        # With the switch open only VBUS and temperature can be judged; never close into a fault.
        if self.check(mv, 0, mc):
            self.state = RETRY_WAIT
            self._fault_at = now
        else:
            self._set(ON)
