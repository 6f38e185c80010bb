"""The cheap per-pixel stages fused into a few numba passes: the fast tile path of ``magcam.process``.

Usage::

    from magcam.pipeline import fused
    norm = np.empty((y1 - y0, x1 - x0), np.float32)
    fused.normalize(frame_u16, y0, y1, x0, x1, black, scale, dscale, delta_v, delta_h, norm)
    fused.prepare_cfa(norm, 0, h, 0, w, detect, params, known, gains, site_mult, cfa_clip, xp, oy, ox)
    # ... demosaic xp -> rgb ...
    fused.colour(rgb, rgb_clip, matrix, use_matrix, half_cr, half_cb)       # in place, + chroma
    fused.encode(rgb, cr, cb, strength, cnoise, luma, lut, lut_scale, top, ye)  # in place, encoded
    fused.sharpen_quantize(rgb, ye, taps, amount, top_code, y0, x0, y1, x1, out, oy, ox)  # -> uint8

Each function does what a chain of stage modules does, in one pass over the tile and without
whole-tile temporaries, with the stage modules' float32 arithmetic in the same order:

=====================  =====================================================================
``normalize``          ``black.normalize`` (per-site black, white -> 1, row/column deltas)
``prepare_cfa``        ``defects.correct`` + ``shading`` gains + ``whitebalance.apply`` +
                       ``highlights`` clip on the CFA, written into the demosaic's padded input
``colour``             RGB clip + the 3x3 colour matrix (elementwise: r, g, b products summed
                       in that order), and the 2x2-averaged chroma (R - G, B - G) that
                       ``denoise`` starts from
``encode``             the rest of chroma denoise (bilinear upsampling, mixing, back to RGB),
                       luma replaced by a denoised one if given, ``tone.Encoder`` (the LUT)
``sharpen_quantize``   ``sharpen.sharpen`` (unsharp mask on encoded luma) + ``tone.quantize``
=====================  =====================================================================

tests/test_fused.py checks the tile path built on them against the plain chain of stage
modules, bit for bit. Every output depends only on its
neighbourhood, never on where it sits in the array, so tiles stay bit-identical to the whole
frame. All kernels release the GIL (``nogil``): the tile threads of ``magcam.process`` run them
on every core. Array edges are handled as the stage modules handle them (OpenCV's median:
replicate; dilate/erode and the separable filters: reflect-101; the upsampling: edge).
"""

from __future__ import annotations

import numpy as np

from magcam.jit import njit, uintp

_F0, _F025, _F05, _F075, _F1 = (np.float32(v) for v in (0.0, 0.25, 0.5, 0.75, 1.0))


# ---- CFA ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def normalize(frame, y0, y1, x0, x1, black, scale, dscale, delta_v, delta_h, out):  # pragma: no cover
    """``(v - black[site]) * scale[site]``, less ``delta * dscale[site]`` for the per-row
    (``delta_v``, indexed by frame row) and per-column (``delta_h``) black offsets; empty
    delta arrays mean none. Reads the region [y0:y1, x0:x1] (even top-left) of the uint16
    ``frame`` into ``out`` (float32, the region's shape)."""
    src = frame[y0:y1, x0:x1]
    h, w = src.shape
    use_v = delta_v.shape[0] > 0
    use_h = delta_h.shape[0] > 0
    for y in range(h):
        sy = y & 1
        s = src[y]
        o = out[y]
        b0, b1 = black[sy, 0], black[sy, 1]
        s0, s1 = scale[sy, 0], scale[sy, 1]
        for x in range(0, w - 1, 2):
            o[uintp(x)] = (np.float32(s[uintp(x)]) - b0) * s0
            o[uintp(x + 1)] = (np.float32(s[uintp(x + 1)]) - b1) * s1
        if w & 1:
            o[w - 1] = (np.float32(s[w - 1]) - b0) * s0
        if use_v:
            dv = delta_v[y0 + y]
            d0, d1 = dv * dscale[sy, 0], dv * dscale[sy, 1]
            for x in range(w):
                o[x] -= d1 if x & 1 else d0
        if use_h:
            d0, d1 = dscale[sy, 0], dscale[sy, 1]
            for x in range(w):
                o[x] -= delta_h[x0 + x] * (d1 if x & 1 else d0)


