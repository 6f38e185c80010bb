"""Safe mode and the boot entry point, on the unix port and CPython alike, with temp files.

- ``BootState``: the persisted crash counter (file and NVM), safe mode after N unclean boots,
  power-on resets, atomic writes, unreadable / unwritable state;
- ``SafeHal`` with the real ``App``: the rail never closes, the control tick feeds the watchdog,
  ``supervise`` marks the boot stable only while the control loop is alive;
- firmware/main.py's pieces: board selection, staying in the REPL, the crash path, a whole
  crash loop ending in safe mode.
"""

import json
import os

import main as boot_main
from _util import REPO, OutputTransport, raises, tohex
from magcam_fw.board import BoardError
from magcam_fw.compat import asyncio, sleep_ms
from magcam_fw.safemode import BootState, SafeHal, exc_text, supervise, traceback_text
from test_board import _NS, Reset, _read_board, stand_in_machine

LOGS = []
boot_main.log = LOGS.append  # main.py's console lines, kept for the assertions


def _tmpdir():
    d = "/tmp/magcam_test_" + tohex(os.urandom(6))
    os.mkdir(d)
    return d


def _rmtree(d):
    for n in os.listdir(d):
        p = d + "/" + n
        if os.stat(p)[0] & 0x4000:
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(d)


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _read(path):
    with open(path) as f:
        return f.read()


# ---- BootState ---------------------------------------------------------------------------------


def test_first_boot_is_normal_and_persists():
    d = _tmpdir()
    try:
        s = BootState(d + "/boot.json")
        assert s.begin() == (False, None)
        assert s.unclean == 1 and s.boots == 1 and s.persistent
        assert sorted(os.listdir(d)) == ["boot.json"]  # written via a temp file, renamed
        assert json.loads(_read(d + "/boot.json")) == {"boots": 1, "unclean": 1, "reason": None}
    finally:
        _rmtree(d)


def test_three_crashes_in_a_row_enter_safe_mode_once():
    d = _tmpdir()
    try:
        path = d + "/boot.json"
        for i in range(3):
            s = BootState(path)
            safe, why = s.begin("soft reset")
            assert not safe
            if i:
                assert why == "ValueError: crash %d" % (i - 1), why  # the previous boot's crash
            s.record_crash("ValueError: crash %d" % i)
        s = BootState(path)
        safe, why = s.begin("soft reset")
        assert safe and s.safe
        assert why == "3 boots in a row ended without a clean run; last: ValueError: crash 2", why
        # Safe mode restarts the count: after a reset, normal mode is tried again.
        s = BootState(path)
        assert s.begin("soft reset") == (False, None)
        assert s.boots == 5
    finally:
        _rmtree(d)


def test_mark_stable_resets_the_count_and_the_reason():
    d = _tmpdir()
    try:
        path = d + "/boot.json"
        for _ in range(2):
            s = BootState(path)
            s.begin()
            s.record_crash("boom")
        s = BootState(path)
        assert s.begin() == (False, "boom")
        s.mark_stable()
        assert s.unclean == 0 and s.reason is None
        for _ in range(3):  # three more crashes are needed again
            s = BootState(path)
            assert not s.begin()[0]
        assert BootState(path).begin()[0]
    finally:
        _rmtree(d)


def test_watchdog_resets_count_and_power_on_does_not():
    d = _tmpdir()
    try:
        path = d + "/boot.json"
        BootState(path).begin("power-on")
        s = BootState(path)
        assert s.begin("watchdog") == (False, "watchdog")  # no crash text: the reset cause
        BootState(path).begin("watchdog")
        s = BootState(path)
        assert s.begin("power-on") == (False, None)  # unplugged and plugged again: not a crash
        assert s.unclean == 1
        for _ in range(2):
            BootState(path).begin("watchdog")
        safe, why = BootState(path).begin("watchdog")
        assert safe and why.endswith("last: watchdog"), why
    finally:
        _rmtree(d)


