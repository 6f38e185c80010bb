"""Put the app on a board that already runs MicroPython or CircuitPython, copying only what
changed; and tell a person what to run when a device's firmware differs from the host's.

MicroPython (``deploy(port)``): through mpremote's Python API (``SerialTransport``, the raw
REPL). One script run on the device reports the SHA-256 of every file the app needs, what is in
``/lib/magcam_fw``, and the board file; only files whose hash differs are written, each to
``PATH.part`` then renamed over ``PATH`` (a reset mid-copy keeps the old file). Then leftovers
that would shadow the new code are removed (``/lib/magcam_fw`` entries the app no longer has,
e.g. a ``.py`` beside its ``.mpy``; a ``/magcam_fw`` package at the root, which ``sys.path``
searches before ``/lib``), and the board is soft-reset so the app starts. The modules are
compiled for the device's own .mpy version. The device's ``/descriptor.json`` (this module's
calibration) is left alone unless ``descriptor=`` is given; the board file goes to
``/board.json`` unless the device already has one and no ``board`` was given.

While the app runs it owns the REPL's port (Ctrl-C is data then), so when the raw REPL does not
answer, deploy asks for a press of the board's RESET button and sends Ctrl-C until MicroPython
stops in the boot wait (``repl_escape.boot_wait_ms``) and gives the REPL.

CircuitPython (``deploy(None, drive=...)`` or a CircuitPython ``board``): the sources are copied
to the CIRCUITPY drive (``drive``, or the one mounted with that volume label), each file written
atomically and skipped when identical; CircuitPython reloads by itself, and a changed
``boot.py`` needs a press of RESET.

Usage::

    from magcam.deploy import deploy, version_advice

    result = deploy("/dev/ttyACM0", progress=lambda stage, done, total: ...)
    print(result.copied, result.skipped, result.removed)
    deploy(None, board="feather-rp2040-circuitpython")         # finds the CIRCUITPY drive
    advice = version_advice(hello_fw, hello_proto, "rpi-pico", port="/dev/ttyACM0")
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from magcam_fw import FIRMWARE_VERSION
from magcam_fw import board as fw_board
from magcam_fw.protocol import VERSION as PROTOCOL_VERSION

from .atomic import atomic_write
from .discovery import port_hint
from .firmware_image import (
    BOARDS_DIR,
    LIB_DIR,
    PACKAGE,
    AppFile,
    ImageError,
    app_files,
    mpy_major,
    resolve_board,
)

Progress = Callable[[str, int, int], None]
Log = Callable[[str], None]

NOAPP = "/magcam_noapp"
ROOT_PACKAGE = "/" + PACKAGE
DRIVE_LABEL = "CIRCUITPY"
CHUNK = 256  # bytes per raw-REPL write (mpremote's own fs cp chunk)


class DeployError(Exception):
    """Bad input, no board, or a device that would not take the app: a one-line message."""


@dataclass(frozen=True)
class DeployPlan:
    copy: tuple[AppFile, ...]
    skip: tuple[str, ...]
    remove: tuple[str, ...]

    @property
    def copy_bytes(self) -> int:
        return sum(len(f.data) for f in self.copy)


@dataclass
class DeployResult:
    target: str  # the port or the drive
    board: str
    runtime: str
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reset: bool = False


# ---- the plan (pure) -------------------------------------------------------------------------


def plan_files(files: list[AppFile], have: dict[str, str | None], lib_entries: list[str] | None = None,
               root_package: bool = False) -> DeployPlan:
    """What to copy, skip and remove: ``have`` maps device paths to their SHA-256 (hex; None or
    absent when missing); ``lib_entries``: names in the device's ``/lib/magcam_fw``;
    ``root_package``: a ``/magcam_fw`` exists at the root (it would shadow ``/lib``)."""
    copy, skip = [], []
    for f in files:
        (skip.append(f.path) if have.get(f.path) == f.sha256 else copy.append(f))
    wanted = {f.path for f in files}
    remove = [f"{LIB_DIR}/{n}" for n in sorted(lib_entries or ()) if f"{LIB_DIR}/{n}" not in wanted]
    if root_package:
        remove.append(ROOT_PACKAGE)
    return DeployPlan(tuple(copy), tuple(skip), tuple(remove))


def parents(paths) -> list[str]:
    """Every directory the paths need, parents first (``/lib``, ``/lib/magcam_fw``)."""
    out: list[str] = []
    for p in paths:
        parts = p.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            if d not in out:
                out.append(d)
    return out


# ---- boards ----------------------------------------------------------------------------------


def _repo_boards(rt: str) -> list[tuple[str, dict]]:
    out = []
    for p in sorted(BOARDS_DIR.glob("*.json")):
        try:
            out.append((str(p), json.loads(p.read_text())))
        except (OSError, ValueError):
            continue
    return [(p, b) for p, b in out if b.get("runtime") == rt]


def board_for_machine(machine: str, rt: str) -> dict:
    """The repository board whose ``match`` fits this machine string (the firmware's own rule)."""
    candidates = _repo_boards(rt)
    try:
        path, _ = fw_board.pick_board(candidates, machine, rt)
        return fw_board.load(path)
    except fw_board.BoardError as e:
        # The firmware's wording points at the device's /board.json; here the fix is --board.
        names = ", ".join(Path(p).stem for p, _ in candidates) or "none"
        why = str(e).split(";")[0]
        raise DeployError(f"{why}: give --board NAME ({rt} boards here: {names}), or add a board file "
                          "whose 'match' occurs in that machine string (docs/boards.md)") from None


def _board(board) -> dict:
    try:
        return resolve_board(board)
    except ImageError as e:
        raise DeployError(str(e)) from None


def _files(bd: dict, **kw) -> list[AppFile]:
    try:
        return app_files(bd, **kw)
    except ImageError as e:
        raise DeployError(str(e)) from None


# ---- MicroPython over the raw REPL -----------------------------------------------------------

_QUERY = r"""
import os, sys, json
try:
    import hashlib, binascii
    hashlib.sha256
except (ImportError, AttributeError):
    hashlib = None
def _h(p):
    if hashlib is None:
        return None
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    d = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        d.update(m[:n])
    f.close()
    return binascii.hexlify(d.digest()).decode()
def _ls(p):
    try:
        return [e[0] for e in os.ilistdir(p)]
    except OSError:
        return None
def _rd(p):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return None
_r = {"hash": {}, "lib": _ls(R + LIB), "root_pkg": _ls(R + PKG) is not None,
      "noapp": _ls(R + '/') is not None and NOAPP[1:] in _ls(R + '/'), "board": _rd(R + '/board.json'),
      "impl": sys.implementation.name, "machine": getattr(sys.implementation, '_machine', sys.platform),
      "version": list(sys.implementation.version[:3]), "mpy": getattr(sys.implementation, '_mpy', 0),
      "hashlib": hashlib is not None}
for p in P:
    _r["hash"][p] = _h(R + p)
print(json.dumps(_r))
"""

_MKDIRS = """
import os
for d in D:
    try:
        os.mkdir(d)
    except OSError:
        pass
"""

_RENAME = """
import os
try:
    os.rename(A, B)
except OSError:
    os.remove(B)
    os.rename(A, B)
"""

_REMOVE = """
import os
def _rm(p):
    try:
        m = os.stat(p)[0]
    except OSError:
        return
    if m & 0x4000:
        for e in list(os.ilistdir(p)):
            _rm(p + '/' + e[0])
        os.rmdir(p)
    else:
        os.remove(p)
for p in D:
    _rm(p)
"""


def _script(body: str, **names) -> str:
    return "".join(f"{k} = {v!r}\n" for k, v in names.items()) + body


def _exec(t, code: str, what: str) -> bytes:
    from mpremote.transport import TransportError, TransportExecError

    try:
        return t.exec(code)
    except TransportExecError as e:
        last = (e.error_output or "").strip().splitlines()
        raise DeployError(f"{t.device_name}: {what} failed on the device: {last[-1] if last else e}") from None
    except TransportError as e:
        raise DeployError(f"{t.device_name}: {what}: {e}") from None


def query_device(t, paths: list[str], root: str = "") -> dict:
    """What the device has: hashes of ``paths``, ``/lib/magcam_fw`` entries, its board file,
    implementation, machine string, version and .mpy version (one script, one round trip)."""
    out = _exec(t, _script(_QUERY, R=root.rstrip("/"), P=paths, LIB=LIB_DIR, PKG=ROOT_PACKAGE, NOAPP=NOAPP),
                "reading the filesystem")
    try:
        return json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DeployError(f"{t.device_name}: unexpected answer from the device: {out[-200:]!r}") from None


def apply_plan(t, plan: DeployPlan, root: str = "", progress: Progress | None = None) -> None:
    """Make the directories, write each file as PATH.part then rename it, remove leftovers."""
    from mpremote.transport import TransportError

    r = root.rstrip("/")
    if plan.copy:
        _exec(t, _script(_MKDIRS, D=[r + d for d in parents(f.path for f in plan.copy)]), "making directories")
    total, done = plan.copy_bytes, 0
    for f in plan.copy:
        part = r + f.path + ".part"
        base = done

        def cb(n, _size, base=base):
            if progress:
                progress("copy", base + n, total)

        try:
            t.fs_writefile(part, f.data, chunk_size=CHUNK, progress_callback=cb)
        except (OSError, TransportError) as e:
            raise DeployError(f"{t.device_name}: writing {f.path} failed: {e}") from None
        _exec(t, _script(_RENAME, A=part, B=r + f.path), f"renaming {f.path}")
        done += len(f.data)
        if progress:
            progress("copy", done, total)
    if plan.remove:
        _exec(t, _script(_REMOVE, D=[r + p for p in plan.remove]), "removing leftovers")


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())  # mpremote prints what it could not parse