@njit(inline="always")
def _sort2(a, b):  # pragma: no cover
    return min(a, b), max(a, b)


@njit(inline="always")
def _median9(p0, p1, p2, p3, p4, p5, p6, p7, p8):  # pragma: no cover
    # Paeth's 19-exchange median network (as in Devillard's opt_med9).
    p1, p2 = _sort2(p1, p2)
    p4, p5 = _sort2(p4, p5)
    p7, p8 = _sort2(p7, p8)
    p0, p1 = _sort2(p0, p1)
    p3, p4 = _sort2(p3, p4)
    p6, p7 = _sort2(p6, p7)
    p1, p2 = _sort2(p1, p2)
    p4, p5 = _sort2(p4, p5)
    p7, p8 = _sort2(p7, p8)
    p3 = max(p0, p3)
    p5 = min(p5, p8)
    p4, p7 = _sort2(p4, p7)
    p6 = max(p3, p6)
    p4 = max(p1, p4)
    p2 = min(p2, p5)
    p4 = min(p4, p7)
    p4, p2 = _sort2(p4, p2)
    p4 = max(p6, p4)
    return min(p4, p2)


@njit(inline="always")
def _near(i, step, n, reflect):  # pragma: no cover
    """Index ``i + step`` of a same-colour plane laid out every 2 px in a length-``n`` axis,
    off the end replicated (``reflect`` False) or mirrored without repeating the edge."""
    j = i + step
    if 0 <= j < n:
        return j
    if reflect:
        return i - step
    return i


@njit(inline="always")
def _max8(a, b, c, d, e, f, g, h):  # pragma: no cover - compiled
    return max(max(max(a, b), max(c, d)), max(max(e, f), max(g, h)))


@njit(inline="always")
def _min8(a, b, c, d, e, f, g, h):  # pragma: no cover - compiled
    return min(min(min(a, b), min(c, d)), min(min(e, f), min(g, h)))


@njit(inline="always")
def _is_defect(v, med, hi, lo, floor, rel, k, na, nb, ns, use_noise):  # pragma: no cover
    level = max(med, _F0)
    thr = floor + rel * level
    if use_noise:
        thr += k * (np.sqrt(level * na + nb) * ns)
    return (v - hi > thr) or (lo - v > thr)


@njit(inline="always")
def _reflect101(i, n):  # pragma: no cover
    """``i`` at most 1 outside [0, n), mirrored without repeating the edge."""
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


@njit(inline="always")
def _site_median(norm, y, x, h, w):  # pragma: no cover
    """The 3x3 same-colour median at (y, x), the site plane's edge replicated (OpenCV's)."""
    sy, sx = y & 1, x & 1
    ph, pw = (h - sy + 1) // 2, (w - sx + 1) // 2
    yu = 2 * _near(y >> 1, -1, ph, False) + sy
    yd = 2 * _near(y >> 1, 1, ph, False) + sy
    xl = 2 * _near(x >> 1, -1, pw, False) + sx
    xr = 2 * _near(x >> 1, 1, pw, False) + sx
    return _median9(norm[yu, xl], norm[yu, x], norm[yu, xr], norm[y, xl], norm[y, x], norm[y, xr],
                    norm[yd, xl], norm[yd, x], norm[yd, xr])


@njit(inline="always")
def _relative_deviation(v, med, floor):  # pragma: no cover
    return (v - med) / max(med, floor)


