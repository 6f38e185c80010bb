"""Inputs of the image pipeline, all brought to one representation: ``RawImage``.

* our DNGs (and other Bayer DNGs, 8/16-bit, uncompressed or deflate): read with tifffile directly: the CFA, its
  pattern, BlackLevel (+ RepeatDim, DeltaH/V), WhiteLevel, LinearizationTable, ActiveArea,
  ColorMatrix1/2 with their illuminants, AsShotNeutral (or AsShotWhiteXY), Orientation, the
  lens-shading GainMaps of OpcodeList2 and the shooting metadata;
* frames straight from the link: ``from_frame(RawFrame, descriptor)``;
* DNGs whose samples tifffile cannot decode alone (lossless JPEG, packed 10/12/14-bit): the
  samples, pattern and levels through rawpy, everything else from the tags as above;
* any camera RAW LibRaw reads, through rawpy: ``raw_image_visible``,
  the pattern from ``raw_colors_visible``/``color_desc``, ``black_level_per_channel``,
  ``white_level``, ``camera_whitebalance``, ``rgb_xyz_matrix`` and ``sizes.flip``.

Every problem with a file is a ``PipelineError`` whose message starts with the file name.
Sizes are checked against the file before any sample is read, so a corrupt header cannot make
the reader allocate gigabytes.

Usage::

    from magcam import rawio
    raw = rawio.read("shot.dng")                 # or rawio.from_frame(frame, descriptor)
    raw.frame.data, raw.frame.cfa, raw.black, raw.white, raw.xyz_to_camera, raw.neutral
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from magcam.frame import CFA_PATTERNS, RawFrame
import contextlib
import logging

from magcam.pipeline import color
from magcam.pipeline.errors import PipelineError
from magcam.pipeline.shading import GainMap

MAX_SIDE = 65535
MAX_PIXELS = 600_000_000  # 600 MP: beyond any sensor we process; guards against corrupt headers
MIN_SIDE = 2

_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


@dataclass
class RawImage:
    """A Bayer frame plus what it takes to develop it.

    ``black`` is the black level per site of the 2x2 CFA cell (ADC units) and ``black_delta_v``
    / ``black_delta_h`` optional per-row / per-column additions; ``white`` the clipping level.
    ``xyz_to_camera`` is the colour matrix (XYZ -> camera RGB) calibrated under
    ``illuminant``, or None when the file has none (camera RGB is then taken as sRGB, as LibRaw
    does); ``matrices`` holds every (matrix, illuminant) pair the file gave (DNG ColorMatrix1/2).
    ``neutral`` is the as-shot white in camera RGB (green = 1), or None. ``orientation`` is the
    EXIF orientation (1 = as stored). ``defects`` are known bad pixels, (N, 2) absolute x, y.
    """

    frame: RawFrame
    black: np.ndarray
    white: float
    xyz_to_camera: np.ndarray | None = None
    illuminant: str = "D65"
    matrices: list = field(default_factory=list)
    neutral: np.ndarray | None = None
    orientation: int = 1
    gain_map: GainMap | None = None
    defects: np.ndarray | None = None
    black_delta_v: np.ndarray | None = None
    black_delta_h: np.ndarray | None = None
    source: str = "<frame>"
    meta: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return self.frame.height

    @property
    def width(self) -> int:
        return self.frame.width

    @property
    def cfa(self) -> str:
        return self.frame.cfa

    def as_shot_neutral(self) -> np.ndarray:
        """The as-shot neutral, else the camera's D65 response, else (1, 1, 1)."""
        if self.neutral is not None:
            return self.neutral
        if self.xyz_to_camera is not None:
            n = self.xyz_to_camera @ color.D65_WHITE_XYZ
            if np.all(n > 0):
                return n / n[1]
        return np.ones(3)


def check_path(path) -> None:
    """A RAW file's path, or a PipelineError saying what to do instead (a frame object)."""
    if not isinstance(path, (str, os.PathLike)):  # e.g. a RawFrame straight from capture_raw()
        raise PipelineError(f"expected the path of a RAW file, got {type(path).__name__}; a frame from the "
                            "camera goes to process.process_frame(frame, descriptor=cam.descriptor)")


