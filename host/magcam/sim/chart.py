"""Synthetic test chart the virtual sensor photographs when no scene image is given.

The chart is drawn directly at the capture size (no resampling), so every element is as sharp
as the pixel grid allows: a 6x4 ColorChecker-like patch grid (top left), a Siemens star (top
right), slanted-edge targets at 5 degrees (bottom left) and lines of shrinking text (bottom
right), on an 18 % grey background. Elements too small to draw meaningfully are left out at
tiny sizes; the patch grid is always drawn.

    >>> img = draw_chart(1024, 768)            # (768, 1024, 3) uint8, sRGB
    >>> x0, y0, x1, y1 = patch_rects(1024, 768)[18]
    >>> img[y0:y1, x0:x1].reshape(-1, 3)[0]    # the "white" patch
    array([243, 243, 242], dtype=uint8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# X-Rite ColorChecker Classic, published sRGB (D65) values, row by row from top left.
COLORCHECKER_NAMES = (
    "dark skin", "light skin", "blue sky", "foliage", "blue flower", "bluish green",
    "orange", "purplish blue", "moderate red", "purple", "yellow green", "orange yellow",
    "blue", "green", "red", "yellow", "magenta", "cyan",
    "white 9.5", "neutral 8", "neutral 6.5", "neutral 5", "neutral 3.5", "black 2",
)
COLORCHECKER_SRGB = np.array(
    [
        [115, 82, 68], [194, 150, 130], [98, 122, 157], [87, 108, 67], [133, 128, 177], [103, 189, 170],
        [214, 126, 44], [80, 91, 166], [193, 90, 99], [94, 60, 108], [157, 188, 64], [224, 163, 46],
        [56, 61, 150], [70, 148, 73], [175, 54, 60], [231, 199, 31], [187, 86, 149], [8, 133, 161],
        [243, 243, 242], [200, 200, 200], [160, 160, 160], [122, 122, 121], [85, 85, 85], [52, 52, 52],
    ],
    dtype=np.uint8,
)
COLORCHECKER_SRGB.flags.writeable = False

BACKGROUND = (118, 118, 118)  # sRGB of 18 % reflectance grey
FRAME = (30, 30, 30)  # the dark surround of the patch grid, as on the real target
# Star, edges and text use near-black/near-white so their profiles stay off the uint8 rails.
INK = (16, 16, 16)
PAPER = (240, 240, 240)

MIN_SIZE, MAX_SIZE = 16, 16384
STAR_SPOKES = 36  # black wedges; as many white ones between them
SLANT_DEG = 5.0
TEXT_LINES = (
    ("magcam test chart", 1.0),
    ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 0.7),
    ("abcdefghijklmnopqrstuvwxyz 0123456789", 0.5),
    ("The quick brown fox jumps over the lazy dog", 0.35),
    ("The quick brown fox jumps over the lazy dog", 0.25),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX
_SHIFT = 8  # fractional bits for sub-pixel vertex positions in cv2 drawing calls
_MIN_TEXT_PX = 4  # lines whose capital height would be smaller than this are left out
_STAR_SS_RADIUS = 512  # stars smaller than this radius are drawn supersampled


@dataclass(frozen=True)
class _Layout:
    patches: list[tuple[int, int, int, int]]
    frame: tuple[int, int, int, int]
    star: tuple[float, float, float] | None  # centre x, centre y, radius
    edges: list[tuple[float, float, float]]  # centre x, centre y, side of the white square
    text: tuple[int, int, int, int] | None  # area x0, y0, x1, y1 (half-open)


def _check_size(width: int, height: int) -> None:
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise ValueError(f"chart {name} must be an integer, got {v!r}")
        if not MIN_SIZE <= v <= MAX_SIZE:
            raise ValueError(f"chart {name} must be in {MIN_SIZE}..{MAX_SIZE}, got {v}")


def _px(v: float) -> int:
    # Round half up: Python's round() is half-to-even and would let adjacent cells collapse.
    return math.floor(v + 0.5)


def _layout(w: int, h: int) -> _Layout:
    # Quadrants as fractions of the frame, so any aspect ratio gets every element.
    left, right = (0.04 * w, 0.60 * w), (0.64 * w, 0.96 * w)
    top, bottom = (0.05 * h, 0.58 * h), (0.64 * h, 0.95 * h)

    # Square cells, centred in the top-left quadrant; the inset leaves the dark frame between.
    pitch = min((left[1] - left[0]) / 6, (top[1] - top[0]) / 4)
    gx = (left[0] + left[1] - 6 * pitch) / 2
    gy = (top[0] + top[1] - 4 * pitch) / 2
    xs = [_px(gx + c * pitch) for c in range(7)]
    ys = [_px(gy + r * pitch) for r in range(5)]
    inset = math.floor(0.08 * pitch)
    patches = [
        (xs[c] + inset, ys[r] + inset, xs[c + 1] - inset, ys[r + 1] - inset)
        for r in range(4)
        for c in range(6)
    ]
    frame = (xs[0] - inset, ys[0] - inset, xs[6] + inset, ys[4] + inset)

    radius = min((right[1] - right[0]) / 2, (top[1] - top[0]) / 2) * 0.98
    star = ((right[0] + right[1]) / 2, (top[0] + top[1]) / 2, radius) if radius >= 8 else None

    cell = (left[1] - left[0]) / 3
    side = 0.9 * min(cell, bottom[1] - bottom[0])
    cy = (bottom[0] + bottom[1]) / 2
    edges = [(left[0] + (i + 0.5) * cell, cy, side) for i in range(3)] if side >= 12 else []

    area = (_px(right[0]), _px(bottom[0]), _px(right[1]), _px(bottom[1]))
    text = area if area[2] - area[0] >= 24 and area[3] - area[1] >= 8 else None
    return _Layout(patches, frame, star, edges, text)


def patch_rects(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The 24 patch rectangles of ``draw_chart(width, height)``, in ColorChecker order.

    Each is ``(x0, y0, x1, y1)``, half-open: ``img[y0:y1, x0:x1]`` is exactly the patch, filled
    with ``COLORCHECKER_SRGB[i]``.
    """
    _check_size(width, height)
    return list(_layout(width, height).patches)


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * (1 << _SHIFT)).astype(np.int32)


