"""CircuitPython HAL: the module's hardware through ``board``, ``digitalio``, ``analogio``,
``busio``, ``pwmio``, ``rotaryio`` and ``microcontroller``, built from a validated board file.

The same code drives Adafruit Blinka (CPython): a Raspberry Pi by its BCM names (``"D17"``), or
an FT232H / MCP2221 on a laptop. The modules are taken in as keyword arguments
(``CircuitPythonHal(board_def, board=..., digitalio=...)``) and only the missing ones are
imported, so the HAL imports anywhere and is tested on CPython through Blinka's own classes.

Differences from ``hal_machine`` (same contract; see its docstring):

- CircuitPython has no pin interrupts. The ring is counted by ``rotaryio.IncrementalEncoder``
  (``ring.counter = "rotaryio"``: PIO on RP2040, PCNT on ESP32-S3) wrapped in
  ``HardwareCounter``, or (``"poll"``, Blinka) by a ``QuadratureDecoder`` on ``PolledPin``s
  that a task in ``tasks()`` samples every millisecond. With rotaryio the pins belong to the
  counter, so ``ring_a`` / ``ring_b`` are inert: the app must read ``hal.ring``.
- ADC readings are ``AnalogIn.value`` (0..65535) scaled by the board file's ``adc.vref_mv``.
- I2C is ``busio.I2C`` behind ``I2CMem``, which gives the drivers MicroPython's memory
  methods (``readfrom_mem_into`` / ``writeto_mem``) with bus locking.
- PWM is ``pwmio.PWMOut`` behind ``PwmU16`` (``duty_u16(v)`` sets ``duty_cycle``).
- The watchdog is ``microcontroller.watchdog`` in RESET mode; Blinka has none, so
  ``watchdog()`` returns None there (run the process under a service manager that restarts it),
  and ``reset()`` exits the process (status 75) where there is no ``microcontroller.reset()``.
- The link is ``SerialTransport(usb_cdc.data)`` (``boot.py`` enables the data port), or on
  Blinka a pyserial port (``link.port`` in the board file).

Usage::

    from magcam_fw.board import load
    from magcam_fw.hal_circuitpython import CircuitPythonHal

    hal = CircuitPythonHal(load("/board.json"))     # imports board, digitalio, ... itself
    hal.watchdog(5000)
    app = App(hal, SerialTransport(usb_cdc.data), descriptor_text)
"""

from magcam_fw.board import (
    AnalogThreshold,
    BoardError,
    BusGuard,
    Inert,
    Level,
    Output,
    PolledPin,
    divider_mv,
    make_power_monitor,
    make_temperature,
    poll_pins,
)
from magcam_fw.compat import const, sleep_ms, ticks_ms

_NO_TEMP_MC = const(25000)
_FAILSAFE_MC = const(125000)
_POLL_MS = const(1)
_LOCK_TRIES = const(10000)
_EXIT_RESTART = const(75)  # EX_TEMPFAIL: a service manager restarts the process
_CAUSES = (
    ("POWER_ON", "power-on"),
    ("WATCHDOG", "watchdog"),
    ("BROWNOUT", "brown-out"),
    ("SOFTWARE", "soft reset"),
    ("RESET_PIN", "hard reset"),
    ("DEEP_SLEEP_ALARM", "deep sleep"),
)
_MODULES = ("board", "digitalio", "analogio", "busio", "pwmio", "rotaryio", "microcontroller", "watchdog")


def _reader(dio):
    """A zero-argument callable reading one ``digitalio`` pin (its own closure, per pin)."""
    return lambda: dio.value


def _sleep_ms_blocking(ms):
    import time

    time.sleep(ms / 1000)


