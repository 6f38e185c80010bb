"""Write a RawFrame as a DNG 1.4 file that LibRaw (rawpy), dcraw and exiftool can read.

The file is a single uncompressed IFD0 holding the CFA image (uint16, strips, Photometric CFA)
plus the DNG colour tags and the shooting metadata. tifffile encodes the TIFF container; this
module only decides which tags go in it.

Where the metadata lives:

* EXIF shooting tags (ExposureTime, FNumber, ISOSpeedRatings, DateTimeOriginal, FocalLength,
  LensModel) are in IFD0, as TIFF/EP allows for DNG; tifffile cannot write an EXIF sub-IFD.
  exiftool reads all of them there; LibRaw and dcraw read all but ISOSpeedRatings (they only
  look for ISO in an EXIF sub-IFD, so they report ISO 0).
* ``DateTime`` and ``DateTimeOriginal`` are the host's local time when the file is written.
* The frame fields with no standard tag go in ImageDescription as 7-bit ASCII JSON::

      {"magcam": {"module": "magcam-m43-35f14", "frame_id": 7, "lens_position": 420,
                  "timestamp_ms": 123456}}

  (``timestamp_ms`` is the device clock, as the frame header carries it.) Read it back with
  ``json.loads(tifffile.TiffFile(path).pages[0].description)["magcam"]`` or
  ``exiftool -ImageDescription``.

A descriptor with ``lens_shading`` (``magcam calibrate shading``) adds an OpcodeList2 of four
GainMap opcodes, one per CFA site: raw samples are stored as the sensor gave them, and DNG
readers that apply opcodes (and ``magcam process``) correct the shading.

Sample values above ``white_level`` are written as they are (hot pixels, overshoot); DNG
readers treat anything at or above WhiteLevel as clipped. LibRaw and dcraw refuse images under
22 pixels a side, so tiny test frames are valid DNGs they will not open.

Usage::

    from magcam.dng import write_dng
    write_dng("capture_0007.dng", frame, descriptor)
"""

from __future__ import annotations

import io
import json
import math
import os
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import tifffile

from magcam.atomic import atomic_write
from magcam.frame import CFA_PATTERNS, RawFrame
from magcam.pipeline import color
from magcam.pipeline.shading import GainMap

if TYPE_CHECKING:
    from magcam.rawio import RawImage

# TIFF field types (tifffile DATATYPE codes), for extra_tags.
BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL, UNDEFINED, DOUBLE = 1, 2, 3, 4, 5, 10, 7, 12

# CFAPattern colour codes (TIFF/EP): 0 = red, 1 = green, 2 = blue.
_CFA_CODES = {"R": 0, "G": 1, "B": 2}

# Tags tifffile derives from the image itself (or cannot write); callers may not override them.
_RESERVED_TAGS = frozenset(tifffile.TIFF.TAG_FILTERED) | {254, 282, 283, 296}

_RATIONAL_DENOMINATOR = 10000


def write_dng(
    path: str | os.PathLike,
    frame: RawFrame,
    descriptor: dict,
    *,
    software: str = "magcam",
    extra_tags: Iterable[tuple] | None = None,
) -> Path:
    """Write ``frame`` to ``path`` as a DNG 1.4 file, atomically; return the path.

    ``descriptor`` is the module descriptor (make, model, serial, lens, color). ``extra_tags``
    is a sequence of tifffile tag tuples ``(code, dtype, count, value)`` with ``dtype`` one of
    this module's TIFF field types (BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL) and
    (S)RATIONAL values given as flat numerator, denominator pairs, e.g. BaselineExposure -0.5:
    ``(50730, SRATIONAL, 1, (-1, 2))``. A tag with the same code as one this writer sets
    replaces it. Raises ValueError for an unusable frame, descriptor or tag before anything
    is written.
    """
    path = Path(path)
    _check_frame(frame)
    tags = {tag[0]: tag for tag in _dng_tags(frame, descriptor, software)}
    opcodes = gain_map_opcodes(frame, descriptor)
    if opcodes:
        tags[51009] = (51009, UNDEFINED, len(opcodes), opcodes)  # OpcodeList2: lens shading
    for tag in extra_tags or ():
        if len(tag) != 4:
            raise ValueError(f"extra tag {tag!r} must be (code, dtype, count, value)")
        if tag[0] in _RESERVED_TAGS:
            raise ValueError(f"tag {tag[0]} is set by the writer from the image and cannot be overridden")
        tags[tag[0]] = tuple(tag)
    _check_values(tags)

    # Encode in memory: tifffile needs a named file, and atomic_write hands out a bare fd.
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer, bigtiff=False) as tiff:
        tiff.write(
            frame.data,
            photometric=tifffile.PHOTOMETRIC.CFA,
            compression=None,
            rowsperstrip=frame.height,  # one strip: no tiles, every DNG reader handles it
            subfiletype=0,  # NewSubfileType 0: the main (raw) image
            # Everything else comes from the tag list: stop tifffile writing its own
            # Software/DateTime and its JSON "shaped" ImageDescription.
            software=False,
            datetime=None,
            description=None,
            metadata=None,
            extratags=[(*tag, True) for tag in tags.values()],
        )
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())
    return path


