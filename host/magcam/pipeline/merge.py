"""Burst merge: a robust, noise-aware temporal average of aligned Bayer frames, per CFA plane.

HDR+ (Hasinoff et al. 2016, section 5) merges in the frequency domain, a pairwise Wiener
filter per tile. This is its spatial-domain counterpart, several times cheaper on two cores:
every frame is moved by its tile's displacement (whole CFA cells plus the sub-cell part,
bilinear, so each plane stays one colour) and each sample is weighted by how well its
neighbourhood agrees with the reference:

    M   = mean over the 3x3 same-plane neighbourhood of (alt - ref)^2
    s2  = s^2(ref) (1 + sum of the squared bilinear weights),  s^2(level) = a level + b
    w   = c s2 / (M + c s2)
    out = (ref + sum_k w_k alt_k) / (1 + sum_k w_k)

``s2`` is what ``M`` would be from noise alone (the reference's sample plus the interpolated
one, whose variance the bilinear weights shrink). Where a frame agrees with the reference to
within the noise, ``w`` stays high and the noise averages down; where it does not (a moving
object, an occlusion, a misaligned tile, detail lost to interpolation), ``M`` outgrows the
noise, ``w`` falls towards 0 and that pixel keeps the reference: no ghosts. The squared
difference (not the difference of means) catches fine detail that does not match. ``c``
(``STRENGTH``) trades noise reduction against the blur of residual misalignment. The noise
model is measured on the reference (``magcam.pipeline.noise``), in normalised raw units.

Usage::

    from magcam.pipeline import merge
    acc = merge.Accumulator(ref_planes, noise=(a, b))     # planes: (4, H/2, W/2) float32
    acc.add(alt_planes, alignment.cells, alignment.tile)  # per frame, after align.align
    merged = acc.result()                                 # (4, H/2, W/2) float32
"""

from __future__ import annotations

import numpy as np

from magcam.jit import njit, prange

STRENGTH = 1.0  # c above; tuned on tools/bench/merge.py (0.25..4 tried: 1 gives the best PSNR)


class Accumulator:
    """Running weighted sum of aligned frames, starting with the reference (weight 1)."""

    def __init__(self, ref: np.ndarray, noise: tuple[float, float], strength: float = STRENGTH):
        if ref.ndim != 3 or ref.dtype != np.float32:
            raise ValueError("reference planes must be a float32 (planes, H, W) array")
        self.ref = ref
        self.num = ref.copy()
        self.den = np.ones(ref.shape, np.float32)
        a, b = float(noise[0]), float(noise[1])
        if not (np.isfinite(a) and np.isfinite(b) and a >= 0 and b >= 0):
            raise ValueError(f"noise model needs finite a, b >= 0, got {noise!r}")
        self.a, self.b = a, max(b, 1e-12)  # never a zero variance: every weight stays defined
        self.strength = float(strength)
        self.frames = 1

    def add(self, alt: np.ndarray, cells: np.ndarray, tile: int, sub: np.ndarray | None = None) -> float:
        """Add one frame (planes like the reference) moved by ``cells`` (+ ``sub``, the sub-cell
        part, bilinear) per tile; returns the mean weight it got (1 = fully merged, 0 = fully
        rejected)."""
        if alt.shape != self.ref.shape:
            raise ValueError(f"frame planes {alt.shape} differ from the reference's {self.ref.shape}")
        if sub is None:
            sub = np.zeros(cells.shape, np.float32)
        wsum = _accumulate(self.ref, alt, np.ascontiguousarray(cells, np.int32),
                           np.ascontiguousarray(sub, np.float32), tile, np.float32(self.a),
                           np.float32(self.b), np.float32(self.strength), self.num, self.den)
        self.frames += 1
        return float(wsum) / self.ref.size

    def result(self) -> np.ndarray:
        """The merged planes, float32; the accumulators are consumed."""
        np.divide(self.num, self.den, out=self.num)
        return self.num