class I2CMem:
    """``busio.I2C`` with MicroPython's ``machine.I2C`` memory methods, locking the bus per
    transfer (CircuitPython requires ``try_lock()`` around every transaction)."""

    def __init__(self, i2c):
        self.i2c = i2c
        self._reg = bytearray(1)

    def _lock(self):
        i2c = self.i2c
        n = 0
        while not i2c.try_lock():
            n += 1
            if n >= _LOCK_TRIES:
                raise OSError("I2C bus busy (locked elsewhere)")

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        self._reg[0] = memaddr
        self._lock()
        try:
            self.i2c.writeto_then_readfrom(addr, self._reg, buf)
        finally:
            self.i2c.unlock()

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        out = bytearray(1 + len(buf))
        out[0] = memaddr
        out[1:] = buf
        self._lock()
        try:
            self.i2c.writeto(addr, out)
        finally:
            self.i2c.unlock()

    def scan(self):
        self._lock()
        try:
            return self.i2c.scan()
        finally:
            self.i2c.unlock()


class PwmU16:
    """``pwmio.PWMOut`` with ``machine.PWM``'s ``duty_u16()``."""

    def __init__(self, pwm):
        self.pwm = pwm

    def duty_u16(self, v=None):
        if v is None:
            return self.pwm.duty_cycle
        self.pwm.duty_cycle = v


class OutPin:
    """A ``digitalio`` output with ``machine.Pin``'s ``value([v])``."""

    def __init__(self, dio):
        self.dio = dio

    def value(self, v=None):
        if v is None:
            return 1 if self.dio.value else 0
        self.dio.value = bool(v)


class Platform:
    """What even safe mode needs: the watchdog, reset, the reset cause and the load switch off."""

    def __init__(self, board_def, **modules):
        for k in modules:
            if k not in _MODULES:
                raise TypeError("unknown module %r (known: %s)" % (k, ", ".join(_MODULES)))
        self._given = modules
        self.board = board_def
        self._path = board_def.get("_path", "board.json")
        self._wdt = None
        self.last_feed = None
        self._rail_out = None
        self._owned = []  # peripherals to deinit()

    def _mod(self, name, optional=False):
        m = self._given.get(name)
        if m is None:
            try:
                m = __import__(name)
            except ImportError:
                if optional:
                    return None
                raise
            self._given[name] = m
        return m

    def _board_pin(self, role):
        name = self.board["pins"][role]
        b = self._mod("board")
        pin = getattr(b, name, None)
        if pin is None:
            have = [n for n in dir(b) if n[:1].isupper()]
            raise BoardError("%s: pins.%s: this board has no pin %r (it has: %s)"
                             % (self._path, role, name, ", ".join(sorted(have)[:40])))
        return pin

    def _output(self, role, active_low):
        dio_mod = self._mod("digitalio")
        try:
            d = dio_mod.DigitalInOut(self._board_pin(role))
            d.switch_to_output(value=bool(active_low))
        except (ValueError, RuntimeError) as e:
            raise BoardError("%s: pins.%s: %r as an output: %s" % (self._path, role, self.board["pins"][role], e))
        self._owned.append(d)
        return d

    def rail_off(self):
        """Drive the load switch's enable pin to its inactive level (no-op without one)."""
        if (self.board.get("pins") or {}).get("load_switch") is None:
            return
        if self._rail_out is None:
            low = (self.board.get("load_switch") or {}).get("active", "high") == "low"
            d = self._output("load_switch", low)
            self._rail_out = Output(OutPin(d).value, low)
        self._rail_out(False)

    def watchdog(self, timeout_ms):
        """Start ``microcontroller.watchdog`` in RESET mode; None where there is none (Blinka)."""
        mc = self._mod("microcontroller", optional=True)
        wd = getattr(mc, "watchdog", None) if mc is not None else None
        if wd is None:
            return None
        wmod = self._mod("watchdog")
        wd.timeout = timeout_ms / 1000
        wd.mode = wmod.WatchDogMode.RESET
        self._wdt = wd
        self.feed()
        return wd

    def feed(self):
        self.last_feed = ticks_ms()
        if self._wdt is not None:
            self._wdt.feed()

    def reset(self):
        mc = self._mod("microcontroller", optional=True)
        if mc is not None and hasattr(mc, "reset"):
            mc.reset()
        raise SystemExit(_EXIT_RESTART)

    def reset_cause(self):
        mc = self._mod("microcontroller", optional=True)
        cpu = getattr(mc, "cpu", None) if mc is not None else None
        rr = getattr(mc, "ResetReason", None) if mc is not None else None
        if cpu is None or rr is None or not hasattr(cpu, "reset_reason"):
            return None
        cause = cpu.reset_reason
        for name, text in _CAUSES:
            if getattr(rr, name, None) is cause:
                return text
        return "reset cause %r" % (cause,)

    def deinit(self):
        """Release every pin and bus this object claimed (Blinka, tests, a soft restart)."""
        for p in self._owned:
            try:
                p.deinit()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        self._owned = []


