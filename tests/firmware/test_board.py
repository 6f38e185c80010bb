"""Board files and the MicroPython HAL, on the unix port and CPython alike.

- every shipped boards/*.json validates; each kind of mistake is refused with a message naming
  the file, the role and the pin; ``pick_board`` picks by runtime and the longest match;
- the runtime-neutral pieces (Level, Output, AnalogThreshold, PolledPin, BusGuard, Tmp117);
- ``hal_machine.MachineHal`` built from the real ESP32-S3 and Pico board files on a stand-in
  ``machine`` module (the HAL takes the module in), with the real drivers (ina2xx, encoder,
  actuator) talking to the simulator's INA register models (sim_i2c) and a TMP117 model here.
"""

import json

from _util import REPO, raises
from magcam_fw import board as B
from magcam_fw.board import (
    AnalogThreshold,
    BoardError,
    BusGuard,
    HardwareError,
    Level,
    Output,
    PolledPin,
    Tmp117,
    poll_pins,
)
from magcam_fw.encoder import QuadratureDecoder
from magcam_fw.sim_i2c import VirtualI2C, VirtualINA219, VirtualINA226

BOARDS = REPO + "/boards"


def _read_board(name):
    with open(BOARDS + "/" + name) as f:
        return json.loads(f.read())


def _board(name):
    return B.load(BOARDS + "/" + name)


def _err(bd, path="x.json"):
    """The BoardError message validate() gives for this dict."""
    e = raises(BoardError, B.validate, bd, path)
    return str(e)


# ---- a stand-in for MicroPython's machine module -------------------------------------------


class _NS:
    pass


class Reset(Exception):
    pass


def stand_in_machine(bus=None, refuse=(), adc_uv=False):
    """A module-like object with the machine API the HAL uses; ``m.pins[gpio]`` is the last Pin
    made on a GPIO, ``m.adcs[gpio]`` its ADC (set ``.mv``), ``m.encoders[id]`` (set ``.count``)."""
    m = _NS()
    m.pins = {}
    m.adcs = {}
    m.encoders = {}
    m.wdt = []
    m.levels = {}  # level an input reads when it is made (a button held at boot, say)

    class Pin:
        IN = 1
        OUT = 3
        PULL_UP = 1
        PULL_DOWN = 2

        def __init__(self, gpio, mode=-1, pull=-1, value=None):
            if gpio in refuse:
                raise ValueError("invalid pin")
            self.gpio = gpio
            self.mode = mode
            self.pull = pull
            self._v = m.levels.get(gpio, 0) if value is None else value
            self.handler = None
            self.writes = []
            m.pins[gpio] = self

        def value(self, v=None):
            if v is None:
                return self._v
            v = 1 if v else 0
            self.writes.append(v)
            if v != self._v:
                self._v = v
                if self.handler is not None:
                    self.handler(self)

        def irq(self, handler=None, trigger=3):
            self.handler = handler

    class ADC:
        ATTN_0DB = 0
        ATTN_2_5DB = 1
        ATTN_6DB = 2
        ATTN_11DB = 3

        def __init__(self, pin, atten=None):
            self.gpio = pin.gpio
            self.atten = atten
            self.mv = 0
            m.adcs[pin.gpio] = self

        def read_u16(self):
            return self.mv * 65535 // 3300

    class ADCuv(ADC):
        def read_uv(self):
            return self.mv * 1000

    class PWM:
        def __init__(self, pin, freq=None, duty_u16=None):
            self.gpio = pin.gpio
            self.freq = freq
            self.duty = duty_u16
            m.pwm = self

        def duty_u16(self, v=None):
            if v is None:
                return self.duty
            self.duty = v

    class I2C:
        def __init__(self, bus_id, scl=None, sda=None, freq=None):
            self.args = (bus_id, scl.gpio, sda.gpio, freq)
            m.i2c = self

        def readfrom_mem_into(self, addr, reg, buf):
            bus.readfrom_mem_into(addr, reg, buf)

        def writeto_mem(self, addr, reg, buf):
            bus.writeto_mem(addr, reg, buf)

    class Encoder:
        def __init__(self, unit, a, b, phases=1, filter_ns=None):
            self.args = (unit, a.gpio, b.gpio, phases, filter_ns)
            self.count = 0
            m.encoders[unit] = self

        def value(self):
            return self.count

    class WDT:
        def __init__(self, timeout=5000):
            self.timeout = timeout
            self.fed = 0
            m.wdt.append(self)

        def feed(self):
            self.fed += 1

    def reset():
        raise Reset()

    m.Pin = Pin
    m.ADC = ADCuv if adc_uv else ADC
    m.PWM = PWM
    m.I2C = I2C
    m.Encoder = Encoder
    m.WDT = WDT
    m.reset = reset
    m.PWRON_RESET, m.HARD_RESET, m.WDT_RESET, m.DEEPSLEEP_RESET, m.SOFT_RESET = 1, 2, 3, 4, 5
    m.cause = 3
    m.reset_cause = lambda: m.cause
    return m


