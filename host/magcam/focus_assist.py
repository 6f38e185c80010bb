"""Focus assist on RAW frames: focus measures (Tenengrad, variance of Laplacian) and peaking.

Everything works on the 2x2-binned green of the CFA (one value per quad, black level removed):
it needs no demosaic, halves the noise of a single green site and is what a live view can
afford at several frames per second. Measures are normalised by the squared mean level of the
region, so they do not change with exposure or gain, only with sharpness.

* :func:`tenengrad` - mean squared Sobel gradient. Sobel smooths across the edge direction,
  so sensor noise adds only a small, constant floor: robust when frames are noisy.
* :func:`variance_of_laplacian` - variance of the 3x3 Laplacian: falls off faster with blur
  (more sensitive near focus) but amplifies noise; use it when noise is low.

Usage::

    from magcam.focus_assist import focus_measure, peaking_overlay, preview_rgb
    value = focus_measure(frame, method="tenengrad", roi=(0.25, 0.25, 0.5, 0.5))
    rgb = peaking_overlay(preview_rgb(frame), peaking_mask(frame))   # in-focus edges in red
"""

from __future__ import annotations

import cv2
import numpy as np

from magcam.frame import RawFrame
from magcam.pipeline.errors import PipelineError

METHODS = ("tenengrad", "laplacian")
DEFAULT_ROI = (0.25, 0.25, 0.5, 0.5)  # x, y, width, height as fractions: the centre quarter
# Peaking marks edges whose gradient exceeds this fraction of the region's mean level per
# (binned) pixel: a 1:3 contrast edge in focus reaches about 0.5, blurred by 2 px about 0.15.
PEAKING_THRESHOLD = 0.25


def binned_green(frame: RawFrame) -> np.ndarray:
    """The mean of the two green sites of every 2x2 quad, black level removed: float32 (h/2, w/2)."""
    data = frame.data
    h, w = data.shape[0] // 2 * 2, data.shape[1] // 2 * 2
    sites = [divmod(i, 2) for i, c in enumerate(frame.cfa) if c == "G"]
    (y0, x0), (y1, x1) = sites
    g = data[y0:h:2, x0:w:2].astype(np.float32)
    g += data[y1:h:2, x1:w:2]
    g *= 0.5
    g -= np.float32(frame.black_level)
    return g


def parse_roi(text: str) -> tuple[float, float, float, float]:
    """``"x,y,w,h"`` as fractions of the frame (0..1) -> tuple; click/PipelineError-friendly."""
    try:
        roi = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise PipelineError(f"ROI {text!r}: expected four numbers x,y,w,h (fractions of the frame)") from None
    if len(roi) != 4:
        raise PipelineError(f"ROI {text!r}: expected four numbers x,y,w,h (fractions of the frame)")
    return check_roi(roi)


def check_roi(roi) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in roi)
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x + 1e-9 and 0 < h <= 1 - y + 1e-9):
        raise PipelineError(f"ROI {roi}: need 0 <= x, y < 1 and 0 < w, h with the region inside the frame")
    return x, y, w, h


def crop_roi(img: np.ndarray, roi=DEFAULT_ROI) -> np.ndarray:
    x, y, w, h = check_roi(roi)
    H, W = img.shape[:2]
    x0, y0 = int(round(x * W)), int(round(y * H))
    x1, y1 = max(x0 + 4, int(round((x + w) * W))), max(y0 + 4, int(round((y + h) * H)))
    out = img[y0:min(y1, H), x0:min(x1, W)]
    if out.shape[0] < 4 or out.shape[1] < 4:
        raise PipelineError(f"ROI {roi} leaves fewer than 4x4 binned pixels of a {W}x{H} image")
    return out


def _normalise(value: float, img: np.ndarray) -> float:
    mean = float(img.mean())
    return value / (mean * mean) if mean > 1e-6 else 0.0


def tenengrad(img: np.ndarray) -> float:
    """Mean squared 3x3 Sobel gradient magnitude over the image / its squared mean level."""
    img = np.asarray(img, np.float32)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    # Interior only: the border rows are mirrored, not measured.
    energy = (gx[1:-1, 1:-1] ** 2 + gy[1:-1, 1:-1] ** 2).mean(dtype=np.float64)
    return _normalise(float(energy) / 64.0, img)  # /64: Sobel's gain of 8 per unit slope, squared


