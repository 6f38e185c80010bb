"""Simulated HAL: virtual pins and sensors for the MicroPython unix port.

The scenario (``scenario.Player``) drives the pins and readings; the image sensor is a
separate process (the host's ``magcam sim``) reached through two FIFOs, the way a real MCU
reaches its sensor through a bus: a request line out, a sample stream back.

Usage::

    hal = SimHal(sensor_dir="/tmp/sim")      # sensor_dir holds sensor.req / sensor.resp
    hal.hall.value(0)                         # what a scenario "detach" does
"""

import json
import select

from magcam_fw.compat import const, ticks_diff, ticks_ms
from magcam_fw.encoder import QuadratureDecoder
from magcam_fw.ina2xx import INA226
from magcam_fw.sim_i2c import VirtualI2C, VirtualINA226

_RAIL_OHMS_X1000 = const(150)  # 0.15 ohm from VBUS through the load switch: droop under load
_INA_ADDR = const(0x40)
_SHUNT_MOHM = const(20)  # 20 mOhm: whole mA and mV read back exactly, and 4 A full scale
_STATUS_HDR = const(8)
_DRAIN_SLICE = const(16384)
_DRAIN_MS = const(4)


class VirtualPin:
    """A pin whose level the scenario sets; ``irq`` handlers fire on each change, as on a board."""

    def __init__(self, level=0):
        self._v = level
        self._handler = None

    def value(self, v=None):
        if v is None:
            return self._v
        v = 1 if v else 0
        if v != self._v:
            self._v = v
            if self._handler:
                self._handler(self)

    def irq(self, handler=None, trigger=3):
        self._handler = handler


class SimSensor:
    """Client of the virtual sensor: request a frame, then read its samples in chunks.

    Nothing here blocks the control loop for long: an aborted frame is drained a slice at a
    time by ``ready()`` of the next capture, whether it was aborted before or after its header.
    """

    def __init__(self, sensor_dir):
        # Unbuffered on every runtime: requests must leave at once, and poll() must see every
        # byte still in the pipe (no read-ahead hiding a header in a buffer).
        self._req = open(sensor_dir + "/sensor.req", "wb", 0)
        self._resp = open(sensor_dir + "/sensor.resp", "rb", 0)
        self._poll = select.poll()
        self._poll.register(self._resp, select.POLLIN)
        self._hdr = bytearray(_STATUS_HDR)
        self._drain = memoryview(bytearray(_DRAIN_SLICE))
        self._left = -1  # bytes of the current frame not yet read; -1 until its header is read
        self._skip = 0  # responses still to come for aborted requests whose header was never read
        self._discard = False  # the rest of the current frame belongs to an aborted request

    def start(self, width, height, exposure_us, gain, frame_id, lens):
        if self._left == 0:
            self._left = -1  # the previous frame was read to its end
        req = {"w": width, "h": height, "exposure_us": exposure_us, "gain": gain, "frame_id": frame_id, "lens": lens}
        # No flush(): it is fsync() on the unix port and fails on a FIFO.
        self._req.write(json.dumps(req).encode() + b"\n")

    def ready(self):
        while True:
            if self._left < 0:
                if not self._poll.poll(0):
                    return False
                self._resp.readinto(self._hdr)
                status = self._hdr[0] | (self._hdr[1] << 8)
                n = self._hdr[4] | (self._hdr[5] << 8) | (self._hdr[6] << 16) | (self._hdr[7] << 24)
                self._left = n if status == 0 else 0
                if self._skip:
                    self._skip -= 1
                    self._discard = True
            if not self._discard:
                return True
            if self._left:
                t0 = ticks_ms()
                while self._left and ticks_diff(ticks_ms(), t0) < _DRAIN_MS:
                    self._left -= self._resp.readinto(self._drain[: min(_DRAIN_SLICE, self._left)])
                return False  # a few ms per call: the control tick keeps its period
            self._discard = False
            self._left = -1

    def frame_bytes(self):
        return self._left

    def readinto(self, view):
        n = min(len(view), self._left)
        if n <= 0:
            return 0
        got = self._resp.readinto(view[:n])
        self._left -= got
        return got

    def abort(self):
        if self._left < 0:
            self._skip += 1  # its response is still on the way
        elif self._left > 0:
            self._discard = True


class SimHal:
    def __init__(self, sensor_dir=None, scenario=None, storage="."):
        self.ring_a = VirtualPin(0)
        self.ring_b = VirtualPin(0)
        self.ring = QuadratureDecoder(self.ring_a, self.ring_b)  # software decoding on pin IRQs
        self.ring.attach()
        self.hall = VirtualPin(1)  # starts attached: snapped onto the phone
        self.vbus = VirtualPin(1)
        self.vbus_mv = 5000
        self.load_ma = 250
        self.temp_mc = 30000
        self.rail_on = False
        self.lens = 0
        self.sensor = SimSensor(sensor_dir) if sensor_dir else None
        self.scenario = scenario
        self.storage = storage  # the module's filesystem root (the sim's flash directory)
        # The rail monitor: the real INA226 driver over a virtual I2C bus with a virtual chip.
        self.i2c = VirtualI2C()
        self._ina_chip = VirtualINA226(shunt_mohm=_SHUNT_MOHM)
        self.i2c.add(_INA_ADDR, self._ina_chip)
        self.power_monitor = INA226(self.i2c, _INA_ADDR, shunt_mohm=_SHUNT_MOHM)
        self.power_monitor.configure()

    def set_rail(self, on):
        self.rail_on = bool(on)

    def lens_actuator(self, position):
        self.lens = position

    def read_power(self):
        """(mV, mA) of the rail, read through the INA226 driver from the virtual chip."""
        mv = self.vbus_mv if self.vbus.value() else 0
        ma = self.load_ma if (self.rail_on and mv) else 0
        self._ina_chip.set(max(mv - ma * _RAIL_OHMS_X1000 // 1000, 0), ma)
        return self.power_monitor.read()

    def read_temp_mc(self):
        return self.temp_mc

    def on_connect(self):
        if self.scenario:
            self.scenario.start()

    def reset(self):
        """machine.reset() for the simulator: the runner boots the firmware again."""
        import sys

        sys.exit(3)

    def tasks(self):
        return [self.scenario.run(self)] if self.scenario else []
