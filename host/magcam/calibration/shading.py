"""Lens-shading calibration: per-CFA-site gain grids from flat-field frames (and a dark frame).

Method: the flat-field frames (a diffuser or an evenly lit white card filling the view) are
averaged per CFA site after black level; the averaged dark frame (lens capped, or the shortest
exposure) is subtracted when given. Each of the four site planes is reduced to block means, and
the *reciprocal* of the flat is fitted with a 2-D polynomial ``p`` of total degree 6 in frame
coordinates (``flat * p = 1`` in least squares: relative errors; a cos^4 fall-off is exactly a
polynomial there; dust, noise and diffuser texture do not survive the fit). The gain is
``p / min(p)``: 1.0 at the site's brightest point, more towards the corners, so each colour
comes out flat and the centre's white balance is unchanged. Grid values are chosen so that
their bilinear interpolation (what the pipeline applies) is the least-squares best match of
the fitted gain over the frame. Grids are in the
descriptor's ``lens_shading.grids`` form, (4, gh, gw) in CFA cell order, the first and last grid
points on the frame's first and last rows/columns: what ``rawio.from_frame`` and
``magcam.pipeline.shading.GainMap`` consume, and what ``magcam.dng`` writes as GainMap opcodes.
The grid size is the largest that keeps the descriptor within the device's message cap.

    >>> from magcam import rawio
    >>> from magcam.calibration import shading
    >>> flats = [rawio.read(p) for p in ("flat1.dng", "flat2.dng")]
    >>> res = shading.calibrate(flats, dark=rawio.read("dark.dng"))
    >>> new = shading.update_descriptor(descriptor, res, max_bytes=4104, reserve=384)
    >>> res.grids.shape, round(res.residual_pct, 3)      # grid sized to fit the device
    ((4, 9, 12), 0.047)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from magcam.pipeline import black as black_stage
from magcam.pipeline.errors import PipelineError

DEGREE = 6
BLOCK = 16  # block means over BLOCK x BLOCK samples of a site plane before the fit
# Candidate grids (gw, gh), finest first; the first whose descriptor fits the device is used.
GRID_SIZES = ((17, 13), (15, 11), (13, 10), (12, 9), (11, 8), (9, 7), (7, 5), (5, 4))
DECIMALS = 3  # gains stored to 0.001: far below the 1 % a flat field is held to
CLIP = 0.98


@dataclass
class ShadingResult:
    fits: list  # per site: polynomial coefficients (normalised coordinates)
    peak: np.ndarray  # (4,) smallest value of each site's fitted reciprocal (at its brightest point)
    width: int
    height: int
    cfa: str
    residual_pct: float  # RMS of (block means * fitted reciprocal - 1) over all sites, %
    falloff_pct: np.ndarray  # (4,) 100 * (1 - min/max) of each site's fit
    level: np.ndarray  # (4,) mean flat level per site, fraction of full scale
    frames: int
    dark: bool
    warnings: list[str] = field(default_factory=list)
    grids: np.ndarray | None = None  # (4, gh, gw) once grid() was called

    def grid(self, gw: int, gh: int) -> np.ndarray:
        """Gains at a gw x gh grid spanning the frame, per site: (4, gh, gw).

        Not the fit sampled at the grid points: the grid values whose bilinear interpolation
        (what the pipeline applies) is closest to the fitted gain over the whole frame, by least
        squares. That halves the interpolation error of a coarse grid on strong fall-off.
        """
        out = np.empty((4, gh, gw))
        for s in range(4):
            dy, dx = divmod(s, 2)
            ys = np.linspace(dy, self.height - 2 + dy, 8 * gh)
            xs = np.linspace(dx, self.width - 2 + dx, 8 * gw)
            target = _poly_eval(self.fits[s], *_norm_coords(xs, ys, self.width, self.height)) / self.peak[s]
            wy, wx = _hat_weights(ys, self.height, gh), _hat_weights(xs, self.width, gw)
            out[s] = np.linalg.pinv(wy) @ target @ np.linalg.pinv(wx).T
        return out

    def summary(self) -> dict:
        return {
            "frames": self.frames, "dark_frame": self.dark, "size": [self.width, self.height],
            "grid": None if self.grids is None else [int(self.grids.shape[2]), int(self.grids.shape[1])],
            "falloff_pct": {f"{self.cfa[s]}{s}": round(float(self.falloff_pct[s]), 2) for s in range(4)},
            "max_gain": None if self.grids is None else round(float(self.grids.max()), 3),
            "fit_residual_pct": round(self.residual_pct, 3),
            "flat_level": [round(float(v), 3) for v in self.level],
            "warnings": self.warnings,
        }


def _hat_weights(pos: np.ndarray, size: int, n: int) -> np.ndarray:
    """(len(pos), n) linear-interpolation weights of n grid points spanning pixels 0..size-1,
    as magcam.pipeline.shading interpolates them."""
    g = np.clip(np.asarray(pos, np.float64) / max(size - 1, 1) * (n - 1), 0, n - 1)
    i = np.minimum(np.floor(g).astype(int), n - 2)
    w = np.zeros((len(g), n))
    w[np.arange(len(g)), i] = 1 - (g - i)
    w[np.arange(len(g)), i + 1] = g - i
    return w


def _norm_coords(xs: np.ndarray, ys: np.ndarray, width: int, height: int):
    """Frame pixel coordinates -> [-1, 1] each way (a well-conditioned polynomial basis)."""
    return 2 * np.asarray(xs, np.float64) / max(width - 1, 1) - 1, 2 * np.asarray(ys, np.float64) / max(height - 1, 1) - 1


def _terms(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Monomials u^i v^j, i + j <= DEGREE, of 1-D point arrays: (n, terms)."""
    return np.stack([u**i * v**j for i in range(DEGREE + 1) for j in range(DEGREE + 1 - i)], axis=-1)


