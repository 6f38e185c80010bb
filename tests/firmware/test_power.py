"""The power rail state machine: every transition, with explicit ``now`` values (nothing sleeps).

Runs under CPython (pytest) and the MicroPython unix port (run.py).
"""

import sys

from magcam_fw import attach, power
from magcam_fw import protocol as P
from magcam_fw.compat import ticks_add
from magcam_fw.hal_sim import SimHal
from magcam_fw.scenario import Player, parse

GOOD = (5000, 250, 30000)  # mV, mA, milli-degC
SS = power.DEFAULT_LIMITS["soft_start_ms"]
GRANT = 4500


class _Switch:
    def __init__(self):
        self.calls = []

    def __call__(self, on):
        self.calls.append(bool(on))

    @property
    def on(self):
        return self.calls[-1]


def _rail(**limits):
    sw = _Switch()
    return sw, power.PowerRail(sw, limits or None)


def _to_on(rail, now=0, grant=GRANT):
    """off -> requesting -> granted -> soft_start -> on; returns the time it got there."""
    assert rail.update(True, *GOOD, now=now) == 0
    assert rail.state == power.REQUESTING
    assert rail.grant(grant, now) is True
    assert rail.state == power.GRANTED
    assert rail.update(True, *GOOD, now=now + 1) == 0
    assert rail.state == power.SOFT_START
    t = now + 1 + rail.limits["soft_start_ms"]
    assert rail.update(True, *GOOD, now=t) == 0
    assert rail.state == power.ON
    return t


def _names(rail):
    return P.POWER_STATES[rail.state]


# ---------------------------------------------------------------------------------- basics


def test_power_state_and_cause_numbers_are_the_wire_ones():
    names = ("off", "requesting", "granted", "soft_start", "on", "fault", "retry_wait", "latched")
    consts = (power.OFF, power.REQUESTING, power.GRANTED, power.SOFT_START, power.ON, power.FAULT,
              power.RETRY_WAIT, power.LATCHED)
    assert P.POWER_STATES == names
    assert [P.POWER_STATES[c] for c in consts] == list(names)
    assert P.FAULT_CAUSES[power.OVER_CURRENT] == "over_current"
    assert P.FAULT_CAUSES[power.UNDER_VOLTAGE] == "under_voltage"
    assert P.FAULT_CAUSES[power.OVER_TEMPERATURE] == "over_temperature"
    assert P.FAULT_CAUSES[power.OVER_BUDGET] == "over_budget"
    assert P.FAULT_CAUSES[power.OVER_VOLTAGE] == "over_voltage"


def test_power_default_limits_and_overrides():
    want = {"max_ma", "inrush_ma", "min_mv", "max_mv", "max_mc", "soft_start_ms", "retry_ms", "retry_max_ms",
            "latch_faults", "latch_window_ms", "request_mw", "min_grant_mw", "over_budget_ms", "budget_mw"}
    assert set(power.DEFAULT_LIMITS) == want
    d = power.DEFAULT_LIMITS
    assert d["inrush_ma"] > d["max_ma"] and d["retry_max_ms"] >= d["retry_ms"] and d["latch_faults"] >= 2
    assert d["min_grant_mw"] <= d["request_mw"]
    assert d["min_mv"] < GOOD[0] < d["max_mv"] < 9000  # USB's 5 V passes; a 9 V PD source does not
    _, rail = _rail(max_ma=500)
    assert rail.limits["max_ma"] == 500 and rail.limits["min_mv"] == d["min_mv"]
    assert power.DEFAULT_LIMITS["max_ma"] == 1500  # the defaults themselves are not modified
    # A descriptor "power" section that only names budget_mw asks for that much.
    _, rail = _rail(budget_mw=3000)
    assert rail.limits["request_mw"] == 3000
    _, rail = _rail(budget_mw=3000, request_mw=4000)
    assert rail.limits["request_mw"] == 4000 and rail.limits["budget_mw"] == 4000


def test_power_starts_off_with_the_switch_open():
    sw, rail = _rail()
    assert sw.calls == [False] and rail.state == power.OFF
    assert rail.requested_mw == 0 and rail.granted_mw == 0 and rail.faults == 0 and rail.budget_mw == 0
    for t in range(0, 100, 10):
        assert rail.update(False, *GOOD, now=t) == 0
    assert rail.state == power.OFF and True not in sw.calls


