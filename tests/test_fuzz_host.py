"""Property tests on CPython (hypothesis): the Decoder's invariants on generated streams, and the
host Link's RAW frame assembly under arbitrary FRAME_BEGIN / CHUNK / END sequences.

The Link is exercised two ways: feeding ``Link._on_message`` directly (fast, many examples,
invariants checked after every single message) and through a fake device on a real pty (the
reader thread, the decoder and pyserial in the loop).

Oracle for the Link: every frame id has one true content (random bytes). A device may
duplicate, drop, reorder, mislabel or overrun chunks, lie in FRAME_BEGIN (sizes, huge frames)
and in FRAME_END (byte count, CRC, status), and interleave other messages; whatever it does:

- a delivered RawFrame's bytes are exactly the true content of its frame id (never corrupt);
- a clean transmission (BEGIN, every chunk in order, END) is delivered, whatever came before;
- the assembly buffer is never larger than its FRAME_BEGIN announced, nor than the Link's
  ``max_frame_bytes``, and it never holds more bytes than that; at most 8 finished frames wait;
- tracemalloc's peak stays within a bound set by the largest legal frame, not by what the
  device claims;
- ``wait_frame`` / ``next_frame`` return within their timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from magcam.frame import RawFrame
from test_link_host import FakeDevice
from magcam.link import FrameError, Link
from magcam_fw import protocol as P

sys.path.insert(0, str(Path(__file__).resolve().parent / "firmware"))
import fuzz  # noqa: E402  (tests/firmware/fuzz.py: raw_wire, keys, segment counting)

# No example database in the tree (several engineers share it); CI runs are seeded by hypothesis.
SETTINGS = dict(database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------- Decoder

_frames_st = st.builds(
    lambda mtype, seq, payload: (mtype, seq, payload),
    st.sampled_from(sorted(P.SCHEMA)),
    st.integers(0, 0xFFFF),
    st.one_of(st.binary(max_size=64), st.binary(min_size=250, max_size=1100),
              st.sampled_from([b"\x01" * 254, b"\x01" * 508, b"\xff" * 8184, bytes(300)])),
)


@st.composite
def _items(draw):
    """One stretch of the stream: an intact frame, or junk (raw bytes, a damaged frame)."""
    mtype, seq, payload = draw(_frames_st)
    wire = fuzz.raw_wire(P.VERSION, mtype, seq, payload)
    key = fuzz._key(mtype, seq, payload)
    how = draw(st.sampled_from(["intact", "intact", "bytes", "flip", "cut", "version", "lie"]))
    if how == "intact":
        return "intact", wire, key
    if how == "bytes":
        return "junk", draw(st.binary(min_size=1, max_size=300)), key
    if how == "flip":
        b = bytearray(wire)
        for i in draw(st.lists(st.integers(0, len(b) * 8 - 1), min_size=1, max_size=3)):
            b[i >> 3] ^= 1 << (i & 7)
        return "junk", bytes(b), key
    if how == "cut":
        at = draw(st.integers(1, len(wire) - 1))
        return "junk", wire[:at] if draw(st.booleans()) else wire[at:], key
    if how == "version":
        return "junk", fuzz.raw_wire(draw(st.integers(2, 255)), mtype if mtype != P.CMD_CONNECT else P.HELLO,
                                     seq, payload), key
    return "junk", fuzz.raw_wire(P.VERSION, mtype, seq, payload, length=len(payload) + draw(st.integers(1, 9))), key


@settings(max_examples=300, **SETTINGS)
@given(items=st.lists(_items(), min_size=1, max_size=12), cuts=st.lists(st.integers(0, 1 << 16), max_size=8),
       cap=st.sampled_from([P.MAX_PAYLOAD, 1024]))
def test_decoder_invariants_on_generated_streams(items, cuts, cap):
    dec = P.Decoder(cap)
    buf, raw, sizes = dec._buf, dec._raw, (len(dec._buf), len(dec._raw))
    stream = b"".join(w for _, w, _ in items)
    got = []
    before = fuzz._counters(dec)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for a, b in zip(points, points[1:]):  # random splits of the stream into feeds
        dec.feed(stream[a:b], lambda t, s, p: got.append(fuzz._key(t, s, p)))
    dec.feed(fuzz.SENTINEL.wire, lambda t, s, p: got.append(fuzz._key(t, s, p)))
    after = fuzz._counters(dec)
    assert dec._buf is buf and dec._raw is raw and (len(dec._buf), len(dec._raw)) == sizes
    assert all(a >= b for a, b in zip(after, before)), (before, after)
    assert got and got[-1] == fuzz.SENTINEL.key  # resynchronised on the next good frame
    assert after[0] - before[0] == len(got)
    out = got[:-1]
    # Every intact frame that fits the cap comes out, in order, whatever junk surrounds it.
    intact = [k for how, w, k in items if how == "intact" and k[2] <= cap]
    it = iter(out)
    assert all(k in it for k in intact), (intact, out)
    # Nothing comes out that was never sent; every stretch is delivered or counted once.
    sent = {k for _, _, k in items}
    assert all(k in sent for k in out), out
    segs, _ = fuzz._segments(stream)
    d_err = sum(after[i] - before[i] for i in (1, 2, 3, 4))
    connects = sum(1 for k in out if k[0] == P.CMD_CONNECT)
    assert segs <= len(out) + d_err <= segs + connects, (segs, len(out), d_err)


def test_micropython_and_cpython_draw_the_same_inputs_and_count_the_same():
    """Same seed on both runtimes: the same input bytes, and the decoder counts them identically."""
    from magcam.sim.runner import micropython_executable

    fw_tests = Path(fuzz.__file__).resolve().parent
    proc = subprocess.run([micropython_executable(), "-c",
                           "import sys; sys.path[:0] = ['.', '../../firmware']; import fuzz, json; "
                           "print(json.dumps([fuzz.digest(3, 500), fuzz.digest(3, 500, 1024), "
                           "fuzz.run(3000, 3, False)]))"],
                          cwd=fw_tests, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    mp_digest, mp_digest_dev, mp = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (mp_digest, mp_digest_dev) == (fuzz.digest(3, 500), fuzz.digest(3, 500, 1024))
    cp = fuzz.run(3000, 3, False)
    assert mp["runtime"].startswith("micropython") and cp["runtime"].startswith("cpython")
    assert mp["failures"] == cp["failures"] == 0 and mp["crashes"] == cp["crashes"] == 0
    assert (mp["totals"], mp["delivered"], mp["by_kind"]) == (cp["totals"], cp["delivered"], cp["by_kind"])


# ------------------------------------------------------------------------- Link assembly

MAX_FRAME = 64 * 1024  # this Link's own limit: lying headers above it must allocate nothing


def _true_data(fid: int, w: int, h: int) -> bytes:
    return np.random.default_rng(1000 + fid).integers(0, 4096, size=(h, w), dtype=np.uint16).astype("<u2").tobytes()


def _begin(fid, w, h, total=None, chunk=256, bits=12):
    return (P.FRAME_BEGIN, {"frame_id": fid, "width": w, "height": h, "cfa": 0, "bits": bits, "black_level": 64,
                            "white_level": 4095, "exposure_us": 1000, "analog_gain": 1.0, "timestamp_ms": 0,
                            "lens_position": 0, "total_bytes": w * h * 2 if total is None else total,
                            "chunk_size": chunk})


def _chunk(fid, off, data):
    return (P.FRAME_CHUNK, {"frame_id": fid, "offset": off, "data": bytes(data)})


def _end(fid, total, crc, status=0):
    return (P.FRAME_END, {"frame_id": fid, "total_bytes": total, "crc32": crc, "status": status})


def _clean(fid, w, h, chunk):
    data = _true_data(fid, w, h)
    ops = [_begin(fid, w, h, chunk=chunk)]
    ops += [_chunk(fid, off, data[off : off + chunk]) for off in range(0, len(data), chunk)]
    ops.append(_end(fid, len(data), P.crc32(data)))
    return ops


# One true geometry (and content) per frame id.
FID_DIMS = {1: (16, 16), 2: (32, 16), 3: (16, 32), 4: (40, 24), 5: (64, 48), 6: (16, 16)}


@st.composite
def _segments_st(draw):
    """(clean?, fid, ops): a clean transmission, or a mutated one."""
    fid = draw(st.integers(1, 6))
    w, h = FID_DIMS[fid]
    chunk = draw(st.sampled_from([64, 200, 256, 1000, 8184]))
    ops = _clean(fid, w, h, chunk)
    if draw(st.integers(0, 3)) == 0:
        return True, fid, ops
    data = _true_data(fid, w, h)
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["dup", "swap", "drop", "lie_begin", "lie_end", "endless", "empty", "foreign",
                                     "mislabel", "other_id", "noise"]))
        i = draw(st.integers(0, len(ops) - 1))
        if kind == "dup":
            ops.insert(draw(st.integers(0, len(ops))), ops[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(ops) - 1))
            ops[i], ops[j] = ops[j], ops[i]
        elif kind == "drop" and len(ops) > 1:
            ops.pop(i)
        elif kind == "lie_begin":
            lw, lh = draw(st.sampled_from([(w, h), (h, w), (w // 2, h), (16384, 16384), (16384, 8192), (8, 8),
                                           (w + 1, h), (256, 128), (w, h * 4)]))
            total = draw(st.sampled_from([None, lw * lh * 2 + 2, lw * lh * 2 - 2, 0, 0xFFFFFFFF, len(data)]))
            ops[0] = _begin(fid, lw, lh, total=total, chunk=draw(st.sampled_from([0, 1, chunk, 8185, 65535])),
                            bits=draw(st.sampled_from([12, 12, 7, 17])))
        elif kind == "lie_end":
            ops[-1] = _end(fid, draw(st.sampled_from([len(data), len(data) - 1, len(data) + chunk, 0, 0xFFFFFFFF])),
                           draw(st.sampled_from([P.crc32(data) ^ 1, P.crc32(data), 0])),
                           draw(st.sampled_from([0, 0, 1, 2, 9])))
        elif kind == "endless":  # chunks that go on past the announced size
            n = draw(st.integers(1, 40))
            at = draw(st.integers(0, len(ops)))
            extra = [_chunk(fid, len(data) + k * chunk, os.urandom(chunk)) for k in range(n)]
            ops[at:at] = extra
        elif kind == "empty":  # endless zero-length chunks at the right offset
            ops.insert(draw(st.integers(1, len(ops))), _chunk(fid, 0, b""))
        elif kind == "foreign":
            ops.insert(draw(st.integers(0, len(ops))), (P.EV_LOG, {"t": 1, "level": 1, "text": "between chunks"}))
        elif kind == "mislabel":  # right offset, bytes from elsewhere
            chunks = [k for k, op in enumerate(ops) if op[0] == P.FRAME_CHUNK and op[1]["frame_id"] == fid]
            if chunks:
                k = draw(st.sampled_from(chunks))
                off = ops[k][1]["offset"]
                src = draw(st.integers(0, max(0, len(data) - chunk)))
                if src != off:
                    ops[k] = _chunk(fid, off, data[src : src + len(ops[k][1]["data"])])
        elif kind == "other_id":
            op = ops[i]
            if op[0] in (P.FRAME_BEGIN, P.FRAME_CHUNK, P.FRAME_END):
                fields = dict(op[1], frame_id=draw(st.integers(0, 8)))
                ops[i] = (op[0], fields)
        elif kind == "noise":
            ops.insert(draw(st.integers(0, len(ops))), ("noise", draw(st.binary(min_size=1, max_size=50))))
    return False, fid, ops


_ENC = P.Encoder()


def _payload(mtype, fields) -> bytes:
    values, tail = P.pack_fields(mtype, fields)
    wire = bytes(_ENC.encode(mtype, 1, values, tail))
    return fuzz._payload_of(wire)


class _Pty(FakeDevice):
    """The device end of a pty (test_link_host's FakeDevice) that also writes raw wire bytes."""

    def wire(self, mtype, fields) -> bytes:
        self.seq += 1
        values, tail = P.pack_fields(mtype, fields)
        return bytes(self.enc.encode(mtype, self.seq, values, tail))

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]