def variance_of_laplacian(img: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian over the image / its squared mean level."""
    img = np.asarray(img, np.float32)
    lap = cv2.Laplacian(img, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    return _normalise(float(lap.var(dtype=np.float64)), img)


_MEASURES = {"tenengrad": tenengrad, "laplacian": variance_of_laplacian}


def measure(img: np.ndarray, method: str = "tenengrad") -> float:
    try:
        return _MEASURES[method](img)
    except KeyError:
        raise PipelineError(f"unknown focus measure {method!r}; expected one of {METHODS}") from None


def focus_measure(frame: RawFrame, method: str = "tenengrad", roi=DEFAULT_ROI) -> float:
    """Sharpness of a RAW frame in ``roi`` (x, y, w, h fractions): larger is sharper."""
    return measure(crop_roi(binned_green(frame), roi), method)


# ---- peaking ---------------------------------------------------------------------------------
def peaking_mask(frame_or_img, threshold: float = PEAKING_THRESHOLD) -> np.ndarray:
    """Boolean mask (binned resolution) of edges that are in focus.

    A pixel is marked when its gradient, relative to the image's mean level, exceeds
    ``threshold``: sharp edges are steep, the same edges out of focus are not, whatever the
    exposure. A slight pre-smoothing keeps sensor noise from sparkling in flat areas.
    """
    img = binned_green(frame_or_img) if isinstance(frame_or_img, RawFrame) else np.asarray(frame_or_img, np.float32)
    mean = float(img.mean())
    if mean <= 1e-6:
        return np.zeros(img.shape, bool)
    smooth = cv2.GaussianBlur(img, (3, 3), 0.6, borderType=cv2.BORDER_REFLECT)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    return cv2.magnitude(gx, gy) / 8.0 > threshold * mean


def preview_rgb(frame: RawFrame) -> np.ndarray:
    """A quick uint8 RGB preview at binned resolution (grey-world balance, sRGB-like gamma)."""
    data = frame.data.astype(np.float32) - frame.black_level
    h, w = data.shape[0] // 2 * 2, data.shape[1] // 2 * 2
    planes = {"R": [], "G": [], "B": []}
    for i, c in enumerate(frame.cfa):
        dy, dx = divmod(i, 2)
        planes[c].append(data[dy:h:2, dx:w:2])
    rgb = np.dstack([np.mean(planes[c], axis=0) for c in "RGB"])
    rgb /= np.maximum(rgb.reshape(-1, 3).mean(axis=0), 1e-6) * 2.5  # grey world at 40 %
    return (np.clip(rgb, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8)


def peaking_overlay(rgb: np.ndarray, mask: np.ndarray, color=(255, 0, 0)) -> np.ndarray:
    """A copy of the uint8 RGB preview with the mask's pixels painted ``color``.

    The mask is scaled (nearest) to the preview's size when they differ."""
    out = np.array(rgb, np.uint8, copy=True)
    if mask.shape != out.shape[:2]:
        mask = cv2.resize(mask.astype(np.uint8), (out.shape[1], out.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    out[mask] = color
    return out


# ---- live focus meter ------------------------------------------------------------------------
class FocusMeter:
    """Turns streamed frames into ``{"type": "focus", ...}`` events while the ring turns.

    ``peak`` is the best measure seen so far, ``relative`` this frame's share of it (1.0: as
    sharp as it got), which is what a person turning the ring watches.

        meter = FocusMeter()
        for ev in cam.events():
            if ev["type"] == "frame" and ev["ok"]:
                focus_ev = meter.take(cam, ev)      # the frame is collected from the link
    """

    def __init__(self, method: str = "tenengrad", roi=DEFAULT_ROI):
        if method not in METHODS:
            raise PipelineError(f"unknown focus measure {method!r}; expected one of {METHODS}")
        self.method, self.roi = method, check_roi(roi)
        self.peak = 0.0
        self.peak_lens: int | None = None
        self.frames = 0

    def event(self, frame: RawFrame) -> dict:
        value = focus_measure(frame, self.method, self.roi)
        self.frames += 1
        if value > self.peak:
            self.peak, self.peak_lens = value, int(frame.lens_position)
        return {"type": "focus", "t": int(frame.timestamp_ms), "frame_id": int(frame.frame_id),
                "lens": int(frame.lens_position), "method": self.method, "measure": round(value, 6),
                "peak": round(self.peak, 6), "peak_lens": self.peak_lens,
                "relative": round(value / self.peak, 4) if self.peak > 0 else 0.0}

    def take(self, cam, frame_event: dict) -> dict | None:
        """The focus event of the streamed frame a ``frame`` event announced (None if it is gone)."""
        from magcam.link import FrameError

        try:
            frame = cam.link.wait_frame(frame_event["frame_id"], 0.5)
        except FrameError:
            return None
        return self.event(frame)
