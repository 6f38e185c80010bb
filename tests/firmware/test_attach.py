"""Attach detection: Hall + VBUS debounce, states and attach sessions.

Every time is an explicit ``now`` in ms: nothing sleeps.
"""

from magcam_fw import attach
from magcam_fw import protocol as P
from magcam_fw.compat import ticks_add
from magcam_fw.hal_sim import VirtualPin

# ---------------------------------------------------------------------------------- attach


def _detector(hall=0, vbus=0, debounce_ms=30):
    h, v = VirtualPin(hall), VirtualPin(vbus)
    return h, v, attach.AttachDetector(h, v, debounce_ms)


def _set(h, v, present):
    h.value(present)
    v.value(present)


def test_attach_initial_state_follows_pins():
    assert _detector(1, 1)[2].state == attach.ATTACHED
    assert _detector(1, 1)[2].session == 1
    for hall, vbus in ((0, 0), (1, 0), (0, 1)):
        det = _detector(hall, vbus)[2]
        assert det.state == attach.DETACHED and det.session == 0 and not det.attached


def test_attach_needs_both_hall_and_vbus():
    h, v, det = _detector()
    h.value(1)  # magnet only
    for t in range(0, 200, 10):
        assert det.update(t) is False
    assert det.state == attach.DETACHED
    h.value(0)
    v.value(1)  # power only
    for t in range(200, 400, 10):
        det.update(t)
    assert det.state == attach.DETACHED and det.session == 0


def test_attach_debounce_and_session():
    h, v, det = _detector(debounce_ms=30)
    _set(h, v, 1)
    assert det.update(100) is True and det.state == attach.ATTACHING
    assert det.update(129) is False and det.state == attach.ATTACHING
    assert det.update(130) is True and det.state == attach.ATTACHED
    assert det.attached and det.session == 1
    _set(h, v, 0)
    assert det.update(200) is True and det.state == attach.DETACHING
    assert det.update(229) is False
    assert det.update(230) is True and det.state == attach.DETACHED
    _set(h, v, 1)
    det.update(300)
    det.update(330)
    assert det.state == attach.ATTACHED and det.session == 2
    assert [P.ATTACH_STATES[s] for s in (0, 1, 2, 3)] == ["detached", "attaching", "attached", "detaching"]


def test_attach_chatter_shorter_than_debounce():
    h, v, det = _detector(debounce_ms=30)
    _set(h, v, 1)
    det.update(0)
    det.update(30)
    assert det.state == attach.ATTACHED and det.session == 1
    # Contact chatter while attached: dropouts of 20 ms never reach DETACHED.
    t = 100
    for _ in range(5):
        h.value(0)
        det.update(t)
        det.update(t + 20)
        assert det.state == attach.DETACHING
        h.value(1)
        det.update(t + 25)
        assert det.state == attach.ATTACHED
        t += 50
    assert det.session == 1
    # Chatter while attaching: each bounce restarts the debounce.
    _set(h, v, 0)
    det.update(1000)
    det.update(1030)
    assert det.state == attach.DETACHED
    for t in range(2000, 2200, 20):
        v.value(1 - v.value())
        det.update(t)
        assert det.state != attach.ATTACHED
    assert det.session == 1


def test_attach_debounce_across_tick_wraparound():
    h, v, det = _detector(debounce_ms=30)
    _set(h, v, 1)
    t0 = ticks_add(0, -10)  # 10 ms before the tick counter wraps
    det.update(t0)
    assert det.update(ticks_add(t0, 29)) is False
    assert det.update(ticks_add(t0, 30)) is True and det.state == attach.ATTACHED
