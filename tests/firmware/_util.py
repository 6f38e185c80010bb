"""Helpers for the firmware tests, importable on MicroPython and on CPython.

No pathlib, no os.path, no f-string ``=``: only what the MicroPython unix port has.
"""

import json
import os
import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"


def _norm(path):
    """Absolute, normalised path without os.path (MicroPython has none)."""
    if not path.startswith("/"):
        path = os.getcwd() + "/" + path
    parts = []
    for p in path.split("/"):
        if p == "" or p == ".":
            continue
        if p == "..":
            if parts:
                parts.pop()
        else:
            parts.append(p)
    return "/" + "/".join(parts)


def _dirname(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else "/"


TEST_DIR = _dirname(_norm(__file__))
REPO = _dirname(_dirname(TEST_DIR))
FIRMWARE_DIR = REPO + "/firmware"


def data_path(name):
    """Path of a file in the firmware test directory."""
    return TEST_DIR + "/" + name


def load_json(name):
    with open(data_path(name)) as f:
        return json.loads(f.read())


def raises(exc_type, fn, *args):
    """Call fn(*args), assert it raises exc_type, return the exception (others propagate)."""
    try:
        fn(*args)
    except exc_type as e:
        return e
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", fn), exc_type.__name__))


def unhex(s):
    return bytes.fromhex(s)


def tohex(b):
    """Hex of bytes, bytearray or memoryview (memoryview has no .hex())."""
    return bytes(b).hex()


def collect(dec, data, n=-1):
    """Feed data to a decoder; return the delivered messages as (type, seq, payload bytes)."""
    got = []

    def cb(mtype, seq, payload):
        got.append((mtype, seq, bytes(payload)))

    dec.feed(data, cb, n)
    return got


class OutputTransport:
    """A link transport that never receives and keeps what the app writes, in ``out``."""

    def __init__(self):
        self.out = bytearray()

    def read_into(self, buf):
        return 0

    def write(self, data):
        self.out += data