def write_derived(
    path: str | os.PathLike,
    frame: RawFrame,
    ref: "RawImage",
    *,
    software: str,
    description: dict | None = None,
    extra_tags: Iterable[tuple] = (),
) -> Path:
    """Write ``frame``, made from ``ref`` and other frames of the same shot (an HDR or burst
    merge), as a DNG that carries ``ref``'s metadata: make, model, serial, lens (EXIF's 0 =
    unknown where ``ref`` has none, nothing invented), colour matrices with their illuminants,
    as-shot neutral, orientation, capture time, lens shading (GainMap opcodes) and its magcam
    ImageDescription, updated with ``description``. The exposure and gain are ``frame``'s.
    ValueError (before anything is written) if a value cannot be stored."""
    meta = ref.meta
    matrices = [(m, ill) for m, ill in ref.matrices if m is not None and ill in color.ILLUMINANT_CODES]
    if not matrices:  # no colour in the file: camera RGB is sRGB, as LibRaw assumes
        matrices = [(color.XYZ_TO_SRGB if ref.xyz_to_camera is None else ref.xyz_to_camera, "D65")]
    focal, f_number = _finite_positive(meta.get("focal_length")), _finite_positive(meta.get("f_number"))
    info = {"module": None, "frame_id": int(frame.frame_id), "lens_position": int(frame.lens_position),
            "timestamp_ms": int(frame.timestamp_ms)}
    info.update(meta.get("magcam") or {})
    info.update(description or {})
    descriptor = {
        "make": _ascii(meta.get("make")) or "unknown",
        "model": _ascii(meta.get("model")) or "unknown",
        "serial": _ascii(meta.get("serial")) or "unknown",
        "module": info["module"],
        "lens": {"focal_mm": focal or 1.0, "f_number": f_number or 1.0},  # placeholders, zeroed below
        "color": {"illuminant_1": matrices[0][1], "color_matrix_1": [float(v) for v in np.ravel(matrices[0][0])]},
    }
    neutral = ref.as_shot_neutral()
    orientation = int(ref.orientation) if 1 <= int(ref.orientation) <= 8 else 1
    extra = [
        (270, ASCII, 0, json.dumps({"magcam": info}, separators=(",", ":"))),  # ImageDescription
        (274, SHORT, 1, orientation),  # Orientation
        (50728, RATIONAL, 3, tuple(n for v in neutral for n in rational(float(v), 1_000_000))),  # AsShotNeutral
    ]
    if len(matrices) > 1:
        m2, ill2 = matrices[1]
        extra += [(50722, SRATIONAL, 9, _rationals(np.ravel(m2))),  # ColorMatrix2
                  (50779, SHORT, 1, color.ILLUMINANT_CODES[ill2])]  # CalibrationIlluminant2
    if focal is None or f_number is None:  # EXIF's 0: unknown
        extra += [(37386, RATIONAL, 1, (0, 1)), (33437, RATIONAL, 1, (0, 1)), (50736, RATIONAL, 4, (0, 1) * 4),
                  (42036, ASCII, 0, "unknown")]
    elif _ascii(meta.get("lens")):
        extra.append((42036, ASCII, 0, _ascii(meta["lens"])))  # LensModel
    if _ascii(meta.get("datetime")):
        extra.append((36867, ASCII, 0, _ascii(meta["datetime"])))  # DateTimeOriginal: the shot's
    if ref.gain_map is not None:  # the lens shading applies to the merged frame as to the reference
        opcodes = ref.gain_map.to_dng_opcodes(frame.height, frame.width)
        extra.append((51009, UNDEFINED, len(opcodes), opcodes))  # OpcodeList2
    return write_dng(path, frame, descriptor, software=software, extra_tags=[*extra, *extra_tags])


