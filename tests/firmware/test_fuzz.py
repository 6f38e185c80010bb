"""Protocol fuzzing: 10^4 seeded inputs through protocol.Decoder on whichever runtime runs this.

tests/firmware/run.py runs it on MicroPython, pytest on CPython; the inputs are the same bytes
on both (tests/test_fuzz_host.py compares the two runtimes' counters). tools/chaos.py runs the large size
(10^6 inputs) on demand. What is checked after every input: see tests/firmware/fuzz.py.
"""

import sys

import fuzz
from magcam_fw import protocol as P

CI_INPUTS = 10000
SEED = 20240601


def test_fuzz_decoder_10k_inputs():
    r = fuzz.run(CI_INPUTS, SEED)
    print("fuzz %s: %d inputs, %d crashes, %d failures, peak heap %d B, %.2f s" % (
        r["runtime"], r["inputs"], r["crashes"], r["failures"], r["peak_heap_bytes"], r["seconds"]))
    assert r["crashes"] == 0, r["first_failures"]
    assert r["failures"] == 0, r["first_failures"]
    for kind in fuzz.KINDS:  # every kind of input was drawn, a fair number of times
        assert r["by_kind"][kind] > CI_INPUTS // 40, r["by_kind"]
    assert r["random_delivered"] == 0  # random bytes never made a frame (CRC-32 collisions)
    totals = r["totals"]
    for name in ("crc_errors", "framing_errors", "overflows", "version_errors", "unknown_types"):
        assert totals[name] > 0, (name, totals)  # every error path was taken
    assert r["peak_heap_bytes"] > 0


def test_inputs_depend_on_seed_and_index_only():
    # (tests/test_fuzz_host.py checks that MicroPython draws the very same bytes as CPython.)
    assert fuzz.digest(1, 200) == fuzz.digest(1, 200)
    assert fuzz.digest(1, 200) != fuzz.digest(2, 200)
    assert fuzz.digest(1, 200) != fuzz.digest(1, 200, fuzz.DEVICE_RX_MAX)


class _ForgetsCrcErrors(P.Decoder):
    def feed(self, data, callback, n=-1):
        before = self.crc_errors
        got = P.Decoder.feed(self, data, callback, n)
        self.crc_errors = before
        return got


class _NeverResyncs(P.Decoder):
    def feed(self, data, callback, n=-1):
        if self.overflows:  # after the first overflow it never finds a frame again
            self._skipping = True
            self._n = 0
            return 0
        return P.Decoder.feed(self, data, callback, n)


class _Raises(P.Decoder):
    def _frame(self, callback):
        if self._n > 4000:
            raise IndexError("boom")
        return P.Decoder._frame(self, callback)


def test_fuzzer_catches_broken_decoders():
    # The checks are only worth something if they fail: three deliberately broken decoders.
    r = fuzz.run(400, 3, trace_heap=False, decoder=_ForgetsCrcErrors)
    assert r["failures"] > 0 and "errors counted" in " ".join(r["first_failures"]), r["first_failures"]
    r = fuzz.run(400, 3, trace_heap=False, decoder=_NeverResyncs)
    assert r["failures"] > 0 and "sentinel" in " ".join(r["first_failures"]), r["first_failures"]
    r = fuzz.run(400, 3, trace_heap=False, decoder=_Raises)
    assert r["crashes"] > 0 and "IndexError" in " ".join(r["first_failures"]), r["first_failures"]


def test_a_failing_input_can_be_replayed():
    kind, data, expect, allowed, extra = fuzz.case(SEED, 123)
    again = fuzz.case(SEED, 123)
    assert again[1] == data and kind in fuzz.KINDS
    assert sys.implementation.name in ("micropython", "cpython")