def _raw_repl(t, timeout: float) -> bool:
    from mpremote.transport import TransportError
    from serial import SerialException

    try:
        with _quiet():
            t.enter_raw_repl(soft_reset=False, timeout_overall=timeout)
        return True
    except (TransportError, SerialException, OSError):
        return False


def _open_serial(port: str):
    """A mpremote SerialTransport on ``port``; DeployError with a hint when it cannot open."""
    import serial
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport

    try:
        with _quiet():
            return SerialTransport(port, baudrate=115200)
    except TransportError:
        try:  # mpremote hides why: ask pyserial, opening as mpremote does (exclusive: a held port says busy)
            serial.Serial(port, exclusive=True).close()
            why = "failed to open"
        except (serial.SerialException, OSError) as e:
            why = str(e)
        hint = port_hint(why)
        raise DeployError(f"{port}: {why}" + (f" -- {hint}" if hint else "")) from None


def _probe(t, seconds: float) -> bytes:
    """Interrupt (Ctrl-C), leave a raw REPL (Ctrl-B), ask for a prompt (CR); collect the
    answer for up to ``seconds`` without blocking (mpremote's reads block forever on a pty)."""
    t.serial.write(b"\r\x03\x02\r")
    end = time.monotonic() + seconds
    seen = b""
    while time.monotonic() < end and not _at_prompt(seen):
        n = t.serial.in_waiting
        if n:
            seen += t.serial.read(n)
        else:
            time.sleep(0.02)
    return seen


