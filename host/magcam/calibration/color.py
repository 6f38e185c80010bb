"""Colour calibration from a ColorChecker shot: fit the camera's matrix, report CIEDE2000.

Method: the chart's patches are sampled on the RAW (camera RGB after black level,
:mod:`magcam.calibration.colorchecker`). The camera -> XYZ matrix ``A`` is fitted by weighted
least squares against the published patch XYZ (D65), under the constraint that the chart's
neutral row maps exactly onto its reference (white-point preservation: greys stay grey).
Residuals are weighted by ``Y^(-2/3)``, the slope of CIE lightness, so dark patches count as
much as the eye says they do. The descriptor's ``color_matrix_1`` (XYZ -> camera, D65, as a DNG
ColorMatrix1) is ``inv(A)``, scaled so the D65 white's largest camera channel is 1.

Before / after figures use the same rule for both matrices: predicted XYZ = ``s * inv(M) @ rgb``
(what the pipeline's as-shot white balance and colour matrix give), ``s`` the exposure that puts
the neutral patches' luminance on the reference; then CIEDE2000 (colour-science) in L*a*b*
relative to the D65 white. A second-order root-polynomial fit (Finlayson et al. 2015) is
reported beside it as what a non-linear model would add; DNG ColorMatrix1 can only hold the
3x3, so that is what is stored.

    >>> from magcam import rawio
    >>> from magcam.calibration import color as cal
    >>> raw = rawio.read("chart.dng")
    >>> res = cal.calibrate(raw)                   # detects the chart; or corners=[...]
    >>> print(f"{res.before.mean:.2f} -> {res.after.mean:.2f} (max {res.after.max:.2f})")
    10.91 -> 0.07 (max 0.29)
    >>> new = cal.update_descriptor(descriptor, res)   # color.color_matrix_1 replaced
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from magcam.calibration import colorchecker
from magcam.pipeline import color
from magcam.pipeline.errors import PipelineError


def xyz_to_lab(xyz: np.ndarray) -> np.ndarray:
    """CIE L*a*b* of D65-relative XYZ (white Y = 1)."""
    colour = colorchecker.colour_module()
    return colour.XYZ_to_Lab(np.asarray(xyz, np.float64), colour.XYZ_to_xy(color.D65_WHITE_XYZ))


def delta_e2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (colour-science's implementation, Sharma et al. 2005)."""
    colour = colorchecker.colour_module()
    return np.asarray(colour.delta_E(np.asarray(lab1, np.float64), np.asarray(lab2, np.float64),
                                     method="CIE 2000"))


@dataclass
class Errors:
    per_patch: np.ndarray  # (24,) CIEDE2000
    xyz: np.ndarray  # (24, 3) predicted

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_patch))

    @property
    def max(self) -> float:
        return float(np.max(self.per_patch))


@dataclass
class ColorResult:
    xyz_to_camera: np.ndarray  # 3x3, the new color_matrix_1 (D65 white's largest channel = 1)
    camera_to_xyz: np.ndarray  # 3x3, the fitted A
    before: Errors | None
    after: Errors
    root_polynomial: Errors
    patches: colorchecker.Patches
    reference_xyz: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        r = lambda v: round(float(v), 3)  # noqa: E731
        out = {
            "color_matrix_1": [round(float(v), 4) for v in self.xyz_to_camera.ravel()],
            "after": {"mean_de2000": r(self.after.mean), "max_de2000": r(self.after.max)},
            "root_polynomial": {"mean_de2000": r(self.root_polynomial.mean),
                                "max_de2000": r(self.root_polynomial.max)},
            "corners": [round(float(v), 1) for v in self.patches.corners.ravel()],
            "patches": [
                {"patch": i + 1, "name": colorchecker.NAMES[i],
                 "before": None if self.before is None else r(self.before.per_patch[i]),
                 "after": r(self.after.per_patch[i])}
                for i in range(24)
            ],
            "warnings": self.warnings,
        }
        if self.before is not None:
            out["before"] = {"mean_de2000": r(self.before.mean), "max_de2000": r(self.before.max)}
        return out


# A fit worse than this is not stored: wrong corners, a different chart, coloured or uneven light.
MAX_MEAN_DE = 5.0


def _weights(ref_xyz: np.ndarray) -> np.ndarray:
    return np.maximum(ref_xyz[:, 1], 0.01) ** (-2.0 / 3.0)


