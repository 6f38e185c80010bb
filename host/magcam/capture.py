"""Captures to disk: single frames, bursts and exposure brackets as DNG + JSON sidecar pairs.

The library part of ``magcam capture`` (see docs/capture.md)::

    from magcam.capture import CaptureRun, Plan

    with magcam.connect(port) as cam:
        run = CaptureRun(cam, "shots", Plan("bracket", evs=[-2, 0, 2]), on_event=print)
        run.run()                   # raises on errors; run.written / run.lost say what happened

and its parts:

* ``expand_filename(template, *, when, n, frame, descriptor)``: gphoto2 ``--filename`` style
  templates (``%Y%m%d-%H%M%S-%03n.dng``); ``check_template`` refuses, before anything is
  captured, templates that are malformed, leave the output directory or name two frames alike.
* ``save_capture(out_dir, template, frame, descriptor, telemetry, n)``: writes the DNG and its
  sidecar atomically, both or neither, and never replaces an existing file: when the name is
  taken it picks the next free one (``NAME_2.dng``, ``NAME_3.dng``, ...).
* ``CaptureProgress``: how ``magcam capture`` reports (rich progress bar on a terminal, plain
  lines in a pipe, one JSON object per line with ``--json``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import numbers
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
from magcam_fw.protocol import MAX_FRAME_BYTES as _MAX_FRAME_BYTES

from . import sidecar as _sidecar
from .atomic import link_new, missing_dirs, remove_empty, write_bytes_atomic
from .camera import MAX_EV, check_evs
from .report import Reporter
from .dng import write_dng
from .frame import RawFrame

DEFAULT_TEMPLATE = "%Y%m%d-%H%M%S-%n.dng"
DEFAULT_SIZE = (1024, 768)
SIDECAR_SUFFIX = ".json"
MAX_NUMBER_WIDTH = 20  # gphoto2 clamps %Nn the same way
_MAX_FREE_NAME_TRIES = 10_000

# strftime conversions gphoto2's --filename documents (see date(1)), applied to ``when``.
_STRFTIME = frozenset("aAbBdHIjmMSyY")
# Conversions that differ from frame to frame of a run, so a template with one of them can
# name a burst or bracket ('E' only when the bracket's EVs differ; checked by expansion).
_PER_FRAME = frozenset("nf:E")


class TemplateError(ValueError):
    """A --filename template that cannot be used: malformed, escaping, or naming frames alike."""


# ---- file name templates ------------------------------------------------------------------------
def camera_name(frame: RawFrame) -> str:
    """The name the module gives a frame, as a camera names files on its card (DCF style):
    ``MAGC`` + the frame id, at least 4 digits, + ``.DNG``. ``%f``, ``%C`` and ``%:`` use it."""
    return f"MAGC{int(frame.frame_id):04d}.DNG"


def format_ev(ev: float) -> str:
    """An EV as ``%E`` writes it: always signed, no needless digits (+2, -1, +0, +0.5, -0.33)."""
    ev = float(ev)
    if ev == 0:
        return "+0"
    text = f"{ev:+.2f}".rstrip("0").rstrip(".")
    return text


def expand_filename(template: str, *, when: datetime, n: int, frame: RawFrame, descriptor: dict | None = None) -> str:
    """Expand a gphoto2-style ``--filename`` template into a relative path (``/`` separated).

    Conversions (gphoto2's, see docs/capture.md): ``%a %A %b %B %d %H %k %I %l %j %m %M %S %y %Y``
    are the date and time of ``when`` as date(1) prints them; ``%n`` is ``n`` (the frame's number
    in the run, from 1) with optional zero padding, ``%03n`` or ``%3n`` giving ``007``; ``%f`` is
    the frame's camera name without suffix (``MAGC0007``), ``%C`` its suffix (``DNG``), ``%:``
    the whole camera name in lower case (``magc0007.dng``); ``%%`` is a literal ``%``.
    magcam adds ``%E``: the EV of a bracket frame (``-2``, ``+0``, ``+2``, ``+0.5``).
    ``%F`` (the camera folder) is refused: the module keeps no folders.

    The result must be a relative path inside the output directory ending in ``.dng``
    (any case); anything else raises TemplateError. ``descriptor`` is accepted for future
    conversions and is not used yet.
    """
    del descriptor  # reserved: no conversion uses the module descriptor yet
    if not isinstance(template, str) or not template:
        raise TemplateError("the file name template is empty")
    out: list[str] = []
    i, length = 0, len(template)
    while i < length:
        ch = template[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        start = i
        i += 1
        if i >= length:
            raise TemplateError(f"template {template!r} ends with a lone '%' (write %% for a literal %)")
        width = None
        zero = template[i] == "0"
        if zero:
            i += 1
        digits_at = i
        while i < length and template[i].isdigit():
            i += 1
        if i > digits_at:
            width = int(template[digits_at:i])
        elif zero and i < length and template[i] == "n":
            raise TemplateError(f"%0n in {template!r} needs a width, e.g. %03n")
        if i >= length:
            raise TemplateError(f"template {template!r} ends inside a conversion at position {start + 1}")
        conv = template[i]
        i += 1
        if (width is not None or zero) and conv != "n":
            raise TemplateError(f"padding is only possible with %n (found {template[start:i]!r} in {template!r})")
        out.append(_convert(conv, template, start, when=when, n=n, frame=frame, width=width))
    return _check_name("".join(out), template)


def _convert(conv: str, template: str, pos: int, *, when: datetime, n: int, frame: RawFrame, width: int | None) -> str:
    if conv in _STRFTIME:
        return when.strftime("%" + conv)
    if conv == "k":  # hour, 24-hour clock, space padded (date(1) %k)
        return f"{when.hour:2d}"
    if conv == "l":  # hour, 12-hour clock, space padded (date(1) %l)
        return f"{when.hour % 12 or 12:2d}"
    if conv == "n":
        if width is None or width <= 1:
            return str(int(n))
        return str(int(n)).zfill(min(width, MAX_NUMBER_WIDTH))
    if conv == "f":
        return camera_name(frame).rsplit(".", 1)[0]
    if conv == "C":
        return camera_name(frame).rsplit(".", 1)[1]
    if conv == ":":
        return camera_name(frame).lower()
    if conv == "%":
        return "%"
    if conv == "E":
        ev = frame.extra.get("ev")
        if ev is None:
            raise TemplateError(f"%E (the EV of a bracket frame) in {template!r} is only available with --bracket")
        return format_ev(ev)
    if conv == "F":
        raise TemplateError(f"%F (gphoto2's camera folder) in {template!r} has no meaning here: the module keeps "
                            "no folders; write a subdirectory into the template instead, e.g. %Y%m%d/%n.dng")
    raise TemplateError(f"unknown conversion %{conv} at position {pos + 1} in {template!r} "
                        "(see docs/capture.md for the supported ones)")


def _check_name(name: str, template: str) -> str:
    if "\0" in name:
        raise TemplateError(f"template {template!r} produces a NUL character")
    if name.startswith("/") or "\\" in name:
        raise TemplateError(f"template {template!r} gives {name!r}, outside the output directory: "
                            "use a relative name (subdirectories are fine)")
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise TemplateError(f"template {template!r} gives {name!r}, which escapes the output directory through '..'")
    if name.endswith("/") or not path.name or path.name in (".", ".."):
        raise TemplateError(f"template {template!r} gives {name!r}, which is a directory, not a file name")
    if not path.name.lower().endswith(".dng"):
        raise TemplateError(f"template {template!r} gives {name!r}: the name must end in .dng")
    if path.name[:-4] in ("", "."):
        raise TemplateError(f"template {template!r} gives {name!r}, an empty file name")
    return str(path)  # normalised: no "./", no "//"


def _fake_frame(frame_id: int, ev: float | None) -> RawFrame:
    extra = {} if ev is None else {"ev": float(ev)}
    return RawFrame(data=np.zeros((2, 2), dtype=np.uint16), frame_id=frame_id, extra=extra)


def check_template(template: str, *, count: int = 1, evs: Sequence[float] | None = None,
                   when: datetime | None = None, out_dir: str | os.PathLike | None = None) -> None:
    """Refuse, before anything is captured, a template that cannot name this run's frames:
    malformed, outside the output directory, not ``.dng``, or giving two frames the same name;
    with ``out_dir``, also one whose folders on disk are files or symbolic links leading out.

    ``count`` frames are planned (``evs`` for a bracket). The frame ids of a real run are
    unknown in advance; distinct ones are assumed (the runtime checks in save_capture still
    catch a repeat, and folders that change on disk meanwhile)."""
    when = when or datetime.now()
    evs = list(evs) if evs is not None else None
    if evs is not None:
        count = len(evs)
    names: dict[str, int] = {}
    for i in range(count):
        frame = _fake_frame(i + 1, evs[i] if evs is not None else None)
        name = expand_filename(template, when=when, n=i + 1, frame=frame)
        key = name.casefold()
        if key in names:
            hint = "add %n (e.g. %03n)" if "%E" not in template else "the EVs repeat: add %n (e.g. %03n)"
            raise TemplateError(f"template {template!r} names frames {names[key] + 1} and {i + 1} of this run "
                                f"alike ({name!r}); {hint}")
        names[key] = i
        if out_dir is not None:
            _check_folders(Path(out_dir), name)


def _check_folders(out_dir: Path, rel: str) -> None:
    """The folders of ``rel`` that exist under ``out_dir`` must be folders inside it."""
    parent = out_dir
    for part in PurePosixPath(rel).parts[:-1]:
        parent = parent / part
        if not os.path.lexists(parent):
            return
        _check_inside(out_dir, parent, rel)
        if not parent.is_dir():
            raise TemplateError(f"{rel!r} needs {parent} to be a folder, but it is a file")


# ---- saving ------------------------------------------------------------------------------------
def sidecar_name(dng_name: str) -> str:
    """``shot.dng`` -> ``shot.json`` (the DNG's suffix replaced)."""
    return str(PurePosixPath(dng_name).with_suffix(SIDECAR_SUFFIX))


def save_capture(out_dir: str | os.PathLike, template: str, frame: RawFrame, descriptor: dict, telemetry: dict,
                 n: int, *, when: datetime | None = None, used: set | None = None) -> tuple[Path, Path]:
    """Write ``frame`` as a DNG plus its JSON sidecar in ``out_dir``; return both paths.

    The name comes from ``template`` (see expand_filename; ``when`` defaults to now, ``n`` is
    the frame's number in the run). ``used`` is a set the caller keeps for the run: a name
    the template already gave raises TemplateError instead of silently taking a new name.

    Both files are written to hidden staging files first (fsynced), then linked into place
    with a no-clobber link, so the pair appears complete or not at all, and an existing file
    is never replaced: if ``NAME.dng`` or ``NAME.json`` exists, ``NAME_2``, ``NAME_3``, ...
    is used. On any error (ENOSPC included) nothing of this frame is left behind and the
    OSError is raised.
    """
    out_dir = Path(out_dir)
    when = when or datetime.now()
    rel = expand_filename(template, when=when, n=n, frame=frame, descriptor=descriptor)
    if used is not None:
        key = rel.casefold()
        if key in used:
            raise TemplateError(f"template {template!r} gave {rel!r} a second time in this run "
                                "(frame ids repeat after a module reset?): add %n to the template")
        used.add(key)
    target = out_dir / rel
    parent = target.parent
    _check_inside(out_dir, parent, rel)  # before mkdir creates anything through a symlink
    parent.mkdir(parents=True, exist_ok=True)
    _check_inside(out_dir, parent, rel)

    # Short staging names: a long final name must not overflow NAME_MAX once atomic_write adds
    # its own temporary suffix.
    token = secrets.token_hex(6)
    dng_stage = parent / f".magcam-{token}.dng.staged"
    side_stage = parent / f".magcam-{token}.json.staged"
    try:
        write_dng(dng_stage, frame, descriptor)
        digest, size = _sha256(dng_stage)
        for k in range(1, _MAX_FREE_NAME_TRIES + 1):
            stem = target.stem if k == 1 else f"{target.stem}_{k}"
            dng_path = parent / f"{stem}{target.suffix}"
            side_path = parent / f"{stem}{SIDECAR_SUFFIX}"
            if os.path.lexists(dng_path) or os.path.lexists(side_path):
                continue
            doc = _sidecar.build(frame, telemetry, dng_name=dng_path.name, dng_sha256=digest, dng_bytes=size)
            write_bytes_atomic(side_stage, _sidecar.dumps(doc))
            if not link_new(dng_stage, dng_path):
                continue  # taken since we looked: someone else is writing here too
            try:
                linked = link_new(side_stage, side_path)
            except BaseException:
                _unlink(dng_path)
                raise
            if not linked:
                if os.path.lexists(dng_stage):
                    _unlink(dng_path)
                else:  # the no-hard-link fallback renamed the staged DNG: take it back
                    os.replace(dng_path, dng_stage)
                continue
            _fsync_dir(parent)
            return dng_path, side_path
        raise FileExistsError(errno.EEXIST, f"no free name for {target.name} after {_MAX_FREE_NAME_TRIES} tries",
                              str(target))
    except OSError as e:
        # A failed write() names no file, a failed staging write a hidden one: say which capture.
        if e.filename is None or str(e.filename) in (str(dng_stage), str(side_stage)):
            e.filename = str(target)
        raise
    finally:
        _unlink(dng_stage)
        _unlink(side_stage)


def _check_writable(out_dir: Path) -> None:
    """Raise the OSError a capture into ``out_dir`` would meet (read-only mount, permissions),
    naming the folder. Trying is the only test that is right for root and for read-only mounts."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".magcam-", suffix=".probe", dir=out_dir)
    except OSError as e:
        e.filename = str(out_dir)
        raise
    os.close(fd)
    os.unlink(probe)


def _check_inside(out_dir: Path, parent: Path, rel: str) -> None:
    root = os.path.realpath(out_dir)
    if os.path.commonpath([root, os.path.realpath(parent)]) != root:
        raise TemplateError(f"{rel!r} leads outside {out_dir} (through a symbolic link)")


def _sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- a whole run ---------------------------------------------------------------------------------
@dataclass
class Plan:
    """What to capture: ``mode`` single, burst (``count`` frames) or bracket (one frame per EV)."""

    mode: str = "single"
    count: int = 1
    evs: list[float] | None = None
    width: int = DEFAULT_SIZE[0]
    height: int = DEFAULT_SIZE[1]
    exposure_us: int = 10000
    analog_gain: float = 1.0

    def __post_init__(self):
        if self.mode not in _sidecar.MODES:
            raise ValueError(f"mode must be one of {_sidecar.MODES}, got {self.mode!r}")
        # Types first: Plan(width="1024") was a TypeError from a comparison, not this message.
        for name in ("count", "width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
        for name in ("exposure_us", "analog_gain"):  # exposure_us is rounded to whole us, as on the wire
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.mode == "bracket":
            self.evs = check_evs(self.evs)
            self.count = len(self.evs)
        elif self.evs is not None:
            raise ValueError("EVs are only for a bracket")
        if self.mode == "single":
            self.count = 1
        if self.count < 1:
            raise ValueError(f"a burst needs at least 1 frame, got {self.count}")
        for name, value in (("width", self.width), ("height", self.height)):
            if not 16 <= value <= 16384 or value % 2:
                raise ValueError(f"{name} must be even and within 16..16384, got {value}")
        if self.width * self.height * 2 > _MAX_FRAME_BYTES:  # the module's cap (protocol.md), said before connecting
            raise ValueError(f"a {self.width}x{self.height} frame is {self.width * self.height * 2 / 2**20:.0f} MiB, "
                             f"over the {_MAX_FRAME_BYTES // 2**20} MiB the protocol carries (about 134 MP)")
        if not 1 <= self.exposure_us <= 60_000_000:
            raise ValueError(f"exposure must be 1..60000000 us, got {self.exposure_us}")
        if not 0 < self.analog_gain <= 64:
            raise ValueError(f"gain must be within (0, 64], got {self.analog_gain}")


def parse_evs(text: str) -> list[float]:
    """``"-2,0,2"`` -> ``[-2.0, 0.0, 2.0]``; ValueError with a readable message otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p for p in parts):
        raise ValueError(f"{text!r} is not a comma-separated list of EVs, e.g. -2,0,2")
    try:
        evs = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of EVs, e.g. -2,0,2") from None
    if any(not -MAX_EV <= ev <= MAX_EV for ev in evs):
        raise ValueError(f"EVs must be within -{MAX_EV}..{MAX_EV}, got {text!r}")
    return evs


@dataclass
class Saved:
    index: int
    dng: Path
    sidecar: Path
    frame_id: int


@dataclass
class Lost:
    index: int
    reason: str


@dataclass
class CaptureRun:
    """One ``magcam capture`` run on a connected camera. ``run()`` captures per ``plan`` and
    saves each frame as it arrives; ``on_event`` gets the progress events (dicts with
    ``type`` started / frame / lost / done, as ``--json`` prints them). Errors (link, disk,
    template) propagate; ``written`` and ``lost`` then say how far it got."""

    cam: object
    out_dir: Path
    plan: Plan
    template: str = DEFAULT_TEMPLATE
    on_event: Callable[[dict], None] | None = None
    when: datetime | None = None
    written: list[Saved] = field(default_factory=list)
    lost: list[Lost] = field(default_factory=list)
    reconnects: int = 0
    reattaches: int = 0

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        self._used: set = set()

    @property
    def complete(self) -> bool:
        return len(self.written) == self.plan.count

    def _emit(self, event: dict) -> None:
        if self.on_event:
            self.on_event(event)

    def run(self) -> "CaptureRun":
        plan, cam = self.plan, self.cam
        self.when = self.when or datetime.now()
        check_template(self.template, count=plan.count, evs=plan.evs, when=self.when, out_dir=self.out_dir)
        created = missing_dirs(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._capture(plan, cam)
        finally:
            if not self.written:  # a run that saved nothing leaves no empty folders behind
                remove_empty(created)
        return self

    def _capture(self, plan: "Plan", cam) -> None:
        _check_writable(self.out_dir)  # before a frame is exposed, not when it has to be saved
        self._emit({"type": "started", "mode": plan.mode, "count": plan.count, "width": plan.width,
                    "height": plan.height, "exposure_us": plan.exposure_us, "analog_gain": plan.analog_gain,
                    "evs": plan.evs, "out": str(self.out_dir), "template": self.template,
                    "module": (cam.descriptor or {}).get("serial"), "port": getattr(cam, "port", None)})
        kw = dict(exposure_us=plan.exposure_us, analog_gain=plan.analog_gain, on_frame=self._on_frame)
        if plan.mode == "bracket":
            result = cam.capture_bracket(plan.evs, plan.width, plan.height, **kw)
        else:
            result = cam.capture_burst(plan.count, plan.width, plan.height, **kw)
        self.reconnects, self.reattaches = result.reconnects, result.reattaches
        for lost in sorted(result.lost, key=lambda item: item.index):
            self.lost.append(Lost(lost.index, lost.reason))
            self._emit({"type": "lost", "index": lost.index, "number": lost.index + 1, "reason": lost.reason})
        self._emit({"type": "done", "requested": plan.count, "written": len(self.written), "lost": len(self.lost),
                    "reconnects": self.reconnects, "reattaches": self.reattaches, "complete": self.complete})

    def _on_frame(self, index: int, frame: RawFrame) -> None:
        ev = frame.extra.get("ev")
        telemetry = _sidecar.telemetry(self.cam, mode=self.plan.mode, index=index, count=self.plan.count,
                                       base_exposure_us=self.plan.exposure_us, analog_gain=self.plan.analog_gain,
                                       ev=ev, state=frame.extra.get("state_at_exposure"))
        dng, side = save_capture(self.out_dir, self.template, frame, self.cam.descriptor, telemetry, index + 1,
                                 when=self.when, used=self._used)
        self.written.append(Saved(index, dng, side, frame.frame_id))
        self._emit({"type": "frame", "index": index, "number": index + 1, "path": str(dng), "sidecar": str(side),
                    "frame_id": frame.frame_id, "exposure_us": frame.exposure_us, "ev": ev})


def describe_os_error(e: OSError, run: CaptureRun | None = None) -> str:
    """A one-line message for a failed write, saying what is on disk."""
    done = f"; the {len(run.written)} frame(s) written before are complete" if run and run.written else ""
    where = f" ({e.filename})" if e.filename else ""
    if e.errno == errno.ENOSPC:
        return f"disk full{where}: {os.strerror(e.errno)}; no partial file was left{done}"
    if e.errno == errno.EDQUOT:
        return f"disk quota exceeded{where}; no partial file was left{done}"
    return f"cannot write{where}: {e.strerror or e}{done}"


# ---- progress output -------------------------------------------------------------------------------
class CaptureProgress:
    """Shows a run's events: a rich progress bar when ``stream`` is a terminal, plain lines
    when it is not, one JSON object per line with ``json_mode``. Errors go to stderr (or, with
    ``json_mode``, as ``{"type": "error", "message": ...}`` on the stream, as Reporter does).
    Use as a context manager around the run."""

    def __init__(self, json_mode: bool = False, stream=None, err=None):
        self.stream = stream or sys.stdout
        self.err = err or sys.stderr
        self.console = Reporter(json_mode, self.stream).console  # the one rule for when to draw
        self.mode = "json" if json_mode else ("rich" if self.console else "plain")
        self._progress = None
        self._task = None
        self._count = 0

    def __enter__(self) -> "CaptureProgress":
        if self.mode == "rich":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=self.console)
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __call__(self, event: dict) -> None:
        if self.mode == "json":
            print(json.dumps(event, separators=(",", ":")), file=self.stream, flush=True)
            return
        kind = event["type"]
        if kind == "started":
            self._count = event["count"]
            what = {"single": "1 frame", "burst": f"burst of {event['count']} frames",
                    "bracket": f"bracket {','.join(format_ev(ev) for ev in event['evs'] or [])} EV"}[event["mode"]]
            self._line(f"capturing {what}, {event['width']}x{event['height']}, {event['exposure_us']} us, "
                       f"gain {event['analog_gain']:g} -> {event['out']}")
            if self._progress is not None:
                self._task = self._progress.add_task(event["mode"], total=event["count"])
        elif kind == "frame":
            ev = "" if event.get("ev") is None else f" ({format_ev(event['ev'])} EV)"
            self._advance()
            self._line(f"frame {event['number']}/{self._count}{ev}: {event['path']} + {Path(event['sidecar']).name}")
        elif kind == "lost":
            self._advance()
            self._line(f"lost {event['number']}/{self._count}: {event['reason']}", style="red")
        elif kind == "done":
            again = f", reconnected {event['reconnects']}x" if event.get("reconnects") else ""
            again += f", waited for {event['reattaches']} re-attach(es)" if event.get("reattaches") else ""
            self._line(f"done: {event['written']} of {event['requested']} frame(s) written, {event['lost']} lost{again}",
                       style="green" if event["complete"] else "red")

    def error(self, message: str) -> None:
        if self.mode == "json":
            print(json.dumps({"type": "error", "message": message}, separators=(",", ":")), file=self.stream,
                  flush=True)
            return
        self.__exit__()
        print(f"error: {message}", file=self.err, flush=True)

    def _advance(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, refresh=True)

    def _line(self, text: str, style: str | None = None) -> None:
        if self._progress is not None:
            self._progress.console.print(text, style=style, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