class TMP117Model:
    """TMP117 registers: 0x00 temperature (7.8125 m°C/LSB), 0x01 configuration (Data_Ready),
    0x0F device id."""

    def __init__(self, raw=3008, did=0x0117):
        self.raw = raw  # 3008 * 7.8125 = 23500 m°C
        self.did = did
        self.ready_after = 0  # configuration reads before Data_Ready shows

    def read_reg(self, reg, buf):
        if reg == 0x00:
            v = self.raw & 0xFFFF
        elif reg == 0x01:
            v = 0x0220
            if self.ready_after <= 0:
                v |= 0x2000
            self.ready_after -= 1
        elif reg == 0x0F:
            v = self.did
        else:
            v = 0
        buf[0] = v >> 8
        buf[1] = v & 0xFF

    def write_reg(self, reg, buf):
        pass


def _bus(ina=None, tmp=True):
    bus = VirtualI2C()
    if ina is not None:
        bus.add(0x40, ina)
    if tmp:
        bus.add(0x48, TMP117Model())
    return bus


def _esp32(bd=None, bus=None):
    from magcam_fw.hal_machine import MachineHal

    bd = bd or _board("esp32s3-devkitc-1.json")
    if bus is None:
        bus = _bus(VirtualINA226(shunt_mohm=20))
    m = stand_in_machine(bus, adc_uv=True)
    return MachineHal(bd, machine=m, sleep=lambda ms: None), m, bus


def _pico(bd=None, bus=None):
    from magcam_fw.hal_machine import MachineHal

    bd = bd or _board("rpi-pico.json")
    if bus is None:
        bus = _bus(VirtualINA219(shunt_mohm=100))
    m = stand_in_machine(bus)
    return MachineHal(bd, machine=m, sleep=lambda ms: None), m, bus


# ---- the shipped board files -----------------------------------------------------------------


def test_every_shipped_board_validates():
    import os

    names = sorted(n for n in os.listdir(BOARDS) if n.endswith(".json"))
    assert len(names) >= 5, names
    runtimes = set()
    for n in names:
        bd = _board(n)
        assert bd["_path"].endswith(n)
        runtimes.add(bd["runtime"])
    for rt in ("micropython", "micropython-unix", "circuitpython", "blinka"):
        assert rt in runtimes, rt


def test_flash_layouts_are_the_micropython_ones():
    esp = _board("esp32s3-devkitc-1.json")
    assert B.flash_region(esp, "factory") == (0x10000, 0x300000)
    assert B.flash_region(esp, "vfs") == (0x310000, 0x4F0000)
    assert B.flash_region(esp, "vfs")[0] + B.flash_region(esp, "vfs")[1] == 8 * 1024 * 1024
    pico = _board("rpi-pico.json")
    assert B.flash_region(pico, "vfs") == (2048 * 1024 - 1408 * 1024, 1408 * 1024)
    assert B.flash_region(pico, "nothing") is None


