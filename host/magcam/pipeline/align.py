"""Burst alignment: coarse-to-fine tile search on a Gaussian pyramid (HDR+, Hasinoff et al.
2016, section 4).

Frames are aligned on their 2x2-binned grey image (one pixel per CFA cell, the mean of its four
samples), so every displacement found is a whole number of CFA cells (2 raw pixels) and moving
a Bayer frame by it keeps the colour phase. The pyramid has levels downsampled by 1, 2, 4 and 4
(``FACTORS``; each step a 5-tap Gaussian, ``cv2.pyrDown``). At every level each tile of
``TILE`` x ``TILE`` pixels of the reference is searched in the other frame within ``RADII``
pixels of each of its candidate displacements: L2 distance at the coarse levels (smooth), L1 at
the finest (less swayed by a few outliers, e.g. a moving object). The candidates of a tile are
upsampled from the coarser level: the coarse tile under its centre, that tile's nearest
neighbours across and down (a tile straddling two motions picks the right one), and the median
over all tiles (the hand's motion, which keeps repetitive texture such as a fence from locking
onto an alias). At the finest level a few Lucas-Kanade steps from the best whole displacement
give the sub-pixel part (the merge interpolates by it).

Usage::

    from magcam.pipeline import align
    ref = align.Pyramid(align.grey(ref_planes))            # planes: (4, H/2, W/2) float32
    a = align.align(ref, align.Pyramid(align.grey(alt_planes)))
    a.cells      # (ny, nx, 2) int32: (dy, dx) of each TILE x TILE-cell tile, in CFA cells
    a.pixels()   # (ny, nx, 2) float32: sub-pixel (dy, dx) in raw pixels
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from magcam.jit import njit, prange

TILE = 16  # tile side in pixels of each level (16 cells = 32 raw pixels at the finest)
FACTORS = (1, 2, 4, 4)  # downsampling of each level from the one below it
RADII = (1, 3, 4, 4)  # search radius at each level, in that level's pixels (1 at the finest: the
# candidate from the level above, twice as coarse, is within a pixel)
_MIN_SIDE = 8  # a level smaller than this is not built (tiny frames)


def grey(planes: np.ndarray) -> np.ndarray:
    """The 2x2-binned grey image of a frame given as its four CFA planes, float32 (H/2, W/2)."""
    return _grey(planes)


@njit(parallel=True, cache=True, fastmath=True, nogil=True, error_model="numpy")
def _grey(planes):  # pragma: no cover - compiled
    _, h, w = planes.shape
    out = np.empty((h, w), np.float32)
    for y in prange(h):
        for x in range(w):
            out[y, x] = 0.25 * (planes[0, y, x] + planes[1, y, x] + planes[2, y, x] + planes[3, y, x])
    return out


class Pyramid:
    """Gaussian pyramid of a grey image: ``levels[0]`` is the image, each next one smaller by
    the next of ``FACTORS``; levels under ``_MIN_SIDE`` pixels are left out."""

    def __init__(self, image: np.ndarray):
        image = np.ascontiguousarray(image, dtype=np.float32)
        self.levels = [image]
        self.factors = [1]
        for f in FACTORS[1:]:
            prev = self.levels[-1]
            if min(prev.shape) // f < _MIN_SIDE:
                break
            nxt = prev
            for _ in range(f.bit_length() - 1):  # f is 2 or 4: one or two pyrDown steps
                nxt = cv2.pyrDown(nxt)
            self.levels.append(nxt)
            self.factors.append(f)


@dataclass
class Alignment:
    """Displacement of every finest-level tile of a frame relative to the reference.

    ``cells[ty, tx] = (dy, dx)``: the tile of the reference whose top-left cell is
    ``(ty * tile, tx * tile)`` matches the frame at that position plus ``(dy, dx)`` cells.
    ``sub`` is the sub-cell correction (-1..1, Lucas-Kanade), ``cost`` the mean
    absolute grey difference of the tile at ``cells`` (normalised raw units).
    """

    cells: np.ndarray
    sub: np.ndarray
    cost: np.ndarray
    tile: int = TILE

    def pixels(self) -> np.ndarray:
        """Sub-pixel displacement in raw pixels, float32 (ny, nx, 2)."""
        return (2.0 * (self.cells + self.sub)).astype(np.float32)


def tile_grid(height: int, width: int, tile: int = TILE) -> tuple[int, int]:
    """Number of tile rows and columns covering a level (the last ones may be partial)."""
    return -(-height // tile), -(-width // tile)


def align(ref: Pyramid, alt: Pyramid, tile: int = TILE) -> Alignment:
    """Align ``alt`` to ``ref`` (two pyramids of same-size grey images), coarse to fine."""
    if ref.levels[0].shape != alt.levels[0].shape:
        raise ValueError(f"cannot align a {alt.levels[0].shape} image to a {ref.levels[0].shape} one")
    n = min(len(ref.levels), len(alt.levels))
    prev = None  # displacements of the coarser level
    for lv in range(n - 1, -1, -1):
        r, a = ref.levels[lv], alt.levels[lv]
        ny, nx = tile_grid(*r.shape, tile)
        if prev is None:
            cand = np.zeros((ny, nx, 1, 2), np.int32)
        else:
            cand = _upsample(prev, ref.factors[lv + 1], tile, ny, nx)
        disp = np.empty((ny, nx, 2), np.int32)
        cost = np.empty((ny, nx), np.float32)
        finest = lv == 0
        _search(r, a, tile, cand, RADII[lv], not finest, disp, cost)
        prev = disp
    sub = np.zeros(disp.shape, np.float32)
    _subpixel(ref.levels[0], alt.levels[0], tile, disp, sub)
    npx = np.empty(cost.shape, np.float32)
    _tile_sizes(ref.levels[0].shape[0], ref.levels[0].shape[1], tile, npx)
    return Alignment(cells=disp, sub=sub, cost=cost / npx, tile=tile)


def _upsample(coarse: np.ndarray, factor: int, tile: int, ny: int, nx: int) -> np.ndarray:
    """Four candidate displacements per fine tile from the coarse level (scaled by ``factor``):
    the coarse tile under the fine tile's centre, its nearest neighbours down and across, and
    the median of all tiles."""
    nyc, nxc = coarse.shape[:2]
    cy = (np.arange(ny) + 0.5) * tile / factor  # fine tile centres in coarse pixels
    cx = (np.arange(nx) + 0.5) * tile / factor
    iy = np.minimum((cy // tile).astype(np.intp), nyc - 1)
    ix = np.minimum((cx // tile).astype(np.intp), nxc - 1)
    # The neighbour on the side of the coarse tile the centre lies in.
    ny2 = np.clip(np.where(cy - iy * tile >= tile / 2, iy + 1, iy - 1), 0, nyc - 1)
    nx2 = np.clip(np.where(cx - ix * tile >= tile / 2, ix + 1, ix - 1), 0, nxc - 1)
    cand = np.empty((ny, nx, 4, 2), np.int32)
    cand[:, :, 0] = coarse[iy[:, None], ix[None, :]]
    cand[:, :, 1] = coarse[ny2[:, None], ix[None, :]]
    cand[:, :, 2] = coarse[iy[:, None], nx2[None, :]]
    # The frame's dominant motion (median over tiles): a hand moves the whole frame, and it
    # rescues tiles of repetitive texture (a fence) that a neighbour's alias led astray.
    cand[:, :, 3] = np.median(coarse.reshape(-1, 2), axis=0).round().astype(np.int32)
    cand *= factor
    return cand


@njit(cache=True, fastmath=True, nogil=True)
def _cost(ref, alt, y0, y1, x0, x1, dy, dx, l2):  # pragma: no cover - compiled
    """Sum over the tile of |ref - alt shifted by (dy, dx)|, squared when ``l2``; pixels that fall
    outside ``alt`` take its nearest edge pixel."""
    h, w = alt.shape
    s = np.float32(0.0)
    if y0 + dy >= 0 and y1 + dy <= h and x0 + dx >= 0 and x1 + dx <= w:
        if l2:
            for y in range(y0, y1):
                for x in range(x0, x1):
                    d = ref[y, x] - alt[y + dy, x + dx]
                    s += d * d
        else:
            for y in range(y0, y1):
                for x in range(x0, x1):
                    s += abs(ref[y, x] - alt[y + dy, x + dx])
        return s
    for y in range(y0, y1):
        ya = min(max(y + dy, 0), h - 1)
        for x in range(x0, x1):
            xa = min(max(x + dx, 0), w - 1)
            d = ref[y, x] - alt[ya, xa]
            s += d * d if l2 else abs(d)
    return s


@njit(parallel=True, cache=True, fastmath=True, nogil=True, error_model="numpy")
def _search(ref, alt, tile, cand, radius, l2, disp, cost):  # pragma: no cover - compiled
    h, w = ref.shape
    ny, nx = disp.shape[0], disp.shape[1]
    for t in prange(ny * nx):
        ty, tx = t // nx, t % nx
        y0, x0 = ty * tile, tx * tile
        y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
        best = np.float32(np.inf)
        by, bx = 0, 0
        # Search around every candidate (they mostly agree or differ by a pixel, so each
        # displacement is evaluated once: a position inside an earlier candidate's window
        # was already).
        for k in range(cand.shape[2]):
            cy, cx = cand[ty, tx, k, 0], cand[ty, tx, k, 1]
            for dy in range(cy - radius, cy + radius + 1):
                for dx in range(cx - radius, cx + radius + 1):
                    done = False
                    for m in range(k):
                        if abs(dy - cand[ty, tx, m, 0]) <= radius and abs(dx - cand[ty, tx, m, 1]) <= radius:
                            done = True
                            break
                    if done:
                        continue
                    c = _cost(ref, alt, y0, y1, x0, x1, dy, dx, l2)
                    # Ties go to the smaller displacement, so a flat tile does not wander.
                    if c < best or (c == best and abs(dy) + abs(dx) < abs(by) + abs(bx)):
                        best, by, bx = c, dy, dx
        disp[ty, tx, 0] = by
        disp[ty, tx, 1] = bx
        cost[ty, tx] = best


LK_STEPS = 2  # Lucas-Kanade iterations for the sub-pixel part


@njit(parallel=True, cache=True, fastmath=True, nogil=True, error_model="numpy")
def _subpixel(ref, alt, tile, disp, sub):  # pragma: no cover - compiled
    """Lucas-Kanade from each tile's whole-pixel displacement (inverse compositional: the
    reference's gradient, the other frame interpolated bilinearly at the current estimate),
    ``LK_STEPS`` steps. Unlike a parabola through the distances it does not pull the estimate
    towards whole pixels. Kept when within a pixel (a true half-pixel shift may land either
    side of the whole one), else 0."""
    h, w = ref.shape
    ny, nx = disp.shape[0], disp.shape[1]
    for t in prange(ny * nx):
        ty, tx = t // nx, t % nx
        y0, x0 = max(ty * tile, 1), max(tx * tile, 1)
        y1, x1 = min(ty * tile + tile, h - 1), min(tx * tile + tile, w - 1)
        dy, dx = disp[ty, tx, 0], disp[ty, tx, 1]
        gyy = gxx = gxy = np.float32(0.0)
        for y in range(y0, y1):
            for x in range(x0, x1):
                gy = np.float32(0.5) * (ref[y + 1, x] - ref[y - 1, x])
                gx = np.float32(0.5) * (ref[y, x + 1] - ref[y, x - 1])
                gyy += gy * gy
                gxx += gx * gx
                gxy += gy * gx
        det = gyy * gxx - gxy * gxy
        if not det > np.float32(1e-6) * (gyy + gxx) * (gyy + gxx):
            continue  # no texture, or an edge in one direction only: leave it whole
        sy = sx = np.float32(0.0)
        ok = True
        for _ in range(LK_STEPS):
            iy, ix = int(np.floor(sy)), int(np.floor(sx))
            fy, fx = sy - iy, sx - ix
            by = bx = np.float32(0.0)
            for y in range(y0, y1):
                ya = min(max(y + dy + iy, 0), h - 2)
                for x in range(x0, x1):
                    xa = min(max(x + dx + ix, 0), w - 2)
                    v = ((1 - fy) * ((1 - fx) * alt[ya, xa] + fx * alt[ya, xa + 1])
                         + fy * ((1 - fx) * alt[ya + 1, xa] + fx * alt[ya + 1, xa + 1]))
                    e = v - ref[y, x]
                    by += np.float32(0.5) * (ref[y + 1, x] - ref[y - 1, x]) * e
                    bx += np.float32(0.5) * (ref[y, x + 1] - ref[y, x - 1]) * e
            # alt(p + d + s + u) ~ alt(p + d + s) + u . g = ref(p)  =>  u = -(G^T G)^-1 G^T e
            sy -= (gxx * by - gxy * bx) / det
            sx -= (gyy * bx - gxy * by) / det
            if abs(sy) > 1.0 or abs(sx) > 1.0:
                ok = False
                break
        if ok:
            sub[ty, tx, 0] = sy
            sub[ty, tx, 1] = sx


@njit(cache=True)
def _tile_sizes(h, w, tile, out):  # pragma: no cover - compiled
    for ty in range(out.shape[0]):
        for tx in range(out.shape[1]):
            out[ty, tx] = (min(ty * tile + tile, h) - ty * tile) * (min(tx * tile + tile, w) - tx * tile)
