"""Virtual image sensor of the simulator: turns a scene into noisy Bayer samples on request.

The simulated firmware asks for frames; this module produces the uint16 CFA samples a real
sensor would deliver, from an sRGB scene (an image file or the built-in test chart), the module
descriptor's colour matrix and its noise figures. Rendering is deterministic: the same seed,
frame id and parameters always give the same bytes.

    >>> import json
    >>> from magcam.sim.sensor import SensorModel, load_scene
    >>> descriptor = json.load(open("firmware/magcam_fw/descriptor.json"))
    >>> sensor = SensorModel(descriptor, scene=load_scene("kodim01.png"), seed=7)
    >>> raw = sensor.render(1024, 768, exposure_us=10_000, analog_gain=2.0, frame_id=0)
    >>> raw.shape, raw.dtype
    ((768, 1024), dtype('uint16'))
    >>> chart = SensorModel(descriptor)  # no scene: photographs magcam.sim.chart
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections import OrderedDict

import cv2
import numpy as np

from magcam.frame import CFA_PATTERNS
from magcam.optics import SIGMA_PER_DIAMETER, LensModel, gaussian_blur
from magcam.pipeline import color
from magcam.sim.chart import draw_chart
from magcam.sim.truth import SensorTruth

MIN_SIZE, MAX_SIZE = 16, 16384
MAX_EXPOSURE_US = 60_000_000
MAX_GAIN = 64.0
# Exposure scale: a linear 1.0 in the (green-normalised) camera response collects
# REF_FILL * full_well_e electrons in REF_EXPOSURE_US.
REF_EXPOSURE_US = 10_000
REF_FILL = 0.8
# Camera-response mosaics of recent sizes are kept (preview and capture sizes usually alternate)
# as long as together they stay under this many pixels; the newest is always kept.
_CACHE_PIXELS = 64 << 20
_STRIP_PIXELS = 1 << 20  # noise is applied in row strips of about this size, to bound temporaries


def load_scene(path) -> np.ndarray:
    """Read an image file as an RGB scene: uint8 or uint16, shape (H, W, 3).

    Grey images are expanded to three channels and alpha is dropped. Raises ``ValueError``
    naming the path if the file is missing, unreadable, not an image or empty.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"scene {path}: no such file")
    if not os.path.isfile(path):
        raise ValueError(f"scene {path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"scene {path}: permission denied")
    if os.path.getsize(path) == 0:
        raise ValueError(f"scene {path}: file is empty")
    img = cv2.imread(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if img is None:
        raise ValueError(f"scene {path}: not an image OpenCV can decode")
    if img.size == 0:
        raise ValueError(f"scene {path}: image has no pixels")
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"scene {path}: unsupported sample type {img.dtype} (need 8 or 16 bit)")
    return _to_rgb(img, source=path, bgr=True)


def _to_rgb(img: np.ndarray, source: str, bgr: bool) -> np.ndarray:
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        if bgr:
            return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        return np.ascontiguousarray(img[:, :, :3])
    raise ValueError(f"{source}: expected a grey or RGB image, got shape {img.shape}")


@functools.cache
def _srgb_lut(levels: int) -> np.ndarray:
    """Linear light for every code of an 8- or 16-bit sRGB image, float32."""
    lut = color.srgb_to_linear(np.arange(levels, dtype=np.float64) / (levels - 1))
    lut.flags.writeable = False
    return lut


def _check_int(name: str, v, lo: int | None = None, hi: int | None = None) -> None:
    if not isinstance(v, numbers.Integral) or isinstance(v, bool):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name} must be in {'' if lo is None else lo}..{'' if hi is None else hi}, got {v}")


