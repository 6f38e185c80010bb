#!/usr/bin/env python3
"""Benchmark of the magcam wire protocol v1: host decoder, encoder, and a simulated capture.

    python tools/bench/link.py [--mib 64] [--size 2592x1944] [--frames 3] [--json]

Three measurements, all in one run, all verified (the script exits 1 if any check fails, so a
broken decoder cannot report a fast number):

(a) ``protocol.Decoder().feed()`` over a stream of FRAME_CHUNK frames carrying ``--mib`` MiB of
    realistic RAW samples (12-bit, black level 256, from ``magcam.sim.sensor.SensorModel`` with
    the default module descriptor, u16 little-endian, 4096-byte chunks), fed in 1 MiB reads as
    the host link does. The callback counts the chunks, checks type and seq, and chains a CRC-32
    over every payload (the host link CRCs every chunk too); count, CRC and the decoder's error
    counters must match. The encoder that built the stream is timed for reference.
(b) Named peers over the same bytes, for a ratio: ``zlib.crc32`` over the wire stream (the CRC
    alone, a lower bound on the work per byte), and ``cobs.cobs.decode`` over the same frames if
    the PyPI package ``cobs`` happens to be installed (it is not a dependency: 'n/a' otherwise).
(c) End to end: the real firmware in the simulator (``magcam.sim.Simulator``), ``magcam.connect``
    over its pty, ``--frames`` captures at ``--size``, each compared bit-exactly with
    ``sim.render(...)`` for the header's fields; MB/s of sample bytes per wall second of
    ``capture_raw`` and the host link's counters.

MB is 10^6 bytes. Times come from ``time.perf_counter``; (a) and (b) report the best of
``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import sys
import time
import zlib

import numpy as np
from magcam_fw import protocol as P

MiB = 1 << 20
READ_SIZE = 1 << 20  # the host link reads up to 1 MiB at a time
EXPOSURE_US = 10000
GAIN = 1.0
LENS = 500


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6 if seconds > 0 else float("inf")


# ---- data -------------------------------------------------------------------------------
def make_samples(total: int, width: int, height: int) -> tuple[bytes, list[tuple[int, int, int, int]], dict]:
    """``total`` bytes of RAW samples (u16 LE) from the sensor model, and the chunk plan.

    Frames of ``width`` x ``height`` with frame ids 1, 2, ... are rendered until ``total`` bytes
    are there (the last frame is cut short). The plan lists (frame_id, offset in frame, start in
    the sample buffer, length) for each FRAME_CHUNK, at most ``P.CHUNK_SIZE`` long, never crossing
    a frame boundary, as the firmware sends them.
    """
    from magcam.sim.runner import DEFAULT_DESCRIPTOR
    from magcam.sim.sensor import SensorModel

    descriptor = json.loads(DEFAULT_DESCRIPTOR.read_text())
    sensor = SensorModel(descriptor)
    frame_bytes = width * height * 2
    buf = bytearray(total)
    plan = []
    pos = 0
    fid = 0
    lo, hi = 65535, 0
    while pos < total:
        fid += 1
        raw = sensor.render(width, height, EXPOSURE_US, GAIN, fid, LENS)
        lo, hi = min(lo, int(raw.min())), max(hi, int(raw.max()))
        b = raw.astype("<u2", copy=False).tobytes()
        n = min(frame_bytes, total - pos)
        buf[pos : pos + n] = b[:n]
        for off in range(0, n, P.CHUNK_SIZE):
            plan.append((fid, off, pos + off, min(P.CHUNK_SIZE, n - off)))
        pos += n
    s = descriptor["sensor"]
    info = {
        "descriptor": str(DEFAULT_DESCRIPTOR),
        "bits": s["bits"],
        "black_level": s["black_level"],
        "white_level": s["white_level"],
        "frames_rendered": fid,
        "sample_min": lo,
        "sample_max": hi,
    }
    return bytes(buf), plan, info


def encode_stream(samples: bytes, plan) -> tuple[bytes, float]:
    """All chunks as one wire stream, encoded as the device does; (stream, seconds)."""
    # The device's encoder: max_payload = max(4096, chunk_size + 8).
    enc = P.Encoder(max(4096, P.CHUNK_SIZE + 8))
    view = memoryview(samples)
    out = bytearray()
    chunk = P.FRAME_CHUNK
    t0 = time.perf_counter()
    for i, (fid, off, start, n) in enumerate(plan):
        out += enc.encode(chunk, (i + 1) & 0xFFFF, (fid, off), view[start : start + n])
    dt = time.perf_counter() - t0
    return bytes(out), dt


def expected_crc(samples: bytes, plan) -> int:
    """CRC-32 chained over every FRAME_CHUNK payload (frame_id, offset, data), built independently."""
    view = memoryview(samples)
    crc = 0
    for fid, off, start, n in plan:
        crc = zlib.crc32(struct.pack("<II", fid, off), crc)
        crc = zlib.crc32(view[start : start + n], crc)
    return crc


# ---- (a) decoder ------------------------------------------------------------------------
def bench_decoder(reads: list[bytes], n_chunks: int, want_crc: int) -> dict:
    state = {"count": 0, "crc": 0, "bad": 0}

    def on_message(mtype, seq, payload, s=state, crc32=zlib.crc32, chunk=P.FRAME_CHUNK):
        n = s["count"] + 1
        if mtype != chunk or seq != n & 0xFFFF:
            s["bad"] += 1
        s["crc"] = crc32(payload, s["crc"])
        s["count"] = n

    dec = P.Decoder()
    good = 0
    t0 = time.perf_counter()
    for piece in reads:
        good += dec.feed(piece, on_message)
    dt = time.perf_counter() - t0
    st = dec.stats()
    problems = []
    if state["count"] != n_chunks or good != n_chunks:
        problems.append(f"decoded {state['count']} chunks (feed said {good}), expected {n_chunks}")
    if state["crc"] != want_crc:
        problems.append(f"CRC over decoded payloads {state['crc']:08x} != expected {want_crc:08x}")
    if state["bad"]:
        problems.append(f"{state['bad']} messages with the wrong type or seq")
    if dec.errors or st["unknown_types"] or st["bytes_dropped"] or st["frames"] != n_chunks:
        problems.append(f"decoder counted errors: {st}")
    return {"seconds": dt, "problems": problems, "stats": st}


# ---- (b) peers --------------------------------------------------------------------------
def bench_crc(reads: list[bytes]) -> tuple[float, int]:
    crc = 0
    t0 = time.perf_counter()
    for piece in reads:
        crc = zlib.crc32(piece, crc)
    return time.perf_counter() - t0, crc


def load_cobs():
    try:
        from cobs import cobs  # optional: only measured when someone installed it
    except ImportError:
        return None
    return cobs


def bench_cobs(cobs, blocks: list[bytes]) -> tuple[float, list[bytes]]:
    decode = cobs.decode
    t0 = time.perf_counter()
    out = [decode(b) for b in blocks]
    return time.perf_counter() - t0, out


def check_cobs(decoded: list[bytes], samples: bytes, plan) -> list[str]:
    """The peer's output must be our header|payload|crc for every frame (an interop check too)."""
    view = memoryview(samples)
    for i, (body, (fid, off, start, n)) in enumerate(zip(decoded, plan)):
        want_len = P.HEADER_SIZE + 8 + n + P.CRC_SIZE
        if len(body) != want_len:
            return [f"cobs.decode: frame {i} is {len(body)} bytes, expected {want_len}"]
        end = len(body) - P.CRC_SIZE
        if zlib.crc32(body[:end]) != struct.unpack_from("<I", body, end)[0]:
            return [f"cobs.decode: frame {i} fails its CRC"]
        if struct.unpack_from("<BBHHII", body, 0) != (P.VERSION, P.FRAME_CHUNK, (i + 1) & 0xFFFF, 8 + n, fid, off):
            return [f"cobs.decode: frame {i} header differs"]
        if body[P.HEADER_SIZE + 8 : end] != view[start : start + n]:
            return [f"cobs.decode: frame {i} data differs"]
    if len(decoded) != len(plan):
        return [f"cobs.decode: {len(decoded)} frames, expected {len(plan)}"]
    return []