def _at_prompt(seen: bytes) -> bool:
    return b">>> " in seen[-256:]


def open_repl(port: str, *, wait: float = 20.0, log: Log | None = None):
    """A mpremote transport in the raw REPL of the MicroPython board on ``port``.

    If the app holds the port (no prompt comes back), ask for RESET and keep interrupting
    through the boot wait, reopening the port while USB re-enumerates, for up to ``wait`` s."""
    from serial import SerialException

    t = _open_serial(port)
    try:
        if _at_prompt(_probe(t, 1.5)) and _raw_repl(t, 5.0):
            return t
    except (SerialException, OSError):
        pass
    if log:
        log(f"the app is running on {port} and holds the REPL: press the board's RESET button now "
            f"(waiting {wait:.0f} s)")
    deadline = time.monotonic() + wait
    seen = b""
    while time.monotonic() < deadline:
        try:
            if t is None:
                t = _open_serial(port)
            seen = (seen + _probe(t, 0.1))[-512:]
            if _at_prompt(seen) and _raw_repl(t, 5.0):
                return t
        except (SerialException, OSError, DeployError):
            with contextlib.suppress(Exception):
                t.close()
            t, seen = None, b""
            time.sleep(0.2)
    with contextlib.suppress(Exception):
        t.close()
    raise DeployError(
        f"{port}: no MicroPython REPL: the app kept the port. Press RESET and run deploy within the boot wait, "
        "or hold the escape button (ESP32-S3: BOOT; Pico: BOOTSEL) while resetting, then run deploy again")