def _check_real(name: str, v) -> float:
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _crop_resize(scene: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre crop to width:height, then area-resample to exactly width x height."""
    sh, sw = scene.shape[:2]
    if sw * height > width * sh:  # scene is wider than the frame
        cw = max(1, round(sh * width / height))
        x0 = (sw - cw) // 2
        scene = scene[:, x0 : x0 + cw]
    else:
        ch = max(1, round(sw * height / width))
        y0 = (sh - ch) // 2
        scene = scene[y0 : y0 + ch]
    if scene.shape[:2] == (height, width):
        return scene
    return cv2.resize(scene, (width, height), interpolation=cv2.INTER_AREA)


class SensorModel:
    """Photographs a fixed scene with the sensor described by a module descriptor.

    ``scene`` is an RGB (or grey) uint8/uint16 sRGB image, e.g. from :func:`load_scene`; it is
    centre-cropped to each requested aspect ratio. Without a scene the sensor photographs the
    test chart of :mod:`magcam.sim.chart`, drawn at the capture size. A float32 scene is linear
    light (:mod:`magcam.sim.scenes`: a ColorChecker, a flat field). ``truth`` gives the sensor a
    colour matrix and vignetting of its own, unlike its descriptor's (:mod:`magcam.sim.truth`).
    """

    def __init__(self, descriptor: dict, scene: np.ndarray | None = None, seed: int = 0,
                 scene_distance_m: float | None = None, truth: dict | None = None):
        try:
            s = descriptor["sensor"]
            self.cfa = s["cfa"]
            self.black_level = int(s["black_level"])
            self.white_level = int(s["white_level"])
            self.full_well_e = float(s["full_well_e"])
            self.read_noise_e = float(s["read_noise_e"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"descriptor sensor section is incomplete: {e!r}") from None
        if self.cfa not in CFA_PATTERNS:
            raise ValueError(f"descriptor sensor.cfa {self.cfa!r} is not one of {CFA_PATTERNS}")
        if not 0 <= self.black_level < self.white_level <= 65535:
            raise ValueError("descriptor needs 0 <= sensor.black_level < sensor.white_level <= 65535")
        if not (self.full_well_e > 0 and self.read_noise_e >= 0):
            raise ValueError("descriptor needs sensor.full_well_e > 0 and sensor.read_noise_e >= 0")
        _check_int("seed", seed, 0)

        self.descriptor = descriptor
        self.seed = int(seed)
        self.lens_position = 0
        # The sensor's true colour response and vignetting (magcam.sim.truth); default: the descriptor's.
        self.truth = SensorTruth(truth)
        self._srgb_to_cam = self.truth.srgb_to_camera(descriptor)
        self._scene = None if scene is None else self._check_scene(scene)
        self._mosaics: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        # Optics: the scene is a plane at scene_distance_m (None: everything in focus, as before).
        try:
            self.lens: LensModel | None = LensModel.from_descriptor(descriptor)
        except ValueError as e:
            self.lens, self._lens_error = None, str(e)  # fine until a scene distance is set
        self.scene_distance_m = scene_distance_m
        self._defocused: OrderedDict[tuple, np.ndarray] = OrderedDict()

    @staticmethod
    def _check_scene(scene) -> np.ndarray:
        if isinstance(scene, np.ndarray) and scene.dtype == np.float32:  # linear light (sim.scenes)
            if scene.size == 0 or not np.all(np.isfinite(scene)):
                raise ValueError("a float32 scene must be non-empty and finite")
        elif not isinstance(scene, np.ndarray) or scene.dtype not in (np.uint8, np.uint16):
            raise ValueError("scene must be a uint8 or uint16 sRGB or float32 linear numpy array")
        if scene.size == 0:
            raise ValueError("scene has no pixels")
        rgb = _to_rgb(scene, source="scene", bgr=False)
        # Own copy, so later changes by the caller cannot leave the cache stale.
        return rgb.copy() if np.shares_memory(rgb, scene) else rgb

    def _camera_mosaic(self, width: int, height: int) -> np.ndarray:
        """Noise-free camera response at each CFA site, float32 (height, width), cached per size."""
        key = (width, height)
        if key in self._mosaics:
            self._mosaics.move_to_end(key)
            return self._mosaics[key]

        if self._scene is None:
            scene = draw_chart(width, height)
        else:
            scene = _crop_resize(self._scene, width, height)
        lut = None if scene.dtype == np.float32 else _srgb_lut(256 if scene.dtype == np.uint8 else 65536)
        mosaic = np.empty((height, width), np.float32)
        # Each site needs only its own channel of the camera RGB, so only that row of the
        # matrix is applied, folded into the sRGB lookup table.
        for i, name in enumerate(self.cfa):
            dy, dx = divmod(i, 2)
            weights = self._srgb_to_cam["RGB".index(name)]
            site = scene[dy::2, dx::2]
            if lut is None:  # linear float scene: may hold colours outside sRGB (negative values)
                acc = site @ weights.astype(np.float32)
            else:
                acc = (weights[0] * lut).astype(np.float32)[site[..., 0]]
                acc += (weights[1] * lut).astype(np.float32)[site[..., 1]]
                acc += (weights[2] * lut).astype(np.float32)[site[..., 2]]
            # Saturated sRGB colours can map outside the camera gamut; no sensor sees negative light.
            np.maximum(acc, 0.0, out=acc)
            mosaic[dy::2, dx::2] = acc

        self.truth.vignette(mosaic, self.cfa)
        self._mosaics[key] = mosaic
        total = sum(m.size for m in self._mosaics.values())
        while total > _CACHE_PIXELS and len(self._mosaics) > 1:
            total -= self._mosaics.popitem(last=False)[1].size
        return mosaic

    @property
    def scene_distance_m(self) -> float | None:
        return self._scene_distance_m

    @scene_distance_m.setter
    def scene_distance_m(self, metres: float | None) -> None:
        """Move the scene (a plane facing the camera); None: no defocus at all."""
        if metres is not None:
            metres = _check_real("scene_distance_m", metres)
            if self.lens is None:
                raise ValueError(self._lens_error)
            if not metres * 1000 > self.lens.focal_mm:
                raise ValueError(f"scene_distance_m must be beyond the focal length, got {metres}")
        self._scene_distance_m = metres

    def blur_sigma_px(self, width: int, lens_position: int) -> float:
        """Gaussian sigma (pixels of a ``width``-wide frame) of the defocus PSF; 0 in focus."""
        if self._scene_distance_m is None:
            return 0.0
        return SIGMA_PER_DIAMETER * self.lens.blur_px(lens_position, self._scene_distance_m, width)

    def _defocus(self, mosaic: np.ndarray, lens_position: int) -> np.ndarray:
        """The noise-free mosaic seen through the lens at ``lens_position``.

        Each CFA colour plane (the scene's colour channel sampled every 2 pixels) is convolved
        with the thin-lens blur circle's PSF, a Gaussian of sigma = diameter / 4 scaled to the
        plane's 2-pixel pitch: optics blur the light before the sensor samples it and adds noise.
        Results are cached per (source mosaic, blur sigma): a live view at rest re-renders
        nothing.
        """
        height, width = mosaic.shape
        sigma = self.blur_sigma_px(width, lens_position)
        if sigma <= 0:
            return mosaic
        # The entry holds the source mosaic too, so its id cannot be reused while cached.
        key = (id(mosaic), round(sigma, 6))
        if key in self._defocused:
            self._defocused.move_to_end(key)
            return self._defocused[key][1]
        out = np.empty_like(mosaic)
        for dy in (0, 1):
            for dx in (0, 1):
                out[dy::2, dx::2] = gaussian_blur(np.ascontiguousarray(mosaic[dy::2, dx::2]), sigma / 2)
        self._defocused[key] = (mosaic, out)
        total = sum(m.size for _, m in self._defocused.values())
        while total > _CACHE_PIXELS // 4 and len(self._defocused) > 1:
            total -= self._defocused.popitem(last=False)[1][1].size
        return out

    def render(
        self,
        width: int,
        height: int,
        exposure_us: float,
        analog_gain: float,
        frame_id: int,
        lens_position: int = 0,
    ) -> np.ndarray:
        """Capture one frame: uint16 CFA samples, shape (height, width), in ADC units.

        Electrons at a site are ``cam * exposure_us / 10000 * 0.8 * full_well_e`` (``cam`` is the
        green-normalised camera response, 1.0 for a white in green), plus Gaussian shot noise
        (variance = signal) and read noise; DN = electrons * analog_gain * (white - black) /
        full_well_e + black, rounded and clipped to [0, white_level]. Full-well saturation is
        not modelled separately, only the ADC clip. The noise comes from
        ``np.random.default_rng([seed, frame_id])``, so a frame can be re-rendered bit-exactly.

        ``lens_position`` is recorded in ``self.lens_position``; with a ``scene_distance_m``
        the scene is blurred by the lens's defocus there (see :meth:`_defocus`).
        """
        for name, v in (("width", width), ("height", height)):
            _check_int(name, v, MIN_SIZE, MAX_SIZE)
            if v % 2:
                raise ValueError(f"{name} must be even (whole CFA quads), got {v}")
        exposure_us = _check_real("exposure_us", exposure_us)
        if not 1 <= exposure_us <= MAX_EXPOSURE_US:
            raise ValueError(f"exposure_us must be in 1..{MAX_EXPOSURE_US}, got {exposure_us}")
        analog_gain = _check_real("analog_gain", analog_gain)
        if not 0 < analog_gain <= MAX_GAIN:
            raise ValueError(f"analog_gain must be in (0, {MAX_GAIN}], got {analog_gain}")
        _check_int("frame_id", frame_id, 0)
        _check_int("lens_position", lens_position)
        self.lens_position = int(lens_position)

        mosaic = self._defocus(self._camera_mosaic(width, height), lens_position)
        e_per_unit = np.float32(REF_FILL * self.full_well_e * exposure_us / REF_EXPOSURE_US)
        read_var = np.float32(self.read_noise_e**2)
        dn_per_e = np.float32(analog_gain * (self.white_level - self.black_level) / self.full_well_e)
        black = np.float32(self.black_level)
        rng = np.random.default_rng([self.seed, int(frame_id)])

        out = np.empty((height, width), np.uint16)
        rows = max(1, _STRIP_PIXELS // width)
        for y in range(0, height, rows):
            e = mosaic[y : y + rows] * e_per_unit
            # Shot and read noise are independent Gaussians, so one draw with the summed
            # variance has the same distribution as two, at half the cost.
            sigma = e + read_var
            np.sqrt(sigma, out=sigma)
            noise = rng.standard_normal(e.shape, dtype=np.float32)
            noise *= sigma
            e += noise
            e *= dn_per_e
            e += black
            np.rint(e, out=e)
            np.clip(e, 0, self.white_level, out=e)
            out[y : y + rows] = e
        return out