# ---- (c) simulated capture --------------------------------------------------------------
def bench_sim(width: int, height: int, frames: int, quiet: bool) -> dict:
    import magcam
    from magcam.sim import Simulator

    res: dict = {"frames": [], "problems": []}
    total_bytes = 0
    total_s = 0.0
    with Simulator() as sim:
        t0 = time.perf_counter()
        with magcam.connect(sim.port) as cam:
            res["connect_s"] = time.perf_counter() - t0
            res["firmware"] = cam.firmware
            for i in range(frames):
                t = time.perf_counter()
                try:
                    f = cam.capture_raw(width, height, exposure_us=EXPOSURE_US, analog_gain=GAIN)
                except magcam.LinkError as e:
                    res["problems"].append(f"capture {i + 1}: {e}")
                    continue
                dt = time.perf_counter() - t
                n = f.width * f.height * 2
                total_bytes += n
                total_s += dt
                ref = sim.render({"w": f.width, "h": f.height, "exposure_us": f.exposure_us,
                                  "gain": f.analog_gain, "frame_id": f.frame_id, "lens": f.lens_position})
                exact = (f.width, f.height) == (width, height) and ref.shape == f.data.shape \
                    and np.array_equal(ref, f.data)
                if not exact:
                    res["problems"].append(f"frame {f.frame_id}: samples differ from sim.render()")
                res["frames"].append({"frame_id": f.frame_id, "seconds": dt, "mbps": _mbps(n, dt), "bit_exact": exact})
                _log(f"  frame {f.frame_id}: {n / 1e6:.1f} MB in {dt:.3f} s, bit-exact: {exact}", quiet)
            res["link"] = cam.link.stats()
        res["sim_bytes_dropped"] = sim.bytes_dropped
    link = res.get("link", {})
    for k in ("crc_errors", "framing_errors", "overflows", "frame_errors"):
        if link.get(k):
            res["problems"].append(f"host link counted {link[k]} {k}")
    res["sample_bytes"] = total_bytes
    res["seconds"] = total_s
    res["mbps"] = _mbps(total_bytes, total_s) if total_s else 0.0
    return res


