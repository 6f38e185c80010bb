"""The CircuitPython HAL, tested on CPython through Blinka's API.

Adafruit Blinka implements CircuitPython's ``board`` / ``digitalio`` / ``analogio`` / ``busio`` /
``pwmio`` on CPython. With ``BLINKA_OS_AGNOSTIC=1`` it selects its "OS-agnostic" board
(``adafruit_blinka/board/generic_agnostic_board.py``): real Blinka classes over pins that need
no GPIO hardware, with fixed behaviours: ``Dx_INPUT_TRUE`` reads True, ``Dx_INPUT_FALSE``
False, ``Dx_INPUT_TOGGLE`` alternates on every read, ``Ax_INPUT_FIXED_INT_PI`` reads 31415,
``Dx_OUTPUT`` records the last write in its ``Pin.current_value``, ``PWMOut`` keeps its duty.
The HAL runs unchanged on them: it imports those modules itself, exactly as on a Pi.

What Blinka cannot exercise here, and how it is covered instead:

- I2C: the agnostic board's bus only answers ``scan()``. The INA219 and TMP117 are register
  models (the simulator's ``sim_i2c.VirtualINA219`` and a TMP117 model) behind Blinka's real
  ``busio.I2C`` (its locking and ``writeto`` / ``writeto_then_readfrom`` dispatch), swapped in
  at Blinka's backend seam (``busio.I2C._i2c``, where ``generic_linux`` / ``ftdi`` backends sit).
- ``rotaryio``, ``usb_cdc``, ``watchdog``, ``microcontroller.reset`` / ``cpu.reset_reason`` do not
  exist in Blinka: the rotaryio path runs on a stand-in ``rotaryio`` module passed in (as the
  MicroPython HAL's tests pass a stand-in ``machine``); on Blinka ``watchdog()`` returns None,
  ``reset()`` exits with status 75 and ``reset_cause()`` is None, which is what is asserted.
- Real CircuitPython timing, PIO-backed rotaryio and pin claiming: only on hardware
  (tests/hardware).

The last tests boot firmware/main.py itself on CPython + Blinka with a pty as the link, and the
host library connects to it.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

os.environ["BLINKA_OS_AGNOSTIC"] = "1"  # before the first `import board`

import adafruit_platformdetect
import board
import busio
from magcam_fw import board as B
from magcam_fw.hal_circuitpython import CircuitPythonHal, I2CMem, Platform
from magcam_fw.sim_i2c import VirtualINA219

REPO = Path(__file__).resolve().parents[1]
MAIN = REPO / "firmware" / "main.py"


def agnostic_board(tmp: Path, **changes) -> dict:
    """A board file for Blinka's OS-agnostic board (validated like any other)."""
    bd = {
        "schema": 1,
        "name": "blinka-os-agnostic",
        "description": "Blinka's OS-agnostic board: real Blinka classes, no GPIO hardware",
        "chip": "os-agnostic",
        "runtime": "blinka",
        "match": "OS_AGNOSTIC",
        "features": ["ring", "ring_switch", "attach", "rail", "lens"],
        "pins": {
            "ring_a": "Dx_INPUT_TOGGLE",
            "ring_b": "Dx_INPUT_FALSE",
            "ring_switch": "Dx_INPUT_TRUE_PULL_DOWN",
            "hall": "Dx_INPUT_TRUE",
            "vbus_sense": "Ax_INPUT_FIXED_INT_PI",
            "load_switch": "Dx_OUTPUT",
            "lens_pwm": "Ax_OUTPUT",
        },
        "ring": {"counter": "poll", "divisor": 1, "pull": "up"},
        "ring_switch": {"active": "low", "pull": "down"},
        "hall": {"kind": "digital", "active": "high"},
        "vbus_sense": {"kind": "adc", "divider": [100000, 47000], "present_mv": 4000, "absent_mv": 3500},
        "adc": {"vref_mv": 3300},
        "load_switch": {"active": "high"},
        "lens_actuator": {"kind": "pwm", "freq": 20000, "lo": 0, "hi": 1000},
        "link": {"kind": "serial", "port": "/dev/null", "baud": 115200},
        "storage": str(tmp),
        "watchdog_ms": 0,
        "safe_mode": {"after_crashes": 3, "stable_ms": 1000, "state_file": str(tmp / "boot.json")},
        "flash": None,
    }
    bd.update(changes)
    B.validate(bd, str(tmp / "board.json"))
    return bd


