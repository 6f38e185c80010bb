"""Local tone mapping: fit a high dynamic range linear image onto a display, shadows and
highlights both visible, without flattening local contrast.

The classic base/detail split (Durand & Dorsey 2002) with a guided filter (He et al. 2010) as
the edge-aware smoother, run at reduced resolution ("fast guided filter") so a 20 MP frame
costs a fraction of a second:

1. ``L = log2(Y)``, Y the luminance of the linear RGB;
2. ``base`` = guided filter of L guided by itself: large-scale brightness, edges kept (a step
   of several stops stays a step, so compressing it leaves no halo); ``detail = L - base``;
3. the base's range (0.5th..99.5th percentile) is scaled to ``target_stops`` if it is wider,
   anchored so its 99.5th percentile lands at ``white`` (linear); detail is kept (times
   ``detail``);
4. RGB is scaled by the new/old luminance ratio (hue and saturation kept), and whatever still
   exceeds 1.0 rolls off through the pipeline's filmic shoulder.

The output is linear, display referred, in [0, 1]; encode it with ``tone.srgb_encode``.

Usage::

    from magcam.pipeline import localtone
    display = localtone.tonemap(linear_rgb)             # float32 (H, W, 3), linear, 0..1
    rgb8 = tone.quantize(tone.srgb_encode(display).astype(np.float32), 8)
"""

from __future__ import annotations

import cv2
import numpy as np

from magcam.pipeline import tone
from magcam.pipeline.errors import PipelineError

# Rec. 709 / sRGB luminance weights.
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
_WORK_SIDE = 768  # the guided filter's coefficients are computed at about this size


def guided_filter_self(src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Guided filter of ``src`` (float32 2-D) guided by itself, at full resolution.

    Coefficients ``a = var / (var + eps)``, ``b = (1 - a) mean`` per window are computed on a
    copy shrunk to about ``_WORK_SIDE`` px, box-averaged, and interpolated back (the fast
    guided filter): they are smooth by construction, so little is lost.
    """
    h, w = src.shape
    f = max(1, round(max(h, w) / _WORK_SIDE))
    small = cv2.resize(src, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA) if f > 1 else src
    r = max(1, round(radius / f))
    ksize = (2 * r + 1, 2 * r + 1)
    mean = cv2.blur(small, ksize, borderType=cv2.BORDER_REFLECT)
    var = cv2.blur(small * small, ksize, borderType=cv2.BORDER_REFLECT) - mean * mean
    np.maximum(var, 0, out=var)
    a = var / (var + np.float32(eps))
    b = mean - a * mean
    a = cv2.blur(a, ksize, borderType=cv2.BORDER_REFLECT)
    b = cv2.blur(b, ksize, borderType=cv2.BORDER_REFLECT)
    if f > 1:
        a = cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)
        b = cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
    return a * src + b


def tonemap(rgb: np.ndarray, *, target_stops: float = 6.0, detail: float = 1.2, white: float = 0.9,
            eps: float = 0.25, radius: int | None = None) -> np.ndarray:
    """Linear RGB (float, any positive scale) -> linear display RGB in [0, 1], float32.

    ``target_stops``: range the large-scale brightness is compressed to (nothing is compressed
    when the image already fits). ``eps`` (in stops squared) decides what counts as an edge:
    steps much larger than ``sqrt(eps)`` stops stay in the base. ``radius`` of the smoothing,
    default 2 % of the longer side.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise PipelineError(f"tonemap needs an (H, W, 3) image, got shape {rgb.shape}")
    if not target_stops > 0 or not white > 0:
        raise PipelineError("target_stops and white must be positive")
    h, w = rgb.shape[:2]
    rgb = np.maximum(rgb, 0)
    y = rgb @ _LUMA
    top = float(np.percentile(y, 99.9))
    if not np.isfinite(top) or top <= 0:
        return np.zeros_like(rgb)  # a black frame stays black
    floor = np.float32(top * 2.0 ** -24)  # far below any signal: keeps log2 finite at zero
    y = np.maximum(y, floor)
    log_y = np.log2(y)
    base = guided_filter_self(log_y, radius or max(2, int(0.02 * max(h, w))), eps)
    lo, hi = np.percentile(base, [0.5, 99.5])
    span = float(hi - lo)
    c = np.float32(min(1.0, target_stops / span) if span > 0 else 1.0)
    new_log = (base - np.float32(hi)) * c + (log_y - base) * np.float32(detail) + np.float32(np.log2(white))
    gain = np.exp2(new_log - log_y)
    out = rgb * gain[..., None]
    peak = float(np.percentile(out.max(axis=2), 99.95))
    if peak > 1.0:  # a shoulder for what still sticks out (specular highlights, light sources)
        _shoulder(out, peak)
    return np.clip(out, 0, 1, out=out)


def _shoulder(x: np.ndarray, headroom: float) -> None:
    """``tone.filmic`` in place, in float32 (a 20 MP image in float64 would be half a GB)."""
    knee = np.float32(tone.KNEE)
    big_u = (headroom - tone.KNEE) / (1 - tone.KNEE)
    c = np.float32((big_u - 1) / big_u)
    above = x > knee
    u = (x[above] - knee) / (1 - knee)
    x[above] = knee + (1 - knee) * u / (1 + c * u)
