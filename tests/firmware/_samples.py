"""Representative field values for every message type (shared by the tests and make_vectors.py).

Each entry: (name, type, seq, fields). Bytes tails are bytes; text tails are str. Floats are
exactly representable in float32 so they survive the wire unchanged.
"""

from magcam_fw import protocol as P

# A chunk with zeros, a run of 255 non-zero bytes (longer than one COBS block) and a tail.
CHUNK_DATA = bytes(range(1, 256)) + b"\x00\x00\x00" + bytes((i * 37) & 0xFF for i in range(60))

SAMPLES = [
    (
        "hello",
        P.HELLO,
        0,
        {
            "version": 1,
            "session": 7,
            "uptime_ms": 123456,
            "max_payload": 8192,
            "rx_max_payload": 1024,
            "chunk_size": 4096,
            "mode": 1,
            "firmware": "magcam 0.1.0",
        },
    ),
    ("descriptor", P.DESCRIPTOR, 1, {"json": '{"model": "magcam", "sensor": {"width": 640, "height": 480}}'}),
    ("ack", P.ACK, 65535, {"ack_seq": 65535, "value": -1, "data": b"\x00\x01\x00\xff"}),
    ("ack_empty", P.ACK, 2, {"ack_seq": 0, "value": 0, "data": b""}),
    ("nak", P.NAK, 3, {"ack_seq": 40, "code": P.NAK_BAD_ARGS, "message": "width \u2260 even, 5 \u00b5m"}),
    (
        "encoder_extremes",
        P.EV_ENCODER,
        4,
        {
            "t": 4294967295,
            "count": -2147483648,
            "lens": 2147483647,
            "velocity": -40,
            "flags": 3,
            "glitches": 4294967295,
        },
    ),
    ("attach", P.EV_ATTACH, 5, {"t": 0, "state": 2, "session": 1}),
    ("power", P.EV_POWER, 6, {"t": 1000, "state": 2, "mv": 4963, "ma": 0, "budget_mw": 5000, "blocked": 3, "faults": 65535}),
    ("thermal", P.EV_THERMAL, 7, {"t": 2000, "mc": -12500, "state": 1, "fps_x10": 150}),
    ("fault", P.EV_FAULT, 8, {"t": 3000, "cause": 1, "value": 1800, "count": 2}),
    (
        "link",
        P.EV_LINK,
        9,
        {
            "t": 4000,
            "rx_frames": 1,
            "rx_crc_errors": 2,
            "rx_framing_errors": 3,
            "rx_overflows": 4,
            "rx_version_errors": 7,
            "tx_frames": 5,
            "tx_dropped": 6,
        },
    ),
    ("log", P.EV_LOG, 10, {"t": 5, "level": 2, "text": 'hello\nworld\t"quoted"'}),
    ("log_empty", P.EV_LOG, 11, {"t": 6, "level": 0, "text": ""}),
    (
        "frame_begin",
        P.FRAME_BEGIN,
        12,
        {
            "frame_id": 1,
            "width": 640,
            "height": 480,
            "cfa": 0,
            "bits": 12,
            "black_level": 256,
            "white_level": 4095,
            "exposure_us": 10000,
            "analog_gain": 2.5,
            "timestamp_ms": 12345,
            "lens_position": -20,
            "total_bytes": 614400,
            "chunk_size": 4096,
        },
    ),
    ("frame_chunk", P.FRAME_CHUNK, 13, {"frame_id": 1, "offset": 4096, "data": CHUNK_DATA}),
    ("frame_end", P.FRAME_END, 14, {"frame_id": 1, "total_bytes": 614400, "crc32": 0xDEADBEEF, "status": 2}),
    ("connect", P.CMD_CONNECT, 15, {"version": 1, "host": "magcam-host/0.1"}),
    ("ping", P.CMD_PING, 16, {}),
    ("get_descriptor", P.CMD_GET_DESCRIPTOR, 17, {}),
    ("capture", P.CMD_CAPTURE, 18, {"width": 640, "height": 480, "exposure_us": 10000, "analog_gain": 1.5}),
    ("set_lens", P.CMD_SET_LENS, 19, {"position": -500}),
    ("disconnect", P.CMD_DISCONNECT, 20, {}),
    ("power_grant", P.CMD_POWER_GRANT, 21, {"budget_mw": 4500}),
    ("power_reset", P.CMD_POWER_RESET, 22, {}),
    ("faults_read", P.CMD_FAULTS_READ, 23, {"first": 80}),
    ("faults_clear", P.CMD_FAULTS_CLEAR, 24, {}),
    ("descriptor_write", P.CMD_DESCRIPTOR_WRITE, 25, {"offset": 512, "total": 1100, "data": b'{"serial": "X"}'}),
    ("stream", P.CMD_STREAM, 26, {"width": 320, "height": 240, "exposure_us": 5000, "analog_gain": 2.0, "fps_x10": 150}),
]
