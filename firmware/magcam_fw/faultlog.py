"""The persisted fault log: a fixed-size ring of fault records that survives resets, plus the
boot counter that stamps them.

A record is ``protocol.FAULT_RECORD`` (``<HIBi``, 11 bytes): boot number, device time (ms),
cause (``protocol.FAULT_CAUSES`` index), the reading that tripped it. ``read()`` returns records
back to back, oldest first: exactly the data of CMD_FAULTS_READ's ACK.

File layout (little-endian), fixed size ``40 + 11 * capacity`` bytes, created in full::

    0   header copy A   20 bytes: magic "MCFL", capacity u16, next u16, count u16, boot u16,
    20  header copy B             seq u32, crc32 u32 (of the 16 bytes before it)
    40  capacity record slots of 11 bytes; the records are the ``count`` slots before ``next``

Writes are ordered so a reset at any moment loses at most the record being written: the record
goes into its slot first, then a new header (seq + 1) goes into the copy the current header is
not in; on open the valid copy with the higher seq wins, so a torn header write falls back to
the previous one. When the ring is full the oldest record is first dropped from the header,
so its slot is never referenced while it is overwritten.

On a read-only filesystem (CircuitPython's drive while USB owns it) the log lives in RAM,
starting from the file's contents if there is one: ``status`` "ram", faults are kept and
readable until the next reset. A missing file is created (``status`` "new"). An unreadable one (both header copies bad,
another capacity, wrong size) is replaced by an empty log (``status`` "reset", ``reason``
says why; the boot counter is kept if a header copy was good): opening never raises for
bad contents.

Usage::

    log = FaultLog("/flash/faults.bin")     # capacity=64
    boot = log.next_boot()                  # once per boot: 1, 2, 3, ... (persisted)
    if log.status == "reset":
        print("fault log was unreadable (%s); started a new one" % log.reason)
    log.append(boot, now, cause, value)     # when the rail trips
    data = log.read(first=0, max_records=64)   # bytes, oldest first
    log.clear()                             # records only; the boot counter stays

Plain open/seek/read/write and ``os.stat``: the MicroPython unix port, littlefs/FAT on a board
and CPython alike.
"""

import io
import os
import struct

from magcam_fw.compat import const
from magcam_fw.protocol import FAULT_RECORD, FAULT_RECORD_SIZE, crc32

_MAGIC = const(0x4C46434D)  # b"MCFL" little-endian
_HDR_FMT = "<IHHHHI"
_HDR_SIZE = const(20)
_HDR_BODY = const(16)
_DATA = const(40)


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


