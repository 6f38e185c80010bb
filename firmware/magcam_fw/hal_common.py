"""What the MicroPython and CircuitPython HALs share: the HAL contract over a board file.

``HalBase`` is the base of both runtimes' ``Platform`` (``hal_machine``, ``hal_circuitpython``)
and through them of ``MachineHal`` / ``CircuitPythonHal``. It holds what does not depend on the
runtime; each subclass supplies only what touches its runtime's hardware modules:

- a ``Platform`` (what safe mode needs) uses ``rail_off()`` and ``feed()`` from here and gives
  ``_rail_write(low)`` (the load switch as a one-argument write), ``watchdog()``, ``reset()``
  and ``reset_cause()``;
- a HAL's ``__init__`` calls ``_build(sleep)``, which reads the board file in a fixed order
  (load switch first, then ring, Hall and VBUS, I2C chips, lens actuator) and asks the
  subclass for each piece of hardware (a "read" is a zero-argument callable, a "write" a
  one-argument one):

  - ``_open_load_switch(low)``: sets ``load_switch``; returns its write (raw level 0/1);
  - ``_ring_counter(ring)``: sets ``ring_a``, ``ring_b`` and ``encoder``; returns a hardware
    counter's read, or None to decode on the pins;
  - ``_digital_in(role, pull)``: a read of the pin's raw level;
  - ``_analog_mv(role)``: a read of the pin's voltage in mV (``self._vref`` is set by then);
  - ``_open_i2c(cfg)``: the bus, with ``machine.I2C``'s memory methods;
  - ``_pwm_out(role, freq)``: an object with ``duty_u16(v)``, at duty 0;
  - ``_digital_out(role)``: a Pin-like output ``value([v])``, at 0;
  - ``_dac_out(role)``: an analog output for ``actuator.DacActuator``.

The contract methods (``vbus_mv``, ``set_rail``, ``read_power``, ``read_temp_mc``,
``on_connect``, ``tasks``, ``bus_errors``) are the same on both runtimes and live here.
"""

from magcam_fw.board import (
    AnalogThreshold,
    BoardError,
    BusGuard,
    Level,
    Output,
    divider_mv,
    make_power_monitor,
    make_temperature,
)
from magcam_fw.compat import const, sleep_ms, ticks_ms

_NO_TEMP_MC = const(25000)
_FAILSAFE_MC = const(125000)
_ACTUATOR_POLL_MS = const(1)


def active_low(section):
    """True when a board file section (or None) says ``"active": "low"``."""
    return (section or {}).get("active", "high") == "low"


def sleep_ms_blocking(ms):
    import time

    if hasattr(time, "sleep_ms"):
        time.sleep_ms(ms)
    else:
        time.sleep(ms / 1000)


