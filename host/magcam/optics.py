"""Thin-lens optics of the module's lens: lens position <-> focus distance, and defocus blur.

The lens focuses by moving away from the sensor (unit focusing). Its extension beyond the focal
length is linear in the actuator position: ``position_min`` is focused at infinity (no
extension), ``position_max`` at the minimum focus distance ``lens.min_focus_m`` of the
descriptor (default :data:`DEFAULT_MIN_FOCUS_M`, so older descriptors work). With the thin-lens
equation ``1/f = 1/s + 1/(f + e)`` that gives:

* the extension that focuses a subject at ``s``: ``e(s) = f^2 / (s - f)``;
* the blur circle (diameter on the sensor) of a subject at ``s`` when the lens is focused at
  ``s_f``: ``c = f^2 / (N (s_f - f)) * |s - s_f| / s``, which is the same as
  ``c = |e(s_f) - e(s)| * (1 - f/s) / N``: linear in the lens position, zero at focus.

The simulator's sensor model (:mod:`magcam.sim.sensor`) uses this to blur the scene; focus
calibration (:mod:`magcam.focus`) fits the same model to measured AF positions, and
:func:`subject_distance_m` turns a frame's lens position into a distance via the descriptor's
``lens.focus_table``.

Usage::

    from magcam.optics import LensModel
    lens = LensModel.from_descriptor(descriptor)
    lens.position_for_distance(1.0)        # 274.6: where a subject 1 m away is sharp
    lens.focus_distance_m(500)             # 0.553 (metres; math.inf at position_min)
    lens.blur_px(500, 1.0, width=320)      # blur-circle diameter in pixels of a 320-wide frame
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_MIN_FOCUS_M = 0.3
# Gaussian with the second moment of a uniform disk of diameter c: sigma = c / 4.
SIGMA_PER_DIAMETER = 0.25
_MAX_DIRECT_SIGMA = 6.0  # larger blurs are done on a reduced copy (nothing sharp is left to keep)


@dataclass(frozen=True)
class LensModel:
    focal_mm: float
    f_number: float
    position_min: int
    position_max: int
    min_focus_m: float
    sensor_width_mm: float

    @classmethod
    def from_descriptor(cls, descriptor: dict) -> LensModel:
        """The lens of a module descriptor; ValueError naming the field if one is unusable."""
        try:
            lens, sensor = descriptor["lens"], descriptor["sensor"]
            m = cls(float(lens["focal_mm"]), float(lens["f_number"]), int(lens["position_min"]),
                    int(lens["position_max"]), float(lens.get("min_focus_m", DEFAULT_MIN_FOCUS_M)),
                    float(sensor["size_mm"][0]) if "size_mm" in sensor
                    else float(sensor["pixel_um"]) * int(sensor["width"]) / 1000)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(f"descriptor lens/sensor section unusable for the lens model: {e!r}") from None
        if not (m.focal_mm > 0 and m.f_number > 0 and m.sensor_width_mm > 0):
            raise ValueError("descriptor needs lens.focal_mm, lens.f_number and the sensor width > 0")
        if not m.position_min < m.position_max:
            raise ValueError("descriptor needs lens.position_min < lens.position_max")
        if not m.min_focus_m * 1000 > m.focal_mm:
            raise ValueError(f"lens.min_focus_m {m.min_focus_m} must exceed the focal length")
        return m

    @property
    def max_extension_mm(self) -> float:
        return extension_for_distance(self.focal_mm, self.min_focus_m)

    @property
    def mm_per_step(self) -> float:
        return self.max_extension_mm / (self.position_max - self.position_min)

    def extension_mm(self, position: float) -> float:
        return (position - self.position_min) * self.mm_per_step

    def focus_distance_m(self, position: float) -> float:
        """Where the lens at ``position`` is focused, metres (inf at or before position_min)."""
        return distance_for_extension(self.focal_mm, self.extension_mm(position))

    def position_for_distance(self, distance_m: float) -> float:
        """The (fractional) lens position that focuses a subject at ``distance_m``."""
        return self.position_min + extension_for_distance(self.focal_mm, distance_m) / self.mm_per_step

    def blur_mm(self, position: float, distance_m: float) -> float:
        """Blur-circle diameter on the sensor (mm) of a subject at ``distance_m``."""
        s = distance_m * 1000
        if not s > self.focal_mm:
            raise ValueError(f"subject distance {distance_m} m must be beyond the focal length")
        e_s = extension_for_distance(self.focal_mm, distance_m)
        return abs(self.extension_mm(position) - e_s) * (1 - self.focal_mm / s) / self.f_number

    def blur_px(self, position: float, distance_m: float, width: int) -> float:
        """Blur-circle diameter in pixels of a frame ``width`` pixels wide (the whole sensor width)."""
        return self.blur_mm(position, distance_m) * width / self.sensor_width_mm


def extension_for_distance(focal_mm: float, distance_m: float) -> float:
    """Lens extension (mm) focusing a subject at ``distance_m`` (0 for infinity)."""
    if math.isinf(distance_m):
        return 0.0
    return focal_mm * focal_mm / (distance_m * 1000 - focal_mm)


def distance_for_extension(focal_mm: float, extension_mm: float) -> float:
    if extension_mm <= 0:
        return math.inf
    return (focal_mm + focal_mm * focal_mm / extension_mm) / 1000


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """Discrete kernel of a Gaussian PSF between pixel-sized scene patches and pixel-sized
    photosites: the Gaussian convolved with a 1-pixel triangle (box * box), sampled at whole
    pixels. Continuous in sigma, a delta at 0, and a tiny defocus already leaks light into the
    neighbours (a plain pixel-integrated Gaussian would stay a delta up to sigma ~ 0.3)."""
    radius = max(1, math.ceil(4 * sigma) + 1)
    t = np.linspace(-radius - 1, radius + 1, 64 * (2 * radius + 2) + 1)  # fine grid, 1/64 px
    g = np.exp(-0.5 * (t / sigma) ** 2)
    offsets = np.arange(-radius, radius + 1)
    k = np.array([np.sum(g * np.clip(1 - np.abs(i - t), 0, None)) for i in offsets])
    return (k / k.sum()).astype(np.float32)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Blur a float32 image with a Gaussian PSF of ``sigma`` pixels (a new array; mirrored edges).

    Small blurs are exact pixel-integrated kernels (so tiny defocus changes the image smoothly,
    as an AF curve needs); large ones are blurred on a reduced copy and scaled back.
    """
    if sigma <= 0:
        return img.copy()
    h, w = img.shape[:2]
    if sigma > _MAX_DIRECT_SIGMA:
        k = max(1, min(int(sigma / (_MAX_DIRECT_SIGMA / 2)), h // 4, w // 4))
        if k > 1:
            small = cv2.resize(img, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)
            sx, sy = (w / small.shape[1]), (h / small.shape[0])
            rest = math.sqrt(max(sigma * sigma - (k * k) / 12, 0.0)) / ((sx + sy) / 2)
            small = gaussian_blur(small, rest)
            return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    kern = _gaussian_kernel(sigma)
    return cv2.sepFilter2D(img, cv2.CV_32F, kern, kern, borderType=cv2.BORDER_REFLECT)


# ---- the calibrated focus table of a descriptor -------------------------------------------------
def subject_distance_m(descriptor: dict, lens_position: int) -> float | None:
    """Focus distance (metres, math.inf at infinity) of ``lens_position`` from the descriptor's
    calibrated ``lens.focus_table``; None when the module has no focus calibration."""
    try:
        table = descriptor["lens"]["focus_table"]
        focal = float(descriptor["lens"]["focal_mm"])
        p_inf, per_step = float(table["p_inf"]), float(table["mm_per_step"])
    except (KeyError, TypeError, ValueError):
        return None
    if not per_step > 0:
        return None
    return distance_for_extension(focal, (lens_position - p_inf) * per_step)
