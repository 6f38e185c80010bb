"""Linear demosaicing kernels (numba): bilinear and Malvar-He-Cutler 2004.

Both take a mosaic already padded by ``pad`` pixels on every side (reflect-101, an even ``pad``
so the CFA phase is kept) and write the unpadded (H, W, 3) result. ``oy, ox`` is the position
of the red site in the 2x2 cell (RGGB: 0, 0; GRBG: 0, 1; GBRG: 1, 0; BGGR: 1, 1); blue sits at
the diagonally opposite position. Every output pixel depends only on the mosaic within the
kernel radius (1 for bilinear, 2 for Malvar), so tiles overlapping by that much reproduce the
whole-image result exactly.
"""

from __future__ import annotations

from magcam.jit import njit, prange

BILINEAR_RADIUS = 1
MALVAR_RADIUS = 2


@njit(parallel=True, cache=True)
def bilinear_kernel(xp, pad, oy, ox, out):  # pragma: no cover - compiled
    h, w = out.shape[0], out.shape[1]
    for y in prange(h):
        py = y + pad
        ry = (py + oy) & 1
        for x in range(w):
            px = x + pad
            rx = (px + ox) & 1
            c = xp[py, px]
            cross = 0.25 * (xp[py - 1, px] + xp[py + 1, px] + xp[py, px - 1] + xp[py, px + 1])
            diag = 0.25 * (xp[py - 1, px - 1] + xp[py - 1, px + 1] + xp[py + 1, px - 1] + xp[py + 1, px + 1])
            hor = 0.5 * (xp[py, px - 1] + xp[py, px + 1])
            ver = 0.5 * (xp[py - 1, px] + xp[py + 1, px])
            if ry == 0 and rx == 0:  # red site
                out[y, x, 0] = c
                out[y, x, 1] = cross
                out[y, x, 2] = diag
            elif ry == 1 and rx == 1:  # blue site
                out[y, x, 0] = diag
                out[y, x, 1] = cross
                out[y, x, 2] = c
            elif ry == 0:  # green on a red row
                out[y, x, 0] = hor
                out[y, x, 1] = c
                out[y, x, 2] = ver
            else:  # green on a blue row
                out[y, x, 0] = ver
                out[y, x, 1] = c
                out[y, x, 2] = hor


@njit(parallel=True, cache=True)
def malvar_kernel(xp, pad, oy, ox, out):  # pragma: no cover - compiled
    """Malvar, He & Cutler (ICASSP 2004): bilinear plus a scaled Laplacian of the known colour."""
    h, w = out.shape[0], out.shape[1]
    for y in prange(h):
        py = y + pad
        ry = (py + oy) & 1
        for x in range(w):
            px = x + pad
            rx = (px + ox) & 1
            c = xp[py, px]
            n1 = xp[py - 1, px] + xp[py + 1, px]
            e1 = xp[py, px - 1] + xp[py, px + 1]
            n2 = xp[py - 2, px] + xp[py + 2, px]
            e2 = xp[py, px - 2] + xp[py, px + 2]
            d1 = xp[py - 1, px - 1] + xp[py - 1, px + 1] + xp[py + 1, px - 1] + xp[py + 1, px + 1]
            if ry == rx:  # red or blue site: G, and the opposite colour on the diagonals
                g = (4.0 * c + 2.0 * (n1 + e1) - (n2 + e2)) * 0.125
                o = (6.0 * c + 2.0 * d1 - 1.5 * (n2 + e2)) * 0.125
                if ry == 0:
                    out[y, x, 0] = c
                    out[y, x, 2] = o
                else:
                    out[y, x, 0] = o
                    out[y, x, 2] = c
                out[y, x, 1] = g
            else:  # green site: the row colour from left/right, the column colour from above/below
                row_c = (5.0 * c + 4.0 * e1 - d1 - e2 + 0.5 * n2) * 0.125
                col_c = (5.0 * c + 4.0 * n1 - d1 - n2 + 0.5 * e2) * 0.125
                out[y, x, 1] = c
                if ry == 0:  # red row
                    out[y, x, 0] = row_c
                    out[y, x, 2] = col_c
                else:
                    out[y, x, 0] = col_c
                    out[y, x, 2] = row_c
