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


# ---- output spaces, chromatic adaptation, camera matrices (the tiled pipeline) ----------------

D50_WHITE_XYZ = np.array([0.96422, 1.0, 0.82521])  # the ICC PCS white
# Bradford cone response matrix (Lam 1985, as in ICC v4 Annex E and the DNG spec).
BRADFORD = np.array(
    [
        [0.8951, 0.2664, -0.1614],
        [-0.7502, 1.7135, 0.0367],
        [0.0389, -0.0685, 1.0296],
    ]
)
# CIE 1931 xy chromaticities of the DNG calibration illuminants (CIE 15:2004).
ILLUMINANT_XY = {
    "A": (0.44757, 0.40745),
    "D50": (0.34567, 0.35850),
    "D55": (0.33242, 0.34743),
    "D65": (0.31271, 0.32902),
    "D75": (0.29902, 0.31485),
}
ILLUMINANT_NAMES = {code: name for name, code in ILLUMINANT_CODES.items()}
ILLUMINANT_NAMES.update({1: "D65", 4: "D65", 9: "D65", 10: "D65", 2: "A", 3: "A", 17: "A", 24: "A"})


def xy_to_xyz(x: float, y: float) -> np.ndarray:
    """Chromaticity -> XYZ with Y = 1."""
    return np.array([x / y, 1.0, (1.0 - x - y) / y])


def rgb_to_xyz_from_primaries(primaries, white_xyz) -> np.ndarray:
    """3x3 linear RGB -> XYZ for colorant chromaticities ``primaries`` (3 x (x, y)) and a white."""
    p = np.array([xy_to_xyz(*xy) for xy in primaries]).T
    return p * np.linalg.solve(p, np.asarray(white_xyz, dtype=np.float64))


# Display P3 (SMPTE EG 432-1 primaries, D65 white, the sRGB transfer curve).
P3_PRIMARIES = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
SRGB_PRIMARIES = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))
P3_TO_XYZ = rgb_to_xyz_from_primaries(P3_PRIMARIES, D65_WHITE_XYZ)
XYZ_TO_P3 = np.linalg.inv(P3_TO_XYZ)

OUTPUT_SPACES = ("srgb", "p3", "raw")


def xyz_to_output(space: str) -> np.ndarray:
    """XYZ (D65-relative) -> linear RGB of an output space (``srgb`` or ``p3``)."""
    if space == "srgb":
        return XYZ_TO_SRGB
    if space == "p3":
        return XYZ_TO_P3
    raise ValueError(f"unknown output colour space {space!r}; expected srgb or p3")


def bradford(src_white_xyz, dst_white_xyz) -> np.ndarray:
    """3x3 Bradford chromatic adaptation of XYZ from one white to another."""
    src = BRADFORD @ np.asarray(src_white_xyz, dtype=np.float64)
    dst = BRADFORD @ np.asarray(dst_white_xyz, dtype=np.float64)
    return np.linalg.inv(BRADFORD) @ np.diag(dst / src) @ BRADFORD


def xyz_to_xy(xyz) -> tuple[float, float]:
    xyz = np.asarray(xyz, dtype=np.float64)
    s = xyz.sum()
    return float(xyz[0] / s), float(xyz[1] / s)


def cct_mccamy(x: float, y: float) -> float:
    """Correlated colour temperature (K) of a chromaticity, McCamy's cubic (good 2000-12500 K)."""
    n = (x - 0.3320) / (0.1858 - y)
    return float(449.0 * n**3 + 3525.0 * n**2 + 6823.3 * n + 5520.33)


def interpolated_xyz_to_camera(neutral, matrices: list[tuple[np.ndarray, str]]) -> np.ndarray:
    """The DNG spec's colour-matrix choice: with two calibrations, interpolate them linearly in
    inverse CCT (mired) at the CCT of the white the neutral stands for (found by iteration);
    with one, use it. ``matrices`` holds (XYZ -> camera 3x3, illuminant name) pairs."""
    if len(matrices) == 1:
        return matrices[0][0]
    (m1, i1), (m2, i2) = matrices[:2]
    t1, t2 = (cct_mccamy(*ILLUMINANT_XY.get(i, ILLUMINANT_XY["D65"])) for i in (i1, i2))
    if t1 == t2:
        return m1
    neutral = np.asarray(neutral, dtype=np.float64)
    w = 0.5
    for _ in range(20):
        m = w * m1 + (1 - w) * m2
        xy = xyz_to_xy(np.linalg.solve(m, neutral))
        cct = min(max(cct_mccamy(*xy), 1000.0), 40000.0)
        lo, hi = sorted((t1, t2))
        inv = 1.0 / min(max(cct, lo), hi)
        new_w = (inv - 1.0 / t2) / (1.0 / t1 - 1.0 / t2)
        if abs(new_w - w) < 1e-6:
            break
        w = new_w
    return w * m1 + (1 - w) * m2


def camera_to_output_matrix(xyz_to_cam: np.ndarray | None, neutral, space: str) -> np.ndarray:
    """3x3 from white-balanced camera RGB to linear ``space`` RGB, mapping (1, 1, 1) to (1, 1, 1).

    White-balanced means each channel divided by ``neutral`` (the scene white's camera RGB, any
    scale). The white's XYZ is ``inv(xyz_to_cam) @ neutral``; Bradford adapts it to D65, the
    white of sRGB and Display P3. When the neutral is the camera's response to D65 (the as-shot
    value of our DNGs) the adaptation is the identity and the matrix equals LibRaw's. Without a
    camera matrix (``None``: a RAW that carries none), camera RGB is taken as linear sRGB, as
    LibRaw does.
    """
    neutral = np.asarray(neutral, dtype=np.float64)
    if xyz_to_cam is None:
        return np.eye(3) if space == "srgb" else xyz_to_output(space) @ SRGB_TO_XYZ
    cam_to_xyz = np.linalg.inv(np.asarray(xyz_to_cam, dtype=np.float64))
    white = cam_to_xyz @ neutral
    if not np.all(np.isfinite(white)) or white[1] <= 0:
        raise ValueError("the colour matrix maps the white to a non-positive luminance")
    white = white / white[1]
    m = xyz_to_output(space) @ bradford(white, D65_WHITE_XYZ) @ cam_to_xyz @ np.diag(neutral / (cam_to_xyz @ neutral)[1])
    return m
