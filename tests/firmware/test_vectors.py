"""Shared test vectors (vectors_v1.json): every runtime encodes and decodes them byte for byte.

The file is written by make_vectors.py on CPython; here each runtime checks it independently,
so MicroPython and CPython are held to the same wire bytes.
"""

from _util import collect, load_json, tohex, unhex
from magcam_fw import protocol as P

VECTORS = load_json("vectors_v1.json")


def _fields(v):
    """JSON fields -> the values unpack() gives (``<name>_hex`` strings become bytes)."""
    out = {}
    for k, val in v["fields"].items():
        if k.endswith("_hex"):
            out[k[:-4]] = unhex(val)
        else:
            out[k] = val
    return out


def test_vectors_cover_every_message_type():
    types = {v["type"] for v in VECTORS}
    for mtype in P.SCHEMA:
        assert mtype in types, hex(mtype)
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names))


def test_encoding_fields_gives_wire_hex():
    enc = P.Encoder()
    for v in VECTORS:
        values, tail = P.pack_fields(v["type"], _fields(v))
        assert tohex(enc.encode(v["type"], v["seq"], values, tail)) == v["wire_hex"], v["name"]


def test_decoding_wire_hex_gives_fields():
    for v in VECTORS:
        dec = P.Decoder()
        got = collect(dec, unhex(v["wire_hex"]))
        assert len(got) == 1 and dec.errors == 0, (v["name"], dec.stats())
        mtype, seq, payload = got[0]
        assert (mtype, seq) == (v["type"], v["seq"]), v["name"]
        msg = P.unpack(mtype, payload)
        assert msg.pop("type") == P.SCHEMA[mtype][0]
        assert msg == _fields(v), (v["name"], msg)


def test_all_vectors_in_one_stream():
    stream = unhex("".join(v["wire_hex"] for v in VECTORS))
    for step in (len(stream), 7, 1):
        dec = P.Decoder()
        got = []
        for i in range(0, len(stream), step):
            got += collect(dec, stream[i : i + step])
        assert [(g[0], g[1]) for g in got] == [(v["type"], v["seq"]) for v in VECTORS], step
        assert dec.errors == 0 and dec.unknown_types == 0


def test_hand_checked_vectors():
    # PING seq 1: header 01 41 01 00 00 00, CRC-32 0xA7B1649A (LE 9A 64 B1 A7), then COBS:
    # [01 41 01]0 -> 04 01 41 01, []0 -> 01, []0 -> 01, [9A 64 B1 A7] -> 05 9A 64 B1 A7.
    by_name = {v["name"]: v for v in VECTORS}
    assert by_name["hand_ping_seq1"]["wire_hex"] == "00" + "04014101" + "01" + "01" + "059a64b1a7" + "00"
    assert P.crc32(unhex("014101000000")) == 0xA7B1649A
    assert P.crc32_soft(unhex("014101000000")) == 0xA7B1649A
    # SET_LENS seq 42 position 1234: raw 01 44 2A 00 04 00 D2 04 00 00 05 B4 45 F7.
    assert (
        by_name["hand_set_lens_seq42"]["wire_hex"] == "00" + "0401442a" + "0204" + "03d204" + "01" + "0505b445f7" + "00"
    )
    assert P.crc32(unhex("01442a000400d2040000")) == 0xF745B405
