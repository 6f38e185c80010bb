"""Demosaicing: a Bayer mosaic (one colour per pixel) -> full RGB.

Usage::

    from magcam.pipeline import demosaic as dm
    rgb = dm.demosaic(cfa, "RGGB")                 # default: the high-quality method (``dm.DEFAULT``)
    rgb = dm.demosaic(cfa, "RGGB", dm.PREVIEW)     # fast preview
    rgb = dm.bilinear(cfa, "RGGB")                 # cfa: (H, W) float, rgb: (H, W, 3) float32, R, G, B

Methods (``METHODS``; each ``fn(cfa float32 (H, W), pattern) -> float32 (H, W, 3)``):

``bilinear``  per-channel bilinear interpolation.
``fast``      Malvar, He & Cutler 2004 gradient-corrected linear interpolation (the preview).
``rias``      residual interpolation with adaptive colour-difference smoothing (the default):
              see ``demosaic_rias.py`` and docs/demosaic.md.

Input: any (H, W) mosaic with even sides, at least 16x16, finite values on any scale (values
above 1 or slightly negative after black subtraction are fine; outputs are on the same scale and
are not clipped). All four Bayer phases are supported: the kernels are written for one phase
and told where red sits in the 2x2 cell.

Tiling: ``OVERLAP[method]`` is the margin (pixels, even) a tile needs on every side so that
demosaicing the tile reproduces the whole-image result exactly in the tile's interior. At the
image border the mosaic is mirrored (reflect-101, which keeps the CFA phase).

The kernels are compiled by numba on first use (``cache=True``: later processes load them from
``__pycache__``); ``warm_up()`` compiles everything ahead of time.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from magcam.frame import CFA_PATTERNS
from magcam.pipeline import demosaic_linear as _lin
from magcam.pipeline import demosaic_rias as _rias

MIN_SIZE = 16

# Where red sits in the 2x2 cell (row, column); blue is at the opposite corner.
_RED_AT = {"RGGB": (0, 0), "GRBG": (0, 1), "GBRG": (1, 0), "BGGR": (1, 1)}


def _even(n: int) -> int:
    return n + (n & 1)


# Padding each method works on; also its exact tile overlap (dependency radius, made even).
_PAD = {"bilinear": _even(_lin.BILINEAR_RADIUS), "fast": _even(_lin.MALVAR_RADIUS), "rias": _even(_rias.RADIUS)}


def _check(cfa, pattern: str) -> np.ndarray:
    if pattern not in CFA_PATTERNS:
        raise ValueError(f"unknown CFA pattern {pattern!r}; expected one of {CFA_PATTERNS}")
    cfa = np.ascontiguousarray(cfa, dtype=np.float32)
    if cfa.ndim != 2 or cfa.shape[0] < 2 or cfa.shape[1] < 2 or cfa.shape[0] % 2 or cfa.shape[1] % 2:
        raise ValueError(f"mosaic must be 2-D with even sides, got shape {cfa.shape}")
    if not np.all(np.isfinite(cfa)):
        raise ValueError("mosaic contains NaN or infinity")
    return cfa


def _padded(cfa: np.ndarray, pad: int) -> np.ndarray:
    h, w = cfa.shape
    if pad >= h or pad >= w:  # reflect-101 cannot pad more than the size - 1 in one go
        return np.pad(cfa, pad, mode="reflect")  # numpy's "reflect" is reflect-101, any size
    return cv2.copyMakeBorder(cfa, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)


def _run(kernel, name: str, cfa, pattern: str) -> np.ndarray:
    cfa = _check(cfa, pattern)
    pad = _PAD[name]
    oy, ox = _RED_AT[pattern]
    out = np.empty(cfa.shape + (3,), np.float32)
    kernel(_padded(cfa, pad), pad, oy, ox, out)
    return out


def bilinear(cfa_float: np.ndarray, pattern: str) -> np.ndarray:
    """Bilinear demosaic of a (H, W) mosaic with CFA ``pattern``; returns (H, W, 3) float32 RGB.

    Values may be outside [0, 1] (noise below black, overshoot): they come out on the same scale.
    """
    return _run(_lin.bilinear_kernel, "bilinear", cfa_float, pattern)


def fast(cfa: np.ndarray, pattern: str) -> np.ndarray:
    """Malvar-He-Cutler 2004 gradient-corrected bilinear demosaic (the preview method)."""
    return _run(_lin.malvar_kernel, "fast", cfa, pattern)


def rias(cfa: np.ndarray, pattern: str) -> np.ndarray:
    """Residual interpolation with adaptive colour-difference smoothing (the default method)."""
    cfa = _check(cfa, pattern)
    if min(cfa.shape) < MIN_SIZE:
        raise ValueError(f"rias needs a mosaic of at least {MIN_SIZE}x{MIN_SIZE}, got {cfa.shape}")
    try:
        return _run(_rias.rias_padded, "rias", cfa, pattern)
    finally:  # the kernel keeps its planes for the thread's next call (the tile pipeline's case)
        _rias.free_workspace()


METHODS: dict[str, Callable[[np.ndarray, str], np.ndarray]] = {"bilinear": bilinear, "fast": fast, "rias": rias}
OVERLAP: dict[str, int] = dict(_PAD)
DEFAULT = "rias"
PREVIEW = "fast"


def demosaic(cfa: np.ndarray, pattern: str, method: str = DEFAULT) -> np.ndarray:
    """Demosaic ``cfa`` (H, W) with Bayer ``pattern`` by ``method`` (a key of ``METHODS``)."""
    try:
        fn = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown demosaic method {method!r}; expected one of {sorted(METHODS)}") from None
    return fn(cfa, pattern)


def warm_up() -> None:
    """Compile (or load from numba's cache) every method's kernels, on a tiny mosaic."""
    tiny = np.zeros((MIN_SIZE, MIN_SIZE), np.float32)
    for fn in METHODS.values():
        fn(tiny, "RGGB")
