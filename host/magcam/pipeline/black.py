"""Stage 1: black level per CFA site and scaling to white = 1.0.

The black level may differ per site of the 2x2 CFA cell (DNG BlackLevel with
BlackLevelRepeatDim 2x2; LibRaw's ``black_level_per_channel``) and per row or column (DNG
BlackLevelDeltaV / BlackLevelDeltaH). Each sample becomes ``(v - black) / (white - black)``:
black at 0.0, the white level at 1.0. Values below black stay negative (clipping them would
bias dark areas brighter) and values above white stay above 1.0 for the highlight stage.
"""

from __future__ import annotations

import numpy as np

from magcam.pipeline.errors import PipelineError


def check_levels(black: np.ndarray, white: float) -> np.ndarray:
    black = np.asarray(black, dtype=np.float64)
    if black.shape != (2, 2) or not np.all(np.isfinite(black)):
        raise PipelineError(f"black level must be a 2x2 array of numbers, got {black!r}")
    if not np.isfinite(white) or np.any(black >= white) or np.any(black < 0):
        raise PipelineError(f"need 0 <= black level < white level, got black {black.ravel().tolist()} and white {white}")
    return black


def normalize(cfa: np.ndarray, black: np.ndarray, white: float, y0: int = 0, x0: int = 0,
              delta_v: np.ndarray | None = None, delta_h: np.ndarray | None = None) -> np.ndarray:
    """``cfa`` (uint16, a region whose top-left is at even ``y0, x0`` of the frame) -> float32.

    ``black`` is the 2x2 black per CFA site; ``delta_v`` (one value per frame row) and
    ``delta_h`` (one per frame column) are added to it when given.
    """
    out = cfa.astype(np.float32)
    h, w = cfa.shape
    for dy in range(2):
        for dx in range(2):
            site = out[dy::2, dx::2]
            site -= np.float32(black[dy, dx])
            site *= np.float32(1.0 / (white - black[dy, dx]))
    if delta_v is not None or delta_h is not None:
        # Per-row/column offsets: subtract them on the already scaled data, with the scale of
        # each site, so a frame with and without deltas differs only by the offsets.
        scale = np.float32(1.0) / (np.float32(white) - black.astype(np.float32))
        if delta_v is not None:
            dv = np.asarray(delta_v, np.float32)[y0 : y0 + h]
            for dy in range(2):
                for dx in range(2):
                    out[dy::2, dx::2] -= (dv[dy::2] * scale[dy, dx])[:, None]
        if delta_h is not None:
            dh = np.asarray(delta_h, np.float32)[x0 : x0 + w]
            for dy in range(2):
                for dx in range(2):
                    out[dy::2, dx::2] -= (dh[dx::2] * scale[dy, dx])[None, :]
    return out
