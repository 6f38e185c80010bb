"""RIAS: residual interpolation with adaptive colour-difference smoothing (numba kernels).

The high-quality demosaic. Five stages and a side branch (1b), all written once for the RGGB
phase; ``oy, ox`` is where red sits in the 2x2 cell (blue diagonally opposite), so every Bayer
phase runs the same code. Work is in float32 on a mosaic padded by reflect-101 (see
``demosaic.py``); each stage fills a shrinking window of the padded planes, so the result at a
pixel depends only on the mosaic within ``RADIUS`` pixels of it (tiles that overlap by that
much are exact).

1. Directional green/colour estimates along rows and along columns by residual interpolation
   (Kiku et al. 2013, "RI"): a masked 1-D guided filter over 11 samples predicts the missing
   green from the line's colour and vice versa, and the prediction's residuals at the known
   samples are interpolated linearly and added back. Result: horizontal and vertical colour
   differences ``G - C`` (C = the row's or column's red or blue) at every pixel.
2. Directional fusion as in GBTF (Pekkucuksen & Altunbasak 2010): four one-sided (N, S, E, W)
   smoothings of those colour differences, weighted by the inverse squared colour-difference
   gradient in a Gaussian 5x5 window on that side. Done at two lengths: short (sigma 1) and
   long (sigma 3).
1b. A second, small-window green estimate, ARI's first iteration (Monno et al. 2015/2017):
   along each row and column a guided filter over 5 samples of both colours, on the linear
   interpolation guides, gives G - C by residual interpolation; the two directions are
   combined with weights 1 / (ARI's criterion: the smoothed disagreement between guides and
   tentative estimates, squared, times its smoothed gradient). Computed in the same per-row
   pass as stage 1.
3. Adaptive choice of the smoothing length: long smoothing wins where the colour difference is
   smooth compared with the image detail (typical of natural scenes: +2 dB green on Kodak),
   short smoothing where chroma itself has fine structure (saturated colour edges: +2 dB on
   McMaster). The ratio of the two estimates' mean squared disagreement to the green
   Laplacian energy over a 17x17 window decides, through a logistic blend. Where it all but
   rejects the long smoothing (weight < ``ARI_ALPHA``), the green hands over, linearly in that
   weight, to stage 1b's estimate (+0.4 dB CPSNR on McMaster, -0.2 dB on Kodak).
4. Red and blue by minimized-Laplacian residual interpolation (MLRI, Kiku et al. 2014) with
   the full green as guide: a 7x7 masked guided filter fitted on Laplacians (its slope mixed
   30 % with plain RI's, fitted on the values), its coefficients averaged with weights
   1 / (fit residual), as in ARI (Monno et al. 2015/2017); the residuals at the known samples
   are interpolated bilinearly.
5. Blue again, with two guides: the full green and stage 4's red. He et al.'s colour guided
   filter (the guides' covariance plus ``B2_EPS`` on its diagonal) fits ``B = a G + c R + b``
   over the same 7x7 window of blue samples, coefficients averaged as in stage 4, residuals
   interpolated bilinearly; the output blue is the mean of this and stage 4's blue. Where the
   chroma is saturated, blue is not a linear function of green alone and red carries what is
   missing (McMaster18 blue +0.43 dB, CPSNR +0.17 dB; Kodak24 -0.03 dB). The same for red
   (with blue as the second guide) costs Kodak 0.2 dB, so red keeps stage 4's result.

Usage (normally through ``demosaic.py``, which checks and pads the mosaic)::

    from magcam.pipeline import demosaic as dm
    rgb = dm.demosaic(cfa, "RGGB", "rias")      # cfa: (H, W) float, rgb: (H, W, 3) float32
"""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np

from magcam.jit import get_thread_id, njit, numba, prange, uintp

# --- parameters (in mosaic units: the data scale of [0, 1]) -----------------------------------
GF_RADIUS = 5  # stage 1: 1-D guided filter window 11 samples
VAR_FLOOR = 1e-5  # stage 1: floor on the guide variance (IPOL's 1e-5 * 255^2 in 8-bit units)
WEIGHT_EPS = 1e-20  # stage 2: keeps 1/gradient^2 finite on perfectly flat areas
SIGMA_SHORT, SIGMA_LONG = 1.0, 3.0  # stage 2: one-sided 5-tap Gaussian smoothing lengths
BLEND_RADIUS = 8  # stage 3: 17x17 statistics window
BLEND_CENTER, BLEND_WIDTH = -5.0, 0.25  # stage 3: logistic in ln(disagreement / Laplacian energy)
BLEND_TINY = 1.5e-8  # stage 3: regulariser of that ratio (1e-3 in 8-bit units squared)
RB_RADIUS = 3  # stage 4: 7x7 guided filter window
ML_EPS = 1e-9  # stage 4: regulariser of the Laplacian energy per sample
FIT_FLOOR = 4e-6  # stage 4: floor on the fit residual RMS (1e-3 in 8-bit units)
RI_SHARE = 0.3  # stage 4: share of the plain RI slope in the fitted slope (rest: MLRI's)
RI_VAR_FLOOR = 1e-5  # stage 4: floor on the guide variance of that plain RI fit
ARI_RADIUS = 2  # stage 1b: 1-D guided filter window 5 samples (ARI's first iteration)
ARI_VAR_FLOOR = 1.5e-15  # stage 1b: floor on the guide variance (ARI's 1e-10 in 8-bit units)
ARI_EPS = 6e-18  # stage 1b: regulariser of the criterion weights (ARI's 1e-10 in 8-bit units)
ARI_ALPHA = 0.05  # stage 3: below this weight of the long smoothing, stage 1b's green takes over
B2_EPS = 1e-5  # stage 5: regulariser added to the two guides' covariance (He et al.'s epsilon)
B2_SHARE = 0.5  # stage 5: share of the two-guide blue in the output blue (rest: stage 4's)

# Dependency radius of each stage's output on its input (along either axis).
_R1 = 2 * GF_RADIUS + 2  # guides (1) + coefficients (GF) + their average (GF) + residuals (1)
_R2 = 4  # gradient (1) + Gaussian (2) + side shift (1); the smoothing taps reach 4
_R3 = 1 + BLEND_RADIUS  # Laplacian + window
_R4 = 2 + 2 * RB_RADIUS + 1  # Laplacian of the guide + coefficients + their average + residuals
_R5 = 2 * RB_RADIUS + 1  # stage 5: fit window + coefficient average on stage 4's red, + residuals
_R1B = 2 * ARI_RADIUS + 2 + 2  # stage 1b: guides + fit + average + residual / gradient + Gaussian
assert _R1B <= _R1 + _R2 + _R3  # stage 1b reaches no further than the green it is blended into
RADIUS = _R1 + _R2 + _R3 + _R4 + _R5


def _one_sided(sigma: float) -> np.ndarray:
    g = np.exp(-(np.arange(5, dtype=np.float64) ** 2) / (2 * sigma * sigma))
    return (g / g.sum()).astype(np.float32)