def test_pin_forms_per_runtime():
    bd = _read_board("esp32s3-devkitc-1.json")
    bd["pins"]["ring_a"] = "D5"
    msg = _err(bd, "boards/esp.json")
    assert msg.startswith("boards/esp.json: pins.ring_a:") and "GPIO numbers" in msg, msg
    cp = _read_board("feather-rp2040-circuitpython.json")
    cp["pins"]["hall"] = 9
    msg = _err(cp)
    assert "pins.hall" in msg and "pin names" in msg, msg
    cp = _read_board("feather-rp2040-circuitpython.json")
    cp["pins"]["hall"] = "D-9"
    assert "pins.hall" in _err(cp)


def test_strapping_flash_usb_and_missing_gpios_are_refused():
    cases = (
        (46, "strapping"), (0, "strapping"), (30, "SPI flash"), (35, "octal PSRAM"),
        (19, "USB D-"), (23, "does not exist"), (49, "does not exist"),
    )
    for gpio, word in cases:
        bd = _read_board("esp32s3-devkitc-1.json")
        bd["pins"]["ring_switch"] = gpio
        msg = _err(bd)
        assert "pins.ring_switch" in msg and ("GPIO %d" % gpio) in msg and word in msg, msg


def test_board_reserved_pins_are_refused():
    bd = _read_board("rpi-pico.json")
    bd["pins"]["ring_switch"] = 25
    msg = _err(bd)
    assert "pins.ring_switch" in msg and "on-board LED" in msg, msg
    cp = _read_board("feather-rp2040-circuitpython.json")
    cp["pins"]["load_switch"] = "NEOPIXEL"
    assert "NeoPixel" in _err(cp)


def test_a_pin_used_twice_names_both_roles():
    bd = _read_board("rpi-pico.json")
    bd["pins"]["hall"] = 2
    msg = _err(bd, "boards/rpi-pico.json")
    assert msg == "boards/rpi-pico.json: pins.hall: GPIO 2 is already used by pins.ring_a", msg
    cp = _read_board("rpi-blinka.json")
    cp["pins"]["lens_dir"] = "D17"
    assert "pins.lens_dir: 'D17' is already used by pins.ring_a" in _err(cp)


def test_roles_follow_the_features():
    bd = _read_board("rpi-pico.json")
    del bd["pins"]["ring_b"]
    assert "pins.ring_b: missing (needed by feature 'ring')" in _err(bd)
    bd = _read_board("rpi-pico.json")
    bd["features"].remove("ring_switch")
    assert "pins.ring_switch: no enabled feature uses this pin" in _err(bd)
    bd = _read_board("rpi-pico.json")
    bd["pins"]["laser"] = 7
    assert "pins.laser: unknown role" in _err(bd)
    bd = _read_board("rpi-pico.json")
    bd["features"].remove("attach")
    assert "features: 'attach' is required" in _err(bd)


def test_actuator_kinds():
    bd = _read_board("rpi-pico.json")
    bd["lens_actuator"]["kind"] = "piezo"
    msg = _err(bd)
    assert "lens_actuator.kind" in msg and "'piezo'" in msg and "stepdir" in msg, msg
    bd = _read_board("rpi-pico.json")
    bd["lens_actuator"] = {"kind": "stepdir"}
    assert "pins.lens_pwm: lens_actuator.kind \"stepdir\" does not use this pin" in _err(bd)
    del bd["pins"]["lens_pwm"]
    assert "pins.lens_step: missing (needed by feature 'lens')" in _err(bd)
    bd = _read_board("rpi-pico.json")
    bd["lens_actuator"] = {"kind": "dac", "lo": 0, "hi": 1000}
    del bd["pins"]["lens_pwm"]
    bd["pins"]["lens_dac"] = 15
    assert "rp2040 has no DAC" in _err(bd)
    bd = _read_board("rpi-pico.json")
    bd["lens_actuator"]["hi"] = 0
    assert "lo must be below hi" in _err(bd)


