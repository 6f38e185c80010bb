"""Stage 9 and the output encoding: tone curve, transfer function, quantisation.

* ``gamma``: ``srgb`` (IEC 61966-2-1 curve; Display P3 uses the same) or ``linear``.
* ``tone``: ``none`` or ``filmic``: a gentle shoulder. Below 0.55 linear nothing changes;
  above, ``t + (1 - t) * u / (1 + c u)`` with ``u = (x - t) / (1 - t)`` rolls values up to the
  ``headroom`` (1.25 after clipping: saturated colours the colour matrix pushes past 1.0;
  up to 4 with ``highlights=blend``) smoothly into 0..1 (slope 1 at the knee, so midtones and
  shadows are untouched).

Non-linear curves go through one lookup table over the input range (exact for every pixel
wherever it sits): 2^20 steps for 16-bit output, far finer than a 12-bit sensor's steps; 2^16
for 8-bit output (a quarter of an 8-bit code at the steepest point of the sRGB curve, and a
table that stays in cache: twice as fast).
"""

from __future__ import annotations

import numpy as np

from magcam.pipeline.errors import PipelineError

GAMMAS = ("srgb", "linear")
TONES = ("none", "filmic")
KNEE = 0.55
_LUT_STEPS = 1 << 20


def srgb_encode(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(v, 1 / 2.4) - 0.055)


def filmic(x: np.ndarray, headroom: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if headroom <= 1.0:
        return np.minimum(x, 1.0)
    big_u = (headroom - KNEE) / (1 - KNEE)
    c = (big_u - 1) / big_u
    u = np.maximum(x - KNEE, 0) / (1 - KNEE)
    return np.where(x <= KNEE, x, KNEE + (1 - KNEE) * u / (1 + c * u))


class Encoder:
    """Linear output RGB (float32) -> encoded values in [0, 1] (float32)."""

    def __init__(self, gamma: str = "srgb", tone: str = "none", headroom: float = 1.0, steps: int = _LUT_STEPS):
        if gamma not in GAMMAS:
            raise PipelineError(f"gamma must be one of {GAMMAS}, got {gamma!r}")
        if tone not in TONES:
            raise PipelineError(f"tone must be one of {TONES}, got {tone!r}")
        self.gamma, self.tone = gamma, tone
        self.top = float(headroom) if tone == "filmic" else 1.0
        self.lut = None
        if gamma != "linear" or tone != "none":
            x = np.linspace(0.0, self.top, steps)
            y = filmic(x, self.top) if tone == "filmic" else x
            if gamma == "srgb":
                y = srgb_encode(y)
            self.lut = np.clip(y, 0, 1).astype(np.float32)
            self._scale = np.float32((steps - 1) / self.top)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if self.lut is None:
            return np.clip(rgb, np.float32(0), np.float32(1), out=rgb)
        idx = np.clip(rgb, np.float32(0), np.float32(self.top))
        idx *= self._scale
        idx += np.float32(0.5)
        return self.lut[idx.astype(np.int32)]


def quantize(encoded: np.ndarray, bits: int) -> np.ndarray:
    if bits not in (8, 16):
        raise PipelineError(f"bits must be 8 or 16, got {bits}")
    top = np.float32(255 if bits == 8 else 65535)
    v = np.clip(encoded, np.float32(0), np.float32(1))
    v *= top
    np.rint(v, out=v)
    return v.astype(np.uint8 if bits == 8 else np.uint16)
