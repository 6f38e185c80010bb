"""Small separable filters that give bit-identical results wherever a pixel sits in the array.

Tiled processing must equal whole-image processing exactly. OpenCV's float filters do not
guarantee that: their SIMD body and scalar tail round differently, so the same pixel can come
out one ulp apart in a tile and in the whole image (measured for GaussianBlur, sepFilter2D,
filter2D and cvtColor). Here every output is the same sequence of elementwise float32 numpy
operations on the same neighbours, whatever its position, so the result depends only on the
neighbourhood. Order statistics (cv2.medianBlur, cv2.dilate/erode) are exact anyway.

Borders reflect without repeating the edge sample (OpenCV's BORDER_REFLECT_101, numpy's
"reflect"), so a tile that touches the image border treats it as the whole image does.
"""

from __future__ import annotations

import numpy as np

BINOMIAL5 = np.array([1, 4, 6, 4, 1], np.float32) / np.float32(16)
BINOMIAL3 = np.array([1, 2, 1], np.float32) / np.float32(4)


def convolve_axis(img: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric odd ``kernel`` along ``axis`` (0 rows, 1 columns) of a 2-D or (H, W, C) array."""
    k = np.asarray(kernel, np.float32)
    r = len(k) // 2
    if r == 0:
        return img * k[0]
    n = img.shape[axis]
    if n <= r:  # too small to reflect: repeat the edge instead
        pad_mode = "edge"
    else:
        pad_mode = "reflect"
    widths = [(0, 0)] * img.ndim
    widths[axis] = (r, r)
    p = np.pad(img, widths, mode=pad_mode)

    def sl(start):
        idx = [slice(None)] * img.ndim
        idx[axis] = slice(start, start + n)
        return p[tuple(idx)]

    out = sl(r) * k[r]
    tmp = np.empty_like(out)
    for i in range(r):  # symmetric pairs, nearest first: the same order for every pixel
        np.add(sl(r - 1 - i), sl(r + 1 + i), out=tmp)
        tmp *= k[r + 1 + i]
        out += tmp
    return out


def separable(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The same symmetric kernel along rows, then columns."""
    return convolve_axis(convolve_axis(img, kernel, 0), kernel, 1)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised symmetric Gaussian taps out to 3 sigma (float32)."""
    r = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def kernel_radius(kernel: np.ndarray) -> int:
    return len(kernel) // 2