def test_analog_roles_need_adc_pins():
    bd = _read_board("esp32s3-devkitc-1.json")
    bd["pins"]["hall"] = 14  # ADC2: unusable with Wi-Fi
    msg = _err(bd)
    assert "pins.hall: GPIO 14 cannot be an analog input" in msg and "ADC1" in msg, msg
    bd = _read_board("rpi-pico.json")
    bd["pins"]["vbus_sense"] = 7
    msg = _err(bd)
    assert "pins.vbus_sense: GPIO 7 cannot be an analog input on rp2040 (ADC pins: GPIO26-29)" in msg, msg
    bd = _read_board("esp32s3-devkitc-1.json")
    bd["hall"]["off_mv"] = bd["hall"]["on_mv"]
    assert "hysteresis" in _err(bd)


def test_rp2040_i2c_pins_must_belong_to_the_bus():
    bd = _read_board("rpi-pico.json")
    bd["pins"]["i2c_sda"], bd["pins"]["i2c_scl"] = 10, 11  # I2C1's pins
    assert "pins.i2c_sda: GPIO 10 is not an SDA pin of I2C0" in _err(bd)
    bd["i2c"]["id"] = 1
    B.validate(bd)
    bd["pins"]["i2c_scl"] = 12
    assert "pins.i2c_scl: GPIO 12 is not an SCL pin of I2C1" in _err(bd)


def test_counters_links_watchdog_and_rail_checks():
    bd = _read_board("rpi-pico.json")
    bd["ring"]["counter"] = "encoder"  # machine.Encoder is ESP32 (PCNT) only
    assert "ring.counter" in _err(bd)
    bd = _read_board("feather-rp2040-circuitpython.json")
    bd["link"]["kind"] = "stdio"
    assert "link.kind" in _err(bd)
    bd = _read_board("rpi-pico.json")
    bd["watchdog_ms"] = 9000
    assert "longest watchdog period (8388 ms)" in _err(bd)
    bd = _read_board("rpi-pico.json")
    bd["safe_mode"]["stable_ms"] = 4000
    assert "stable_ms must be longer than watchdog_ms" in _err(bd)
    bd = _read_board("rpi-blinka.json")  # digital VBUS sense: only the INA measures volts
    bd["features"].remove("power_monitor")
    assert "nothing measures the VBUS voltage" in _err(bd)
    bd = _read_board("rpi-pico.json")
    bd["features"].remove("temperature")
    B.validate(bd)
    assert "no temperature sensor" in bd["_warnings"][0]
    bd = _read_board("rpi-pico.json")
    bd["temperature"]["addr"] = 0x40
    assert "temperature.addr" in _err(bd)


def test_misspelt_missing_or_mistyped_settings_are_board_errors_not_defaults_or_crashes():
    # Each used to validate (a default silently in force: the load switch's polarity among them)
    # or to crash boot with AttributeError / TypeError / ValueError outside safe mode.
    cases = (
        ("load_switch", {"activ": "low"}, "load_switch.activ is not a setting of 'load_switch' (active)"),
        ("load_switch", {}, "load_switch.active: \"high\" or \"low\""),
        ("load_switch", None, "'load_switch' section missing or not an object"),
        ("load_switch", "high", "'load_switch' must be an object"),
        ("ring_switch", "low", "'ring_switch' must be an object"),
        ("watchdog_msec", 2000, "'watchdog_msec' is not a board file key"),
        ("safe_mode", {"after_crash": 1}, "safe_mode.after_crash is not a setting of 'safe_mode'"),
        ("repl_escape", {"pin": 99}, "repl_escape.pin: 99 is not a GPIO of rp2040"),
        ("repl_escape", {"bootsel": True, "boot_wait_ms": "1000"}, "repl_escape.boot_wait_ms: '1000' is not an integer"),
        ("repl_escape", {"bootsel": "yes"}, "repl_escape.bootsel: 'yes' is not one of False, True"),
        ("storage", 5, "storage: the folder the module keeps its files in"),
        ("reserved_pins", [[[25], "x"]], "reserved_pins: each entry is [pin, reason]"),
    )
    for key, value, message in cases:
        bd = _read_board("rpi-pico.json")
        if value is None:
            del bd[key]
        else:
            bd[key] = value
        msg = _err(bd)
        assert msg.startswith("x.json: " + message), (key, value, msg)
    bd = _read_board("rpi-pico.json")
    bd["_note"] = "a comment key"
    B.validate(bd)


