"""The simulator's I2C bus and the chips on it, so the real drivers run against register models.

``VirtualI2C`` has the memory methods of MicroPython's ``machine.I2C``; an address with no
device raises ``OSError(19)`` (ENODEV), as a NACKed transfer does on a board.
``VirtualINA219`` / ``VirtualINA226`` hold the registers of the real parts: the sim HAL sets
the physical truth with ``set(mv, ma)``, and each register read encodes it the way the chip
does (ADC steps, PGA clipping, the current register computed from the shunt register and the
calibration the driver wrote, which reads 0 until a calibration is written, the reset bit).

Usage::

    from magcam_fw.ina2xx import INA219
    from magcam_fw.sim_i2c import VirtualI2C, VirtualINA219

    i2c = VirtualI2C()
    chip = i2c.add(0x40, VirtualINA219(shunt_mohm=100))
    ina = INA219(i2c, 0x40, shunt_mohm=100)
    ina.configure()
    chip.set(4963, 250)        # 4.963 V on the bus, 250 mA through the shunt
    ina.read()                 # -> (4964, 250): what the real chip would give (4 mV steps)
"""

_ENODEV = 19


def _div_round(a, b):
    """a / b rounded half away from zero (b > 0)."""
    if a >= 0:
        return (a + b // 2) // b
    return -((b // 2 - a) // b)


def _div_trunc(a, b):
    """a / b truncated towards zero, as the chips' integer multipliers do (b > 0)."""
    return a // b if a >= 0 else -((-a) // b)


def _clip(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


class VirtualI2C:
    def __init__(self):
        self._devices = {}

    def add(self, addr, device):
        """Put a device at an address; returns the device."""
        self._devices[addr] = device
        return device

    def remove(self, addr):
        self._devices.pop(addr, None)

    def scan(self):
        return sorted(self._devices)

    def _device(self, addr):
        dev = self._devices.get(addr)
        if dev is None:
            raise OSError(_ENODEV)
        return dev

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        self._device(addr).read_reg(memaddr, buf)

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self._device(addr).write_reg(memaddr, buf)


class _VirtualINA:
    """Both INAs' registers, 16 bits, MSB first: 0x00 configuration (bit 15 resets), 0x01
    shunt, 0x02 bus, 0x03 power, 0x04 current, 0x05 calibration. Subclasses give ``reset()``,
    the ``*_register()`` encodings, ``_CURRENT_DIV``, the bits a write keeps and any further
    registers (``_read_other`` / ``_write_other``)."""

    _CONFIG_FIXED = 0  # configuration bits that always read 1
    _CONFIG_MASK = 0xFFFF  # configuration bits a write stores
    _CAL_MASK = 0xFFFF

    def __init__(self, shunt_mohm=100):
        self.shunt_mohm = shunt_mohm
        self.mv = 0
        self.ma = 0
        self.writes = []  # (reg, value) as the driver wrote them
        self.reset()

    def set(self, mv, ma):
        """The physical truth: bus voltage (mV) and current through the shunt (mA, signed)."""
        self.mv = mv
        self.ma = ma

    def read_reg(self, reg, buf):
        v = self._value(reg) & 0xFFFF
        if len(buf):
            buf[0] = v >> 8
        if len(buf) > 1:
            buf[1] = v & 0xFF
        for i in range(2, len(buf)):
            buf[i] = 0xFF

    def write_reg(self, reg, buf):
        if len(buf) < 2:
            return  # a bare register-pointer write
        v = (buf[0] << 8) | buf[1]
        self.writes.append((reg, v))
        if reg == 0x00:
            if v & 0x8000:
                self.reset()
            else:
                self.config = self._CONFIG_FIXED | (v & self._CONFIG_MASK)
        elif reg == 0x05:
            self.calibration = v & self._CAL_MASK
        else:
            self._write_other(reg, v)

    def _current(self):
        """The current register before its 16-bit wrap: shunt register * calibration / divisor."""
        return _div_trunc(self.shunt_register() * self.calibration, self._CURRENT_DIV)

    def current_register(self):
        return self._current() & 0xFFFF

    def _value(self, reg):
        if reg == 0x00:
            return self.config
        if reg == 0x01:
            return self.shunt_register()
        if reg == 0x02:
            return self.bus_register()
        if reg == 0x03:
            return self.power_register()
        if reg == 0x04:
            return self.current_register()
        if reg == 0x05:
            return self.calibration
        return self._read_other(reg)

    def _read_other(self, reg):
        return 0  # unknown registers read 0

    def _write_other(self, reg, v):
        pass


class VirtualINA219(_VirtualINA):
    """INA219 registers 0x00..0x05 (unknown registers read 0)."""

    _CURRENT_DIV = 4096
    _CAL_MASK = 0xFFFE  # bit 0 is void

    def reset(self):
        self.config = 0x399F  # power-on default: 32 V, PGA /8, 12-bit, continuous
        self.calibration = 0

    def shunt_register(self):
        fs = 4000 << ((self.config >> 11) & 3)  # PGA /1../8: 40..320 mV in 10 uV steps
        return _clip(_div_round(self.ma * self.shunt_mohm, 10), -fs, fs)

    def bus_register(self):
        fs = 8000 if self.config & 0x2000 else 4000  # 32 V / 16 V range in 4 mV steps
        counts = _clip(_div_round(self.mv, 4), 0, fs)
        cur = self._current()
        ovf = 1 if (cur > 32767 or cur < -32768) else 0
        return (counts << 3) | 0x2 | ovf  # conversion ready, math overflow

    def power_register(self):
        return _div_trunc(abs(self._current()) * (self.bus_register() >> 3), 5000)


class VirtualINA226(_VirtualINA):
    """INA226 registers 0x00..0x07, 0xFE (manufacturer id) and 0xFF (die id)."""

    _CURRENT_DIV = 2048
    _CONFIG_FIXED = 0x4000  # bits 14..12 read 0b100
    _CONFIG_MASK = 0x0FFF
    _CAL_MASK = 0x7FFF  # bit 15 reserved

    def __init__(self, shunt_mohm=100, manufacturer_id=0x5449, die_id=0x2260):
        self.manufacturer_id = manufacturer_id
        self.die_id = die_id
        super().__init__(shunt_mohm)

    def reset(self):
        self.config = 0x4127  # power-on default: 1 sample, 1.1 ms, continuous
        self.calibration = 0
        self.mask_enable = 0
        self.alert_limit = 0

    def shunt_register(self):
        return _clip(_div_round(self.ma * self.shunt_mohm * 2, 5), -32768, 32767)  # 2.5 uV steps

    def bus_register(self):
        return _clip(_div_round(self.mv * 4, 5), 0, 0x7FFF)  # 1.25 mV steps

    def power_register(self):
        return _div_trunc(abs(self._current()) * self.bus_register(), 20000)

    def _read_other(self, reg):
        if reg == 0x06:
            return self.mask_enable | 0x0008  # conversion ready
        if reg == 0x07:
            return self.alert_limit
        if reg == 0xFE:
            return self.manufacturer_id
        if reg == 0xFF:
            return self.die_id
        return 0

    def _write_other(self, reg, v):
        if reg == 0x06:
            self.mask_enable = v & 0xFC03
        elif reg == 0x07:
            self.alert_limit = v