def test_threshold_is_configurable():
    d = _tmpdir()
    try:
        path = d + "/boot.json"
        assert BootState(path, after_crashes=1).begin() == (False, None)
        assert BootState(path, after_crashes=1).begin("hard reset")[0]
        raises(ValueError, BootState, path, 0)
    finally:
        _rmtree(d)


def test_unreadable_state_starts_afresh():
    d = _tmpdir()
    try:
        path = d + "/boot.json"
        _write(path, "{not json")
        s = BootState(path)
        assert s.begin() == (False, None) and "unreadable" in s.error
        _write(path, '{"boots": "x", "unclean": -4, "reason": 7}')
        s = BootState(path)
        assert s.begin() == (False, None) and s.boots == 1
    finally:
        _rmtree(d)


def test_unwritable_state_lives_in_ram():
    s = BootState("/nonexistent_dir_magcam/boot.json")
    assert s.begin() == (False, None)
    assert not s.persistent and "/nonexistent_dir_magcam/boot.json" in s.error
    s.record_crash("x")  # never raises
    s.mark_stable()
    assert s.unclean == 0


def test_nvm_backend():
    nvm = bytearray(b"\xff" * 512)
    for i in range(3):
        s = BootState("nvm", nvm=nvm, nvm_offset=100)
        assert not s.begin("watchdog")[0]
        s.record_crash("E%d" % i)
    s = BootState("nvm", nvm=nvm, nvm_offset=100)
    safe, why = s.begin("watchdog")
    assert safe and why.endswith("last: E2"), why
    assert nvm[:100] == b"\xff" * 100 and bytes(nvm[100:104]) == b"MCBS"
    s = BootState("nvm", nvm=nvm, nvm_offset=100, nvm_size=40)
    s.record_crash("x" * 100)  # does not fit: kept in RAM, reported
    assert not s.persistent and "NVM" in s.error


def test_exc_text_is_one_line_with_the_innermost_frame():
    def inner():
        raise ValueError("the ina219 said no")

    try:
        inner()
    except ValueError as e:
        text = exc_text(e)
        short = exc_text(e, 52)
        assert "Traceback" in traceback_text(e) and "inner" in traceback_text(e)
    assert text.startswith("ValueError: the ina219 said no (at test_safemode.py:"), text
    assert text.endswith(" in inner)") and "\n" not in text, text
    assert len(short) <= 52 and short.startswith("ValueError: t") and "... (at test_safemode.py:" in short and short.endswith(" in inner)"), short
    assert exc_text(KeyError()) == "KeyError"  # never raised: no traceback, no location


# ---- SafeHal, the app and the supervisor -------------------------------------------------------


def _descriptor():
    return _read(REPO + "/firmware/magcam_fw/descriptor.json")


def test_safe_hal_holds_the_rail_open_and_touches_nothing_else():
    from magcam_fw.hal_machine import Platform

    bd = _read_board("rpi-pico.json")
    bd["load_switch"]["active"] = "low"
    m = stand_in_machine()
    hal = SafeHal("3 boots in a row ...", Platform(bd, m), "/")
    assert list(m.pins) == [6] and m.pins[6].value() == 1  # open (active low)
    hal.set_rail(True)
    assert m.pins[6].value() == 1 and not hal.rail_on
    assert hal.hall.value() == 0 and hal.vbus.value() == 0  # reads as detached
    wdt = hal.watchdog(4000)
    assert hal.read_power() == (0, 0) and wdt.fed == 2
    assert hal.read_temp_mc() == 25000 and hal.sensor is None and hal.tasks() == []
    raises(Reset, hal.reset)
    bare = SafeHal("no board file")  # nothing known about the board: drives nothing
    bare.set_rail(True)
    assert bare.watchdog(1000) is None and bare.read_power() == (0, 0)


