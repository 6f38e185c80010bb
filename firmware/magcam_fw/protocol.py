"""magcam wire protocol, version 1: one source file for MicroPython, CircuitPython and CPython.

The board's firmware and the host both import this very file; docs/protocol.md is its spec and
tests/firmware/vectors_v1.json its shared test vectors.

A frame on the wire is ``00 | COBS(header | payload | crc32) | 00``:

- header, 6 bytes little-endian: ``u8 version, u8 type, u16 seq, u16 payload length``;
- crc32: IEEE 802.3 (the zlib one) over header and payload, little-endian;
- COBS removes every zero byte, so 0x00 only ever delimits frames and the decoder
  resynchronises on the next delimiter after garbage, a flipped bit or a truncated frame.

Usage::

    from magcam_fw import protocol as p

    enc = p.Encoder()
    wire = enc.encode(p.EV_ENCODER, 7, (1234, 40, 40, 0, 0, 0))   # memoryview, valid until next call

    dec = p.Decoder()
    def on_message(mtype, seq, payload):                       # payload: memoryview, copy to keep
        print(p.unpack(mtype, payload))
    dec.feed(bytes(wire), on_message)
    dec.stats()     # frames, crc_errors, framing_errors, overflows, ... every error is counted

Buffers are allocated once, at their caps: a peer that lies about lengths cannot make either
side allocate more than ``MAX_PAYLOAD``-sized buffers.

Frozen across all versions, so any two peers can at least tell each other their versions: the
header layout, CMD_CONNECT (type 0x40, payload byte 0 = the sender's version), NAK (type 0x04)
and HELLO's first payload byte (the version).
"""

try:
    from micropython import const
except ImportError:  # CPython: const() is only a compile-time hint on MicroPython

    def const(x):
        return x


import struct

VERSION = const(1)

# Hard caps. Every length a peer sends is checked against these before it is used.
MAX_PAYLOAD = const(8192)
HEADER_SIZE = const(6)
CRC_SIZE = const(4)
MAX_FRAME_DIM = const(16384)
MAX_FRAME_BYTES = const(268435456)  # 256 MiB: a 100 MP frame at 16 bits fits
CHUNK_SIZE = const(4096)  # default RAW chunk; any value up to MAX_PAYLOAD - 8 is legal

# Message types. Device -> host: 0x01..0x3F; host -> device commands: 0x40..0x7F.
HELLO = const(0x01)
DESCRIPTOR = const(0x02)
ACK = const(0x03)
NAK = const(0x04)
EV_ENCODER = const(0x10)
EV_ATTACH = const(0x11)
EV_POWER = const(0x12)
EV_THERMAL = const(0x13)
EV_FAULT = const(0x14)
EV_LINK = const(0x15)
EV_LOG = const(0x16)
FRAME_BEGIN = const(0x20)
FRAME_CHUNK = const(0x21)
FRAME_END = const(0x22)
CMD_CONNECT = const(0x40)
CMD_PING = const(0x41)
CMD_GET_DESCRIPTOR = const(0x42)
CMD_CAPTURE = const(0x43)
CMD_SET_LENS = const(0x44)
CMD_DISCONNECT = const(0x45)
CMD_POWER_GRANT = const(0x46)
CMD_POWER_RESET = const(0x47)
CMD_FAULTS_READ = const(0x48)
CMD_FAULTS_CLEAR = const(0x49)
CMD_DESCRIPTOR_WRITE = const(0x4A)
CMD_STREAM = const(0x4B)

# Tail kinds: what follows the fixed struct part of a payload.
_NO_TAIL = const(0)
_TEXT = const(1)
_BYTES = const(2)

