"""The ColorChecker Classic: reference colours, patch sampling from a RAW, and finding the chart.

Reference data: X-Rite's published CIE 1976 L*a*b* (D50) of the 24-patch ColorChecker made after
November 2014, as colour-science ships them (``colour.CCS_COLOURCHECKERS["ColorChecker24 -
After November 2014"]``), Bradford-adapted to D65 (the descriptor's calibration illuminant).
XYZ is relative: a perfect white diffuser has Y = 1.

Corners: the four outer corners of the 6x4 patch grid, in frame pixels (x, y), starting at the
dark-skin corner and going on towards bluish green, black, white (clockwise as the chart is
printed). Patches are sampled on the RAW in their central half, per CFA site, after black level
(and the file's lens-shading map, if it has one): camera RGB, not yet white-balanced.

    >>> from magcam import rawio
    >>> from magcam.calibration import colorchecker
    >>> raw = rawio.read("chart.dng")
    >>> corners = colorchecker.detect(raw)                  # or 4 (x, y) from the user
    >>> patches = colorchecker.sample(raw, corners)         # Patches: .rgb (24, 3), .clipped
    >>> colorchecker.reference_xyz()[18].round(4)           # white 9.5, D65
    array([0.8298, 0.8802, 0.9152])
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from magcam.pipeline import black as black_stage
from magcam.pipeline import color
from magcam.pipeline.errors import PipelineError

REFERENCE = "ColorChecker24 - After November 2014"
NAMES = (
    "dark skin", "light skin", "blue sky", "foliage", "blue flower", "bluish green",
    "orange", "purplish blue", "moderate red", "purple", "yellow green", "orange yellow",
    "blue", "green", "red", "yellow", "magenta", "cyan",
    "white 9.5", "neutral 8", "neutral 6.5", "neutral 5", "neutral 3.5", "black 2",
)
NEUTRALS = slice(18, 24)
ROWS, COLS = 4, 6
SAMPLE_FRACTION = 0.5  # side of the sampled square / patch pitch (patches are ~0.8 pitch)
CLIP = 0.98  # a patch with samples at this fraction of white or above is clipped


def colour_module():
    """colour-science, imported on first use (it takes about a second) and without its
    warning that matplotlib is missing (we plot nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import colour
    return colour


@functools.cache
def _reference_xyz() -> np.ndarray:
    colour = colour_module()
    cc = colour.CCS_COLOURCHECKERS[REFERENCE]
    # Patch order is the chart's, row by row (the neutrals' names carry their densities there).
    xyy = np.array(list(cc.data.values()), dtype=np.float64)
    if len(xyy) != 24 or not all(k.startswith(n) for k, n in zip(cc.data, NAMES)):
        raise RuntimeError(f"colour-science's {REFERENCE} data is not the 24 patches in chart order")
    xyz_d50 = colour.xyY_to_XYZ(xyy)
    white_d50 = colour.xy_to_XYZ(cc.illuminant)
    out = xyz_d50 @ color.bradford(white_d50, color.D65_WHITE_XYZ).T
    out.flags.writeable = False
    return out


def reference_xyz() -> np.ndarray:
    """(24, 3) XYZ of the patches under D65 (perfect white: Y = 1)."""
    return _reference_xyz().copy()


def reference_linear_srgb() -> np.ndarray:
    """(24, 3) linear sRGB of the patches; cyan's red is negative (outside sRGB)."""
    return (_reference_xyz() @ color.XYZ_TO_SRGB.T).astype(np.float32)


@dataclass
class Patches:
    """Camera RGB of each patch (black-subtracted, white level = 1, not white-balanced), the
    spread of its samples, and which patches reach clipping."""

    rgb: np.ndarray  # (24, 3)
    std: np.ndarray  # (24, 3)
    clipped: np.ndarray  # (24,) bool
    corners: np.ndarray  # (4, 2) frame pixels


def _check_corners(corners, width: int, height: int) -> np.ndarray:
    c = np.asarray(corners, dtype=np.float64)
    if c.size != 8:
        raise PipelineError(f"corners must be 4 (x, y) points (8 numbers), got {c.size} numbers")
    c = c.reshape(4, 2)
    if not np.all(np.isfinite(c)) or np.any(c < 0) or np.any(c[:, 0] > width) or np.any(c[:, 1] > height):
        raise PipelineError(f"corners {c.ravel().tolist()} must lie inside the {width}x{height} frame")
    if abs(cv2.contourArea(c.astype(np.float32))) < 24 * 16:
        raise PipelineError("the corners enclose almost no area: give the patch grid's outer corners")
    return c


def grid_homography(corners: np.ndarray) -> np.ndarray:
    """3x3 map from grid units (x 0..6 along the first edge, y 0..4) to frame pixels."""
    grid = np.float32([[0, 0], [COLS, 0], [COLS, ROWS], [0, ROWS]])
    return cv2.getPerspectiveTransform(grid, np.asarray(corners, np.float32))


def patch_quads(corners: np.ndarray, fraction: float = SAMPLE_FRACTION) -> np.ndarray:
    """(24, 4, 2) frame-pixel quadrilaterals of the central ``fraction`` of each patch."""
    h = grid_homography(corners)
    half = fraction / 2
    quads = []
    for i in range(24):
        r, k = divmod(i, COLS)
        cx, cy = k + 0.5, r + 0.5
        quads.append([[cx - half, cy - half], [cx + half, cy - half], [cx + half, cy + half], [cx - half, cy + half]])
    pts = np.asarray(quads, np.float32).reshape(-1, 1, 2)
    return cv2.perspectiveTransform(pts, h).reshape(24, 4, 2)


def _normalized_region(raw, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Black-subtracted, white = 1 CFA of a region with even corners, shading map applied."""
    cfa = black_stage.normalize(raw.frame.data[y0:y1, x0:x1], black_stage.check_levels(raw.black, raw.white),
                                raw.white, y0, x0, raw.black_delta_v, raw.black_delta_h)
    if raw.gain_map is not None:  # a module calibrated for shading: patches at the edge read true
        cfa *= raw.gain_map.region_gains(y0, x0, y1 - y0, x1 - x0, raw.height, raw.width)
    return cfa


def sample(raw, corners, fraction: float = SAMPLE_FRACTION) -> Patches:
    """Mean camera RGB of each patch from a RawImage (see the module docstring for ``corners``)."""
    try:
        corners = _check_corners(corners, raw.width, raw.height)
    except PipelineError as e:
        raise PipelineError(f"{raw.source}: {e}") from None
    quads = patch_quads(corners, fraction)
    channel = {name: "RGB".index(name) for name in "RGB"}
    rgb, std, clipped = np.zeros((24, 3)), np.zeros((24, 3)), np.zeros(24, bool)
    for i, q in enumerate(quads):
        x0, y0 = (np.floor(q.min(axis=0)).astype(int) // 2) * 2
        x1, y1 = np.ceil(q.max(axis=0)).astype(int) + 2
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1 + x1 % 2, raw.width), min(y1 + y1 % 2, raw.height)
        if x1 - x0 < 4 or y1 - y0 < 4:
            raise PipelineError(f"{raw.source}: patch {i + 1} ({NAMES[i]}) is too small or outside the frame: "
                                "check the corners")
        region = _normalized_region(raw, x0, y0, x1, y1)
        mask = np.zeros(region.shape, np.uint8)
        cv2.fillConvexPoly(mask, np.round((q - (x0, y0)) * 16).astype(np.int32), 1, cv2.LINE_8, 4)
        sums = {0: [], 1: [], 2: []}
        for s, name in enumerate(raw.cfa):
            dy, dx = divmod(s, 2)
            vals = region[dy::2, dx::2][mask[dy::2, dx::2] > 0]
            sums[channel[name]].append(vals)
        for c in range(3):
            vals = np.concatenate(sums[c])
            if vals.size < 4:
                raise PipelineError(f"{raw.source}: patch {i + 1} ({NAMES[i]}) covers too few pixels: check the corners")
            rgb[i, c], std[i, c] = float(vals.mean()), float(vals.std())
            clipped[i] |= bool(np.mean(vals >= CLIP) > 0.001)
    return Patches(rgb=rgb, std=std, clipped=clipped, corners=corners)


# ---- finding the chart ----------------------------------------------------------------------


def half_size_rgb(raw) -> np.ndarray:
    """Linear camera RGB at half size (one pixel per 2x2 CFA cell), white-balanced by the
    file's as-shot neutral: float32 (H/2, W/2, 3). Pixel (i, j) is centred on frame (2j+0.5, 2i+0.5)."""
    h, w = raw.height - raw.height % 2, raw.width - raw.width % 2
    cfa = _normalized_region(raw, 0, 0, w, h)
    out = np.zeros((h // 2, w // 2, 3), np.float32)
    count = np.zeros(3)
    for s, name in enumerate(raw.cfa):
        dy, dx = divmod(s, 2)
        c = "RGB".index(name)
        out[..., c] += cfa[dy::2, dx::2]
        count[c] += 1
    out /= count.astype(np.float32)
    out /= np.asarray(raw.as_shot_neutral(), np.float32)
    return out


def preview(rgb_linear: np.ndarray) -> np.ndarray:
    """8-bit gamma-encoded preview of linear RGB, exposed so the 99.5th percentile is white."""
    top = float(np.percentile(rgb_linear, 99.5)) or 1.0
    return (color.linear_to_srgb(rgb_linear / top) * 255 + 0.5).astype(np.uint8)


def _square_candidates(img8: np.ndarray) -> list[np.ndarray]:
    """Convex, nearly square quadrilaterals bounded by edges: (4, 2) corner arrays."""
    h, w = img8.shape[:2]
    edges = np.zeros((h, w), np.uint8)
    for c in range(3):
        edges |= cv2.Canny(cv2.GaussianBlur(img8[..., c], (3, 3), 0), 20, 60)
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(255 - edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    lo, hi = 64.0, 0.05 * h * w
    for cnt in contours:
        area = cv2.contourArea(cnt)
        if not lo <= area <= hi:
            continue
        (_, _), (rw, rh), _ = rect = cv2.minAreaRect(cnt)
        if min(rw, rh) <= 0 or max(rw, rh) / min(rw, rh) > 1.4 or area / (rw * rh) < 0.8:
            continue
        out.append(cv2.boxPoints(rect))
    return out


def _fit_score(cam: np.ndarray, ref: np.ndarray) -> float:
    """How well a 3x3 maps these camera RGBs onto the reference (relative residual)."""
    a, *_ = np.linalg.lstsq(cam, ref, rcond=None)
    res = (cam @ a - ref) / (ref[:, 1:2] + 0.05)
    return float(np.mean(res**2))


def detect(raw) -> np.ndarray:
    """Find the ColorChecker in a RawImage: its grid corners (4, 2) in frame pixels, in the
    order of the module docstring. ``PipelineError`` if no 6x4 patch grid is found."""
    lin = half_size_rgb(raw)
    boxes = _square_candidates(preview(lin))
    fail = f"{raw.source}: no ColorChecker found ({{}}); give its corners (--corners x,y,x,y,x,y,x,y)"
    if len(boxes) < 8:
        raise PipelineError(fail.format(f"{len(boxes)} patch-like squares"))
    areas = np.array([cv2.contourArea(b) for b in boxes])
    # The patches are the largest group of squares of one size.
    best = max(areas, key=lambda a: np.sum(np.abs(areas / a - 1) < 0.35))
    keep = [b for b, a in zip(boxes, areas) if abs(a / best - 1) < 0.35]
    centres = np.array([b.mean(axis=0) for b in keep])
    # De-duplicate (nested contours of one patch).
    uniq = []
    for c in centres:
        if all(np.hypot(*(c - u)) > 0.3 * np.sqrt(best) for u in uniq):
            uniq.append(c)
    centres = np.array(uniq)
    if len(centres) < 8:
        raise PipelineError(fail.format(f"only {len(centres)} patches of one size"))
    d = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    pitch = float(np.median(d.min(axis=1)))
    angle = np.radians(cv2.minAreaRect(keep[0])[2])
    angles = [np.radians(cv2.minAreaRect(b)[2]) % (np.pi / 2) for b in keep]
    angle = float(np.angle(np.mean(np.exp(4j * np.array(angles)))) / 4)  # mean on the 90-degree circle
    rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    p = centres @ rot.T
    idx = np.round((p - p.min(axis=0)) / pitch).astype(int)
    ok = np.all(np.abs((p - p.min(axis=0)) / pitch - idx) < 0.3, axis=1)
    idx, centres = idx[ok], centres[ok]
    ncols, nrows = idx.max(axis=0) + 1
    if len(idx) < 8 or not ((ncols <= 6 and nrows <= 4) or (ncols <= 4 and nrows <= 6)):
        raise PipelineError(fail.format(f"patches form a {ncols}x{nrows} grid, not 6x4"))
    hmg, _ = cv2.findHomography(idx.astype(np.float32) + 0.5, centres.astype(np.float32), 0)
    if hmg is None:
        raise PipelineError(fail.format("patch centres do not fit a grid"))
    ref = reference_xyz()
    best_corners, best_score = None, np.inf
    wide = ncols <= 6 and nrows <= 4
    for tall in ((False, True) if wide and ncols <= 4 else (not wide,)):
        gc, gr = (4, 6) if tall else (6, 4)
        for ox in range(gc - ncols + 1):
            for oy in range(gr - nrows + 1):
                box = np.float32([[-ox, -oy], [gc - ox, -oy], [gc - ox, gr - oy], [-ox, gr - oy]])
                outer = cv2.perspectiveTransform(box.reshape(-1, 1, 2), hmg).reshape(4, 2)
                for turn in range(4):
                    corners = np.roll(outer, -turn, axis=0)
                    # The first edge must be the long (6-patch) side.
                    if np.hypot(*(corners[1] - corners[0])) < np.hypot(*(corners[3] - corners[0])):
                        continue
                    frame_corners = corners * 2 + 0.5
                    try:
                        cam = _sample_half(lin, corners)
                    except PipelineError:
                        continue
                    score = _fit_score(cam, ref)
                    if score < best_score:
                        best_corners, best_score = frame_corners, score
    if best_corners is None:
        raise PipelineError(fail.format("the grid runs off the frame"))
    return best_corners


def _sample_half(lin: np.ndarray, corners: np.ndarray) -> np.ndarray:
    h, w = lin.shape[:2]
    if np.any(corners < 0) or np.any(corners[:, 0] > w) or np.any(corners[:, 1] > h):
        raise PipelineError("grid outside the frame")
    out = np.zeros((24, 3))
    for i, q in enumerate(patch_quads(corners)):
        x0, y0 = np.floor(q.min(axis=0)).astype(int)
        x1, y1 = np.ceil(q.max(axis=0)).astype(int) + 1
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillConvexPoly(mask, np.round((q - (x0, y0)) * 16).astype(np.int32), 1, cv2.LINE_8, 4)
        vals = lin[y0:y1, x0:x1][mask > 0]
        if vals.size == 0:
            raise PipelineError("empty patch")
        out[i] = vals.mean(axis=0)
    return out
