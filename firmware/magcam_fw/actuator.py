"""Lens actuator outputs: each is a callable ``actuator(position)``, so ``Focus`` drives any of them.

The peripheral is passed in (never imported here):

- ``PwmActuator(pwm, lo, hi, duty_min=0, duty_max=65535)``: ``pwm`` has MicroPython's
  ``duty_u16(v)`` (``machine.PWM``; on CircuitPython wrap ``pwmio.PWMOut``: an object whose
  ``duty_u16(v)`` sets ``.duty_cycle = v``). Position lo..hi maps linearly onto
  duty_min..duty_max (duty_min > duty_max inverts), rounded to the nearest code. For a voice
  coil or a PWM-driven analogue stage behind an RC filter.
- ``DacActuator(dac, lo, hi, bits=None, code_min=0, code_max=None)``: ``dac`` is either an
  object with ``write(v)`` (MicroPython ``machine.DAC``, 8-bit by default: pass ``bits=12`` for
  a 12-bit one), an object with a ``value`` attribute (CircuitPython ``analogio.AnalogOut``,
  16-bit by default), or any setter callable ``f(code)`` (8-bit by default). Position lo..hi
  maps onto code_min..code_max (default the full range).
- ``StepDirActuator(step_pin, dir_pin, steps_per_unit=1, max_rate_hz=1000,
  max_steps_per_poll=16, invert_dir=False)``: a stepper driver (A4988, DRV8825, TMC2208 ...).
  Calling it only sets the target; ``poll(now)``, called often from a task (every 1..10 ms),
  emits step pulses toward it: at most ``max_rate_hz`` on average and at most
  ``max_steps_per_poll`` per call, the direction pin set before the first step of a call.
  A pulse is ``step.value(1); step.value(0)``: a few microseconds high on an MCU, above the
  drivers' minimum (about 2 us). Steps inside one call come back to back, so poll often for
  an even rate (1 ms polls give 1 kHz without bursts); faster stepping wants a hardware step
  generator (PWM, PIO). The motor's position is ``position`` (steps); there is no feedback, so
  home it at boot (drive to a stop, then ``zero()``).

Usage::

    from magcam_fw.actuator import PwmActuator, StepDirActuator
    focus = Focus(PwmActuator(machine.PWM(pin, freq=20000), 0, 1000), 0, 1000)

    motor = StepDirActuator(step_pin, dir_pin, steps_per_unit=2, max_rate_hz=800)
    focus = Focus(motor, 0, 1000)
    # a task:  while True: motor.poll(ticks_ms()); await sleep_ms(1)
"""

from magcam_fw.compat import const, ticks_diff

_MILLI = const(1000)  # step credit in 1/1000 step
_MAX_DT_MS = const(1000)


def _scale(x, out_span, in_span):
    """x * out_span / in_span rounded to nearest (halves away from zero); in_span > 0."""
    num = x * out_span
    half = in_span >> 1
    return (num + half) // in_span if num >= 0 else -((half - num) // in_span)


class _Linear:
    def __init__(self, lo, hi, out_min, out_max):
        if lo > hi:
            raise ValueError("lo > hi")
        self.lo = lo
        self.hi = hi
        self._out_min = out_min
        self._out_span = out_max - out_min
        self.code = None  # last value written

    def _code(self, position):
        lo = self.lo
        p = lo if position < lo else (self.hi if position > self.hi else position)
        span = self.hi - lo
        return self._out_min + (_scale(p - lo, self._out_span, span) if span else 0)


class PwmActuator(_Linear):
    def __init__(self, pwm, lo, hi, duty_min=0, duty_max=65535):
        for d in (duty_min, duty_max):
            if not 0 <= d <= 65535:
                raise ValueError("duty out of 0..65535")
        _Linear.__init__(self, lo, hi, duty_min, duty_max)
        self._duty = pwm.duty_u16

    def __call__(self, position):
        code = self._code(position)
        self.code = code
        self._duty(code)


class DacActuator(_Linear):
    def __init__(self, dac, lo, hi, bits=None, code_min=0, code_max=None):
        if hasattr(dac, "write"):
            setter = dac.write  # MicroPython machine.DAC
        elif callable(dac):
            setter = dac  # a plain setter
        elif hasattr(dac, "value"):

            def setter(v):  # CircuitPython analogio.AnalogOut: a 16-bit property
                dac.value = v

            if bits is None:
                bits = 16
        else:
            raise TypeError("dac: need write(v), a .value attribute, or a setter callable")
        if bits is None:
            bits = 8
        top = (1 << bits) - 1
        if code_max is None:
            code_max = top
        for c in (code_min, code_max):
            if not 0 <= c <= top:
                raise ValueError("code out of 0..%d" % top)
        _Linear.__init__(self, lo, hi, code_min, code_max)
        self.bits = bits
        self._write = setter

    def __call__(self, position):
        code = self._code(position)
        self.code = code
        self._write(code)


class StepDirActuator:
    def __init__(self, step_pin, dir_pin, steps_per_unit=1, max_rate_hz=1000, max_steps_per_poll=16,
                 invert_dir=False):
        if steps_per_unit < 1 or max_rate_hz < 1 or max_steps_per_poll < 1:
            raise ValueError("steps_per_unit, max_rate_hz and max_steps_per_poll must be >= 1")
        self._step = step_pin
        self._dir = dir_pin
        self.steps_per_unit = steps_per_unit
        self.max_rate_hz = max_rate_hz
        self._max_n = max_steps_per_poll
        self._fwd_level = 0 if invert_dir else 1
        self.position = 0  # steps emitted (signed)
        self.target = 0  # steps
        self._credit = _MILLI  # one step may go at once
        self._last = None
        step_pin.value(0)

    def __call__(self, position):
        self.target = position * self.steps_per_unit

    @property
    def busy(self):
        return self.position != self.target

    def zero(self, position=0):
        """Declare the motor to be at ``position`` (units) now, e.g. after homing on a stop."""
        self.position = self.target = position * self.steps_per_unit

    def poll(self, now):
        """Emit the steps due by ``now`` (ms) toward the target; returns how many (0 if none)."""
        last = self._last
        self._last = now
        dt = 0 if last is None else ticks_diff(now, last)
        if dt < 0:
            dt = 0
        elif dt > _MAX_DT_MS:
            dt = _MAX_DT_MS
        credit = self._credit + dt * self.max_rate_hz
        cap = self._max_n * _MILLI
        if credit > cap:
            credit = cap
        togo = self.target - self.position
        if not togo:
            self._credit = credit if credit < _MILLI else _MILLI  # idle: no burst saved up
            return 0
        n = credit // _MILLI
        far = togo if togo > 0 else -togo
        if n > far:
            n = far
        self._credit = credit - n * _MILLI
        if not n:
            return 0
        fwd = self._fwd_level
        self._dir.value(fwd if togo > 0 else 1 - fwd)  # direction first, then the pulses
        step = self._step
        i = 0
        while i < n:
            step.value(1)
            step.value(0)
            i += 1
        self.position += n if togo > 0 else -n
        return n