def read(path: str | os.PathLike) -> RawImage:
    """Read a DNG or any camera RAW LibRaw supports; ``PipelineError`` naming the file if not."""
    check_path(path)
    path = Path(path)
    name = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PipelineError(f"{name}: no such file") from None
    except OSError as e:
        raise PipelineError(f"{name}: cannot read ({e.strerror or e})") from None
    if path.is_dir():
        raise PipelineError(f"{name}: is a directory, not a RAW file")
    if size == 0:
        raise PipelineError(f"{name}: file is empty (0 bytes)")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise PipelineError(f"{name}: cannot read ({e.strerror or e})") from None
    with _quiet_tifffile():  # a corrupt file is refused with one clear error, not a log per tag
        try:
            image = _read_tiff_dng(path, size) if head[:4] in _TIFF_MAGIC else None
        except PipelineError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as e:
            # A tag of the wrong type, count or range: the file is malformed, whatever the tag.
            raise PipelineError(f"{name}: malformed DNG tags ({_short(e)})") from None
    if image is None or isinstance(image, _DngColour):
        tags = image
        image = _read_rawpy(path, size, tiff=head[:4] in _TIFF_MAGIC)
        if tags is not None:  # a DNG LibRaw decoded: its own tags say its colour and orientation
            image.matrices, image.xyz_to_camera, image.illuminant = tags.matrices, tags.matrix, tags.illuminant
            image.neutral = tags.neutral if tags.neutral is not None else image.neutral
            image.orientation, image.gain_map = tags.orientation, tags.gain_map
            image.meta = {**image.meta, **tags.meta}
    _check_colour(image, name)
    return image


@contextlib.contextmanager
def _quiet_tifffile():
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _check_colour(image: RawImage, name: str) -> None:
    """A file whose colour data cannot develop (a singular or scrambled matrix, a non-positive
    white) is refused here, naming it, not halfway through the pipeline."""
    neutral = image.neutral if image.neutral is not None else np.ones(3)
    try:
        if not np.all(np.isfinite(neutral)) or np.any(np.asarray(neutral) <= 0):
            raise ValueError("the as-shot neutral is not positive")
        color.camera_to_output_matrix(image.xyz_to_camera, neutral, "srgb")
    except (ValueError, np.linalg.LinAlgError) as e:
        raise PipelineError(f"{name}: unusable colour data: {e}") from None


def from_frame(frame: RawFrame, descriptor: dict | None = None, source: str = "<frame>") -> RawImage:
    """A frame from the link (RawFrame + module descriptor) as a RawImage."""
    if frame.height < MIN_SIDE or frame.width < MIN_SIDE or frame.height % 2 or frame.width % 2:
        raise PipelineError(f"{source}: frame size {frame.width}x{frame.height} must be even and at least 2x2")
    matrix, illuminant, neutral, gain_map, defects = None, "D65", None, None, None
    if descriptor:
        try:
            matrix = color.xyz_to_camera(descriptor)
            illuminant = descriptor["color"].get("illuminant_1", "D65")
            neutral = color.as_shot_neutral(descriptor) if illuminant == "D65" else None
        except (KeyError, TypeError, ValueError) as e:
            raise PipelineError(f"{source}: descriptor colour section unusable: {e}") from None
        shading = descriptor.get("lens_shading")
        if shading is not None:
            gain_map = GainMap.from_grids(shading.get("grids") if isinstance(shading, dict) else shading)
        defects = descriptor.get("sensor", {}).get("defects")
    if "as_shot_neutral" in frame.extra:
        neutral = np.asarray(frame.extra["as_shot_neutral"], dtype=np.float64)
    black = np.full((2, 2), float(frame.black_level))
    meta = {
        "make": (descriptor or {}).get("make"),
        "model": (descriptor or {}).get("model"),
        "exposure_time": frame.exposure_us / 1e6,
        "iso": round(100 * frame.analog_gain),
        "f_number": ((descriptor or {}).get("lens") or {}).get("f_number"),
        "focal_length": ((descriptor or {}).get("lens") or {}).get("focal_mm"),
    }
    return RawImage(frame=frame, black=black, white=float(frame.white_level), xyz_to_camera=matrix,
                    illuminant=illuminant, matrices=[(matrix, illuminant)] if matrix is not None else [],
                    neutral=neutral, gain_map=gain_map,
                    defects=None if defects is None else np.asarray(defects, dtype=np.int64).reshape(-1, 2),
                    source=source, meta={k: v for k, v in meta.items() if v is not None})


