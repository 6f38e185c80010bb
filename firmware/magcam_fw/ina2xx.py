"""TI INA219 and INA226 current/voltage monitors on I2C: bus voltage in mV, current in mA.

The bus is passed in: any object with MicroPython's ``machine.I2C`` memory methods
(``readfrom_mem_into(addr, reg, buf)``, ``writeto_mem(addr, reg, buf)``), such as
``machine.I2C``, ``machine.SoftI2C`` or the simulator's ``sim_i2c.VirtualI2C``.

Usage::

    from machine import I2C, Pin
    from magcam_fw.ina2xx import INA219

    i2c = I2C(0, scl=Pin(9), sda=Pin(8), freq=400000)
    ina = INA219(i2c, addr=0x40, shunt_mohm=100)   # or INA226(i2c, 0x40, shunt_mohm=20)
    ina.configure()          # OSError if nothing answers, or (INA226) the ids are wrong
    mv, ma = ina.read()      # bus voltage (mV) and signed current (mA, + into the load)

How the chips are set up (datasheets: TI SBOS448 INA219, SBOS547 INA226):

- Registers are 16 bits, most significant byte first. 0x00 configuration, 0x01 shunt voltage,
  0x02 bus voltage, 0x03 power, 0x04 current, 0x05 calibration; INA226 also 0xFE manufacturer
  id (0x5449, "TI") and 0xFF die id (0x2260: die 0x226, revision 0).
- The current register is ``shunt_voltage_register * CAL / 4096`` (INA219) or ``/ 2048``
  (INA226), in units of the current LSB chosen here; ``CAL = 0.04096 / (current_lsb * R)``
  (INA219; bit 0 is void, so CAL is even) or ``0.00512 / (current_lsb * R)`` (INA226, 15
  bits). The current LSB is the smallest 1-2-5 step (in uA) that fits ``max_ma`` in 15 bits,
  but never finer than the shunt ADC's own step (CAL <= 4096 resp. 2048), so the current
  register cannot overflow.
- INA219: 16 V bus range (bus register bits 15..3, 4 mV LSB), the smallest PGA range
  (40/80/160/320 mV, shunt LSB 10 uV) that holds ``max_ma * R``, 12-bit conversions averaged
  over 4 samples (2.13 ms each), continuous shunt and bus: a fresh reading every 4.3 ms.
- INA226: fixed +-81.92 mV shunt range (2.5 uV LSB), bus LSB 1.25 mV, 4-sample average,
  1.1 ms conversions, continuous shunt and bus: a fresh reading every 8.8 ms.

``full_scale_ma`` is the largest current the chip can show with this shunt: a real current
above it reads as (about) full scale. Keep it above the rail's ``inrush_ma``: the INA226's
81.92 mV range needs a shunt of at most 25 mOhm for 3 A; the INA219 at 320 mV takes 100 mOhm.

``read()`` does two register reads into one preallocated buffer and integer maths; the only
allocation is its result tuple. A chip that reset itself (a brownout) forgets its calibration
and reads 0 mA: ``verify()`` (cheap enough for once a second) checks and reprograms it.
"""

from magcam_fw.compat import const

REG_CONFIG = const(0x00)
REG_SHUNT = const(0x01)
REG_BUS = const(0x02)
REG_POWER = const(0x03)
REG_CURRENT = const(0x04)
REG_CALIBRATION = const(0x05)
REG_MASK_ENABLE = const(0x06)
REG_ALERT_LIMIT = const(0x07)
REG_MANUFACTURER_ID = const(0xFE)
REG_DIE_ID = const(0xFF)

TI_MANUFACTURER_ID = const(0x5449)
INA226_DIE_ID = const(0x226)  # die id register bits 15..4; bits 3..0 are the revision

# INA219 configuration fields.
_219_BRNG_16V = const(0x0000)
_219_PG_SHIFT = const(11)
_219_ADC_12BIT_4X = const(0b1010)  # 12-bit, 4 samples averaged, 2.13 ms
_219_MODE_CONT = const(0b111)  # shunt and bus, continuous
# INA226 configuration fields (bits 14..12 are fixed at 0b100).
_226_FIXED = const(0x4000)
_226_AVG_4 = const(0b001)
_226_CT_1100US = const(0b100)
_226_MODE_CONT = const(0b111)


def _lsb_ua(max_ma, mohm, factor, cal_max):
    """Smallest 1-2-5 current LSB (uA) with max_ma in 15 bits and CAL = factor/(lsb*R) <= cal_max."""
    need = (max_ma * 1000 + 32766) // 32767
    decade = 1
    while decade < 100000000:
        for m in (1, 2, 5):
            lsb = decade * m
            if lsb >= need and factor // (lsb * mohm) <= cal_max:
                return lsb
        decade *= 10
    raise ValueError("no current LSB for max_ma=%d, shunt %d mOhm" % (max_ma, mohm))


