"""Stage 6: highlights.

After white balance (multipliers with minimum 1) every channel's data is trustworthy up to 1.0;
above that at least one channel of a pixel has clipped and its true colour is unknown.

* ``clip`` (default, LibRaw's HighlightMode.Clip): clip the balanced CFA at 1.0 before
  demosaicing and the RGB again after it (demosaic overshoot), so clipped highlights are
  neutral white, never pink or green.
* ``blend``: keep the neutral colour that clipping gives but the brightness of the unclipped
  channels: ``out = clip(rgb) * mean(U) / mean(clip(rgb))`` where ``U`` is each channel capped
  at its own saturation level. Unclipped pixels are unchanged; partly clipped ones get
  brighter, toward neutral; fully clipped ones become neutral at the brightest level the data
  supports (above 1.0: the ``filmic`` tone curve rolls it off, otherwise output encoding clips).

Margin a tile needs: 0.
"""

from __future__ import annotations

import numpy as np

MARGIN = 0
MODES = ("clip", "blend")


def clip(data: np.ndarray) -> None:
    np.minimum(data, np.float32(1.0), out=data)


def blend(rgb: np.ndarray, mult: np.ndarray) -> np.ndarray:
    """``rgb`` balanced, unclipped (H, W, 3); ``mult`` the three white-balance multipliers."""
    sat = np.asarray(mult, np.float32)
    c = np.minimum(rgb, np.float32(1.0))
    u = np.minimum(rgb, sat)
    lum_c = c[..., 0] + c[..., 1] + c[..., 2]
    lum_u = u[..., 0] + u[..., 1] + u[..., 2]
    gain = np.ones_like(lum_c)
    np.divide(lum_u, lum_c, out=gain, where=lum_c > np.float32(1e-6))
    np.maximum(gain, np.float32(1.0), out=gain)
    c *= gain[..., None]
    return c
