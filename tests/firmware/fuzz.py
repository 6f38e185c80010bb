"""Seeded protocol fuzzer for ``protocol.Decoder``, the same file on MicroPython and CPython.

    micropython tests/firmware/fuzz.py 10000 1      # prints one JSON object: the figures
    python tests/firmware/fuzz.py 10000 1
    python tests/firmware/fuzz.py --case 1 4711     # hex of input 4711 of seed 1, to replay

From Python: ``fuzz.run(n, seed) -> dict`` (see ``run``). Input ``i`` of seed ``s`` depends on
``(s, i)`` only, and the generator is a xorshift32 of our own, so an input is the very same
bytes on both runtimes: a failure found on one can be replayed on the other (``case(s, i)``).

Every input is drawn from one of these kinds (``KINDS``):

- ``random``: random bytes (sometimes without any 0x00, sometimes mostly 0x00);
- ``bitflip``: a valid frame with 1..3 bits flipped anywhere, delimiters included;
- ``truncate``: a valid frame or stream with its head or its tail cut off;
- ``dupreorder``: a valid stream of 2..5 frames cut into chunks, some duplicated, swapped or
  dropped;
- ``caps``: payloads at the cap (delivered) and beyond it (8193, 8194.., up to 64 KiB, endless
  runs without a delimiter), length fields that lie, bodies too short for a header;
- ``unknown``: well-formed frames of types this side does not know, or with a payload shorter
  than the type's fixed part (counted in ``unknown_types`` and delivered);
- ``version``: frames of other protocol versions (dropped; a CONNECT is passed on);
- ``splits``: a valid stream, which must come out exactly, with no error counted.

Every input is fed in random pieces (sometimes a byte at a time, sometimes through
``feed(buf, cb, n)`` with stale bytes after ``n``), to one of two decoders: the host's
(``MAX_PAYLOAD`` 8192) or the device's (1024). After EVERY input the known-good sentinel frame
is fed, and these are checked:

- the decoder never raised;
- the sentinel was delivered, last, byte-exact (resync on the next good frame), and the
  decoder is back at a frame boundary (nothing buffered, not skipping);
- its two preallocated buffers are the same objects, of the same size;
- every counter only grew, and ``frames`` grew by exactly the number of callbacks;
- accounting: each non-empty stretch between delimiters is accounted for exactly once,
  delivered (``frames``) or counted in one of ``crc_errors``, ``framing_errors``,
  ``overflows``, ``version_errors`` (a foreign-version CONNECT is in both); so a bad input
  always raises an error counter unless what it held was legitimately delivered. Bytes
  dropped are exactly the bytes of the stretches not delivered, when nothing was delivered;
- what was delivered is allowed for that kind (exactly the stream for ``splits``; a frame of
  the stream for ``bitflip``, ``truncate``, ``dupreorder``; the unknown or foreign frame
  itself), and nothing but the sentinel for inputs that must deliver nothing.

Peak memory: MicroPython ``gc.mem_alloc()`` after ``gc.collect()``, sampled every 256 inputs and
after each large input; CPython ``tracemalloc``'s peak. Plus, on both, what the decoder itself
allocates per delivered frame (MicroPython: with the GC paused).
"""

import struct
import sys

try:
    from magcam_fw import protocol as P
except ImportError:  # run as a script: find the firmware from this file's place in the repo
    _here = __file__ if __file__.startswith("/") else __import__("os").getcwd() + "/" + __file__
    _parts = []
    for _p in _here.split("/")[:-1]:
        if _p == "..":
            if _parts:
                _parts.pop()
        elif _p and _p != ".":
            _parts.append(_p)
    _dir = "/" + "/".join(_parts)
    sys.path.insert(0, _dir)
    sys.path.insert(0, _dir[: _dir[: _dir.rfind("/")].rfind("/")] + "/firmware")
    from magcam_fw import protocol as P

from _samples import SAMPLES

IS_MICROPYTHON = sys.implementation.name == "micropython"

try:
    from time import ticks_diff, ticks_ms
except ImportError:
    import time as _time

    def ticks_ms():
        return int(_time.perf_counter() * 1000)

    def ticks_diff(a, b):
        return a - b