class _INA2xx:
    _NAME = "INA2xx"

    def __init__(self, i2c, addr, shunt_mohm):
        if shunt_mohm <= 0:
            raise ValueError("shunt_mohm must be positive")
        self._i2c = i2c
        self.addr = addr
        self.shunt_mohm = shunt_mohm
        self._buf = bytearray(2)
        self._ready = False
        self.mv = 0
        self.ma = 0

    def _fail(self, what, e):
        return OSError("%s at 0x%02x: %s failed: I2C error %s (wiring? address?)" % (self._NAME, self.addr, what, e))

    def _read(self, reg):
        """Unsigned 16-bit register."""
        b = self._buf
        try:
            self._i2c.readfrom_mem_into(self.addr, reg, b)
        except OSError as e:
            raise self._fail("reading register 0x%02x" % reg, e)
        return (b[0] << 8) | b[1]

    def _read_signed(self, reg):
        v = self._read(reg)
        return v - 0x10000 if v & 0x8000 else v

    def _write(self, reg, value):
        b = self._buf
        b[0] = (value >> 8) & 0xFF
        b[1] = value & 0xFF
        try:
            self._i2c.writeto_mem(self.addr, reg, b)
        except OSError as e:
            raise self._fail("writing register 0x%02x" % reg, e)

    def _calibrate(self, max_ma):
        """Set ``max_ma``, the current LSB and calibration for it (see the module doc), and the
        LSB the calibration really gives, in 0.1 uA (integers only)."""
        mohm = self.shunt_mohm
        self.max_ma = max_ma
        self.current_lsb_ua = _lsb_ua(max_ma, mohm, self._FACTOR, self._CAL_MAX)
        self.calibration = (self._FACTOR // (self.current_lsb_ua * mohm)) & self._CAL_MASK
        if not self.calibration:
            raise ValueError("shunt too large for %s calibration" % self._NAME)
        self._lsb_dua = (self._FACTOR * 10 + self.calibration * mohm // 2) // (self.calibration * mohm)

    def configure(self):
        """Write configuration and calibration, read both back (OSError if they do not stick)."""
        self._write(REG_CONFIG, self.config_value)
        self._write(REG_CALIBRATION, self.calibration)
        got = self._read(REG_CONFIG)
        cal = self._read(REG_CALIBRATION)
        if got != self.config_value or cal != self.calibration:
            raise OSError(
                "%s at 0x%02x: wrote config 0x%04x / calibration 0x%04x, read back 0x%04x / 0x%04x: not an %s?"
                % (self._NAME, self.addr, self.config_value, self.calibration, got, cal, self._NAME)
            )
        self._ready = True

    def verify(self):
        """True if the chip still holds our configuration; otherwise reprogram it, return False."""
        if self._ready and self._read(REG_CONFIG) == self.config_value and self._read(REG_CALIBRATION) == self.calibration:
            return True
        self.configure()
        return False

    def read(self):
        """(bus mV, current mA), both ints; current signed (+ from IN+ to IN-)."""
        if not self._ready:
            self.configure()
        mv = self._bus_mv(self._read(REG_BUS))
        x = self._read_signed(REG_CURRENT) * self._lsb_dua  # 0.1 uA units
        # Round half away from zero, the same for both signs.
        ma = (x + 5000) // 10000 if x >= 0 else -((5000 - x) // 10000)
        self.mv = mv
        self.ma = ma
        return mv, ma


class INA219(_INA2xx):
    """INA219: 0-16 V bus (4 mV), PGA shunt ranges 40..320 mV (10 uV); no id registers."""

    _NAME = "INA219"
    _FACTOR = 40960000  # 0.04096 / (lsb * R) with lsb in uA and R in mOhm
    _CAL_MAX = 4096
    _CAL_MASK = 0xFFFE  # bit 0 is void

    def __init__(self, i2c, addr=0x40, shunt_mohm=100, max_ma=None):
        super().__init__(i2c, addr, shunt_mohm)
        if max_ma is None:
            max_ma = 320000 // shunt_mohm  # the widest PGA range
        uv = max_ma * shunt_mohm
        pg = 0
        while pg < 3 and uv > (40000 << pg):
            pg += 1
        self.pga = pg  # 0..3: 40, 80, 160, 320 mV
        self.full_scale_ma = (40000 << pg) // shunt_mohm
        self._calibrate(max_ma if max_ma < self.full_scale_ma else self.full_scale_ma)
        self.config_value = (
            _219_BRNG_16V
            | (pg << _219_PG_SHIFT)
            | (_219_ADC_12BIT_4X << 7)
            | (_219_ADC_12BIT_4X << 3)
            | _219_MODE_CONT
        )

    @staticmethod
    def _bus_mv(reg):
        return (reg >> 3) * 4  # bits 15..3, 4 mV; bit 1 conversion ready, bit 0 math overflow


class INA226(_INA2xx):
    """INA226: 0-36 V bus (1.25 mV), +-81.92 mV shunt (2.5 uV), manufacturer and die ids."""

    _NAME = "INA226"
    _FACTOR = 5120000  # 0.00512 / (lsb * R) with lsb in uA and R in mOhm
    _CAL_MAX = 2048
    _CAL_MASK = 0x7FFF  # 15 bits

    def __init__(self, i2c, addr=0x40, shunt_mohm=100, max_ma=None):
        super().__init__(i2c, addr, shunt_mohm)
        self.full_scale_ma = 81920 // shunt_mohm
        if max_ma is None or max_ma > self.full_scale_ma:
            max_ma = self.full_scale_ma
        self._calibrate(max_ma)
        self.config_value = _226_FIXED | (_226_AVG_4 << 9) | (_226_CT_1100US << 6) | (_226_CT_1100US << 3) | _226_MODE_CONT

    def configure(self):
        """Check the ids (OSError if this is not an INA226), then write configuration and calibration."""
        mfr = self._read(REG_MANUFACTURER_ID)
        die = self._read(REG_DIE_ID)
        if mfr != TI_MANUFACTURER_ID or (die >> 4) != INA226_DIE_ID:
            raise OSError(
                "INA226 at 0x%02x: manufacturer id 0x%04x, die id 0x%04x (want 0x5449, 0x226x): not an INA226"
                % (self.addr, mfr, die)
            )
        _INA2xx.configure(self)

    @staticmethod
    def _bus_mv(reg):
        return (reg * 5 + 2) >> 2  # 1.25 mV, rounded