@njit
def _is_detail(norm, y, x, h, w, floor, support):  # pragma: no cover
    """``defects.correct``'s check of a candidate: does one of the 8 neighbours (reflect-101 at
    the region's edges) deviate the same way by ``support`` of its relative deviation?"""
    share = support * _relative_deviation(norm[y, x], _site_median(norm, y, x, h, w), floor)
    for dy in range(-1, 2):
        for dx in range(-1, 2):
            if dy == 0 and dx == 0:
                continue
            ny, nx = _reflect101(y + dy, h), _reflect101(x + dx, w)
            d = _relative_deviation(norm[ny, nx], _site_median(norm, ny, nx, h, w), floor)
            if (share > _F0 and d >= share) or (share < _F0 and d <= share):
                return True
    return False


@njit(cache=True, nogil=True)
def prepare_cfa(norm, wy0, wy1, wx0, wx1, detect, params, known, gains, site_mult, cfa_clip, out, oy, ox):  # pragma: no cover
    """Defects, lens shading, white balance and clipping of the window [wy0:wy1, wx0:wx1] of a
    normalised CFA region (even top-left), into ``out[oy:, ox:]``. Defects are judged with the
    region's edges as the array edges (as ``defects.correct`` on the region does).

    ``params``: float32 (floor, rel, k, noise_a, noise_b, noise_scale, use_noise, support) as
    in ``defects.correct``; ``detect``: find defects; ``known``: uint8 mask of known defects (the
    region's shape, or empty); ``gains``: per-pixel shading gains (the region's shape, or empty);
    ``site_mult``, ``cfa_clip``: (2, 2) float32 (clip at +inf: none).
    """
    h, w = norm.shape
    floor, rel, k = params[0], params[1], params[2]
    na, nb, ns = params[3], params[4], params[5]
    use_noise = params[6] > 0
    support = params[7]
    use_known = known.shape[0] > 0
    use_gains = gains.shape[0] > 0
    # Every site plane needs 3x3 samples for the median (defects.correct leaves smaller regions alone).
    fix = (detect or use_known) and h >= 6 and w >= 6
    # Columns whose same-colour neighbours (x +- 2) are inside the region: the fast loop.
    xa, xb = max(wx0, 2), min(wx1, w - 2)
    for y in range(wy0, wy1):
        sy = y & 1
        o = out[oy + y - wy0]
        r_c = norm[y]
        if fix:
            ph = (h - sy + 1) // 2  # rows of this site's plane
            py = y >> 1
            r_u = norm[2 * _near(py, -1, ph, False) + sy]  # the median replicates the edge,
            r_d = norm[2 * _near(py, 1, ph, False) + sy]
            q_u = norm[2 * _near(py, -1, ph, True) + sy]  # dilate/erode mirror it
            q_d = norm[2 * _near(py, 1, ph, True) + sy]
            for x in range(xa, xb):
                xu, xl, xr = uintp(x), uintp(x - 2), uintp(x + 2)
                v = r_c[xu]
                med = _median9(r_u[xl], r_u[xu], r_u[xr], r_c[xl], v, r_c[xr], r_d[xl], r_d[xu], r_d[xr])
                bad = False
                if detect:
                    hi = _max8(q_u[xl], q_u[xu], q_u[xr], r_c[xl], r_c[xr], q_d[xl], q_d[xu], q_d[xr])
                    lo = _min8(q_u[xl], q_u[xu], q_u[xr], r_c[xl], r_c[xr], q_d[xl], q_d[xu], q_d[xr])
                    bad = _is_defect(v, med, hi, lo, floor, rel, k, na, nb, ns, use_noise)
                if use_known:
                    bad = bad or known[y, xu] != 0
                o[uintp(ox + x - wx0)] = med if bad else v
            for x in range(wx0, wx1):  # the columns at the region's edges
                if xa <= x < xb:
                    continue
                sx = x & 1
                pw = (w - sx + 1) // 2
                px = x >> 1
                xl = 2 * _near(px, -1, pw, False) + sx
                xr = 2 * _near(px, 1, pw, False) + sx
                v = r_c[x]
                med = _median9(r_u[xl], r_u[x], r_u[xr], r_c[xl], v, r_c[xr], r_d[xl], r_d[x], r_d[xr])
                bad = False
                if detect:
                    xl = 2 * _near(px, -1, pw, True) + sx
                    xr = 2 * _near(px, 1, pw, True) + sx
                    hi = _max8(q_u[xl], q_u[x], q_u[xr], r_c[xl], r_c[xr], q_d[xl], q_d[x], q_d[xr])
                    lo = _min8(q_u[xl], q_u[x], q_u[xr], r_c[xl], r_c[xr], q_d[xl], q_d[x], q_d[xr])
                    bad = _is_defect(v, med, hi, lo, floor, rel, k, na, nb, ns, use_noise)
                if use_known:
                    bad = bad or known[y, x] != 0
                o[ox + x - wx0] = med if bad else v
            if detect:  # candidates the same-colour test replaced: kept if they are detail
                for x in range(wx0, wx1):
                    i = uintp(ox + x - wx0)
                    if o[i] != r_c[uintp(x)] and not (use_known and known[y, x] != 0):
                        if _is_detail(norm, y, x, h, w, floor, support):
                            o[i] = r_c[uintp(x)]
        else:
            for x in range(wx0, wx1):
                o[uintp(ox + x - wx0)] = r_c[uintp(x)]
        m0, m1 = site_mult[sy, 0], site_mult[sy, 1]
        c0, c1 = cfa_clip[sy, 0], cfa_clip[sy, 1]
        for x in range(wx0, wx1):
            i = uintp(ox + x - wx0)
            v = o[i]
            if use_gains:
                v *= gains[y, uintp(x)]
            odd = (x & 1) == 1
            v *= m1 if odd else m0
            o[i] = min(v, c1 if odd else c0)


