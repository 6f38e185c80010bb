"""The one error the image pipeline raises for bad input: a message a person can act on."""

from __future__ import annotations

import numpy as np


class PipelineError(ValueError):
    """An input or option the pipeline cannot use. ``str(e)`` names the file when there is one."""


def check_rgb(rgb, where: str, dtypes: tuple, *, even: bool = False) -> None:
    """PipelineError unless ``rgb`` is a non-empty (H, W, 3) array of one of ``dtypes``
    (with even H and W if ``even``): a stage called alone gets one clear error naming what it
    wants, not numpy's or OpenCV's from deep inside."""
    names = " or ".join(np.dtype(d).name for d in dtypes)
    want = f"{where} wants an (H, W, 3) {names} RGB image{' with even H and W' if even else ''}"
    if not isinstance(rgb, np.ndarray):
        raise PipelineError(f"{want}, not {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in dtypes:
        raise PipelineError(f"{want}, not a {rgb.shape} {rgb.dtype.name} array")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise PipelineError(f"{where}: the image is empty ({rgb.shape[1]} x {rgb.shape[0]})")
    if even and (rgb.shape[0] % 2 or rgb.shape[1] % 2):
        raise PipelineError(f"{want}, not {rgb.shape[1]} x {rgb.shape[0]}")