_TAPS_SHORT = _one_sided(SIGMA_SHORT)
_TAPS_LONG = _one_sided(SIGMA_LONG)
_G5 = np.exp(-(np.arange(-2, 3, dtype=np.float64) ** 2) / 8.0)
_GAUSS5 = (_G5 / _G5.sum()).astype(np.float32)  # 5-tap, sigma 2, separable


# Performance notes: kernels index rows through row views and ``uintp`` column indices. numba
# supports negative (wrap-around) indices, and the check for them keeps LLVM from vectorising
# stencil loops; unsigned indices skip it (all indices here are in bounds by construction).
# Column-direction work in stage 1 runs the row kernels on the transposed mosaic.

_F0, _F025, _F05, _F1, _F2, _F4 = (np.float32(v) for v in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0))
_VAR_FLOOR = np.float32(VAR_FLOOR)
_R = GF_RADIUS
_N_EVEN = np.float32(_R + 1 - (_R & 1))  # samples of the centre's parity in [-r, r]
_N_ODD = np.float32(2 * _R + 1) - _N_EVEN
_INV_N = np.float32(1.0 / (2 * _R + 1))


# --- stage 1: directional residual interpolation (along rows) -------------------------------


@njit(cache=True)
def _dir_coef_row(row, gy, ox, x0, x1, ag, bg, ac, bc):  # pragma: no cover
    """Guided-filter coefficients along a row at every pixel of [x0, x1).

    Along a row, samples alternate green and colour C. The guide at every sample is the mean of
    its two row neighbours (the linear estimate of the other colour), the input is the sample
    itself; one fit over the green samples of the window (predicting G from C) and one over the
    C samples (predicting C from G). Sums are centred on the pixel's own values, which keeps
    float32 variances accurate.
    """
    for x in range(x0, x1):
        i0 = _F05 * (row[uintp(x - 1)] + row[uintp(x + 1)])
        p0 = row[uintp(x)]
        se_i = se_p = se_ii = se_ip = _F0
        so_i = so_p = so_ii = so_ip = _F0
        for k in range(2 * _R + 1):
            q = x + k - _R
            gi = _F05 * (row[uintp(q - 1)] + row[uintp(q + 1)]) - i0
            gp = row[uintp(q)] - p0
            if (k - _R) & 1:
                so_i += gi
                so_p += gp
                so_ii += gi * gi
                so_ip += gi * gp
            else:
                se_i += gi
                se_p += gp
                se_ii += gi * gi
                se_ip += gi * gp
        mi = se_i / _N_EVEN
        mp = se_p / _N_EVEN
        a = (se_ip / _N_EVEN - mi * mp) / max(se_ii / _N_EVEN - mi * mi, _VAR_FLOOR)
        b = (mp + p0) - a * (mi + i0)
        mi2 = so_i / _N_ODD
        mp2 = so_p / _N_ODD
        a2 = (so_ip / _N_ODD - mi2 * mp2) / max(so_ii / _N_ODD - mi2 * mi2, _VAR_FLOOR)
        b2 = (mp2 + p0) - a2 * (mi2 + i0)
        is_g = gy != ((x + ox) & 1)
        ag[uintp(x)] = a if is_g else a2
        bg[uintp(x)] = b if is_g else b2
        ac[uintp(x)] = a2 if is_g else a
        bc[uintp(x)] = b2 if is_g else b


@njit(cache=True)
def _dir_tentative_row(row, gy, ox, x0, x1, ag, bg, ac, bc, tg, tc):  # pragma: no cover
    """Tentative G and C at every pixel: window-averaged coefficients applied to the guide."""
    for x in range(x0, x1):
        sag = sbg = sac = sbc = _F0
        for k in range(2 * _R + 1):
            q = x + k - _R
            sag += ag[uintp(q)]
            sbg += bg[uintp(q)]
            sac += ac[uintp(q)]
            sbc += bc[uintp(q)]
        lin = _F05 * (row[uintp(x - 1)] + row[uintp(x + 1)])
        own = row[uintp(x)]
        is_g = gy != ((x + ox) & 1)
        # G's guide is C (observed at C sites, linear elsewhere), and vice versa
        tg[uintp(x)] = (sag * (lin if is_g else own) + sbg) * _INV_N
        tc[uintp(x)] = (sac * (own if is_g else lin) + sbc) * _INV_N


@njit(cache=True)
def _dir_difference_row(row, gy, ox, x0, x1, tg, tc, d):  # pragma: no cover
    """G - C along rows: observed value, or tentative + interpolated residual."""
    for x in range(x0, x1):
        c = tc[uintp(x)] + _F05 * ((row[uintp(x - 1)] - tc[uintp(x - 1)]) + (row[uintp(x + 1)] - tc[uintp(x + 1)]))
        g = tg[uintp(x)] + _F05 * ((row[uintp(x - 1)] - tg[uintp(x - 1)]) + (row[uintp(x + 1)] - tg[uintp(x + 1)]))
        is_g = gy != ((x + ox) & 1)
        d[uintp(x)] = (row[uintp(x)] - c) if is_g else (g - row[uintp(x)])


# --- stage 1b: small-window RI, directions combined by ARI's criterion ------------------------
# ARI's first iteration (Monno et al. 2015/2017): along each row, one guided filter over 5
# samples (both colours) fits G = a C + b and C = a G + b on the linear-interpolation guides,
# the coefficients are averaged over 5 positions (plainly: ARI's 1 / fit-residual weights gained
# 0.005 dB for two square roots per pixel); the criterion is the guides' disagreement with the
# tentative estimates, squared, times its gradient (both smoothed), and the horizontal and
# vertical estimates are combined with weights 1 / criterion. Colour-detailed regions (stage
# 3's short smoothing) take this green: +0.4 dB CPSNR on McMaster.

_AR = ARI_RADIUS
_ARI_VAR_FLOOR = np.float32(ARI_VAR_FLOOR)
_ARI_INV_N = np.float32(1.0 / (2 * _AR + 1))


@njit(cache=True)
def _ari_guides_row(row, gy, ox, x0, x1, gg, gc):  # pragma: no cover
    """The guides: G and C observed where sampled, the mean of the two row neighbours elsewhere."""
    for x in range(x0, x1):
        lin = _F05 * (row[uintp(x - 1)] + row[uintp(x + 1)])
        own = row[uintp(x)]
        is_g = gy != ((x + ox) & 1)
        gg[uintp(x)] = own if is_g else lin
        gc[uintp(x)] = lin if is_g else own


@njit(cache=True)
def _ari_coef_row(gg, gc, x0, x1, ag, bg, ac, bc):  # pragma: no cover
    """Both 5-sample fits at every pixel of [x0, x1): G = a C + b and C = a G + b."""
    for x in range(x0, x1):
        g0 = gg[uintp(x)]  # centring keeps float32 moments accurate
        c0 = gc[uintp(x)]
        sg = sc = sgg = scc = sgc = _F0
        for k in range(2 * _AR + 1):
            q = x + k - _AR
            gv = gg[uintp(q)] - g0
            cv = gc[uintp(q)] - c0
            sg += gv
            sc += cv
            sgg += gv * gv
            scc += cv * cv
            sgc += gv * cv
        mg = sg * _ARI_INV_N
        mc = sc * _ARI_INV_N
        vg = sgg * _ARI_INV_N - mg * mg
        vc = scc * _ARI_INV_N - mc * mc
        cv_ = sgc * _ARI_INV_N - mg * mc
        a = cv_ / max(vc, _ARI_VAR_FLOOR)  # G from C
        ag[uintp(x)] = a
        bg[uintp(x)] = (mg + g0) - a * (mc + c0)
        a = cv_ / max(vg, _ARI_VAR_FLOOR)  # C from G
        ac[uintp(x)] = a
        bc[uintp(x)] = (mc + c0) - a * (mg + g0)