def deploy_micropython(t, *, board=None, descriptor: Path | None = None, root: str = "", reset: bool = True,
                       progress: Progress | None = None, log: Log | None = None) -> DeployResult:
    """Deploy over an open mpremote transport already in the raw REPL (see ``deploy``).
    ``root``: a directory on the device to deploy under instead of ``/`` (tests)."""
    info = query_device(t, [], root)
    if info["impl"] != "micropython":
        raise DeployError(f"{t.device_name} runs {info['impl']}, not MicroPython: copy the app to its "
                          "CIRCUITPY drive with `magcam deploy --board BOARD [--drive PATH]`")
    notes = []
    keep_board = board is None and info["board"] is not None
    if board is not None:
        bd = _board(board)
    elif keep_board:
        try:
            bd = fw_board.load("/board.json", info["board"])
        except fw_board.BoardError as e:
            raise DeployError(f"the device's {e}; give --board to replace it") from None
        notes.append(f"kept the device's /board.json ({bd['name']})")
    else:
        bd = board_for_machine(info["machine"], "micropython")
        notes.append(f"board {bd['name']} picked for {info['machine']!r}")
    if bd.get("runtime") != "micropython":
        raise DeployError(f"{bd['name']} is a {bd.get('runtime')} board, but {t.device_name} runs MicroPython")
    _check_machine(bd, info["machine"], keep_board)
    files = _files(bd, descriptor=descriptor, with_descriptor=descriptor is not None, progress=progress)
    device_mpy = info["mpy"] & 0xFF
    built = next((mpy_major(f.data) for f in files if f.path.endswith(".mpy")), device_mpy)
    if device_mpy and built != device_mpy:
        version = ".".join(str(v) for v in info["version"])
        files = _files(bd, descriptor=descriptor, with_descriptor=descriptor is not None, micropython=version)
        notes.append(f"compiled for the device's MicroPython {version} (.mpy v{device_mpy})")
    if keep_board:
        files = [f for f in files if f.path != "/board.json"]
    have = query_device(t, [f.path for f in files], root)
    if not have["hashlib"]:
        notes.append("no hashlib.sha256 on the device: every file copied")
    plan = plan_files(files, have["hash"], have["lib"], have["root_pkg"])
    if log:
        log(f"{len(plan.copy)} to copy ({plan.copy_bytes} bytes), {len(plan.skip)} unchanged, "
            f"{len(plan.remove)} to remove")
    apply_plan(t, plan, root, progress)
    if have["noapp"]:
        notes.append(f"{NOAPP} exists, so the app will not start: delete it "
                     f"(mpremote connect {t.device_name} fs rm :{NOAPP[1:]})")
    if reset:
        t.exit_raw_repl()
        t.serial.write(b"\x04")  # Ctrl-D at the friendly REPL: soft reset, boot.py and main.py run
        t.serial.flush()
    return DeployResult(target=t.device_name, board=bd["name"], runtime="micropython",
                        copied=[f.path for f in plan.copy], skipped=list(plan.skip), removed=list(plan.remove),
                        notes=notes, reset=reset)


# ---- CircuitPython: the CIRCUITPY drive -----------------------------------------------------


def _mounts() -> list[tuple[str, str]]:
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2:
            out.append((parts[0], parts[1].replace("\\040", " ")))
    return out


def _windows_drives(label: str) -> list[str]:
    import ctypes
    import string

    found = []
    buf = ctypes.create_unicode_buffer(261)
    for letter in string.ascii_uppercase:
        root = f"{letter}:\\"
        ok = ctypes.windll.kernel32.GetVolumeInformationW(root, buf, 261, None, None, None, None, 0)
        if ok and buf.value == label:
            found.append(root)
    return found