def test_power_attach_requests_and_waits_for_a_grant():
    sw, rail = _rail(request_mw=4800)
    assert rail.update(True, *GOOD, now=0) == 0
    assert _names(rail) == "requesting" and rail.requested_mw == 4800 and rail.budget_mw == 4800
    for t in range(10, 5000, 10):  # no grant: the switch stays open however long it waits
        assert rail.update(True, *GOOD, now=t) == 0
    assert rail.state == power.REQUESTING and True not in sw.calls


def test_power_grant_below_minimum_is_refused():
    sw, rail = _rail(min_grant_mw=2000)
    assert rail.grant(5000, 0) is False and rail.state == power.OFF  # nothing asked yet
    rail.update(True, *GOOD, now=0)
    assert rail.grant(1999, 5) is False
    assert rail.state == power.REQUESTING and rail.granted_mw == 0
    rail.update(True, *GOOD, now=10)
    assert rail.state == power.REQUESTING and True not in sw.calls
    assert rail.grant(2000, 20) is True
    assert rail.state == power.GRANTED and rail.granted_mw == 2000 and rail.granted_at == 20
    assert rail.budget_mw == 2000


def test_power_grant_soft_start_on_timing():
    sw, rail = _rail(soft_start_ms=40)
    rail.update(True, *GOOD, now=0)
    rail.grant(4500, 3)
    assert not sw.on  # granting alone does not close the switch
    assert rail.update(True, *GOOD, now=10) == 0
    assert _names(rail) == "soft_start" and sw.on  # closed in the update after the grant
    assert rail.update(True, *GOOD, now=49) == 0 and rail.state == power.SOFT_START
    assert rail.update(True, *GOOD, now=50) == 0 and _names(rail) == "on" and sw.on
    assert rail.update(True, *GOOD, now=60) == 0 and rail.state == power.ON
    assert sw.calls == [False, True]  # one close, no chatter


# ---------------------------------------------------------------------------------- faults


def test_power_each_fault_cuts_in_the_same_update():
    cases = (
        ((5000, 1501, 30000), power.OVER_CURRENT, 1501, "over_current"),
        ((4399, 250, 30000), power.UNDER_VOLTAGE, 4399, "under_voltage"),
        ((5501, 250, 30000), power.OVER_VOLTAGE, 5501, "over_voltage"),
        ((5000, 250, 70001), power.OVER_TEMPERATURE, 70001, "over_temperature"),
    )
    for reading, cause, value, name in cases:
        sw, rail = _rail()
        t = _to_on(rail)
        assert sw.on
        assert rail.update(True, *reading, now=t + 10) == cause, name
        assert not sw.on, name  # cut in this very call
        assert _names(rail) == "fault" and P.FAULT_CAUSES[cause] == name
        assert rail.faults == 1 and rail.last_cause == cause and rail.last_value == value
        assert rail.update(True, *GOOD, now=t + 20) == 0  # a fault is reported once
        assert _names(rail) == "retry_wait" and not sw.on and rail.faults == 1


def test_power_limits_are_inclusive_and_configurable():
    sw, rail = _rail()
    t = _to_on(rail)
    assert rail.update(True, 4400, 1000, 70000, now=t + 1) == 0 and sw.on  # exactly at the limits
    assert rail.update(True, 5500, 1000, 70000, now=t + 2) == 0 and sw.on
    sw, rail = _rail(max_mv=5250)
    t = _to_on(rail)
    assert rail.update(True, 5251, 250, 30000, now=t + 1) == power.OVER_VOLTAGE and not sw.on
    sw, rail = _rail(max_ma=500)
    t = _to_on(rail)
    assert rail.update(True, 5000, 501, 30000, now=t + 1) == power.OVER_CURRENT and not sw.on


def test_power_check_priority():
    _, rail = _rail()
    assert rail.check(*GOOD) == 0
    assert rail.check(4000, 2000, 80000) == power.OVER_CURRENT
    assert rail.check(4000, 100, 80000) == power.UNDER_VOLTAGE
    assert rail.check(5000, 100, 80000) == power.OVER_TEMPERATURE
    assert rail.check(20000, 100, 80000) == power.OVER_VOLTAGE
    assert rail.check(20000, 2000, 80000) == power.OVER_CURRENT
    # In update() too: over-current wins over a sagging voltage.
    sw, rail = _rail()
    t = _to_on(rail)
    assert rail.update(True, 4000, 2000, 80000, now=t + 1) == power.OVER_CURRENT and rail.last_value == 2000


