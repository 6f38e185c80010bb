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

from magcam_fw.board import BoardError, Inert, PolledPin, poll_pins
from magcam_fw.compat import const, sleep_ms
from magcam_fw.hal_common import HalBase

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


class Platform(HalBase):
    """What even safe mode needs: the watchdog, reset, the reset cause and the load switch off."""

    def __init__(self, board_def, **modules):
        for k in modules:
            if k not in _MODULES:
                raise TypeError("unknown module %r (known: %s)" % (k, ", ".join(_MODULES)))
        self._given = modules
        HalBase.__init__(self, board_def)
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

    def _rail_write(self, low):
        return OutPin(self._output("load_switch", low)).value

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
        self._check_aliases()
        self._build(sleep)

    # ---- the hardware HalBase._build asks for -------------------------------------------
    def _open_load_switch(self, low):
        self.load_switch = self._output("load_switch", low)
        return OutPin(self.load_switch).value

    def _ring_counter(self, ring):
        if ring["counter"] == "rotaryio":
            rot = self._mod("rotaryio")
            try:
                enc = rot.IncrementalEncoder(self._board_pin("ring_a"), self._board_pin("ring_b"), divisor=1)
            except (ValueError, RuntimeError) as e:
                pins = self.board["pins"]
                raise BoardError("%s: ring.counter \"rotaryio\" on pins %r / %r: %s (RP2040 needs two "
                                 "consecutive GPIOs)" % (self._path, pins["ring_a"], pins["ring_b"], e))
            self._owned.append(enc)
            self.encoder = enc
            self.ring_a = Inert(0)  # the counter owns the pins
            self.ring_b = Inert(0)
            return lambda: enc.position
        read_a = self._digital_in("ring_a", ring.get("pull"))
        read_b = self._digital_in("ring_b", ring.get("pull"))
        self.encoder = None
        self.ring_a = PolledPin(read_a)
        self.ring_b = PolledPin(read_b)
        self._tasks.append(self._poll_ring)
        return None  # decoded on the pins, sampled by a task

    def _digital_in(self, role, pull):
        dio = self._mod("digitalio")
        try:
            d = dio.DigitalInOut(self._board_pin(role))
            d.switch_to_input(pull=dio.Pull.UP if pull == "up" else (dio.Pull.DOWN if pull == "down" else None))
        except (ValueError, RuntimeError) as e:
            raise BoardError("%s: pins.%s: %r as an input: %s" % (self._path, role, self.board["pins"][role], e))
        self._owned.append(d)
        return _reader(d)

    def _analog_mv(self, role):
        a = self._claim(role, "an analog input", self._mod("analogio").AnalogIn, " (use an A* pin)")
        vref = self._vref
        return lambda: a.value * vref // 65535

    def _open_i2c(self, c):
        busio = self._mod("busio")
        try:
            bus = busio.I2C(self._board_pin("i2c_scl"), self._board_pin("i2c_sda"), frequency=c.get("freq", 400000))
        except (ValueError, RuntimeError) as e:
            pins = self.board["pins"]
            raise BoardError("%s: i2c on SDA %r / SCL %r: %s" % (self._path, pins["i2c_sda"], pins["i2c_scl"], e))
        self._owned.append(bus)
        return I2CMem(bus)

    def _pwm_out(self, role, freq):
        pwmio = self._mod("pwmio")
        return PwmU16(self._claim(role, "PWM at %d Hz" % freq, pwmio.PWMOut, frequency=freq, duty_cycle=0))

    def _digital_out(self, role):
        return OutPin(self._output(role, False))

    def _dac_out(self, role):
        return self._claim(role, "an analog output", self._mod("analogio").AnalogOut)

    # ---- construction helpers -----------------------------------------------------------
    def _claim(self, role, what, make, hint="", **kw):
        """``make(pin, **kw)`` on the role's board pin, kept for ``deinit()``; the runtime
        refusing the pin is a BoardError naming the role, the pin and ``what`` it was to be."""
        try:
            obj = make(self._board_pin(role), **kw)
        except (ValueError, RuntimeError) as e:
            raise BoardError("%s: pins.%s: %r as %s: %s%s"
                             % (self._path, role, self.board["pins"][role], what, e, hint))
        self._owned.append(obj)
        return obj

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

    # ---- the ring, polled -----------------------------------------------------------------
    def poll(self):
        """One sample of polled ring pins (the ``tasks()`` loop body); True if either changed."""
        return poll_pins(self.ring_a, self.ring_b)

    async def _poll_ring(self):
        while True:
            self.poll()
            await sleep_ms(_POLL_MS)
