"""Power share: the module's load switch, negotiated with the phone and cut in the same tick.

One state machine; ``state`` is an index into ``protocol.POWER_STATES``::

    off --attach--> requesting --grant(mw >= min_grant_mw)--> granted --V/T ok: close--> soft_start
    soft_start --soft_start_ms--> on --bad reading: open in that same update()--> fault
    fault --> retry_wait --back-off, V/T ok: close--> soft_start ...
    fault --> latched   (latch_faults faults within latch_window_ms; until reset() or a detach)
    any state --detach--> off (switch opened in that same update())

- While ``requesting`` the app tells the host what the module asks for: EV_POWER with state
  ``requesting`` and ``budget_mw = rail.requested_mw``; the host answers CMD_POWER_GRANT,
  which the app passes to ``grant(mw, now)``.
- ``soft_start``: for ``soft_start_ms`` after the switch closes the over-current limit is
  ``inrush_ma`` and under-voltage and the budget are not judged (the rail is still charging
  the sensor's capacitors); over-voltage and over-temperature are.
- ``on``: over_current (``ma > max_ma``), under_voltage (``mv < min_mv``), over_voltage
  (``mv > max_mv``), over_temperature (``mc > max_mc``), in that order, and over_budget
  (``mv * ma / 1000 > granted_mw`` for longer than ``over_budget_ms``). ``update()`` returns
  the cause (``protocol.FAULT_CAUSES`` index) in the call that opened the switch, 0
  otherwise; ``last_value`` is the offending reading (mA, mV, m°C, or mW for over_budget).
- Over-voltage: VBUS above ``max_mv`` (a charger or phone offering 9-20 V, a faulty source)
  would reach the sensor's 5 V parts through the closed switch, so it is judged from the first
  tick the switch is closed and, like under-voltage, stops the switch from closing.
- The switch never closes into a known fault: before closing (``granted`` and at the end of
  ``retry_wait``) the readings it can judge with the switch open, voltage and temperature, must
  be good; until they are it stays open in the same state and ``blocked`` names the cause.
- Back-off: the k-th fault within ``latch_window_ms`` waits ``retry_ms * 2**(k-1)``, at most
  ``retry_max_ms``; the ``latch_faults``-th latches.

Usage::

    rail = PowerRail(hal.set_rail, descriptor.get("power"))   # switch(bool) drives the enable pin
    cause = rail.update(attached, mv, ma, mc, now)    # once per control tick, fresh readings
    if cause:
        ...                                           # EV_FAULT (cause, rail.last_value)
    rail.grant(budget_mw, now)                        # on CMD_POWER_GRANT
    rail.reset()                                      # on CMD_POWER_RESET (clears a latch)

``update()`` does integer maths only and allocates nothing.
"""

from magcam_fw.compat import const, ticks_diff

# States: indices into protocol.POWER_STATES.
OFF = const(0)
REQUESTING = const(1)
GRANTED = const(2)
SOFT_START = const(3)
ON = const(4)
FAULT = const(5)
RETRY_WAIT = const(6)
LATCHED = const(7)

# Causes: indices into protocol.FAULT_CAUSES.
OVER_CURRENT = const(1)
UNDER_VOLTAGE = const(2)
OVER_TEMPERATURE = const(3)
OVER_BUDGET = const(8)
OVER_VOLTAGE = const(9)

DEFAULT_LIMITS = {
    "max_ma": 1500,  # over_current once on (ma > max_ma)
    "inrush_ma": 3000,  # over_current during soft start
    "min_mv": 4400,  # under_voltage once on (mv < min_mv); also needed before closing
    "max_mv": 5500,  # over_voltage (mv > max_mv), soft start included; also needed before closing
    "max_mc": 70000,  # over_temperature (mc > max_mc); also needed before closing
    "soft_start_ms": 50,  # inrush window after the switch closes
    "retry_ms": 1000,  # first back-off after a fault
    "retry_max_ms": 8000,  # back-off cap
    "latch_faults": 3,  # this many faults within latch_window_ms latch the rail off
    "latch_window_ms": 60000,
    "request_mw": 5000,  # what the module asks the phone for
    "min_grant_mw": 2000,  # a smaller grant is refused (the module cannot run on it)
    "over_budget_ms": 500,  # how long mv*ma may stay above the grant
    # The descriptor's historical name for the module's budget: a descriptor "power" section
    # that gives budget_mw but no request_mw requests budget_mw.
    "budget_mw": 5000,
}