def test_flash_layout_checks():
    bd = _read_board("esp32s3-devkitc-1.json")
    bd["flash"]["regions"][5]["size"] = "0x500000"
    assert "past the flash size" in _err(bd)
    bd = _read_board("esp32s3-devkitc-1.json")
    bd["flash"]["regions"][4]["size"] = "0x400000"
    assert "inside the region before it" in _err(bd)
    bd = _read_board("esp32s3-devkitc-1.json")
    bd["flash"]["regions"].pop()
    assert "no \"vfs\" region" in _err(bd)
    bd = _read_board("esp32s3-devkitc-1.json")
    bd["flash"]["size"] = "8M"
    assert "flash.size" in _err(bd)


def test_load_reports_bad_json_and_missing_files():
    e = raises(BoardError, B.load, "/board.json", '{"schema": 1,')
    assert str(e).startswith("/board.json: not valid JSON"), e
    e = raises(BoardError, B.load, "/no/such/board.json")
    assert str(e).startswith("/no/such/board.json: cannot read"), e
    e = raises(BoardError, B.load, "b.json", '{"schema": 2}')
    assert "'schema' must be 1" in str(e)


def test_pick_board_by_runtime_and_longest_match():
    pico = _read_board("rpi-pico.json")
    esp = _read_board("esp32s3-devkitc-1.json")
    cp = _read_board("feather-rp2040-circuitpython.json")
    generic = {"runtime": "micropython", "match": "RP2040"}
    cands = [("/boards/a.json", esp), ("/boards/b.json", generic), ("/boards/c.json", pico), ("/boards/d.json", cp)]
    path, bd = B.pick_board(cands, "Raspberry Pi Pico with RP2040", "micropython")
    assert path == "/boards/c.json", path  # longer match than the generic RP2040 one
    path, _ = B.pick_board(cands, "Generic ESP32S3 module with Octal-SPIRAM with ESP32S3", "micropython")
    assert path == "/boards/a.json"
    path, _ = B.pick_board(cands, "Adafruit Feather RP2040 with rp2040", "circuitpython")
    assert path == "/boards/d.json"
    path, _ = B.pick_board(cands, "Raspberry Pi Pico W with RP2040", "micropython")
    assert path == "/boards/b.json"  # not the plain Pico's board
    e = raises(BoardError, B.pick_board, cands, "Arduino Nano RP2040 Connect with RP2040", "circuitpython")
    assert "no board file matches" in str(e) and "/boards/d.json" in str(e), e
    twin = dict(generic)
    e = raises(BoardError, B.pick_board, cands + [("/boards/e.json", twin)], "Pico W with RP2040", "micropython")
    assert "/boards/b.json and /boards/e.json both match" in str(e), e


def test_runtime_and_machine_name():
    import sys

    rt = B.runtime()
    if sys.implementation.name == "micropython":
        assert rt == "micropython-unix"
    else:
        assert rt == "blinka"
    assert isinstance(B.machine_name(rt), str) and B.machine_name(rt)


# ---- runtime-neutral pieces --------------------------------------------------------------------


def test_level_and_output():
    v = [1]
    assert Level(lambda: v[0]).value() == 1
    assert Level(lambda: v[0], active_low=True).value() == 0
    v[0] = 0
    assert Level(lambda: v[0], active_low=True).value() == 1
    wrote = []
    out = Output(wrote.append, active_low=True)
    assert wrote == [1] and not out.on  # constructed off: an active-low enable is driven high
    out(True)
    out(0)
    assert wrote == [1, 0, 1]


def test_analog_threshold_hysteresis_both_ways():
    mv = [1650]
    t = AnalogThreshold(lambda: mv[0], on_mv=2100, off_mv=1900)
    seq = ((2000, 0), (2100, 1), (2000, 1), (1901, 1), (1900, 0), (2099, 0), (3300, 1))
    for x, want in seq:
        mv[0] = x
        assert t.value() == want, (x, want)
    assert t.mv == 3300
    mv[0] = 1650
    low = AnalogThreshold(lambda: mv[0], on_mv=1200, off_mv=1400)  # active when the voltage falls
    for x, want in ((1300, 0), (1200, 1), (1399, 1), (1400, 0)):
        mv[0] = x
        assert low.value() == want, (x, want)
    raises(ValueError, AnalogThreshold, lambda: 0, 5, 5)
    assert B.divider_mv(2500, 100000, 100000) == 5000
    assert B.divider_mv(1500, 200000, 100000) == 4500