# ---- report -----------------------------------------------------------------------------
def _fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.1f}{unit}"
    return f"{v}{unit}"


def _ratio(v):
    return "n/a" if v is None else f"{v:.3g}x"


def print_table(r: dict) -> None:
    a, b, c = r["decoder"], r["peers"], r["capture"]
    rows = [
        ("(a) host decoder, wire bytes", _fmt(a["decode_mbps_wire"], " MB/s"),
         f"{a['chunks']} chunks, {a['wire_bytes'] / 1e6:.1f} MB in {READ_SIZE >> 20} MiB reads"),
        ("(a) host decoder, sample bytes", _fmt(a["decode_mbps_samples"], " MB/s"), "payload data delivered"),
        ("(a) encoder (reference)", _fmt(a["encode_mbps_wire"], " MB/s"), "wire bytes produced, single run"),
        ("(b) zlib.crc32 over the stream", _fmt(b["crc32_mbps"], " MB/s"),
         f"decoder/crc32 = {_ratio(b['decoder_vs_crc32'])}"),
        ("(b) cobs.cobs.decode per frame", _fmt(b["cobs_mbps"], " MB/s"),
         "package not installed" if b["cobs_mbps"] is None else f"decoder/cobs = {_ratio(b['decoder_vs_cobs'])}"),
    ]
    if c["frames_requested"]:
        rows += [
            (f"(c) capture {c['size']} x{c['frames_requested']}", _fmt(c.get("mbps"), " MB/s"),
             (f"sample bytes / wall s (median frame {_fmt(c.get('frame_mbps_median'), ' MB/s')}), "
              f"bit-exact {sum(f['bit_exact'] for f in c['frames'])}/{c['frames_requested']}")),
            ("(c) host link", "", ", ".join(f"{k} {c.get('link', {}).get(k, '?')}" for k in
                                           ("crc_errors", "retries", "seq_gaps", "frame_errors", "bytes_dropped"))),
        ]
    else:
        rows.append(("(c) simulated capture", "skipped", "--frames 0"))
    ok = "OK" if r["ok"] else "FAILED: " + "; ".join(r["problems"])
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table

            t = Table(title=f"magcam protocol v{P.VERSION} link benchmark ({r['python']}, {r['cpus']} CPUs)",
                      caption="MB = 10^6 bytes")
            t.add_column("measurement")
            t.add_column("rate", justify="right")
            t.add_column("notes")
            for row in rows:
                t.add_row(*row)
            con = Console()
            con.print(t)
            con.print(f"verification: {ok}", style="green" if r["ok"] else "bold red")
            return
        except ImportError:
            pass
    w0 = max(len(x[0]) for x in rows)
    w1 = max(len(x[1]) for x in rows)
    print(f"magcam protocol v{P.VERSION} link benchmark ({r['python']}, {r['cpus']} CPUs; MB = 10^6 bytes)")
    for name, rate, note in rows:
        print(f"  {name:<{w0}}  {rate:>{w1}}  {note}")
    print(f"verification: {ok}")