@njit(cache=True)
def _ari_tentative_row(gg, gc, x0, x1, ag, bg, ac, bc, tg, tc):  # pragma: no cover
    """Tentative G and C: the window-averaged coefficients applied to the guides."""
    for x in range(x0, x1):
        s1 = s2 = s3 = s4 = _F0
        for k in range(2 * _AR + 1):
            q = x + k - _AR
            s1 += ag[uintp(q)]
            s2 += bg[uintp(q)]
            s3 += ac[uintp(q)]
            s4 += bc[uintp(q)]
        tg[uintp(x)] = (s1 * gc[uintp(x)] + s2) * _ARI_INV_N
        tc[uintp(x)] = (s3 * gg[uintp(x)] + s4) * _ARI_INV_N


@njit(cache=True)
def _ari_estimate_row(row, gy, ox, gg, gc, x0, x1, tg, tc, d, oc, od):  # pragma: no cover
    """G - C (residual interpolation), the criterion |guide - tentative| and its gradient."""
    for x in range(x0, x1):
        own = row[uintp(x)]
        ow_w, ow_e = row[uintp(x - 1)], row[uintp(x + 1)]
        c = tc[uintp(x)] + _F05 * ((ow_w - tc[uintp(x - 1)]) + (ow_e - tc[uintp(x + 1)]))
        g = tg[uintp(x)] + _F05 * ((ow_w - tg[uintp(x - 1)]) + (ow_e - tg[uintp(x + 1)]))
        d[uintp(x)] = (own - c) if gy != ((x + ox) & 1) else (g - own)
        oc[uintp(x)] = abs(gg[uintp(x)] - tg[uintp(x)]) + abs(gc[uintp(x)] - tc[uintp(x)])
        od[uintp(x)] = (abs((gg[uintp(x + 1)] - tg[uintp(x + 1)]) - (gg[uintp(x - 1)] - tg[uintp(x - 1)]))
                        + abs((gc[uintp(x + 1)] - tc[uintp(x + 1)]) - (gc[uintp(x - 1)] - tc[uintp(x - 1)])))


_G5 = tuple(np.float32(v) for v in _GAUSS5)


@njit(cache=True)
def _gauss_row(src, x0, x1, dst):  # pragma: no cover
    for x in range(x0, x1):
        dst[uintp(x)] = (_G5[0] * src[uintp(x - 2)] + _G5[1] * src[uintp(x - 1)] + _G5[2] * src[uintp(x)]
                         + _G5[3] * src[uintp(x + 1)] + _G5[4] * src[uintp(x + 2)])


@njit(parallel=True, cache=True)
def _ari_weight(cri, dcri, y0, y1, x0, x1, w):  # pragma: no cover
    """ARI's criterion from the row-smoothed maps: Gaussian along columns, then c^2 x d."""
    for y in prange(y0, y1):
        c0, c1, c2, c3, c4 = cri[y - 2], cri[y - 1], cri[y], cri[y + 1], cri[y + 2]
        d0, d1, d2, d3, d4 = dcri[y - 2], dcri[y - 1], dcri[y], dcri[y + 1], dcri[y + 2]
        o = w[y]
        for x in range(x0, x1):
            c = (_G5[0] * c0[uintp(x)] + _G5[1] * c1[uintp(x)] + _G5[2] * c2[uintp(x)]
                 + _G5[3] * c3[uintp(x)] + _G5[4] * c4[uintp(x)])
            d = (_G5[0] * d0[uintp(x)] + _G5[1] * d1[uintp(x)] + _G5[2] * d2[uintp(x)]
                 + _G5[3] * d3[uintp(x)] + _G5[4] * d4[uintp(x)])
            o[uintp(x)] = c * c * d


@njit(parallel=True, cache=True)
def _stage1_rows(xp, oy, ox, y0, y1, x0, x1, b0, b1, c0, c1, buf, dif, dif1b, cri, dcri):  # pragma: no cover
    """Stages 1 and 1b along rows, one row at a time in a per-thread row buffer (``buf``).

    Stage 1 fills ``dif`` in [y0, y1) x [x0, x1); stage 1b ``dif1b`` and the criterion maps
    smoothed along the row, ``cri`` and ``dcri``, in [b0, b1) x [c0, c1). Keeping the
    intermediate rows in cache saves most of the memory traffic.
    """
    r, ar = _R, _AR
    for y in prange(y0, y1):
        row = xp[y]
        gy = (y + oy) & 1
        t = buf[get_thread_id()]
        _dir_coef_row(row, gy, ox, x0 - r - 1, x1 + r + 1, t[0], t[1], t[2], t[3])
        _dir_tentative_row(row, gy, ox, x0 - 1, x1 + 1, t[0], t[1], t[2], t[3], t[4], t[5])
        _dir_difference_row(row, gy, ox, x0, x1, t[4], t[5], dif[y])
        if b0 <= y < b1:
            gg, gc = t[8], t[9]
            e0, e1 = c0 - 2, c1 + 2  # the Gaussian's reach
            _ari_guides_row(row, gy, ox, e0 - 1 - 2 * ar, e1 + 1 + 2 * ar, gg, gc)
            _ari_coef_row(gg, gc, e0 - 1 - ar, e1 + 1 + ar, t[0], t[1], t[2], t[3])
            _ari_tentative_row(gg, gc, e0 - 1, e1 + 1, t[0], t[1], t[2], t[3], t[6], t[7])
            _ari_estimate_row(row, gy, ox, gg, gc, e0, e1, t[6], t[7], t[4], t[0], t[1])
            d = dif1b[y]
            for x in range(c0, c1):
                d[uintp(x)] = t[4][uintp(x)]
            _gauss_row(t[0], c0, c1, cri[y])
            _gauss_row(t[1], c0, c1, dcri[y])


def _stage1(xp, oy, ox, m_1, m_g, buf, dif, dif1b, w1b, cri, dcri):
    """Stages 1 and 1b along the rows of ``xp``; stage 1b's criterion goes to ``w1b``."""
    hp, wp = xp.shape
    e = 2  # reach of the criterion's Gaussian
    _stage1_rows(xp, oy, ox, m_1, hp - m_1, m_1, wp - m_1, m_g - e, hp - m_g + e, m_g, wp - m_g,
                 buf, dif, dif1b, cri, dcri)
    _ari_weight(cri, dcri, m_g, hp - m_g, m_g, wp - m_g, w1b)


# --- stage 2: directional fusion ---------------------------------------------------------------

_WEIGHT_EPS = np.float32(WEIGHT_EPS)