def test_polled_pins_drive_the_real_quadrature_decoder():
    lv = [0, 0]
    a = PolledPin(lambda: lv[0])
    b = PolledPin(lambda: lv[1])
    enc = QuadratureDecoder(a, b)
    enc.attach()
    for state in (1, 3, 2, 0, 1, 3, 2, 0):  # two forward cycles, one line at a time
        lv[0], lv[1] = state >> 1, state & 1
        assert poll_pins(a, b)
    assert not poll_pins(a, b)  # nothing changed
    assert enc.value() == 8 and enc.glitches == 0, (enc.value(), enc.glitches)
    lv[0], lv[1] = 1, 1  # both at once between two polls: a missed edge
    poll_pins(a, b)
    assert enc.glitches == 1 and enc.value() == 8


def test_bus_guard_holds_the_last_reading_then_fails_safe():
    vals = [5000]

    def read():
        if vals[0] is None:
            raise OSError(5)
        return vals[0]

    g = BusGuard(read, failsafe=0, limit=3)
    assert g() == 5000
    vals[0] = None
    assert g() == 5000 and g() == 5000  # two failures: still the last good value
    assert g() == 0 and g.errors == 3  # the third in a row: fail safe
    vals[0] = 4900
    assert g() == 4900
    vals[0] = None
    never = BusGuard(read, failsafe=125000)
    assert never() == 125000  # no good reading yet: fail safe at once


def test_tmp117_driver():
    bus = VirtualI2C()
    chip = bus.add(0x48, TMP117Model())
    t = Tmp117(bus, 0x48)
    assert t.read_mc() == 23500
    chip.raw = -128  # -1.000 C
    assert t.read_mc() == -1000
    chip.ready_after = 3
    t.wait_ready(lambda ms: None)
    chip.ready_after = 1000
    assert "no conversion" in str(raises(OSError, t.wait_ready, lambda ms: None, 20))
    bus.add(0x49, TMP117Model(did=0x0116))
    assert "not a TMP117" in str(raises(OSError, Tmp117, bus, 0x49))
    assert "TMP117 at 0x4a" in str(raises(OSError, Tmp117, bus, 0x4A))


# ---- MachineHal on a stand-in machine module -------------------------------------------------


def test_esp32s3_hal_hardware_counter_and_analog_inputs():
    hal, m, bus = _esp32()
    assert m.encoders[0].args == (0, 15, 16, 4, 1000)  # PCNT unit 0, x4 decoding, glitch filter
    assert m.pins[15].pull == m.Pin.PULL_UP and m.pins[15].mode == m.Pin.IN
    m.encoders[0].count = 12
    assert hal.ring.value() == 12 and hal.ring.raw() == 12
    m.encoders[0].count = -3
    assert hal.ring.value() == -3
    # Hall: a ratiometric sensor on ADC1 with 2100 / 1900 mV thresholds, 11 dB attenuation.
    assert m.adcs[1].atten == m.ADC.ATTN_11DB
    m.adcs[1].mv = 2200
    assert hal.hall.value() == 1
    m.adcs[1].mv = 2000
    assert hal.hall.value() == 1
    m.adcs[1].mv = 1800
    assert hal.hall.value() == 0
    # VBUS through a 100k/100k divider.
    m.adcs[2].mv = 2510
    assert hal.vbus_mv() == 5020 and hal.vbus.value() == 1
    m.adcs[2].mv = 1700
    assert hal.vbus.value() == 0
    # Ring switch: active low with a pull-up.
    m.pins[17].value(0)
    assert hal.ring_switch.value() == 1
    assert hal.storage == "/" and hal.sensor is None


