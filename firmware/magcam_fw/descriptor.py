"""The module descriptor on the device: load at boot, receive a new one from the host, save it
atomically (write a temporary file, then rename, so a reset mid-write keeps the old one).

Usage::

    text = load(storage)                       # storage: the filesystem root, e.g. "/" or the sim flash
    up = Upload(cap=4096)
    done, error = up.chunk(offset, total, data)  # per CMD_DESCRIPTOR_WRITE
    if done:
        save(storage, up.text())
"""

import json
import os

FILENAME = "descriptor.json"
REQUIRED = ("module", "serial", "make", "model", "sensor", "lens", "color")
_SENSOR_KEYS = ("width", "height", "cfa", "bits", "black_level", "white_level")
_LENS_KEYS = ("position_min", "position_max")


def _path(storage, name=FILENAME):
    return storage.rstrip("/") + "/" + name


def load(storage):
    """The descriptor text from the device filesystem, or the factory one shipped with the code."""
    for path in (_path(storage), __file__.rsplit("/", 1)[0] + "/" + FILENAME):
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            pass
    raise OSError("no descriptor.json on the device or beside the firmware")


def check(text):
    """Why this text is not a usable descriptor, or None."""
    try:
        d = json.loads(text)
    except ValueError:
        return "not JSON"
    if not isinstance(d, dict):
        return "not a JSON object"
    for k in REQUIRED:
        if k not in d:
            return "missing '%s'" % k
    for k in _SENSOR_KEYS:
        if k not in d["sensor"]:
            return "missing 'sensor.%s'" % k
    for k in _LENS_KEYS:
        if k not in d["lens"]:
            return "missing 'lens.%s'" % k
    if d["sensor"]["cfa"] not in ("RGGB", "BGGR", "GRBG", "GBRG"):
        return "unknown sensor.cfa"
    if not d["lens"]["position_min"] < d["lens"]["position_max"]:
        return "lens.position_min must be below position_max"
    m = d["color"].get("color_matrix_1")
    if not isinstance(m, list) or len(m) != 9:
        return "color.color_matrix_1 must be 9 numbers"
    return None


def save(storage, text):
    tmp = _path(storage, FILENAME + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, _path(storage))


class Upload:
    """Gathers a descriptor sent in chunks; one buffer, allocated once, never past ``cap``."""

    def __init__(self, cap):
        self.cap = cap
        self._buf = None
        self._n = 0
        self._total = 0

    def chunk(self, offset, total, data):
        """Take one chunk; returns (complete, error). Chunks must come in order from 0."""
        if total == 0 or total > self.cap:
            return False, "descriptor size %d outside 1..%d" % (total, self.cap)
        if offset == 0:
            if self._buf is None:
                self._buf = bytearray(self.cap)
            self._n = 0
            self._total = total
        if total != self._total or offset != self._n or offset + len(data) > total:
            self._total = 0
            return False, "chunk out of order or past the announced size"
        self._buf[offset : offset + len(data)] = data
        self._n += len(data)
        if self._n < total:
            return False, None
        self._total = 0
        try:
            why = check(self.text())
        except UnicodeError:
            why = "not UTF-8 text"
        return why is None, why

    def text(self):
        """The gathered descriptor (raises UnicodeError if it is not UTF-8; chunk() checks)."""
        return str(bytes(memoryview(self._buf)[: self._n]), "utf-8")
