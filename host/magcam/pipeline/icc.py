"""ICC profiles for the images the pipeline writes: matrix/TRC display profiles, ICC v4.3.

A matrix/TRC profile is three colorants (the RGB primaries' XYZ, adapted to the D50 profile
connection space with Bradford, as ICC v4 Annex E asks), a white point (D50 in v4) with the
``chad`` adaptation matrix, and one tone curve per channel. That is all Display P3, linear sRGB
or a camera-RGB space needs, so this module writes them itself (LittleCMS through Pillow reads
them back; the tests check a known colour through Pillow's transform).

Usage::

    from magcam.pipeline import icc
    data = icc.profile("p3", gamma="srgb")        # bytes, ready for JPEG/PNG/TIFF
    data = icc.profile_from_matrix(rgb_to_xyz, "camera RGB (linear)", gamma="linear")
"""

from __future__ import annotations

import struct
from datetime import datetime, timezone

import numpy as np

from magcam.pipeline import color

_D50_ICC = (0.9642, 1.0, 0.8249)  # the PCS illuminant as the ICC spec writes it in s15Fixed16
# The sRGB transfer as an ICC parametric curve, function type 3: Y = (aX + b)^g for X >= d,
# Y = cX below.
_SRGB_PARA = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)

_NAMES = {"srgb": "sRGB IEC61966-2.1", "p3": "Display P3"}


def profile(space: str, gamma: str = "srgb") -> bytes:
    """The profile of ``space`` (``srgb`` or ``p3``) with the sRGB or a linear transfer curve."""
    rgb_to_xyz = color.SRGB_TO_XYZ if space == "srgb" else color.P3_TO_XYZ if space == "p3" else None
    if rgb_to_xyz is None:
        raise ValueError(f"no built-in profile for {space!r}")
    name = _NAMES[space] + (" (linear)" if gamma == "linear" else "")
    return profile_from_matrix(rgb_to_xyz, name, gamma=gamma)


def profile_from_matrix(rgb_to_xyz: np.ndarray, description: str, gamma: str = "srgb") -> bytes:
    """A v4.3 display profile for linear RGB -> XYZ (D65-relative white) ``rgb_to_xyz``."""
    if gamma not in ("srgb", "linear"):
        raise ValueError(f"gamma must be srgb or linear, got {gamma!r}")
    m = np.asarray(rgb_to_xyz, dtype=np.float64)
    white = m @ np.ones(3)
    chad = color.bradford(white / white[1], color.D50_WHITE_XYZ)
    colorants = chad @ m  # columns: the primaries in the D50 PCS
    curve = _para(_SRGB_PARA) if gamma == "srgb" else _para((1.0,))
    tags = [
        (b"desc", _mluc(description)),
        (b"cprt", _mluc("No copyright, use freely")),
        (b"wtpt", _xyz(_D50_ICC)),
        (b"chad", _sf32(chad.ravel())),
        (b"rXYZ", _xyz(colorants[:, 0])),
        (b"gXYZ", _xyz(colorants[:, 1])),
        (b"bXYZ", _xyz(colorants[:, 2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    return _assemble(tags)


def _assemble(tags: list[tuple[bytes, bytes]]) -> bytes:
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries, blobs, seen = [], [], {}
    for sig, data in tags:
        if data in seen:  # identical curves are stored once and shared, as ICC allows
            entries.append((sig, *seen[data]))
            continue
        pad = (-offset) % 4
        if pad:
            blobs.append(b"\0" * pad)
            offset += pad
        seen[data] = (offset, len(data))
        entries.append((sig, offset, len(data)))
        blobs.append(data)
        offset += len(data)
    body = b"".join(blobs)
    body += b"\0" * ((-len(body)) % 4)
    size = 128 + table_size + len(body)
    now = datetime.now(timezone.utc)
    header = struct.pack(
        ">I4sI4s4s4s6H4sII4s4sQI12s4s16s28s",
        size,
        b"\0\0\0\0",  # preferred CMM: none
        0x04300000,  # version 4.3
        b"mntr",  # display device class
        b"RGB ",
        b"XYZ ",
        now.year, now.month, now.day, now.hour, now.minute, now.second,
        b"acsp",
        0,  # platform: none
        0,  # flags
        b"\0\0\0\0",  # device manufacturer
        b"\0\0\0\0",  # device model
        0,  # attributes
        0,  # rendering intent: perceptual
        _s15(_D50_ICC),
        b"mgcm",  # creator
        b"\0" * 16,  # profile ID: not computed (allowed)
        b"\0" * 28,
    )
    table = struct.pack(">I", len(tags)) + b"".join(struct.pack(">4sII", *e) for e in entries)
    return header + table + body


def _s15(values) -> bytes:
    return b"".join(struct.pack(">i", round(float(v) * 65536)) for v in values)


def _xyz(values) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(values)


def _sf32(values) -> bytes:
    return b"sf32\0\0\0\0" + _s15(values)


def _para(params) -> bytes:
    kind = {1: 0, 5: 3}[len(params)]
    return b"para\0\0\0\0" + struct.pack(">HH", kind, 0) + _s15(params)


def _mluc(text: str) -> bytes:
    s = text.encode("utf-16-be")
    return b"mluc\0\0\0\0" + struct.pack(">II2s2sII", 1, 12, b"en", b"US", len(s), 28) + s
