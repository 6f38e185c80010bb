"""MicroPython HAL: the module's hardware through ``machine``, built from a validated board file.

This is the only file that touches MicroPython's hardware modules, and it takes them in:
``MachineHal(board, machine=None)`` imports ``machine`` only when none is given, so it imports
and is tested on CPython and the unix port with a stand-in module.

What it builds (roles and sections: docs/boards.md):

- ``ring_a``, ``ring_b``: the focus ring's ``machine.Pin`` inputs (with the board's pull);
  ``ring``: the ring's counter, an object with ``value()`` (detents) and ``raw()``:
  ``HardwareCounter`` around ``machine.Encoder`` (ESP32 PCNT, ``ring.counter = "encoder"``)
  or a ``QuadratureDecoder`` on the pins' IRQs (``"irq"``, any port);
- ``ring_switch``: the ring's push switch as 1 = pressed, or None;
- ``hall``: 1 = magnet present; a digital Hall switch (``Level``) or a ratiometric Hall sensor on
  an ADC with two thresholds (``AnalogThreshold``, mV);
- ``vbus``: 1 = the phone's VBUS is there; ADC through a divider (``vbus_mv()`` in mV, present /
  absent thresholds) or a digital input;
- ``set_rail(on)``: the load switch's enable pin, through its active level;
- ``read_power()``: (mV, mA) from the INA219/INA226 (``magcam_fw.ina2xx``) upstream of the
  load switch, or (VBUS mV, 0) without one; I2C errors fail safe (``BusGuard``);
- ``read_temp_mc()``: the TMP117's m°C (fails safe to 125 C), or 25 C without a sensor;
- ``lens_actuator``: ``PwmActuator`` / ``StepDirActuator`` / ``DacActuator`` from
  ``magcam_fw.actuator``; a step/dir actuator is polled by a task in ``tasks()``;
- ``watchdog(timeout_ms)`` (``machine.WDT``), ``feed()``, ``reset()``, ``reset_cause()``,
  ``storage`` (the filesystem root for descriptor.json and the fault log), ``sensor`` (None:
  no image sensor driver on these boards yet).

The control tick calls ``read_power()`` every period; that call also feeds the watchdog, so a
stalled or dead control loop resets the board (``last_feed`` tells the supervisor it is alive).

Usage::

    from magcam_fw.board import load
    from magcam_fw.hal_machine import MachineHal

    hal = MachineHal(load("/board.json"))
    wdt = hal.watchdog(5000)
    app = App(hal, StdioTransport(), descriptor_text)
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
_ATTEN = {"0dB": "ATTN_0DB", "2.5dB": "ATTN_2_5DB", "6dB": "ATTN_6DB", "11dB": "ATTN_11DB"}
_CAUSES = (
    ("PWRON_RESET", "power-on"),
    ("WDT_RESET", "watchdog"),
    ("HARD_RESET", "hard reset"),
    ("SOFT_RESET", "soft reset"),
    ("DEEPSLEEP_RESET", "deep sleep"),
)


def _sleep_ms_blocking(ms):
    import time

    if hasattr(time, "sleep_ms"):
        time.sleep_ms(ms)
    else:
        time.sleep(ms / 1000)


class Platform:
    """What even safe mode needs: the watchdog, reset, the reset cause and the load switch off.

    Touches only the load switch pin (when ``rail_off()`` is called) and the watchdog.
    """

    def __init__(self, board, machine=None):
        if machine is None:
            import machine
        self._m = machine
        self.board = board
        self._path = board.get("_path", "board.json")
        self._wdt = None
        self.last_feed = None
        self._rail_out = None

    def rail_off(self):
        """Drive the load switch's enable pin to its inactive level (no-op without one)."""
        pin = (self.board.get("pins") or {}).get("load_switch")
        if pin is None:
            return
        if self._rail_out is None:
            low = (self.board.get("load_switch") or {}).get("active", "high") == "low"
            Pin = self._m.Pin
            self._rail_out = Output(Pin(pin, Pin.OUT, value=1 if low else 0).value, low)
        self._rail_out(False)

    def watchdog(self, timeout_ms):
        """Start the hardware watchdog (it cannot be stopped); returns the WDT object."""
        self._wdt = self._m.WDT(timeout=timeout_ms)
        self.feed()
        return self._wdt

    def feed(self):
        self.last_feed = ticks_ms()
        if self._wdt is not None:
            self._wdt.feed()

    def reset(self):
        self._m.reset()

    def reset_cause(self):
        """"power-on", "watchdog", "hard reset", "soft reset", "deep sleep" or None."""
        m = self._m
        try:
            cause = m.reset_cause()
        except (AttributeError, OSError):
            return None
        for name, text in _CAUSES:
            if hasattr(m, name) and getattr(m, name) == cause:
                return text
        return "reset cause %r" % (cause,)


