"""Device side of the link over a fake transport: reads in pieces, sequence numbers, statistics."""

from _util import collect
from magcam_fw import protocol as P
from magcam_fw.link import Link


class _Transport:
    """Hands out the given chunks one per read_into(), then -1 (end of stream)."""

    def __init__(self, chunks=(), fail_writes=False):
        self.chunks = list(chunks)
        self.written = []
        self.fail_writes = fail_writes

    def read_into(self, buf):
        if not self.chunks:
            return -1
        c = self.chunks.pop(0)
        buf[: len(c)] = c
        return len(c)

    def write(self, view):
        if self.fail_writes:
            raise OSError(11)
        self.written.append(bytes(view))


def _cmd(mtype, seq, values=(), tail=None):
    return bytes(P.Encoder().encode(mtype, seq, values, tail))


def test_poll_reassembles_commands_from_pieces():
    stream = _cmd(P.CMD_PING, 1) + _cmd(P.CMD_SET_LENS, 2, (-40,)) + _cmd(P.CMD_CONNECT, 3, (1,), "host")
    # A long first read leaves stale bytes in the receive buffer for the shorter reads after it.
    pieces = [stream[:20], stream[20:23], b"", stream[23:]]
    t = _Transport(pieces)
    link = Link(t)
    got = []
    while link.poll(lambda m, s, p: got.append((m, s, P.unpack(m, p)))):
        pass
    assert link.closed
    assert [(g[0], g[1]) for g in got] == [(P.CMD_PING, 1), (P.CMD_SET_LENS, 2), (P.CMD_CONNECT, 3)]
    assert got[1][2]["position"] == -40 and got[2][2]["host"] == "host"
    assert link.stats(77) == (77, 3, 0, 0, 0, 0, 0, 0)


def test_send_numbers_frames_and_counts():
    t = _Transport()
    link = Link(t)
    link.send(P.EV_LOG, (5, 1), "hello")
    link.send(P.EV_ENCODER, (6, 12, 500, 0, P.ENC_AT_MAX, 0))
    kept = link.encode(P.ACK, (2, 0), b"")
    link.write(kept)
    assert link.tx_frames == 3 and link.tx_dropped == 0
    got = collect(P.Decoder(), b"".join(t.written))
    assert [(g[0], g[1]) for g in got] == [(P.EV_LOG, 1), (P.EV_ENCODER, 2), (P.ACK, 3)]
    assert P.unpack(P.EV_ENCODER, got[1][2])["flags"] == P.ENC_AT_MAX


def test_seq_wraps():
    link = Link(_Transport())
    link._seq = 0xFFFE
    link.send(P.CMD_PING)
    link.send(P.CMD_PING)
    got = collect(P.Decoder(), b"".join(link._t.written))
    assert [g[1] for g in got] == [0xFFFF, 0]


def test_write_errors_are_counted_not_raised():
    link = Link(_Transport(fail_writes=True))
    link.send(P.EV_LOG, (1, 1), "lost")
    assert link.tx_frames == 0 and link.tx_dropped == 1


def test_chunk_size_sets_max_payload():
    link = Link(_Transport(), chunk_size=100)
    assert link.max_payload == 108
    link.send(P.FRAME_CHUNK, (1, 0), bytes(100))
    try:
        link.send(P.FRAME_CHUNK, (1, 100), bytes(101))
    except ValueError:
        pass
    else:
        raise AssertionError("chunk over the link's max payload was sent")


def test_oversized_and_corrupt_commands_are_counted():
    big = bytes(P.Encoder().encode(P.CMD_CONNECT, 1, (1,), "h" * 2000))  # over the 1024 cap
    bad = bytearray(_cmd(P.CMD_PING, 2))
    bad[3] ^= 0x10
    good = _cmd(P.CMD_PING, 3)
    stream = big + bytes(bad) + good
    t = _Transport([stream[i : i + 512] for i in range(0, len(stream), 512)])
    link = Link(t)
    got = []
    while link.poll(lambda m, s, p: got.append(s)):
        pass
    assert got == [3]
    _, frames, crc, framing, overflows, _, _, _ = link.stats(0)
    assert (frames, overflows) == (1, 1) and crc + framing == 1
