"""Colour science shared by the sensor model, the DNG writer and the pipeline.

Conventions (as in the DNG spec): ``color_matrix_1`` in the module descriptor maps CIE XYZ
(under ``illuminant_1``, D65 here) to the camera's native RGB. The camera's raw response is
normalised so that a perfect white diffuser gives 1.0 in the green channel; the other two
channels of that white are the *as-shot neutral*.
"""

from __future__ import annotations

import numpy as np

# IEC 61966-2-1 linear sRGB (D65) -> XYZ.
SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
XYZ_TO_SRGB = np.linalg.inv(SRGB_TO_XYZ)
D65_WHITE_XYZ = SRGB_TO_XYZ @ np.ones(3)  # (0.9505, 1.0, 1.089)

# EXIF LightSource / DNG CalibrationIlluminant codes.
ILLUMINANT_CODES = {"D65": 21, "D50": 23, "A": 17, "D55": 20, "D75": 22}


def xyz_to_camera(descriptor: dict) -> np.ndarray:
    """The descriptor's ColorMatrix1 (XYZ -> camera native), 3x3."""
    m = np.asarray(descriptor["color"]["color_matrix_1"], dtype=np.float64)
    if m.shape != (9,) or not np.all(np.isfinite(m)):
        raise ValueError("descriptor color.color_matrix_1 must be 9 finite numbers")
    return m.reshape(3, 3)


def as_shot_neutral(descriptor: dict) -> np.ndarray:
    """Camera response to the D65 white, normalised to green = 1."""
    white = xyz_to_camera(descriptor) @ D65_WHITE_XYZ
    if white[1] <= 0 or np.any(white <= 0):
        raise ValueError("descriptor colour matrix gives a non-positive white response")
    return white / white[1]


def linear_srgb_to_camera(descriptor: dict) -> np.ndarray:
    """3x3 matrix from linear sRGB to normalised camera RGB (white -> as-shot neutral)."""
    m = xyz_to_camera(descriptor) @ SRGB_TO_XYZ
    return m / (xyz_to_camera(descriptor) @ D65_WHITE_XYZ)[1]


def camera_to_linear_srgb(descriptor: dict) -> np.ndarray:
    """3x3 matrix from white-balanced camera RGB (neutral -> 1,1,1) to linear sRGB."""
    return np.linalg.inv(linear_srgb_to_camera(descriptor)) @ np.diag(as_shot_neutral(descriptor))


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light."""
    v = np.asarray(v, dtype=np.float32)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> sRGB-encoded values (clipped to [0, 1])."""
    v = np.clip(np.asarray(v, dtype=np.float32), 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(v, 1 / 2.4) - 0.055).astype(np.float32)