class CircuitPythonHal(Platform):
    def __init__(self, board_def, sleep=None, **modules):
        Platform.__init__(self, board_def, **modules)
        bd = board_def
        feats = bd["features"]
        self._sleep = sleep or _sleep_ms_blocking
        self.storage = bd.get("storage", "/")
        self.sensor = None
        self._tasks = []
        self._check_aliases()

        # Load switch first: whatever happens next, the rail is open.
        low = (bd.get("load_switch") or {}).get("active", "high") == "low"
        self.load_switch = self._output("load_switch", low)
        self._rail_out = Output(OutPin(self.load_switch).value, low)
        self.rail_on = False

        # Focus ring.
        ring = bd["ring"]
        divisor = ring.get("divisor", 1)
        reverse = ring.get("reverse", False)
        from magcam_fw.encoder import HardwareCounter, QuadratureDecoder

        if ring["counter"] == "rotaryio":
            rot = self._mod("rotaryio")
            try:
                enc = rot.IncrementalEncoder(self._board_pin("ring_a"), self._board_pin("ring_b"), divisor=1)
            except (ValueError, RuntimeError) as e:
                raise BoardError("%s: ring.counter \"rotaryio\" on pins %r / %r: %s (RP2040 needs two "
                                 "consecutive GPIOs)" % (self._path, bd["pins"]["ring_a"], bd["pins"]["ring_b"], e))
            self._owned.append(enc)
            self.encoder = enc
            self.ring = HardwareCounter(lambda: enc.position, divisor=divisor, reverse=reverse)
            self.ring_a = Inert(0)  # the counter owns the pins
            self.ring_b = Inert(0)
        else:
            da = self._input("ring_a", ring.get("pull"))
            db = self._input("ring_b", ring.get("pull"))
            self.encoder = None
            self.ring_a = PolledPin(_reader(da))
            self.ring_b = PolledPin(_reader(db))
            self.ring = QuadratureDecoder(self.ring_a, self.ring_b, divisor=divisor, reverse=reverse)
            self.ring.attach()
            self._tasks.append(self._poll_ring)
        self.ring_switch = None
        if "ring_switch" in feats:
            sw = bd.get("ring_switch") or {}
            d = self._input("ring_switch", sw.get("pull"))
            self.ring_switch = Level(_reader(d), sw.get("active", "high") == "low")

        # Attach: Hall and VBUS.
        self._vref = (bd.get("adc") or {}).get("vref_mv", 3300)
        hall = bd["hall"]
        if hall["kind"] == "adc":
            self.hall = AnalogThreshold(self._analog_mv("hall"), hall["on_mv"], hall["off_mv"])
        else:
            d = self._input("hall", hall.get("pull"))
            self.hall = Level(_reader(d), hall.get("active", "high") == "low")
        vb = bd["vbus_sense"]
        self._vbus_read = None
        if vb["kind"] == "adc":
            self._vbus_read = self._analog_mv("vbus_sense")
            self._div = vb["divider"]
            self.vbus = AnalogThreshold(self.vbus_mv, vb["present_mv"], vb["absent_mv"])
        else:
            d = self._input("vbus_sense", vb.get("pull"))
            self.vbus = Level(_reader(d), vb.get("active", "high") == "low")

        # I2C: power monitor and temperature sensor.
        self.i2c = None
        self.power_monitor = None
        self.temperature = None
        self._power = None
        self._temp = None
        if "power_monitor" in feats or "temperature" in feats:
            busio = self._mod("busio")
            freq = bd["i2c"].get("freq", 400000)
            try:
                bus = busio.I2C(self._board_pin("i2c_scl"), self._board_pin("i2c_sda"), frequency=freq)
            except (ValueError, RuntimeError) as e:
                raise BoardError("%s: i2c on SDA %r / SCL %r: %s"
                                 % (self._path, bd["pins"]["i2c_sda"], bd["pins"]["i2c_scl"], e))
            self._owned.append(bus)
            self.i2c = I2CMem(bus)
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
                pwmio = self._mod("pwmio")
                try:
                    pwm = pwmio.PWMOut(self._board_pin("lens_pwm"), frequency=la["freq"], duty_cycle=0)
                except (ValueError, RuntimeError) as e:
                    raise BoardError("%s: pins.lens_pwm: %r as PWM at %d Hz: %s"
                                     % (self._path, bd["pins"]["lens_pwm"], la["freq"], e))
                self._owned.append(pwm)
                self.lens_pwm = PwmU16(pwm)
                self.lens_actuator = A.PwmActuator(self.lens_pwm, la["lo"], la["hi"], **opts)
            elif kind == "stepdir":
                step = OutPin(self._output("lens_step", False))
                d = OutPin(self._output("lens_dir", False))
                self.lens_actuator = A.StepDirActuator(step, d, **opts)
            else:
                aio = self._mod("analogio")
                try:
                    dac = aio.AnalogOut(self._board_pin("lens_dac"))
                except (ValueError, RuntimeError) as e:
                    raise BoardError("%s: pins.lens_dac: %r as an analog output: %s"
                                     % (self._path, bd["pins"]["lens_dac"], e))
                self._owned.append(dac)
                self.lens_actuator = A.DacActuator(dac, la["lo"], la["hi"], **opts)
        except TypeError as e:
            raise BoardError("%s: lens_actuator: %s (check lens_actuator.options)" % (self._path, e))
        if hasattr(self.lens_actuator, "poll"):
            self._tasks.append(self._poll_actuator)

    # ---- construction helpers -----------------------------------------------------------
    def _check_aliases(self):
        """Two role names for one physical pin (``D0`` and ``RX``) are caught here, where the
        names resolve; the board file check only sees different strings."""
        seen = {}
        for role in sorted(self.board["pins"]):
            pin = self._board_pin(role)
            pid = getattr(pin, "id", None)
            key = ("id", pid) if isinstance(pid, int) else ("obj", id(pin))
            if key in seen:
                raise BoardError("%s: pins.%s: %r is the same pin as pins.%s (%r)"
                                 % (self._path, role, self.board["pins"][role], seen[key],
                                    self.board["pins"][seen[key]]))
            seen[key] = role

    def _input(self, role, pull):
        dio = self._mod("digitalio")
        try:
            d = dio.DigitalInOut(self._board_pin(role))
            d.switch_to_input(pull=dio.Pull.UP if pull == "up" else (dio.Pull.DOWN if pull == "down" else None))
        except (ValueError, RuntimeError) as e:
            raise BoardError("%s: pins.%s: %r as an input: %s" % (self._path, role, self.board["pins"][role], e))
        self._owned.append(d)
        return d

    def _analog_mv(self, role):
        aio = self._mod("analogio")
        try:
            a = aio.AnalogIn(self._board_pin(role))
        except (ValueError, RuntimeError) as e:
            raise BoardError("%s: pins.%s: %r as an analog input: %s (use an A* pin)"
                             % (self._path, role, self.board["pins"][role], e))
        self._owned.append(a)
        vref = self._vref
        return lambda: a.value * vref // 65535

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
        """(mV, mA) of the supply ahead of the load switch; feeds the watchdog."""
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

    def poll(self):
        """One sample of polled ring pins (the ``tasks()`` loop body); True if either changed."""
        return poll_pins(self.ring_a, self.ring_b)

    async def _poll_ring(self):
        while True:
            self.poll()
            await sleep_ms(_POLL_MS)

    async def _poll_actuator(self):
        a = self.lens_actuator
        while True:
            a.poll(ticks_ms())
            await sleep_ms(_POLL_MS)

    def bus_errors(self):
        """I2C failures since boot: (power monitor, temperature)."""
        return (self._power.errors if self._power else 0, self._temp.errors if self._temp else 0)