@pytest.fixture(scope="module")
def quiet_link():
    """A Link on a pty nobody writes to: the test feeds _on_message itself."""
    dev = _Pty()
    link = Link(dev.port, max_frame_bytes=MAX_FRAME, power_budget_mw=None)
    yield link
    link.close()
    dev.close()


def _reset(link: Link) -> None:
    with link._cond:
        link._asm = None
        link._frames.clear()
        link._events.clear()


def _check_assembly(link: Link) -> None:
    asm = link._asm
    if asm is not None:
        assert len(asm.buf) == asm.hdr["total_bytes"] <= link.max_frame_bytes
        assert asm.received <= len(asm.buf)
    assert len(link._frames) <= 8


def _check_delivered(link: Link) -> None:
    for fid, result in link._frames.items():
        if isinstance(result, RawFrame):
            assert result.frame_id == fid and fid in FID_DIMS
            w, h = FID_DIMS[fid]
            assert result.data.astype("<u2").tobytes() == _true_data(fid, w, h), f"frame {fid} corrupt"


@settings(max_examples=200, **SETTINGS)
@given(segments=st.lists(_segments_st(), min_size=1, max_size=6))
def test_link_assembly_never_delivers_a_corrupt_frame(quiet_link, segments):
    link = quiet_link
    _reset(link)
    for clean, fid, ops in segments:
        tracemalloc.start()
        try:
            for mtype, fields in ops:
                if mtype == "noise":
                    continue  # only the decoder sees raw noise; this path feeds messages
                link._on_message(mtype, (link._last_dev_seq or 0) + 1 & 0xFFFF,
                                 memoryview(_payload(mtype, fields)))
                _check_assembly(link)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # One frame being assembled plus its RawFrame view, plus the messages: never what a
        # lying header claims (up to 512 MiB here).
        assert peak < 4 * 64 * 48 * 2 + (1 << 20), peak
        _check_delivered(link)
        if clean:  # liveness: a clean transmission always gets through
            with link._cond:
                result = link._frames.pop(fid, None)
            assert isinstance(result, RawFrame), result
        with link._cond:
            link._frames.clear()  # the consumer collects as it goes


