"""RAW frame as the host holds it: the CFA samples plus the header the device sent."""

from __future__ import annotations

from dataclasses import dataclass, field, asdict

import numpy as np

CFA_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")


@dataclass
class RawFrame:
    """One Bayer frame. ``data`` is uint16, shape (height, width), values in ADC units."""

    data: np.ndarray
    frame_id: int
    cfa: str = "RGGB"
    bits: int = 12
    black_level: int = 0
    white_level: int = 4095
    exposure_us: int = 10000
    analog_gain: float = 1.0
    timestamp_ms: int = 0
    lens_position: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.cfa not in CFA_PATTERNS:
            raise ValueError(f"unknown CFA pattern {self.cfa!r}; expected one of {CFA_PATTERNS}")
        if self.data.ndim != 2 or self.data.dtype != np.uint16:
            raise ValueError("RawFrame.data must be a 2-D uint16 array")

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    def header(self) -> dict:
        """Everything but the samples, as plain JSON-able values."""
        d = asdict(self)
        d.pop("data")
        d["width"], d["height"] = self.width, self.height
        return d
