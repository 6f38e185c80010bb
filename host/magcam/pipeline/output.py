"""Save developed images, atomically.

``write_jpeg`` / ``write_png``: an in-memory array through OpenCV (the develop() path).

``write_image``: the tiled pipeline's writer: bands of rows as they are finished, to a 16- or
8-bit TIFF (tifffile, strip by strip), a PNG (streamed through zlib here, 8 or 16 bit) or a
JPEG (Pillow, 8 bit), each with an ICC profile (``icc_for``) and the shooting metadata (EXIF in
JPEG and PNG, the same tags in IFD0 of a TIFF, as TIFF/EP does).

Usage::

    from magcam.pipeline import write_jpeg, write_png
    write_jpeg("capture_0007.jpg", rgb)   # rgb: (H, W, 3) uint8, R, G, B
    write_png("capture_0007.png", rgb)    # uint8 or uint16
    write_image("out.tif", "tiff", [rgb16], rgb16.shape[:2], 16, icc_profile=icc_for("p3", "srgb"))
"""

from __future__ import annotations

import errno
import io
import numbers
import os
import struct
import zlib
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from magcam.atomic import atomic_path, atomic_write, write_bytes_atomic

from .errors import PipelineError, check_rgb


FORMATS = {"tiff": (".tif", ".tiff"), "png": (".png",), "jpeg": (".jpg", ".jpeg")}  # name -> extensions


def check_quality(quality) -> int:
    """A JPEG quality as every writer takes it: a whole number 1..100 (0 is not a JPEG anyone wants)."""
    if isinstance(quality, bool) or not isinstance(quality, numbers.Integral) or not 1 <= quality <= 100:
        raise PipelineError(f"JPEG quality must be a whole number 1..100, got {quality!r}")
    return int(quality)