def test_power_soft_start_tolerates_inrush_but_not_more():
    sw, rail = _rail(max_ma=1500, inrush_ma=3000, soft_start_ms=50)
    rail.update(True, *GOOD, now=0)
    rail.grant(GRANT, 0)
    rail.update(True, *GOOD, now=10)  # closes at 10
    assert rail.state == power.SOFT_START
    # Inrush up to inrush_ma and a sagging rail are fine while the capacitors charge.
    assert rail.update(True, 4000, 3000, 30000, now=20) == 0 and sw.on
    assert rail.update(True, 3000, 2000, 30000, now=59) == 0 and rail.state == power.SOFT_START
    # Soft start over: judged at the 'on' limits in that same update.
    assert rail.update(True, 5000, 1600, 30000, now=60) == power.OVER_CURRENT and not sw.on
    assert rail.last_value == 1600
    # Above the inrush limit: cut at once, during soft start.
    sw, rail = _rail(inrush_ma=3000)
    rail.update(True, *GOOD, now=0)
    rail.grant(GRANT, 0)
    rail.update(True, *GOOD, now=10)
    assert rail.update(True, 5000, 3001, 30000, now=11) == power.OVER_CURRENT and not sw.on
    assert rail.last_value == 3001 and rail.state == power.FAULT
    # Over-temperature is judged during soft start too.
    sw, rail = _rail()
    rail.update(True, *GOOD, now=0)
    rail.grant(GRANT, 0)
    rail.update(True, *GOOD, now=10)
    assert rail.update(True, 5000, 250, 70001, now=11) == power.OVER_TEMPERATURE and not sw.on
    # So is over-voltage: the sensor must not sit on a 9-20 V source for the inrush window.
    sw, rail = _rail()
    rail.update(True, *GOOD, now=0)
    rail.grant(GRANT, 0)
    rail.update(True, *GOOD, now=10)
    assert rail.update(True, 9000, 250, 30000, now=11) == power.OVER_VOLTAGE and not sw.on
    assert rail.last_value == 9000
    # Under-voltage at the end of soft start is caught in the update that ends it.
    sw, rail = _rail(soft_start_ms=50)
    rail.update(True, *GOOD, now=0)
    rail.grant(GRANT, 0)
    rail.update(True, *GOOD, now=10)
    assert rail.update(True, 4300, 250, 30000, now=59) == 0
    assert rail.update(True, 4300, 250, 30000, now=60) == power.UNDER_VOLTAGE and not sw.on


def test_power_over_budget_needs_to_last_longer_than_over_budget_ms():
    sw, rail = _rail(over_budget_ms=500, max_ma=3000)
    t = _to_on(rail, grant=4000)
    # 5000 mV * 900 mA = 4500 mW > 4000 mW granted, but not for long: a dip resets the timer.
    assert rail.update(True, 5000, 900, 30000, now=t + 10) == 0
    assert rail.update(True, 5000, 900, 30000, now=t + 400) == 0
    assert rail.update(True, 5000, 800, 30000, now=t + 410) == 0  # 4000 mW: at the budget, fine
    assert rail.update(True, 5000, 900, 30000, now=t + 420) == 0  # over again from here
    assert rail.update(True, 5000, 900, 30000, now=t + 920) == 0 and sw.on  # exactly 500 ms
    assert rail.update(True, 5000, 900, 30000, now=t + 921) == power.OVER_BUDGET and not sw.on
    assert rail.last_cause == power.OVER_BUDGET and rail.last_value == 4500 and rail.state == power.FAULT


def test_power_over_budget_follows_a_new_grant():
    sw, rail = _rail(over_budget_ms=100)
    t = _to_on(rail, grant=4000)
    assert rail.grant(5000, t) is True and rail.state == power.ON and rail.granted_mw == 5000
    for dt in range(0, 1000, 10):  # 4500 mW is within the larger budget
        assert rail.update(True, 5000, 900, 30000, now=t + dt) == 0
    assert rail.grant(2500, t + 1000) is True  # the phone lowers the budget
    assert rail.update(True, 5000, 900, 30000, now=t + 1010) == 0
    assert rail.update(True, 5000, 900, 30000, now=t + 1111) == power.OVER_BUDGET and not sw.on


def test_power_grant_withdrawn_opens_without_a_fault():
    sw, rail = _rail(min_grant_mw=2000)
    t = _to_on(rail)
    assert rail.grant(0, t + 5) is False
    assert not sw.on and _names(rail) == "requesting" and rail.granted_mw == 0 and rail.faults == 0
    assert rail.update(True, *GOOD, now=t + 10) == 0 and rail.state == power.REQUESTING and not sw.on
    assert rail.grant(3000, t + 20) is True and rail.state == power.GRANTED


