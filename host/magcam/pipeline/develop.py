"""Develop a RawFrame into a displayable sRGB image.

Stages, each a small function so any one can be replaced:

1. ``normalize``        black-level subtract, scale so ``white_level`` is 1.0
2. ``demosaic.bilinear`` mosaic -> camera RGB
3. ``white_balance``    divide by the camera's neutral (the white's camera RGB)
4. ``clip_highlights``  clip where the first channel saturates, so clipped whites stay white
5. ``camera_to_srgb``   ``color.camera_to_linear_srgb`` matrix -> linear sRGB
6. ``encode_srgb``      sRGB transfer curve (clips to [0, 1]) -> uint8

Usage::

    from magcam.pipeline import develop, write_jpeg
    rgb = develop(frame, descriptor)          # (H, W, 3) uint8, R, G, B
    write_jpeg("capture_0007.jpg", rgb)
"""

from __future__ import annotations

import numpy as np

from magcam.frame import RawFrame
from magcam.pipeline import color, demosaic, whitebalance
from magcam.pipeline.errors import PipelineError


def develop(frame: RawFrame, descriptor: dict, *, wb=None) -> np.ndarray:
    """Develop ``frame`` to sRGB uint8 (H, W, 3), RGB order.

    ``wb`` is the camera RGB of a neutral white (three positive numbers, any scale); by default
    the descriptor's as-shot (D65) neutral, as written to the DNG's AsShotNeutral.
    """
    # Said in the pipeline's terms: these were AttributeErrors, TypeErrors and float('auto').
    if not isinstance(frame, RawFrame):
        raise PipelineError(f"develop() takes a RawFrame (e.g. from cam.capture_raw()), got {type(frame).__name__}")
    if not isinstance(descriptor, dict):
        raise PipelineError("develop() needs the module descriptor (cam.descriptor) for its colour matrix, got "
                            f"{type(descriptor).__name__}; process.process_frame(frame) develops without one")
    if isinstance(wb, str):
        raise PipelineError(f"develop()'s wb is a camera neutral (R, G, B), got {wb!r}; for 'auto' use "
                            "process.process_frame(frame, descriptor=..., wb='auto')")
    neutral = color.as_shot_neutral(descriptor) if wb is None else whitebalance.check_neutral(wb)
    camera = demosaic.bilinear(normalize(frame), frame.cfa)
    balanced = clip_highlights(white_balance(camera, neutral), neutral)
    return encode_srgb(camera_to_srgb(balanced, descriptor))


def normalize(frame: RawFrame) -> np.ndarray:
    """Mosaic as float32 with black at 0.0 and ``white_level`` at 1.0.

    Values below black stay negative: clipping them here would bias dark areas brighter.
    """
    if frame.black_level >= frame.white_level:
        raise ValueError(f"black_level {frame.black_level} must be below white_level {frame.white_level}")
    black = np.float32(frame.black_level)
    return (frame.data.astype(np.float32) - black) / np.float32(frame.white_level - frame.black_level)


def white_balance(camera_rgb: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """Divide camera RGB by ``neutral`` so that the neutral becomes (1, 1, 1) times its green."""
    return camera_rgb / np.asarray(neutral, dtype=np.float32) * np.float32(neutral[1])


def clip_highlights(balanced: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """Clip every channel at the level where the first one saturates.

    After white balance, channel c saturates at green(neutral) / neutral[c]; beyond the lowest of
    those levels the true colour is unknown, and leaving the other channels free would turn
    clipped highlights pink or green. (LibRaw's default "clip" highlight mode does the same.)
    """
    neutral = np.asarray(neutral, dtype=np.float64)
    return np.minimum(balanced, np.float32(neutral[1] / neutral.max()))


def camera_to_srgb(balanced: np.ndarray, descriptor: dict) -> np.ndarray:
    """White-balanced camera RGB -> linear sRGB through the descriptor's colour matrix."""
    matrix = color.camera_to_linear_srgb(descriptor).astype(np.float32)
    return balanced @ matrix.T


def encode_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear sRGB -> 8-bit sRGB (out-of-gamut values clip to [0, 255])."""
    return np.round(color.linear_to_srgb(linear) * 255).astype(np.uint8)