class MachineHal(Platform):
    def __init__(self, board, machine=None, sleep=None):
        Platform.__init__(self, board, machine)
        m = self._m
        bd = board
        pins = bd["pins"]
        feats = bd["features"]
        self._sleep = sleep or _sleep_ms_blocking
        self.storage = bd.get("storage", "/")
        self.sensor = None
        self._tasks = []
        Pin = m.Pin

        # Load switch first: whatever happens next, the rail is open.
        ls = bd.get("load_switch") or {}
        low = ls.get("active", "high") == "low"
        self.load_switch = self._pin("load_switch", Pin.OUT, value=1 if low else 0)
        self._rail_out = Output(self.load_switch.value, low)
        self.rail_on = False

        # Focus ring.
        ring = bd["ring"]
        pull = self._pull(ring.get("pull"))
        self.ring_a = self._pin("ring_a", Pin.IN, pull)
        self.ring_b = self._pin("ring_b", Pin.IN, pull)
        divisor = ring.get("divisor", 1)
        reverse = ring.get("reverse", False)
        from magcam_fw.encoder import HardwareCounter, QuadratureDecoder

        if ring["counter"] == "encoder":
            kw = {"phases": 4}
            if "filter_ns" in ring:
                kw["filter_ns"] = ring["filter_ns"]
            try:
                self.encoder = m.Encoder(ring.get("unit", 0), self.ring_a, self.ring_b, **kw)
            except (ValueError, TypeError, AttributeError) as e:
                raise BoardError("%s: ring.counter \"encoder\": machine.Encoder(%d, GPIO %d, GPIO %d) failed: %s"
                                 % (self._path, ring.get("unit", 0), pins["ring_a"], pins["ring_b"], e))
            self.ring = HardwareCounter(self.encoder.value, divisor=divisor, reverse=reverse)
        else:
            self.encoder = None
            self.ring = QuadratureDecoder(self.ring_a, self.ring_b, divisor=divisor, reverse=reverse)
            self.ring.attach()
        self.ring_switch = None
        if "ring_switch" in feats:
            sw = bd.get("ring_switch") or {}
            p = self._pin("ring_switch", Pin.IN, self._pull(sw.get("pull")))
            self.ring_switch = Level(p.value, sw.get("active", "high") == "low")

        # Attach: Hall and VBUS.
        adc_cfg = bd.get("adc") or {}
        self._vref = adc_cfg.get("vref_mv", 3300)
        hall = bd["hall"]
        if hall["kind"] == "adc":
            self._hall_adc = self._adc("hall", adc_cfg)
            self.hall = AnalogThreshold(self._reader(self._hall_adc), hall["on_mv"], hall["off_mv"])
        else:
            p = self._pin("hall", Pin.IN, self._pull(hall.get("pull")))
            self.hall = Level(p.value, hall.get("active", "high") == "low")
        vb = bd["vbus_sense"]
        self._vbus_adc = None
        if vb["kind"] == "adc":
            self._vbus_adc = self._adc("vbus_sense", adc_cfg)
            self._vbus_read = self._reader(self._vbus_adc)
            self._div = vb["divider"]
            self.vbus = AnalogThreshold(self.vbus_mv, vb["present_mv"], vb["absent_mv"])
        else:
            p = self._pin("vbus_sense", Pin.IN, self._pull(vb.get("pull")))
            self.vbus = Level(p.value, vb.get("active", "high") == "low")

        # I2C: power monitor and temperature sensor.
        self.i2c = None
        self.power_monitor = None
        self.temperature = None
        self._power = None
        self._temp = None
        if "power_monitor" in feats or "temperature" in feats:
            c = bd["i2c"]
            try:
                self.i2c = m.I2C(c.get("id", 0), scl=Pin(pins["i2c_scl"]), sda=Pin(pins["i2c_sda"]),
                                 freq=c.get("freq", 400000))
            except (ValueError, TypeError) as e:
                raise BoardError("%s: i2c: I2C%d on SDA GPIO %d / SCL GPIO %d: %s"
                                 % (self._path, c.get("id", 0), pins["i2c_sda"], pins["i2c_scl"], e))
        if "power_monitor" in feats:
            self.power_monitor = make_power_monitor(bd, self.i2c)
            self._power = BusGuard(self.power_monitor.read, (0, 0))
        if "temperature" in feats:
            self.temperature = make_temperature(bd, self.i2c, self._sleep)
            self._temp = BusGuard(self.temperature.read_mc, _FAILSAFE_MC)

        # Lens actuator.
        la = bd["lens_actuator"]
        kind = la["kind"]
        from magcam_fw import actuator as A

        opts = la.get("options", {})
        try:
            if kind == "pwm":
                pwm = m.PWM(self._pin("lens_pwm", Pin.OUT), freq=la["freq"], duty_u16=0)
                self.lens_pwm = pwm
                self.lens_actuator = A.PwmActuator(pwm, la["lo"], la["hi"], **opts)
            elif kind == "stepdir":
                step = self._pin("lens_step", Pin.OUT, value=0)
                d = self._pin("lens_dir", Pin.OUT, value=0)
                self.lens_actuator = A.StepDirActuator(step, d, **opts)
            else:
                dac = m.DAC(self._pin("lens_dac"))
                self.lens_actuator = A.DacActuator(dac, la["lo"], la["hi"], **opts)
        except TypeError as e:
            raise BoardError("%s: lens_actuator: %s (check lens_actuator.options)" % (self._path, e))
        if hasattr(self.lens_actuator, "poll"):
            self._tasks.append(self._poll_actuator)

    # ---- construction helpers -----------------------------------------------------------
    def _pin(self, role, mode=None, pull=None, value=None):
        gpio = self.board["pins"][role]
        Pin = self._m.Pin
        try:
            if mode is None:
                return Pin(gpio)
            if value is not None:
                return Pin(gpio, mode, pull, value=value)
            return Pin(gpio, mode, pull)
        except (ValueError, TypeError) as e:
            raise BoardError("%s: pins.%s: GPIO %d: %s" % (self._path, role, gpio, e))

    def _pull(self, name):
        Pin = self._m.Pin
        if name == "up":
            return Pin.PULL_UP
        if name == "down":
            return Pin.PULL_DOWN
        return None

    def _adc(self, role, cfg):
        m = self._m
        gpio = self.board["pins"][role]
        try:
            if self.board.get("chip") == "esp32s3":
                atten = getattr(m.ADC, _ATTEN[cfg.get("atten", "11dB")])
                return m.ADC(m.Pin(gpio), atten=atten)
            return m.ADC(m.Pin(gpio))
        except (ValueError, TypeError) as e:
            raise BoardError("%s: pins.%s: GPIO %d as an analog input: %s" % (self._path, role, gpio, e))

    def _reader(self, adc):
        """A zero-argument callable giving the pin's voltage in mV."""
        if hasattr(adc, "read_uv"):  # ESP32: calibrated against the chip's eFuse data
            return lambda: adc.read_uv() // 1000
        vref = self._vref
        return lambda: adc.read_u16() * vref // 65535

    # ---- the HAL contract ---------------------------------------------------------------
    def vbus_mv(self):
        """VBUS in mV from the sense divider (0 on a board with a digital VBUS input)."""
        if self._vbus_adc is None:
            return 0
        d = self._div
        return divider_mv(self._vbus_read(), d[0], d[1])

    def set_rail(self, on):
        self._rail_out(on)
        self.rail_on = self._rail_out.on

    def read_power(self):
        """(mV, mA) of the supply ahead of the load switch; feeds the watchdog (see module doc)."""
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