# ---------------------------------------------------------------------------------- retry, back-off, latch


def _trip(rail, now):
    """From soft_start or on: an over-current at ``now``, then the update that leaves FAULT."""
    assert rail.update(True, 5000, 9999, 30000, now=now) == power.OVER_CURRENT
    rail.update(True, *GOOD, now=now + 1)


def _close_time(rail, sw, start, limit=100000):
    """Tick every ms from start with good readings; the time the switch closes."""
    t = start
    while t < start + limit:
        rail.update(True, *GOOD, now=t)
        if sw.on:
            return t
        t += 1
    raise AssertionError("never closed")


def test_power_retry_backoff_doubles_and_is_capped():
    sw, rail = _rail(retry_ms=100, retry_max_ms=350, latch_faults=10, latch_window_ms=100000)
    t = _to_on(rail)
    waits = []
    for _ in range(5):
        _trip(rail, t)
        assert rail.state == power.RETRY_WAIT and not sw.on
        closed = _close_time(rail, sw, t + 1)
        waits.append(closed - t)
        assert rail.state == power.SOFT_START
        t = closed + 1  # trips again in soft start
    assert waits == [100, 200, 350, 350, 350], waits
    assert rail.faults == 5 and rail.state == power.SOFT_START


def test_power_retry_after_retry_ms_exactly():
    sw, rail = _rail(retry_ms=1000)
    t = _to_on(rail)
    assert rail.update(True, 5000, 2000, 30000, now=t + 100) == power.OVER_CURRENT
    assert rail.update(True, *GOOD, now=t + 110) == 0 and rail.state == power.RETRY_WAIT
    assert rail.update(True, *GOOD, now=t + 1099) == 0 and rail.state == power.RETRY_WAIT and not sw.on
    assert rail.update(True, *GOOD, now=t + 1100) == 0 and rail.state == power.SOFT_START and sw.on
    assert rail.update(True, *GOOD, now=t + 1100 + SS) == 0 and rail.state == power.ON
    # A second fault counts again and waits twice as long.
    t2 = t + 1200 + SS
    assert rail.update(True, 4000, 100, 30000, now=t2) == power.UNDER_VOLTAGE
    assert rail.faults == 2 and not sw.on
    rail.update(True, *GOOD, now=t2 + 1)
    assert rail.update(True, *GOOD, now=t2 + 1999) == 0 and not sw.on
    assert rail.update(True, *GOOD, now=t2 + 2000) == 0 and sw.on


def test_power_retry_across_tick_wraparound():
    sw, rail = _rail(retry_ms=1000)
    t0 = ticks_add(0, -500)
    _to_on(rail, now=ticks_add(t0, -100))
    assert rail.update(True, 5000, 2000, 30000, now=t0) == power.OVER_CURRENT
    rail.update(True, *GOOD, now=ticks_add(t0, 10))
    rail.update(True, *GOOD, now=ticks_add(t0, 999))
    assert not sw.on
    rail.update(True, *GOOD, now=ticks_add(t0, 1000))
    assert sw.on and rail.state == power.SOFT_START


def test_power_latches_after_n_faults_within_the_window():
    sw, rail = _rail(retry_ms=100, retry_max_ms=1000, latch_faults=3, latch_window_ms=10000)
    t = _to_on(rail)
    for n in (1, 2):
        assert rail.update(True, 5000, 9999, 30000, now=t) == power.OVER_CURRENT
        rail.update(True, *GOOD, now=t + 1)
        assert rail.state == power.RETRY_WAIT, n
        t = _close_time(rail, sw, t + 1) + SS
        rail.update(True, *GOOD, now=t)
        assert rail.state == power.ON
        t += 10
    assert rail.update(True, 5000, 9999, 30000, now=t) == power.OVER_CURRENT and not sw.on
    assert rail.state == power.FAULT and rail.faults == 3
    assert rail.update(True, *GOOD, now=t + 10) == 0 and _names(rail) == "latched"
    # Latched: stays open, whatever the time and the readings, and grants do not help.
    n = len(sw.calls)
    for dt in range(20, 200000, 997):
        assert rail.update(True, *GOOD, now=t + dt) == 0
    assert rail.grant(5000, t) is False
    assert rail.state == power.LATCHED and not sw.on and len(sw.calls) == n
    # The host's CMD_POWER_RESET: back to granted, closes at the next update.
    assert rail.reset() is True and rail.state == power.GRANTED and not sw.on
    assert rail.update(True, *GOOD, now=t + 300000) == 0 and rail.state == power.SOFT_START and sw.on
    assert rail.faults == 3  # since boot: not cleared by a reset


