"""What the simulated sensor really is, when that differs from what its descriptor claims.

Calibration can only be tested against a sensor whose true response is known and is *not* the
one its descriptor states. A truth dict gives the virtual sensor its own colour matrix and lens
vignetting; the module's descriptor (in its flash) stays as it was until a calibration
rewrites it. Without a truth the sensor is exactly what the descriptor says, with no vignetting.

    truth = {
        "color_matrix_1": [0.80, -0.25, -0.05, -0.40, 1.20, 0.25, -0.10, 0.20, 0.70],  # XYZ -> camera, D65
        "vignetting": {"corner": [0.55, 0.6, 0.65], "center": [0.52, 0.48]},
    }
    SensorModel(descriptor, truth=truth)       # or Simulator(truth=truth), magcam sim --truth FILE

``vignetting`` is the relative illumination at the frame corner farthest from the optical centre
(one number, or R, G, B for colour shading), with a cos^4-like fall-off ``1 / (1 + a r^2)^2``
(``r`` = 1 at that corner); ``center`` is the optical centre in frame-relative coordinates
(default the middle). A bare number or list is taken as the ``corner``.
"""

from __future__ import annotations

import numpy as np

from magcam.pipeline import color

KEYS = ("color_matrix_1", "vignetting")


class SensorTruth:
    def __init__(self, truth: dict | None = None):
        truth = {} if truth is None else truth
        if not isinstance(truth, dict):
            raise ValueError(f"sensor truth must be a dict, got {type(truth).__name__}")
        unknown = sorted(set(truth) - set(KEYS))
        if unknown:
            raise ValueError(f"unknown sensor truth keys {unknown}; expected some of {list(KEYS)}")
        self.color_matrix = None
        if truth.get("color_matrix_1") is not None:
            as_descriptor = {"color": {"color_matrix_1": truth["color_matrix_1"]}}
            try:
                self.color_matrix = color.xyz_to_camera(as_descriptor)
                color.as_shot_neutral(as_descriptor)  # a usable white
            except (ValueError, TypeError) as e:
                raise ValueError(f"sensor truth color_matrix_1: {e}".replace("descriptor ", "")) from None
        self.corner = self.center = None
        v = truth.get("vignetting")
        if v is not None:
            if not isinstance(v, dict):
                v = {"corner": v}
            corner = np.broadcast_to(np.asarray(v.get("corner", 1.0), dtype=np.float64).ravel(), (3,))
            if corner.size != 3 or not np.all((corner > 0) & (corner <= 1)):
                raise ValueError("vignetting corner must be one number or three (R, G, B), each in (0, 1]")
            center = np.asarray(v.get("center", (0.5, 0.5)), dtype=np.float64)
            if center.shape != (2,) or not np.all((center >= 0) & (center <= 1)):
                raise ValueError("vignetting center must be two frame-relative coordinates in 0..1")
            self.corner, self.center = corner.copy(), center

    def srgb_to_camera(self, descriptor: dict) -> np.ndarray:
        """Linear sRGB -> normalised camera RGB of the true sensor (the descriptor's if none given)."""
        if self.color_matrix is None:
            return color.linear_srgb_to_camera(descriptor)
        return color.linear_srgb_to_camera({"color": {"color_matrix_1": self.color_matrix.ravel().tolist()}})

    def relative_illumination(self, width: int, height: int, channel: int, y0: int = 0, x0: int = 0,
                              step: int = 1) -> np.ndarray | None:
        """The lens's fall-off for colour ``channel`` (0 R, 1 G, 2 B): float32, 1.0 at the optical
        centre, at rows ``y0::step`` and columns ``x0::step`` of a width x height frame; None
        without vignetting."""
        if self.corner is None:
            return None
        cx, cy = self.center
        # Physical distances (pixel centres), normalised to 1 at the farthest corner.
        dx = ((np.arange(x0, width, step) + 0.5) / width - cx) * width
        dy = ((np.arange(y0, height, step) + 0.5) / height - cy) * height
        far2 = (max(cx, 1 - cx) * width) ** 2 + (max(cy, 1 - cy) * height) ** 2
        r2 = (dx[None, :] ** 2 + dy[:, None] ** 2) / far2
        a = self.corner[channel] ** -0.5 - 1.0  # (1 + a)^-2 = corner
        return (1.0 / (1.0 + a * r2) ** 2).astype(np.float32)

    def vignette(self, mosaic: np.ndarray, cfa: str) -> None:
        """Multiply a camera-response mosaic (height, width) by the fall-off of each CFA site's colour."""
        if self.corner is None:
            return
        h, w = mosaic.shape
        for i, name in enumerate(cfa):
            dy, dx = divmod(i, 2)
            mosaic[dy::2, dx::2] *= self.relative_illumination(w, h, "RGB".index(name), dy, dx, 2)
