"""Hardware-in-the-loop: the HAL on a real prototype, through the board's raw REPL.

Loopback wiring (the board file's ``test_loopback`` names three spare output pins):

    drive_a    -> ring_a        (jumper; the encoder itself disconnected)
    drive_b    -> ring_b
    drive_hall -> hall          (the Hall sensor disconnected; on an analog Hall input the
                                 3.3 V / 0 V levels are far past both thresholds)

``test_ring_counts_and_hall_attach_over_loopback`` generates quadrature on drive_a/b (one line
at a time, 400 transitions forward, 200 back) and toggles drive_hall, and checks the HAL's ring
counter (``machine.Encoder``, IRQ decoder or ``rotaryio`` as the board file says) and Hall
input. The I2C and board-identity tests need the real module wiring (INA2xx, TMP117).

    pytest tests/hardware --port /dev/ttyACM0 --board boards/rpi-pico.json [--sync]
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.hardware

FORWARD = (0, 1, 3, 2)  # (A << 1) | B through one quadrature cycle


def loopback_script(bd: dict, forward: int = 400, back: int = 200) -> str:
    """The script the board runs: build the HAL from ``bd`` without its I2C chips (a bare dev
    board has none), drive the loopback pins, print one JSON line of results."""
    trimmed = {k: v for k, v in bd.items() if not k.startswith("_")}
    trimmed["features"] = [f for f in bd["features"] if f not in ("power_monitor", "temperature")]
    trimmed["pins"] = {k: v for k, v in bd["pins"].items() if k not in ("i2c_sda", "i2c_scl")}
    lb = bd["test_loopback"]
    hall = bd["hall"]
    active = 0 if hall.get("active", "high") == "low" else 1
    if hall["kind"] == "adc":
        active = 1 if hall["on_mv"] > hall["off_mv"] else 0
    if bd["runtime"] == "circuitpython":
        setup = (
            "import board, digitalio\n"
            "from magcam_fw.hal_circuitpython import CircuitPythonHal as Hal\n"
            "def out(name):\n"
            "    d = digitalio.DigitalInOut(getattr(board, name)); d.switch_to_output(value=False)\n"
            "    return lambda v: setattr(d, 'value', bool(v))\n"
        )
    else:
        setup = (
            "from machine import Pin\n"
            "from magcam_fw.hal_machine import MachineHal as Hal\n"
            "def out(n):\n"
            "    return Pin(n, Pin.OUT, value=0).value\n"
        )
    return setup + (
        "import json, time\n"
        "from magcam_fw.board import validate\n"
        "bd = json.loads(%r)\n"
        "validate(bd, 'loopback')\n"
        "A, B, H = out(%r), out(%r), out(%r)\n"
        "H(%d)\n"
        "hal = Hal(bd)\n"
        "FWD = (0, 1, 3, 2)\n"
        "st = [0]\n"
        "def move(n, d):\n"
        "    for _ in range(n):\n"
        "        st[0] = (st[0] + d) %% 4\n"
        "        s = FWD[st[0]]\n"
        "        A(s >> 1); B(s & 1)\n"
        "        time.sleep(0.0005)\n"
        "        if hasattr(hal, 'poll'): hal.poll()\n"
        "r0 = hal.ring.raw()\n"
        "move(%d, 1); time.sleep(0.01); r1 = hal.ring.raw()\n"
        "move(%d, -1); time.sleep(0.01); r2 = hal.ring.raw()\n"
        "H(%d); time.sleep(0.01); h_on = hal.hall.value()\n"
        "H(%d); time.sleep(0.01); h_off = hal.hall.value()\n"
        "print(json.dumps({'r0': r0, 'r1': r1, 'r2': r2, 'h_on': h_on, 'h_off': h_off,\n"
        "                  'glitches': hal.ring.glitches, 'vbus_mv': hal.vbus_mv()}))\n"
    ) % (json.dumps(trimmed), lb["drive_a"], lb["drive_b"], lb["drive_hall"], 1 - active, forward, back,
         active, 1 - active)


def test_ring_counts_and_hall_attach_over_loopback(repl, board_def):
    if "test_loopback" not in board_def:
        pytest.fail("%s has no test_loopback section (drive_a, drive_b, drive_hall)" % board_def["_path"])
    out = repl.exec(loopback_script(board_def), timeout=30)
    res = json.loads(out.strip().splitlines()[-1])
    reverse = -1 if board_def["ring"].get("reverse") else 1
    assert res["r1"] - res["r0"] == 400 * reverse, res
    assert res["r2"] - res["r1"] == -200 * reverse, res
    assert res["glitches"] == 0, res
    assert res["h_on"] == 1 and res["h_off"] == 0, res


def test_board_file_fits_this_board(repl, board_def):
    """The board file's ``match`` is in this board's machine string, and on MicroPython its
    flash layout agrees with the running firmware's filesystem partition."""
    out = repl.exec(
        "from magcam_fw.board import machine_name, runtime, load\n"
        "import json\n"
        "print(json.dumps([runtime(), machine_name()]))\n"
    )
    rt, machine = json.loads(out.strip().splitlines()[-1])
    assert rt == board_def["runtime"], (rt, board_def["runtime"])
    assert board_def["match"] in machine, (board_def["match"], machine)
    if rt == "micropython":
        bd = {k: v for k, v in board_def.items() if not k.startswith("_")}
        out = repl.exec(
            "import json\nfrom magcam_fw.hal_machine import check_flash\n"
            "print(json.dumps(check_flash(json.loads(%r))))\n" % json.dumps(bd)
        )
        assert json.loads(out.strip().splitlines()[-1]) == []


def test_i2c_chips_answer_with_sane_readings(repl, board_def):
    """The full HAL on the module: INA2xx and TMP117 answer; VBUS and room temperature."""
    bd = {k: v for k, v in board_def.items() if not k.startswith("_")}
    hal_mod = "hal_circuitpython import CircuitPythonHal" if bd["runtime"] == "circuitpython" \
        else "hal_machine import MachineHal"
    out = repl.exec(
        "import json\nfrom magcam_fw.%s as Hal\n"
        "hal = Hal(json.loads(%r))\n"
        "print(json.dumps([hal.read_power(), hal.read_temp_mc(), hal.bus_errors()]))\n"
        % (hal_mod, json.dumps(bd)),
        timeout=20,
    )
    (mv, ma), mc, errors = json.loads(out.strip().splitlines()[-1])
    assert errors == [0, 0], errors
    assert 4000 <= mv <= 5600, mv  # a phone's (or a USB port's) VBUS
    assert -50 <= ma <= 3000, ma
    assert 5000 <= mc <= 60000, mc