@njit(parallel=True, cache=True)
def _gradients(dh, dv, y0, y1, x0, x1, gh, gv):  # pragma: no cover
    for y in prange(y0, y1):
        h, vn, vs, oh, ov = dh[y], dv[y - 1], dv[y + 1], gh[y], gv[y]
        for x in range(x0, x1):
            oh[uintp(x)] = abs(h[uintp(x + 1)] - h[uintp(x - 1)])
            ov[uintp(x)] = abs(vs[uintp(x)] - vn[uintp(x)])


def _make_sums(radius: int, taps=None):
    """(2 radius + 1)-tap sums along rows and along columns; weighted by ``taps`` if given."""
    r = radius
    t = tuple(np.float32(v) for v in (np.ones(2 * r + 1) if taps is None else taps))

    @njit(parallel=True, cache=True)
    def rows(src, y0, y1, x0, x1, dst):  # pragma: no cover
        for y in prange(y0, y1):
            a, o = src[y], dst[y]
            for x in range(x0, x1):
                s = _F0
                for k in range(2 * r + 1):
                    s += t[k] * a[uintp(x + k - r)]
                o[uintp(x)] = s

    @njit(parallel=True, cache=True)
    def cols(src, y0, y1, x0, x1, dst):  # pragma: no cover
        # All taps of a column in one expression (LLVM unrolls the fixed-length tap loop and
        # vectorises along the row): 1.4-1.8x faster than adding one source row at a time into
        # the output row, in the same order, so bit-identical.
        for y in prange(y0, y1):
            o = dst[y]
            block = src[y - r : y + r + 1]
            for x in range(x0, x1):
                v = t[0] * block[0, uintp(x)]
                for k in range(1, 2 * r + 1):
                    v += t[k] * block[k, uintp(x)]
                o[uintp(x)] = v

    return rows, cols


_GAUSS_ROWS, _GAUSS_COLS = _make_sums(2, _GAUSS5)
_BLEND_ROWS, _BLEND_COLS = _make_sums(BLEND_RADIUS)
_TS = tuple(np.float32(v) for v in _TAPS_SHORT)
_TL = tuple(np.float32(v) for v in _TAPS_LONG)


@njit(parallel=True, cache=True)
def _fuse(dh, dv, wh, wv, y0, y1, x0, x1, d_short, d_long):  # pragma: no cover
    for y in prange(y0, y1):
        h, whr, wn, ws = dh[y], wh[y], wv[y - 1], wv[y + 1]
        v0, v1, v2, v3, v4 = dv[y], dv[y - 1], dv[y - 2], dv[y - 3], dv[y - 4]
        s1, s2, s3, s4 = dv[y + 1], dv[y + 2], dv[y + 3], dv[y + 4]
        os_, ol = d_short[y], d_long[y]
        for x in range(x0, x1):
            w_w = whr[uintp(x - 1)]
            w_e = whr[uintp(x + 1)]
            w_n = wn[uintp(x)]
            w_s = ws[uintp(x)]
            w_w = _F1 / (w_w * w_w + _WEIGHT_EPS)
            w_e = _F1 / (w_e * w_e + _WEIGHT_EPS)
            w_n = _F1 / (w_n * w_n + _WEIGHT_EPS)
            w_s = _F1 / (w_s * w_s + _WEIGHT_EPS)
            c = v0[uintp(x)]
            n1, n2, n3, n4 = v1[uintp(x)], v2[uintp(x)], v3[uintp(x)], v4[uintp(x)]
            q1, q2, q3, q4 = s1[uintp(x)], s2[uintp(x)], s3[uintp(x)], s4[uintp(x)]
            sn = _TS[0] * c + _TS[1] * n1 + _TS[2] * n2 + _TS[3] * n3 + _TS[4] * n4
            ss = _TS[0] * c + _TS[1] * q1 + _TS[2] * q2 + _TS[3] * q3 + _TS[4] * q4
            ln = _TL[0] * c + _TL[1] * n1 + _TL[2] * n2 + _TL[3] * n3 + _TL[4] * n4
            ls = _TL[0] * c + _TL[1] * q1 + _TL[2] * q2 + _TL[3] * q3 + _TL[4] * q4
            sw = se = lw = le = _F0
            for k in range(5):
                a = h[uintp(x - k)]
                b = h[uintp(x + k)]
                sw += _TS[k] * a
                se += _TS[k] * b
                lw += _TL[k] * a
                le += _TL[k] * b
            inv = _F1 / (w_w + w_e + w_n + w_s)
            os_[uintp(x)] = (w_w * sw + w_e * se + w_n * sn + w_s * ss) * inv
            ol[uintp(x)] = (w_w * lw + w_e * le + w_n * ln + w_s * ls) * inv


# --- stage 3: adaptive smoothing length --------------------------------------------------------

_BLEND_TINY = np.float32(BLEND_TINY)
_BLEND_SCALE = np.float32(math.exp(-BLEND_CENTER))
assert BLEND_WIDTH == 0.25  # _green raises the ratio to the 4th power


@njit(parallel=True, cache=True)
def _blend_stats(xp, oy, ox, d_short, y0, y1, x0, x1, d_long, dis, lap):  # pragma: no cover
    for y in prange(y0, y1):
        xn, xc, xs = xp[y - 1], xp[y], xp[y + 1]
        dn, dc, ds, dl = d_short[y - 1], d_short[y], d_short[y + 1], d_long[y]
        od, ol = dis[y], lap[y]
        gy = (y + oy) & 1
        for x in range(x0, x1):
            # provisional green (short smoothing) at the pixel and its 4 neighbours
            c, n, s, w, e = xc[uintp(x)], xn[uintp(x)], xs[uintp(x)], xc[uintp(x - 1)], xc[uintp(x + 1)]
            if gy == ((x + ox) & 1):  # red or blue here; the neighbours are green
                c += dc[uintp(x)]
            else:
                n += dn[uintp(x)]
                s += ds[uintp(x)]
                w += dc[uintp(x - 1)]
                e += dc[uintp(x + 1)]
            g = _F4 * c - n - s - w - e
            ol[uintp(x)] = g * g
            v = dl[uintp(x)] - dc[uintp(x)]
            od[uintp(x)] = v * v


_ARI_EPS = np.float32(ARI_EPS)
_ARI_ALPHA = np.float32(ARI_ALPHA)


