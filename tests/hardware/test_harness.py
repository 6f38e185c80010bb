"""The hardware harness itself, without hardware: the raw-REPL client against the MicroPython
unix port in a pty (the same protocol a board speaks), and every board's loopback script
accepted by the MicroPython compiler (mpy-cross)."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
import tty
from pathlib import Path

import pytest
from magcam_fw.board import load

from . import (
    test_loopback,  # the module, not its names: those would bring its `pytestmark` (hardware) along
)
from .rawrepl import RawRepl, RemoteError

REPO = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"`{name}` not found (pip install -e .)")
    return found


class _UnixPortRepl:
    """The unix port's REPL on a pty: it speaks the raw REPL protocol as a board does."""

    def __init__(self):
        self.master, slave = pty.openpty()
        tty.setraw(slave)  # no newline translation: bytes as a USB CDC port carries them
        self.proc = subprocess.Popen([_tool("micropython")], stdin=slave, stdout=slave, stderr=slave,
                                     cwd=REPO / "firmware", close_fds=True)
        os.close(slave)

    def close(self):
        self.proc.kill()
        self.proc.wait(5)
        os.close(self.master)


class _MasterPort:
    """The pty master with the few pyserial methods RawRepl uses."""

    def __init__(self, fd):
        self.fd = fd

    def write(self, data):
        os.write(self.fd, data)

    def read(self, n):
        import select

        r, _, _ = select.select([self.fd], [], [], 0.05)
        return os.read(self.fd, n) if r else b""

    def reset_input_buffer(self):
        while self.read(4096):
            pass

    def close(self):
        pass


def test_raw_repl_client_against_the_unix_port():
    p = _UnixPortRepl()
    try:
        with RawRepl(_MasterPort(p.master), timeout=5) as repl:
            assert repl.exec("print(6 * 7)").strip() == "42"
            out = repl.exec("from magcam_fw.board import runtime\nprint(runtime())")
            assert out.strip() == "micropython-unix"
            with pytest.raises(RemoteError, match="ZeroDivisionError"):
                repl.exec("1 / 0")
            assert repl.exec("print('still there')").strip() == "still there"
    finally:
        p.close()


@pytest.mark.parametrize("name", ["esp32s3-devkitc-1.json", "rpi-pico.json"])
def test_loopback_scripts_compile_for_micropython(name, tmp_path):
    bd = load(str(REPO / "boards" / name))
    src = tmp_path / "loopback.py"
    src.write_text(test_loopback.loopback_script(bd))
    proc = subprocess.run([_tool("mpy-cross"), "-o", str(tmp_path / "l.mpy"), str(src)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    compile(src.read_text(), "loopback.py", "exec")
