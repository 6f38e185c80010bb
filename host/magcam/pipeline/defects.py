"""Stage 2: defective pixel correction on the CFA, each site against its own colour.

Each of the four 2x2-cell sites (R, G1, G2, B) is its own half-resolution plane, so a pixel's
neighbours in that plane are the eight nearest samples of the same colour (2 px apart on the
sensor). A pixel is

* *hot* when it is more than ``threshold + rel * median`` above the largest of those eight,
* *dead* when it is more than ``threshold + rel * median`` below the smallest of them,

unless the next pixels share the deviation, and is then replaced by the median of its 3x3
same-colour neighbourhood (robust to the outlier itself). ``threshold = floor + k *
noise_sigma(local median)``: the floor (default 2 % of full scale) keeps dark noise from
triggering, the noise term (from the frame's noise model, see ``noise.py``) keeps bright noise
from triggering, and ``rel`` (default 0.5) keeps bright fine texture, where single samples do
stand out, from being taken for defects.

A defect sits in one photosite; detail that the lens drew reaches the neighbouring photosites
too, whatever their colour. So a candidate stays as it is when one of its 8 immediate
neighbours deviates the same way from its own colour's local median by at least ``support``
(default 0.35) of the candidate's deviation, both relative to that median (colours differ in
scale). The ends and dots of small text and the aliased centre of a Siemens star pass this way.
Measured (2 MP ISP chart, 24 Kodak images with noise): the same-colour test alone took 138-198
chart pixels and 21 432 Kodak pixels of real detail for defects, with the check 3-7 and 1 908;
of 945 injected hot and dead pixels that the same-colour test finds, 25 (2.6 %) sit where a
neighbour's texture deviates enough to keep them (``tools/bench/defects.py``). Defects next to
each other (two of the same colour side by side, or of different colours touching) are not
found: list them as known defects. Known defects (from the descriptor's ``sensor.defects`` or an
option: absolute ``(x, y)`` sensor positions) are always replaced by that median.

Cost: one 3x3 median, dilate and erode per site plane, a dilate and an erode of the deviations
where there are candidates (OpenCV; order statistics, exact). Margin a tile needs: 4 px.
"""

from __future__ import annotations

import cv2
import numpy as np

MARGIN = 4  # the same-colour ring (2 px) of the 8 neighbours (1 px) whose deviations are compared
_RING = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.uint8)


def correct(cfa: np.ndarray, *, floor: float = 0.02, k: float = 8.0, rel: float = 0.5, support: float = 0.35,
            noise=None, known=None, y0: int = 0, x0: int = 0, detect: bool = True) -> int:
    """Correct ``cfa`` (float32, a region at even ``y0, x0`` of the frame) in place.

    ``noise`` is a callable level -> sigma (normalised units) or None; ``known`` an (N, 2) int
    array of absolute (x, y) positions; ``support``: the share of a candidate's relative
    deviation that one of its 8 neighbours must reach (same sign) for the candidate to count
    as detail. Every decision is taken on the input as given. Returns how many pixels were
    replaced. Regions under 6x6 px (site planes under 3x3 samples) are left alone.
    """
    h, w = cfa.shape
    if h < 6 or w < 6:
        return 0
    med = np.empty_like(cfa)
    sign = np.zeros(cfa.shape, np.int8)  # +1 hot candidate, -1 dead candidate
    for dy in range(2):
        for dx in range(2):
            plane = np.ascontiguousarray(cfa[dy::2, dx::2])
            m = cv2.medianBlur(plane, 3)
            med[dy::2, dx::2] = m
            if detect:
                level = np.maximum(m, np.float32(0))
                thr = np.float32(floor) + np.float32(rel) * level
                if noise is not None:
                    thr += np.float32(k) * noise(level)
                hi = cv2.dilate(plane, _RING, borderType=cv2.BORDER_REFLECT_101)
                lo = cv2.erode(plane, _RING, borderType=cv2.BORDER_REFLECT_101)
                s = np.zeros(plane.shape, np.int8)
                s[plane - hi > thr] = 1
                s[lo - plane > thr] = -1
                sign[dy::2, dx::2] = s
    bad = sign != 0
    if bad.any():
        # Detail, unlike a defect, reaches the next pixels (whatever their colour): compare
        # deviations from the own-colour median relative to it (colours differ in scale).
        dev = (cfa - med) / np.maximum(med, np.float32(floor))
        near_hi = cv2.dilate(dev, _RING, borderType=cv2.BORDER_REFLECT_101)
        near_lo = cv2.erode(dev, _RING, borderType=cv2.BORDER_REFLECT_101)
        share = np.float32(support) * dev
        bad &= ~(((sign > 0) & (near_hi >= share)) | ((sign < 0) & (near_lo <= share)))
    for (dy, dx), (ky, kx) in _known_in_region(known, y0, x0, h, w).items():
        bad[2 * ky + dy, 2 * kx + dx] = True
    cfa[bad] = med[bad]
    return int(np.count_nonzero(bad))


def _known_in_region(known, y0, x0, h, w) -> dict:
    """(dy, dx) site -> (rows, columns) in that site's plane of the known defects in the region."""
    sites = {(dy, dx): (np.empty(0, int), np.empty(0, int)) for dy in range(2) for dx in range(2)}
    if known is None or len(known) == 0:
        return sites
    k = np.asarray(known, dtype=np.int64).reshape(-1, 2)
    x, y = k[:, 0] - x0, k[:, 1] - y0
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    x, y = x[inside], y[inside]
    for dy in range(2):
        for dx in range(2):
            m = (y % 2 == dy) & (x % 2 == dx)
            sites[dy, dx] = (y[m] // 2, x[m] // 2)
    return sites