def test_supervise_marks_stable_while_the_real_app_runs_on_safe_hal():
    from magcam_fw.app import App

    d = _tmpdir()
    try:
        state = BootState(d + "/boot.json")
        state.begin()
        hal = SafeHal("testing", None, d)
        t = OutputTransport()
        app = App(hal, t, _descriptor())

        async def stop_later():
            await sleep_ms(600)
            app.running = False

        async def go():
            asyncio.create_task(stop_later())
            await supervise(app, hal, state, 250, sleep_ms, poll_ms=50)

        asyncio.run(go())
        assert state.unclean == 0 and BootState(d + "/boot.json").begin() == (False, None)
        assert hal.last_feed is not None and not hal.rail_on
        assert len(t.out) > 0  # HELLO beacons: the link is up in safe mode
    finally:
        _rmtree(d)


def test_supervise_does_not_mark_a_stalled_loop_stable():
    d = _tmpdir()
    try:
        state = BootState(d + "/boot.json")
        state.begin()
        hal = SafeHal("testing")

        class StalledApp:
            async def run(self):
                hal.feed()  # one tick, then the control loop never feeds again
                await sleep_ms(500)

        asyncio.run(supervise(StalledApp(), hal, state, 200, sleep_ms, poll_ms=50))
        assert state.unclean == 1
    finally:
        _rmtree(d)


# ---- firmware/main.py --------------------------------------------------------------------------


def test_main_finds_the_explicit_board_file_first():
    d = _tmpdir()
    try:
        os.mkdir(d + "/boards")
        _write(d + "/board.json", _read(REPO + "/boards/rpi-pico.json"))
        _write(d + "/boards/esp.json", _read(REPO + "/boards/esp32s3-devkitc-1.json"))
        bd = boot_main.find_board("micropython", "Raspberry Pi Pico with RP2040", d)
        assert bd["name"] == "rpi-pico" and bd["_path"] == d + "/board.json"
        # ... but only on the machine it is for: a Pico's pin map must not drive an ESP32-S3.
        e = raises(BoardError, boot_main.find_board, "micropython", "Generic ESP32S3 module with ESP32S3", d)
        assert str(e).startswith(d + "/board.json is for 'rpi-pico' (match 'Raspberry Pi Pico with RP2040'), not this "
                                     "machine ('Generic ESP32S3 module with ESP32S3')"), e
        e = raises(BoardError, boot_main.find_board, "circuitpython", "Raspberry Pi Pico with RP2040", d)
        assert "is a micropython board file (rpi-pico), but this device runs circuitpython" in str(e), e
        os.remove(d + "/board.json")
        bd = boot_main.find_board("micropython", "Generic ESP32S3 module with ESP32S3", d)
        assert bd["name"] == "esp32s3-devkitc-1" and bd["_path"] == d + "/boards/esp.json"
        e = raises(BoardError, boot_main.find_board, "micropython", "Raspberry Pi Pico with RP2040", d)
        assert "no board file matches" in str(e) and "esp.json" in str(e), e
        _write(d + "/boards/broken.json", "{")
        e = raises(BoardError, boot_main.find_board, "micropython", "x", d)
        assert str(e).startswith(d + "/boards/broken.json: not a readable board file"), e
    finally:
        _rmtree(d)


def test_main_reports_a_bad_board_file_by_role_and_pin():
    d = _tmpdir()
    try:
        bd = _read_board("rpi-pico.json")
        bd["pins"]["hall"] = 3
        _write(d + "/board.json", json.dumps(bd))
        e = raises(BoardError, boot_main.find_board, "micropython", "Raspberry Pi Pico with RP2040", d)
        assert str(e) == d + "/board.json: pins.hall: GPIO 3 is already used by pins.ring_b", e
        e = raises(BoardError, boot_main.find_board, "micropython", "anything", d + "/empty")
        assert "no board file" in str(e)
        pi = "Raspberry Pi 4 Model B Rev 1.4"
        bd = boot_main.find_board("blinka", pi, d, ["--board", REPO + "/boards/rpi-blinka.json"])
        assert bd["name"] == "rpi-blinka"
        bd = boot_main.find_board("blinka", pi, d, [], {"MAGCAM_BOARD": REPO + "/boards/rpi-blinka.json"})
        assert bd["name"] == "rpi-blinka"
    finally:
        _rmtree(d)