@njit(parallel=True, cache=True)
def _green(xp, oy, ox, d_short, d_long, dis_sum, lap_sum, dh1b, wh1b, dv1b, wv1b, y0, y1, x0, x1, green):  # pragma: no cover
    for y in prange(y0, y1):
        xr, ds, dl, di, la, o = xp[y], d_short[y], d_long[y], dis_sum[y], lap_sum[y], green[y]
        dh, wh, dv, wv = dh1b[y], wh1b[y], dv1b[y], wv1b[y]
        gy = (y + oy) & 1
        for x in range(x0, x1):
            # alpha = 1 / (1 + exp((ln ratio - centre) / width)), without log and exp
            q = (di[uintp(x)] + _BLEND_TINY) / (la[uintp(x)] + _BLEND_TINY) * _BLEND_SCALE
            q2 = q * q
            alpha = _F1 / (_F1 + q2 * q2)  # weight of the long smoothing (inf -> 0 is right)
            d = ds[uintp(x)] + alpha * (dl[uintp(x)] - ds[uintp(x)])
            if alpha < _ARI_ALPHA:  # colour-detailed: hand over to stage 1b, smoothly
                u = alpha / _ARI_ALPHA
                a_h = wv[uintp(x)] + _ARI_EPS  # weights 1 / (criterion + eps), cross-multiplied
                a_v = wh[uintp(x)] + _ARI_EPS
                d1b = (a_h * dh[uintp(x)] + a_v * dv[uintp(x)]) / (a_h + a_v)
                d = u * d + (_F1 - u) * d1b
            o[uintp(x)] = xr[uintp(x)] if gy != ((x + ox) & 1) else xr[uintp(x)] + d


# --- stage 4: red and blue by weighted MLRI ------------------------------------------------------

# The fits of stages 4 and 5 run in float32: in float64 they took a quarter longer (20.4 against
# 16.0 ms/MP on one thread) for 0.0006 dB of CPSNR on Kodak24 (40.1551 against 40.1545) and
# none on McMaster18 (37.5197 both).
_ML_EPS = np.float32(ML_EPS)
_FIT_FLOOR = np.float32(FIT_FLOOR)
_RI_SHARE = np.float32(RI_SHARE)
_RI_KEEP = np.float32(1.0 - RI_SHARE)
_RI_VAR_FLOOR = np.float32(RI_VAR_FLOOR)


@njit(inline="always")
def _lattice_window_sums(src, dst, x0, x1, cx):  # pragma: no cover
    """``dst[x]`` = the sum of ``src`` over the lattice sites (column parity cx) in [x - 3, x + 3]:
    3 sites if x is one, else 4. Both sums are formed and one kept: branch-free, so it vectorises
    (2.2x faster than choosing first); only lattice entries of ``src`` are ever kept."""
    for x in range(x0, x1):
        on = _F0 + src[uintp(x - 2)] + src[uintp(x)] + src[uintp(x + 2)]
        off = _F0 + src[uintp(x - 3)] + src[uintp(x - 1)] + src[uintp(x + 1)] + src[uintp(x + 3)]
        dst[uintp(x)] = off if (x - cx) & 1 else on


