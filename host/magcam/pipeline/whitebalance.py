"""Stage 4: white balance, applied to the CFA before demosaicing (as LibRaw does).

A *neutral* is the camera RGB of the scene's white (any scale). The multipliers are
``max(neutral) / neutral``, so the smallest is 1 (LibRaw's convention): after balancing, the
white is grey and the level where the first channel clips is exactly 1.0.

Where the neutral comes from (``wb`` option):

* ``asshot``: the file's (DNG AsShotNeutral; LibRaw's camera multipliers; for a frame from
  the link, the descriptor's D65 neutral),
* ``auto``: grey world over the whole frame, leaving out cells where any channel is within
  5 % of clipping (highlights have lost their colour) and cells darker than 2 % of full scale
  (noise, not colour). Computed once per frame before tiling, so tiles agree,
* ``(R, G, B)``: explicit, the camera RGB of a neutral,
* ``none``: multipliers (1, 1, 1): camera RGB as it is (the default for ``output_color=raw``).

Margin a tile needs: 0.
"""

from __future__ import annotations

import numpy as np

from magcam.pipeline.errors import PipelineError

MARGIN = 0
HIGHLIGHT_EXCLUDE = 0.95
SHADOW_EXCLUDE = 0.02


def check_neutral(wb) -> np.ndarray:
    try:
        n = np.asarray(wb, dtype=np.float64)
    except (TypeError, ValueError):  # ("a", 1, 2), a dict: not numbers at all
        n = np.empty(0)
    if n.shape != (3,) or not np.all(np.isfinite(n)) or np.any(n <= 0):
        raise PipelineError(f"white balance must be three positive numbers, got {wb!r}")
    return n / n[1]


def multipliers(neutral) -> np.ndarray:
    n = check_neutral(neutral)
    return n.max() / n


def site_multipliers(mult: np.ndarray, pattern: str) -> np.ndarray:
    """(2, 2) multiplier per CFA site."""
    return np.array([mult["RGB".index(c)] for c in pattern], dtype=np.float64).reshape(2, 2)


def apply(cfa: np.ndarray, site_mult: np.ndarray) -> None:
    for dy in range(2):
        for dx in range(2):
            if site_mult[dy, dx] != 1.0:
                cfa[dy::2, dx::2] *= np.float32(site_mult[dy, dx])


class GreyWorld:
    """Accumulates per-channel sums over CFA regions; ``neutral()`` gives the grey-world white."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.sums = np.zeros(3)
        self.count = 0

    def add(self, cfa: np.ndarray) -> None:
        h, w = cfa.shape[0] // 2 * 2, cfa.shape[1] // 2 * 2
        planes = {}
        for k, c in enumerate(self.pattern):
            p = cfa[k // 2 : h : 2, k % 2 : w : 2]
            planes.setdefault(c, []).append(p)
        r, b = planes["R"][0], planes["B"][0]
        g = (planes["G"][0] + planes["G"][1]) * np.float32(0.5)
        top = np.maximum(np.maximum(r, b), np.maximum(planes["G"][0], planes["G"][1]))
        keep = (top < HIGHLIGHT_EXCLUDE) & (np.maximum(np.maximum(r, g), b) > SHADOW_EXCLUDE)
        n = int(np.count_nonzero(keep))
        if n:
            self.sums += [float(r[keep].sum(dtype=np.float64)), float(g[keep].sum(dtype=np.float64)),
                          float(b[keep].sum(dtype=np.float64))]
            self.count += n

    def neutral(self) -> np.ndarray:
        if self.count == 0 or np.any(self.sums <= 0):
            raise PipelineError("automatic white balance found no usable pixels (all clipped or black)")
        return self.sums / self.sums[1]
