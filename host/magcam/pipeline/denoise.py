"""Stage 8: noise reduction in linear RGB, split into luma and chroma.

The image is taken to an opponent space (exactly invertible)::

    Y = (R + 2G + B) / 4,   Cr = R - G,   Cb = B - G

* chroma (``chroma`` strength, 0..1): Cr and Cb are averaged over 2x2 blocks, a 5x5 median
  at that half resolution (an edge-preserving 10x10 px footprint: colour blotches go, colour
  edges stay) and a 5-tap binomial smooth follow, and the result is upsampled bilinearly and
  mixed with the original by the strength. The eye resolves colour far more coarsely than
  brightness, so this removes most visible noise at no visible cost;
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

# chroma: 2x2 average (0), 5x5 median at half res (2 -> 4 px), binomial5 (2 -> 4 px),
# bilinear upsample (1 half-res px -> 2 px); luma: binomial5 (2 px). Rounded up, even.
MARGIN = 12


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


def denoise(rgb: np.ndarray, *, chroma: float = 0.0, luma: float = 0.0, sigma=None) -> np.ndarray:
    """Denoise (H, W, 3) float32 with even H, W (a region at even frame coordinates)."""
    if chroma <= 0 and (luma <= 0 or sigma is None):
        return rgb
    y, cr, cb = to_opponent(rgb)
    if chroma > 0:
        cr = _chroma(cr, chroma)
        cb = _chroma(cb, chroma)
    if luma > 0 and sigma is not None:
        y = _luma(y, luma, sigma)
    return from_opponent(y, cr, cb, rgb)


def _chroma(c: np.ndarray, strength: float) -> np.ndarray:
    h, w = c.shape
    half = (c[0::2, 0::2] + c[0::2, 1::2]) + (c[1::2, 0::2] + c[1::2, 1::2])
    half *= np.float32(0.25)
    if min(half.shape) >= 3:
        half = cv2.medianBlur(np.ascontiguousarray(half), 5)
    half = filters.separable(half, filters.BINOMIAL5)
    full = _upsample2(half)
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