def _poly_eval(coef: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The polynomial on the grid of 1-D ``u`` (columns) and ``v`` (rows): (len(v), len(u))."""
    uu, vv = np.meshgrid(u, v)
    return (_terms(uu.ravel(), vv.ravel()) @ coef).reshape(vv.shape)


def _mean_cfa(raws, what: str) -> np.ndarray:
    """Average of the frames' black-subtracted CFA (white = 1), float64."""
    first = raws[0]
    acc = np.zeros((first.height, first.width))
    for r in raws:
        if (r.width, r.height, r.cfa) != (first.width, first.height, first.cfa):
            raise PipelineError(f"{r.source}: {what} frame is {r.width}x{r.height} {r.cfa}, the first is "
                                f"{first.width}x{first.height} {first.cfa}: all frames must match")
        acc += black_stage.normalize(r.frame.data, black_stage.check_levels(r.black, r.white), r.white, 0, 0,
                                     r.black_delta_v, r.black_delta_h)
    return acc / len(raws)


def normalized_cfa(raw, darks=()) -> np.ndarray:
    """A RawImage's CFA after black level (white = 1), less the mean of ``darks``: float64."""
    cfa = _mean_cfa([raw], "flat-field")
    return cfa - _mean_cfa(list(darks), "dark") if darks else cfa


def calibrate(flats, dark=None) -> ShadingResult:
    """Fit the shading from flat-field RawImages (same size and CFA) and optional dark RawImage(s)."""
    flats = list(flats)
    if not flats:
        raise PipelineError("no flat-field frames given")
    darks = [] if dark is None else (list(dark) if isinstance(dark, (list, tuple)) else [dark])
    first = flats[0]
    h, w = first.height - first.height % 2, first.width - first.width % 2
    if h < 4 * BLOCK or w < 4 * BLOCK:
        raise PipelineError(f"{first.source}: {w}x{h} is too small for a flat field (need {8 * BLOCK} px a side)")
    clipped = [r.source for r in flats if np.mean(r.frame.data >= r.white * CLIP) > 0.001]
    flat = _mean_cfa(flats, "flat-field")[:h, :w]
    notes = []
    if clipped:
        raise PipelineError(f"{clipped[0]}: the flat field is clipped; expose less")
    if darks:
        d = _mean_cfa(darks, "dark")
        if d.shape != (first.height, first.width):
            raise PipelineError(f"{darks[0].source}: the dark frame is {d.shape[1]}x{d.shape[0]}, the flat fields "
                                f"{first.width}x{first.height}")
        flat = flat - d[:h, :w]
    fits, peak, falloff, level, resid = [], np.zeros(4), np.zeros(4), np.zeros(4), []
    for s in range(4):
        dy, dx = divmod(s, 2)
        plane = flat[dy::2, dx::2]
        ph, pw = plane.shape
        bh, bw = ph // BLOCK, pw // BLOCK
        blocks = plane[: bh * BLOCK, : bw * BLOCK].reshape(bh, BLOCK, bw, BLOCK).mean(axis=(1, 3))
        level[s] = float(plane.mean())
        if level[s] <= 0.02:
            raise PipelineError(f"{first.source}: the flat field is black in the {first.cfa[s]} channel "
                                f"({level[s]:.1%} of full scale): expose more or light it")
        # Block centres in frame pixels of this site.
        ys = dy + 2 * (np.arange(bh) * BLOCK + (BLOCK - 1) / 2)
        xs = dx + 2 * (np.arange(bw) * BLOCK + (BLOCK - 1) / 2)
        u, v = _norm_coords(xs, ys, w, h)
        uu, vv = np.meshgrid(u, v)
        a = _terms(uu.ravel(), vv.ravel())
        # The polynomial models the reciprocal of the flat (the gain up to a scale), fitted so
        # that flat * p = 1 in least squares: relative errors, and a cos^4 law is exactly
        # a polynomial of degree 4 there.
        coef, *_ = np.linalg.lstsq(a * blocks.reshape(-1, 1), np.ones(blocks.size), rcond=None)
        resid.append((blocks.ravel() * (a @ coef) - 1))
        # The brightest point of the site (dense enough to find it within 0.01 %).
        dense = _poly_eval(coef, *_norm_coords(np.linspace(dx, w - 2 + dx, 97), np.linspace(dy, h - 2 + dy, 73), w, h))
        if dense.min() <= 0:
            raise PipelineError(f"{first.source}: the flat field does not fit a lens fall-off; is it evenly lit?")
        peak[s], falloff[s] = dense.min(), 100 * (1 - dense.min() / dense.max())
        fits.append(coef)
    residual = float(100 * np.sqrt(np.mean(np.concatenate(resid) ** 2)))
    if residual > 1.0:
        notes.append(f"the flat field is not smooth (fit residual {residual:.2f} %): dust, texture or uneven light?")
    if level.max() < 0.1:
        notes.append(f"the flat field is dark ({level.max():.1%} of full scale): expose more for less noise")
    return ShadingResult(fits=fits, peak=peak, width=w, height=h, cfa=first.cfa, residual_pct=residual,
                         falloff_pct=falloff, level=level, frames=len(flats), dark=bool(darks), warnings=notes)


def _with_grids(descriptor: dict, grids: np.ndarray, result: ShadingResult) -> dict:
    new = dict(descriptor)
    new["lens_shading"] = {
        "grids": np.round(grids, DECIMALS).tolist(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "size": [result.width, result.height],
    }
    return new


def descriptor_bytes(descriptor: dict) -> int:
    """Size of the descriptor as the host sends it (compact JSON, ``Camera.write_descriptor``)."""
    return len(json.dumps(descriptor, separators=(",", ":")).encode())


def update_descriptor(descriptor: dict, result: ShadingResult, max_bytes: int, grid=None, reserve: int = 0) -> dict:
    """A copy of ``descriptor`` with ``lens_shading`` set: the finest grid of GRID_SIZES whose
    descriptor is at most ``max_bytes - reserve`` (the device's message cap, less room kept for
    other calibrations), or the given ``(gw, gh)`` if it fits in ``max_bytes``."""
    for gw, gh in ([tuple(grid)] if grid else GRID_SIZES):
        grids = result.grid(gw, gh)
        new = _with_grids(descriptor, grids, result)
        if descriptor_bytes(new) <= max_bytes - (0 if grid else reserve):
            result.grids = np.round(grids, DECIMALS)
            return new
    raise PipelineError(f"the descriptor with a lens-shading grid does not fit the device's {max_bytes}-byte "
                        f"limit (it needs {descriptor_bytes(new)} bytes); use a smaller --grid")


def flatness_pct(cfa_or_rgb: np.ndarray, block: int = 16) -> float:
    """How far from flat an image is: the largest deviation of block means from their mean,
    per channel (last axis of an RGB image, or the four sites of a CFA), in %."""
    img = np.asarray(cfa_or_rgb, np.float64)
    planes = ([img[..., c] for c in range(img.shape[-1])] if img.ndim == 3
              else [img[dy::2, dx::2] for dy in range(2) for dx in range(2)])
    worst = 0.0
    for p in planes:
        bh, bw = p.shape[0] // block, p.shape[1] // block
        m = p[: bh * block, : bw * block].reshape(bh, block, bw, block).mean(axis=(1, 3))
        worst = max(worst, float(np.max(np.abs(m / m.mean() - 1))) * 100)
    return worst