# ---- DNG through tifffile ------------------------------------------------------------------


_DEFLATE = (8, 32946)  # Adobe / old deflate: tifffile decodes them with zlib


@dataclass
class _DngColour:
    """What a DNG's tags say beyond the pixels: read by tifffile even when LibRaw decodes the
    samples (lossless JPEG, packed 10/12/14-bit), since LibRaw's matrix for a DNG is scaled by
    its daylight multipliers and its flip drops the mirrored orientations."""

    matrices: list
    matrix: np.ndarray | None
    illuminant: str
    neutral: np.ndarray | None
    orientation: int
    gain_map: GainMap | None
    meta: dict


def _read_tiff_dng(path: Path, size: int) -> RawImage | _DngColour | None:
    """A RawImage; for a DNG whose samples this reader leaves to LibRaw (lossless JPEG, packed
    samples), its tags (``_DngColour``); None for another TIFF-based RAW."""
    import tifffile

    name = str(path)
    try:
        tif = tifffile.TiffFile(path)
    except Exception as e:  # tifffile raises many kinds for corrupt headers
        raise PipelineError(f"{name}: not a readable TIFF/DNG ({_short(e)})") from None
    with tif:
        try:
            ifd0 = tif.pages[0]
            page = _raw_page(tif)
        except Exception as e:
            raise PipelineError(f"{name}: corrupt TIFF structure ({_short(e)})") from None
        if page is None:
            if 50706 in ifd0.tags:
                raise PipelineError(f"{name}: DNG holds no Bayer CFA image (a LinearRaw or other "
                                    "demosaiced DNG is not supported)")
            raise PipelineError(f"{name}: a TIFF image, not a RAW/DNG file (no CFA data)")

        def tag_obj(code):
            for p in (page, ifd0):
                t = p.tags.get(code)
                if t is not None:
                    return t
            return None

        def tag(code, default=None):
            t = tag_obj(code)
            return default if t is None else t.value

        def nums(code):
            """A numeric tag as floats, whatever its TIFF type (SHORT, LONG, (S)RATIONAL)."""
            t = tag_obj(code)
            if t is None:
                return None
            if int(t.dtype) in (5, 10):  # RATIONAL, SRATIONAL: tifffile gives flat (num, den) ints
                return _rationals(t.value)
            return np.ravel(np.asarray(t.value, dtype=np.float64))

        width, height = int(tag(256, 0)), int(tag(257, 0))
        _check_dims(name, width, height)
        spp, bits = int(tag(277, 1)), tag(258, 16)
        bits = int(bits[0] if isinstance(bits, tuple) else bits)
        compression = int(tag(259, 1))
        if spp != 1:
            raise PipelineError(f"{name}: CFA image has {spp} samples per pixel, expected 1")
        if compression not in (1, *_DEFLATE) or bits not in (8, 16):
            # lossless JPEG, packed 12/14-bit, ...: LibRaw decodes those; colour from the tags
            return _dng_colour(name, tag, nums, ifd0) if 50706 in ifd0.tags else None
        pattern = _dng_pattern(name, tag)
        # Check the strips against the file before reading a byte of them.
        offsets, counts = page.dataoffsets, page.databytecounts
        need = width * height * (bits // 8)
        if not offsets or len(offsets) != len(counts):
            raise PipelineError(f"{name}: no image data (strip offsets missing)")
        if compression == 1 and sum(counts) < need:
            raise PipelineError(f"{name}: image data holds {sum(counts)} bytes, {width}x{height} "
                                f"{bits}-bit needs {need}")
        end = max(o + c for o, c in zip(offsets, counts))
        if end > size:
            raise PipelineError(f"{name}: truncated: image data runs to byte {end}, the file has {size}")
        try:
            data = page.asarray()
        except Exception as e:
            raise PipelineError(f"{name}: cannot decode the image data ({_short(e)})") from None
        if data.shape != (height, width):
            raise PipelineError(f"{name}: decoded {data.shape}, expected {height}x{width}")
        if data.dtype != np.uint16:
            data = data.astype(np.uint16)

        table = tag(50712)
        if table is not None:
            lut = np.asarray(table, dtype=np.uint16).ravel()
            if lut.size == 0:
                raise PipelineError(f"{name}: empty LinearizationTable")
            data = lut[np.minimum(data, lut.size - 1)]
        white = tag(50717)
        white = float(np.ravel(white)[0]) if white is not None else float((1 << bits) - 1)

        # ActiveArea: crop to it; the CFA pattern is that of the whole image, so shift its phase.
        area = tag(50829)
        delta_v, delta_h = nums(50716), nums(50715)
        if area is not None:
            top, left, bottom, right = (int(v) for v in area)
            if not (0 <= top < bottom <= height and 0 <= left < right <= width):
                raise PipelineError(f"{name}: ActiveArea {area} outside the {width}x{height} image")
            data = data[top:bottom, left:right]
            pattern = _shift_pattern(pattern, top % 2, left % 2)
        h, w = data.shape[0] // 2 * 2, data.shape[1] // 2 * 2  # whole CFA cells only
        if h < MIN_SIDE or w < MIN_SIDE:
            raise PipelineError(f"{name}: image {data.shape[1]}x{data.shape[0]} is too small")
        data = np.ascontiguousarray(data[:h, :w])
        if delta_v is not None:
            delta_v = _fit_len(name, "BlackLevelDeltaV", delta_v, h)
        if delta_h is not None:
            delta_h = _fit_len(name, "BlackLevelDeltaH", delta_h, w)

        black = _dng_black(name, nums(50714), tag(50713, (1, 1)))
        if np.any(black >= white):
            raise PipelineError(f"{name}: BlackLevel {black.ravel().tolist()} is not below WhiteLevel {white:g}")
        if np.any(black < 0) or not np.all(np.isfinite(black)):
            raise PipelineError(f"{name}: BlackLevel {black.ravel().tolist()} is negative or not a number")

        c = _dng_colour(name, tag, nums, ifd0)
        frame = RawFrame(data=data, frame_id=0, cfa=pattern, bits=bits if bits == 8 else 16,
                         black_level=int(round(float(black.mean()))), white_level=int(white),
                         exposure_us=max(1, int(round((_first(tag(33434)) or 0.01) * 1e6))),
                         analog_gain=_gain_from_iso(_first(tag(34855))))
        return RawImage(frame=frame, black=black, white=white, xyz_to_camera=c.matrix, illuminant=c.illuminant,
                        matrices=c.matrices, neutral=c.neutral, orientation=c.orientation, gain_map=c.gain_map,
                        black_delta_v=delta_v, black_delta_h=delta_h, source=name, meta=c.meta)


def _dng_colour(name: str, tag, nums, ifd0) -> _DngColour:
    matrices = []
    for mtag, itag in ((50721, 50778), (50722, 50779)):
        vals = nums(mtag)
        if vals is None:
            continue
        if vals.size != 9:
            raise PipelineError(f"{name}: ColorMatrix has {vals.size} values, expected 9 (a 3-colour CFA)")
        if not np.all(np.isfinite(vals)):
            raise PipelineError(f"{name}: ColorMatrix has a value that is not a number (a zero denominator?)")
        matrices.append((vals.reshape(3, 3), color.ILLUMINANT_NAMES.get(int(tag(itag, 21)), "D65")))
    neutral = nums(50728)
    if neutral is not None:
        if neutral.size != 3 or np.any(~np.isfinite(neutral)) or np.any(neutral <= 0):
            raise PipelineError(f"{name}: AsShotNeutral must be 3 positive values")
        neutral = neutral / neutral[1]
    elif tag(50729) is not None and matrices:
        xy = nums(50729)
        if xy.size < 2 or not (np.all(np.isfinite(xy[:2])) and 0 < xy[0] and 0 < xy[1] and xy.sum() < 1):
            raise PipelineError(f"{name}: AsShotWhiteXY {xy.tolist()} is not a chromaticity (0 < x, y; x + y < 1)")
        n = color.interpolated_xyz_to_camera(np.ones(3), matrices) @ color.xy_to_xyz(*xy[:2])
        neutral = n / n[1] if np.all(n > 0) else None
    matrix, illuminant = (None, "D65")
    if matrices:
        matrix = color.interpolated_xyz_to_camera(neutral if neutral is not None else np.ones(3), matrices)
        illuminant = matrices[0][1]
    opcodes = tag(51009)
    try:
        gain_map = GainMap.from_dng_opcodes(bytes(opcodes)) if opcodes is not None else None
    except PipelineError as e:
        raise PipelineError(f"{name}: {e}") from None
    orientation = int(ifd0.tags[274].value) if 274 in ifd0.tags else 1
    meta = {
        "make": _text(tag(271)), "model": _text(tag(272)), "serial": _text(tag(50735)),
        "exposure_time": _first(tag(33434)), "f_number": _first(tag(33437)), "iso": _first(tag(34855)),
        "focal_length": _first(tag(37386)), "datetime": _text(tag(36867)) or _text(tag(306)),
        "lens": _text(tag(42036)), "magcam": _magcam_description(tag(270)),
    }
    return _DngColour(matrices, matrix, illuminant, neutral, orientation, gain_map,
                      {k: v for k, v in meta.items() if v is not None})


def _raw_page(tif):
    """The full-resolution CFA IFD: IFD0 or one of its SubIFDs; None if there is none."""
    import tifffile

    candidates = []
    for i, page in enumerate(tif.pages):
        candidates.append(page)
        for k, off in enumerate(page.subifds or ()):
            tif.filehandle.seek(off)
            candidates.append(tifffile.TiffPage(tif, index=(i, k)))
        if i >= 8:
            break
    for p in candidates:
        if p.photometric == 32803 and not (p.subfiletype & 1):
            return p
    return None


def _dng_pattern(name: str, tag) -> str:
    dim, codes = tag(33421), tag(33422)
    if codes is None or dim is None:
        raise PipelineError(f"{name}: CFA image without CFARepeatPatternDim/CFAPattern tags")
    dim = tuple(int(v) for v in dim)
    if dim != (2, 2):
        raise PipelineError(f"{name}: CFA repeat pattern {dim[0]}x{dim[1] if len(dim) > 1 else '?'} is not a "
                            "2x2 Bayer pattern (X-Trans and others are not supported)")
    codes = bytes(codes) if not isinstance(codes, (bytes, bytearray)) else codes
    plane = tag(50710, b"\x00\x01\x02")
    plane = bytes(plane) if not isinstance(plane, (bytes, bytearray)) else plane
    layout = int(tag(50711, 1))
    if layout != 1:
        raise PipelineError(f"{name}: CFALayout {layout} (non-rectangular) is not supported")
    names = {0: "R", 1: "G", 2: "B"}
    try:
        pattern = "".join(names[plane[c]] for c in codes)
    except (IndexError, KeyError):
        raise PipelineError(f"{name}: CFAPattern {list(codes)} uses colours other than red, green and blue") from None
    if len(codes) != 4 or pattern not in CFA_PATTERNS:
        raise PipelineError(f"{name}: CFAPattern {pattern or list(codes)} is not a Bayer pattern "
                            f"({', '.join(CFA_PATTERNS)})")
    return pattern


def _dng_black(name: str, vals, rdim) -> np.ndarray:
    if vals is None:
        return np.zeros((2, 2))
    rdim = tuple(int(v) for v in rdim)
    if len(rdim) != 2 or rdim[0] not in (1, 2) or rdim[1] not in (1, 2) or vals.size != rdim[0] * rdim[1]:
        raise PipelineError(f"{name}: BlackLevel with {vals.size} values for BlackLevelRepeatDim {rdim} is not "
                            "supported (need 1x1, 1x2, 2x1 or 2x2 per CFA site)")
    return np.tile(vals.reshape(rdim), (2 // rdim[0], 2 // rdim[1]))


def _rationals(value) -> np.ndarray:
    """tifffile gives (S)RATIONAL values as flat (num, den, ...) ints."""
    v = np.asarray(value, dtype=np.float64).reshape(-1, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return v[:, 0] / v[:, 1]


def _text(value) -> str | None:
    """A text tag as printable text, or None: a file may store one as bytes (BYTE/UNDEFINED) or
    with NULs and junk, which must not reach an output's EXIF as "b'\\xff...'"."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).split(b"\0", 1)[0].decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip("\0 ").strip()
    return value if value and value.isprintable() and "\ufffd" not in value else None


def _first(value):
    if value is None:
        return None
    if isinstance(value, tuple):
        if len(value) == 2 and all(isinstance(v, (int, np.integer)) for v in value):
            return value[0] / value[1] if value[1] else None
        return value[0] if value else None
    return value


def _shift_pattern(pattern: str, dy: int, dx: int) -> str:
    grid = [[pattern[0], pattern[1]], [pattern[2], pattern[3]]]
    return "".join(grid[(r + dy) % 2][(c + dx) % 2] for r in range(2) for c in range(2))


def _fit_len(name: str, what: str, values: np.ndarray, n: int) -> np.ndarray:
    if values.size < n:
        raise PipelineError(f"{name}: {what} has {values.size} values for {n} rows/columns")
    return values[:n].astype(np.float32)


def _check_dims(name: str, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise PipelineError(f"{name}: image size {width}x{height} is empty")
    if width < MIN_SIDE or height < MIN_SIDE:
        raise PipelineError(f"{name}: image size {width}x{height} is too small")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise PipelineError(f"{name}: absurd image size {width}x{height} "
                            f"(limit {MAX_SIDE} px a side, {MAX_PIXELS // 1_000_000} MP)")


def _short(e: Exception) -> str:
    arg = e.args[0] if len(e.args) == 1 else None
    text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(e)
    text = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return text[:200]


# ---- camera RAWs through rawpy (LibRaw) -----------------------------------------------------


_LIBRAW_LOCK = threading.Lock()  # fd 2 is the process's: one LibRaw read watches it at a time
# What LibRaw's data-error callback prints (its default handler): a short read or bad data.
_LIBRAW_DATA_ERRORS = ("Unexpected end of file", "Corrupt data")


@contextlib.contextmanager
def _libraw_messages(name: str):
    """Collect what LibRaw prints on stderr ("NAME: Unexpected end of file", "NAME: Corrupt
    data near 0x..."): a C library's words next to ours would say the same thing twice, and a
    data error it survives would go unnoticed. Yields the list its messages end up in; anything
    else written to stderr meanwhile (another thread) is passed on afterwards."""
    said: list[str] = []
    with _LIBRAW_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield said
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            others = []
            for line in sink.read().decode("utf-8", "replace").splitlines(keepends=True):
                if line.startswith(name + ": "):
                    said.append(line[len(name) + 2:].strip())
                else:
                    others.append(line)
            if others:
                sys.stderr.write("".join(others))


def _read_rawpy(path: Path, size: int, tiff: bool = False) -> RawImage:
    name = str(path)
    failed = None
    with _libraw_messages(name) as said:  # its messages are in ``said`` once the block is left
        try:
            image = _read_rawpy_unguarded(path, tiff)
        except PipelineError as e:
            failed = e
    data_errors = [m for m in said if m.startswith(_LIBRAW_DATA_ERRORS)]
    # Its data errors say why a file is truncated or corrupt; with no error raised, LibRaw filled
    # in what it could not read, and that is no image to develop either.
    if data_errors and (failed is None or "truncated or corrupt" in str(failed)):
        raise PipelineError(f"{name}: truncated or corrupt RAW file (LibRaw: {'; '.join(data_errors)[:200]})")
    for m in said:  # anything else it says: pass it on, as LibRaw would have printed it
        sys.stderr.write(f"{name}: {m}\n")
    if failed is not None:
        raise failed
    return image


def _read_rawpy_unguarded(path: Path, tiff: bool) -> RawImage:
    import rawpy

    name = str(path)
    try:
        raw = rawpy.imread(name)
    except rawpy.LibRawFileUnsupportedError:
        raise PipelineError(f"{name}: not a RAW or DNG file that magcam or LibRaw can read") from None
    except (rawpy.LibRawIOError, rawpy.LibRawDataError) as e:
        if not tiff:  # LibRaw found no format it knows and ran off the end looking
            raise PipelineError(f"{name}: not a RAW or DNG file that magcam or LibRaw can read "
                                f"(LibRaw: {_short(e)})") from None
        raise PipelineError(f"{name}: truncated or corrupt RAW file (LibRaw: {_short(e)})") from None
    except rawpy.LibRawTooBigError:
        raise PipelineError(f"{name}: absurd image size (LibRaw refuses to allocate it)") from None
    except (rawpy.LibRawError, rawpy.NotSupportedError, NotImplementedError, OSError) as e:
        raise PipelineError(f"{name}: cannot read ({_short(e) or type(e).__name__})") from None
    with raw:
        try:
            sizes = raw.sizes
            _check_dims(name, int(sizes.width), int(sizes.height))
            if raw.raw_type != rawpy.RawType.Flat:
                raise PipelineError(f"{name}: not a Bayer sensor RAW (LibRaw raw type {raw.raw_type.name})")
            if raw.raw_pattern is None or np.shape(raw.raw_pattern) != (2, 2):
                raise PipelineError(f"{name}: CFA pattern is not 2x2 Bayer (X-Trans and others are not supported)")
            desc = raw.color_desc.decode("ascii", "replace")
            colors = np.asarray(raw.raw_colors_visible[:2, :2])
            try:
                pattern = "".join(desc[int(c)] for c in colors.ravel())
            except IndexError:
                raise PipelineError(f"{name}: CFA colours {colors.ravel().tolist()} outside {desc!r}") from None
            if pattern not in CFA_PATTERNS:
                raise PipelineError(f"{name}: CFA {pattern} is not an RGB Bayer pattern")
            data = np.array(raw.raw_image_visible, dtype=np.uint16, copy=True)
            bpc = list(raw.black_level_per_channel)
            black = np.array([[bpc[int(colors[r, c])] for c in range(2)] for r in range(2)], dtype=np.float64)
            white = float(raw.white_level)
            cam_wb = np.asarray(raw.camera_whitebalance[:3], dtype=np.float64)
            day_wb = np.asarray(raw.daylight_whitebalance[:3], dtype=np.float64)
            wb = cam_wb if np.all(cam_wb > 0) else day_wb if np.all(day_wb > 0) else None
            neutral = None if wb is None else (1 / wb) / (1 / wb[1])
            m = np.asarray(raw.rgb_xyz_matrix[:3], dtype=np.float64)
            matrix = m if np.any(m != 0) and np.all(np.isfinite(m)) else None
            if matrix is None:
                rgb_cam = np.asarray(raw.color_matrix, dtype=np.float64)[:3, :3]
                if not np.any(rgb_cam != 0):
                    rgb_cam = _measure_rgb_cam(raw)
                if rgb_cam is not None and abs(np.linalg.det(rgb_cam)) > 1e-6:
                    matrix = np.linalg.inv(color.SRGB_TO_XYZ @ rgb_cam)
            flip = int(sizes.flip)
            shot = raw.other  # LibRaw's shooting info: shutter in seconds, ISO, aperture, focal length
        except PipelineError:
            raise
        except (rawpy.LibRawError, ValueError, NotImplementedError) as e:
            raise PipelineError(f"{name}: truncated or corrupt RAW file ({_short(e)})") from None
    h, w = data.shape[0] // 2 * 2, data.shape[1] // 2 * 2
    data = np.ascontiguousarray(data[:h, :w])
    if np.any(black >= white):
        raise PipelineError(f"{name}: black level {black.ravel().tolist()} is not below the white level {white:g}")
    bits = max(1, min(16, int(math.ceil(math.log2(white + 1)))))
    exposure = float(shot.shutter_speed) if shot.shutter_speed > 0 else None
    iso = float(shot.iso_speed) if shot.iso_speed > 0 else None
    frame = RawFrame(data=data, frame_id=0, cfa=pattern, bits=bits, black_level=int(round(float(black.mean()))),
                     white_level=int(white), exposure_us=max(1, int(round((exposure or 0.01) * 1e6))),
                     analog_gain=_gain_from_iso(iso))
    meta = {"exposure_time": exposure, "iso": iso, "f_number": float(shot.aperture) if shot.aperture > 0 else None,
            "focal_length": float(shot.focal_length) if shot.focal_length > 0 else None,
            "datetime": shot.timestamp.strftime("%Y:%m:%d %H:%M:%S") if shot.timestamp else None}
    return RawImage(frame=frame, black=black, white=white, xyz_to_camera=matrix, illuminant="D65",
                    matrices=[(matrix, "D65")] if matrix is not None else [], neutral=neutral,
                    orientation=_LIBRAW_FLIP_TO_EXIF.get(flip, 1), source=name,
                    meta={k: v for k, v in meta.items() if v is not None})


# LibRaw's flip (dcraw's: bit 0 mirrors columns, bit 1 rows, bit 2 transposes first) as EXIF
# orientation; dcraw derives it from EXIF o as "50132467"[o & 7].
_LIBRAW_FLIP_TO_EXIF = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}


def _magcam_description(text) -> dict | None:
    """The ``{"magcam": {...}}`` JSON our DNG writer puts in ImageDescription (module, frame id,
    lens position, how a merge was made), or None for any other description."""
    if not isinstance(text, str) or not text.startswith("{"):
        return None
    try:
        info = json.loads(text).get("magcam")
    except (ValueError, AttributeError, RecursionError):
        return None
    return info if isinstance(info, dict) else None


def _gain_from_iso(iso) -> float:
    """Analog gain relative to ISO 100 (our DNGs write ISO = 100 x gain); 1.0 when unknown."""
    try:
        iso = float(iso)
    except (TypeError, ValueError):
        return 1.0
    return iso / 100 if math.isfinite(iso) and iso > 0 else 1.0


def _measure_rgb_cam(raw) -> np.ndarray | None:
    """LibRaw's camera -> sRGB matrix (``rgb_cam``) when rawpy does not expose it.

    For some cameras LibRaw takes the colour from the file in a form rawpy does not report
    (Kodak's ROMM matrices, for one): ``rgb_xyz_matrix`` and ``color_matrix`` are zero, yet
    LibRaw's sRGB output is colour-corrected. Its linear sRGB output is exactly ``rgb_cam`` times
    its linear camera-RGB output, so two half-size renders (no white balance, no demosaicing)
    give the matrix by least squares over the pixels clipped in neither. None if that fails.
    """
    import rawpy

    common = dict(half_size=True, user_wb=[1.0, 1.0, 1.0, 1.0], no_auto_bright=True, gamma=(1, 1), output_bps=16,
                  adjust_maximum_thr=0.0, user_flip=0, highlight_mode=rawpy.HighlightMode.Clip)
    try:
        cam = raw.postprocess(output_color=rawpy.ColorSpace.raw, **common).reshape(-1, 3).astype(np.float64)
        rgb = raw.postprocess(output_color=rawpy.ColorSpace.sRGB, **common).reshape(-1, 3).astype(np.float64)
    except (rawpy.LibRawError, ValueError, NotImplementedError):
        return None
    ok = np.all((cam > 256) & (cam < 60000), axis=1) & np.all((rgb > 256) & (rgb < 60000), axis=1)
    if np.count_nonzero(ok) < 100:
        return None
    m, *_ = np.linalg.lstsq(cam[ok], rgb[ok], rcond=None)
    m = m.T
    resid = np.abs(cam[ok] @ m.T - rgb[ok])
    if np.median(resid) > 4.0 or np.allclose(m, np.eye(3), atol=1e-3):
        return None
    return m