def temporal_noise(ref: np.ndarray, alt: np.ndarray, cells: np.ndarray, tile: int,
                   sub: np.ndarray | None = None) -> tuple[float, float]:
    """Noise model ``sigma^2 = a level + b`` measured between the reference and one aligned
    frame: the variance of their difference in blocks of 4x4 samples of each plane, the 10th
    percentile per brightness bin (the blocks where the frames agree but for noise), fitted as
    ``magcam.pipeline.noise`` does. Unlike the green-green difference within one frame, this
    sees no scene detail wherever the alignment is right, so detailed scenes do not inflate it."""
    from magcam.pipeline.noise import NoiseSampler

    if sub is None:
        sub = np.zeros(cells.shape, np.float32)
    nb = (tile + 3) // 4
    ny, nx = cells.shape[0], cells.shape[1]
    levels = np.full((ref.shape[0], ny * nb, nx * nb), np.nan, np.float32)
    variances = np.full(levels.shape, np.nan, np.float32)
    _block_stats(ref, alt, np.ascontiguousarray(cells, np.int32), np.ascontiguousarray(sub, np.float32), tile,
                 levels, variances)
    ok = np.isfinite(levels) & (levels < 0.9)
    sampler = NoiseSampler("RGGB")  # the pattern only matters to its add(); the stats go in directly
    sampler.levels.append(levels[ok])
    sampler.vars.append(variances[ok])
    return sampler.model()


@njit(parallel=True, cache=True, fastmath=True, nogil=True, error_model="numpy")
def _block_stats(ref, alt, cells, sub, tile, levels, variances):  # pragma: no cover - compiled
    """Per 4x4 block of each plane: the mean reference level and the variance of (alt - ref),
    scaled to what the difference of two unfiltered samples would have (2 sigma^2)."""
    nplanes, h, w = ref.shape
    ny, nx = cells.shape[0], cells.shape[1]
    nb = (tile + 3) // 4
    one = np.float32(1.0)
    for t in prange(ny * nx):
        ty, tx = t // nx, t % nx
        fy, fx = sub[ty, tx, 0], sub[ty, tx, 1]
        iy, ix = int(np.floor(fy)), int(np.floor(fx))
        wy, wx = np.float32(fy - iy), np.float32(fx - ix)
        vy, vx = cells[ty, tx, 0] + iy, cells[ty, tx, 1] + ix
        w00, w01 = (one - wy) * (one - wx), (one - wy) * wx
        w10, w11 = wy * (one - wx), wy * wx
        scale = np.float32(2.0) / (one + w00 * w00 + w01 * w01 + w10 * w10 + w11 * w11)
        for p in range(nplanes):
            for by in range(nb):
                for bx in range(nb):
                    y0, x0 = ty * tile + 4 * by, tx * tile + 4 * bx
                    if y0 + 4 > h or x0 + 4 > w:
                        continue
                    s = np.float32(0.0)
                    s2 = np.float32(0.0)
                    lv = np.float32(0.0)
                    for y in range(y0, y0 + 4):
                        ya = min(max(y + vy, 0), h - 2)
                        for x in range(x0, x0 + 4):
                            xa = min(max(x + vx, 0), w - 2)
                            v = (w00 * alt[p, ya, xa] + w01 * alt[p, ya, xa + 1] + w10 * alt[p, ya + 1, xa]
                                 + w11 * alt[p, ya + 1, xa + 1])
                            d = v - ref[p, y, x]
                            s += d
                            s2 += d * d
                            lv += ref[p, y, x]
                    variances[p, ty * nb + by, tx * nb + bx] = (s2 - s * s / 16) / 15 * scale
                    levels[p, ty * nb + by, tx * nb + bx] = lv / 16


@njit(cache=True, fastmath=True, nogil=True)
def _cubic(f, out):  # pragma: no cover - compiled
    """Catmull-Rom weights of the 4 samples at -1, 0, 1, 2 for a position f in [0, 1)."""
    f2 = f * f
    f3 = f2 * f
    out[0] = np.float32(0.5) * (-f3 + 2 * f2 - f)
    out[1] = np.float32(0.5) * (3 * f3 - 5 * f2 + 2)
    out[2] = np.float32(0.5) * (-3 * f3 + 4 * f2 + f)
    out[3] = np.float32(0.5) * (f3 - f2)