@settings(max_examples=300, **SETTINGS)
@given(fid=st.integers(0, 0xFFFFFFFF), w=st.integers(0, 0xFFFF), h=st.integers(0, 0xFFFF),
       cfa=st.integers(0, 255), bits=st.integers(0, 255), black=st.integers(0, 0xFFFF), white=st.integers(0, 0xFFFF),
       exposure=st.integers(0, 0xFFFFFFFF), gain=st.floats(width=32, allow_nan=True),
       total=st.one_of(st.integers(0, 0xFFFFFFFF), st.just(None)), chunk=st.integers(0, 0xFFFF))
def test_lying_frame_begin_allocates_at_most_the_capped_size(quiet_link, fid, w, h, cfa, bits, black, white, exposure,
                                                            gain, total, chunk):
    link = quiet_link
    _reset(link)
    fields = {"frame_id": fid, "width": w, "height": h, "cfa": cfa, "bits": bits, "black_level": black,
              "white_level": white, "exposure_us": exposure, "analog_gain": gain, "timestamp_ms": 0,
              "lens_position": 0, "total_bytes": (w * h * 2) & 0xFFFFFFFF if total is None else total,
              "chunk_size": chunk}
    link._on_message(P.FRAME_BEGIN, 1, memoryview(_payload(P.FRAME_BEGIN, fields)))
    asm = link._asm
    if asm is None:
        result = link._frames.get(fid)
        assert isinstance(result, FrameError) and result.reason.startswith("bad header: "), result
    else:
        assert len(asm.buf) == fields["total_bytes"] == w * h * 2 <= link.max_frame_bytes


