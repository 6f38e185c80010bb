"""Noise model of a frame, measured on the frame itself: sigma^2 = a * level + b.

Both green sites of a 2x2 cell see nearly the same light, so ``G1 - G2`` is mostly noise with
variance ``2 sigma^2`` (plus scene detail). The differences are cut into blocks of 4x4 cells;
each block gives a variance and a level. Blocks are binned by level, and in each bin the 10th
percentile of the block variances (flat areas, where detail adds nothing; divided by 0.57, the
10th percentile of a chi-square with 15 degrees of freedom over 15) estimates ``2 sigma^2``.
The shot + read noise model is fitted to the bins by least squares (a, b >= 0). Measured once
per frame, before tiling. Units: normalised raw (white = 1).
"""

from __future__ import annotations

import numpy as np

_BINS = 12
_BLOCK = 4
_CHI2_P10 = 0.57  # 10th percentile of chi2(15) / 15


class NoiseSampler:
    def __init__(self, pattern: str):
        g = [k for k, c in enumerate(pattern) if c == "G"]
        self.g1, self.g2 = divmod(g[0], 2), divmod(g[1], 2)
        self.levels: list[np.ndarray] = []
        self.vars: list[np.ndarray] = []

    def add(self, cfa: np.ndarray) -> None:
        a = cfa[self.g1[0] :: 2, self.g1[1] :: 2]
        b = cfa[self.g2[0] :: 2, self.g2[1] :: 2]
        n = _BLOCK
        h, w = min(a.shape[0], b.shape[0]) // n * n, min(a.shape[1], b.shape[1]) // n * n
        if h == 0 or w == 0:
            return
        a, b = a[:h, :w], b[:h, :w]
        diff = (a - b).reshape(h // n, n, w // n, n).transpose(0, 2, 1, 3).reshape(h // n, w // n, n * n)
        level = ((a + b) * np.float32(0.5)).reshape(h // n, n, w // n, n).mean(axis=(1, 3))
        var = diff.var(axis=2, ddof=1)
        ok = level < 0.9
        self.levels.append(level[ok].ravel())
        self.vars.append(var[ok].ravel())

    def model(self) -> tuple[float, float]:
        if not self.levels:
            return 0.0, 1e-6
        level = np.concatenate(self.levels)
        var = np.concatenate(self.vars)
        if level.size < 16:
            return 0.0, max(float(np.median(var)) / 2, 1e-10) if var.size else 1e-6
        edges = np.unique(np.quantile(level, np.linspace(0, 1, _BINS + 1)))
        xs, vs = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            m = (level >= lo) & (level <= hi)
            if np.count_nonzero(m) < 8:
                continue
            xs.append(max(float(np.median(level[m])), 0.0))
            vs.append(float(np.percentile(var[m], 10)) / _CHI2_P10 / 2)
        if not xs:
            return 0.0, 1e-6
        x, v = np.array(xs), np.array(vs)
        if len(x) >= 2 and np.ptp(x) > 0:
            a, b = np.polyfit(x, v, 1)
        else:
            a, b = 0.0, float(v.mean())
        if b < 0:  # refit through the origin (pure shot noise)
            a, b = float(np.dot(x, v) / max(np.dot(x, x), 1e-20)), 0.0
        if a < 0:  # refit as a constant (pure read noise)
            a, b = 0.0, float(np.median(v))
        return float(max(a, 0.0)), float(max(b, 1e-10))


def sigma_fn(a: float, b: float, scale: float = 1.0):
    """level (float32 array) -> sigma (float32), ``scale`` times the model's."""
    a32, b32, s32 = np.float32(a), np.float32(b), np.float32(scale)

    def sigma(level: np.ndarray) -> np.ndarray:
        return np.sqrt(level * a32 + b32) * s32

    return sigma
