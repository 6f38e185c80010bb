"""Thermal derating with hysteresis, and the streaming rate each state allows."""

from magcam_fw import thermal
from magcam_fw import protocol as P


def test_thermal_state_numbers_are_the_wire_ones():
    assert P.THERMAL_STATES == ("normal", "derated", "suspended")
    assert (thermal.NORMAL, thermal.DERATED, thermal.SUSPENDED) == (0, 1, 2)


def test_thermal_hysteresis_walk_up_and_down():
    th = thermal.Thermal(derate_mc=55000, suspend_mc=65000, hysteresis_mc=3000)
    walk = [
        (30000, "normal", False),
        (54999, "normal", False),
        (55000, "derated", True),
        (53000, "derated", False),  # within the hysteresis
        (52000, "derated", False),
        (51999, "normal", True),
        (60000, "derated", True),
        (65000, "suspended", True),
        (64000, "suspended", False),
        (62000, "suspended", False),
        (61999, "derated", True),
        (64999, "derated", False),
        (70000, "suspended", True),
        (53000, "derated", True),  # from suspended straight below derate, within hysteresis
        (40000, "normal", True),
        (80000, "suspended", True),
        (20000, "normal", True),  # and a straight fall
    ]
    for mc, want, changed in walk:
        assert th.update(mc) is changed, (mc, want)
        assert P.THERMAL_STATES[th.state] == want, (mc, P.THERMAL_STATES[th.state], want)


def test_thermal_defaults_are_the_documented_ones():
    th = thermal.Thermal()
    assert (th.derate, th.suspend, th.hyst, th.derate_pct) == (55000, 65000, 3000, 50)


def test_thermal_sitting_on_a_threshold_does_not_flap():
    th = thermal.Thermal()
    changes = 0
    for i in range(200):  # +-1 degC of noise around the derate threshold
        changes += th.update(55000 + (1000 if i % 2 else -1000))
    assert changes == 1 and th.state == thermal.DERATED
    changes = 0
    for i in range(200):
        changes += th.update(65000 + (1000 if i % 2 else -1000))
    assert changes == 1 and th.state == thermal.SUSPENDED


def test_thermal_fps_per_state():
    th = thermal.Thermal()
    assert th.fps_x10(200) == 200 and th.fps_x10(0) == 0
    th.update(58000)
    assert th.state == thermal.DERATED and th.fps_x10(200) == 100 and th.fps_x10(75) == 37
    th.update(68000)
    assert th.state == thermal.SUSPENDED and th.fps_x10(200) == 0
    th.update(63000)  # within the hysteresis: still suspended, still 0
    assert th.fps_x10(200) == 0
    th.update(61000)
    assert th.fps_x10(300) == 150
    th.update(40000)
    assert th.state == thermal.NORMAL and th.fps_x10(300) == 300
    th = thermal.Thermal(derate_pct=25)
    th.update(56000)
    assert th.fps_x10(600) == 150
