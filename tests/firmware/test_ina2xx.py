"""INA219 / INA226 drivers against the virtual chips on the virtual I2C bus.

The expected register contents are worked out here from the datasheets' formulas (TI SBOS448
INA219, SBOS547 INA226), independently of the driver's integer arithmetic.
"""

import sys

from _util import raises
from magcam_fw.ina2xx import INA219, INA226
from magcam_fw.sim_i2c import VirtualI2C, VirtualINA219, VirtualINA226


def _bus(chip_cls, addr=0x40, **kw):
    i2c = VirtualI2C()
    chip = i2c.add(addr, chip_cls(**kw))
    return i2c, chip


def _cal219(lsb_a, r_ohm):
    return int(0.04096 / (lsb_a * r_ohm) + 1e-9) & 0xFFFE  # trunc; bit 0 is void


def _cal226(lsb_a, r_ohm):
    return int(0.00512 / (lsb_a * r_ohm) + 1e-9)


# ---------------------------------------------------------------------------------- INA219


def test_ina219_configure_writes_the_datasheet_registers():
    for mohm, pg, lsb_ua in ((100, 3, 100), (10, 3, 1000)):
        i2c, chip = _bus(VirtualINA219, shunt_mohm=mohm)
        ina = INA219(i2c, 0x40, shunt_mohm=mohm)
        ina.configure()
        c = chip.config
        assert c & 0x8000 == 0  # no reset left set
        assert c & 0x2000 == 0  # BRNG: 16 V bus range
        assert (c >> 11) & 3 == pg  # PGA /8: +-320 mV, the range the default max_ma needs
        assert (c >> 7) & 0xF == 0b1010  # BADC: 12 bit, 4 samples averaged
        assert (c >> 3) & 0xF == 0b1010  # SADC: the same
        assert c & 7 == 0b111  # shunt and bus, continuous
        assert c == 0x1D57
        assert ina.current_lsb_ua == lsb_ua
        assert chip.calibration == _cal219(lsb_ua * 1e-6, mohm / 1000.0) == 4096, chip.calibration
        assert [r for r, _ in chip.writes] == [0x00, 0x05]
        assert ina.full_scale_ma == 320000 // mohm


def test_ina219_pga_follows_max_ma():
    for max_ma, pg in ((400, 0), (401, 1), (800, 1), (1600, 2), (3200, 3)):
        i2c, chip = _bus(VirtualINA219, shunt_mohm=100)
        ina = INA219(i2c, shunt_mohm=100, max_ma=max_ma)
        ina.configure()
        assert (chip.config >> 11) & 3 == pg, (max_ma, chip.config)
        assert ina.full_scale_ma == (40 << pg) * 10
    # 20 mOhm, 4 A: 80 mV, PGA /2; a 0.5 mA step (the shunt ADC's 10 uV / 20 mOhm).
    i2c, chip = _bus(VirtualINA219, shunt_mohm=20)
    ina = INA219(i2c, shunt_mohm=20, max_ma=4000)
    ina.configure()
    assert (chip.config >> 11) & 3 == 1 and ina.current_lsb_ua == 500
    assert chip.calibration == _cal219(500e-6, 0.020) == 4096


def test_ina219_reads_known_values_both_shunts():
    cases = {
        100: ((5000, 250, 5000, 250), (4963, 250, 4964, 250), (4400, 1500, 4400, 1500),
              (5100, -1234, 5100, -1234), (0, 0, 0, 0), (12000, 3, 12000, 3), (5000, -1, 5000, -1)),
        10: ((5000, 250, 5000, 250), (4961, 2600, 4960, 2600), (5000, -1234, 5000, -1234),
             (5000, 12345, 5000, 12345)),
    }
    for mohm, rows in cases.items():
        i2c, chip = _bus(VirtualINA219, shunt_mohm=mohm)
        ina = INA219(i2c, shunt_mohm=mohm)
        ina.configure()
        for mv, ma, want_mv, want_ma in rows:
            chip.set(mv, ma)
            got = ina.read()
            assert got == (want_mv, want_ma), (mohm, mv, ma, got)
            assert (ina.mv, ina.ma) == got
            assert isinstance(got[0], int) and isinstance(got[1], int)


def test_ina219_odd_shunt_uses_the_truncated_calibration():
    # 15 mOhm: CAL = trunc(0.04096 / (1 mA * 0.015)) = 2730, so the real LSB is 1.00024 mA and
    # the chip truncates: readings are within 1 mA, computed with the CAL the chip holds.
    i2c, chip = _bus(VirtualINA219, shunt_mohm=15)
    ina = INA219(i2c, shunt_mohm=15)
    ina.configure()
    assert ina.current_lsb_ua == 1000 and chip.calibration == _cal219(1e-3, 0.015) == 2730
    for ma in (0, 1, 250, 1234, 2600, 9999, -1, -777, -4000):
        chip.set(5000, ma)
        got = ina.read()[1]
        assert abs(got - ma) <= 1, (ma, got)


