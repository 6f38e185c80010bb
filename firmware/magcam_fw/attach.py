"""Magnetic attach detection: Hall sensor and VBUS must agree for a debounce time.

States follow the wire enumeration ``protocol.ATTACH_STATES``:
detached -> attaching -> attached -> detaching -> detached.

Usage::

    det = AttachDetector(hall_pin, vbus_pin, debounce_ms=30)
    if det.update(ticks_ms()):        # True when the state changed
        print(det.state, det.session)
"""

from magcam_fw.compat import const, ticks_diff

DETACHED = const(0)
ATTACHING = const(1)
ATTACHED = const(2)
DETACHING = const(3)


class AttachDetector:
    def __init__(self, hall, vbus, debounce_ms=30):
        self._hall = hall
        self._vbus = vbus
        self._debounce = debounce_ms
        self.state = ATTACHED if self._present() else DETACHED
        self.session = 1 if self.state == ATTACHED else 0
        self._since = 0

    def _present(self):
        return bool(self._hall.value()) and bool(self._vbus.value())

    def update(self, now):
        present = self._present()
        s = self.state
        if s == DETACHED and present:
            self.state, self._since = ATTACHING, now
        elif s == ATTACHED and not present:
            self.state, self._since = DETACHING, now
        elif s == ATTACHING:
            if not present:
                self.state = DETACHED
            elif ticks_diff(now, self._since) >= self._debounce:
                self.state = ATTACHED
                self.session += 1
        elif s == DETACHING:
            if present:
                self.state = ATTACHED
            elif ticks_diff(now, self._since) >= self._debounce:
                self.state = DETACHED
        return s != self.state

    @property
    def attached(self):
        return self.state == ATTACHED