class TMP117Model:
    def __init__(self, raw: int = 3008):  # 3008 * 7.8125 = 23500 m°C
        self.raw = raw

    def read_reg(self, reg, buf):
        v = {0x00: self.raw & 0xFFFF, 0x01: 0x2220, 0x0F: 0x0117}.get(reg, 0)
        buf[0], buf[1] = v >> 8, v & 0xFF

    def write_reg(self, reg, buf):
        pass


class RegisterBus:
    """I2C chips behind Blinka's backend interface (what ``busio.I2C`` calls on ``self._i2c``):
    a 1-byte write sets the register pointer, a longer one writes a register, reads read it."""

    def __init__(self):
        self.devices: dict = {}
        self._ptr: dict = {}

    def _dev(self, addr):
        if addr not in self.devices:
            raise OSError(19, "no device at 0x%02x" % addr)
        return self.devices[addr]

    def scan(self):
        return sorted(self.devices)

    def writeto(self, address, buffer, *, stop=True, start=0, end=None):
        data = bytes(buffer[start:end])
        dev = self._dev(address)
        self._ptr[address] = data[0]
        if len(data) > 1:
            dev.write_reg(data[0], bytearray(data[1:]))

    def readfrom_into(self, address, buffer, *, stop=True, start=0, end=None):
        self._dev(address).read_reg(self._ptr.get(address, 0), buffer)

    def writeto_then_readfrom(self, address, buffer_out, buffer_in, *, out_start=0, out_end=None,
                              in_start=0, in_end=None, stop=False):
        self.writeto(address, buffer_out, start=out_start, end=out_end)
        view = memoryview(buffer_in)[in_start:in_end]
        self._dev(address).read_reg(self._ptr[address], view)


def busio_with(bus: RegisterBus):
    """A ``busio`` whose I2C is Blinka's real class, its backend swapped for the chip models."""

    class ModelI2C(busio.I2C):
        def __init__(self, scl, sda, frequency=100000):
            super().__init__(scl, sda, frequency=frequency)  # Blinka's own init (agnostic backend)
            self.frequency = frequency
            self._i2c = bus

    return types.SimpleNamespace(I2C=ModelI2C)


def _current(dio) -> int:
    """What the agnostic board's Pin last had written (reading it back returns its fixed level)."""
    return dio._pin.current_value


# ---- the HAL on Blinka's classes ---------------------------------------------------------------


def test_blinka_runs_without_gpio_hardware():
    assert board.board_id == "OS_AGNOSTIC_BOARD"
    assert adafruit_platformdetect.Detector().chip.id == "OS_AGNOSTIC"


