"""Focus-by-wire: ring detents in, lens actuator steps out, with acceleration and soft end-stops.

``update(count, now)`` runs once per control tick (10 ms) from a task, never from an IRQ. It

1. estimates the ring's velocity in detents/s (``velocity``, signed) from the last few
   movements (integer maths, see below);
2. maps this tick's detents to lens steps through the acceleration curve: a piecewise-linear
   gain, in 1/256 lens step per detent, as a function of |velocity|. Slow turns are fine (the
   default curve gives 1/2 step per detent at rest speed, 1 step at 8 detents/s), fast turns
   are coarse (16 steps per detent from 300 detents/s);
3. accumulates the steps in fixed point (1/256 step), so slow fine turns are not lost: 10
   detents at 1/4 step each move the lens 2 steps, and the next 2 detents a third;
4. clamps at the soft end-stops ``lo``/``hi`` and sets ``flags`` (protocol ``ENC_AT_MIN`` /
   ``ENC_AT_MAX`` while the lens sits at a stop). Pushing on against a stop accumulates
   nothing, so the lens leaves the stop on the first detent back (no dead travel);
5. calls the actuator only when the integer lens position changes.

Keep ``lo``/``hi`` within +-4,000,000 steps: the fixed-point position then stays a small int
on 32-bit MCUs (no heap allocation per tick).

Velocity estimate (integer maths, no allocation): a ring of the last ``_SLOTS`` (8) ticks that
saw movement, with their counts and times. The velocity is the detents moved since the oldest
of those at most ``_MAX_AGE_MS`` (250 ms) before the latest movement, over the time between:
at speed the last 8 moving ticks (70 ms at 10 ms ticks), at slow speeds the time between
detents (5 detents/s reads 5, not 0 or 100). Slower than 4 detents/s, one movement over the
time since the one before (at most 1 s; the first after a pause counts as 1 s: fine). The
estimate holds between movements until the next one is overdue (one mean interval), then
decays with the waiting time; no movement for 250 ms reads 0. Several detents within one
update are at least (n - 1) detent intervals in the time since the previous update, so a
flick from rest reads fast from its first tick on. Truncated toward zero.

``update`` returns True when the lens position or ``flags`` differ from what the previous
``update`` reported (including a ``move_to`` from a host command in between): the app then
sends one EV_ENCODER event. ``hit`` holds the end-stop bits newly set by that update (0
otherwise), so an app can signal "stop reached" once, not on every tick spent against it.

Usage::

    focus = Focus(hal.lens_actuator, lo=0, hi=1000)      # start=None: mid-range
    # control task, every 10 ms:
    if focus.update(encoder.value(), now):
        send_event(EV_ENCODER, (now, encoder.value(), focus.position, focus.velocity, focus.flags))
    if focus.hit:
        ...                                             # a stop was reached this tick
    focus.move_to(420)                                  # host command: no curve, clamped
"""

from magcam_fw.compat import const, ticks_diff, ticks_ms
from magcam_fw.protocol import ENC_AT_MAX, ENC_AT_MIN

_SHIFT = const(8)  # fixed point: 1/256 lens step
_ONE = const(256)
_SLOTS = const(8)
_MAX_AGE_MS = const(250)
_MAX_PERIOD_MS = const(1000)

# (|velocity| detents/s, gain in 1/256 lens step per detent), velocities strictly increasing;
# linear in between, flat outside.
DEFAULT_CURVE = ((0, 128), (8, 256), (40, 512), (120, 2048), (300, 4096))
LINEAR = ((0, _ONE),)  # one lens step per detent at every speed (no acceleration)


def _tdiv(a, b):
    """a / b truncated toward zero (b > 0)."""
    return a // b if a >= 0 else -((-a) // b)


def _rdiv(a, b):
    """a / b rounded to the nearest, halves away from zero (b > 0): a rate over a tick-jittered
    time (1000 / 201 ms) must read 5, not truncate to 4."""
    return (2 * a + b) // (2 * b) if a >= 0 else -((b - 2 * a) // (2 * b))