def _fill_rect(img: np.ndarray, rect: tuple[int, int, int, int], color) -> None:
    x0, y0, x1, y1 = rect
    cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), color, cv2.FILLED)


def _draw_star(img: np.ndarray, cx: float, cy: float, r: float) -> None:
    # cv2's anti-aliased edges of separately drawn wedges overlap where the wedges get thin, which
    # would turn a small star into a dark blob; drawing it supersampled and area-averaging it
    # down gives each pixel its true coverage. Big stars only go dark within a few pixels of the
    # centre and are drawn directly.
    ss = min(8, math.ceil(_STAR_SS_RADIUS / r))
    x0, y0 = math.floor(cx - r) - 1, math.floor(cy - r) - 1
    x1, y1 = math.ceil(cx + r) + 2, math.ceil(cy + r) + 2
    tile = np.empty(((y1 - y0) * ss, (x1 - x0) * ss, 3), np.uint8)
    tile[:] = BACKGROUND
    tx, ty, tr = (cx - x0) * ss, (cy - y0) * ss, r * ss
    cv2.circle(tile, tuple(_fixed((tx, ty))), int(_fixed(tr)), PAPER, cv2.FILLED, cv2.LINE_AA, _SHIFT)
    half = math.pi / STAR_SPOKES  # each wedge spans half a period
    n_arc = max(2, math.ceil(tr * half / 4))  # arc segments of <= 4 px keep the rim round
    for k in range(STAR_SPOKES):
        a = 2 * half * k + np.linspace(0.0, half, n_arc + 1)
        rim = np.stack([tx + tr * np.cos(a), ty + tr * np.sin(a)], axis=1)
        cv2.fillPoly(tile, [_fixed(np.vstack([[tx, ty], rim]))], INK, cv2.LINE_AA, _SHIFT)
    if ss > 1:
        tile = cv2.resize(tile, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    img[y0:y1, x0:x1] = tile


def _draw_slanted_edge(img: np.ndarray, cx: float, cy: float, side: float) -> None:
    h = side / 2
    x0, y0, x1, y1 = _px(cx - h), _px(cy - h), _px(cx + h), _px(cy + h)
    _fill_rect(img, (x0, y0, x1, y1), PAPER)
    # A dark square turned by SLANT_DEG gives two near-vertical and two near-horizontal edges.
    t = math.radians(SLANT_DEG)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * (0.55 * h)
    cv2.fillPoly(img, [_fixed(corners @ rot.T + (cx, cy))], INK, cv2.LINE_AA, _SHIFT)


def _draw_text(img: np.ndarray, area: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = area
    pad = 0.05 * (x1 - x0)
    avail_w, avail_h = (x1 - x0) - 2 * pad, (y1 - y0) - 2 * pad
    # Sizes at scale 1; a line of scale s needs s * (height + baseline) and 30 % leading.
    sizes = [cv2.getTextSize(text, FONT, 1.0, 1) for text, _ in TEXT_LINES]
    fit_w = min(avail_w / (rel * tw) for (_, rel), ((tw, _), _) in zip(TEXT_LINES, sizes))
    line_h = [rel * (th + bl) * 1.3 for (_, rel), ((_, th), bl) in zip(TEXT_LINES, sizes)]
    base = 0.95 * min(fit_w, avail_h / sum(line_h))
    if TEXT_LINES[0][1] * base * sizes[0][0][1] < _MIN_TEXT_PX:
        return  # not even the title would be legible: leave the background
    # The paper panel hugs the text block, centred vertically in its area.
    block = base * sum(line_h) + 2 * pad
    top = (y0 + y1 - block) / 2
    _fill_rect(img, (x0, _px(top), x1, _px(top + block)), PAPER)
    y = top + pad
    for (text, rel), ((_, th), bl) in zip(TEXT_LINES, sizes):
        scale = rel * base
        y += scale * th
        if scale * th >= _MIN_TEXT_PX:
            thickness = max(1, _px(scale))
            cv2.putText(img, text, (_px(x0 + pad), _px(y)), FONT, scale, INK, thickness, cv2.LINE_AA)
        y += scale * (bl + 0.3 * (th + bl))


def draw_chart(width: int, height: int) -> np.ndarray:
    """Draw the test chart at ``width`` x ``height``: sRGB uint8, shape (height, width, 3).

    Deterministic; sizes 16..16384 in each direction. Memory is essentially the uint8 image itself
    (about 805 MB at 16384 x 16384) plus a tile the size of the star.
    """
    _check_size(width, height)
    lay = _layout(width, height)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BACKGROUND
    _fill_rect(img, lay.frame, FRAME)
    for rect, rgb in zip(lay.patches, COLORCHECKER_SRGB):
        _fill_rect(img, rect, tuple(int(v) for v in rgb))
    if lay.star is not None:
        _draw_star(img, *lay.star)
    for edge in lay.edges:
        _draw_slanted_edge(img, *edge)
    if lay.text is not None:
        _draw_text(img, lay.text)
    return img
