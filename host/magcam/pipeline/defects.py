"""Stage 2: defective pixel correction on the CFA, each site against its own colour.

Each of the four 2x2-cell sites (R, G1, G2, B) is its own half-resolution plane, so a pixel's
neighbours in that plane are the eight nearest samples of the same colour (2 px apart on the
sensor). A pixel is

* *hot* when it is more than ``threshold + rel * median`` above the largest of those eight,
* *dead* when it is more than ``threshold + rel * median`` below the smallest of them,

and is then replaced by the median of its 3x3 same-colour neighbourhood (robust to the outlier
itself). ``threshold = floor + k * noise_sigma(local median)``: the floor (default 2 % of full
scale) keeps dark noise from triggering, the noise term (from the frame's noise model, see
``noise.py``) keeps bright noise from triggering. Real detail rarely passes: a 1-px-wide point
brighter than all eight same-colour neighbours by that much is what a hot pixel looks like, and
it is corrected too (as every camera's defect correction does); ``rel`` (default 0.5) keeps
bright fine texture, where single samples do stand out, from being taken for defects. Two hot pixels of the same
colour side by side are not detected: list them as known defects. Known defects (from the
descriptor's ``sensor.defects`` or an option: absolute ``(x, y)`` sensor positions) are always
replaced by that median.

Cost: one 3x3 median, dilate and erode per site plane (OpenCV; order statistics, exact).
Margin a tile needs: 2 px.
"""

from __future__ import annotations

import cv2
import numpy as np

MARGIN = 2
_RING = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.uint8)


def correct(cfa: np.ndarray, *, floor: float = 0.02, k: float = 8.0, rel: float = 0.5, noise=None, known=None,
            y0: int = 0, x0: int = 0, detect: bool = True) -> int:
    """Correct ``cfa`` (float32, a region at even ``y0, x0`` of the frame) in place.

    ``noise`` is a callable level -> sigma (normalised units) or None; ``known`` an (N, 2) int
    array of absolute (x, y) positions. Returns how many pixels were replaced.
    """
    h, w = cfa.shape
    fixed = 0
    known_by_site = _known_in_region(known, y0, x0, h, w)
    for dy in range(2):
        for dx in range(2):
            plane = np.ascontiguousarray(cfa[dy::2, dx::2])
            if plane.shape[0] < 3 or plane.shape[1] < 3:
                continue
            med = cv2.medianBlur(plane, 3)
            bad = np.zeros(plane.shape, bool)
            if detect:
                level = np.maximum(med, np.float32(0))
                thr = np.float32(floor) + np.float32(rel) * level
                if noise is not None:
                    thr += np.float32(k) * noise(level)
                hi = cv2.dilate(plane, _RING, borderType=cv2.BORDER_REFLECT_101)
                lo = cv2.erode(plane, _RING, borderType=cv2.BORDER_REFLECT_101)
                bad |= plane - hi > thr
                bad |= lo - plane > thr
            ky, kx = known_by_site[dy][dx]
            if len(ky):
                bad[ky, kx] = True
            n = int(np.count_nonzero(bad))
            if n:
                plane[bad] = med[bad]
                cfa[dy::2, dx::2] = plane
                fixed += n
    return fixed


def _known_in_region(known, y0, x0, h, w):
    sites = [[(np.empty(0, int), np.empty(0, int)) for _ in range(2)] for _ in range(2)]
    if known is None or len(known) == 0:
        return sites
    k = np.asarray(known, dtype=np.int64).reshape(-1, 2)
    x, y = k[:, 0] - x0, k[:, 1] - y0
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    x, y = x[inside], y[inside]
    for dy in range(2):
        for dx in range(2):
            m = (y % 2 == dy) & (x % 2 == dx)
            sites[dy][dx] = (y[m] // 2, x[m] // 2)
    return sites
