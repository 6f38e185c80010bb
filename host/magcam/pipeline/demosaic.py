"""Demosaicing: a Bayer mosaic (one colour per pixel) -> full RGB.

Usage::

    from magcam.pipeline.demosaic import bilinear
    rgb = bilinear(cfa, "RGGB")  # cfa: (H, W) float, rgb: (H, W, 3) float32, R, G, B
"""

from __future__ import annotations

import cv2
import numpy as np

from magcam.frame import CFA_PATTERNS

# OpenCV names a Bayer pattern by the 2x2 cell starting at row 1, column 1, not at the origin:
# an RGGB sensor (R at (0, 0)) is OpenCV's "BG". The demosaic tests pin this down.
_OPENCV_BAYER_TO_RGB = {
    "RGGB": cv2.COLOR_BayerBG2RGB,
    "BGGR": cv2.COLOR_BayerRG2RGB,
    "GRBG": cv2.COLOR_BayerGB2RGB,
    "GBRG": cv2.COLOR_BayerGR2RGB,
}

_UINT16_MAX = 65535


def bilinear(cfa_float: np.ndarray, pattern: str) -> np.ndarray:
    """Bilinear demosaic of a (H, W) mosaic with CFA ``pattern``; returns (H, W, 3) float32 RGB.

    Values may be outside [0, 1] (noise below black, overshoot): they come out on the same scale.
    """
    if pattern not in CFA_PATTERNS:
        raise ValueError(f"unknown CFA pattern {pattern!r}; expected one of {CFA_PATTERNS}")
    cfa = np.asarray(cfa_float, dtype=np.float32)
    if cfa.ndim != 2 or cfa.shape[0] < 2 or cfa.shape[1] < 2 or cfa.shape[0] % 2 or cfa.shape[1] % 2:
        raise ValueError(f"mosaic must be 2-D with even sides, got shape {cfa.shape}")
    if not np.all(np.isfinite(cfa)):
        raise ValueError("mosaic contains NaN or infinity")
    # OpenCV only demosaics 8/16-bit integers. Bilinear interpolation is linear with weights
    # summing to 1, so map the data's own range onto the full uint16 range and back: the only
    # loss is rounding to 1/65535 of that range, far below a 12-bit sensor's step.
    lo, hi = float(cfa.min()), float(cfa.max())
    scale = (hi - lo) / _UINT16_MAX or 1.0
    cfa16 = np.round((cfa - lo) / scale).astype(np.uint16)
    rgb16 = cv2.cvtColor(cfa16, _OPENCV_BAYER_TO_RGB[pattern])
    rgb = rgb16.astype(np.float32)
    rgb *= np.float32(scale)
    rgb += np.float32(lo)
    return rgb
