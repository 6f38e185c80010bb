"""The byte-by-byte example exchange in docs/protocol.md (section 15) is real protocol: every
complete frame it shows decodes with a good CRC, and each message's quoted text is in its bytes.
(The frames were once left behind when a field or a NAK text changed.)"""

import re
from pathlib import Path

from magcam_fw import protocol as P

SPEC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
_HEX = re.compile(r"^(?:[0-9a-f]{2} )*[0-9a-f]{2}$")


def example_frames() -> list[tuple[str, bytes]]:
    """(the description above it, wire bytes) of every complete frame of section 15."""
    text = SPEC.read_text(encoding="utf-8")
    section = text[text.index("## 15. Example exchange"):text.index("## 16.")]
    frames, pending, said = [], [], ""
    for line in section.splitlines():
        body = re.sub(r"^\s*(?:wire:|host:|dev:)?\s*", "", line)
        body = re.sub(r"\s*\([^)]*\)\s*$", "", body).strip()  # a trailing "(retry, same seq)"
        if _HEX.match(body):
            pending += bytes.fromhex(body).hex(" ").split()
            if len(pending) > 1 and pending[-1] == "00":
                frames.append((said, bytes.fromhex("".join(pending))))
                pending, said = [], ""
        else:
            pending = []  # an abridged frame ("... (534 bytes)") or prose: nothing to check
            if line.strip() and not line.lstrip().startswith(("raw:", "ver ", "COBS:", "```")):
                said += line + "\n"
    return frames


def test_every_example_frame_decodes_and_says_what_its_description_says():
    frames = example_frames()
    assert len(frames) >= 40, len(frames)  # the parser found the exchange
    for said, wire in frames:
        got, dec = [], P.Decoder()
        dec.feed(wire, lambda mtype, seq, payload: got.append((mtype, seq, bytes(payload))))
        stats = dec.stats()
        assert len(got) == 1 and stats["crc_errors"] == stats["framing_errors"] == 0, (said, wire.hex(" "), stats)
        mtype, seq, payload = got[0]
        if mtype == 0x4C or (mtype == P.CMD_SET_LENS and len(payload) < 4):
            continue  # the refused frames at the end, built to be unreadable
        msg = P.unpack(mtype, payload)
        quoted = re.findall(r'"([^"]+)"', said)
        if quoted and mtype in (P.NAK, P.EV_LOG, P.HELLO, P.CMD_CONNECT):
            tail = msg.get("message", msg.get("text", msg.get("firmware", msg.get("host"))))
            assert quoted[0] == tail, (said, msg)
        for field, value in re.findall(r"\b(blocked|faults|glitches|budget_mw) (\d+)", said):
            assert msg[field] == int(value), (said, msg)