def test_power_faults_spread_out_never_latch():
    sw, rail = _rail(retry_ms=100, latch_faults=3, latch_window_ms=5000)
    t = _to_on(rail)
    for i in range(6):
        t += 5000  # each fault is a whole window after the previous one
        assert rail.update(True, 5000, 9999, 30000, now=t) == power.OVER_CURRENT
        rail.update(True, *GOOD, now=t + 1)
        assert rail.state == power.RETRY_WAIT, i
        closed = _close_time(rail, sw, t + 1)
        assert closed - t == 100, (i, closed - t)  # back-off never grows either
        rail.update(True, *GOOD, now=closed + SS)
        assert rail.state == power.ON
    assert rail.faults == 6


def test_power_latch_window_counts_only_recent_faults():
    sw, rail = _rail(retry_ms=100, retry_max_ms=100, latch_faults=3, latch_window_ms=5000)
    t = _to_on(rail)
    times = (1000, 5000, 7000, 9000)  # 1000 falls out of the window by 7000; 5000, 7000, 9000 latch
    states = []
    for dt in times:
        rail.update(True, *GOOD, now=t + dt - 200)  # makes sure it is back on
        rail.update(True, *GOOD, now=t + dt - 200 + SS)
        assert rail.state == power.ON, dt
        assert rail.update(True, 5000, 9999, 30000, now=t + dt) == power.OVER_CURRENT
        rail.update(True, *GOOD, now=t + dt + 1)
        states.append(_names(rail))
    assert states == ["retry_wait", "retry_wait", "retry_wait", "latched"], states


def test_power_reset_forgets_the_fault_history():
    sw, rail = _rail(retry_ms=100, retry_max_ms=10000, latch_faults=3, latch_window_ms=60000)
    t = _to_on(rail)
    _trip(rail, t)
    t = _close_time(rail, sw, t + 1)
    _trip(rail, t + 1)
    assert rail.state == power.RETRY_WAIT
    assert rail.reset() is True and rail.state == power.GRANTED  # try again now
    t = _close_time(rail, sw, t + 2)
    assert rail.state == power.SOFT_START
    _trip(rail, t + 1)  # a third fault, but the history was cleared: no latch, first back-off
    assert rail.state == power.RETRY_WAIT
    assert _close_time(rail, sw, t + 2) - (t + 1) == 100
    # reset() while on changes nothing but the history.
    sw, rail = _rail()
    t = _to_on(rail)
    assert rail.reset() is False and rail.state == power.ON and sw.on


# ---------------------------------------------------------------------------------- never close into a fault


def test_power_never_closes_into_a_known_fault():
    for bad, cause in (((4300, 0, 30000), power.UNDER_VOLTAGE), ((20000, 0, 30000), power.OVER_VOLTAGE),
                       ((5000, 0, 75000), power.OVER_TEMPERATURE)):
        sw, rail = _rail()
        rail.update(True, *bad, now=0)
        rail.grant(GRANT, 0)
        for t in range(10, 3000, 10):  # granted, but V or T bad: holds the switch open
            assert rail.update(True, *bad, now=t) == 0
        assert rail.state == power.GRANTED and rail.blocked == cause and True not in sw.calls
        assert rail.faults == 0  # not a fault, and no EV_FAULT
        assert rail.update(True, *GOOD, now=3000) == 0 and rail.state == power.SOFT_START and sw.on
        assert rail.blocked == 0
        # After a fault, the end of the back-off is judged the same way.
        rail.update(True, *GOOD, now=3000 + SS)
        assert rail.update(True, 5000, 9999, 30000, now=4000) == power.OVER_CURRENT
        rail.update(True, *bad, now=4001)
        for t in range(5000, 9000, 10):  # retry_ms (1000) is long over, still bad
            assert rail.update(True, *bad, now=t) == 0
        assert rail.state == power.RETRY_WAIT and not sw.on and rail.blocked == cause and rail.faults == 1
        assert rail.update(True, *GOOD, now=9000) == 0 and rail.state == power.SOFT_START and sw.on


# ---------------------------------------------------------------------------------- detach