def find_drive(label: str = DRIVE_LABEL) -> Path:
    """The one mounted drive with this volume label (Linux: /dev/disk/by-label and
    /proc/mounts; macOS: /Volumes; Windows: volume labels), holding CircuitPython's
    boot_out.txt."""
    cands: list[str] = []
    by_label = Path("/dev/disk/by-label") / label
    dev = os.path.realpath(by_label) if by_label.exists() else None
    for src, mnt in _mounts():
        if (dev and os.path.realpath(src) == dev) or Path(mnt).name == label:
            cands.append(mnt)
    cands += [str(p) for p in Path("/Volumes").glob(f"{label}*")] if Path("/Volumes").is_dir() else []
    if os.name == "nt":
        cands += _windows_drives(label)
    found = sorted({c for c in cands if (Path(c) / "boot_out.txt").is_file()})
    if not found:
        raise DeployError(f"no {label} drive mounted: plug the board in (it shows up as a USB drive named {label}) "
                          "or give --drive PATH")
    if len(found) > 1:
        raise DeployError(f"several {label} drives mounted ({', '.join(found)}): pick one with --drive")
    return Path(found[0])


def _check_machine(bd: dict, machine: str, kept: bool) -> None:
    """Refuse to install a board file whose ``match`` is not in the device's machine string:
    the firmware would refuse it at boot (safe mode), and its pin map is another board's."""
    where = "the device's board.json" if kept else "--board"
    advice = "give --board to replace it" if kept else "give this device's board, or leave --board out to pick it"
    try:
        fw_board.check_fits(bd, where, bd["runtime"], machine, advice)
    except fw_board.BoardError as e:
        raise DeployError(str(e)) from None


def drive_machine(drive: Path) -> str:
    """The machine string from CircuitPython's boot_out.txt ("...; Adafruit Feather RP2040 with
    rp2040")."""
    try:
        first = (drive / "boot_out.txt").read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        raise DeployError(f"{drive} has no readable boot_out.txt: is it a CircuitPython drive? Give --board") from None
    return first.split(";", 1)[1].strip() if ";" in first else first