def test_ina219_current_beyond_the_range_reads_full_scale():
    i2c, chip = _bus(VirtualINA219, shunt_mohm=100)
    ina = INA219(i2c, shunt_mohm=100)
    chip.set(5000, 9000)  # a short: 900 mV across the shunt, the ADC clips at 320 mV
    assert ina.read() == (5000, 3200)  # still far above any over-current limit
    chip.set(5000, -9000)
    assert ina.read()[1] == -3200


def test_ina219_read_configures_first_and_uses_the_written_calibration():
    i2c, chip = _bus(VirtualINA219, shunt_mohm=100)
    chip.set(5000, 250)
    # Before any calibration the chip's current register reads 0, as a real INA219 does.
    assert chip.current_register() == 0
    ina = INA219(i2c, shunt_mohm=100)
    assert ina.read() == (5000, 250)  # configured on first use
    assert chip.calibration == 4096
    # A driver that assumed another calibration would be off: the chip computes with its own.
    chip.calibration = 2048
    assert ina.read() == (5000, 125)


def test_ina219_verify_reprograms_a_chip_that_reset():
    i2c, chip = _bus(VirtualINA219, shunt_mohm=100)
    ina = INA219(i2c, shunt_mohm=100)
    ina.configure()
    chip.set(5000, 700)
    assert ina.verify() is True and ina.read() == (5000, 700)
    chip.write_reg(0x00, bytearray(b"\x80\x00"))  # brownout: the chip is back at power-on state
    assert chip.calibration == 0 and chip.config == 0x399F
    assert ina.read() == (5000, 0)  # what a forgotten calibration looks like
    assert ina.verify() is False
    assert ina.read() == (5000, 700) and ina.verify() is True


def test_ina219_absent_device_raises_oserror():
    i2c = VirtualI2C()
    i2c.add(0x41, VirtualINA219())
    ina = INA219(i2c, addr=0x40)
    e = raises(OSError, ina.configure)
    assert "INA219" in str(e) and "0x40" in str(e), str(e)
    e = raises(OSError, ina.read)
    assert "0x40" in str(e)
    # At its own address it works; and a device that goes away later raises too.
    ina = INA219(i2c, addr=0x41)
    ina.configure()
    i2c.remove(0x41)
    assert "0x41" in str(raises(OSError, ina.read))


def test_ina219_on_an_ina226_is_refused():
    i2c, chip = _bus(VirtualINA226, shunt_mohm=100)
    e = raises(OSError, INA219(i2c, shunt_mohm=100).configure)
    assert "not an INA219" in str(e), str(e)


# ---------------------------------------------------------------------------------- INA226


def test_ina226_configure_writes_the_datasheet_registers():
    for mohm, lsb_ua in ((100, 50), (20, 200), (10, 500)):
        i2c, chip = _bus(VirtualINA226, shunt_mohm=mohm)
        ina = INA226(i2c, 0x40, shunt_mohm=mohm)
        ina.configure()
        c = chip.config
        assert (c >> 9) & 7 == 0b001  # AVG: 4 samples
        assert (c >> 6) & 7 == 0b100  # VBUSCT: 1.1 ms
        assert (c >> 3) & 7 == 0b100  # VSHCT: 1.1 ms
        assert c & 7 == 0b111  # shunt and bus, continuous
        assert c == 0x4327
        assert ina.current_lsb_ua == lsb_ua
        want = _cal226(lsb_ua * 1e-6, mohm / 1000.0)
        assert chip.calibration == want, (mohm, chip.calibration, want)
        assert ina.full_scale_ma == 81920 // mohm  # 81.92 mV across the shunt
    assert _cal226(50e-6, 0.1) == 1024 and _cal226(200e-6, 0.02) == 1280


def test_ina226_reads_known_values_both_shunts():
    cases = {
        100: ((5000, 250, 5000, 250), (4963, 250, 4963, 250), (5000, -251, 5000, -251),
              (3300, 800, 3300, 800), (0, 0, 0, 0), (5001, 25, 5001, 25)),
        20: ((5000, 250, 5000, 250), (4963, 2600, 4963, 2600), (5000, -1234, 5000, -1234),
             (20000, 4000, 20000, 4000)),
    }
    for mohm, rows in cases.items():
        i2c, chip = _bus(VirtualINA226, shunt_mohm=mohm)
        ina = INA226(i2c, shunt_mohm=mohm)
        ina.configure()
        for mv, ma, want_mv, want_ma in rows:
            chip.set(mv, ma)
            assert ina.read() == (want_mv, want_ma), (mohm, mv, ma, ina.read())


