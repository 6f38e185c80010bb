"""Stage 3: lens shading (vignetting and colour shading) correction: a per-CFA-site gain map.

A calibration gives, for each of the four sites of the 2x2 CFA cell, a small grid of gains
(e.g. 17x13) spread evenly over the frame (the first and last grid points on the frame's
first and last rows/columns of that site). The gain at a pixel is the bilinear interpolation
of its site's grid at the pixel's position, computed from absolute frame coordinates so a
tile gets exactly the gains the whole frame would. Corrected = sample * gain, so a flat field
shot through the lens (whose grid is the inverse of its fall-off) comes out flat.

DNG GainMap opcodes (OpcodeList2, as Adobe's converter writes them for Bayer data: one map per
site, RowPitch = ColPitch = 2) are read into the same form by ``GainMap.from_dng_opcodes`` and
written back by ``GainMap.to_dng_opcodes``.

Margin a tile needs: 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from magcam.pipeline.errors import PipelineError

MARGIN = 0


@dataclass
class SiteMap:
    """Gains of one CFA site: ``grid[i, j]`` sits at relative position
    (origin_v + i * spacing_v, origin_h + j * spacing_h) of the frame, both in 0..1."""

    dy: int
    dx: int
    grid: np.ndarray
    origin_v: float = 0.0
    origin_h: float = 0.0
    spacing_v: float | None = None
    spacing_h: float | None = None

    def __post_init__(self):
        self.grid = np.asarray(self.grid, dtype=np.float64)
        if self.grid.ndim != 2 or self.grid.size == 0 or not np.all(np.isfinite(self.grid)) or np.any(self.grid <= 0):
            raise PipelineError("a lens shading grid must be a 2-D array of positive gains")
        gh, gw = self.grid.shape
        if gh == 1:  # a constant along this axis: two equal points interpolate to it
            self.grid, self.spacing_v, gh = np.repeat(self.grid, 2, axis=0), 1.0, 2
        if gw == 1:
            self.grid, self.spacing_h, gw = np.repeat(self.grid, 2, axis=1), 1.0, 2
        if self.spacing_v is None:
            self.spacing_v = 1.0 / (gh - 1) if gh > 1 else 1.0
        if self.spacing_h is None:
            self.spacing_h = 1.0 / (gw - 1) if gw > 1 else 1.0
        if not (self.spacing_v > 0 and self.spacing_h > 0):
            raise PipelineError("lens shading grid spacing must be positive")


@dataclass
class GainMap:
    sites: list[SiteMap] = field(default_factory=list)

    @classmethod
    def from_grids(cls, grids) -> "GainMap":
        """``grids``: (2, 2, gh, gw) or (4, gh, gw): one gain grid per CFA site in cell order,
        each spanning the whole frame."""
        try:
            g = np.asarray(grids, dtype=np.float64)
        except (TypeError, ValueError):
            raise PipelineError(f"lens shading grids must be numbers, got {str(grids)[:60]!r}") from None
        if g.ndim == 3 and g.shape[0] == 4:
            g = g.reshape(2, 2, *g.shape[1:])
        if g.ndim != 4 or g.shape[:2] != (2, 2):
            raise PipelineError(f"lens shading grids must have shape (4, gh, gw) or (2, 2, gh, gw), got {g.shape}")
        if not (np.isfinite(g).all() and (g > 0).all()):
            raise PipelineError("lens shading gains must be finite and above 0")
        return cls([SiteMap(dy, dx, g[dy, dx]) for dy in range(2) for dx in range(2)])

    @classmethod
    def from_dng_opcodes(cls, data: bytes) -> "GainMap | None":
        """The GainMap opcodes (ID 9) of a DNG OpcodeList; None when it holds none."""
        try:
            (count,) = struct.unpack_from(">I", data, 0)
            pos, sites = 4, []
            for _ in range(count):
                op, _ver, _flags, size = struct.unpack_from(">IIII", data, pos)
                pos += 16
                body = data[pos : pos + size]
                pos += size
                if op != 9:
                    continue
                top, left, bottom, right, plane, planes, rpitch, cpitch, nv, nh = struct.unpack_from(">10I", body, 0)
                sv, sh, ov, oh = struct.unpack_from(">4d", body, 40)
                (mplanes,) = struct.unpack_from(">I", body, 72)
                gains = np.frombuffer(body, ">f4", nv * nh * mplanes, 76).reshape(nv, nh, mplanes)[..., 0]
                if rpitch != 2 or cpitch != 2 or top > 1 or left > 1:
                    raise PipelineError("only per-CFA-site GainMaps (pitch 2) are supported")
                sites.append(SiteMap(top % 2, left % 2, gains, ov, oh, sv, sh))
        except (struct.error, ValueError) as e:
            raise PipelineError(f"malformed DNG opcode list: {e}") from None
        return cls(sites) if sites else None

    def to_dng_opcodes(self, frame_h: int, frame_w: int) -> bytes:
        """This map as a DNG OpcodeList2 (the inverse of ``from_dng_opcodes``): one GainMap opcode
        per site (RowPitch = ColPitch = 2, over the whole ``frame_h`` x ``frame_w`` frame), as
        Adobe's converter writes them for Bayer data."""
        out = [struct.pack(">I", len(self.sites))]
        for s in self.sites:
            gh, gw = s.grid.shape
            params = struct.pack(">10I4dI", s.dy, s.dx, frame_h, frame_w, 0, 1, 2, 2, gh, gw,
                                 s.spacing_v, s.spacing_h, s.origin_v, s.origin_h, 1)
            params += s.grid.astype(">f4").tobytes()
            # GainMap (ID 9), DNG 1.3; flags 1: optional, a reader without GainMap support may skip it.
            out.append(struct.pack(">4I", 9, 0x01030000, 1, len(params)) + params)
        return b"".join(out)

    def region_gains(self, y0: int, x0: int, h: int, w: int, frame_h: int, frame_w: int) -> np.ndarray:
        """Gain for every pixel of a region (float32, h x w); 1.0 for sites without a map."""
        out = np.ones((h, w), np.float32)
        for s in self.sites:
            ys = np.arange(y0 + s.dy, y0 + h, 2)
            xs = np.arange(x0 + s.dx, x0 + w, 2)
            wy, iy = _weights(ys, frame_h, s.origin_v, s.spacing_v, s.grid.shape[0])
            wx, ix = _weights(xs, frame_w, s.origin_h, s.spacing_h, s.grid.shape[1])
            g = s.grid.astype(np.float32)
            top = g[iy][:, ix] * (1 - wx) + g[iy][:, ix + 1] * wx
            bot = g[iy + 1][:, ix] * (1 - wx) + g[iy + 1][:, ix + 1] * wx
            out[s.dy : h : 2, s.dx : w : 2] = top * (1 - wy)[:, None] + bot * wy[:, None]
        return out


def _weights(pos: np.ndarray, size: int, origin: float, spacing: float, n: int):
    """Left grid index and float32 weight of the next one, for absolute pixel positions."""
    rel = pos / max(size - 1, 1)
    g = np.clip((rel - origin) / spacing, 0, n - 1)
    i = np.minimum(np.floor(g).astype(np.int64), n - 2)
    return (g - i).astype(np.float32), i


def apply(cfa: np.ndarray, gains: np.ndarray) -> None:
    cfa *= gains
