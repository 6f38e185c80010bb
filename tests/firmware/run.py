"""Firmware test runner for runtimes without pytest (the MicroPython unix port).

    micropython tests/firmware/run.py                   # every test_*.py beside this file
    micropython tests/firmware/run.py test_protocol     # only these modules

Imports each module, calls every function named ``test_*`` without arguments, reports each
failure with its exception, and ends with the line ``N passed, M failed`` (exit status 1 if
any failed). A module that fails to import counts as one failure. Works on CPython too.
"""

import os
import sys

try:
    from time import ticks_diff, ticks_ms
except ImportError:
    import time

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


def _here():
    path = __file__
    if not path.startswith("/"):
        path = os.getcwd() + "/" + path
    parts = []
    for p in path.split("/")[:-1]:
        if p == "..":
            if parts:
                parts.pop()
        elif p and p != ".":
            parts.append(p)
    return "/" + "/".join(parts)


HERE = _here()
REPO = HERE[: HERE[: HERE.rfind("/")].rfind("/")]  # <repo>/tests/firmware -> <repo>
FIRMWARE = REPO + "/firmware"


def _print_exc(e):
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)


def _modules(names):
    if names:
        return [n[:-3] if n.endswith(".py") else n for n in names]
    return sorted(f[:-3] for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))


def main(argv):
    for p in (HERE, FIRMWARE):
        if p not in sys.path:
            sys.path.insert(0, p)
    passed = 0
    failed = []
    t0 = ticks_ms()
    for name in _modules(argv):
        m0 = ticks_ms()
        try:
            mod = __import__(name)
        except Exception as e:
            print("FAIL %s (import): %s: %s" % (name, type(e).__name__, e))
            _print_exc(e)
            failed.append(name)
            continue
        tests = sorted(n for n in dir(mod) if n.startswith("test_") and callable(getattr(mod, n)))
        if not tests:
            print("FAIL %s: no test functions" % name)
            failed.append(name)
            continue
        n_ok = 0
        for t in tests:
            try:
                getattr(mod, t)()
            except Exception as e:  # AssertionError and anything else a test raises
                print("FAIL %s.%s: %s: %s" % (name, t, type(e).__name__, e))
                _print_exc(e)
                failed.append(name + "." + t)
            else:
                n_ok += 1
        passed += n_ok
        print("%-20s %3d passed %5d ms" % (name, n_ok, ticks_diff(ticks_ms(), m0)))
    print(
        "%s %s in %d ms"
        % (
            sys.implementation.name,
            ".".join(str(v) for v in sys.implementation.version[:3]),
            ticks_diff(ticks_ms(), t0),
        )
    )
    if failed:
        print("failed: " + ", ".join(failed))
    print("%d passed, %d failed" % (passed, len(failed)))
    if failed:
        sys.exit(1)


main(sys.argv[1:])
