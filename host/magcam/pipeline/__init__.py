"""Develop pipeline: RAW frame -> sRGB image -> JPEG/PNG file.

Usage::

    from magcam.pipeline import develop, write_jpeg
    write_jpeg("capture.jpg", develop(frame, descriptor))
"""

from magcam.pipeline.develop import develop
from magcam.pipeline.output import write_jpeg, write_png

__all__ = ["develop", "write_jpeg", "write_png"]