def test_esp32s3_hal_rail_power_temperature_and_watchdog():
    hal, m, bus = _esp32()
    ls = m.pins[4]
    assert ls.mode == m.Pin.OUT and ls.value() == 0  # built open
    hal.set_rail(True)
    assert ls.value() == 1 and hal.rail_on
    hal.set_rail(False)
    assert ls.value() == 0
    assert m.i2c.args == (0, 9, 8, 400000)
    bus._devices[0x40].set(5012, 480)  # the INA226 model: 5.012 V, 480 mA
    mv, ma = hal.read_power()
    assert abs(mv - 5012) <= 2 and ma == 480, (mv, ma)
    assert hal.read_temp_mc() == 23500
    wdt = hal.watchdog(5000)
    assert wdt.timeout == 5000 and wdt.fed == 1
    hal.read_power()
    assert wdt.fed == 2 and hal.last_feed is not None  # the control tick feeds the watchdog
    assert hal.reset_cause() == "watchdog"
    m.cause = 1
    assert hal.reset_cause() == "power-on"
    raises(Reset, hal.reset)


def test_i2c_failures_fail_safe():
    hal, m, bus = _esp32()
    bus._devices[0x40].set(5000, 100)
    good = hal.read_power()
    assert hal.read_temp_mc() == 23500
    bus.remove(0x40)
    bus.remove(0x48)
    for _ in range(9):
        assert hal.read_power() == good  # a few lost transfers: the last reading holds
        assert hal.read_temp_mc() == 23500
    assert hal.read_power() == (0, 0)  # then under-voltage: the rail opens
    assert hal.read_temp_mc() == 125000  # and over-temperature
    assert hal.bus_errors() == (10, 10)


def test_esp32s3_stepdir_lens_runs_from_a_task():
    hal, m, bus = _esp32()
    tasks = hal.tasks()
    assert len(tasks) == 1
    for t in tasks:
        t.close()  # a coroutine; the app would schedule it
    hal.lens_actuator(3)
    steps = 0
    now = 0
    for _ in range(10):
        now += 1
        steps += hal.lens_actuator.poll(now)
    assert steps == 3 and hal.lens_actuator.position == 3
    assert m.pins[11].writes.count(1) == 3 and m.pins[12].value() == 1


def test_pico_hal_software_decoder_digital_hall_and_pwm_lens():
    hal, m, bus = _pico()
    a, b = m.pins[2], m.pins[3]
    assert a.handler is not None and b.handler is not None  # the decoder's IRQs
    for state in (1, 3, 2, 0) * 3:
        a.value(state >> 1)
        b.value(state & 1)
    assert hal.ring.value() == 12 and hal.ring.glitches == 0
    assert hal.ring_a is a and hal.ring_b is b  # the app's own decoder can still use them
    m.pins[5].value(0)  # DRV5032: open drain, active low
    assert hal.hall.value() == 1
    m.pins[5].value(1)
    assert hal.hall.value() == 0
    m.adcs[26].mv = 2500  # read_u16 path, 3300 mV reference
    assert abs(hal.vbus_mv() - 5000) <= 2
    assert m.pwm.gpio == 15 and m.pwm.freq == 20000
    hal.lens_actuator(500)
    assert abs(m.pwm.duty - 32768) <= 1
    hal.lens_actuator(1000)
    assert m.pwm.duty == 65535
    assert hal.tasks() == []
    bus._devices[0x40].set(4960, 250)
    assert hal.read_power() == (4960, 250)


def test_i2c_addresses_may_be_hex_strings_as_datasheets_write_them():
    # JSON has no hex numbers; "0x41" used to be "is not an integer", and a range error said
    # "72 is outside 64..79" about a chip whose datasheet says 0x48.
    bd = _read_board("rpi-pico.json")
    bd["power_monitor"]["addr"] = "0x41"
    bd["temperature"]["addr"] = "0X49"
    B.validate(bd)
    bus = VirtualI2C()
    ina = bus.add(0x41, VirtualINA219(shunt_mohm=100))
    bus.add(0x49, TMP117Model())
    hal, m, bus = _pico(bd, bus)
    ina.set(4960, 250)
    assert hal.read_power() == (4960, 250)
    assert hal.read_temp_mc() == 23500
    for value, message in (("0x4g", "'0x4g' is not an I2C address"), ("64", "'64' is not an I2C address"),
                           (0x20, "power_monitor.addr: 0x20 is outside 0x40..0x4f"),
                           ("0x50", "power_monitor.addr: 0x50 is outside 0x40..0x4f")):
        bd = _read_board("rpi-pico.json")
        bd["power_monitor"]["addr"] = value
        assert message in _err(bd), (value, _err(bd))
    bd = _read_board("rpi-pico.json")
    bd["temperature"]["addr"] = "0x40"
    assert "temperature.addr: 0x40 is outside 0x48..0x4b" in _err(bd)


