"""Stage 8: noise reduction in linear RGB, split into luma and chroma.

The image is taken to an opponent space (exactly invertible)::

    Y = (R + 2G + B) / 4,   Cr = R - G,   Cb = B - G

* chroma (``chroma`` strength, 0..1): Cr and Cb are averaged over 2x2 blocks, a 5x5 median
  at that half resolution (an edge-preserving 10x10 px footprint: colour blotches go, colour
  edges stay) and a 5-tap binomial smooth follow, and the result is upsampled bilinearly. The
  eye resolves colour far more coarsely than brightness, so this removes most visible noise.
  Given the frame's noise (``chroma_sigma``: level -> the Cr and Cb noise), only what the
  smoothing takes away *within* ``CHROMA_K`` sigma of the pixel's own chroma is removed
  (times the strength): noise goes, while fine colour detail standing out of the noise (a
  thin coloured line, a colour edge's first pixels) is kept less that threshold, so a clean
  frame keeps its full colour resolution. Without it, the smoothed chroma is mixed with the
  original by the strength wherever it differs (a plain low-pass);
* luma (``luma`` strength, ~0..2): the high-pass ``Y - blur(Y)`` (5-tap binomial) is
  soft-thresholded at ``strength * sigma(level)`` from the frame's measured noise model, so
  grain below the noise level goes and edges, far above it, stay (less the threshold).

Everything here is elementwise numpy or an order statistic, so a tile gives exactly what the
whole frame gives. Margin a tile needs: ``MARGIN`` px.
"""

from __future__ import annotations

import cv2
import numpy as np

from magcam.pipeline import filters
from magcam.pipeline.errors import check_rgb
from magcam.pipeline.noise import sigma_fn

# chroma: 2x2 average (0), 5x5 median at half res (2 -> 4 px), binomial5 (2 -> 4 px),
# bilinear upsample (1 half-res px -> 2 px); luma: binomial5 (2 px). Rounded up, even.
MARGIN = 12
# Chroma residuals within this many sigma of the frame's noise model (taken through the colour
# matrix; RIAS demosaicing leaves about half that much chroma noise) count as noise. 3 rather
# than 2: it still removes noise that was never smoothed by a demosaic (i.i.d. per pixel) about
# as well as the plain low-pass (tests), for 0.1-0.3 dB less CPSNR on the ISP chart
# (docs/pipeline.md).
CHROMA_K = 3.0


def to_opponent(rgb: np.ndarray):
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = (r + g + g + b) * np.float32(0.25)
    return y, r - g, b - g


def from_opponent(y, cr, cb, out: np.ndarray) -> np.ndarray:
    g = y - (cr + cb) * np.float32(0.25)
    out[..., 0] = cr + g
    out[..., 1] = g
    out[..., 2] = cb + g
    return out


def denoise(rgb: np.ndarray, *, chroma: float = 0.0, luma: float = 0.0, sigma=None, chroma_sigma=None) -> np.ndarray:
    """Denoise (H, W, 3) float32 with even H, W (a region at even frame coordinates).

    ``sigma``: level -> luma noise; ``chroma_sigma``: a pair level -> Cr, Cb noise, each
    already times ``CHROMA_K`` (see ``chroma_thresholds``); None: chroma is plainly low-passed."""
    check_rgb(rgb, "denoise", (np.float32,), even=True)
    if chroma <= 0 and (luma <= 0 or sigma is None):
        return rgb
    y, cr, cb = to_opponent(rgb)
    if chroma > 0:
        level = np.maximum(y, np.float32(0)) if chroma_sigma is not None else None
        cr = _chroma(cr, chroma, None if level is None else chroma_sigma[0](level))
        cb = _chroma(cb, chroma, None if level is None else chroma_sigma[1](level))
    if luma > 0 and sigma is not None:
        y = _luma(y, luma, sigma)
    return from_opponent(y, cr, cb, rgb)


def chroma_scales(matrix: np.ndarray, mult: np.ndarray) -> tuple[float, float]:
    """``CHROMA_K`` times the factor from raw noise (white = 1) to the noise of Cr = R - G and
    Cb = B - G after white balance ``mult`` and ``matrix`` (independent noise per raw channel:
    each weight's square adds)."""
    m = np.asarray(matrix, np.float64) * np.asarray(mult, np.float64)  # output = m @ balanced raw
    cr, cb = (float(np.sqrt(np.sum((np.array(w, np.float64) @ m) ** 2))) for w in ((1, -1, 0), (0, -1, 1)))
    return CHROMA_K * cr, CHROMA_K * cb


def chroma_thresholds(a: float, b: float, matrix: np.ndarray, mult: np.ndarray):
    """The noise model ``sigma^2 = a level + b`` -> ``denoise``'s ``chroma_sigma``: the pair
    level -> ``CHROMA_K`` sigma of Cr and of Cb."""
    return tuple(sigma_fn(a, b, scale=s) for s in chroma_scales(matrix, mult))


def _chroma(c: np.ndarray, strength: float, threshold=None) -> np.ndarray:
    """``threshold``: per-pixel noise threshold (float32, c's shape) or None (plain low-pass)."""
    h, w = c.shape
    half = (c[0::2, 0::2] + c[0::2, 1::2]) + (c[1::2, 0::2] + c[1::2, 1::2])
    half *= np.float32(0.25)
    if min(half.shape) >= 3:
        half = cv2.medianBlur(np.ascontiguousarray(half), 5)
    half = filters.separable(half, filters.BINOMIAL5)
    full = _upsample2(half)
    if threshold is not None:  # c - strength * clip(c - full, -t, t), in this order (fused.encode)
        full -= c
        np.negative(full, out=full)
        np.clip(full, -threshold, threshold, out=full)
        full *= np.float32(strength)
        np.subtract(c, full, out=full)
        return full
    if strength >= 1:
        return full
    s = np.float32(strength)
    full -= c
    full *= s
    full += c
    return full


def _upsample2(half: np.ndarray) -> np.ndarray:
    """Bilinear 2x upsampling with sample centres at 2i + 0.5: even outputs take 3/4 of their
    own cell and 1/4 of the previous, odd ones 1/4 of the next."""
    def axis(a, ax):
        n = a.shape[ax]
        prev = np.take(a, np.r_[0, np.arange(n - 1)], axis=ax)
        nxt = np.take(a, np.r_[np.arange(1, n), n - 1], axis=ax)
        even = a * np.float32(0.75) + prev * np.float32(0.25)
        odd = a * np.float32(0.75) + nxt * np.float32(0.25)
        shape = list(a.shape)
        shape[ax] *= 2
        out = np.empty(shape, np.float32)
        idx_e = [slice(None)] * a.ndim
        idx_o = [slice(None)] * a.ndim
        idx_e[ax], idx_o[ax] = slice(0, None, 2), slice(1, None, 2)
        out[tuple(idx_e)] = even
        out[tuple(idx_o)] = odd
        return out

    return axis(axis(half, 0), 1)


def _luma(y: np.ndarray, strength: float, sigma) -> np.ndarray:
    base = filters.separable(y, filters.BINOMIAL5)
    detail = y - base
    thr = sigma(np.maximum(base, np.float32(0)))
    thr *= np.float32(strength)
    mag = np.abs(detail)
    mag -= thr
    np.maximum(mag, np.float32(0), out=mag)
    np.copysign(mag, detail, out=mag)
    base += mag
    return base
