"""Wire protocol v1: COBS, CRC-32, every message type, and a decoder that never raises.

Runs unchanged on MicroPython (tests/firmware/run.py) and CPython (pytest).
"""

import random
import struct

from _samples import SAMPLES
from _util import collect, raises, tohex
from magcam_fw import protocol as P

# ---------------------------------------------------------------------------------- COBS


def _cobs(data):
    """COBS body of data, with the encoder's leading and trailing 0x00 checked and stripped."""
    dst = bytearray(len(data) + len(data) // 254 + 3)
    m = P.cobs_encode_into(data, len(data), dst)
    out = bytes(dst[:m])
    assert out[0] == 0 and out[-1] == 0, tohex(out)
    body = out[1:-1]
    assert 0 not in body, tohex(out)
    return body


def _uncobs(body, cap=None):
    dst = bytearray(len(body) if cap is None else cap)
    n = P.cobs_decode_into(body, len(body), dst)
    return None if n < 0 else bytes(dst[:n])


_R1_FE = bytes(range(1, 255))  # 01..FE: 254 non-zero bytes

# (data, canonical COBS body): the examples of the COBS Wikipedia article.
COBS_VECTORS = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (_R1_FE, b"\xff" + _R1_FE),
    (b"\x00" + _R1_FE, b"\x01\xff" + _R1_FE),
    (bytes(range(1, 256)), b"\xff" + _R1_FE + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
]


def _ends_with_full_block(data):
    return len(data) >= 254 and 0 not in data[-254:] and (len(data) == 254 or data[-255] == 0)


def test_cobs_encode_known_vectors():
    for data, want in COBS_VECTORS:
        got = _cobs(data)
        if _ends_with_full_block(data):  # see test_cobs_encode_full_final_block_is_canonical
            assert got in (want, want + b"\x01"), tohex(got)
        else:
            assert got == want, (tohex(data), tohex(got), tohex(want))


def test_cobs_encode_full_final_block_is_canonical():
    # Wikipedia examples 7 and 8: data ending in exactly 254 non-zero bytes needs no final code
    # byte. Both forms decode the same, but byte-exact vectors shared with other implementations
    # (which emit the canonical form) differ, and the frame is a byte longer than it needs to be.
    for data, want in COBS_VECTORS:
        if _ends_with_full_block(data):
            got = _cobs(data)
            assert got == want, (len(data), tohex(got[-3:]))
    data = bytes((i % 255) + 1 for i in range(508))  # two full blocks, nothing after
    assert _cobs(data) == b"\xff" + data[:254] + b"\xff" + data[254:], tohex(_cobs(data)[-3:])


def test_cobs_decode_known_vectors():
    for data, body in COBS_VECTORS:
        assert _uncobs(body) == data, tohex(body)
        assert _uncobs(body, cap=len(data)) == data  # an exact-size destination is enough


def test_cobs_full_final_block_both_forms_decode():
    # Canonical (no trailing code byte) and the encoder's form with a trailing 0x01.
    for data in (_R1_FE, b"\x00" + _R1_FE, b"\x00" * 3 + _R1_FE):
        body = _cobs(data)
        assert _uncobs(body) == data
        if body[-1] == 1:
            assert _uncobs(body[:-1]) == data
        else:
            assert _uncobs(body + b"\x01") == data


def test_cobs_round_trip_lengths_and_patterns():
    for n in (0, 1, 2, 253, 254, 255, 256, 507, 508, 509, 600):
        patterns = (
            bytes((i % 255) + 1 for i in range(n)),  # no zeros
            bytes(n),  # all zeros
            bytes(0 if i % 7 == 3 else (i & 0xFF) | 1 for i in range(n)),
            bytes(0 if i == n - 1 else 0x55 for i in range(n)),  # zero last
        )
        for data in patterns:
            body = _cobs(data)
            assert len(body) <= n + n // 254 + 1, (n, len(body))
            assert _uncobs(body) == data, n


def test_cobs_decode_rejects_bad_input():
    assert _uncobs(b"\x03\x11\x00\x22") is None  # zero inside
    assert _uncobs(b"\x05\x11\x22") is None  # block runs past the end
    assert _uncobs(b"\xff" + b"\x01" * 10) is None  # truncated full block
    assert _uncobs(b"\x05\x11\x22\x33\x44", cap=3) is None  # destination too small
    assert _uncobs(b"\x03\x11\x22\x02\x33", cap=3) is None  # implied zero does not fit
    assert _uncobs(b"\x03\x11\x22\x02\x33", cap=4) == b"\x11\x22\x00\x33"


def test_cobs_decode_uses_only_n_bytes():
    src = bytearray(b"\x03\x11\x22\x02\x33\x07\x07\x07")
    dst = bytearray(16)
    assert P.cobs_decode_into(src, 5, dst) == 4
    assert bytes(dst[:4]) == b"\x11\x22\x00\x33"


# ---------------------------------------------------------------------------------- CRC-32


def test_crc32_known_values():
    for f in (P.crc32, P.crc32_soft):
        assert f(b"123456789") == 0xCBF43926
        assert f(b"") == 0
        assert f(b"The quick brown fox jumps over the lazy dog") == 0x414FA339
        assert f(b"\x00") == 0xD202EF8D
        assert f(b"\xff" * 4) == 0xFFFFFFFF


def test_crc32_soft_agrees_with_crc32():
    random.seed(1)
    for n in (1, 2, 3, 7, 64, 255, 1000):
        data = bytes(random.getrandbits(8) for _ in range(n))
        assert P.crc32_soft(data) == P.crc32(data), n
        assert P.crc32_soft(bytearray(data)) == P.crc32(data)
        assert P.crc32_soft(memoryview(data)) == P.crc32(data)
        for init in (0, 1, 0x12345678, 0xFFFFFFFF):
            assert P.crc32_soft(data, init) == P.crc32(data, init), (n, init)
        # Chaining over a split gives the CRC of the whole.
        k = n // 3
        assert P.crc32_soft(data[k:], P.crc32_soft(data[:k])) == P.crc32(data)


# ---------------------------------------------------------------------------------- messages


def _encode(mtype, seq, fields, enc=None):
    values, tail = P.pack_fields(mtype, fields)
    return bytes((enc or P.Encoder()).encode(mtype, seq, values, tail))


def _decode_one(wire):
    dec = P.Decoder()
    got = collect(dec, wire)
    assert len(got) == 1, (len(got), dec.stats())
    assert dec.errors == 0 and dec.frames == 1, dec.stats()
    return got[0]


def test_samples_cover_every_message_type():
    covered = {s[1] for s in SAMPLES}
    for mtype in P.SCHEMA:
        assert mtype in covered, hex(mtype)
        assert P.payload_size(mtype) == struct.calcsize(P.SCHEMA[mtype][1])
    assert P.payload_size(0x7E) == -1


def test_round_trip_every_sample():
    enc = P.Encoder()
    for name, mtype, seq, fields in SAMPLES:
        wire = _encode(mtype, seq, fields, enc)
        got_type, got_seq, payload = _decode_one(wire)
        assert (got_type, got_seq) == (mtype, seq), name
        msg = P.unpack(mtype, payload)
        assert msg.pop("type") == P.SCHEMA[mtype][0], name
        assert msg == fields, (name, msg, fields)


def test_round_trip_4096_byte_chunk_with_many_zeros():
    data = bytes(0 if (i % 5 == 0 or 1000 <= i < 1300) else (i * 7) & 0xFF for i in range(4096))
    assert data.count(b"\x00") > 1000
    fields = {"frame_id": 42, "offset": 8192, "data": data}
    wire = _encode(P.FRAME_CHUNK, 77, fields)
    assert 0 not in wire[1:-1]
    mtype, seq, payload = _decode_one(wire)
    assert (mtype, seq) == (P.FRAME_CHUNK, 77)
    msg = P.unpack(mtype, payload)
    assert msg["data"] == data and msg["frame_id"] == 42 and msg["offset"] == 8192


def test_round_trip_largest_payload():
    data = bytes((i & 0xFF) or 1 for i in range(P.MAX_PAYLOAD - 8))  # no zeros: all full blocks
    wire = _encode(P.FRAME_CHUNK, 1, {"frame_id": 1, "offset": 0, "data": data})
    _, _, payload = _decode_one(wire)
    assert P.unpack(P.FRAME_CHUNK, payload)["data"] == data


def test_text_tail_is_utf8_bytes():
    text = "\u00b5m \u2013 caf\u00e9"
    wire = _encode(P.EV_LOG, 1, {"t": 1, "level": 2, "text": text})
    _, _, payload = _decode_one(wire)
    assert len(payload) == P.payload_size(P.EV_LOG) + len(text.encode())
    assert P.unpack(P.EV_LOG, payload)["text"] == text
    # A str tail and its UTF-8 bytes give the same wire.
    assert bytes(P.Encoder().encode(P.EV_LOG, 1, (1, 2), text.encode())) == wire


def test_unpack_bad_utf8_text_does_not_raise():
    payload = struct.pack("<HB", 5, 1) + b"ok \xff\xfe"
    msg = P.unpack(P.NAK, payload)
    assert msg["ack_seq"] == 5 and msg["message"] == "ok ??"


def test_seq_wraps_to_16_bits():
    wire = _encode(P.CMD_PING, 0x12345, {})
    assert _decode_one(wire)[1] == 0x2345


def test_encoder_refuses_payload_over_its_max():
    enc = P.Encoder(64)
    e = raises(ValueError, enc.encode, P.FRAME_CHUNK, 1, (1, 0), bytes(57))  # 8 + 57 = 65
    assert "large" in str(e)
    wire = bytes(enc.encode(P.FRAME_CHUNK, 2, (1, 0), bytes(56)))  # exactly 64: fine
    assert P.unpack(P.FRAME_CHUNK, _decode_one(wire)[2])["data"] == bytes(56)
    # Text is measured in UTF-8 bytes, not characters: 5 + 2 * 30 = 65.
    raises(ValueError, enc.encode, P.EV_LOG, 3, (0, 1), "\u00b5" * 30)
    enc.encode(P.EV_LOG, 3, (0, 1), "\u00b5" * 29 + "x")
    raises(ValueError, P.Encoder().encode, P.FRAME_CHUNK, 1, (1, 0), bytes(P.MAX_PAYLOAD - 7))


def test_encoder_view_is_reused_and_buffers_fixed():
    enc = P.Encoder()
    out0, raw0 = enc._out, enc._raw
    a = bytes(enc.encode(P.CMD_SET_LENS, 1, (5,)))
    for mtype, seq, fields in [(s[1], s[2], s[3]) for s in SAMPLES]:
        _encode(mtype, seq, fields, enc)
    assert bytes(enc.encode(P.CMD_SET_LENS, 1, (5,))) == a
    assert enc._out is out0 and enc._raw is raw0


# ---------------------------------------------------------------------------------- decoder


def _raw_frame(version, mtype, seq, payload, length=None):
    """A frame built by hand (CRC correct), so the header can lie."""
    if length is None:
        length = len(payload)
    body = struct.pack("<BBHH", version, mtype, seq, length) + payload
    return body + struct.pack("<I", P.crc32(body))


def _wire_of_raw(raw):
    return b"\x00" + _cobs(raw) + b"\x00"


PING1 = _encode(P.CMD_PING, 1, {})
LENS2 = _encode(P.CMD_SET_LENS, 2, {"position": 1234})
LENS3 = _encode(P.CMD_SET_LENS, 3, {"position": -7})
M_PING1 = (P.CMD_PING, 1, b"")
M_LENS2 = (P.CMD_SET_LENS, 2, struct.pack("<i", 1234))
M_LENS3 = (P.CMD_SET_LENS, 3, struct.pack("<i", -7))


def test_decoder_ignores_empty_frames():
    dec = P.Decoder()
    assert collect(dec, b"\x00\x00\x00" + PING1 + b"\x00\x00" + LENS2) == [M_PING1, M_LENS2]
    assert dec.errors == 0 and dec.bytes_dropped == 0


def test_decoder_garbage_before_and_between_frames():
    dec = P.Decoder()
    stream = b"\x13\x37garbage\xff" + PING1 + b"\x01\x02\x03" + LENS2 + b"\x00\x05\x00zzz" + LENS3
    assert collect(dec, stream) == [M_PING1, M_LENS2, M_LENS3]
    s = dec.stats()
    assert s["frames"] == 3
    assert s["crc_errors"] + s["framing_errors"] == 4, s  # the three garbage runs and "\x05"
    assert s["bytes_dropped"] == len(b"\x13\x37garbage\xff") + 3 + 1 + 3, s


def test_decoder_garbage_without_delimiter_at_end_is_held():
    dec = P.Decoder()
    assert collect(dec, PING1 + b"\x11\x22") == [M_PING1]
    assert dec.errors == 0  # nothing judged until a delimiter arrives
    assert collect(dec, LENS2) == [M_LENS2]
    assert dec.errors == 1


def test_decoder_every_single_bit_flip():
    dec = P.Decoder()
    before = 0
    for bit in range(len(LENS2) * 8):
        bad = bytearray(LENS2)
        bad[bit // 8] ^= 1 << (bit % 8)
        got = collect(dec, PING1 + bytes(bad) + LENS3)
        assert got == [M_PING1, M_LENS3], (bit, got)  # never the corrupted one, never a loss
        assert dec.crc_errors + dec.framing_errors > before, bit
        assert dec.version_errors == 0 and dec.unknown_types == 0 and dec.overflows == 0
        before = dec.crc_errors + dec.framing_errors
    assert dec.frames == 2 * len(LENS2) * 8


def test_decoder_truncated_frame_then_good_one():
    for cut in range(1, len(LENS2) - 1):
        dec = P.Decoder()
        assert collect(dec, LENS2[:cut] + LENS3) == [M_LENS3], cut
        assert dec.errors == (1 if cut > 1 else 0), (cut, dec.stats())  # cut=1: just a delimiter


def test_decoder_frame_split_across_feeds_at_every_point():
    stream = PING1 + LENS2
    for cut in range(len(stream) + 1):
        dec = P.Decoder()
        got = collect(dec, stream[:cut]) + collect(dec, stream[cut:])
        assert got == [M_PING1, M_LENS2], cut
        assert dec.errors == 0


def test_decoder_overflow_then_resync():
    big = bytes(P.Encoder(20000).encode(P.FRAME_CHUNK, 9, (1, 0), bytes(range(1, 256)) * 40))
    assert len(big) > P.HEADER_SIZE + P.MAX_PAYLOAD + P.CRC_SIZE + 100
    for piece in (len(big) + 100, 1000, 333):  # in one feed, and spread over many
        dec = P.Decoder()
        buf0, raw0 = dec._buf, dec._raw
        stream = PING1 + big + LENS2
        got = []
        for i in range(0, len(stream), piece):
            got += collect(dec, stream[i : i + piece])
        assert got == [M_PING1, M_LENS2], piece
        assert dec.overflows == 1, dec.stats()
        assert dec.crc_errors == 0 and dec.framing_errors == 0, dec.stats()
        assert dec.bytes_dropped == len(big) - 2, dec.stats()  # all but the two delimiters
        assert dec._buf is buf0 and dec._raw is raw0


def test_decoder_frame_just_over_a_small_cap():
    dec = P.Decoder(64)
    ok = bytes(P.Encoder(200).encode(P.FRAME_CHUNK, 1, (1, 0), bytes(56)))
    over = bytes(P.Encoder(200).encode(P.FRAME_CHUNK, 2, (1, 0), bytes(57)))
    way_over = bytes(P.Encoder(200).encode(P.FRAME_CHUNK, 3, (1, 0), b"\x55" * 150))
    got = collect(dec, over + ok + way_over + ok)
    assert [g[1] for g in got] == [1, 1]
    # Over the cap is an overflow whether the encoding or only the decoded size is too long.
    assert dec.overflows == 2 and dec.framing_errors == 0, dec.stats()


def test_decoder_length_field_lies():
    for length in (1, 3, 5, P.MAX_PAYLOAD + 1, 0xFFFF):
        dec = P.Decoder()
        wire = _wire_of_raw(_raw_frame(1, P.CMD_SET_LENS, 4, b"\x01\x02\x03\x04", length))
        assert collect(dec, wire + PING1) == [M_PING1], length
        assert dec.framing_errors == 1 and dec.crc_errors == 0, (length, dec.stats())
    # Length 0 but a payload, and the right length: only the honest one is delivered.
    dec = P.Decoder()
    lying = _wire_of_raw(_raw_frame(1, P.CMD_PING, 5, b"\x00\x00", 0))
    honest = _wire_of_raw(_raw_frame(1, P.CMD_PING, 6, b""))
    assert collect(dec, lying + honest) == [(P.CMD_PING, 6, b"")]
    assert dec.framing_errors == 1


def test_decoder_too_short_for_a_header():
    dec = P.Decoder()
    for raw in (b"\x01", b"\x01\x41\x01\x00\x00", b"\x01\x41\x01\x00\x00\x00\x00\x00\x00"):
        collect(dec, _wire_of_raw(raw))
    assert dec.framing_errors == 3 and dec.frames == 0


def test_decoder_wrong_version():
    dec = P.Decoder()
    for version in (0, 2, 255):
        wire = _wire_of_raw(_raw_frame(version, P.CMD_PING, 1, b""))
        assert collect(dec, wire + LENS2) == [M_LENS2]
    assert dec.version_errors == 3 and dec.crc_errors == 0 and dec.framing_errors == 0
    assert dec.frames == 3 and dec.errors == 3


def test_decoder_unknown_type_is_counted_and_delivered_for_an_answer():
    # Well-formed but unreadable: counted, and delivered so the device can NAK it (no silent
    # timeout on the host); unpack() refuses it with ValueError.
    dec = P.Decoder()
    for mtype in (0x00, 0x3F, 0x7E, 0xFF):
        wire = _wire_of_raw(_raw_frame(1, mtype, 1, b"\x01\x02\x03"))
        assert collect(dec, wire + LENS2) == [(mtype, 1, b"\x01\x02\x03"), M_LENS2]
        assert not P.readable(mtype, b"\x01\x02\x03")
        assert raises(ValueError, P.unpack, mtype, b"\x01\x02\x03")
    assert dec.unknown_types == 4 and dec.errors == 0
    # A known type whose payload is shorter than its fixed part: the same.
    wire = _wire_of_raw(_raw_frame(1, P.CMD_SET_LENS, 1, b"\x01\x02"))
    assert collect(dec, wire + LENS3) == [(P.CMD_SET_LENS, 1, b"\x01\x02"), M_LENS3]
    assert dec.unknown_types == 5 and not P.readable(P.CMD_SET_LENS, b"\x01\x02")


def test_decoder_passes_a_foreign_connect_so_versions_can_be_told():
    dec = P.Decoder()
    connect_v9 = _wire_of_raw(_raw_frame(9, P.CMD_CONNECT, 5, b"\x09future"))
    ping_v9 = _wire_of_raw(_raw_frame(9, P.CMD_PING, 6, b""))
    assert collect(dec, connect_v9 + ping_v9 + LENS2) == [(P.CMD_CONNECT, 5, b"\x09future"), M_LENS2]
    assert dec.version_errors == 2 and dec.foreign_version == 9


def test_decoder_longer_payload_than_fixed_part_is_delivered():
    # Forward compatibility: a newer peer may append fields; the known part still reads.
    wire = _wire_of_raw(_raw_frame(1, P.CMD_SET_LENS, 8, struct.pack("<i", -3) + b"\x09\x09"))
    mtype, _, payload = _decode_one(wire)
    assert P.unpack(mtype, payload)["position"] == -3


def _mixed_stream():
    enc = P.Encoder()
    parts = [b"junk\x01\x02"]
    want = []
    for name, mtype, seq, fields in SAMPLES:
        parts.append(_encode(mtype, seq, fields, enc))
        want.append((mtype, seq))
        parts.append(bytes((seq * 13 + i) & 0xFF for i in range(seq % 5)))
    return b"".join(parts), want


def test_decoder_byte_at_a_time_matches_one_feed():
    stream, want = _mixed_stream()
    one = P.Decoder()
    a = collect(one, stream)
    assert [m[:2] for m in a] == want
    bytewise = P.Decoder()
    b = []
    for i in range(len(stream)):
        b += collect(bytewise, stream[i : i + 1])
    assert a == b
    assert one.stats() == bytewise.stats()


def test_decoder_feed_with_n_ignores_stale_bytes():
    # As Link.poll does: one receive buffer reused, only its first n bytes are new.
    buf = bytearray(256)
    buf[: len(PING1) + len(LENS2)] = PING1 + LENS2
    dec = P.Decoder()
    assert collect(dec, buf, len(PING1)) == [M_PING1]
    assert dec.errors == 0 and dec.frames == 1
    # n in the middle of a frame: the rest arrives with the next read.
    buf[: len(LENS3)] = LENS3
    assert collect(dec, buf, 5) == []
    buf[: len(LENS3) - 5] = LENS3[5:]
    assert collect(dec, buf, len(LENS3) - 5) == [M_LENS3]
    assert collect(dec, buf, 0) == []
    assert dec.errors == 0 and dec.frames == 2


def test_decoder_feed_returns_number_delivered():
    dec = P.Decoder()
    assert dec.feed(PING1 + b"\x01\x02" + LENS2 + LENS3, lambda t, s, p: None) == 3
    assert dec.feed(b"\x05\x05\x00", lambda t, s, p: None) == 0


# ---------------------------------------------------------------------------------- fuzz


def _rand_bytes(n, zero_below=32):
    out = bytearray(n)
    for i in range(n):
        b = random.getrandbits(8)
        out[i] = 0 if b < zero_below else b
    return bytes(out)


def _check_fixed(dec, bufs):
    assert dec._buf is bufs[0] and dec._raw is bufs[1]
    assert len(dec._buf) == bufs[2] and len(dec._raw) == bufs[3]


def test_decoder_never_raises_on_random_bytes():
    random.seed(20240601)
    decs = [P.Decoder(), P.Decoder(64), P.Decoder(16)]
    fixed = [(d._buf, d._raw, len(d._buf), len(d._raw)) for d in decs]
    delivered = []

    def cb(mtype, seq, payload):
        # Anything delivered is well formed: a known type that unpacks.
        delivered.append(P.unpack(mtype, payload))

    for i in range(3000):
        data = _rand_bytes(random.getrandbits(7), zero_below=random.getrandbits(6))
        dec = decs[i % 3]
        dec.feed(data, cb)
        _check_fixed(dec, fixed[i % 3])
    for d in decs:
        s = d.stats()
        assert min(s.values()) >= 0
        assert d.crc_errors + d.framing_errors > 100
    assert decs[1].overflows > 0 and decs[2].overflows > 0


def test_decoder_never_raises_on_cobs_valid_random_frames():
    # Random bodies that pass COBS: reach the CRC, length, version and type checks.
    random.seed(7)
    dec = P.Decoder(64)
    fixed = (dec._buf, dec._raw, len(dec._buf), len(dec._raw))
    for i in range(1500):
        if i % 3 == 0:  # right CRC, random header: version, type and length checks
            payload = _rand_bytes(random.getrandbits(6))
            raw = _raw_frame(
                1 if i % 2 else random.getrandbits(8),
                random.getrandbits(8),
                i,
                payload,
                random.getrandbits(7) if i % 5 == 0 else None,
            )
        else:
            raw = _rand_bytes(random.getrandbits(7))
        dec.feed(_wire_of_raw(raw), lambda t, s, p: P.readable(t, p) and P.unpack(t, p))
        _check_fixed(dec, fixed)
    assert dec.crc_errors > 0 and dec.framing_errors > 0 and dec.version_errors > 0
    assert dec.unknown_types > 0 and dec.overflows > 0


def test_good_frames_survive_random_garbage():
    random.seed(99)
    enc = P.Encoder()
    for cap in (P.MAX_PAYLOAD, 300):
        dec = P.Decoder(cap)
        fixed = (dec._buf, dec._raw, len(dec._buf), len(dec._raw))
        want = []
        got = []
        small = [s for s in SAMPLES if len(_encode(s[1], 0, s[3], enc)) < cap]
        for i in range(300):
            _, mtype, _, fields = small[i % len(small)]
            garbage = _rand_bytes(random.getrandbits(9 if i % 10 == 0 else 5), zero_below=random.getrandbits(5))
            wire = _encode(mtype, i, fields, enc)
            want.append((mtype, i))
            stream = garbage + wire + _rand_bytes(random.getrandbits(3))
            k = random.getrandbits(4)  # split the stream across two feeds somewhere
            got += collect(dec, stream[:k]) + collect(dec, stream[k:])
            _check_fixed(dec, fixed)
        assert [(g[0], g[1]) for g in got] == want, cap
        assert dec.frames == 300


# ---------------------------------------------------------------------------------- checks


def test_check_capture_accepts_good_requests():
    assert P.check_capture(640, 480, 10000, 1.0) is None
    assert P.check_capture(16, 16, 1, 0.001) is None
    assert P.check_capture(P.MAX_FRAME_DIM, P.MAX_FRAME_BYTES // 2 // P.MAX_FRAME_DIM, 60000000, 64) is None


def test_check_capture_rejects_each_bad_kind():
    cases = [
        ((14, 480, 10000, 1.0), "size"),
        ((640, 0, 10000, 1.0), "size"),
        ((P.MAX_FRAME_DIM + 2, 16, 10000, 1.0), "size"),
        ((-640, 480, 10000, 1.0), "size"),
        ((641, 480, 10000, 1.0), "even"),
        ((640, 481, 10000, 1.0), "even"),
        ((P.MAX_FRAME_DIM, P.MAX_FRAME_DIM, 10000, 1.0), "large"),
        ((640, 480, 0, 1.0), "exposure"),
        ((640, 480, 60000001, 1.0), "exposure"),
        ((640, 480, 10000, 0.0), "gain"),
        ((640, 480, 10000, -1.0), "gain"),
        ((640, 480, 10000, 64.5), "gain"),
        ((640, 480, 10000, float("nan")), "gain"),
        ((640, 480, 10000, float("inf")), "gain"),
    ]
    for args, word in cases:
        why = P.check_capture(*args)
        assert why is not None and word in why, (args, why)


GOOD_BEGIN = {
    "frame_id": 3,
    "width": 640,
    "height": 480,
    "cfa": 3,
    "bits": 12,
    "black_level": 256,
    "white_level": 4095,
    "exposure_us": 10000,
    "analog_gain": 2.0,
    "timestamp_ms": 1,
    "lens_position": 0,
    "total_bytes": 640 * 480 * 2,
    "chunk_size": 4096,
}


def _begin(**changes):
    f = dict(GOOD_BEGIN)
    f.update(changes)
    return f


def test_check_frame_begin_accepts_good_headers():
    assert P.check_frame_begin(GOOD_BEGIN) is None
    assert P.check_frame_begin(_begin(bits=16, white_level=65535, black_level=0)) is None
    assert P.check_frame_begin(_begin(bits=8, black_level=16, white_level=255)) is None
    assert P.check_frame_begin(_begin(chunk_size=1)) is None
    assert P.check_frame_begin(_begin(chunk_size=P.MAX_PAYLOAD - 8)) is None
    # And after a trip over the wire, as the host sees it.
    wire = _encode(P.FRAME_BEGIN, 1, GOOD_BEGIN)
    msg = P.unpack(P.FRAME_BEGIN, _decode_one(wire)[2])
    assert P.check_frame_begin(msg) is None


def test_check_frame_begin_rejects_each_bad_kind():
    cases = [
        (_begin(width=8, total_bytes=8 * 480 * 2), "size"),
        (_begin(height=P.MAX_FRAME_DIM + 2), "size"),
        (_begin(width=639, total_bytes=639 * 480 * 2), "even"),
        (_begin(exposure_us=0), "exposure"),
        (_begin(analog_gain=0.0), "gain"),
        (_begin(cfa=4), "CFA"),
        (_begin(bits=7, white_level=100), "bits"),
        (_begin(bits=17), "bits"),
        (_begin(black_level=4095), "levels"),
        (_begin(black_level=5000, white_level=4000), "levels"),
        (_begin(white_level=4096), "levels"),
        (_begin(bits=10, white_level=1024), "levels"),
        (_begin(total_bytes=640 * 480 * 2 + 2), "total_bytes"),
        (_begin(total_bytes=640 * 480 * 2 - 1), "total_bytes"),
        (_begin(total_bytes=0), "total_bytes"),
        (_begin(chunk_size=0), "chunk"),
        (_begin(chunk_size=P.MAX_PAYLOAD - 7), "chunk"),
    ]
    for f, word in cases:
        why = P.check_frame_begin(f)
        assert why is not None and word in why, (f, why)