def parse_size(s: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {s!r}") from None
    why = P.check_capture(w, h, EXPOSURE_US, GAIN)
    if why:
        raise argparse.ArgumentTypeError(f"{s}: {why}")
    return w, h


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=64, help="MiB of sample data in the decoder stream (default 64)")
    ap.add_argument("--size", type=parse_size, default=(2592, 1944), help="frame size WxH (default 2592x1944)")
    ap.add_argument("--frames", type=int, default=3, help="simulated captures (default 3; 0 skips them)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of (a) and (b); the best counts (default 3)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if args.mib < 1 or args.repeat < 1 or args.frames < 0:
        ap.error("--mib and --repeat must be >= 1, --frames >= 0")
    quiet = args.json or not sys.stderr.isatty()
    width, height = args.size
    problems: list[str] = []

    # (a) data, encoder, decoder
    _log(f"rendering {args.mib} MiB of RAW samples at {width}x{height} ...", quiet)
    samples, plan, info = make_samples(args.mib * MiB, width, height)
    if info["sample_max"] > info["white_level"] or info["sample_min"] < 0:
        problems.append(f"sensor samples outside 0..{info['white_level']}")
    stream, enc_s = encode_stream(samples, plan)
    want_crc = expected_crc(samples, plan)
    reads = [stream[i : i + READ_SIZE] for i in range(0, len(stream), READ_SIZE)]
    _log(f"decoding {len(stream) / 1e6:.1f} MB ({len(plan)} FRAME_CHUNK frames) x{args.repeat} ...", quiet)
    dec_times = []
    for _ in range(args.repeat):
        d = bench_decoder(reads, len(plan), want_crc)
        dec_times.append(d["seconds"])
        problems += d["problems"]
    dec_s = min(dec_times)

    # (b) peers over the same bytes
    crc_times = []
    for _ in range(args.repeat):
        s, crc = bench_crc(reads)
        crc_times.append(s)
    if crc != zlib.crc32(stream):
        problems.append("zlib.crc32 over the reads disagrees with one pass")
    crc_s = min(crc_times)
    cobs = load_cobs()
    cobs_s = None
    if cobs is not None:
        blocks = [b for b in stream.split(b"\x00") if b]
        times = []
        for _ in range(args.repeat):
            s, decoded = bench_cobs(cobs, blocks)
            times.append(s)
        problems += check_cobs(decoded, samples, plan)
        del decoded, blocks
        cobs_s = min(times)

    dec_mbps = _mbps(len(stream), dec_s)
    crc_mbps = _mbps(len(stream), crc_s)
    cobs_mbps = _mbps(len(stream), cobs_s) if cobs_s else None
    result = {
        "ok": False,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": os.cpu_count(),
        "protocol_version": P.VERSION,
        "decoder": {
            "sample_bytes": len(samples),
            "wire_bytes": len(stream),
            "chunks": len(plan),
            "chunk_size": P.CHUNK_SIZE,
            "read_size": READ_SIZE,
            "data": info,
            "decode_seconds": dec_times,
            "decode_mbps_wire": dec_mbps,
            "decode_mbps_samples": _mbps(len(samples), dec_s),
            "encode_seconds": enc_s,
            "encode_mbps_wire": _mbps(len(stream), enc_s),
            "verified": {"chunks": len(plan), "payload_crc32": f"{want_crc:08x}"},
        },
        "peers": {
            "crc32_seconds": crc_times,
            "crc32_mbps": crc_mbps,
            "decoder_vs_crc32": dec_mbps / crc_mbps,
            "cobs_mbps": cobs_mbps,
            "decoder_vs_cobs": dec_mbps / cobs_mbps if cobs_mbps else None,
        },
    }
    del reads, stream, samples

    # (c) simulated capture over the pty
    cap = {"size": f"{width}x{height}", "frames_requested": args.frames, "frames": [], "problems": []}
    if args.frames:
        _log(f"capturing {args.frames} frame(s) of {width}x{height} from the simulator ...", quiet)
        try:
            cap.update(bench_sim(width, height, args.frames, quiet))
        except (RuntimeError, OSError) as e:  # simulator or link failure (LinkError, SimulatorError): fail the run
            cap["problems"].append(f"simulated capture failed: {type(e).__name__}: {e}")
        if len(cap["frames"]) != args.frames:
            cap["problems"].append(f"{len(cap['frames'])} of {args.frames} frames captured")
        if cap["frames"]:
            cap["frame_mbps_median"] = statistics.median(f["mbps"] for f in cap["frames"])
    else:
        cap["mbps"] = None
    problems += cap.pop("problems")
    result["capture"] = cap
    result["problems"] = problems = list(dict.fromkeys(problems))  # repeats report the same problem once
    result["ok"] = not problems

    if args.json:
        print(json.dumps(result, indent=None))
    else:
        print_table(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
