"""Develop pipeline: RAW frame -> sRGB image -> JPEG/PNG file.

``develop`` is the simple whole-frame path (bilinear, sRGB, 8-bit) the demo uses. The full
pipeline (per-site black level, defects, lens shading, white balance, any demosaic method,
sRGB / Display P3 / camera RGB, highlights, denoise, tone, sharpening; tiled on all cores;
TIFF/PNG/JPEG with ICC and EXIF) is ``magcam.process``, built from the stage modules here:
``black``, ``defects``, ``shading``, ``whitebalance``, ``highlights``, ``demosaic``, ``color``,
``denoise``, ``tone``, ``sharpen``, ``icc``, ``output``. See docs/pipeline.md.

Usage::

    from magcam.pipeline import develop, write_jpeg
    write_jpeg("capture.jpg", develop(frame, descriptor))
"""

from magcam.pipeline.develop import develop
from magcam.pipeline.errors import PipelineError
from magcam.pipeline.output import write_image, write_jpeg, write_png

__all__ = ["PipelineError", "develop", "write_image", "write_jpeg", "write_png"]