@pytest.mark.parametrize("call", ["wait_frame", "next_frame"])
def test_waits_never_hang_past_their_timeout(quiet_link, call):
    link = quiet_link
    _reset(link)
    link._on_message(*_on(_begin(77, 64, 48)))  # a frame that never ends: chunks keep coming
    for timeout in (0.0, 0.01, 0.2):
        t0 = time.monotonic()
        with pytest.raises(FrameError, match="within"):
            if call == "wait_frame":
                link.wait_frame(77, timeout=timeout)
            else:
                link.next_frame(timeout=timeout)
        assert time.monotonic() - t0 < timeout + 0.1


def _on(op):
    mtype, fields = op
    return mtype, 1, memoryview(_payload(mtype, fields))


# ------------------------------------------------------------------------- the same through a pty


@pytest.fixture(scope="module")
def pty_link():
    dev = _Pty()
    link = Link(dev.port, max_frame_bytes=MAX_FRAME, power_budget_mw=None)
    yield dev, link
    link.close()
    dev.close()


@settings(max_examples=25, **SETTINGS)
@given(segments=st.lists(_segments_st(), min_size=1, max_size=4), cuts=st.lists(st.integers(0, 1 << 20), max_size=6))
def test_link_over_a_pty_never_delivers_a_corrupt_frame(pty_link, segments, cuts):
    dev, link = pty_link
    for n, (clean, fid, ops) in enumerate(segments):
        w, h = FID_DIMS[fid]
        stream = b"".join(f if mtype == "noise" else dev.wire(mtype, f) for mtype, f in ops)
        marker = f"marker {n} {time.monotonic()}"
        stream += dev.wire(P.EV_LOG, {"t": 0, "level": 1, "text": marker})
        points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
        for a, b in zip(points, points[1:]):  # the device's writes, cut anywhere
            dev.write(stream[a:b])
        # The marker comes after everything: once the Link has it, it has read all of it.
        assert link.wait_state("log", lambda e: e["text"] == marker, 5.0), "the link stalled"
        with link._cond:
            assert link._asm is None or len(link._asm.buf) <= link.max_frame_bytes
            assert len(link._frames) <= 8
            _check_delivered(link)
        if clean:
            t0 = time.monotonic()
            frame = link.wait_frame(fid, timeout=1.0)
            assert frame.data.astype("<u2").tobytes() == _true_data(fid, w, h)
            assert time.monotonic() - t0 < 1.1
        with link._cond:
            link._frames.clear()
            link._events.clear()
    t0 = time.monotonic()
    with pytest.raises(FrameError):
        link.wait_frame(0xFFFF, timeout=0.05)
    assert time.monotonic() - t0 < 0.5
