"""The persisted fault log: records, the ring, restarts, damaged files, the boot counter.

Files live in a fresh directory under /tmp (removed afterwards); "a restart" is opening the
same path again with a new FaultLog, as the firmware does after a reset.
"""

import os
import struct

from magcam_fw import protocol as P
from magcam_fw.faultlog import FaultLog

REC = P.FAULT_RECORD_SIZE


class _Dir:
    """A unique temporary directory on both runtimes (no tempfile on MicroPython)."""

    def __enter__(self):
        self.path = "/tmp/magcam-faultlog-" + bytes(os.urandom(6)).hex()
        os.mkdir(self.path)
        return self

    def file(self, name="faults.bin"):
        return self.path + "/" + name

    def __exit__(self, *exc):
        for name in os.listdir(self.path):
            os.remove(self.path + "/" + name)
        os.rmdir(self.path)
        return False


def _size(path):
    return os.stat(path)[6]


def _records(data):
    assert len(data) % REC == 0, len(data)
    return [struct.unpack_from(P.FAULT_RECORD, data, i) for i in range(0, len(data), REC)]


def _write_at(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_faultlog_new_file_and_records_round_trip():
    with _Dir() as d:
        path = d.file()
        log = FaultLog(path, capacity=8)
        assert log.status == "new" and log.count() == 0 and log.read(0, 10) == b""
        assert _size(path) == 40 + 8 * REC  # created at its full, fixed size
        log.append(1, 1234, 1, 2600)
        log.append(1, 0xFFFFFFFF, 2, 4100)
        log.append(2, 7, 3, -5)
        assert log.count() == 3
        data = log.read(0, 64)
        assert len(data) == 3 * REC and isinstance(data, bytes)
        assert _records(data) == [(1, 1234, 1, 2600), (1, 0xFFFFFFFF, 2, 4100), (2, 7, 3, -5)]
        assert _records(log.read(1, 1)) == [(1, 0xFFFFFFFF, 2, 4100)]
        assert _records(log.read(2, 10)) == [(2, 7, 3, -5)]
        assert log.read(3, 10) == b"" and log.read(0, 0) == b""
        assert _size(path) == 40 + 8 * REC
        log.close()


def test_faultlog_ring_overwrites_the_oldest():
    with _Dir() as d:
        path = d.file()
        log = FaultLog(path, capacity=4)
        for i in range(11):
            log.append(1, 100 + i, 1 + i % 3, i)
            assert log.count() == min(i + 1, 4)
            assert _size(path) == 40 + 4 * REC  # bounded whatever is appended
        assert [r[3] for r in _records(log.read(0, 64))] == [7, 8, 9, 10]
        assert [r[3] for r in _records(log.read(1, 2))] == [8, 9]
        assert [r[3] for r in _records(log.read(3, 2))] == [10]
        log.close()


def test_faultlog_survives_a_restart():
    with _Dir() as d:
        path = d.file()
        log = FaultLog(path, capacity=5)
        for i in range(7):
            log.append(3, 1000 * i, 1, i)
        before = log.read(0, 64)
        log.close()  # the reset: nothing else is done before it
        log = FaultLog(path, capacity=5)
        assert log.status == "ok" and log.reason == ""
        assert log.count() == 5 and log.read(0, 64) == before
        log.append(4, 5, 2, 99)  # and it carries on where it was
        log = FaultLog(path, capacity=5)  # (the old handle is simply dropped, as at a reset)
        assert [r[3] for r in _records(log.read(0, 64))] == [3, 4, 5, 6, 99]


def test_faultlog_clear_persists_and_keeps_the_boot_counter():
    with _Dir() as d:
        path = d.file()
        log = FaultLog(path)
        assert log.next_boot() == 1
        log.append(1, 1, 1, 1)
        log.append(1, 2, 1, 1)
        log.clear()
        assert log.count() == 0 and log.read(0, 64) == b""
        log.close()
        log = FaultLog(path)
        assert log.count() == 0 and log.boot == 1 and log.next_boot() == 2
        log.append(2, 3, 2, 4000)
        assert _records(log.read(0, 64)) == [(2, 3, 2, 4000)]
        log.close()


def test_faultlog_boot_counter_increments_across_restarts():
    with _Dir() as d:
        path = d.file()
        boots = []
        for _ in range(5):
            log = FaultLog(path)
            boots.append(log.next_boot())
            log.close()
        assert boots == [1, 2, 3, 4, 5]
        log = FaultLog(path)
        log.boot = 0xFFFF
        assert log.next_boot() == 1  # wraps past 65535, never 0
        log.close()


def test_faultlog_truncated_file_starts_fresh_and_says_so():
    with _Dir() as d:
        path = d.file()
        log = FaultLog(path, capacity=8)
        log.next_boot()
        log.next_boot()
        for i in range(5):
            log.append(2, i, 1, i)
        log.close()
        with open(path, "rb") as f:
            head = f.read(40 + 2 * REC)
        with open(path, "wb") as f:
            f.write(head)  # a filesystem that lost the end of the file
        log = FaultLog(path, capacity=8)
        assert log.status == "reset" and "size" in log.reason, (log.status, log.reason)
        assert log.count() == 0 and _size(path) == 40 + 8 * REC
        assert log.boot == 2  # the header was fine: the boot count carries on
        log.append(3, 1, 1, 7)
        log.close()
        log = FaultLog(path, capacity=8)
        assert log.status == "ok" and _records(log.read(0, 9)) == [(3, 1, 1, 7)]
        log.close()


def test_faultlog_garbage_or_empty_file_starts_fresh():
    for content in (b"", b"\x00" * 3, b"\xff" * (40 + 64 * REC), bytes(range(256)) * 4):
        with _Dir() as d:
            path = d.file()
            with open(path, "wb") as f:
                f.write(content)
            log = FaultLog(path)
            assert log.status == "reset" and log.reason, (len(content), log.status)
            assert log.count() == 0 and log.boot == 0
            log.append(1, 2, 3, 4)
            log.close()
            assert FaultLog(path).count() == 1


def test_faultlog_other_capacity_starts_fresh():
    with _Dir() as d:
        path = d.file()
        log = FaultLog(path, capacity=16)
        log.append(1, 1, 1, 1)
        log.close()
        log = FaultLog(path, capacity=32)
        assert log.status == "reset" and "capacity" in log.reason
        assert log.count() == 0 and _size(path) == 40 + 32 * REC
        log.close()


def test_faultlog_torn_header_write_loses_only_the_last_record():
    with _Dir() as d:
        path = d.file()
        log = FaultLog(path)
        for i in range(3):
            log.append(1, i, 1, i)
        newest = log._seq & 1  # the header copy written last
        log.close()
        # A reset in the middle of that header write: half of it is garbage.
        _write_at(path, newest * 20 + 6, b"\xa5" * 8)
        log = FaultLog(path)
        assert log.status == "ok"  # the other copy is intact
        assert [r[3] for r in _records(log.read(0, 64))] == [0, 1]  # only the record in flight lost
        log.append(1, 9, 1, 9)
        log.close()
        assert [r[3] for r in _records(FaultLog(path).read(0, 64))] == [0, 1, 9]


class _CrashingFile:
    """Wraps the log's file: the record write stops half-way, as a reset would stop it."""

    def __init__(self, f):
        self._f = f

    def seek(self, *a):
        return self._f.seek(*a)

    def read(self, *a):
        return self._f.read(*a)

    def flush(self):
        return self._f.flush()

    def close(self):
        return self._f.close()

    def write(self, data):
        if len(data) == REC:
            self._f.write(bytes(data[:5]))
            self._f.flush()
            raise OSError("reset")
        return self._f.write(data)


def test_faultlog_reset_while_overwriting_the_oldest_keeps_the_others():
    with _Dir() as d:
        path = d.file()
        log = FaultLog(path, capacity=4)
        for i in range(4):
            log.append(1, i, 1, 10 + i)
        log._f = _CrashingFile(log._f)
        try:
            log.append(1, 99, 2, 99)  # the full ring: this overwrites record 10's slot
        except OSError:
            pass
        else:
            raise AssertionError("the crash did not happen")
        log.close()
        log = FaultLog(path, capacity=4)
        assert log.status == "ok"
        # The oldest (being overwritten) and the new one are gone; no half-written record shows.
        assert _records(log.read(0, 64)) == [(1, 1, 1, 11), (1, 2, 1, 12), (1, 3, 1, 13)]
        log.append(1, 100, 2, 100)
        assert [r[3] for r in _records(log.read(0, 64))] == [11, 12, 13, 100]
        log.close()


def test_faultlog_read_returns_what_cmd_faults_read_sends():
    with _Dir() as d:
        log = FaultLog(d.file(), capacity=64)
        for i in range(70):
            log.append(i // 10, i * 100, 1 + i % 8, -i)
        data = log.read(0, 64)
        assert len(data) == 64 * REC  # 704 bytes: fits one ACK with room to spare
        recs = _records(data)
        assert recs[0] == (0, 600, 7, -6) and recs[-1] == (6, 6900, 6, -69)
        assert log.read(60, 64) == data[60 * REC :]
        log.close()


def test_read_only_filesystem_keeps_the_log_in_ram():
    # /proc takes no new files, not even from root: as a read-only CIRCUITPY drive does.
    log = FaultLog("/proc/magcam-faults-test.bin", capacity=4)
    assert log.status == "ram" and "read-only" in log.reason
    boot = log.next_boot()
    log.append(boot, 100, 1, 2500)
    log.append(boot, 200, 2, 4100)
    assert log.count() == 2
    assert log.read(0, 10) == struct.pack("<HIBi", boot, 100, 1, 2500) + struct.pack("<HIBi", boot, 200, 2, 4100)
    log.clear()
    assert log.count() == 0