# type -> (name, struct format of the fixed part, field names, tail name, tail kind)
SCHEMA = {
    HELLO: (
        "hello",
        "<BIIHHHB",
        ("version", "session", "uptime_ms", "max_payload", "rx_max_payload", "chunk_size", "mode"),
        "firmware",
        _TEXT,
    ),
    DESCRIPTOR: ("descriptor", "<", (), "json", _TEXT),
    ACK: ("ack", "<Hi", ("ack_seq", "value"), "data", _BYTES),
    NAK: ("nak", "<HB", ("ack_seq", "code"), "message", _TEXT),
    EV_ENCODER: ("encoder", "<IiiiBI", ("t", "count", "lens", "velocity", "flags", "glitches"), None, _NO_TAIL),
    EV_ATTACH: ("attach", "<IBI", ("t", "state", "session"), None, _NO_TAIL),
    EV_POWER: ("power", "<IBHHHBH", ("t", "state", "mv", "ma", "budget_mw", "blocked", "faults"), None, _NO_TAIL),
    EV_THERMAL: ("thermal", "<IiBH", ("t", "mc", "state", "fps_x10"), None, _NO_TAIL),
    EV_FAULT: ("fault", "<IBiH", ("t", "cause", "value", "count"), None, _NO_TAIL),
    EV_LINK: (
        "link",
        "<IIIIIIII",
        (
            "t", "rx_frames", "rx_crc_errors", "rx_framing_errors", "rx_overflows", "rx_version_errors",
            "tx_frames", "tx_dropped",
        ),
        None,
        _NO_TAIL,
    ),
    EV_LOG: ("log", "<IB", ("t", "level"), "text", _TEXT),
    FRAME_BEGIN: (
        "frame_begin",
        "<IHHBBHHIfIiIH",
        (
            "frame_id", "width", "height", "cfa", "bits", "black_level", "white_level",
            "exposure_us", "analog_gain", "timestamp_ms", "lens_position", "total_bytes", "chunk_size",
        ),
        None,
        _NO_TAIL,
    ),
    FRAME_CHUNK: ("frame_chunk", "<II", ("frame_id", "offset"), "data", _BYTES),
    FRAME_END: ("frame_end", "<IIIB", ("frame_id", "total_bytes", "crc32", "status"), None, _NO_TAIL),
    CMD_CONNECT: ("connect", "<B", ("version",), "host", _TEXT),
    CMD_PING: ("ping", "<", (), None, _NO_TAIL),
    CMD_GET_DESCRIPTOR: ("get_descriptor", "<", (), None, _NO_TAIL),
    CMD_CAPTURE: ("capture", "<HHIf", ("width", "height", "exposure_us", "analog_gain"), None, _NO_TAIL),
    CMD_SET_LENS: ("set_lens", "<i", ("position",), None, _NO_TAIL),
    CMD_DISCONNECT: ("disconnect", "<", (), None, _NO_TAIL),
    CMD_POWER_GRANT: ("power_grant", "<H", ("budget_mw",), None, _NO_TAIL),
    CMD_POWER_RESET: ("power_reset", "<", (), None, _NO_TAIL),
    CMD_FAULTS_READ: ("faults_read", "<H", ("first",), None, _NO_TAIL),
    CMD_FAULTS_CLEAR: ("faults_clear", "<", (), None, _NO_TAIL),
    CMD_DESCRIPTOR_WRITE: ("descriptor_write", "<HH", ("offset", "total"), "data", _BYTES),
    CMD_STREAM: ("stream", "<HHIfH", ("width", "height", "exposure_us", "analog_gain", "fps_x10"), None, _NO_TAIL),
}