@njit(parallel=True, cache=True, fastmath=True, nogil=True, error_model="numpy")
def _accumulate(ref, alt, cells, sub, tile, a, b, c, num, den):  # pragma: no cover - compiled
    nplanes, h, w = ref.shape
    ny, nx = cells.shape[0], cells.shape[1]
    ninth = np.float32(1.0 / 9.0)
    total = 0.0
    for t in prange(ny * nx):
        ty, tx = t // nx, t % nx
        y0, x0 = ty * tile, tx * tile
        th, tw = min(y0 + tile, h) - y0, min(x0 + tile, w) - x0
        # Whole-cell base and bicubic weights of the tile's sub-cell displacement.
        fy, fx = sub[ty, tx, 0], sub[ty, tx, 1]
        iy, ix = int(np.floor(fy)), int(np.floor(fx))
        ky = np.empty(4, np.float32)
        kx = np.empty(4, np.float32)
        _cubic(np.float32(fy - iy), ky)
        _cubic(np.float32(fx - ix), kx)
        vy, vx = cells[ty, tx, 0] + iy, cells[ty, tx, 1] + ix
        # Noise variance of (alt - ref) at a pixel: the reference's sample plus the
        # interpolated one, whose variance the interpolation weights scale; times c.
        sy = ky[0] * ky[0] + ky[1] * ky[1] + ky[2] * ky[2] + ky[3] * ky[3]
        sx = kx[0] * kx[0] + kx[1] * kx[1] + kx[2] * kx[2] + kx[3] * kx[3]
        kvar = (np.float32(1.0) + sy * sx) * c
        tmp = np.empty((th + 5, tw + 2), np.float32)
        diff = np.empty((th + 2, tw + 2), np.float32)
        rows = np.empty((th + 2, tw), np.float32)
        wt = np.float32(0.0)
        inside = (y0 >= 1 and y0 + th + 1 <= h and x0 >= 1 and x0 + tw + 1 <= w and y0 - 2 + vy >= 0
                  and y0 + th + 3 + vy <= h and x0 - 2 + vx >= 0 and x0 + tw + 3 + vx <= w)
        for p in range(nplanes):
            refp, altp, nump, denp = ref[p], alt[p], num[p], den[p]
            # alt (moved, interpolated: rows of 4 taps across, then 4 down) - ref over the
            # tile plus a 1-pixel border; outside the frame the nearest edge pixel repeats.
            for i in range(th + 5):
                ya = min(max(y0 - 2 + i + vy, 0), h - 1)
                arow, trow = altp[ya], tmp[i]
                if inside:
                    for j in range(tw + 2):
                        xa = x0 - 2 + j + vx
                        trow[j] = kx[0] * arow[xa] + kx[1] * arow[xa + 1] + kx[2] * arow[xa + 2] + kx[3] * arow[xa + 3]
                else:
                    for j in range(tw + 2):
                        xb = x0 - 1 + j
                        xb = min(max(xb, 0), w - 1) + vx
                        trow[j] = (kx[0] * arow[min(max(xb - 1, 0), w - 1)] + kx[1] * arow[min(max(xb, 0), w - 1)]
                                   + kx[2] * arow[min(max(xb + 1, 0), w - 1)]
                                   + kx[3] * arow[min(max(xb + 2, 0), w - 1)])
            for i in range(th + 2):
                y = min(max(y0 + i - 1, 0), h - 1)
                rr, drow = refp[y], diff[i]
                # Row k of tmp holds alt row y0 - 2 + vy + k; this row needs alt rows
                # y + vy - 1 .. y + vy + 2 (y clamped to the frame like the reference's).
                k = y - y0 + 1
                t0, t1, t2, t3 = tmp[k], tmp[k + 1], tmp[k + 2], tmp[k + 3]
                for j in range(tw + 2):
                    x = min(max(x0 + j - 1, 0), w - 1)
                    jj = x - x0 + 1
                    drow[j] = ky[0] * t0[jj] + ky[1] * t1[jj] + ky[2] * t2[jj] + ky[3] * t3[jj] - rr[x]
            for i in range(th + 2):
                drow, rrow = diff[i], rows[i]
                for j in range(tw):
                    rrow[j] = drow[j] * drow[j] + drow[j + 1] * drow[j + 1] + drow[j + 2] * drow[j + 2]
            for i in range(th):
                y = y0 + i
                r0, r1, r2, dc = rows[i], rows[i + 1], rows[i + 2], diff[i + 1]
                rr, nr, dr = refp[y], nump[y], denp[y]
                for j in range(tw):
                    x = x0 + j
                    d2 = (r0[j] + r1[j] + r2[j]) * ninth
                    r = rr[x]
                    v = (a * max(r, np.float32(0.0)) + b) * kvar
                    wgt = v / (d2 + v)
                    nr[x] += wgt * (r + dc[j + 1])
                    dr[x] += wgt
                    wt += wgt
        total += wt
    return total