def _finite_positive(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _ascii(v) -> str | None:
    """Printable 7-bit text of a metadata value (bytes or str), or None."""
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    if not isinstance(v, str):
        return None
    v = v.strip("\0 ").encode("ascii", "replace").decode()
    return v or None


def _check_frame(frame: RawFrame) -> None:
    data = frame.data
    if not isinstance(data, np.ndarray) or data.dtype != np.uint16 or data.ndim != 2:
        raise ValueError("frame.data must be a 2-D uint16 array")
    height, width = data.shape
    if height < 2 or width < 2 or height % 2 or width % 2:
        raise ValueError(f"frame size {width}x{height} must be even and at least 2x2 (whole CFA cells)")
    if frame.cfa not in CFA_PATTERNS:
        raise ValueError(f"unknown CFA pattern {frame.cfa!r}; expected one of {CFA_PATTERNS}")
    if not 1 <= frame.bits <= 16:
        raise ValueError(f"frame.bits {frame.bits} must be 1..16")
    if not 0 <= frame.black_level < frame.white_level:
        raise ValueError(f"need 0 <= black_level < white_level, got {frame.black_level} and {frame.white_level}")
    if frame.white_level >= 1 << frame.bits:
        raise ValueError(f"white_level {frame.white_level} does not fit in {frame.bits} bits")
    if frame.exposure_us <= 0:
        raise ValueError(f"exposure_us must be positive, got {frame.exposure_us}")
    if not frame.analog_gain > 0:
        raise ValueError(f"analog_gain must be positive, got {frame.analog_gain}")


def _dng_tags(frame: RawFrame, descriptor: dict, software: str) -> list[tuple]:
    """The (code, dtype, count, value) tags of IFD0, apart from the image structure."""
    try:
        make, model, serial = descriptor["make"], descriptor["model"], descriptor["serial"]
        focal_mm, f_number = float(descriptor["lens"]["focal_mm"]), float(descriptor["lens"]["f_number"])
        illuminant = descriptor["color"]["illuminant_1"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"descriptor lacks a usable field: {exc}") from exc
    if illuminant not in color.ILLUMINANT_CODES:
        raise ValueError(f"unknown illuminant {illuminant!r}; expected one of {sorted(color.ILLUMINANT_CODES)}")
    if not (focal_mm > 0 and f_number > 0):
        raise ValueError("descriptor lens focal_mm and f_number must be positive")
    matrix = color.xyz_to_camera(descriptor).ravel()
    neutral = color.as_shot_neutral(descriptor)
    description = json.dumps(
        {
            "magcam": {
                "module": descriptor.get("module"),
                "frame_id": int(frame.frame_id),
                "lens_position": int(frame.lens_position),
                "timestamp_ms": int(frame.timestamp_ms),
            }
        },
        separators=(",", ":"),
    )
    iso = min(max(round(100 * frame.analog_gain), 1), 65535)
    exposure = Fraction(frame.exposure_us, 1_000_000)
    lens_focal, lens_f = rational(focal_mm), rational(f_number)
    now = datetime.now().strftime("%Y:%m:%d %H:%M:%S")
    return [
        (270, ASCII, 0, description),  # ImageDescription
        (271, ASCII, 0, make),  # Make
        (272, ASCII, 0, model),  # Model
        (274, SHORT, 1, 1),  # Orientation: top-left
        (305, ASCII, 0, software),  # Software
        (306, ASCII, 0, now),  # DateTime
        (33421, SHORT, 2, (2, 2)),  # CFARepeatPatternDim
        (33422, BYTE, 4, bytes(_CFA_CODES[c] for c in frame.cfa)),  # CFAPattern
        (33434, RATIONAL, 1, (exposure.numerator, exposure.denominator)),  # ExposureTime
        (33437, RATIONAL, 1, lens_f),  # FNumber
        (34855, SHORT, 1, iso),  # ISOSpeedRatings
        (36867, ASCII, 0, now),  # DateTimeOriginal
        *_subject_distance(descriptor, frame.lens_position),  # SubjectDistance, once focus is calibrated
        (37386, RATIONAL, 1, lens_focal),  # FocalLength
        (42036, ASCII, 0, f"{focal_mm:g}mm F{f_number:g}"),  # LensModel
        (50706, BYTE, 4, bytes((1, 4, 0, 0))),  # DNGVersion
        (50707, BYTE, 4, bytes((1, 1, 0, 0))),  # DNGBackwardVersion
        (50708, ASCII, 0, f"{make} {model}"),  # UniqueCameraModel
        (50710, BYTE, 3, bytes((0, 1, 2))),  # CFAPlaneColor
        (50711, SHORT, 1, 1),  # CFALayout: rectangular
        (50713, SHORT, 2, (1, 1)),  # BlackLevelRepeatDim
        (50714, SHORT, 1, frame.black_level),  # BlackLevel
        (50717, SHORT, 1, frame.white_level),  # WhiteLevel
        (50721, SRATIONAL, 9, _rationals(matrix)),  # ColorMatrix1
        (50728, RATIONAL, 3, _rationals(neutral)),  # AsShotNeutral
        (50735, ASCII, 0, serial),  # CameraSerialNumber
        (50736, RATIONAL, 4, lens_focal + lens_focal + lens_f + lens_f),  # LensInfo: a prime lens
        (50778, SHORT, 1, color.ILLUMINANT_CODES[illuminant]),  # CalibrationIlluminant1
    ] + _noise_profile(descriptor, frame.analog_gain)


def _noise_profile(descriptor: dict, analog_gain: float) -> list[tuple]:
    """DNG NoiseProfile (variance = S x + O, x the signal scaled 0..1 from black to white, the
    same for every plane) from the sensor's full well and read noise at this gain, so readers
    (``magcam merge``, Adobe's raw denoise) need not measure it. None without those figures.

    DN per electron is ``gain (white - black) / full_well``, so in units of the 0..1 range a
    signal x holds ``x full_well / gain`` electrons: S = gain / full_well, O = (read_noise S)^2."""
    s = descriptor.get("sensor") or {}
    try:
        full_well, read_noise, gain = float(s["full_well_e"]), float(s["read_noise_e"]), float(analog_gain)
    except (KeyError, TypeError, ValueError):
        return []
    if not (full_well > 0 and read_noise >= 0 and gain > 0):
        return []
    scale = gain / full_well
    return [(51041, DOUBLE, 2, (scale, (read_noise * scale) ** 2))]  # NoiseProfile


def _subject_distance(descriptor: dict, lens_position: int) -> list[tuple]:
    """EXIF SubjectDistance (metres) from the descriptor's lens.focus_table; none without one.
    EXIF writes infinity as 0xFFFFFFFF/1."""
    from magcam.optics import subject_distance_m

    d = subject_distance_m(descriptor, lens_position)
    if d is None:
        return []
    return [(37382, RATIONAL, 1, (0xFFFFFFFF, 1) if d == float("inf") or d > 4e5 else rational(d))]


def gain_map_opcodes(frame: RawFrame, descriptor: dict) -> bytes | None:
    """The descriptor's ``lens_shading.grids`` as a DNG OpcodeList2 of four GainMap opcodes
    (one per CFA site, RowPitch = ColPitch = 2, the grid spanning the frame), as Adobe's
    converter writes them for Bayer data; None when the descriptor has no lens shading."""
    shading = descriptor.get("lens_shading")
    if shading is None:
        return None
    grids = np.asarray(shading.get("grids") if isinstance(shading, dict) else shading, dtype=np.float64)
    if grids.ndim == 4:
        grids = grids.reshape(4, *grids.shape[2:])
    if grids.ndim != 3 or grids.shape[0] != 4 or min(grids.shape[1:]) < 2:
        raise ValueError(f"descriptor lens_shading.grids must be 4 grids of at least 2x2 gains, got shape {grids.shape}")
    if not np.all(np.isfinite(grids)) or np.any(grids <= 0):
        raise ValueError("descriptor lens_shading.grids must hold positive gains")
    return GainMap.from_grids(grids).to_dng_opcodes(frame.height, frame.width)


def rational(value: float, denominator: int = _RATIONAL_DENOMINATOR) -> tuple[int, int]:
    """(numerator, denominator) of a TIFF (S)RATIONAL; write_dng checks the range."""
    return round(value * denominator), denominator


def _rationals(values) -> tuple[int, ...]:
    """Flattened (numerator, denominator) pairs, as tifffile takes (S)RATIONAL arrays."""
    return tuple(n for v in values for n in rational(float(v)))


# Value range of each numeric TIFF field type (for RATIONAL / SRATIONAL: of each numerator and
# denominator).
_RANGES = {BYTE: (0, 0xFF), SHORT: (0, 0xFFFF), LONG: (0, 0xFFFFFFFF), RATIONAL: (0, 0xFFFFFFFF),
           SRATIONAL: (-0x80000000, 0x7FFFFFFF)}


def _check_values(tags: dict) -> None:
    """Refuse a tag whose value its field type cannot hold (non-ASCII text, a negative or
    huge rational from a corrupt input...): tifffile would fail half-way through the write, so
    fail before the temporary file exists, with the tag named."""
    for code, dtype, _, value in tags.values():
        if dtype == ASCII:
            if not isinstance(value, str) or not value.isascii():
                raise ValueError(f"tag {code} must be a 7-bit ASCII string, got {value!r}")
            continue
        if dtype not in _RANGES or isinstance(value, (bytes, bytearray)):
            continue
        lo, hi = _RANGES[dtype]
        values = value if isinstance(value, (tuple, list, np.ndarray)) else (value,)
        for v in values:
            if not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ValueError(f"tag {code}: value {v!r} does not fit its TIFF type (range {lo}..{hi})")
        if dtype in (RATIONAL, SRATIONAL) and any(d == 0 for d in values[1::2]):
            raise ValueError(f"tag {code}: a rational with denominator 0")