class Focus:
    def __init__(self, actuator, lo, hi, start=None, curve=DEFAULT_CURVE):
        if lo > hi:
            raise ValueError("lo > hi")
        self._act = actuator
        self.lo = lo
        self.hi = hi
        self.set_curve(curve)
        self.velocity = 0
        self.flags = 0
        self.hit = 0
        self._count = 0  # the ring count at the last update (the encoder starts at 0)
        self._prev = 0  # the count before the latest movement
        self._t_upd = None  # time of the previous update
        self._cs = [0] * _SLOTS  # counts and times of the last moving ticks (a ring)
        self._ts = [0] * _SLOTS
        self._head = 0
        self._n = 0
        self._fp = 0
        self.position = None  # so the first move_to always drives the actuator
        self.move_to((lo + hi) // 2 if start is None else start)
        self._seen_pos = self.position
        self._seen_flags = self.flags

    def set_curve(self, curve):
        """Replace the acceleration curve: ((|velocity| detents/s, gain 1/256 step), ...)."""
        vs = []
        gs = []
        for v, g in curve:
            if not isinstance(v, int) or not isinstance(g, int) or v < 0 or g < 0 or (vs and v <= vs[-1]):
                raise ValueError("curve: integer (velocity, gain) >= 0, velocities increasing")
            vs.append(v)
            gs.append(g)
        if not vs:
            raise ValueError("curve: at least one point")
        self._cv = tuple(vs)
        self._cg = tuple(gs)

    def gain(self, velocity):
        """Curve gain (1/256 lens step per detent) at ``velocity`` detents/s (either sign)."""
        v = -velocity if velocity < 0 else velocity
        cv = self._cv
        cg = self._cg
        if v <= cv[0]:
            return cg[0]
        i = 1
        n = len(cv)
        while i < n:
            if v < cv[i]:
                v0 = cv[i - 1]
                g0 = cg[i - 1]
                return g0 + (cg[i] - g0) * (v - v0) // (cv[i] - v0)
            i += 1
        return cg[n - 1]

    def _estimate(self, count, now):
        n = self._n
        if not n:
            return 0
        ts = self._ts
        i = self._head
        t_head = ts[i]
        gap = ticks_diff(now, t_head)
        if gap > _MAX_AGE_MS:
            return 0  # no movement for a while: at rest
        ref = -1
        j = i
        k = 1
        while k < n:
            j = (j - 1) % _SLOTS
            if ticks_diff(t_head, ts[j]) > _MAX_AGE_MS:
                break
            ref = j
            k += 1
        if ref < 0:
            # The latest movement is alone in the window: one step over the time since the one
            # before (at most _MAX_PERIOD_MS; a first movement counts as that long).
            dt = ticks_diff(t_head, ts[j]) if n > 1 else _MAX_PERIOD_MS
            if not _MAX_AGE_MS < dt <= _MAX_PERIOD_MS:
                dt = _MAX_PERIOD_MS
            return _rdiv((count - self._prev) * 1000, dt)
        span = ticks_diff(t_head, ts[ref])  # over k - 1 moving intervals
        # Hold the rate while the next movement is not yet overdue (one mean interval after
        # the last), then let it decay with the time since: steady turns read steady.
        late = gap - span // (k - 1)
        dt = span + late if late > 0 else span
        return _rdiv((count - self._cs[ref]) * 1000, dt if dt > 0 else 1)

    def update(self, count, now=None):
        """Move the lens by the ring's movement since the last call.

        ``count``: the encoder's ``value()`` (detents); ``now``: ms on the ``ticks_ms()`` clock
        (default: ``ticks_ms()`` itself). Returns True if the lens position or ``flags``
        changed since the previous update (or a ``move_to`` in between): send one EV_ENCODER.
        ``hit`` then holds the end-stop bits newly set (0 if none)."""
        if now is None:
            now = ticks_ms()
        delta = count - self._count
        if delta:
            self._prev = self._count  # count before the latest movement
            self._count = count
            h = (self._head + 1) % _SLOTS
            self._head = h
            self._cs[h] = count
            self._ts[h] = now
            if self._n < _SLOTS:
                self._n += 1
        v = self._estimate(count, now)
        last = self._t_upd
        self._t_upd = now
        if delta and last is not None:
            # Several detents within one update are at least (n - 1) intervals in that time:
            # a flick from rest is fast from its first tick on.
            burst = delta - 1 if delta > 0 else delta + 1
            dt = ticks_diff(now, last)
            if burst and dt > 0:
                b = _tdiv(burst * 1000, dt)
                if (b > 0 and b > v) or (b < 0 and b < v):
                    v = b
        self.velocity = v
        if delta:
            fp = self._fp + delta * self.gain(v)
            lo = self.lo << _SHIFT
            hi = self.hi << _SHIFT
            self._fp = lo if fp < lo else (hi if fp > hi else fp)
            self._set(self._fp >> _SHIFT)
        pos = self.position
        flags = self.flags
        self.hit = flags & ~self._seen_flags
        changed = pos != self._seen_pos or flags != self._seen_flags
        self._seen_pos = pos
        self._seen_flags = flags
        return changed

    def _set(self, pos):
        self.flags = (ENC_AT_MIN if pos <= self.lo else 0) | (ENC_AT_MAX if pos >= self.hi else 0)
        if pos != self.position:
            self.position = pos
            self._act(pos)
            return True
        return False

    def move_to(self, target):
        """Host command: go to ``target`` (clamped to lo..hi) without the curve; True if moved."""
        pos = self.lo if target < self.lo else (self.hi if target > self.hi else target)
        self._fp = pos << _SHIFT  # drop any fraction: the host's position is exact
        return self._set(pos)