def test_hal_inputs_outputs_and_pwm_on_blinka(tmp_path):
    hal = CircuitPythonHal(agnostic_board(tmp_path))
    try:
        assert hal.hall.value() == 1  # Dx_INPUT_TRUE, active high
        assert hal.ring_switch.value() == 1  # reads False with its pull-down; active low: pressed
        # VBUS: 31415 / 65535 * 3300 mV at the pin, times (100k + 47k) / 47k.
        assert hal.vbus_mv() == (31415 * 3300 // 65535) * 147000 // 47000 == 4944
        assert hal.vbus.value() == 1
        assert hal.read_power() == (4944, 0) and hal.last_feed is not None
        assert hal.read_temp_mc() == 25000  # no sensor on this board
        assert _current(hal.load_switch) == 0  # built open
        hal.set_rail(True)
        assert _current(hal.load_switch) == 1 and hal.rail_on
        hal.set_rail(False)
        assert _current(hal.load_switch) == 0
        hal.lens_actuator(500)
        assert hal.lens_pwm.pwm.frequency == 20000
        assert abs(hal.lens_pwm.duty_u16() - 32768) <= 1
        hal.lens_actuator(1000)
        assert hal.lens_pwm.duty_u16() == 65535
        assert hal.storage == str(tmp_path) and hal.sensor is None
    finally:
        hal.deinit()


def test_polled_ring_decodes_blinka_pin_reads(tmp_path):
    hal = CircuitPythonHal(agnostic_board(tmp_path))
    try:
        # A toggles on every read, B stays low: forward, back, forward, ... one line at a time.
        seen = []
        for _ in range(6):
            assert hal.poll()
            seen.append(hal.ring.raw())
        assert seen == [1, 0, 1, 0, 1, 0], seen
        assert hal.ring.glitches == 0
        # The poller task the app schedules: it keeps sampling every millisecond.
        (task,) = hal.tasks()

        async def run_for(ms):
            import asyncio

            t = asyncio.create_task(task)
            await asyncio.sleep(ms / 1000)
            t.cancel()

        import asyncio

        before = hal.ring_a.value()
        asyncio.run(run_for(30))
        assert hal.ring.glitches == 0 and hal.ring.raw() in (0, 1)
        assert hal.ring_a.value() in (0, 1) and before in (0, 1)
    finally:
        hal.deinit()


def test_i2c_chips_through_blinka_busio(tmp_path):
    bus = RegisterBus()
    ina = bus.devices[0x40] = VirtualINA219(shunt_mohm=100)
    bus.devices[0x48] = TMP117Model()
    bd = agnostic_board(
        tmp_path,
        features=["ring", "attach", "rail", "power_monitor", "temperature", "lens"],
        pins={
            "ring_a": "Dx_INPUT_TOGGLE", "ring_b": "Dx_INPUT_FALSE", "hall": "Dx_INPUT_TRUE",
            "vbus_sense": "Dx_INPUT_TRUE_PULL_UP", "load_switch": "Dx_OUTPUT",
            "i2c_sda": "SDA", "i2c_scl": "SCL", "lens_step": "DOTSTAR_DATA", "lens_dir": "DOTSTAR_CLK",
        },
        vbus_sense={"kind": "digital", "active": "high", "pull": "up"},
        i2c={"freq": 100000},
        power_monitor={"chip": "ina219", "addr": 0x40, "shunt_mohm": 100},
        temperature={"chip": "tmp117", "addr": 0x48},
        lens_actuator={"kind": "stepdir", "options": {"max_rate_hz": 1000}},
    )
    hal = CircuitPythonHal(bd, busio=busio_with(bus))
    try:
        assert isinstance(hal.i2c, I2CMem) and hal.i2c.i2c.frequency == 100000
        assert hal.i2c.scan() == [0x40, 0x48]
        ina.set(5008, 250)
        assert hal.read_power() == (5008, 250)
        assert hal.read_temp_mc() == 23500
        # Someone else holds the bus: the transfers fail, the last readings hold, then fail safe.
        assert hal.i2c.i2c.try_lock()
        for _ in range(9):
            assert hal.read_power() == (5008, 250) and hal.read_temp_mc() == 23500
        assert hal.read_power() == (0, 0) and hal.read_temp_mc() == 125000
        assert "busy" in str(hal.power_monitor and hal._power.last_error)
        hal.i2c.i2c.unlock()
        assert hal.read_power() == (5008, 250)
        # The step/dir lens on two digital outputs, polled by its task.
        tasks = hal.tasks()
        assert len(tasks) == 2  # the ring poller and the actuator poller
        for t in tasks:
            t.close()
        hal.lens_actuator(2)
        hal.lens_actuator.poll(0)
        hal.lens_actuator.poll(10)
        assert hal.lens_actuator.position == 2
    finally:
        hal.deinit()


def test_chip_missing_on_the_bus_is_named(tmp_path):
    bus = RegisterBus()
    bd = agnostic_board(
        tmp_path,
        features=["ring", "attach", "rail", "power_monitor", "lens"],
        pins={
            "ring_a": "Dx_INPUT_TOGGLE", "ring_b": "Dx_INPUT_FALSE", "hall": "Dx_INPUT_TRUE",
            "vbus_sense": "Ax_INPUT_FIXED_INT_PI", "load_switch": "Dx_OUTPUT", "lens_pwm": "Ax_OUTPUT",
            "i2c_sda": "SDA", "i2c_scl": "SCL",
        },
        i2c={"freq": 100000},
        power_monitor={"chip": "ina219", "addr": 0x41, "shunt_mohm": 100},
    )
    with pytest.raises(B.HardwareError, match=r"power_monitor: INA219 at 0x41"):
        CircuitPythonHal(bd, busio=busio_with(bus))


def test_pin_names_this_board_lacks_and_aliases(tmp_path):
    pins = dict(agnostic_board(tmp_path)["pins"], hall="D99")
    bd = agnostic_board(tmp_path, pins=pins)
    with pytest.raises(B.BoardError, match=r"board\.json: pins\.hall: this board has no pin 'D99' \(it has: .*SDA"):
        CircuitPythonHal(bd)
    # CS and NEOPIXEL are two names for one pin on this board (both D6).
    pins = dict(agnostic_board(tmp_path)["pins"], ring_switch="CS", hall="NEOPIXEL")
    bd = agnostic_board(tmp_path, pins=pins)
    with pytest.raises(B.BoardError, match=r"pins\.ring_switch: 'CS' is the same pin as pins\.hall \('NEOPIXEL'\)"):
        CircuitPythonHal(bd)


def test_rotaryio_counter_with_a_stand_in_module(tmp_path):
    """Blinka has no rotaryio: a stand-in ``rotaryio`` (its IncrementalEncoder API) is passed in."""
    made = []

    class IncrementalEncoder:
        def __init__(self, pin_a, pin_b, divisor=4):
            self.pins = (pin_a, pin_b)
            self.divisor = divisor
            self.position = 0
            made.append(self)

        def deinit(self):
            pass

    rotaryio = types.SimpleNamespace(IncrementalEncoder=IncrementalEncoder)
    bd = agnostic_board(tmp_path, ring={"counter": "poll", "divisor": 4, "reverse": True})
    bd["ring"]["counter"] = "rotaryio"  # a CircuitPython counter, on Blinka's pins
    hal = CircuitPythonHal(bd, rotaryio=rotaryio)
    try:
        (enc,) = made
        assert enc.pins == (board.Dx_INPUT_TOGGLE, board.Dx_INPUT_FALSE) and enc.divisor == 1
        enc.position = 8  # transitions
        assert hal.ring.value() == -2 and hal.ring.raw() == -8  # divisor 4, reversed
        assert hal.ring_a.value() == 0 and hal.tasks() == []  # the counter owns the pins
    finally:
        hal.deinit()


def test_platform_on_blinka(tmp_path):
    bd = agnostic_board(tmp_path, load_switch={"active": "low"})
    p = Platform(bd)
    p.rail_off()
    (dio,) = p._owned  # the load switch, and nothing else
    assert _current(dio) == 1  # active low: open is high
    assert p.watchdog(5000) is None  # Blinka has no microcontroller.watchdog
    p.feed()
    assert p.last_feed is not None and p.reset_cause() is None
    with pytest.raises(SystemExit) as e:
        p.reset()
    assert e.value.code == 75
    p.deinit()


# ---- firmware/main.py booted on CPython + Blinka ------------------------------------------------


class PtyPair:
    """Two ptys with a relay between their masters: the firmware opens one slave, the host the
    other (each with pyserial, like a USB gadget serial port and a host's /dev/ttyACM0)."""

    def __init__(self):
        self._m1, s1 = pty.openpty()
        self._m2, s2 = pty.openpty()
        self.firmware_port = os.ttyname(s1)
        self.host_port = os.ttyname(s2)
        self._slaves = (s1, s2)  # held open so neither side sees a hang-up while the other reopens
        self._stop = False
        self._t = threading.Thread(target=self._relay, daemon=True)
        self._t.start()

    def _relay(self):
        import tty

        tty.setraw(self._slaves[0])
        tty.setraw(self._slaves[1])
        pairs = {self._m1: self._m2, self._m2: self._m1}
        while not self._stop:
            r, _, _ = select.select(list(pairs), [], [], 0.05)
            for fd in r:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    continue
                if data:
                    os.write(pairs[fd], data)

    def close(self):
        self._stop = True
        self._t.join(2)
        for fd in (self._m1, self._m2) + self._slaves:
            os.close(fd)


def _boot(tmp_path: Path, bd: dict):
    path = tmp_path / "board.json"
    path.write_text(json.dumps(bd))
    env = dict(os.environ, BLINKA_OS_AGNOSTIC="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(MAIN), "--board", str(path)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return out


def test_main_boots_on_blinka_and_the_host_connects(tmp_path):
    import magcam
    from magcam_fw import FIRMWARE_VERSION

    link = PtyPair()
    bd = agnostic_board(tmp_path)
    bd["link"]["port"] = link.firmware_port
    bd.pop("_path")
    bd.pop("_warnings")
    proc = _boot(tmp_path, bd)
    out = ""
    try:
        with magcam.connect(link.host_port, connect_timeout=15) as cam:
            assert cam.firmware == FIRMWARE_VERSION and cam.hello["mode"] == 0
            assert cam.descriptor["lens"]["position_max"] == 1000
            events = []
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                ev = cam.link.next_event(0.2)
                if ev is not None:
                    events.append(ev)
            by_type = {}
            for ev in events:
                by_type.setdefault(ev["type"], ev)
            # Hall on Dx_INPUT_TRUE and VBUS on the analog pin: attached, VBUS read through the HAL.
            assert by_type["attach"]["state"] == "attached", events[:8]
            assert by_type["power"]["mv"] == 4944 and by_type["power"]["ma"] == 0, by_type["power"]
            assert by_type["thermal"]["c"] == 25.0
            assert "encoder" in by_type  # the toggling ring pin, sampled by the HAL's poller
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # stable_ms = 1000: the boot is marked clean
            state = json.loads((tmp_path / "boot.json").read_text())
            if state["unclean"] == 0:
                break
            time.sleep(0.2)
        assert state == {"boots": 1, "unclean": 0, "reason": None}, state
    finally:
        out = _stop(proc)
        link.close()
    assert "magcam: board blinka-os-agnostic" in out, out
    assert "no hardware watchdog" not in out  # watchdog_ms 0: none asked for


def test_main_comes_up_in_safe_mode_on_a_bad_pin(tmp_path):
    import magcam

    link = PtyPair()
    bd = agnostic_board(tmp_path)
    bd["pins"]["hall"] = "D99"
    bd["link"]["port"] = link.firmware_port
    bd.pop("_path")
    bd.pop("_warnings")
    proc = _boot(tmp_path, bd)
    try:
        with magcam.connect(link.host_port, connect_timeout=15) as cam:
            assert cam.descriptor["model"]  # the link is up in safe mode
    finally:
        out = _stop(proc)
        link.close()
    assert "magcam: board error: %s: pins.hall: this board has no pin 'D99'" % (tmp_path / "board.json") in out, out
    assert "magcam: SAFE MODE: " in out, out