def test_main_stays_in_the_repl_when_asked():
    bd = _read_board("esp32s3-devkitc-1.json")
    slept = []
    no = lambda p: False
    assert boot_main.stay_in_repl("circuitpython", bd) is None  # its console stays free anyway
    assert "magcam_noapp" in boot_main.stay_in_repl("micropython", bd, exists=lambda p: p == "/magcam_noapp")
    m = stand_in_machine()
    m.levels[0] = 0  # BOOT held: GPIO0 low
    assert "GPIO 0" in boot_main.stay_in_repl("micropython", bd, machine=m, sleep_ms=slept.append, exists=no)
    m.levels[0] = 1
    assert boot_main.stay_in_repl("micropython", bd, machine=m, sleep_ms=slept.append, exists=no) is None
    assert slept == [1000] and m.pins[0].pull == m.Pin.PULL_UP
    pico = _read_board("rpi-pico.json")
    rp2 = _NS()
    rp2.bootsel_button = lambda: 1
    assert "BOOTSEL" in boot_main.stay_in_repl("micropython", pico, rp2=rp2, exists=no)
    rp2.bootsel_button = lambda: 0
    assert boot_main.stay_in_repl("micropython", pico, rp2=rp2, sleep_ms=slept.append, exists=no) is None


def test_a_crash_loop_ends_in_safe_mode():
    """What main() does on each boot, with the stand-in machine: build the HAL, crash, reset."""

    d = _tmpdir()
    try:
        bd = _read_board("rpi-pico.json")
        bd["safe_mode"]["state_file"] = d + "/boot.json"
        for boot in range(4):
            m = stand_in_machine()
            m.cause = m.SOFT_RESET
            platform = boot_main.make_platform("micropython", bd, machine=m)
            state = boot_main.make_state("micropython", bd)
            safe, why = state.begin(platform.reset_cause())
            if boot < 3:
                assert not safe
                try:
                    raise OSError("INA219 at 0x40: reading register 0x02 failed")
                except OSError as e:
                    raises(Reset, boot_main.crashed, e, state, platform)
            else:
                assert safe, why
                assert why.startswith("3 boots in a row ended without a clean run; last: OSError: INA219 at 0x40: "
                                      "reading register 0x02 failed (at test_safemode.py:"), why
                hal = SafeHal(why, platform)
                assert m.pins[6].value() == 0 and hal.safe_reason == why
        assert LOGS[-2].startswith("crashed: OSError: INA219 at 0x40: reading register 0x02 failed (at "), LOGS[-2]
        assert LOGS[-1].startswith("Traceback"), LOGS[-1]
        # In safe mode a crash is recorded but does not reset.
        try:
            raise RuntimeError("in safe mode")
        except RuntimeError as e:
            boot_main.crashed(e, state, platform, reset=False)
        assert "in safe mode" in json.loads(_read(d + "/boot.json"))["reason"]
    finally:
        _rmtree(d)


def test_main_state_and_descriptor_helpers():
    nvm = bytearray(256)
    s = boot_main.make_state("circuitpython", _read_board("feather-rp2040-circuitpython.json"), nvm=nvm)
    assert s.begin() == (False, None) and bytes(nvm[:4]) == b"MCBS"
    s = boot_main.make_state("micropython", None)
    assert s.path == "/magcam_boot.json" and s.after_crashes == 3
    d = _tmpdir()
    try:
        _write(d + "/descriptor.json", "{broken")
        text, why = boot_main.descriptor_text(d)
        assert text == _descriptor() and why == "not JSON"  # unusable: the factory one, and why
        mine = json.loads(_descriptor())
        mine["serial"] = "MC-TEST-1"
        _write(d + "/descriptor.json", json.dumps(mine))
        text, why = boot_main.descriptor_text(d)
        assert json.loads(text)["serial"] == "MC-TEST-1" and why is None
    finally:
        _rmtree(d)