def write_jpeg(path: str | os.PathLike, rgb_uint8: np.ndarray, quality: int = 92) -> Path:
    """Write an (H, W, 3) uint8 RGB image as a baseline JPEG; return the path."""
    quality = check_quality(quality)
    _check_name(path, "write_jpeg", "jpeg")
    check_rgb(rgb_uint8, "write_jpeg", (np.uint8,))
    return _write(path, ".jpg", rgb_uint8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 or uint16 RGB image as a PNG; return the path."""
    _check_name(path, "write_png", "png")
    check_rgb(rgb, "write_png", (np.uint8, np.uint16))
    return _write(path, ".png", rgb, [])


def _check_name(path, where: str, fmt: str) -> None:
    """JPEG data in x.png is what a viewer, and our own reader, would take for a broken file."""
    if Path(path).suffix.lower() not in FORMATS[fmt]:
        raise PipelineError(f"{path}: {where} writes {fmt.upper()}, so the name must end in "
                            f"{' or '.join(FORMATS[fmt])}")


def _write(path: str | os.PathLike, ext: str, rgb: np.ndarray, params: list[int]) -> Path:
    path = Path(path)
    # OpenCV encoders take BGR.
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {rgb.shape[1]}x{rgb.shape[0]} image as {ext}")
    write_bytes_atomic(path, encoded.tobytes())
    return path


# ---- the tiled pipeline's writers -----------------------------------------------------------


def icc_for(output_color: str, gamma: str, xyz_to_camera=None, neutral=None) -> bytes | None:
    """The ICC profile for an output: sRGB (LittleCMS's built-in, through Pillow), Display P3,
    their linear variants, or for camera RGB balanced to white a profile built from the camera
    matrix. Unbalanced camera RGB (``wb=none``) has no white at (1, 1, 1), so no profile."""
    from magcam.pipeline import color, icc

    if output_color == "srgb" and gamma == "srgb":
        from PIL import ImageCms

        return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    if output_color in ("srgb", "p3"):
        return icc.profile(output_color, gamma)
    if xyz_to_camera is None or neutral is None or np.allclose(neutral, 1.0):
        return None
    m = color.SRGB_TO_XYZ @ color.camera_to_output_matrix(xyz_to_camera, neutral, "srgb")
    return icc.profile_from_matrix(m, "magcam camera RGB" + (" (linear)" if gamma == "linear" else ""), gamma)


_EXIF_IFD, _ORIENTATION = 0x8769, 0x0112


def _exif_scalar(v) -> bool:
    if isinstance(v, str):
        return True
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    return bool(np.isfinite(v)) and 0 < v < 1e9


def exif_bytes(meta: dict, output_color: str = "srgb", size: tuple[int, int] | None = None,
               jpeg: bool = True) -> bytes:
    """EXIF (with the ``Exif\\0\\0`` prefix JPEG APP1 wants) for the shooting metadata, with the
    tags EXIF 2.32 requires (``size`` is the image's (width, height); ``jpeg`` adds the tags only
    a JPEG needs), so that validators (``exiftool -validate``) find nothing missing."""
    from PIL import Image, TiffImagePlugin

    # Values come from the input file's tags as they are: only well-formed single values are
    # written (a corrupt tag may hold an array, a tuple or a negative number).
    meta = {k: v for k, v in meta.items() if _exif_scalar(v)}
    exif = Image.Exif()
    for tag, key in ((0x010F, "make"), (0x0110, "model")):
        if meta.get(key):
            exif[tag] = str(meta[key])
    exif[0x0131] = "magcam"
    exif[0x0132] = datetime.now().strftime("%Y:%m:%d %H:%M:%S")
    exif[_ORIENTATION] = 1  # pixels are written in display orientation
    rat = lambda v: TiffImagePlugin.IFDRational(Fraction(float(v)).limit_denominator(1_000_000))  # noqa: E731
    exif[0x011A] = exif[0x011B] = rat(72)  # X/YResolution: 72 dpi, the customary "no print size"
    exif[0x0128] = 2  # ResolutionUnit: inch
    if jpeg:
        exif[0x0213] = 1  # YCbCrPositioning: centred (what Pillow's encoder does)
    sub = exif.get_ifd(_EXIF_IFD)
    sub[0x9000] = b"0232"  # ExifVersion
    sub[0xA000] = b"0100"  # FlashpixVersion
    if jpeg:
        # ComponentsConfiguration: Y Cb Cr. Pillow has no type for it and would write BYTE; EXIF
        # says UNDEFINED, so tell Pillow (an addition to its table, which only lacks the entry).
        from PIL import TiffTags

        TiffTags.TAGS_V2_GROUPS[_EXIF_IFD].setdefault(
            0x9101, TiffTags.TagInfo(0x9101, "ComponentsConfiguration", TiffTags.UNDEFINED, 4))
        sub[0x9101] = b"\x01\x02\x03\x00"
    if size is not None:
        sub[0xA002], sub[0xA003] = int(size[0]), int(size[1])  # PixelX/YDimension
    for tag, key, value in ((0x829A, "exposure_time", rat), (0x829D, "f_number", rat), (0x8827, "iso", int),
                            (0x9003, "datetime", str), (0x920A, "focal_length", rat), (0xA434, "lens", str)):
        if meta.get(key):
            sub[tag] = value(meta[key])
    sub[0xA001] = 1 if output_color == "srgb" else 0xFFFF  # ColorSpace: sRGB or uncalibrated
    return exif.tobytes()


def _tiff_tags(meta: dict) -> list[tuple]:
    """IFD0's tags; the shooting data goes to an EXIF IFD (``_append_exif_ifd``), behind a
    placeholder entry that becomes the EXIF IFD pointer once that IFD is written."""
    tags = [(274, "H", 1, 1, True), (_EXIF_PLACEHOLDER, "I", 1, 0, True)]
    for code, key in ((271, "make"), (272, "model")):
        if meta.get(key):
            tags.append((code, "s", 0, str(meta[key]), True))
    return tags


def _exif_entries(meta: dict, output_color: str) -> list[tuple[int, int, int, bytes]]:
    """The EXIF IFD's entries for a classic (little-endian) TIFF: (tag, type, count, value)."""
    def rational(v) -> bytes:
        f = Fraction(float(v)).limit_denominator(1_000_000)
        return struct.pack("<II", f.numerator, f.denominator)

    def ascii_(v) -> bytes:
        return str(v).encode("ascii", "replace") + b"\0"

    entries = [(0x9000, 7, 4, b"0232")]  # ExifVersion
    for code, key in ((0x829A, "exposure_time"), (0x829D, "f_number"), (0x920A, "focal_length")):
        if meta.get(key):
            entries.append((code, 5, 1, rational(meta[key])))
    if meta.get("iso"):
        entries.append((0x8827, 3, 1, struct.pack("<H", min(int(meta["iso"]), 65535))))
    for code, key in ((0x9003, "datetime"), (0xA434, "lens")):
        if meta.get(key):
            text = ascii_(meta[key])
            entries.append((code, 2, len(text), text))
    entries.append((0xA000, 7, 4, b"0100"))  # FlashpixVersion
    entries.append((0xA001, 3, 1, struct.pack("<H", 1 if output_color == "srgb" else 0xFFFF)))  # ColorSpace
    return sorted(entries)


# tifffile will not write tag 34665 (the EXIF IFD pointer) itself: it writes this unassigned
# neighbouring code, which _append_exif_ifd turns into 34665 (the entries stay in tag order).
_EXIF_PLACEHOLDER = _EXIF_IFD + 1


def _append_exif_ifd(path: Path, meta: dict, output_color: str) -> None:
    """Append the EXIF IFD to a classic little-endian TIFF written by tifffile and make IFD0's
    placeholder entry point at it."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags.get(_EXIF_PLACEHOLDER)
        if tif.tiff.is_bigtiff or tif.byteorder != "<" or tag is None:
            return  # (a >4 GB output has no EXIF IFD)
        entry_at = tag.offset
    entries = _exif_entries({k: v for k, v in meta.items() if _exif_scalar(v)}, output_color)
    with open(path, "r+b") as f:
        start = f.seek(0, os.SEEK_END)
        start += start % 2  # IFDs start on a word boundary
        data_at = start + 2 + 12 * len(entries) + 4
        ifd, data = [struct.pack("<H", len(entries))], []
        for code, typ, count, value in entries:
            if len(value) <= 4:
                ifd.append(struct.pack("<HHI", code, typ, count) + value.ljust(4, b"\0"))
            else:
                ifd.append(struct.pack("<HHII", code, typ, count, data_at))
                data.append(value + b"\0" * (len(value) % 2))
                data_at += len(data[-1])
        ifd.append(struct.pack("<I", 0))  # no next IFD
        f.seek(start)
        f.write(b"".join(ifd) + b"".join(data))
        f.seek(entry_at)
        f.write(struct.pack("<HHII", _EXIF_IFD, 4, 1, start))  # ExifIFD, LONG, 1, offset


def write_image(path, fmt: str, bands: Iterable[np.ndarray], shape: tuple[int, int], bits: int, *,
                icc_profile: bytes | None = None, meta: dict | None = None, output_color: str = "srgb",
                gamma: str = "srgb", quality: int = 92) -> Path:
    """Write ``bands`` ((rows, W, 3) uint8/uint16, top to bottom, ``shape`` (H, W) in all) as
    ``fmt`` (tiff, png, jpeg); nothing is left at ``path`` if anything fails. EXIF's ColorSpace
    says sRGB only for sRGB primaries *and* the sRGB curve: a viewer that ignores the ICC
    profile applies that curve, so linear sRGB is "uncalibrated" (the profile says what it is)."""
    path = Path(path)
    if gamma != "srgb":
        output_color = "uncalibrated"
    meta = meta or {}
    h, w = shape
    dtype = np.uint8 if bits == 8 else np.uint16
    if fmt == "tiff":
        import tifffile

        def strips():
            for band in bands:
                for y in range(0, band.shape[0], _TIFF_ROWS):
                    yield band[y : y + _TIFF_ROWS]

        with atomic_path(path) as tmp:
            try:
                with tifffile.TiffWriter(tmp, bigtiff=h * w * 3 * (bits // 8) > 0xF0000000) as tif:
                    tif.write(strips(), shape=(h, w, 3), dtype=dtype, photometric="rgb", planarconfig="contig",
                              rowsperstrip=_TIFF_ROWS, iccprofile=icc_profile, software="magcam", metadata=None,
                              description=None, datetime=True, extratags=_tiff_tags(meta))
            except OSError as e:
                if e.errno is None and "requested and" in str(e):  # tifffile's short write: a full disk
                    raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({e})", str(path)) from None
                raise
            _append_exif_ifd(tmp, meta, output_color)
    elif fmt == "png":
        exif = exif_bytes(meta, output_color, (w, h), jpeg=False)[6:]  # eXIf: the TIFF structure alone
        with atomic_write(path) as f:
            _write_png(f, bands, h, w, bits, icc_profile, exif)
    elif fmt == "jpeg":
        from PIL import Image

        if bits != 8:
            raise ValueError("JPEG holds 8 bits per channel")
        full = np.empty((h, w, 3), np.uint8)
        y = 0
        for band in bands:
            full[y : y + band.shape[0]] = band
            y += band.shape[0]
        img = Image.fromarray(full, "RGB")
        del full
        buf = io.BytesIO()
        # Full-resolution colour (4:4:4) at high quality, 4:2:0 below 90, as photo tools do.
        img.save(buf, "JPEG", quality=int(quality), subsampling=0 if quality >= 90 else 2,
                 icc_profile=icc_profile or None, exif=exif_bytes(meta, output_color, (w, h)), optimize=False)
        del img
        write_bytes_atomic(path, buf.getbuffer())
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return path


_TIFF_ROWS = 16
_IDAT_BYTES = 1 << 20


def _write_png(f, bands, h: int, w: int, bits: int, icc_profile: bytes | None, exif: bytes | None) -> None:
    def chunk(kind: bytes, data: bytes) -> None:
        f.write(struct.pack(">I", len(data)) + kind)
        f.write(data)
        f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))

    f.write(b"\x89PNG\r\n\x1a\n")
    chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, 2, 0, 0, 0))  # truecolour, no interlace
    if icc_profile:
        chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile))
    if exif:
        chunk(b"eXIf", exif)
    comp = zlib.compressobj(5)
    pending: list[bytes] = []
    size = 0
    prev = None
    for band in bands:
        rows = np.ascontiguousarray(band.astype(">u2") if bits == 16 else band).view(np.uint8).reshape(band.shape[0], -1)
        # PNG filter "Up" (2): each byte minus the one above, mod 256 (the first row: minus 0).
        above = np.empty_like(rows)
        above[0] = prev if prev is not None else 0
        above[1:] = rows[:-1]
        prev = rows[-1].copy()
        filtered = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
        filtered[:, 0] = 2
        np.subtract(rows, above, out=filtered[:, 1:])
        data = comp.compress(filtered.tobytes())
        if data:
            pending.append(data)
            size += len(data)
        if size >= _IDAT_BYTES:
            chunk(b"IDAT", b"".join(pending))
            pending, size = [], 0
    pending.append(comp.flush())
    chunk(b"IDAT", b"".join(pending))
    chunk(b"IEND", b"")