def test_ina226_register_encoding_matches_the_datasheet():
    chip = VirtualINA226(shunt_mohm=100)
    chip.set(4963, 250)
    assert chip.bus_register() == 3970  # 4963 mV / 1.25 mV
    assert chip.shunt_register() == 10000  # 25 mV / 2.5 uV
    chip.set(4963, -250)
    buf = bytearray(2)
    chip.read_reg(0x01, buf)
    assert buf == bytearray(b"\xd8\xf0")  # -10000, two's complement, MSB first
    chip = VirtualINA219(shunt_mohm=100)
    chip.set(4964, -250)
    chip.read_reg(0x02, buf)
    assert (buf[0] << 8 | buf[1]) >> 3 == 1241 and buf[1] & 2  # 4 mV steps in bits 15..3, CNVR
    chip.read_reg(0x01, buf)
    assert buf == bytearray(b"\xf6\x3c")  # -2500 x 10 uV


def test_ina226_wrong_ids_raise_oserror():
    for mfr, die, what in ((0x1234, 0x2260, "manufacturer"), (0x5449, 0x2270, "die"), (0x5449, 0x0000, "die")):
        i2c, chip = _bus(VirtualINA226, shunt_mohm=100, manufacturer_id=mfr, die_id=die)
        e = raises(OSError, INA226(i2c, shunt_mohm=100).configure)
        assert "not an INA226" in str(e) and ("0x%04x" % mfr) in str(e), (what, str(e))
        assert chip.writes == []  # nothing written to a chip that is not ours
    # A later die revision (low nibble) is still an INA226.
    i2c, chip = _bus(VirtualINA226, shunt_mohm=100, die_id=0x2261)
    INA226(i2c, shunt_mohm=100).configure()
    # An INA219 has no id registers (reads 0 here): refused too.
    i2c, chip = _bus(VirtualINA219, shunt_mohm=100)
    assert "not an INA226" in str(raises(OSError, INA226(i2c, shunt_mohm=100).configure))


def test_ina226_absent_device_raises_oserror():
    i2c = VirtualI2C()
    e = raises(OSError, INA226(i2c, addr=0x45).configure)
    assert "INA226" in str(e) and "0x45" in str(e), str(e)


def test_ina226_other_address():
    i2c, chip = _bus(VirtualINA226, addr=0x44, shunt_mohm=20)
    ina = INA226(i2c, addr=0x44, shunt_mohm=20)
    chip.set(5050, 1500)
    assert ina.read() == (5050, 1500)


# ---------------------------------------------------------------------------------- the bus


def test_virtual_i2c_behaves_like_a_bus():
    i2c = VirtualI2C()
    assert i2c.scan() == []
    e = raises(OSError, i2c.readfrom_mem_into, 0x40, 0, bytearray(2))
    assert e.args[0] == 19  # ENODEV, as a NACK on MicroPython's machine.I2C
    raises(OSError, i2c.writeto_mem, 0x40, 0, b"\x00\x00")
    chip = i2c.add(0x40, VirtualINA226())
    assert i2c.scan() == [0x40]
    assert i2c.readfrom_mem(0x40, 0xFE, 2) == b"TI"  # 0x5449
    assert i2c.readfrom_mem(0x40, 0xFF, 2) == b"\x22\x60"
    assert i2c.readfrom_mem(0x40, 0x00, 2) == b"\x41\x27"  # power-on configuration
    i2c.writeto_mem(0x40, 0x05, b"\x04\x00")
    assert chip.calibration == 0x400
    i2c.writeto_mem(0x40, 0x00, b"\x80\x00")  # reset bit: registers back to defaults
    assert chip.calibration == 0 and chip.config == 0x4127


def test_ina_read_allocates_only_its_result_on_micropython():
    if sys.implementation.name != "micropython":
        return
    import gc

    i2c, chip = _bus(VirtualINA219, shunt_mohm=100)
    ina = INA219(i2c, shunt_mohm=100)
    ina.configure()
    chip.set(5000, 250)
    ina.read()
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _ in range(100):
            ina.read()
        used = gc.mem_alloc() - before
    finally:
        gc.enable()
    # The (mv, ma) tuple (32 bytes on a 64-bit build), nothing per register read.
    assert used <= 100 * 32 + 64, used


def test_ina226_20mohm_reads_every_whole_ma_exactly():
    # The pairing the simulator uses: 200 uA current LSB, 8 shunt counts per mA, CAL 1280, so
    # every whole mA up to full scale reads back unchanged; mV come in 1.25 mV steps.
    i2c, chip = _bus(VirtualINA226, shunt_mohm=20)
    ina = INA226(i2c, shunt_mohm=20)
    ina.configure()
    for ma in range(-4096, 4096, 7):
        chip.set(5000, ma)
        assert ina.read() == (5000, ma), ma
    for mv in range(0, 36000, 5):  # whole multiples of 1.25 mV: exact
        chip.set(mv, 250)
        assert ina.read()[0] == mv, mv
    for mv in range(4000, 5200):  # anything else: within the chip's half step
        chip.set(mv, 250)
        assert abs(ina.read()[0] - mv) <= 1, mv
    chip.set(5000, 6000)  # beyond 81.92 mV: the ADC clips at full scale
    assert ina.read()[1] == 4096