def _drive_to(state):
    """A rail in the given state, and the time of its last update."""
    sw, rail = _rail(latch_faults=2)
    if state == power.OFF:
        return sw, rail, 0
    rail.update(True, *GOOD, now=0)
    if state == power.REQUESTING:
        return sw, rail, 0
    rail.grant(GRANT, 0)
    if state == power.GRANTED:
        return sw, rail, 0
    rail.update(True, *GOOD, now=10)
    if state == power.SOFT_START:
        return sw, rail, 10
    rail.update(True, *GOOD, now=10 + SS)
    if state == power.ON:
        return sw, rail, 10 + SS
    t = 20 + SS
    rail.update(True, 5000, 9999, 30000, now=t)
    if state == power.FAULT:
        return sw, rail, t
    rail.update(True, *GOOD, now=t + 1)
    if state == power.RETRY_WAIT:
        return sw, rail, t + 1
    t = _close_time(rail, sw, t + 1)
    rail.update(True, 5000, 9999, 30000, now=t + 1)
    rail.update(True, *GOOD, now=t + 2)
    assert state == power.LATCHED
    return sw, rail, t + 2


def test_power_detach_turns_off_from_every_state():
    for state in range(len(P.POWER_STATES)):
        sw, rail, t = _drive_to(state)
        assert rail.state == state, (P.POWER_STATES[state], rail.state)
        n = len(sw.calls)
        assert rail.update(False, *GOOD, now=t + 1) == 0
        assert rail.state == power.OFF and not sw.on, P.POWER_STATES[state]
        if state != power.OFF:
            assert len(sw.calls) == n + 1  # opened in that very call
        assert rail.granted_mw == 0 and rail.requested_mw == 0
        # Re-attached: asks again; a latch and the fault history are gone.
        rail.update(True, *GOOD, now=t + 2)
        assert rail.state == power.REQUESTING and not sw.on
        rail.grant(GRANT, t + 2)
        rail.update(True, *GOOD, now=t + 3)
        assert rail.state == power.SOFT_START and sw.on


def test_power_detaching_mid_fault_history_restarts_the_count():
    sw, rail = _rail(latch_faults=2, retry_ms=10)
    t = _to_on(rail)
    _trip(rail, t)  # one fault
    rail.update(False, *GOOD, now=t + 5)
    t = _to_on(rail, now=t + 10)
    _trip(rail, t)  # one fault again: not the second of a window
    assert rail.state == power.RETRY_WAIT and rail.faults == 2


# ---------------------------------------------------------------------------------- allocation


def test_power_update_allocates_nothing_on_micropython():
    if sys.implementation.name != "micropython":
        return  # CPython allocates for every int; the rule is about MicroPython's heap
    import micropython

    class Pin:
        def __init__(self):
            self.v = False

        def __call__(self, on):
            self.v = on

    pin = Pin()
    rail = power.PowerRail(pin)
    rail.update(True, *GOOD, 0)
    rail.grant(GRANT, 0)
    mv, ma, mc = GOOD
    micropython.heap_lock()
    try:
        # Soft start, on, over budget (fault 1), retry, on, over-current (fault 2), retry, on.
        for t in range(1, 6000, 10):
            rail.update(True, mv, 1200 if 500 < t < 1300 else (9999 if t == 3001 else ma), mc, t)
    finally:
        micropython.heap_unlock()
    assert rail.faults == 2 and rail.state == power.ON and pin.v


# ---------------------------------------------------------------------------------- with the sim HAL


def test_power_rail_on_the_sim_hal_with_a_scenario():
    hal = SimHal()
    player = Player(parse('{"t": 100, "do": "detach"}\n{"t": 300, "do": "attach"}\n{"t": 500, "do": "load", "ma": 1600}'))
    det = attach.AttachDetector(hal.hall, hal.vbus, 30)
    rail = power.PowerRail(hal.set_rail)
    causes = []
    for now in range(0, 700, 10):
        player.step(hal, now)
        det.update(now)
        mv, ma = hal.read_power()
        cause = rail.update(det.attached, mv, ma, hal.read_temp_mc(), now)
        if rail.state == power.REQUESTING:
            rail.grant(rail.requested_mw, now)  # what the host answers to EV_POWER requesting
        if cause:
            causes.append((now, cause))
        if now == 200:
            assert det.state == attach.DETACHED and not hal.rail_on
        if now == 400:
            assert det.attached and det.session == 2 and hal.rail_on
    # Detaching (not yet detached) already counts as not attached: the rail goes off without
    # an under-voltage fault. Only the load step over the limit trips it.
    assert causes == [(500, power.OVER_CURRENT)]
    assert not hal.rail_on and rail.state == power.RETRY_WAIT