# Enumerations carried in events, indexed by their wire value.
CFA_NAMES = ("RGGB", "BGGR", "GRBG", "GBRG")
ATTACH_STATES = ("detached", "attaching", "attached", "detaching")
POWER_STATES = ("off", "requesting", "granted", "soft_start", "on", "fault", "retry_wait", "latched")
THERMAL_STATES = ("normal", "derated", "suspended")
FAULT_CAUSES = (
    "none", "over_current", "under_voltage", "over_temperature", "vbus_lost", "brownout", "watchdog", "sensor",
    "over_budget", "over_voltage",
)
# One persisted fault-log record, as CMD_FAULTS_READ returns them back to back in the ACK data:
# boot number, device time (ms), cause, the reading that tripped it.
FAULT_RECORD = "<HIBi"
FAULT_RECORD_SIZE = const(11)
MODES = ("normal", "safe")
MODE_SAFE = const(1)
FRAME_STATUS = ("ok", "aborted", "sensor_error")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_INFO = const(1)
LOG_WARNING = const(2)
LOG_ERROR = const(3)
# NAK codes
NAK_UNKNOWN = const(1)
NAK_BAD_ARGS = const(2)
NAK_BUSY = const(3)
NAK_NOT_ATTACHED = const(4)
NAK_NO_SESSION = const(5)
NAK_INTERNAL = const(6)
NAK_VERSION = const(7)
NAK_TOO_HOT = const(8)
NAK_NAMES = ("", "unknown_command", "bad_args", "busy", "not_attached", "no_session", "internal", "version", "too_hot")

# The encoder's flags for soft end-stops.
ENC_AT_MIN = const(1)
ENC_AT_MAX = const(2)


def _crc32_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return table


def crc32_soft(data, crc=0):
    """Table-driven CRC-32 for runtimes without binascii.crc32 (identical results)."""
    table = _SOFT_TABLE[0]
    if table is None:
        table = _SOFT_TABLE[0] = _crc32_table()
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_SOFT_TABLE = [None]

try:
    from binascii import crc32
except ImportError:  # some CircuitPython builds
    try:
        from zlib import crc32
    except ImportError:
        crc32 = crc32_soft


_FIXED = {t: struct.calcsize(s[1]) for t, s in SCHEMA.items()}


def payload_size(mtype):
    """Size of a message type's fixed part, or -1 for an unknown type."""
    return _FIXED.get(mtype, -1)