KINDS = ("random", "bitflip", "truncate", "dupreorder", "caps", "unknown", "version", "splits")
# How often each kind is drawn (out of the sum).
WEIGHTS = (3, 3, 2, 3, 2, 1, 1, 2)
DEVICE_RX_MAX = 1024  # the device decodes host messages with this cap (docs/protocol.md section 4)
SENTINEL_SEQ = 0xBEEF
_HEAP_EVERY = 256
_MAX_FAILURES_KEPT = 5


class Rng:
    """xorshift32: the same numbers on every runtime (MicroPython's random is another generator)."""

    def __init__(self, seed):
        s = (seed * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF
        self.s = s or 0x1234567
        for _ in range(4):
            self.u32()

    def u32(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def below(self, n):
        return self.u32() % n if n > 0 else 0

    def between(self, a, b):
        """a..b inclusive."""
        return a + self.u32() % (b - a + 1)

    def chance(self, k):
        """True one time in k."""
        return self.u32() % k == 0


def _pool(size):
    """A block of pseudo-random bytes to slice random inputs from (same on every runtime)."""
    rng = Rng(0xF00D)
    out = bytearray(size)
    for i in range(0, size, 4):
        x = rng.u32()
        out[i] = x & 0xFF
        out[i + 1] = (x >> 8) & 0xFF
        out[i + 2] = (x >> 16) & 0xFF
        out[i + 3] = x >> 24
    return bytes(out)


_POOL_SIZE = 1 << 16
_POOL = _pool(_POOL_SIZE)
_NONZERO = bytes(b or 0x5A for b in _POOL)  # the same without any 0x00: no delimiter at all

_COBS_OUT = bytearray(70000 + 70000 // 254 + 8)


def raw_wire(version, mtype, seq, payload, length=None, crc=None):
    """One frame on the wire built by hand: any version, type, length field or CRC (lies)."""
    n = len(payload)
    raw = bytearray(P.HEADER_SIZE + n + P.CRC_SIZE)
    struct.pack_into("<BBHH", raw, 0, version, mtype, seq & 0xFFFF, (n if length is None else length) & 0xFFFF)
    raw[P.HEADER_SIZE : P.HEADER_SIZE + n] = payload
    body = P.HEADER_SIZE + n
    struct.pack_into("<I", raw, body, P.crc32(memoryview(raw)[:body]) if crc is None else crc)
    m = P.cobs_encode_into(raw, len(raw), _COBS_OUT)
    return bytes(_COBS_OUT[:m])


def _key(mtype, seq, payload):
    return (mtype, seq, len(payload), P.crc32(payload))


class _Frame:
    __slots__ = ("wire", "key", "size")

    def __init__(self, mtype, seq, payload):
        self.wire = raw_wire(P.VERSION, mtype, seq, payload)
        self.key = _key(mtype, seq, payload)
        self.size = len(payload)


def _corpus():
    """Valid frames: one per sample message, plus chunks that stress COBS and the caps."""
    enc = P.Encoder()
    frames = []
    seq = 1
    for _name, mtype, _s, fields in SAMPLES:
        values, tail = P.pack_fields(mtype, fields)
        wire = bytes(enc.encode(mtype, seq, values, tail))
        payload = _payload_of(wire)
        frames.append(_Frame(mtype, seq, payload))
        seq += 1
    for size, src in ((0, _POOL), (1, _POOL), (253, _NONZERO), (254, _NONZERO), (255, _NONZERO),
                      (246, _NONZERO), (1000, _POOL), (1016, _NONZERO), (4096, _POOL), (4096, _NONZERO),
                      (P.MAX_PAYLOAD - 8, _POOL), (P.MAX_PAYLOAD - 8, _NONZERO)):
        off = (size * 7919) % (_POOL_SIZE - size)
        payload = struct.pack("<II", 9, off) + src[off : off + size]
        frames.append(_Frame(P.FRAME_CHUNK, seq, payload))
        seq += 1
    return frames


def _payload_of(wire):
    raw = bytearray(len(wire))
    m = P.cobs_decode_into(wire[1:-1], len(wire) - 2, raw)
    return bytes(raw[P.HEADER_SIZE : m - P.CRC_SIZE])


CORPUS = _corpus()
SENTINEL = _Frame(P.EV_LOG, SENTINEL_SEQ, struct.pack("<IB", 0x5E171E1, 1) + b"sentinel: resync here")


def _small(frames, cap):
    return [f for f in frames if f.size <= cap]


def _stream(rng, cap, k):
    """k random valid frames (payload within cap): (wire bytes, [frames])."""
    pick = _small(CORPUS, cap)
    fs = [pick[rng.below(len(pick))] for _ in range(k)]
    return b"".join(f.wire for f in fs), fs


# Expectations: what an input may deliver (besides the sentinel), and what it must count.
ANY = 0  # anything may come out (random bytes); deliveries are counted, not failed
SUBSET = 1  # only frames of `allowed` may come out
EXACT = 2  # exactly `allowed`, in order, and no error counted
NOTHING = 3  # nothing may come out, and an error must be counted


def case(seed, index, cap=P.MAX_PAYLOAD):
    """Input ``index`` of ``seed`` for a decoder of payload cap ``cap``:
    (kind, data bytes, expectation, allowed keys, extra dict)."""
    rng = Rng(seed * 1000003 + index)
    total = 0
    for w in WEIGHTS:
        total += w
    r = rng.below(total)
    k = 0
    while r >= WEIGHTS[k]:
        r -= WEIGHTS[k]
        k += 1
    kind = KINDS[k]
    return (kind,) + _GEN[k](rng, cap)


def _gen_random(rng, cap):
    style = rng.below(8)
    if style == 0:  # a long run without a delimiter: the overflow path, up to 3x the buffer
        n = rng.between(1, 3 * (cap + cap // 254 + 12))
        off = rng.below(_POOL_SIZE - n)
        data = _NONZERO[off : off + n]
    elif style == 1:  # mostly delimiters
        n = rng.between(1, 64)
        data = bytes(0 if rng.below(4) else rng.between(1, 255) for _ in range(n))
    else:
        n = rng.between(1, 2048) if style < 7 else rng.between(1, 16)
        off = rng.below(_POOL_SIZE - n)
        data = _POOL[off : off + n]
    return data, ANY, (), None


def _gen_bitflip(rng, cap):
    pick = _small(CORPUS, cap)
    f = pick[rng.below(len(pick))]
    data = bytearray(f.wire)
    for _ in range(rng.between(1, 3)):
        bit = rng.below(len(data) * 8)
        data[bit >> 3] ^= 1 << (bit & 7)
    return bytes(data), SUBSET, (f.key,), None


def _gen_truncate(rng, cap):
    wire, fs = _stream(rng, cap, rng.between(1, 3))
    if rng.chance(2):
        data = wire[: rng.between(1, len(wire) - 1)]  # the tail never came
    else:
        data = wire[rng.between(1, len(wire) - 1) :]  # started listening mid-frame
    return data, SUBSET, [f.key for f in fs], None


def _gen_dupreorder(rng, cap):
    wire, fs = _stream(rng, cap, rng.between(2, 5))
    cuts = sorted(rng.between(1, len(wire) - 1) for _ in range(rng.between(1, 7)))
    chunks = []
    prev = 0
    for c in cuts:
        chunks.append(wire[prev:c])
        prev = c
    chunks.append(wire[prev:])
    for _ in range(rng.between(1, 4)):
        op = rng.below(3)
        i = rng.below(len(chunks))
        if op == 0:  # duplicated
            chunks.insert(rng.below(len(chunks) + 1), chunks[i])
        elif op == 1:  # reordered
            j = rng.below(len(chunks))
            chunks[i], chunks[j] = chunks[j], chunks[i]
        elif len(chunks) > 1:  # lost
            chunks.pop(i)
    return b"".join(chunks), SUBSET, [f.key for f in fs], None


def _filled(rng, n):
    """n payload bytes, with or without zeros (changes the COBS size)."""
    src = _NONZERO if rng.chance(2) else _POOL
    if n <= _POOL_SIZE - 1:
        off = rng.below(_POOL_SIZE - n)
        return src[off : off + n]
    return (src * (n // _POOL_SIZE + 1))[:n]


def _gen_caps(rng, cap):
    style = rng.below(7)
    seq = rng.below(0x10000)
    if style == 0:  # exactly at the cap, a known type: delivered
        payload = struct.pack("<II", 1, 0) + _filled(rng, cap - 8)
        return raw_wire(P.VERSION, P.FRAME_CHUNK, seq, payload), EXACT, (_key(P.FRAME_CHUNK, seq, payload),), None
    if style == 1:  # a little beyond: decodes too long (or its encoding already overflows)
        payload = _filled(rng, cap + rng.between(1, 40))
        return raw_wire(P.VERSION, P.FRAME_CHUNK, seq, payload), NOTHING, (), "overflows"
    if style == 2:  # far beyond, up to what a u16 length field can claim
        payload = _filled(rng, rng.between(cap + 41, 0xFFFF))
        return raw_wire(P.VERSION, P.EV_LOG, seq, payload), NOTHING, (), "overflows"
    if style == 3:  # the length field lies (the CRC is right for what was sent)
        n = rng.between(0, min(cap, 600))
        lie = (0, n + 1, n - 1, cap, cap + 1, 0xFFFF, rng.below(0x10000))[rng.below(7)]
        if lie == n or lie < 0:
            lie = n + 2
        return raw_wire(P.VERSION, P.EV_LOG, seq, _filled(rng, n), length=lie), NOTHING, (), "framing_errors"
    if style == 4:  # COBS-valid body too short for a header and a CRC
        raw = _filled(rng, rng.between(1, P.HEADER_SIZE + P.CRC_SIZE - 1))
        m = P.cobs_encode_into(raw, len(raw), _COBS_OUT)
        return bytes(_COBS_OUT[:m]), NOTHING, (), "framing_errors"
    if style == 5:  # a good header and payload with a wrong CRC
        payload = _filled(rng, rng.between(0, min(cap, 300)))
        right = P.crc32(payload, P.crc32(struct.pack("<BBHH", P.VERSION, P.EV_LOG, seq, len(payload))))
        wrong = right ^ (1 << rng.below(32))
        return raw_wire(P.VERSION, P.EV_LOG, seq, payload, crc=wrong), NOTHING, (), None
    # a frame whose COBS encoding ends in a full block (0xFF + 254 bytes), sometimes sent with
    # the optional extra 0x01 code after it: receivers MUST accept both forms
    n = rng.between(260, cap)
    body = bytearray(struct.pack("<II", 0x01010101, 0x01010101) + _NONZERO[: n - 8])
    body[n - 251] = 0  # then 250 non-zero payload bytes and (we retry until) 4 non-zero CRC bytes
    wire = b""
    for attempt in range(64):
        body[8] = (attempt % 255) + 1
        wire = raw_wire(P.VERSION, P.FRAME_CHUNK, seq, body)
        if wire[-256] == 0xFF:
            break
    key = _key(P.FRAME_CHUNK, seq, body)
    if rng.chance(2) and wire[-256] == 0xFF:
        wire = wire[:-1] + b"\x01\x00"
    return wire, EXACT, (key,), None


def _gen_unknown(rng, cap):
    seq = rng.below(0x10000)
    if rng.chance(2):
        mtype = rng.below(256)
        while mtype in P.SCHEMA:
            mtype = rng.below(256)
        payload = _filled(rng, rng.between(0, 64))
    else:  # a known type, payload shorter than its fixed part
        types = [t for t in sorted(P.SCHEMA) if P.payload_size(t) > 0]
        mtype = types[rng.below(len(types))]
        payload = _filled(rng, rng.below(P.payload_size(mtype)))
    return raw_wire(P.VERSION, mtype, seq, payload), EXACT, (_key(mtype, seq, payload),), "unknown_types"


def _gen_version(rng, cap):
    version = rng.between(2, 255) if rng.below(4) else 0
    seq = rng.below(0x10000)
    if rng.chance(3):  # CONNECT is frozen across versions: passed on if it has a version byte
        payload = bytes((version,)) + ("host-v%d" % version).encode() if rng.below(4) else b""
        wire = raw_wire(version, P.CMD_CONNECT, seq, payload)
        if payload:
            return wire, EXACT, (_key(P.CMD_CONNECT, seq, payload),), ("foreign_connect", version)
        return wire, NOTHING, (), ("version_errors", version)
    types = sorted(P.SCHEMA)
    mtype = types[rng.below(len(types))]
    if mtype == P.CMD_CONNECT:
        mtype = P.HELLO
    payload = _filled(rng, rng.between(0, 100))
    return raw_wire(version, mtype, seq, payload), NOTHING, (), ("version_errors", version)


def _gen_splits(rng, cap):
    wire, fs = _stream(rng, cap, rng.between(1, 6))
    if rng.chance(4):  # empty frames between them are ignored silently
        wire = wire.replace(b"\x00\x00", b"\x00\x00\x00\x00")
    return wire, EXACT, [f.key for f in fs], None


_GEN = (_gen_random, _gen_bitflip, _gen_truncate, _gen_dupreorder, _gen_caps, _gen_unknown, _gen_version,
        _gen_splits)

_COUNTERS = ("frames", "crc_errors", "framing_errors", "overflows", "version_errors", "unknown_types",
             "bytes_dropped")


def _counters(dec):
    return (dec.frames, dec.crc_errors, dec.framing_errors, dec.overflows, dec.version_errors, dec.unknown_types,
            dec.bytes_dropped)


def _segments(data):
    """(number, total bytes) of the non-empty stretches between delimiters in data."""
    n = 0
    size = 0
    for s in data.split(b"\x00"):
        if s:
            n += 1
            size += len(s)
    return n, size


class _Target:
    """One decoder under test, with what the checks need to know about it."""

    def __init__(self, cap, decoder):
        self.dec = decoder(cap)
        self.cap = cap
        self.buf = self.dec._buf
        self.raw = self.dec._raw
        self.buf_len = len(self.dec._buf)
        self.raw_len = len(self.dec._raw)


class _Heap:
    def __init__(self):
        self.peak = 0
        self.base = 0
        if IS_MICROPYTHON:
            import gc

            self.gc = gc
            gc.collect()
            self.base = gc.mem_alloc()
            self.method = "gc.mem_alloc() after gc.collect(), every %d inputs and after large ones" % _HEAP_EVERY
        else:
            import tracemalloc

            self.tm = tracemalloc
            self.was_tracing = tracemalloc.is_tracing()
            if not self.was_tracing:
                tracemalloc.start()
            tracemalloc.reset_peak()
            self.base = tracemalloc.get_traced_memory()[0]
            self.method = "tracemalloc peak over the run"

    def sample(self):
        if IS_MICROPYTHON:
            self.gc.collect()
            m = self.gc.mem_alloc()
            if m > self.peak:
                self.peak = m

    def finish(self):
        if IS_MICROPYTHON:
            self.sample()
        else:
            self.peak = self.tm.get_traced_memory()[1]
            if not self.was_tracing:
                self.tm.stop()


def digest(seed, count, cap=P.MAX_PAYLOAD):
    """CRC-32 over inputs 0..count-1 of seed: equal on every runtime (the inputs are the same)."""
    crc = 0
    for i in range(count):
        kind, data, _e, _a, _x = case(seed, i, cap)
        crc = P.crc32(data, P.crc32(kind.encode(), crc))
    return crc


def _alloc_per_frame(cap):
    """Bytes the decoder allocates per delivered frame (garbage only; nothing is kept)."""
    dec = P.Decoder(cap)
    stream = b"".join(f.wire for f in _small(CORPUS, min(cap, 300)))
    per = len(_small(CORPUS, min(cap, 300)))
    reps = 20

    def cb(mtype, seq, payload):
        pass

    dec.feed(stream, cb)  # warm up
    if IS_MICROPYTHON:
        import gc

        gc.collect()
        gc.disable()
        try:
            a = gc.mem_alloc()
            for _ in range(reps):
                dec.feed(stream, cb)
            b = gc.mem_alloc()
        finally:
            gc.enable()
        return (b - a) // (reps * per)
    import tracemalloc

    was = tracemalloc.is_tracing()
    if not was:
        tracemalloc.start()
    snap = tracemalloc.take_snapshot()
    tracemalloc.reset_peak()
    a = tracemalloc.get_traced_memory()[0]
    for _ in range(reps):
        dec.feed(stream, cb)
    peak = tracemalloc.get_traced_memory()[1]
    if not was:
        tracemalloc.stop()
    del snap
    return max(0, peak - a) // per  # CPython frees at once: the peak is what one frame needs


def run(n, seed=1, trace_heap=True, decoder=None):
    """Feed ``n`` inputs of ``seed``; the figures as a dict (``failures`` must be 0).

    Keys: runtime, inputs, seed, crashes, failures, first_failures (up to 5 descriptions with
    the (seed, index) to replay with ``case``), by_kind, delivered, random_delivered (frames
    that came out of random bytes: CRC-32 collisions, expected 0), totals (counters of both
    decoders), peak_heap_bytes, heap_method, decoder_buffer_bytes, alloc_per_frame_bytes,
    seconds, inputs_per_s. ``decoder``: the class under test (default ``protocol.Decoder``).
    """
    decoder = decoder or P.Decoder
    targets = (_Target(P.MAX_PAYLOAD, decoder), _Target(DEVICE_RX_MAX, decoder))
    heap = _Heap() if trace_heap else None
    by_kind = {}
    for k in KINDS:
        by_kind[k] = 0
    crashes = 0
    failures = 0
    first = []
    delivered_total = 0
    random_delivered = 0
    got = []
    sentinel_wire = SENTINEL.wire
    sentinel_key = SENTINEL.key

    def cb(mtype, seq, payload):
        got.append(_key(mtype, seq, payload))

    def fail(i, kind, why, data):
        if len(first) < _MAX_FAILURES_KEPT:
            first.append("seed %d input %d (%s, %d bytes): %s; starts %s" % (
                seed, i, kind, len(data), why, bytes(data[:48]).hex()))

    t0 = ticks_ms()
    for i in range(n):
        rng = Rng(seed * 7919 + i * 31 + 17)  # feeding choices: independent of the input's own rng
        tgt = targets[1 if rng.chance(4) else 0]
        dec = tgt.dec
        kind, data, expect, allowed, extra = case(seed, i, tgt.cap)
        by_kind[kind] += 1
        before = _counters(dec)
        del got[:]
        ok = True
        why = ""
        try:
            _feed_split(dec, data, cb, rng)
            dec.feed(sentinel_wire, cb)
        except Exception as e:  # the decoder must never raise on bad input
            crashes += 1
            ok = False
            why = "raised %s: %s" % (type(e).__name__, e)
            dec._n = 0  # go on with the next input from a frame boundary
            dec._skipping = False
        after = _counters(dec)
        if ok:
            why = _check(tgt, before, after, got, sentinel_key, data, expect, allowed, extra)
            ok = not why
        if not ok:
            failures += 1
            fail(i, kind, why, data)
        delivered = len(got) - 1
        delivered_total += delivered
        if kind == "random" and delivered > 0:
            random_delivered += delivered
        if heap is not None and IS_MICROPYTHON and (i % _HEAP_EVERY == 0 or len(data) > 8192):
            heap.sample()
    seconds = ticks_diff(ticks_ms(), t0) / 1000
    if heap is not None:
        heap.finish()
    totals = {}
    for j in range(len(_COUNTERS)):
        totals[_COUNTERS[j]] = _counters(targets[0].dec)[j] + _counters(targets[1].dec)[j]
    impl = sys.implementation
    return {
        "runtime": "%s %s" % (impl.name, ".".join(str(v) for v in impl.version[:3])),
        "inputs": n,
        "seed": seed,
        "crashes": crashes,
        "failures": failures,
        "first_failures": first,
        "by_kind": by_kind,
        "delivered": delivered_total,
        "random_delivered": random_delivered,
        "totals": totals,
        "peak_heap_bytes": heap.peak if heap else None,
        "heap_base_bytes": heap.base if heap else None,
        "heap_method": heap.method if heap else None,
        "decoder_buffer_bytes": targets[0].buf_len + targets[0].raw_len + targets[1].buf_len + targets[1].raw_len,
        "alloc_per_frame_bytes": _alloc_per_frame(P.MAX_PAYLOAD) if trace_heap else None,
        "seconds": seconds,
        "inputs_per_s": int(n / seconds) if seconds > 0 else None,
    }


def _feed_split(dec, data, cb, rng):
    """Feed data in random pieces: whole, 2..5 pieces, a byte at a time, or via feed(buf, cb, n)."""
    style = rng.below(8)
    n = len(data)
    if style == 0 and n <= 96:
        for j in range(n):
            dec.feed(data[j : j + 1], cb)
        return
    if style == 1:  # a reused receive buffer: n bytes are new, the rest is stale
        buf = bytearray(data)
        buf.extend(b"\x00\x01\x02\xff\x00" * 3)
        dec.feed(buf, cb, n)
        return
    if style >= 5 or n < 2:
        dec.feed(data, cb)
        return
    cuts = sorted(rng.between(1, n - 1) for _ in range(rng.between(1, 4)))
    prev = 0
    for c in cuts:
        dec.feed(data[prev:c], cb)
        prev = c
    dec.feed(data[prev:], cb)


def _check(tgt, before, after, got, sentinel_key, data, expect, allowed, extra):
    """'' if every invariant holds after one input and the sentinel, else what broke."""
    dec = tgt.dec
    if dec._buf is not tgt.buf or dec._raw is not tgt.raw:
        return "a preallocated buffer was replaced"
    if len(dec._buf) != tgt.buf_len or len(dec._raw) != tgt.raw_len:
        return "a preallocated buffer changed size"
    for j in range(len(before)):
        if after[j] < before[j]:
            return "counter %s went down" % _COUNTERS[j]
    if not got or got[-1] != sentinel_key:
        return "sentinel not delivered last (got %d frames)" % len(got)
    for k in got[:-1]:
        if k == sentinel_key:
            return "sentinel delivered twice"
    if dec._n or dec._skipping:
        return "not at a frame boundary after the sentinel"
    d_frames = after[0] - before[0]
    if d_frames != len(got):
        return "frames counter +%d but %d callbacks" % (d_frames, len(got))
    d_err = (after[1] - before[1]) + (after[2] - before[2]) + (after[3] - before[3]) + (after[4] - before[4])
    d_dropped = after[6] - before[6]
    segs, seg_bytes = _segments(data)
    out = got[:-1]
    n_out = len(out)
    # Each non-empty stretch: delivered once or counted once (a foreign CONNECT is both).
    connects = 0
    for k in out:
        if k[0] == P.CMD_CONNECT:
            connects += 1
    if not (segs <= n_out + d_err <= segs + connects):
        return "%d stretches, but %d delivered + %d errors counted" % (segs, n_out, d_err)
    if d_err > connects and not d_dropped:  # a foreign CONNECT passed on drops no bytes
        return "errors counted but no bytes_dropped"
    if n_out == 0 and d_dropped != seg_bytes:
        return "bytes_dropped +%d, the stretches held %d" % (d_dropped, seg_bytes)
    if expect == EXACT:
        if list(out) != list(allowed):
            return "delivered %r, expected %r" % (out, list(allowed))
        kind_extra = extra[0] if isinstance(extra, tuple) else extra
        if kind_extra == "foreign_connect":
            if after[4] - before[4] != 1 or dec.foreign_version != extra[1]:
                return "foreign CONNECT not counted in version_errors / foreign_version"
        elif d_err:
            return "%d errors counted on a good input" % d_err
        if kind_extra == "unknown_types" and after[5] - before[5] != 1:
            return "unknown type not counted"
    elif expect == NOTHING:
        if n_out:
            return "delivered %d frames from an input that must deliver none" % n_out
        if not d_err:
            return "bad input counted in no error counter"
        name = extra[0] if isinstance(extra, tuple) else extra
        if name:
            j = _COUNTERS.index(name)
            if after[j] - before[j] < 1:
                return "not counted in %s" % name
            if name == "version_errors" and dec.foreign_version != extra[1]:
                return "foreign_version %d, sent %d" % (dec.foreign_version, extra[1])
    elif expect == SUBSET:
        for k in out:
            if k not in allowed:
                return "delivered a frame that was never sent: %r" % (k,)
    return ""


def _main(argv):
    if argv and argv[0] == "--case":
        seed, index = int(argv[1]), int(argv[2])
        cap = int(argv[3]) if len(argv) > 3 else P.MAX_PAYLOAD
        kind, data, expect, allowed, extra = case(seed, index, cap)
        print(kind, len(data), bytes(data).hex())
        return
    n = int(argv[0]) if argv else 10000
    seed = int(argv[1]) if len(argv) > 1 else 1
    trace = not (len(argv) > 2 and argv[2] == "--no-heap")
    import json

    print(json.dumps(run(n, seed, trace)))


if __name__ == "__main__":
    _main(sys.argv[1:])