def test_pin_and_chip_errors_name_the_role():
    from magcam_fw.hal_machine import MachineHal

    bd = _board("rpi-pico.json")
    m = stand_in_machine(_bus(VirtualINA219(shunt_mohm=100)), refuse=(5,))
    e = raises(BoardError, MachineHal, bd, m, lambda ms: None)
    assert "pins.hall: GPIO 5" in str(e) and "invalid pin" in str(e), e
    m = stand_in_machine(_bus(None))  # nothing at 0x40
    e = raises(HardwareError, MachineHal, bd, m, lambda ms: None)
    assert "power_monitor: INA219 at 0x40" in str(e), e
    assert m.pins[6].value() == 0  # the load switch was already open when it failed
    m = stand_in_machine(_bus(VirtualINA219(shunt_mohm=100), tmp=False))
    e = raises(HardwareError, MachineHal, bd, m, lambda ms: None)
    assert "temperature: TMP117 at 0x48" in str(e), e
    bd = _board("rpi-pico.json")
    bd["lens_actuator"]["options"] = {"speed": 3}
    m = stand_in_machine(_bus(VirtualINA219(shunt_mohm=100)))
    e = raises(BoardError, MachineHal, bd, m, lambda ms: None)
    assert "lens_actuator" in str(e) and "options" in str(e), e


def test_board_without_power_monitor_uses_the_vbus_adc():
    from magcam_fw.hal_machine import MachineHal

    bd = _read_board("rpi-pico.json")
    bd["features"] = ["ring", "attach", "rail", "lens"]
    del bd["pins"]["ring_switch"]
    del bd["pins"]["i2c_sda"]
    del bd["pins"]["i2c_scl"]
    B.validate(bd)
    assert len(bd["_warnings"]) == 2
    m = stand_in_machine()
    hal = MachineHal(bd, m, lambda ms: None)
    m.adcs[26].mv = 2400
    mv, ma = hal.read_power()
    assert abs(mv - 4800) <= 2 and ma == 0
    assert hal.read_temp_mc() == 25000 and hal.ring_switch is None


def test_platform_alone_drives_only_the_load_switch():
    from magcam_fw.hal_machine import Platform

    bd = _read_board("rpi-pico.json")
    bd["load_switch"]["active"] = "low"
    m = stand_in_machine()
    p = Platform(bd, m)
    assert m.pins == {}
    p.rail_off()
    assert list(m.pins) == [6] and m.pins[6].value() == 1  # active low: off is high
    assert p.watchdog(2000).timeout == 2000


def test_check_flash_against_the_running_partition_table():
    from magcam_fw.hal_machine import check_flash

    bd = _board("esp32s3-devkitc-1.json")

    class Part:
        def __init__(self, addr, size):
            self._i = (1, 129, addr, size, "vfs", False)

        def info(self):
            return self._i

    class Partition:
        TYPE_DATA = 1
        table = [Part(0x310000, 0x4F0000)]

        @classmethod
        def find(cls, kind, label=None):
            return cls.table

    esp32 = _NS()
    esp32.Partition = Partition
    assert check_flash(bd, esp32=esp32) == []
    Partition.table = [Part(0x200000, 0x600000)]  # firmware built with the older 8 MiB table
    out = check_flash(bd, esp32=esp32)
    assert len(out) == 2 and "0x200000" in out[0], out
    Partition.table = []
    assert "no \"vfs\"" in check_flash(bd, esp32=esp32)[0]