class Encoder:
    """Builds wire frames into two preallocated buffers (no allocation per frame but the view)."""

    def __init__(self, max_payload=MAX_PAYLOAD):
        self.max_payload = max_payload
        self._raw = bytearray(HEADER_SIZE + max_payload + CRC_SIZE)
        self._out = bytearray(HEADER_SIZE + max_payload + CRC_SIZE + (HEADER_SIZE + max_payload) // 254 + 4)
        self._raw_mv = memoryview(self._raw)
        self._out_mv = memoryview(self._out)

    def encode(self, mtype, seq, values=(), tail=None):
        """Encode one message; returns a memoryview of the wire bytes, valid until the next call."""
        fmt = SCHEMA[mtype][1]
        fixed = _FIXED[mtype]
        n = fixed
        if tail is not None:
            if isinstance(tail, str):
                tail = tail.encode()
            n += len(tail)
        if n > self.max_payload:
            raise ValueError("payload too large")
        raw = self._raw
        struct.pack_into("<BBHH", raw, 0, VERSION, mtype, seq & 0xFFFF, n)
        if fixed:
            struct.pack_into(fmt, raw, HEADER_SIZE, *values)
        if tail is not None:
            self._raw_mv[HEADER_SIZE + fixed : HEADER_SIZE + n] = tail
        end = HEADER_SIZE + n
        struct.pack_into("<I", raw, end, crc32(self._raw_mv[:end]))
        m = cobs_encode_into(raw, end + CRC_SIZE, self._out_mv)
        return self._out_mv[:m]


def cobs_encode_into(buf, n, dst):
    """COBS-encode buf[:n] (bytes or bytearray) into dst between two 0x00 delimiters.

    Returns the length written. Works block by block with find(), not byte by byte, so it is
    fast on both runtimes.
    """
    src = memoryview(buf)
    dst[0] = 0
    j = 1
    i = 0
    while True:
        lim = i + 254
        if lim > n:
            lim = n
        z = buf.find(b"\x00", i, lim)
        if z < 0:
            k = lim - i
            if k == 254:  # a full block carries no implied zero
                dst[j] = 0xFF
                dst[j + 1 : j + 255] = src[i:lim]
                j += 255
                i = lim
                if i == n:  # canonical COBS: no empty block after a final full one
                    break
                continue
            dst[j] = k + 1
            dst[j + 1 : j + 1 + k] = src[i:lim]
            j += k + 1
            break
        k = z - i
        dst[j] = k + 1
        dst[j + 1 : j + 1 + k] = src[i:z]
        j += k + 1
        i = z + 1
    dst[j] = 0
    return j + 1


def cobs_decode_into(src, n, dst):
    """Decode one COBS block sequence src[:n] (no delimiters) into dst.

    Returns the decoded length, -1 if the encoding is invalid, -2 if it would not fit in dst.
    """
    i = 0
    j = 0
    cap = len(dst)
    while i < n:
        code = src[i]
        if code == 0:
            return -1
        end = i + code
        if end > n:
            return -1
        if j + code - 1 > cap:
            return -2
        dst[j : j + code - 1] = src[i + 1 : end]
        j += code - 1
        i = end
        if code != 0xFF and i < n:
            if j >= cap:
                return -2
            dst[j] = 0
            j += 1
    return j


class Decoder:
    """Splits a byte stream into checked messages; never raises on bad input, only counts it.

    ``feed(data, callback)`` calls ``callback(mtype, seq, payload_memoryview)`` for every
    good frame. The payload view points into the decoder's buffer: copy it to keep it.
    """

    def __init__(self, max_payload=MAX_PAYLOAD):
        self.max_payload = max_payload
        raw_cap = HEADER_SIZE + max_payload + CRC_SIZE
        self._enc_cap = raw_cap + raw_cap // 254 + 2
        self._buf = bytearray(self._enc_cap)
        self._buf_mv = memoryview(self._buf)
        self._raw = bytearray(raw_cap)
        self._raw_mv = memoryview(self._raw)
        self._n = 0
        self._skipping = False  # after an overflow: drop bytes up to the next delimiter
        self.frames = 0
        self.crc_errors = 0
        self.framing_errors = 0  # bad COBS, too short, length field disagrees with the frame
        self.overflows = 0  # frame longer than the cap
        self.version_errors = 0
        self.unknown_types = 0  # well-formed, but a type or payload size this side cannot read
        self.bytes_dropped = 0
        self.foreign_version = 0  # the last version byte seen that was not ours

    def stats(self):
        return {
            "frames": self.frames,
            "crc_errors": self.crc_errors,
            "framing_errors": self.framing_errors,
            "overflows": self.overflows,
            "version_errors": self.version_errors,
            "unknown_types": self.unknown_types,
            "bytes_dropped": self.bytes_dropped,
        }

    @property
    def errors(self):
        return self.crc_errors + self.framing_errors + self.overflows + self.version_errors

    def feed(self, data, callback, n=-1):
        """Consume data[:n] (bytes or bytearray, not a memoryview: find() is needed).

        ``n`` defaults to all of ``data``. Returns the number of good frames delivered.
        """
        good = 0
        i = 0
        if n < 0:
            n = len(data)
        mv = memoryview(data)
        while i < n:
            z = data.find(b"\x00", i, n)
            end = n if z < 0 else z
            k = end - i
            if self._skipping:
                self.bytes_dropped += k
            elif self._n + k > self._enc_cap:
                self.overflows += 1
                self.bytes_dropped += self._n + k
                self._n = 0
                self._skipping = True
            elif k:
                self._buf_mv[self._n : self._n + k] = mv[i:end]
                self._n += k
            if z < 0:
                break
            # A delimiter: whatever was gathered is one frame.
            if self._skipping:
                self._skipping = False
            elif self._n:
                if self._frame(callback):
                    good += 1
                self._n = 0
            i = z + 1
        return good

    def _frame(self, callback):
        m = cobs_decode_into(self._buf_mv, self._n, self._raw_mv)
        if m == -2:  # longer than the cap once decoded
            self.overflows += 1
            self.bytes_dropped += self._n
            return False
        if m < HEADER_SIZE + CRC_SIZE:
            self.framing_errors += 1
            self.bytes_dropped += self._n
            return False
        raw = self._raw
        body = m - CRC_SIZE
        if crc32(self._raw_mv[:body]) != struct.unpack_from("<I", raw, body)[0]:
            self.crc_errors += 1
            self.bytes_dropped += self._n
            return False
        version, mtype, seq, length = struct.unpack_from("<BBHH", raw, 0)
        if length != body - HEADER_SIZE:
            self.framing_errors += 1
            self.bytes_dropped += self._n
            return False
        if version != VERSION:
            self.version_errors += 1
            self.foreign_version = version
            # CONNECT is frozen across versions: pass it on so the other side can be told.
            if mtype != CMD_CONNECT or length < 1:
                self.bytes_dropped += self._n
                return False
        self.frames += 1
        if mtype not in SCHEMA or length < _FIXED[mtype]:
            self.unknown_types += 1  # well-formed but unreadable here; the consumer may answer it
        callback(mtype, seq, self._raw_mv[HEADER_SIZE:body])
        return True


def readable(mtype, payload):
    """True if this side knows the type and the payload holds its fixed part."""
    return mtype in SCHEMA and len(payload) >= _FIXED[mtype]


def unpack(mtype, payload):
    """Payload bytes -> dict with ``type`` (the message name) and its fields.

    Raises ValueError for a type this side does not know or a payload too short for it.
    """
    if not readable(mtype, payload):
        raise ValueError("unreadable message type 0x%02x (%d payload bytes)" % (mtype, len(payload)))
    name, fmt, fields, tail_name, tail_kind = SCHEMA[mtype]
    fixed = _FIXED[mtype]
    out = {"type": name}
    if fixed:
        values = struct.unpack_from(fmt, payload, 0)
        for i in range(len(fields)):
            out[fields[i]] = values[i]
    if tail_kind == _TEXT:
        out[tail_name] = _text(bytes(payload[fixed:]))
    elif tail_kind == _BYTES:
        out[tail_name] = bytes(payload[fixed:])
    return out


def _text(b):
    try:
        return str(b, "utf-8")
    except UnicodeError:  # a peer's bad text must not break the read loop
        return "".join(chr(c) if c < 128 else "?" for c in b)


def pack_fields(mtype, fields):
    """dict of field values -> (values tuple, tail) for Encoder.encode."""
    name, fmt, names, tail_name, tail_kind = SCHEMA[mtype]
    values = tuple(fields[k] for k in names)
    tail = fields.get(tail_name) if tail_kind != _NO_TAIL else None
    return values, tail


def check_capture(width, height, exposure_us, analog_gain):
    """Why a capture request is unacceptable, or None: both sides use the same caps."""
    if not (16 <= width <= MAX_FRAME_DIM and 16 <= height <= MAX_FRAME_DIM):
        return "size out of range"
    if width & 1 or height & 1:
        return "width and height must be even"
    if width * height * 2 > MAX_FRAME_BYTES:
        return "frame too large"
    if not (1 <= exposure_us <= 60000000):
        return "exposure out of range"
    if not (0 < analog_gain <= 64):
        return "gain out of range"
    return None


def check_frame_begin(f):
    """Why a FRAME_BEGIN header is unacceptable, or None (a lying device stops here)."""
    why = check_capture(f["width"], f["height"], f["exposure_us"], f["analog_gain"])
    if why:
        return why
    if f["cfa"] >= len(CFA_NAMES):
        return "unknown CFA pattern"
    if not (8 <= f["bits"] <= 16):
        return "bits per sample out of range"
    if f["black_level"] >= f["white_level"] or f["white_level"] >= (1 << f["bits"]):
        return "black/white levels inconsistent"
    if f["total_bytes"] != f["width"] * f["height"] * 2:
        return "total_bytes disagrees with width x height x 2"
    if not (1 <= f["chunk_size"] <= MAX_PAYLOAD - 8):
        return "chunk size out of range"
    return None
