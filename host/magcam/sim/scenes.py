"""Built-in scenes for calibration: a ColorChecker placed anywhere, and a flat field.

Both are float32 *linear* sRGB (D65) images, which the sensor model takes as they are: a
ColorChecker's cyan lies outside sRGB (negative red), which no 8- or 16-bit sRGB file can hold,
so the chart's published colours reach the virtual sensor exactly.

    >>> from magcam.sim.scenes import colorchecker_scene, flat_scene, named_scene
    >>> img = colorchecker_scene(1600, 1200, corners=[(300, 250), (1300, 300), (1280, 960), (280, 900)])
    >>> img.dtype, img.shape
    (dtype('float32'), (1200, 1600, 3))
    >>> flat = flat_scene(0.5)                       # uniform 50 % grey
    >>> named_scene("colorchecker").shape            # default placement, 4:3
    (1200, 1600, 3)

``corners`` are the four outer corners of the 6x4 patch grid (x, y in scene pixels), starting
at the dark-skin corner and going round towards bluish green, black, white: the same order
``magcam calibrate color --corners`` takes (in frame pixels).
"""

from __future__ import annotations

import cv2
import numpy as np

from magcam.calibration.colorchecker import reference_linear_srgb

SCENES = ("colorchecker", "flat")
DEFAULT_SIZE = (1600, 1200)
BACKGROUND = 0.18  # linear grey of the surround
FRAME_LINEAR = 0.012  # the chart's black frame between patches
_CELL_PX = 64  # chart drawn at this many pixels per patch pitch before warping
_PATCH_FRACTION = 0.8  # patch side / pitch, about the real chart's
_BORDER = 0.25  # frame margin around the grid, in pitches


def default_corners(width: int, height: int) -> np.ndarray:
    """A slightly rotated chart filling about 60 % of the frame width."""
    cx, cy, half_w = width / 2, height / 2, 0.3 * width
    half_h = half_w * 4 / 6
    a = np.radians(3.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    return pts @ rot.T + (cx, cy)


def colorchecker_scene(width: int = DEFAULT_SIZE[0], height: int = DEFAULT_SIZE[1], corners=None,
                       background: float = BACKGROUND) -> np.ndarray:
    """A ColorChecker Classic on a grey background: float32 linear sRGB, (height, width, 3).

    ``corners`` (4 x (x, y)) place the patch grid by a perspective map; default: centred,
    turned 3 degrees.
    """
    corners = default_corners(width, height) if corners is None else np.asarray(corners, np.float64)
    if corners.shape != (4, 2) or not np.all(np.isfinite(corners)):
        raise ValueError("corners must be four (x, y) points")
    ref = reference_linear_srgb()
    c, b = _CELL_PX, int(_BORDER * _CELL_PX)
    chart = np.full((4 * c + 2 * b, 6 * c + 2 * b, 3), FRAME_LINEAR, np.float32)
    inset = int(round((1 - _PATCH_FRACTION) / 2 * c))
    for i in range(24):
        r, k = divmod(i, 6)
        chart[b + r * c + inset : b + (r + 1) * c - inset, b + k * c + inset : b + (k + 1) * c - inset] = ref[i]
    # Grid corners are pixel edges: half a pixel before the first patch pixel's centre.
    grid = np.float32([[b, b], [b + 6 * c, b], [b + 6 * c, b + 4 * c], [b, b + 4 * c]]) - 0.5
    h = cv2.getPerspectiveTransform(grid, corners.astype(np.float32))
    out = np.full((height, width, 3), background, np.float32)
    warped = cv2.warpPerspective(chart, h, (width, height), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones(chart.shape[:2], np.float32), h, (width, height), flags=cv2.INTER_LINEAR)
    out += (warped - background * mask[..., None])
    return out


def flat_scene(level: float = 0.5, width: int = 64, height: int = 48) -> np.ndarray:
    """A uniform grey (linear ``level``): the flat field a diffuser in front of the lens gives."""
    if not 0 < level <= 1:
        raise ValueError(f"flat scene level must be in (0, 1], got {level}")
    return np.full((height, width, 3), level, np.float32)


def named_scene(spec: str) -> np.ndarray:
    """``colorchecker`` or ``flat`` / ``flat:LEVEL`` as a scene array."""
    name, _, arg = spec.partition(":")
    if name == "colorchecker" and not arg:
        return colorchecker_scene()
    if name == "flat":
        try:
            return flat_scene(float(arg) if arg else 0.5)
        except ValueError as e:
            raise ValueError(f"scene {spec}: {e}") from None
    raise ValueError(f"unknown built-in scene {spec!r}; expected one of colorchecker, flat, flat:LEVEL")
