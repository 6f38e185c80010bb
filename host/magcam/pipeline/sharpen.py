"""Stage 10: sharpening: an unsharp mask on luma, in the output encoding.

``detail = Y - gaussian(Y, radius)`` with ``Y = (R + 2G + B) / 4`` of the encoded image; the
same ``amount * detail`` is added to all three channels, so edges get crisper without colour
fringes. Detail below ``threshold`` (encoded units) is left alone so flat noisy areas are not
sharpened. Exact per pixel (see filters.py). Margin a tile needs: ``margin(radius)``.
"""

from __future__ import annotations

import numpy as np

from magcam.pipeline import filters
from magcam.pipeline.errors import check_rgb


def margin(radius: float) -> int:
    return filters.kernel_radius(filters.gaussian_kernel(radius))


def sharpen(rgb: np.ndarray, amount: float, radius: float = 1.0, threshold: float = 0.0) -> np.ndarray:
    """Unsharp mask on luma, added to R, G, B alike, in place on (H, W, 3) float32."""
    check_rgb(rgb, "sharpen", (np.float32,))
    if amount <= 0:
        return rgb
    y = (rgb[..., 0] + rgb[..., 1] + rgb[..., 1] + rgb[..., 2]) * np.float32(0.25)
    detail = y - filters.separable(y, filters.gaussian_kernel(radius))
    if threshold > 0:
        mag = np.abs(detail)
        mag -= np.float32(threshold)
        np.maximum(mag, np.float32(0), out=mag)
        np.copysign(mag, detail, out=detail)
    detail *= np.float32(amount)
    rgb += detail[..., None]
    return rgb
