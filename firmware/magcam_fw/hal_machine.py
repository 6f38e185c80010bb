"""MicroPython HAL: the module's hardware through ``machine``, built from a validated board file.

This is the only file that touches MicroPython's hardware modules, and it takes them in:
``MachineHal(board, machine=None)`` imports ``machine`` only when none is given, so it imports
and is tested on CPython and the unix port with a stand-in module. What does not depend on the
runtime (the contract below, the order things are built in) is ``hal_common.HalBase``.

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

from magcam_fw.board import BoardError
from magcam_fw.hal_common import HalBase

_ATTEN = {"0dB": "ATTN_0DB", "2.5dB": "ATTN_2_5DB", "6dB": "ATTN_6DB", "11dB": "ATTN_11DB"}
_CAUSES = (
    ("PWRON_RESET", "power-on"),
    ("WDT_RESET", "watchdog"),
    ("HARD_RESET", "hard reset"),
    ("SOFT_RESET", "soft reset"),
    ("DEEPSLEEP_RESET", "deep sleep"),
)


class Platform(HalBase):
    """What even safe mode needs: the watchdog, reset, the reset cause and the load switch off.

    Touches only the load switch pin (when ``rail_off()`` is called) and the watchdog.
    """

    def __init__(self, board, machine=None):
        if machine is None:
            import machine
        self._m = machine
        HalBase.__init__(self, board)

    def _rail_write(self, low):
        Pin = self._m.Pin
        return Pin(self.board["pins"]["load_switch"], Pin.OUT, value=1 if low else 0).value

    def watchdog(self, timeout_ms):
        """Start the hardware watchdog (it cannot be stopped); returns the WDT object."""
        self._wdt = self._m.WDT(timeout=timeout_ms)
        self.feed()
        return self._wdt

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
        self._build(sleep)

    # ---- the hardware HalBase._build asks for -------------------------------------------
    def _open_load_switch(self, low):
        self.load_switch = self._pin("load_switch", self._m.Pin.OUT, value=1 if low else 0)
        return self.load_switch.value

    def _ring_counter(self, ring):
        m = self._m
        pull = self._pull(ring.get("pull"))
        self.ring_a = self._pin("ring_a", m.Pin.IN, pull)
        self.ring_b = self._pin("ring_b", m.Pin.IN, pull)
        self.encoder = None
        if ring["counter"] != "encoder":
            return None  # decoded on the pins' IRQs
        kw = {"phases": 4}
        if "filter_ns" in ring:
            kw["filter_ns"] = ring["filter_ns"]
        try:
            self.encoder = m.Encoder(ring.get("unit", 0), self.ring_a, self.ring_b, **kw)
        except (ValueError, TypeError, AttributeError) as e:
            pins = self.board["pins"]
            raise BoardError("%s: ring.counter \"encoder\": machine.Encoder(%d, GPIO %d, GPIO %d) failed: %s"
                             % (self._path, ring.get("unit", 0), pins["ring_a"], pins["ring_b"], e))
        return self.encoder.value

    def _digital_in(self, role, pull):
        return self._pin(role, self._m.Pin.IN, self._pull(pull)).value

    def _analog_mv(self, role):
        """A zero-argument callable giving the pin's voltage in mV."""
        m = self._m
        gpio = self.board["pins"][role]
        try:
            if self.board.get("chip") == "esp32s3":
                atten = getattr(m.ADC, _ATTEN[(self.board.get("adc") or {}).get("atten", "11dB")])
                adc = m.ADC(m.Pin(gpio), atten=atten)
            else:
                adc = m.ADC(m.Pin(gpio))
        except (ValueError, TypeError) as e:
            raise BoardError("%s: pins.%s: GPIO %d as an analog input: %s" % (self._path, role, gpio, e))
        if hasattr(adc, "read_uv"):  # ESP32: calibrated against the chip's eFuse data
            return lambda: adc.read_uv() // 1000
        vref = self._vref
        return lambda: adc.read_u16() * vref // 65535

    def _open_i2c(self, c):
        Pin = self._m.Pin
        pins = self.board["pins"]
        try:
            return self._m.I2C(c.get("id", 0), scl=Pin(pins["i2c_scl"]), sda=Pin(pins["i2c_sda"]),
                               freq=c.get("freq", 400000))
        except (ValueError, TypeError) as e:
            raise BoardError("%s: i2c: I2C%d on SDA GPIO %d / SCL GPIO %d: %s"
                             % (self._path, c.get("id", 0), pins["i2c_sda"], pins["i2c_scl"], e))

    def _pwm_out(self, role, freq):
        return self._m.PWM(self._pin(role, self._m.Pin.OUT), freq=freq, duty_u16=0)

    def _digital_out(self, role):
        return self._pin(role, self._m.Pin.OUT, value=0)

    def _dac_out(self, role):
        return self._m.DAC(self._pin(role))

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
