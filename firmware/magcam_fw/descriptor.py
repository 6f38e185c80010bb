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

from magcam_fw.compat import const
from magcam_fw.power import DEFAULT_LIMITS

FILENAME = "descriptor.json"
REQUIRED = ("module", "serial", "make", "model", "sensor", "lens", "color")
_SENSOR_KEYS = ("width", "height", "cfa", "bits", "black_level", "white_level")
_LENS_KEYS = ("position_min", "position_max")
_MAX_SIDE = const(65535)  # the wire protocol carries frame sides as 16-bit
_MAX_STEPS = const(4000000)  # Focus keeps its fixed-point position a small int within this
ILLUMINANTS = ("D65", "D50", "A", "D55", "D75")  # DNG CalibrationIlluminant names the host writes
_D65 = (0.95047, 1.0, 1.08883)  # the D65 white in XYZ


def _path(storage, name=FILENAME):
    return storage.rstrip("/") + "/" + name


def _factory():
    """The factory descriptor, shipped beside this module."""
    return _path(__file__.rsplit("/", 1)[0])


def load(storage):
    """The descriptor text from the device filesystem, or the factory one shipped with the code."""
    for path in (_path(storage), _factory()):
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            pass
    raise OSError("no descriptor.json on the device or beside the firmware")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return (_is_int(v) or isinstance(v, float)) and v == v and -1e30 < v < 1e30  # finite


def _problem(d):
    """Why the parsed descriptor ``d`` cannot be used, or None. Every field the firmware reads
    is checked for type and range here, so a bad upload is refused with a reason instead of
    failing later inside the app (where it would take the link down)."""
    if not isinstance(d, dict):
        return "not a JSON object"
    for k in REQUIRED:
        if k not in d:
            return "missing '%s'" % k
    for k in ("module", "serial", "make", "model"):
        if not isinstance(d[k], str):
            return "'%s' must be a string" % k
    for k in ("sensor", "lens", "color"):
        if not isinstance(d[k], dict):
            return "'%s' must be an object" % k
    s, lens = d["sensor"], d["lens"]
    for k in _SENSOR_KEYS:
        if k not in s:
            return "missing 'sensor.%s'" % k
    if s["cfa"] not in ("RGGB", "BGGR", "GRBG", "GBRG"):
        return "unknown sensor.cfa"
    for k in ("width", "height"):
        if not _is_int(s[k]) or not 2 <= s[k] <= _MAX_SIDE:
            return "sensor.%s must be a whole number 2..%d" % (k, _MAX_SIDE)
    if not _is_int(s["bits"]) or not 8 <= s["bits"] <= 16:
        return "sensor.bits must be a whole number 8..16"
    for k in ("black_level", "white_level"):
        if not _is_int(s[k]) or not 0 <= s[k] < (1 << s["bits"]):
            return "sensor.%s must be a whole number 0..%d" % (k, (1 << s["bits"]) - 1)
    if not s["black_level"] < s["white_level"]:
        return "sensor.black_level must be below white_level"
    for k in _LENS_KEYS:
        if k not in lens:
            return "missing 'lens.%s'" % k
        if not _is_int(lens[k]) or not -_MAX_STEPS <= lens[k] <= _MAX_STEPS:
            return "lens.%s must be a whole number of steps within +-%d" % (k, _MAX_STEPS)
    if not lens["position_min"] < lens["position_max"]:
        return "lens.position_min must be below position_max"
    # The host writes these into every DNG: a bad one would fail each capture after the exposure.
    for k in ("focal_mm", "f_number"):
        if not _is_number(lens.get(k)) or not lens[k] > 0:
            return "lens.%s must be a number above 0" % k
    if "min_focus_m" in lens and not (_is_number(lens["min_focus_m"]) and lens["min_focus_m"] > 0):
        return "lens.min_focus_m must be a number above 0"
    if d["color"].get("illuminant_1") not in ILLUMINANTS:
        return "color.illuminant_1 must be one of %s" % ", ".join(ILLUMINANTS)
    m = d["color"].get("color_matrix_1")
    if not isinstance(m, list) or len(m) != 9 or not all(_is_number(v) for v in m):
        return "color.color_matrix_1 must be 9 numbers"
    # XYZ -> camera: white must give light in every channel (white balance divides by it), and
    # the matrix must be invertible (the colour pipeline inverts it).
    if min(m[i] * _D65[0] + m[i + 1] * _D65[1] + m[i + 2] * _D65[2] for i in (0, 3, 6)) <= 0:
        return "color.color_matrix_1 must map white (D65) to a response above 0 in every channel"
    det = (m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
           + m[2] * (m[3] * m[7] - m[4] * m[6]))
    if abs(det) < 1e-9:
        return "color.color_matrix_1 must be invertible"
    power = d.get("power")
    if power is not None:
        if not isinstance(power, dict):
            return "'power' must be an object"
        for k in power:
            # A misspelt limit would silently leave the default in force.
            if k not in DEFAULT_LIMITS:
                return "power.%s is not a power limit (docs/power.md)" % k
            if not _is_int(power[k]) or power[k] < 0:
                return "power.%s must be a whole number >= 0" % k
        # An empty voltage window would keep the rail from ever closing.
        if power.get("min_mv", DEFAULT_LIMITS["min_mv"]) >= power.get("max_mv", DEFAULT_LIMITS["max_mv"]):
            return "power.min_mv must be below power.max_mv"
    return None


def check(text):
    """Why this text is not a usable descriptor, or None."""
    try:
        d = json.loads(text)
    except ValueError:
        return "not JSON"
    return _problem(d)


def usable(storage):
    """(text, why): the device's own descriptor if it passes ``check``, else the factory one
    shipped with the code and why the device's was not used (None when it was)."""
    try:
        text = load(storage)
        why = check(text)
    except OSError as e:
        text, why = None, str(e)
    if why:
        with open(_factory()) as f:
            text = f.read()
    return text, why


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
