"""Focus-by-wire: ring counts in, lens actuator position out, clamped at soft end-stops.

Usage::

    focus = Focus(actuator, lo=0, hi=1000)
    focus.update(encoder.value())     # from the control task, never from an IRQ
    focus.position, focus.flags
"""

from magcam_fw.protocol import ENC_AT_MIN, ENC_AT_MAX


class Focus:
    def __init__(self, actuator, lo, hi, start=None):
        self._act = actuator
        self.lo = lo
        self.hi = hi
        self.flags = 0
        self._last_count = 0
        self.position = None  # so the first move_to always drives the actuator
        self.move_to((lo + hi) // 2 if start is None else start)

    def update(self, count):
        """Move the lens by the ring's movement since the last call; True if it changed."""
        delta = count - self._last_count
        self._last_count = count
        return delta != 0 and self.move_to(self.position + delta)

    def move_to(self, target):
        pos = min(max(target, self.lo), self.hi)
        self.flags = (ENC_AT_MIN if target <= self.lo else 0) | (ENC_AT_MAX if target >= self.hi else 0)
        changed = pos != self.position
        self.position = pos
        if changed:
            self._act(pos)
        return changed