class FaultLog:
    def __init__(self, path, capacity=64):
        if not 1 <= capacity <= 0xFFFF:
            raise ValueError("capacity must be 1..65535")
        self.path = path
        self.capacity = capacity
        self.boot = 0
        self.status = "ok"
        self.reason = ""
        self._next = 0
        self._count = 0
        self._seq = 0
        self._hdr = bytearray(_HDR_SIZE)
        self._rec = bytearray(FAULT_RECORD_SIZE)
        self._f = None
        self._open()

    # ---- opening --------------------------------------------------------------------
    def _file_size(self):
        return _DATA + self.capacity * FAULT_RECORD_SIZE

    def _open(self):
        size = _size(self.path)
        if size < 0:
            self._create(0)
            if self.status != "ram":
                self.status = "new"
            return
        try:
            self._f = open(self.path, "r+b")
        except OSError:  # read-only filesystem: carry on in RAM from the file's contents
            with open(self.path, "rb") as f:
                self._to_ram(f.read())
            size = self._file_size()
        best = None
        for slot in (0, 1):
            h = self._header(slot)
            if h and (best is None or ((h[0] - best[0]) & 0xFFFFFFFF) < 0x80000000):
                best = h
        why = ""
        if best is None:
            why = "no valid header"
        elif best[1] != self.capacity:
            why = "capacity %d, not %d" % (best[1], self.capacity)
        elif size != self._file_size():
            why = "size %d, not %d" % (size, self._file_size())
        if best is not None:
            self.boot = best[4]
        if why:
            self._f.close()
            self._f = None
            self._create(self.boot)
            self.status = "reset"
            self.reason = why
            return
        self._seq, _, self._next, self._count = best[0], best[1], best[2], best[3]

    def _header(self, slot):
        """(seq, capacity, next, count, boot) of a header copy, or None if it is not valid."""
        f = self._f
        f.seek(slot * _HDR_SIZE)
        b = f.read(_HDR_SIZE)
        if not b or len(b) != _HDR_SIZE:
            return None
        magic, cap, nxt, count, boot, seq = struct.unpack_from(_HDR_FMT, b, 0)
        if magic != _MAGIC or struct.unpack_from("<I", b, _HDR_BODY)[0] != crc32(b[:_HDR_BODY]):
            return None
        if cap == 0 or nxt >= cap or count > cap:
            return None
        return seq, cap, nxt, count, boot

    def _to_ram(self, contents):
        self._f = io.BytesIO(contents)
        self.status = "ram"
        self.reason = "read-only filesystem: faults are kept in RAM until reset"

    def _create(self, boot):
        try:
            with open(self.path, "wb") as f:
                f.write(bytes(self._file_size()))
            self._f = open(self.path, "r+b")
        except OSError:
            self._to_ram(bytes(self._file_size()))
        self._next = self._count = 0
        self._seq = 0
        self.boot = boot
        self._write_header()

    def _write_header(self):
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        h = self._hdr
        struct.pack_into(_HDR_FMT, h, 0, _MAGIC, self.capacity, self._next, self._count, self.boot, self._seq)
        struct.pack_into("<I", h, _HDR_BODY, crc32(memoryview(h)[:_HDR_BODY]))
        f = self._f
        f.seek((self._seq & 1) * _HDR_SIZE)
        f.write(h)
        f.flush()

    # ---- API ------------------------------------------------------------------------
    def next_boot(self):
        """Count this boot (persisted) and return its number: 1, 2, ... 65535, then 1 again."""
        self.boot = self.boot % 0xFFFF + 1
        self._write_header()
        return self.boot

    def append(self, boot, t, cause, value):
        """Persist one fault record; once full, the oldest record is overwritten."""
        if value > 0x7FFFFFFF:
            value = 0x7FFFFFFF
        elif value < -0x80000000:
            value = -0x80000000
        cap = self.capacity
        if self._count == cap:
            self._count -= 1  # drop the oldest from the header before its slot is overwritten
            self._write_header()
        struct.pack_into(FAULT_RECORD, self._rec, 0, boot & 0xFFFF, t & 0xFFFFFFFF, cause & 0xFF, value)
        f = self._f
        f.seek(_DATA + self._next * FAULT_RECORD_SIZE)
        f.write(self._rec)
        f.flush()
        self._next = (self._next + 1) % cap
        self._count += 1
        self._write_header()

    def count(self):
        return self._count

    def read(self, first=0, max_records=64):
        """Records first .. first+max_records-1 (0 = the oldest kept), back to back, as bytes."""
        if first < 0:
            first = 0
        n = self._count - first
        if n > max_records:
            n = max_records
        if n <= 0:
            return b""
        cap = self.capacity
        start = (self._next - self._count + first) % cap
        head = cap - start
        if head > n:
            head = n
        f = self._f
        f.seek(_DATA + start * FAULT_RECORD_SIZE)
        out = f.read(head * FAULT_RECORD_SIZE)
        if n > head:
            f.seek(_DATA)
            out += f.read((n - head) * FAULT_RECORD_SIZE)
        return bytes(out)

    def clear(self):
        """Forget every record (the boot counter stays)."""
        self._next = self._count = 0
        self._write_header()

    def close(self):
        if self._f:
            self._f.close()
            self._f = None