def check_flash(bd, esp32=None, rp2=None):
    """Compare the board file's "vfs" region with the running firmware's; returns a list of
    mismatches (empty when they agree or the port cannot tell). ``esp32`` / ``rp2``: the
    modules (imported when None and the port has them)."""
    from magcam_fw.board import flash_region

    want = flash_region(bd, "vfs")
    if want is None:
        return []
    got = None
    try:
        if bd.get("chip") == "esp32s3":
            if esp32 is None:
                import esp32
            parts = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")
            if parts:
                info = parts[0].info()  # (type, subtype, addr, size, label, encrypted)
                got = (info[2], info[3])
        elif bd.get("chip") == "rp2040":
            if rp2 is None:
                import rp2
            size = rp2.Flash().ioctl(4, 0) * rp2.Flash().ioctl(5, 0)  # block count * block size
            got = (None, size)
    except (ImportError, AttributeError, OSError):
        return []
    if got is None:
        return ["flash: no \"vfs\" partition in the running firmware"]
    out = []
    if got[0] is not None and got[0] != want[0]:
        out.append("flash: vfs starts at 0x%x in the firmware, 0x%x in the board file" % (got[0], want[0]))
    if got[1] != want[1]:
        out.append("flash: vfs is 0x%x bytes in the firmware, 0x%x in the board file" % (got[1], want[1]))
    return out