def _drive_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _check_room(drive: Path, copy) -> None:
    """Refuse, before writing anything, a copy the drive has no room for: a CIRCUITPY drive is
    often 1-2 MB, and an app half copied does not boot. Counts whole clusters, the space the
    files they replace give back, and one file's temporary copy (writes are atomic)."""
    try:
        st = os.statvfs(drive)
    except OSError:
        return  # cannot tell: the copy itself will say
    cluster = max(1, st.f_frsize)

    def clusters(n: int) -> int:
        return -(-n // cluster) * cluster

    need = max((clusters(len(f.data)) for f in copy), default=0)
    for f in copy:
        old = drive / f.path.lstrip("/")
        freed = clusters(old.stat().st_size) if old.is_file() else 0
        need += clusters(len(f.data)) - freed
    need += sum(cluster for d in parents(f.path for f in copy) if not (drive / d.lstrip("/")).is_dir())
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise DeployError(f"{drive} has {free // 1024} KiB free and the app needs {-(-need // 1024)} KiB: "
                          "nothing was copied; make room (e.g. unused libraries under lib/) and deploy again")


def deploy_drive(drive: Path, *, board=None, descriptor: Path | None = None, progress: Progress | None = None,
                 log: Log | None = None) -> DeployResult:
    """Copy the app's sources to a CircuitPython drive (a mounted directory)."""
    drive = Path(drive)
    if not drive.is_dir():
        raise DeployError(f"{drive} is not a directory (the CIRCUITPY drive's mount point)")
    notes = []
    keep_board = board is None and (drive / "board.json").is_file()
    if board is not None:
        bd = _board(board)
    elif keep_board:
        try:
            bd = fw_board.load(str(drive / "board.json"))
        except fw_board.BoardError as e:
            raise DeployError(f"{e}; give --board to replace it") from None
        notes.append(f"kept the drive's board.json ({bd['name']})")
    else:
        bd = board_for_machine(drive_machine(drive), "circuitpython")
        notes.append(f"board {bd['name']} picked from boot_out.txt")
    if bd.get("runtime") != "circuitpython":
        raise DeployError(f"{bd['name']} runs {bd.get('runtime')}, not CircuitPython: " + (
            f"deploy over its serial port: `magcam deploy --port PORT --board {bd['name']}`"
            if bd.get("runtime") == "micropython" else "see docs/quickstart.md"))
    if (drive / "boot_out.txt").is_file():  # without it the machine is unknown
        _check_machine(bd, drive_machine(drive), keep_board)
    files = _files(bd, descriptor=descriptor, with_descriptor=descriptor is not None, progress=progress)
    if keep_board:
        files = [f for f in files if f.path != "/board.json"]
    have = {f.path: _drive_hash(drive / f.path.lstrip("/")) for f in files}
    lib = drive / LIB_DIR.lstrip("/")
    entries = sorted(p.name for p in lib.iterdir()) if lib.is_dir() else None
    plan = plan_files(files, have, entries, (drive / PACKAGE).exists())
    if log:
        log(f"{len(plan.copy)} to copy ({plan.copy_bytes} bytes), {len(plan.skip)} unchanged, "
            f"{len(plan.remove)} to remove")
    _check_room(drive, plan.copy)
    total, done = plan.copy_bytes, 0
    # The entry points last: a copy cut short (unplugged) leaves the old ones, not new ones that
    # import modules the drive does not have yet.
    order = sorted(plan.copy, key=lambda f: f.path.count("/") == 1 and f.path.endswith(".py"))
    try:
        kept = []
        for f in order:
            dest = drive / f.path.lstrip("/")
            if _users_own(drive, f.path):  # only now: a copy cut short before leaves it in place
                kept.append((dest.name, _aside(drive, dest.name)))
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(dest) as fh:
                fh.write(f.data)
            done += len(f.data)
            if progress:
                progress("copy", done, total)
        for p in plan.remove:
            target = drive / p.lstrip("/")
            if target.is_dir():
                import shutil

                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        moved = _move_aside_shadowing_code(drive)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise DeployError(f"{drive}: {e.strerror or e}{where}: is the drive full or read-only? "
                          "The files copied so far are whole; deploy again once it is fixed") from None
    notes += [f"kept your {a} as {b} (it is not a magcam one)" for a, b in kept]
    notes += [f"moved {a} aside to {b}: CircuitPython runs it instead of main.py" for a, b in moved]
    if not any((drive / "lib" / n).exists() for n in ("asyncio", "asyncio.mpy")):
        notes.append("CircuitPython has no built-in asyncio: install it on the board with `circup install asyncio`")
    if "/boot.py" in [f.path for f in plan.copy]:
        notes.append("boot.py changed: press RESET (CircuitPython runs boot.py only after a hard reset)")
    return DeployResult(target=str(drive), board=bd["name"], runtime="circuitpython",
                        copied=[f.path for f in plan.copy], skipped=list(plan.skip), removed=list(plan.remove),
                        notes=notes, reset=False)


# CircuitPython runs the first of these it finds (its main.c), so any of the first three on the
# drive (every fresh CIRCUITPY has a code.py printing "Hello World!") keeps the app from running.
_CIRCUITPY_ENTRIES = ("code.txt", "code.py", "main.txt", "main.py")


def _move_aside_shadowing_code(drive: Path) -> list[tuple[str, str]]:
    """Rename the entry files CircuitPython would run before main.py to NAME.bak (NAME.bak2, ...
    if taken): the user's own code is kept, not deleted. Returns (old, new) names."""
    return [(name, _aside(drive, name)) for name in _CIRCUITPY_ENTRIES[:-1] if (drive / name).is_file()]


def _aside(drive: Path, name: str) -> str:
    """Rename ``drive/name`` to the first free NAME.bak, NAME.bak2, ...; the new name."""
    n, dst = 1, drive / f"{name}.bak"
    while dst.exists():
        n += 1
        dst = drive / f"{name}.bak{n}"
    (drive / name).rename(dst)
    return dst.name


def _users_own(drive: Path, path: str) -> bool:
    """A main.py or boot.py on the drive that is not an earlier magcam one (ours name magcam):
    the user's own, to be renamed aside rather than overwritten."""
    name = path.lstrip("/")
    return name in ("main.py", "boot.py") and (drive / name).is_file() and b"magcam" not in (drive / name).read_bytes()


# ---- the entry point ------------------------------------------------------------------------


def deploy(port: str | None, *, board: str | Path | None = None, drive: Path | None = None,
           descriptor: Path | None = None, wait: float = 20.0, progress: Progress | None = None,
           log: Log | None = None) -> DeployResult:
    """Put the app on a board: CircuitPython through its drive (``drive``, a CircuitPython
    ``board``, or no ``port``), MicroPython through ``port`` with mpremote. Raises DeployError."""
    bd = _board(board) if board is not None else None
    rt = bd.get("runtime") if bd else None
    if rt in ("blinka", "micropython-unix"):
        raise DeployError(f"{bd['name']} runs the firmware from the repository ("
                          + ("`python3 firmware/main.py --board boards/rpi-blinka.json` on the Pi"
                             if rt == "blinka" else "`magcam sim`") + "): nothing to deploy")
    if drive is not None or rt == "circuitpython" or (port is None and rt is None):
        if port is not None:  # it would be ignored: say so rather than copy somewhere unexpected
            raise DeployError(f"--port {port} with " + ("--drive" if drive is not None else f"{bd['name']}, a "
                              "CircuitPython board") + ": CircuitPython boards are deployed through their CIRCUITPY "
                              "drive; leave out --port (the drive is found by its label, or give --drive)")
        if rt == "micropython":
            raise DeployError(f"{bd['name']} runs MicroPython: deploy over its serial port (--port), not a drive")
        if drive is None:
            try:
                drive = find_drive()
            except DeployError as e:
                if rt is None:  # nothing said which kind of board: name both ways
                    raise DeployError(f"give --port PORT for a MicroPython board; for CircuitPython: {e}") from None
                raise
        return deploy_drive(Path(drive), board=bd, descriptor=descriptor, progress=progress, log=log)
    if port is None:
        raise DeployError("give --port: the MicroPython board's serial port (see `magcam ports`)")
    from .sim import registry

    if registry.entry_for(port) is not None:  # else it would wait for a RESET that no simulator has
        raise DeployError(f"{port} is a simulated module (`magcam sim`): it runs the firmware from this "
                          "checkout, so there is nothing to deploy; restart it to pick up changes")
    t = open_repl(port, wait=wait, log=log)
    try:
        return deploy_micropython(t, board=bd, descriptor=descriptor, progress=progress, log=log)
    finally:
        with contextlib.suppress(Exception):
            t.close()


# ---- versions ------------------------------------------------------------------------------


def _vtuple(v: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(x) for x in str(v).strip().lstrip("v").split("."))
    except ValueError:
        return None


def version_advice(device_fw: str, device_proto: int, board: str | Path | None, *,
                   port: str | None = None) -> str | None:
    """None when the device runs this host's firmware and protocol; else one sentence saying
    what differs and the exact command that fixes it (``port`` goes into the command; "PORT"
    when not given). ``board``: a board name or file, or None (deploy then reads the device's)."""
    if device_fw == FIRMWARE_VERSION and device_proto == PROTOCOL_VERSION:
        return None
    p = shlex.quote(port) if port else "PORT"
    bd = None
    if board is not None:
        with contextlib.suppress(ImageError):
            bd = resolve_board(board)
    name = bd["name"] if bd else (Path(board).stem if board is not None else None)
    rt = bd.get("runtime") if bd else None
    what = (f"the module runs firmware {device_fw} (protocol {device_proto}); this host has "
            f"{FIRMWARE_VERSION} (protocol {PROTOCOL_VERSION})")
    if device_proto != PROTOCOL_VERSION:
        what += ": they cannot talk until both match"
    dv, hv = _vtuple(device_fw), _vtuple(FIRMWARE_VERSION)
    newer = device_proto > PROTOCOL_VERSION or (device_proto == PROTOCOL_VERSION and dv and hv and dv > hv)
    if rt == "micropython-unix":
        return f"{what}. Restart the simulator (`magcam sim`): it runs this host's firmware"
    if rt == "blinka":
        return (f"{what}. On the Raspberry Pi, update the magcam checkout (git pull) and restart "
                f"`python3 firmware/main.py --board boards/{name}.json`")
    if rt == "circuitpython":
        cmd = f"magcam deploy --board {shlex.quote(name)}"
    else:
        cmd = f"magcam deploy --port {p}" + (f" --board {shlex.quote(name)}" if name else "")
    if newer:
        text = (f"{what}. The device is newer: upgrade the host (pip install -U magcam), or put this host's "
                f"firmware on the device: {cmd}")
    else:
        text = f"{what}. Update the device: {cmd}"
    if bd is not None and rt == "micropython" and str(bd.get("chip", "")).startswith("esp32"):
        text += (f" (or reinstall MicroPython and the app: magcam flash --board {shlex.quote(name)} --port {p} "
                 "--micropython FIRMWARE.bin)")
    return text