@njit(parallel=True, cache=True)
def _rb_rows(xp, g, cy, cx, y0, y1, x0, x1, hs, buf):  # pragma: no cover
    """Row sums over the colour sites (row parity cy, column parity cx) in [x - 3, x + 3].

    ``hs[y // 2, k]`` for rows of the colour: dI*dp, dI^2, I, p, I^2, p^2, I*p with I the green
    guide, p the mosaic and dI, dp their 5-point Laplacians on the colour's own lattice. The
    seven terms are formed once per site in a per-thread row buffer (``buf``), then summed.
    """
    for yy in prange((y0 - cy + 1) // 2, (y1 - cy + 1) // 2):
        y = 2 * yy + cy
        gr, gn, gs, pr, pn, ps = g[y], g[y - 2], g[y + 2], xp[y], xp[y - 2], xp[y + 2]
        t = buf[get_thread_id()]
        t0, t1, t2, t3, t4, t5, t6 = t[0], t[1], t[2], t[3], t[4], t[5], t[6]
        # every column, though only the sites' terms are used: a stride-2 loop does not vectorise
        for q in range(x0 - 3, x1 + 3):
            gi = gr[uintp(q)]
            pi = pr[uintp(q)]
            di = _F4 * gi - gn[uintp(q)] - gs[uintp(q)] - gr[uintp(q - 2)] - gr[uintp(q + 2)]
            dp = _F4 * pi - pn[uintp(q)] - ps[uintp(q)] - pr[uintp(q - 2)] - pr[uintp(q + 2)]
            t0[uintp(q)] = di * dp
            t1[uintp(q)] = di * di
            t2[uintp(q)] = gi
            t3[uintp(q)] = pi
            t4[uintp(q)] = gi * gi
            t5[uintp(q)] = pi * pi
            t6[uintp(q)] = gi * pi
        h = hs[yy]
        for k in range(7):
            _lattice_window_sums(t[k], h[k], x0, x1, cx)


@njit(inline="always")
def _window_sums(hs, y, cy, count, x0, x1, cs):  # pragma: no cover
    """``cs[k, x]`` = the sum of the row sums ``hs[., k, x]`` of the colour rows (row
    parity cy) in [y - 3, y + 3], for k < count; returns how many rows that is (3 or 4). Summed
    into a row buffer first: the two-guide fit reading its 36 row sums directly does not
    vectorise (3.5x slower; stage 4's 28 do, and go faster read directly)."""
    oddy = (y - cy) & 1
    first = (y - 2 - oddy - cy) // 2  # hs row of the first colour row in [y - 3, y + 3]
    h0, h1, h2 = hs[first], hs[first + 1], hs[first + 2]
    h3 = hs[first + 3] if oddy else hs[first + 2]
    f3 = _F1 if oddy else _F0
    for k in range(count):
        a0, a1, a2, a3, c = h0[k], h1[k], h2[k], h3[k], cs[k]
        for x in range(x0, x1):
            c[uintp(x)] = a0[uintp(x)] + a1[uintp(x)] + a2[uintp(x)] + f3 * a3[uintp(x)]
    return 3 + oddy


@njit(inline="always")
def _rb_coef_row(cy, cx, hs, y, x0, x1, oa, ob, ow):  # pragma: no cover
    """Row ``y``'s per-pixel fit over the 7x7 window, times its weight 1 / (fit residual RMS).

    The slope is MLRI's (Laplacians) moved ``RI_SHARE`` of the way to plain RI's (values, Kiku
    et al. 2013), both from the same window sums: the mix measured +0.05 dB on McMaster18 for
    -0.05 on Kodak24, at no extra pass. The intercept and the weight are the mixed line's.
    """
    oddy = (y - cy) & 1
    first = (y - 2 - oddy - cy) // 2  # hs row of the first colour row in [y - 3, y + 3]
    nrow = 3 + oddy
    h0, h1, h2 = hs[first], hs[first + 1], hs[first + 2]
    h3 = hs[first + 3] if oddy else hs[first + 2]
    f3 = _F1 if oddy else _F0
    # 1 / samples for both column parities, once per row (a division per pixel cost ~7 %)
    inv_on, inv_off = np.float32(1.0 / (nrow * 3)), np.float32(1.0 / (nrow * 4))
    for x in range(x0, x1):
        inv_n = inv_off if (x - cx) & 1 else inv_on
        s0 = h0[0, uintp(x)] + h1[0, uintp(x)] + h2[0, uintp(x)] + f3 * h3[0, uintp(x)]
        s1 = h0[1, uintp(x)] + h1[1, uintp(x)] + h2[1, uintp(x)] + f3 * h3[1, uintp(x)]
        s2 = h0[2, uintp(x)] + h1[2, uintp(x)] + h2[2, uintp(x)] + f3 * h3[2, uintp(x)]
        s3 = h0[3, uintp(x)] + h1[3, uintp(x)] + h2[3, uintp(x)] + f3 * h3[3, uintp(x)]
        s4 = h0[4, uintp(x)] + h1[4, uintp(x)] + h2[4, uintp(x)] + f3 * h3[4, uintp(x)]
        s5 = h0[5, uintp(x)] + h1[5, uintp(x)] + h2[5, uintp(x)] + f3 * h3[5, uintp(x)]
        s6 = h0[6, uintp(x)] + h1[6, uintp(x)] + h2[6, uintp(x)] + f3 * h3[6, uintp(x)]
        mi = s2 * inv_n
        mp = s3 * inv_n
        var_i = s4 * inv_n - mi * mi
        cov = s6 * inv_n - mi * mp
        # MLRI's slope s0 / (s1 + n eps) and RI's cov / var, mixed over one division
        d_ml = s1 * inv_n + _ML_EPS
        d_ri = max(var_i, _RI_VAR_FLOOR)
        a = (_RI_KEEP * (s0 * inv_n) * d_ri + _RI_SHARE * cov * d_ml) / (d_ml * d_ri)
        b = mp - a * mi
        # mean squared fit residual, from centred moments
        res = (s5 * inv_n - mp * mp) - _F2 * a * cov + a * a * var_i
        w = _F1 / max(math.sqrt(max(res, _F0)), _FIT_FLOOR)
        oa[uintp(x)] = a * w
        ob[uintp(x)] = b * w
        ow[uintp(x)] = w


@njit(inline="always")
def _box7_row(src, dst, x0, x1):  # pragma: no cover
    """7-tap sums along a row."""
    for x in range(x0, x1):
        s = _F0
        for k in range(2 * RB_RADIUS + 1):
            s += src[uintp(x + k - RB_RADIUS)]
        dst[uintp(x)] = s


@njit(inline="always")
def _box7_col(ring, p, y, x):  # pragma: no cover
    """The sum of plane ``p``'s row sums over rows [y - 3, y + 3] (ring slots: rows modulo 7)."""
    v = ring[p, (y - 3) % 7, uintp(x)]
    for k in range(1, 2 * RB_RADIUS + 1):
        v += ring[p, (y - 3 + k) % 7, uintp(x)]
    return v


@njit(inline="always")
def _band(y0, y1, c, chunks):  # pragma: no cover
    """Rows [ya, yb) of band ``c`` of ``chunks`` equal bands of [y0, y1)."""
    n = y1 - y0
    return y0 + n * c // chunks, y0 + n * (c + 1) // chunks


@njit(inline="always")
def _push_row_sums(ring, planes, yc, x0, x1):  # pragma: no cover
    """Row ``yc``'s coefficients (slot 7 of each plane) -> their 7-tap sums, into slot yc % 7."""
    slot = yc % 7
    for p in range(planes):
        _box7_row(ring[p, 7], ring[p, slot], x0, x1)


@njit(parallel=True, cache=True)
def _rb_fit(cy, cx, hs, g, y0, y1, x0, x1, t, rings, chunks):  # pragma: no cover
    """Stage 4's tentative colour in [y0, y1) x [x0, x1): the fit's coefficients, averaged over
    7x7 windows, applied to the green ``g``.

    Row by row in ``chunks`` bands: a row's coefficients go into a per-thread ring of 7 rows of
    row sums (``rings[thread, plane, slot]``; slot 7 holds the row itself), so the coefficient
    planes and their sums never reach memory: one pass where there were five (fit, row sums and
    column sums of three planes, tentative), ~15 % faster.
    """
    for c in prange(chunks):
        ya, yb = _band(y0, y1, c, chunks)
        ring = rings[get_thread_id()]
        for yc in range(ya - RB_RADIUS, yb + RB_RADIUS):
            _rb_coef_row(cy, cx, hs, yc, x0 - RB_RADIUS, x1 + RB_RADIUS, ring[0, 7], ring[1, 7], ring[2, 7])
            _push_row_sums(ring, 3, yc, x0, x1)
            y = yc - RB_RADIUS
            if y >= ya:
                gr, o = g[y], t[y]
                for x in range(x0, x1):
                    a = _box7_col(ring, 0, y, x)
                    b = _box7_col(ring, 1, y, x)
                    w = _box7_col(ring, 2, y, x)
                    o[uintp(x)] = (a * gr[uintp(x)] + b) / w


@njit(inline="always")
def _with_residual(xn, xc, xs, tn, tc, ts, px, oy, ox):  # pragma: no cover
    """Tentative + bilinearly interpolated residual at column ``px``; an observed sample is kept.
    ``oy, ox``: the pixel's row and column offsets from the colour's lattice (0 or 1). Both
    candidates of the row's kind are formed and one kept: branch-free along the row (``oy`` is
    the same for the whole row), so the loop vectorises."""
    if oy == 0:
        observed = xc[uintp(px)]
        between = tc[uintp(px)] + _F05 * ((xc[uintp(px - 1)] - tc[uintp(px - 1)]) + (xc[uintp(px + 1)] - tc[uintp(px + 1)]))
        return observed if ox == 0 else between
    above_below = tc[uintp(px)] + _F05 * ((xn[uintp(px)] - tn[uintp(px)]) + (xs[uintp(px)] - ts[uintp(px)]))
    diagonal = tc[uintp(px)] + _F025 * ((xn[uintp(px - 1)] - tn[uintp(px - 1)]) + (xn[uintp(px + 1)] - tn[uintp(px + 1)])
                                        + (xs[uintp(px - 1)] - ts[uintp(px - 1)]) + (xs[uintp(px + 1)] - ts[uintp(px + 1)]))
    return above_below if ox == 0 else diagonal


@njit(parallel=True, cache=True)
def _rb_full(xp, cy, cx, t, y0, y1, x0, x1, dst):  # pragma: no cover
    """Colour = tentative ``t`` + interpolated residual, in [y0, y1) x [x0, x1) of ``dst``."""
    for y in prange(y0, y1):
        xn, xc, xs, tn, tc, ts, o = xp[y - 1], xp[y], xp[y + 1], t[y - 1], t[y], t[y + 1], dst[y]
        oy = (y - cy) & 1
        for x in range(x0, x1):
            o[uintp(x)] = _with_residual(xn, xc, xs, tn, tc, ts, x, oy, (x - cx) & 1)


# --- stage 5: blue with green and red as guides ------------------------------------------------

_B2_EPS = np.float32(B2_EPS)
_B2_SHARE = np.float32(B2_SHARE)


@njit(parallel=True, cache=True)
def _b2_rows(xp, g, r, cy, cx, y0, y1, x0, x1, hs, buf):  # pragma: no cover
    """Row sums over the blue sites (row parity cy, column parity cx) in [x - 3, x + 3].

    ``hs[y // 2, k]`` for the blue rows: G, R, B, G^2, R^2, B^2, G R, G B, R B, with G the
    green, R the red of stage 4 and B the mosaic; the terms are formed in a per-thread row
    buffer (``buf``), then summed as in ``_rb_rows``.
    """
    for yy in prange((y0 - cy + 1) // 2, (y1 - cy + 1) // 2):
        y = 2 * yy + cy
        gr, rr, pr = g[y], r[y], xp[y]
        t = buf[get_thread_id()]
        t0, t1, t2, t3, t4, t5, t6, t7, t8 = t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8]
        for q in range(x0 - 3, x1 + 3):
            gi = gr[uintp(q)]
            ri = rr[uintp(q)]
            pi = pr[uintp(q)]
            t0[uintp(q)] = gi
            t1[uintp(q)] = ri
            t2[uintp(q)] = pi
            t3[uintp(q)] = gi * gi
            t4[uintp(q)] = ri * ri
            t5[uintp(q)] = pi * pi
            t6[uintp(q)] = gi * ri
            t7[uintp(q)] = gi * pi
            t8[uintp(q)] = ri * pi
        h = hs[yy]
        for k in range(9):
            _lattice_window_sums(t[k], h[k], x0, x1, cx)


@njit(inline="always")
def _b2_coef_row(cy, cx, hs, y, x0, x1, oag, oar, ob, ow, cs):  # pragma: no cover
    """Row ``y``'s per-pixel two-guide fit over the 7x7 window, times its weight 1 / (fit
    residual RMS); ``cs``: a buffer of 9 rows for the window sums."""
    nrow = _window_sums(hs, y, cy, 9, x0, x1, cs)
    c0, c1, c2, c3, c4, c5, c6, c7, c8 = cs[0], cs[1], cs[2], cs[3], cs[4], cs[5], cs[6], cs[7], cs[8]
    inv_on, inv_off = np.float32(1.0 / (nrow * 3)), np.float32(1.0 / (nrow * 4))  # as in _rb_coef_row
    for x in range(x0, x1):
        inv_n = inv_off if (x - cx) & 1 else inv_on
        mg = c0[uintp(x)] * inv_n
        mr = c1[uintp(x)] * inv_n
        mb = c2[uintp(x)] * inv_n
        vgg = c3[uintp(x)] * inv_n - mg * mg
        vrr = c4[uintp(x)] * inv_n - mr * mr
        vbb = c5[uintp(x)] * inv_n - mb * mb
        vgr = c6[uintp(x)] * inv_n - mg * mr
        vgb = c7[uintp(x)] * inv_n - mg * mb
        vrb = c8[uintp(x)] * inv_n - mr * mb
        c00 = vgg + _B2_EPS
        c11 = vrr + _B2_EPS
        inv_det = _F1 / (c00 * c11 - vgr * vgr)  # det > 0: the covariance is positive semi-definite
        ag = (c11 * vgb - vgr * vrb) * inv_det
        ar = (c00 * vrb - vgr * vgb) * inv_det
        b = mb - ag * mg - ar * mr
        res = vbb - _F2 * (ag * vgb + ar * vrb) + ag * ag * vgg + _F2 * ag * ar * vgr + ar * ar * vrr
        w = _F1 / max(math.sqrt(max(res, _F0)), _FIT_FLOOR)
        oag[uintp(x)] = ag * w
        oar[uintp(x)] = ar * w
        ob[uintp(x)] = b * w
        ow[uintp(x)] = w


@njit(parallel=True, cache=True)
def _b2_fit(cy, cx, hs, g, r, y0, y1, x0, x1, t, rings, sums, chunks):  # pragma: no cover
    """Stage 5's tentative blue in [y0, y1) x [x0, x1): the two-guide fit's coefficients,
    averaged over 7x7 windows, applied to green ``g`` and red ``r``; rows carried along as in
    ``_rb_fit``."""
    for c in prange(chunks):
        ya, yb = _band(y0, y1, c, chunks)
        tid = get_thread_id()
        ring = rings[tid]
        for yc in range(ya - RB_RADIUS, yb + RB_RADIUS):
            _b2_coef_row(cy, cx, hs, yc, x0 - RB_RADIUS, x1 + RB_RADIUS,
                         ring[0, 7], ring[1, 7], ring[2, 7], ring[3, 7], sums[tid])
            _push_row_sums(ring, 4, yc, x0, x1)
            y = yc - RB_RADIUS
            if y >= ya:
                gr, rr, o = g[y], r[y], t[y]
                for x in range(x0, x1):
                    ag = _box7_col(ring, 0, y, x)
                    ar = _box7_col(ring, 1, y, x)
                    b = _box7_col(ring, 2, y, x)
                    w = _box7_col(ring, 3, y, x)
                    o[uintp(x)] = (ag * gr[uintp(x)] + ar * rr[uintp(x)] + b) / w


@njit(parallel=True, cache=True)
def _output(xp, cy, cx, t, b4, red, green, pad, out):  # pragma: no cover
    """The output pixels: ``red``, ``green`` and the blue of stage 5 (tentative ``t`` + residual)
    mixed with stage 4's ``b4``; all three channels in one pass over the interleaved output."""
    h, w = out.shape[0], out.shape[1]
    for y in prange(h):
        py = y + pad
        xn, xc, xs, tn, tc, ts, b = xp[py - 1], xp[py], xp[py + 1], t[py - 1], t[py], t[py + 1], b4[py]
        r, g = red[py], green[py]
        oy = (py - cy) & 1
        o = out[y]
        for x in range(w):
            px = x + pad
            v = _with_residual(xn, xc, xs, tn, tc, ts, px, oy, (px - cx) & 1)
            o[uintp(x), 0] = r[uintp(px)]
            o[uintp(x), 1] = g[uintp(px)]
            o[uintp(x), 2] = b[uintp(px)] + _B2_SHARE * (v - b[uintp(px)])


# --- driver ------------------------------------------------------------------------------------


def _chunks() -> int:
    """Row bands for the kernels that carry rows along (``_rb_fit``, ``_b2_fit``): one per
    thread would leave a core idle if the other is held up; each band recomputes 6 rows."""
    n = numba.get_num_threads()
    return 1 if n == 1 else 2 * n


def _rias_block(xp, pad, oy, ox, out, ws):
    """One block: padded mosaic rows ``xp`` -> ``out`` rows, using workspace planes ``ws``."""
    hp, wp = xp.shape
    planes = iter(ws["planes"])

    def plane():
        return next(planes)[:hp]

    # Each stage fills the window [m, h - m) x [m, w - m) of the padded planes; the margins
    # grow from the output (at ``pad``) outwards by each stage's reach.
    m_r = pad - 1 - 2 * RB_RADIUS  # stage 4's full red (stage 5 fits over +-3 and averages over +-3)
    m_t = m_r - 1  # red/blue tentatives (residuals at +-1)
    m_c = m_t - RB_RADIUS  # red/blue coefficients (averaged over +-3)
    m_g = m_c - RB_RADIUS - 2  # green (fit window +-3, Laplacian +-2)
    m_d = m_g - BLEND_RADIUS - 1  # fused differences (window +-8, Laplacian +-1)
    m_1 = m_d - 4  # directional differences (gradient, Gaussian, side shift; taps +-4)

    # stages 1 and 1b: along rows, then along columns on the transposed mosaic
    buf = ws["rowbuf"]
    dh, dv, p3, p4, p5, p6 = (plane() for _ in range(6))
    ari = [b[:hp] for b in ws["ari"]]  # horizontal and vertical stage 1b difference and criterion
    _stage1(xp, oy, ox, m_1, m_g, buf, dh, ari[0], ari[1], p3, p4)
    xt = ws["t"][0][:, :hp]  # planes 2-7 (p3 .. t_c below): nothing in them is live until stage 2
    cv2.transpose(xp, xt)  # OpenCV's blocked transpose: ~2x numpy's strided copy
    tp = [b[:, :hp] for b in ws["t"][1:]]
    _stage1(xt, ox, oy, m_1, m_g, buf, *tp[:5])
    for src, dst in ((tp[0], dv), (tp[1], ari[2]), (tp[2], ari[3])):
        cv2.transpose(src, dst)
    a_g, b_g, a_c, b_c, t_g, t_c = p3, p4, p5, p6, plane(), plane()

    # stage 2
    gh, gv, tmp, wh, wv = a_g, b_g, a_c, b_c, plane()
    m = m_d - 3
    _gradients(dh, dv, m, hp - m, m, wp - m, gh, gv)
    for src, dst in ((gh, wh), (gv, wv)):
        _GAUSS_ROWS(src, m, hp - m, m + 2, wp - m - 2, tmp)
        _GAUSS_COLS(tmp, m + 2, hp - m - 2, m + 2, wp - m - 2, dst)
    d_short, d_long = t_g, t_c
    _fuse(dh, dv, wh, wv, m_d, hp - m_d, m_d, wp - m_d, d_short, d_long)

    # stage 3
    dis, lap = dh, dv
    m = m_d + 1
    _blend_stats(xp, oy, ox, d_short, m, hp - m, m, wp - m, d_long, dis, lap)
    dis_s, lap_s = gh, gv
    for src, dst in ((dis, dis_s), (lap, lap_s)):
        _BLEND_ROWS(src, m, hp - m, m_g, wp - m_g, tmp)
        _BLEND_COLS(tmp, m_g, hp - m_g, m_g, wp - m_g, dst)
    green = wh
    _green(xp, oy, ox, d_short, d_long, dis_s, lap_s, *ari, m_g, hp - m_g, m_g, wp - m_g, green)

    # stage 4: red at (oy, ox), blue at the opposite phase; red is needed around the output
    # (stage 5's guide), blue only on it
    hs = ws["hs"]
    t = wv
    chunks = _chunks()
    red, blue4 = ari[0], ari[1]
    rr = RB_RADIUS
    for (cy, cx), mt, m_out, full in (((oy, ox), m_t, m_r, red), ((1 - oy, 1 - ox), pad - 1, pad, blue4)):
        mc = mt - rr
        _rb_rows(xp, green, cy, cx, mc - rr, hp - mc + rr, mc, wp - mc, hs, buf)
        _rb_fit(cy, cx, hs, green, mt, hp - mt, mt, wp - mt, t, ws["ring"], chunks)
        _rb_full(xp, cy, cx, t, m_out, hp - m_out, m_out, wp - m_out, full)

    # stage 5: blue with green and red as guides, mixed with stage 4's blue
    cy, cx = 1 - oy, 1 - ox
    mt = pad - 1
    mc = mt - rr
    t5 = ari[3]
    _b2_rows(xp, green, red, cy, cx, mc - rr, hp - mc + rr, mc, wp - mc, hs, buf)
    _b2_fit(cy, cx, hs, green, red, mt, hp - mt, mt, wp - mt, t5, ws["ring"], ws["sums"], chunks)
    _output(xp, cy, cx, t5, blue4, red, green, pad, out)


STRIP = 512  # output rows per block (even), at most: bounds the workspace

_workspace = threading.local()  # per thread: the buffers of the last call, reused while they fit


def _workspace_for(rows: int, wp: int) -> dict:
    """Planes for blocks of ``rows`` x ``wp`` padded pixels, C-contiguous (numba vectorises row
    loops on those), cut from this thread's buffers of the previous call if they are big enough.
    A tile pipeline calls once per tile; fresh memory would be faulted in again each time
    (7 % of the demosaic's CPU time in the pipeline on this VM)."""
    threads = numba.config.NUMBA_NUM_THREADS
    sizes = {  # name: (count, dtype, shape)
        "planes": (9, np.float32, (rows, wp)),
        "rowbuf": (1, np.float32, (threads, 10, max(wp, rows))),
        "ari": (4, np.float32, (rows, wp)),
        "hs": (1, np.float32, (rows // 2 + 1, 9, wp)),  # stage 4: 7 sums, stage 5: 9
        "sums": (1, np.float32, (threads, 9, wp)),
        "ring": (1, np.float32, (threads, 4, 8, wp)),  # stages 4 and 5: row sums of 7 rows + one
    }
    buffers = getattr(_workspace, "buffers", None)
    if buffers is None or any(buffers[k][0].size < math.prod(shape) for k, (_, _, shape) in sizes.items()):
        old = {k: v[0].size for k, v in buffers.items()} if buffers else {}
        buffers = _workspace.buffers = None  # drop the old buffers before allocating bigger ones
        buffers = _workspace.buffers = {k: [np.empty(max(math.prod(shape), old.get(k, 0)), dtype) for _ in range(n)]
                   for k, (n, dtype, shape) in sizes.items()}
    ws = {k: [b[:math.prod(shape)].reshape(shape) for b in buffers[k]] for k, (_, _, shape) in sizes.items()}
    for k in ("rowbuf", "hs", "sums", "ring"):
        ws[k] = ws[k][0]
    # The transposed mosaic and stage 1's column-direction outputs live in planes 2-7, which are
    # free while stage 1 runs along the columns (see _rias_block): 6 planes less to hold.
    ws["t"] = [buffers["planes"][i][:rows * wp].reshape(wp, rows) for i in range(2, 8)]
    return ws


def free_workspace() -> None:
    """Release this thread's reused buffers (they are kept between calls; see ``_workspace_for``)."""
    _workspace.buffers = None


def rias_padded(xp: np.ndarray, pad: int, oy: int, ox: int, out: np.ndarray) -> None:
    """Demosaic the padded mosaic ``xp`` (``pad >= RADIUS``, even) into ``out`` (H, W, 3).

    Works in strips of equal height (at most ``STRIP`` output rows) that overlap by the
    dependency radius, so the result is the same as in one piece. The strips share one
    workspace, kept for this thread's next call, so fresh memory is touched once rather than
    once per stage, strip and tile.
    """
    if pad < RADIUS or pad % 2:
        raise ValueError(f"RIAS needs an even padding of at least {RADIUS} pixels")
    h = out.shape[0]
    wp = xp.shape[1]
    n = -(-h // STRIP)
    strip = -(-h // n)  # equal heights: 886 rows as 2 x 444, not 512 + 374 (less workspace)
    strip += strip & 1
    ws = _workspace_for(min(strip, h) + 2 * pad, wp)
    for r0 in range(0, h, strip):
        r1 = min(r0 + strip, h)
        _rias_block(xp[r0:r1 + 2 * pad], pad, oy, ox, out[r0:r1], ws)