def fit_matrix(rgb: np.ndarray, ref_xyz: np.ndarray, neutral_rgb: np.ndarray | None = None,
               neutral_xyz: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
    """Camera RGB -> XYZ 3x3 ``A`` minimising the weighted squared XYZ error, with
    ``A @ neutral_rgb == neutral_xyz`` exactly when given (a Lagrange multiplier per row)."""
    rgb = np.asarray(rgb, np.float64)
    w = np.ones(len(rgb)) if weights is None else np.asarray(weights, np.float64)
    c = rgb * w[:, None]
    x = ref_xyz * w[:, None]
    g = c.T @ c
    if np.linalg.cond(g) > 1e12:
        raise PipelineError("patch colours are degenerate (all the same hue?): cannot fit a matrix")
    ginv = np.linalg.inv(g)
    a = (ginv @ c.T @ x).T  # unconstrained, rows of A
    if neutral_rgb is not None:
        n = np.asarray(neutral_rgb, np.float64)
        k = ginv @ n
        a = a - np.outer((a @ n) - neutral_xyz, k) / (n @ k)
    return a


def root_polynomial_terms(rgb: np.ndarray) -> np.ndarray:
    """Second-order root-polynomial features r, g, b, sqrt(rg), sqrt(gb), sqrt(rb): scaling the
    exposure scales them all alike, so the fit does not depend on it."""
    r, g, b = np.clip(np.asarray(rgb, np.float64), 0, None).T
    return np.stack([r, g, b, np.sqrt(r * g), np.sqrt(g * b), np.sqrt(r * b)], axis=1)


def exposure_scale(pred_xyz: np.ndarray, ref_xyz: np.ndarray) -> float:
    """Least-squares scale of predicted onto reference luminance over the neutral patches."""
    p, r = pred_xyz[colorchecker.NEUTRALS, 1], ref_xyz[colorchecker.NEUTRALS, 1]
    return float(p @ r / (p @ p)) if p @ p > 0 else 1.0


def evaluate(camera_to_xyz: np.ndarray, rgb: np.ndarray, ref_xyz: np.ndarray) -> Errors:
    """CIEDE2000 of each patch with XYZ = s * camera_to_xyz @ rgb (s: :func:`exposure_scale`)."""
    pred = rgb @ np.asarray(camera_to_xyz).T
    pred = pred * exposure_scale(pred, ref_xyz)
    return Errors(per_patch=delta_e2000(xyz_to_lab(pred), xyz_to_lab(ref_xyz)), xyz=pred)


def normalized_color_matrix(camera_to_xyz: np.ndarray) -> np.ndarray:
    """XYZ -> camera (DNG ColorMatrix) from camera -> XYZ, scaled so the D65 white's largest
    camera channel is 1 (the DNG convention)."""
    m = np.linalg.inv(camera_to_xyz)
    white = m @ color.D65_WHITE_XYZ
    if not np.all(white > 0):
        raise PipelineError("the fitted matrix gives a non-positive camera white: the chart shot is unusable")
    return m / white.max()


def calibrate(raw, corners=None, descriptor_matrix: np.ndarray | None = None) -> ColorResult:
    """Fit the colour matrix from a RawImage of the chart (lit by daylight, D65-like).

    ``corners``: the patch grid's corners (see colorchecker), else the chart is detected.
    ``descriptor_matrix``: the XYZ -> camera matrix in use, for the "before" figures (default:
    the RawImage's own).
    """
    if corners is None:
        corners = colorchecker.detect(raw)
    patches = colorchecker.sample(raw, corners)
    ref = colorchecker.reference_xyz()
    notes = []
    use = ~patches.clipped
    if patches.clipped.any():
        names = ", ".join(colorchecker.NAMES[i] for i in np.flatnonzero(patches.clipped))
        notes.append(f"clipped patches left out of the fit (expose less): {names}")
    if use.sum() < 12:
        raise PipelineError(f"{raw.source}: {int((~use).sum())} of 24 patches are clipped; expose less")
    white_rgb = patches.rgb[colorchecker.NEUTRALS.start]
    if white_rgb.max() < 0.05:
        notes.append(f"the chart is dark (white patch at {white_rgb.max():.1%} of full scale): expose more")
    if np.any(patches.rgb[use] <= 0):
        raise PipelineError(f"{raw.source}: some patches read at or below black: is this a chart shot?")

    neutral = np.zeros(24, bool)
    neutral[colorchecker.NEUTRALS] = True
    neutral &= use
    weights = _weights(ref)
    try:
        a = fit_matrix(patches.rgb[use], ref[use], patches.rgb[neutral].sum(axis=0), ref[neutral].sum(axis=0),
                       weights[use])
        m_new = normalized_color_matrix(a)
    except PipelineError as e:
        raise PipelineError(f"{raw.source}: {e}; are the corners on the chart?") from None
    after = evaluate(np.linalg.inv(m_new), patches.rgb, ref)

    terms = root_polynomial_terms(patches.rgb)
    rp = fit_matrix(terms[use], ref[use], weights=weights[use])
    rp_pred = terms @ rp.T
    rp_pred *= exposure_scale(rp_pred, ref)
    rp_err = Errors(per_patch=delta_e2000(xyz_to_lab(rp_pred), xyz_to_lab(ref)), xyz=rp_pred)

    old = descriptor_matrix if descriptor_matrix is not None else raw.xyz_to_camera
    before = evaluate(np.linalg.inv(old), patches.rgb, ref) if old is not None else None
    return ColorResult(xyz_to_camera=m_new, camera_to_xyz=np.linalg.inv(m_new), before=before, after=after,
                       root_polynomial=rp_err, patches=patches, reference_xyz=ref, warnings=notes)


def update_descriptor(descriptor: dict, result: ColorResult) -> dict:
    """A copy of ``descriptor`` carrying the calibrated matrix (and when and how well)."""
    new = dict(descriptor)
    col = dict(new.get("color") or {})
    col["illuminant_1"] = "D65"
    col["color_matrix_1"] = [round(float(v), 4) for v in result.xyz_to_camera.ravel()]
    col["calibration"] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "reference": colorchecker.REFERENCE,
        "mean_de2000": round(result.after.mean, 2),
        "max_de2000": round(result.after.max, 2),
    }
    new["color"] = col
    return new