class PowerRail:
    def __init__(self, switch, limits=None):
        self._switch = switch
        lim = dict(DEFAULT_LIMITS)
        if limits:
            lim.update(limits)
            if "budget_mw" in limits and "request_mw" not in limits:
                lim["request_mw"] = limits["budget_mw"]
        lim["budget_mw"] = lim["request_mw"]
        self.limits = lim
        self.state = OFF
        self.requested_mw = 0
        self.granted_mw = 0
        self.granted_at = 0
        self.faults = 0  # since boot
        self.last_cause = 0
        self.last_value = 0
        self.blocked = 0  # why a granted/retrying rail is holding the switch open, else 0
        self._since = 0  # soft_start: when the switch closed; fault/retry_wait: when it opened
        self._wait = 0  # current back-off
        self._latch = False
        self._over = False  # above the budget since _over_at
        self._over_at = 0
        # Times of the last latch_faults faults (a ring), for the back-off and the latch.
        self._hist = [0] * max(1, lim["latch_faults"])
        self._nhist = 0
        self._hnext = 0
        switch(False)

    @property
    def budget_mw(self):
        """What EV_POWER reports: the grant once there is one, else what the module asks for."""
        return self.granted_mw or self.requested_mw

    def check(self, mv, ma, mc):
        """The fault cause for these readings at the 'on' limits, 0 if they are safe."""
        lim = self.limits
        if ma > lim["max_ma"]:
            return OVER_CURRENT
        if mv < lim["min_mv"]:
            return UNDER_VOLTAGE
        if mv > lim["max_mv"]:
            return OVER_VOLTAGE
        if mc > lim["max_mc"]:
            return OVER_TEMPERATURE
        return 0

    # ---- per tick -------------------------------------------------------------------
    def update(self, attached, mv, ma, mc, now):
        """Advance one control tick with fresh readings; returns a new fault cause, or 0."""
        s = self.state
        if not attached:
            if s != OFF:
                self._open()
                self.state = OFF
                self.requested_mw = self.granted_mw = 0
                self.blocked = 0
                self._nhist = 0  # a new attach starts with a clean fault history
            return 0
        lim = self.limits
        if s == ON:
            return self._judge(mv, ma, mc, now)
        if s == SOFT_START:
            if ticks_diff(now, self._since) < lim["soft_start_ms"]:
                if ma > lim["inrush_ma"]:
                    return self._trip(OVER_CURRENT, ma, now)
                if mv > lim["max_mv"]:
                    return self._trip(OVER_VOLTAGE, mv, now)
                if mc > lim["max_mc"]:
                    return self._trip(OVER_TEMPERATURE, mc, now)
                return 0
            self.state = ON
            self._over = False
            return self._judge(mv, ma, mc, now)
        if s == OFF:
            self.state = REQUESTING
            self.requested_mw = lim["request_mw"]
        elif s == GRANTED:
            self._close_if_safe(mv, mc, now)
        elif s == FAULT:
            self.state = LATCHED if self._latch else RETRY_WAIT
        elif s == RETRY_WAIT:
            if ticks_diff(now, self._since) >= self._wait:
                self._close_if_safe(mv, mc, now)
        # REQUESTING waits for grant(), LATCHED for reset() or a detach.
        return 0

    def _judge(self, mv, ma, mc, now):
        cause = self.check(mv, ma, mc)
        if cause == OVER_CURRENT:
            return self._trip(cause, ma, now)
        if cause == UNDER_VOLTAGE or cause == OVER_VOLTAGE:
            return self._trip(cause, mv, now)
        if cause:
            return self._trip(cause, mc, now)
        mw = mv * ma // 1000
        if mw > self.granted_mw:
            if not self._over:
                self._over = True
                self._over_at = now
            elif ticks_diff(now, self._over_at) > self.limits["over_budget_ms"]:
                return self._trip(OVER_BUDGET, mw, now)
        else:
            self._over = False
        return 0

    def _trip(self, cause, value, now):
        self._open()  # first: the switch opens before anything else happens
        self.state = FAULT
        self.faults += 1
        self.last_cause = cause
        self.last_value = value
        self._since = now
        lim = self.limits
        hist = self._hist
        n = len(hist)
        hist[self._hnext] = now
        self._hnext = (self._hnext + 1) % n
        if self._nhist < n:
            self._nhist += 1
        window = lim["latch_window_ms"]
        k = 0
        i = self._hnext
        for _ in range(self._nhist):
            i = (i - 1) % n
            if ticks_diff(now, hist[i]) < window:
                k += 1
        self._latch = k >= lim["latch_faults"]
        wait = lim["retry_ms"]
        cap = lim["retry_max_ms"]
        while k > 1 and wait < cap:
            wait <<= 1
            k -= 1
        self._wait = wait if wait < cap else cap
        return cause

    def _close_if_safe(self, mv, mc, now):
        lim = self.limits
        if mv < lim["min_mv"]:
            self.blocked = UNDER_VOLTAGE
        elif mv > lim["max_mv"]:
            self.blocked = OVER_VOLTAGE
        elif mc > lim["max_mc"]:
            self.blocked = OVER_TEMPERATURE
        else:
            self.blocked = 0
            self.state = SOFT_START
            self._since = now
            self._switch(True)

    def _open(self):
        self._switch(False)

    # ---- host commands --------------------------------------------------------------
    def grant(self, mw, now):
        """CMD_POWER_GRANT: the phone's budget in mW. True if taken.

        While requesting, a grant of at least ``min_grant_mw`` moves to ``granted`` (the next
        ``update()`` closes the switch if voltage and temperature allow); a smaller one is
        refused and the rail keeps requesting. Later grants change the budget the over_budget
        check uses; a grant below ``min_grant_mw`` then withdraws the power: the switch opens
        and the rail requests again (not a fault). Ignored while off or latched.
        """
        s = self.state
        if s == OFF or s == LATCHED:
            return False
        if mw < self.limits["min_grant_mw"]:
            if s != REQUESTING:
                self._open()
                self.state = REQUESTING
                self.granted_mw = 0
                self.blocked = 0
            return False
        self.granted_mw = mw
        self.granted_at = now
        if s == REQUESTING:
            self.state = GRANTED
        return True

    def reset(self):
        """CMD_POWER_RESET: forget the fault history; a latched, faulted or waiting rail tries
        again at once (next ``update()``, if voltage and temperature allow). True if the state
        changed. ``faults`` (since boot) is kept."""
        self._nhist = 0
        s = self.state
        if s == LATCHED or s == FAULT or s == RETRY_WAIT:
            self.state = GRANTED if self.granted_mw else REQUESTING
            return True
        return False
