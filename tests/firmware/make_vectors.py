"""Regenerate tests/firmware/vectors_v1.json, the protocol's shared test vectors (CPython only).

    python tests/firmware/make_vectors.py           # rewrite the file
    python tests/firmware/make_vectors.py --check   # exit 1 if the file is not what it would write

Each vector: ``{"name", "type", "seq", "fields", "wire_hex"}``; bytes fields are hex strings
under ``<field>_hex``. Wire bytes come from the firmware's Encoder, and every one is checked
here against an independent reference (zlib's CRC-32, struct, a canonical COBS written from
the COBS paper) before it is written, so the file is not only the encoder agreeing with itself.
The hand-checked vectors below are written out byte by byte.
"""

import json
import struct
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "firmware")]

from _samples import SAMPLES
from magcam_fw import protocol as P

OUT = HERE / "vectors_v1.json"

# Derived by hand, not by the encoder:
#
# CMD_PING (0x41), seq 1, empty payload:
#   header  01 41 01 00 00 00          version 1, type 0x41, seq 1 (u16 LE), length 0 (u16 LE)
#   crc32   zlib.crc32(01 41 01 00 00 00) = 0xA7B1649A -> little-endian 9A 64 B1 A7
#   raw     01 41 01 00 00 00 9A 64 B1 A7
#   COBS    [01 41 01] 00 -> 04 01 41 01;  [] 00 -> 01;  [] 00 -> 01;  [9A 64 B1 A7] end -> 05 9A 64 B1 A7
#   wire    00 | 04 01 41 01 01 01 05 9A 64 B1 A7 | 00
#
# CMD_SET_LENS (0x44), seq 42, position 1234 (i32 LE: D2 04 00 00):
#   header  01 44 2A 00 04 00
#   crc32   zlib.crc32(01 44 2A 00 04 00 D2 04 00 00) = 0xF745B405 -> 05 B4 45 F7
#   raw     01 44 2A 00 04 00 D2 04 00 00 05 B4 45 F7
#   COBS    [01 44 2A] -> 04 01 44 2A;  [04] -> 02 04;  [D2 04] -> 03 D2 04;  [] -> 01;
#           [05 B4 45 F7] end -> 05 05 B4 45 F7
#   wire    00 | 04 01 44 2A 02 04 03 D2 04 01 05 05 B4 45 F7 | 00
HAND_CHECKED = [
    ("hand_ping_seq1", P.CMD_PING, 1, {}, "0004014101010105 9a64b1a7 00"),
    (
        "hand_set_lens_seq42",
        P.CMD_SET_LENS,
        42,
        {"position": 1234},
        "00 04 01 44 2a 02 04 03 d2 04 01 05 05 b4 45 f7 00",
    ),
]


def ref_cobs_encode(data: bytes) -> bytes:
    """Canonical COBS (no trailing code byte after a final full block), written independently."""
    out = bytearray()
    block = bytearray()
    for b in data:
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out += b"\xff" + block
                block = bytearray()
    if block or not data or data[-1] == 0:
        out += bytes([len(block) + 1]) + block
    return bytes(out)


def ref_cobs_decode(body: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(body):
        code = body[i]
        assert code, "zero inside COBS body"
        out += body[i + 1 : i + code]
        i += code
        if code != 0xFF and i < len(body):
            out.append(0)
    return bytes(out)


def check_wire(mtype: int, seq: int, wire: bytes) -> None:
    """The wire bytes, judged by the reference implementations above."""
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    raw = ref_cobs_decode(wire[1:-1])
    assert ref_cobs_encode(raw) == wire[1:-1], "encoder output is not canonical COBS"
    version, t, s, length = struct.unpack_from("<BBHH", raw)
    assert (version, t, s, length) == (1, mtype, seq, len(raw) - 10)
    assert struct.unpack_from("<I", raw, len(raw) - 4)[0] == zlib.crc32(raw[:-4])


def to_json_fields(mtype: int, fields: dict) -> dict:
    out = {}
    for k, v in fields.items():
        if isinstance(v, (bytes, bytearray)):
            out[k + "_hex"] = bytes(v).hex()
        else:
            out[k] = v
    return out


def build() -> list:
    enc = P.Encoder()
    vectors = []
    for name, mtype, seq, fields, hand_hex in HAND_CHECKED:
        values, tail = P.pack_fields(mtype, fields)
        wire = bytes(enc.encode(mtype, seq, values, tail))
        want = bytes.fromhex(hand_hex.replace(" ", ""))
        assert wire == want, f"{name}: encoder gives {wire.hex()}, hand derivation {want.hex()}"
        check_wire(mtype, seq, wire)
        v = {"name": name, "type": mtype, "seq": seq, "fields": to_json_fields(mtype, fields), "wire_hex": wire.hex()}
        v["note"] = "derived by hand in tests/firmware/make_vectors.py"
        vectors.append(v)
    for name, mtype, seq, fields in SAMPLES:
        values, tail = P.pack_fields(mtype, fields)
        wire = bytes(enc.encode(mtype, seq, values, tail))
        check_wire(mtype, seq, wire)
        vectors.append(
            {"name": name, "type": mtype, "seq": seq, "fields": to_json_fields(mtype, fields), "wire_hex": wire.hex()}
        )
    missing = set(P.SCHEMA) - {v["type"] for v in vectors}
    assert not missing, f"no vector for types {sorted(missing)}"
    return vectors


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=True) + "\n"


def main(argv: list) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python {Path(__file__).relative_to(HERE.parents[1])}")
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {len(json.loads(text))} vectors to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