# ---- RGB ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def colour(rgb, rgb_clip, m, use_matrix, half_cr, half_cb):  # pragma: no cover
    """In place: clip each channel at ``rgb_clip`` (+inf: none), then the 3x3 ``m`` (when
    ``use_matrix``). With ``half_cr`` non-empty, also the 2x2 block means of R - G and B - G
    (``half_cr``, ``half_cb``: (h // 2, w // 2)), as ``denoise`` computes them."""
    h, w, _ = rgb.shape
    c0, c1, c2 = rgb_clip[0], rgb_clip[1], rgb_clip[2]
    for y in range(h):
        row = rgb[y]
        for x in range(w):
            r = min(row[x, 0], c0)
            g = min(row[x, 1], c1)
            b = min(row[x, 2], c2)
            if use_matrix:
                nr = r * m[0, 0]
                nr += g * m[0, 1]
                nr += b * m[0, 2]
                ng = r * m[1, 0]
                ng += g * m[1, 1]
                ng += b * m[1, 2]
                nb = r * m[2, 0]
                nb += g * m[2, 1]
                nb += b * m[2, 2]
                r, g, b = nr, ng, nb
            row[x, 0] = r
            row[x, 1] = g
            row[x, 2] = b
    if half_cr.shape[0] == 0:
        return
    for i in range(h // 2):
        a, b_ = rgb[2 * i], rgb[2 * i + 1]
        for j in range(w // 2):
            x = 2 * j
            cr = ((a[x, 0] - a[x, 1]) + (a[x + 1, 0] - a[x + 1, 1])) + ((b_[x, 0] - b_[x, 1]) + (b_[x + 1, 0] - b_[x + 1, 1]))
            cb = ((a[x, 2] - a[x, 1]) + (a[x + 1, 2] - a[x + 1, 1])) + ((b_[x, 2] - b_[x, 1]) + (b_[x + 1, 2] - b_[x + 1, 1]))
            half_cr[i, j] = cr * _F025
            half_cb[i, j] = cb * _F025


@njit(inline="always")
def _mirror(i, n, reflect):  # pragma: no cover
    """Index ``i`` (at most one length outside [0, n)) reflect-101 into range, or edge-clamped."""
    if i < 0:
        return -i if reflect else 0
    if i >= n:
        return 2 * (n - 1) - i if reflect else n - 1
    return i


@njit(cache=True, nogil=True)
def _rows_pass(src, taps, dst):  # pragma: no cover
    """``filters.convolve_axis(src, taps, 0)``: pairs of rows, nearest first, per pixel."""
    h, w = src.shape
    r = taps.shape[0] // 2
    reflect = h > r
    for y in range(h):
        d = dst[y]
        c = src[y]
        k0 = taps[r]
        for x in range(w):
            d[uintp(x)] = c[uintp(x)] * k0
        for t in range(r):
            a = src[_mirror(y - 1 - t, h, reflect)]
            b = src[_mirror(y + 1 + t, h, reflect)]
            kt = taps[r + 1 + t]
            for x in range(w):
                d[uintp(x)] += (a[uintp(x)] + b[uintp(x)]) * kt


@njit(inline="always")
def _cols_row(c, taps, r, w, reflect, d):  # pragma: no cover
    """One row of ``filters.convolve_axis(..., 1)``: the same operations in the same order."""
    k0 = taps[r]
    for x in range(w):
        d[uintp(x)] = c[uintp(x)] * k0
    for t in range(r):
        kt = taps[r + 1 + t]
        s = 1 + t
        for x in range(s, w - s):
            d[uintp(x)] += (c[uintp(x - s)] + c[uintp(x + s)]) * kt
        for x in range(0, min(s, w)):
            d[x] += (c[_mirror(x - s, w, reflect)] + c[_mirror(x + s, w, reflect)]) * kt
        for x in range(max(w - s, s), w):
            d[x] += (c[_mirror(x - s, w, reflect)] + c[_mirror(x + s, w, reflect)]) * kt


@njit(cache=True, nogil=True)
def _cols_pass(src, taps, dst):  # pragma: no cover
    h, w = src.shape
    r = taps.shape[0] // 2
    for y in range(h):
        _cols_row(src[y], taps, r, w, w > r, dst[y])


def separable(img: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """``filters.separable`` (rows, then columns), for a 2-D float32 image."""
    tmp = np.empty_like(img)
    _rows_pass(img, taps, tmp)
    out = np.empty_like(img)
    _cols_pass(tmp, taps, out)
    return out


@njit(inline="always")
def _upsample_row(half, y, vert, row):  # pragma: no cover
    """Row ``y`` of ``denoise._upsample2(half)`` (bilinear, sample centres at 2i + 0.5; the
    vertical pass first, then the horizontal, each 3/4 own + 1/4 neighbour, edge-clamped)."""
    hh, hw = half.shape
    i = y >> 1
    if y & 1:
        i2 = i + 1 if i + 1 < hh else hh - 1
    else:
        i2 = i - 1 if i > 0 else 0
    a, b = half[i], half[i2]
    for j in range(hw):
        vert[uintp(j)] = a[uintp(j)] * _F075 + b[uintp(j)] * _F025
    for j in range(hw):
        jm = j - 1 if j > 0 else 0
        jp = j + 1 if j + 1 < hw else hw - 1
        v = vert[uintp(j)] * _F075
        row[uintp(2 * j)] = v + vert[uintp(jm)] * _F025
        row[uintp(2 * j + 1)] = v + vert[uintp(jp)] * _F025


@njit(inline="always")
def _lut(v, lut, n, top, lut_scale):  # pragma: no cover
    i = np.int32(min(max(v, _F0), top) * lut_scale + _F05)
    return lut[min(max(i, 0), n - 1)]


@njit(inline="always")
def _chroma_within(cr, cb, fr, fb, yy, strength, na, nb, ns_r, ns_b):  # pragma: no cover
    """``denoise._chroma`` with a threshold, for one pixel: ``c - strength * clip(c - f, -t, t)``,
    ``t`` the noise model's sigma at the pixel's luma times the channel's scale."""
    sq = np.sqrt(max(yy, _F0) * na + nb)
    tr = sq * ns_r
    tb = sq * ns_b
    dr = min(max(cr - fr, -tr), tr)
    db = min(max(cb - fb, -tb), tb)
    return cr - dr * strength, cb - db * strength


@njit(cache=True, nogil=True)
def encode(rgb, cr_half, cb_half, strength, cnoise, luma, lut, lut_scale, top, ye):  # pragma: no cover
    """In place: chroma denoise's second half, luma, the tone encoding; and ``ye``, the encoded
    luma (R + 2G + B) / 4 that sharpening works on (skipped when ``ye`` is empty).

    ``cr_half``/``cb_half``: the smoothed half-resolution chroma (empty: no chroma denoise);
    the part of its difference from the pixel's own chroma that lies within the pixel's noise
    threshold, times ``strength``, is taken away (``denoise._chroma`` with a threshold; the
    level is the pixel's luma). ``cnoise``: float32 noise model a, b and the Cr, Cb scales of
    ``denoise.chroma_scales`` (needed with chroma). ``luma``: a denoised
    luma plane to use instead of the pixel's (empty: none). With either, the pixel goes to
    the opponent space and back, as ``denoise.denoise`` does. ``lut``: ``tone.Encoder``'s table
    (empty: linear, clip to [0, 1]) indexed by ``clip(v, 0, top) * lut_scale + 0.5``.
    """
    h, w, _ = rgb.shape
    use_chroma = cr_half.shape[0] > 0
    use_luma = luma.shape[0] > 0
    use_lut = lut.shape[0] > 0
    want_ye = ye.shape[0] > 0
    na, nb, ns_r, ns_b = (cnoise[0], cnoise[1], cnoise[2], cnoise[3]) if use_chroma else (_F0, _F0, _F0, _F0)
    n = lut.shape[0]
    hw = cr_half.shape[1]
    vert = np.empty(hw, np.float32)
    up_r = np.empty(2 * hw, np.float32)
    up_b = np.empty(2 * hw, np.float32)
    # The row's channels in planes of their own: loops over interleaved RGB do not vectorise
    # (the chroma pass took 8.4 ms/MP so, 6.0 planar).
    pr = np.empty(w, np.float32)
    pg = np.empty(w, np.float32)
    pb = np.empty(w, np.float32)
    own = np.empty(w, np.float32)
    for y in range(h):
        row = rgb[y]
        for x in range(w):
            xu = uintp(x)
            pr[xu] = row[xu, 0]
            pg[xu] = row[xu, 1]
            pb[xu] = row[xu, 2]
        if use_chroma:
            _upsample_row(cr_half, y, vert, up_r)
            _upsample_row(cb_half, y, vert, up_b)
        # Each case its own loop without branches inside, so that it vectorises.
        if use_chroma:
            if use_luma:
                lrow = luma[y]
            else:  # the pixel's own luma
                lrow = own
                for x in range(w):
                    xu = uintp(x)
                    own[xu] = (pr[xu] + pg[xu] + pg[xu] + pb[xu]) * _F025
            for x in range(w):
                xu = uintp(x)
                r, g, b = pr[xu], pg[xu], pb[xu]
                yy = (r + g + g + b) * _F025
                cr, cb = _chroma_within(r - g, b - g, up_r[xu], up_b[xu], yy, strength, na, nb, ns_r, ns_b)
                g = lrow[xu] - (cr + cb) * _F025
                pr[xu] = cr + g
                pg[xu] = g
                pb[xu] = cb + g
        elif use_luma:
            lrow = luma[y]
            for x in range(w):
                xu = uintp(x)
                r, g, b = pr[xu], pg[xu], pb[xu]
                cr, cb = r - g, b - g
                g = lrow[xu] - (cr + cb) * _F025
                pr[xu] = cr + g
                pg[xu] = g
                pb[xu] = cb + g
        if use_lut:
            for x in range(w):
                xu = uintp(x)
                pr[xu] = _lut(pr[xu], lut, n, top, lut_scale)
                pg[xu] = _lut(pg[xu], lut, n, top, lut_scale)
                pb[xu] = _lut(pb[xu], lut, n, top, lut_scale)
        else:
            for x in range(w):
                xu = uintp(x)
                pr[xu] = min(max(pr[xu], _F0), _F1)
                pg[xu] = min(max(pg[xu], _F0), _F1)
                pb[xu] = min(max(pb[xu], _F0), _F1)
        if want_ye:
            e = ye[y]
            for x in range(w):
                xu = uintp(x)
                e[xu] = (pr[xu] + pg[xu] + pg[xu] + pb[xu]) * _F025
        for x in range(w):
            xu = uintp(x)
            row[xu, 0] = pr[xu]
            row[xu, 1] = pg[xu]
            row[xu, 2] = pb[xu]


@njit(cache=True, nogil=True)
def sharpen_quantize(enc, ye, taps, amount, top_code, y0, x0, y1, x1, out, oy, ox):  # pragma: no cover
    """``out[oy + i, ox + j] = quantize(enc + amount * (ye - blur(ye)))`` for the window
    [y0:y1, x0:x1] of ``enc``, ``blur`` being ``filters.separable(ye, taps)`` (rows, then
    columns; computed a row at a time here). ``amount`` 0 or ``taps`` empty: no sharpening.
    Quantize: clip to [0, 1], x ``top_code``, round half to even."""
    h, w, _ = enc.shape
    use_sharp = taps.shape[0] > 0 and amount != _F0
    r = taps.shape[0] // 2
    vrow = np.empty(w, np.float32)
    blur = np.empty(w, np.float32)
    for y in range(y0, y1):
        row = enc[y]
        o = out[oy + y - y0]
        if use_sharp:
            c = ye[y]
            k0 = taps[r]
            for x in range(w):
                vrow[uintp(x)] = c[uintp(x)] * k0
            for t in range(r):
                a = ye[_mirror(y - 1 - t, h, h > r)]
                b = ye[_mirror(y + 1 + t, h, h > r)]
                kt = taps[r + 1 + t]
                for x in range(w):
                    vrow[uintp(x)] += (a[uintp(x)] + b[uintp(x)]) * kt
            _cols_row(vrow, taps, r, w, w > r, blur)
        for x in range(x0, x1):
            xu = uintp(x)
            d = _F0
            if use_sharp:
                d = (c[xu] - blur[xu]) * amount
            j = uintp(ox + x - x0)
            for ch in range(3):
                v = row[xu, ch]
                if use_sharp:
                    v += d
                o[j, ch] = np.rint(min(max(v, _F0), _F1) * top_code)

def warm_up(out_dtype=np.uint8) -> None:
    """Compile (or load from numba's cache) every kernel for the argument types the tile path
    of ``magcam.process`` passes (C-contiguous arrays; one signature each)."""
    f32 = np.float32
    none2, none1 = np.zeros((0, 0), f32), np.zeros(0, f32)
    cfa = np.zeros((8, 8), f32)
    two = np.ones((2, 2), f32)
    normalize(np.zeros((8, 8), np.uint16), 0, 8, 0, 8, two, two, two, none1, none1, cfa)
    xp = np.zeros((8, 8), f32)
    prepare_cfa(cfa, 0, 8, 0, 8, True, np.zeros(8, f32), np.zeros((0, 0), np.uint8), none2, two, two, xp, 0, 0)
    rgb = np.zeros((8, 8, 3), f32)
    half = np.zeros((4, 4), f32)
    colour(rgb, np.ones(3, f32), np.eye(3, dtype=f32), True, half, half.copy())
    separable(half, np.ones(3, f32) / f32(3))
    ye = np.zeros((8, 8), f32)
    encode(rgb, half, half, f32(0.5), np.zeros(4, f32), none2, np.zeros(4, f32), f32(1), f32(1), ye)
    sharpen_quantize(rgb, ye, np.ones(3, f32) / f32(3), f32(0.3), f32(255), 0, 0, 8, 8, np.zeros((8, 8, 3), out_dtype), 0, 0)