class HalBase:
    def __init__(self, board):
        self.board = board
        self._path = board.get("_path", "board.json")
        self._wdt = None
        self.last_feed = None
        self._rail_out = None

    # ---- what a Platform needs ----------------------------------------------------------
    def rail_off(self):
        """Drive the load switch's enable pin to its inactive level (no-op without one)."""
        if (self.board.get("pins") or {}).get("load_switch") is None:
            return
        if self._rail_out is None:
            low = active_low(self.board.get("load_switch"))
            self._rail_out = Output(self._rail_write(low), low)
        self._rail_out(False)

    def feed(self):
        self.last_feed = ticks_ms()
        if self._wdt is not None:
            self._wdt.feed()

    # ---- building a HAL from the board file -----------------------------------------------
    def _build(self, sleep=None):
        bd = self.board
        feats = bd["features"]
        self._sleep = sleep or sleep_ms_blocking
        self.storage = bd.get("storage", "/")
        self.sensor = None
        self._tasks = []

        # Load switch first: whatever happens next, the rail is open.
        low = active_low(bd.get("load_switch"))
        self._rail_out = Output(self._open_load_switch(low), low)
        self.rail_on = False

        # Focus ring.
        ring = bd["ring"]
        divisor = ring.get("divisor", 1)
        reverse = ring.get("reverse", False)
        from magcam_fw.encoder import HardwareCounter, QuadratureDecoder

        count = self._ring_counter(ring)
        if count is not None:
            self.ring = HardwareCounter(count, divisor=divisor, reverse=reverse)
        else:
            self.ring = QuadratureDecoder(self.ring_a, self.ring_b, divisor=divisor, reverse=reverse)
            self.ring.attach()
        self.ring_switch = None
        if "ring_switch" in feats:
            sw = bd.get("ring_switch") or {}
            self.ring_switch = Level(self._digital_in("ring_switch", sw.get("pull")), active_low(sw))

        # Attach: Hall and VBUS.
        self._vref = (bd.get("adc") or {}).get("vref_mv", 3300)
        hall = bd["hall"]
        if hall["kind"] == "adc":
            self.hall = AnalogThreshold(self._analog_mv("hall"), hall["on_mv"], hall["off_mv"])
        else:
            self.hall = Level(self._digital_in("hall", hall.get("pull")), active_low(hall))
        vb = bd["vbus_sense"]
        self._vbus_read = None
        if vb["kind"] == "adc":
            self._vbus_read = self._analog_mv("vbus_sense")
            self._div = vb["divider"]
            self.vbus = AnalogThreshold(self.vbus_mv, vb["present_mv"], vb["absent_mv"])
        else:
            self.vbus = Level(self._digital_in("vbus_sense", vb.get("pull")), active_low(vb))

        # I2C: power monitor and temperature sensor.
        self.i2c = None
        self.power_monitor = None
        self.temperature = None
        self._power = None
        self._temp = None
        if "power_monitor" in feats or "temperature" in feats:
            self.i2c = self._open_i2c(bd["i2c"])
        if "power_monitor" in feats:
            self.power_monitor = make_power_monitor(bd, self.i2c)
            self._power = BusGuard(self.power_monitor.read, (0, 0))
        if "temperature" in feats:
            self.temperature = make_temperature(bd, self.i2c, self._sleep)
            self._temp = BusGuard(self.temperature.read_mc, _FAILSAFE_MC)

        # Lens actuator.
        la = bd["lens_actuator"]
        kind = la["kind"]
        opts = la.get("options", {})
        from magcam_fw import actuator as A

        try:
            if kind == "pwm":
                self.lens_pwm = self._pwm_out("lens_pwm", la["freq"])
                self.lens_actuator = A.PwmActuator(self.lens_pwm, la["lo"], la["hi"], **opts)
            elif kind == "stepdir":
                step = self._digital_out("lens_step")
                d = self._digital_out("lens_dir")
                self.lens_actuator = A.StepDirActuator(step, d, **opts)
            else:
                self.lens_actuator = A.DacActuator(self._dac_out("lens_dac"), la["lo"], la["hi"], **opts)
        except TypeError as e:
            raise BoardError("%s: lens_actuator: %s (check lens_actuator.options)" % (self._path, e))
        if hasattr(self.lens_actuator, "poll"):
            self._tasks.append(self._poll_actuator)

    # ---- the HAL contract ---------------------------------------------------------------
    def vbus_mv(self):
        """VBUS in mV from the sense divider (0 on a board with a digital VBUS input)."""
        if self._vbus_read is None:
            return 0
        d = self._div
        return divider_mv(self._vbus_read(), d[0], d[1])

    def set_rail(self, on):
        self._rail_out(on)
        self.rail_on = self._rail_out.on

    def read_power(self):
        """(mV, mA) of the supply ahead of the load switch, or (VBUS mV, 0) without a power
        monitor. The control tick calls this every period, so it feeds the watchdog."""
        self.feed()
        if self._power is not None:
            return self._power()
        return self.vbus_mv(), 0

    def read_temp_mc(self):
        if self._temp is not None:
            return self._temp()
        return _NO_TEMP_MC

    def on_connect(self):
        pass

    def tasks(self):
        return [t() for t in self._tasks]

    async def _poll_actuator(self):
        a = self.lens_actuator
        while True:
            a.poll(ticks_ms())
            await sleep_ms(_ACTUATOR_POLL_MS)

    def bus_errors(self):
        """I2C failures since boot: (power monitor, temperature)."""
        return (self._power.errors if self._power else 0, self._temp.errors if self._temp else 0)
