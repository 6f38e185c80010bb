"""Save developed images: encode in memory with OpenCV, then write the file atomically.

Usage::

    from magcam.pipeline import write_jpeg, write_png
    write_jpeg("capture_0007.jpg", rgb)   # rgb: (H, W, 3) uint8, R, G, B
    write_png("capture_0007.png", rgb)    # uint8 or uint16
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from magcam.atomic import write_bytes_atomic


def write_jpeg(path: str | os.PathLike, rgb_uint8: np.ndarray, quality: int = 92) -> Path:
    """Write an (H, W, 3) uint8 RGB image as a baseline JPEG; return the path."""
    if not 0 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 0..100, got {quality}")
    _check_rgb(rgb_uint8, (np.uint8,))
    return _write(path, ".jpg", rgb_uint8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 or uint16 RGB image as a PNG; return the path."""
    _check_rgb(rgb, (np.uint8, np.uint16))
    return _write(path, ".png", rgb, [])


def _check_rgb(rgb: np.ndarray, dtypes: tuple) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in dtypes:
        names = " or ".join(np.dtype(d).name for d in dtypes)
        raise ValueError(f"expected an (H, W, 3) {names} RGB array")


def _write(path: str | os.PathLike, ext: str, rgb: np.ndarray, params: list[int]) -> Path:
    path = Path(path)
    # OpenCV encoders take BGR.
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {rgb.shape[1]}x{rgb.shape[0]} image as {ext}")
    write_bytes_atomic(path, encoded.tobytes())
    return path
