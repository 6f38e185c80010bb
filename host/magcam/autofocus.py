"""Host-driven contrast autofocus: move the lens over the protocol, measure each frame, keep the peak.

The module has no AF of its own: the host commands lens positions (``CMD_SET_LENS``), captures
a small RAW frame at each, and scores it with a focus measure (:mod:`magcam.focus_assist`):

1. coarse sweep over the whole range (about 26 positions), starting from the end nearer the
   lens, so it never first travels across the range;
2. a finer sweep (1/5 of the coarse step) around the best coarse position;
3. a fine sweep in steps of 2 around the best so far, then a least-squares parabola through
   the points near the top: the vertex is the peak, to a fraction of a step (a focus curve is
   smooth and symmetric about focus: the blur circle grows linearly with the lens offset);
4. the lens is commanded to the rounded vertex and left there.

AF that finds nothing to focus on fails instead of picking a peak out of noise: a featureless
region (a wall, a lens cap, the sky) gives a flat curve whose largest point is only sensor
noise, a few per cent above the rest. The peak must stand at least ``MIN_CONTRAST`` times
above the coarse sweep's median; if it does not, or if a frame cannot be taken (the module is
too hot, the link fails), the lens goes back to where AF found it and the error says why
(:class:`AutofocusFailed` carries the curve).

Each frame's own header says where the lens was during its exposure, so a ring turned during
AF cannot mislabel a point. About 50 frames of 320x240: under a second with the simulator.

Usage::

    import magcam
    with magcam.connect("auto") as cam:
        af = cam.autofocus(roi=(0.25, 0.25, 0.5, 0.5))      # or magcam.autofocus.autofocus(cam)
        print(af.position, af.frames, f"{af.seconds:.2f} s")
        for pos, value in af.curve: ...
    # AutofocusFailed (a PipelineError): no contrast in the region; e.result.curve has the sweep
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from magcam.focus_assist import DEFAULT_ROI, METHODS, check_roi, focus_measure
from magcam.pipeline.errors import PipelineError

AF_SIZE = (320, 240)
COARSE_POINTS = 25  # intervals over the whole range in the first sweep
FINE_STEP = 2
FINE_HALF_SPAN = 10  # the last sweep covers best +- this many steps
# A featureless region's curve is noise: its largest of ~26 points is ~1.1x its median (the
# simulator at gains 1-8); a scene with anything to focus on peaks far higher (6-130x there).
MIN_CONTRAST = 1.25


@dataclass
class AfResult:
    """Where AF left the lens and how it got there."""

    position: int  # the lens position commanded at the end (and reached)
    peak: float  # the fitted peak, fractional lens position
    measure: float  # the largest measure seen
    curve: list[tuple[int, float]] = field(default_factory=list)  # (lens position, measure), in capture order
    frames: int = 0
    seconds: float = 0.0
    method: str = "tenengrad"
    roi: tuple = DEFAULT_ROI
    contrast: float = 0.0  # the peak measure over the coarse sweep's median (>= MIN_CONTRAST)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["curve"] = [[int(p), float(m)] for p, m in self.curve]
        d["roi"] = list(self.roi)
        return d


class AutofocusFailed(PipelineError):
    """AF found no focus; the lens is back where it started. ``result`` has the sweep so far."""

    def __init__(self, message: str, result: AfResult):
        super().__init__(message)
        self.result = result


def fit_peak(points: list[tuple[float, float]]) -> float | None:
    """Vertex of the least-squares parabola through (position, measure) points; None if it has
    no maximum (fewer than 3 distinct positions, or the curve is not concave there)."""
    xs = np.array([p for p, _ in points], np.float64)
    ys = np.array([m for _, m in points], np.float64)
    if len(np.unique(xs)) < 3:
        return None
    x0 = xs.mean()
    a, b, _ = np.polyfit(xs - x0, ys, 2)
    if a >= 0:
        return None
    return float(x0 - b / (2 * a))


class _Sweeper:
    def __init__(self, cam, method, roi, width, height, exposure_us, analog_gain, on_point):
        self.cam, self.method, self.roi = cam, method, roi
        self.size, self.exposure_us, self.analog_gain = (width, height), exposure_us, analog_gain
        self.on_point = on_point
        self.curve: list[tuple[int, float]] = []
        self.best: dict[int, float] = {}  # position -> measure (the latest frame there)

    def measure(self, positions) -> None:
        for p in positions:
            if p in self.best:
                continue  # measured already in an earlier pass
            self.cam.set_lens_position(p)
            frame = self.cam.capture_raw(*self.size, exposure_us=self.exposure_us, analog_gain=self.analog_gain)
            where = int(frame.lens_position)  # where the lens really was (a ring may have moved it)
            value = focus_measure(frame, self.method, self.roi)
            self.curve.append((where, value))
            self.best[where] = value
            if where != p:
                self.best.setdefault(p, value)  # don't ask for p again this pass
            if self.on_point:
                self.on_point(len(self.curve), where, value)

    def argmax(self, lo=None, hi=None) -> int:
        pts = [(m, p) for p, m in self.best.items() if (lo is None or p >= lo) and (hi is None or p <= hi)]
        return max(pts)[1]


def _span(lo: int, hi: int, start: int, stop: int, step: int) -> list[int]:
    """start..stop (either order) in ``step``s, always including stop, clamped to lo..hi."""
    sign = 1 if stop >= start else -1
    out = list(range(start, stop, sign * step)) + [stop]
    return [min(max(p, lo), hi) for p in out]


def autofocus(cam, *, roi=DEFAULT_ROI, method: str = "tenengrad", width: int = AF_SIZE[0],
              height: int = AF_SIZE[1], exposure_us: int = 10000, analog_gain: float = 1.0,
              on_point=None) -> AfResult:
    """Contrast AF over the whole lens range; leaves the lens at the sharpest position.

    ``on_point(n, position, measure)`` is called after each frame (progress). Raises
    PipelineError for a bad method or ROI, and AutofocusFailed when the region has no contrast
    to focus on; link errors (LinkError, FrameError) and NAKs pass through. Whenever AF fails
    after it moved the lens, the lens goes back to where it was.
    """
    if method not in METHODS:
        raise PipelineError(f"unknown focus measure {method!r}; expected one of {METHODS}")
    roi = check_roi(roi)
    t0 = time.monotonic()
    lens = cam.descriptor["lens"]
    lo, hi = int(lens["position_min"]), int(lens["position_max"])
    start_position = cam.lens_position
    here = lo if start_position is None else start_position
    sw = _Sweeper(cam, method, roi, width, height, exposure_us, analog_gain, on_point)
    try:
        peak, contrast = _sweep(sw, lo, hi, here)
    except Exception:  # not on Ctrl-C: stop at once
        _put_back(cam, start_position)
        raise
    result = AfResult(position=int(here), peak=float(peak), measure=max(sw.best.values()), curve=sw.curve,
                      frames=len(sw.curve), seconds=0.0, method=method, roi=roi, contrast=contrast)
    if contrast < MIN_CONTRAST:
        back = _put_back(cam, start_position)
        result.position = int(back) if back is not None else sw.curve[-1][0]
        result.seconds = time.monotonic() - t0
        raise AutofocusFailed(f"autofocus found nothing to focus on: the sharpest frame is {contrast:.2f}x the "
                              f"sweep's median, below {MIN_CONTRAST}x (a featureless or too dark region?); "
                              f"lens back at {result.position}", result)
    final = int(min(max(round(peak), lo), hi))
    result.position = int(cam.set_lens_position(final))
    result.seconds = time.monotonic() - t0
    return result


def _put_back(cam, position) -> int | None:
    """Best effort: the lens back where AF found it (the link may be what failed); where it got."""
    if position is None:
        return None
    try:
        return cam.set_lens_position(position)
    except Exception:
        return None


def _sweep(sw: _Sweeper, lo: int, hi: int, here: int) -> tuple[float, float]:
    """The three sweeps; the fitted peak and the contrast (peak measure / coarse median)."""
    # 1. coarse, from the nearer end
    coarse = max(1, (hi - lo) // COARSE_POINTS)
    start, stop = (lo, hi) if here - lo <= hi - here else (hi, lo)
    sw.measure(_span(lo, hi, start, stop, coarse))
    floor = float(np.median([m for _, m in sw.curve]))
    best = sw.argmax()
    # 2. finer, around the coarse peak
    mid = max(1, coarse // 5)
    sw.measure(_span(lo, hi, best - coarse, best + coarse, mid))
    best = sw.argmax(best - coarse, best + coarse)
    # 3. fine, centred on a parabola through the finer sweep's top, then the final fit
    near = [(p, m) for p, m in sw.best.items() if abs(p - best) <= 2 * mid]
    centre = fit_peak(near)
    centre = best if centre is None or abs(centre - best) > 2 * mid else int(round(centre))
    for _ in range(2):  # a second fine pass only if the vertex left the first one's middle
        sw.measure(_span(lo, hi, centre - FINE_HALF_SPAN, centre + FINE_HALF_SPAN, FINE_STEP))
        near = [(p, m) for p, m in sw.best.items() if abs(p - centre) <= FINE_HALF_SPAN]
        peak = fit_peak(near)
        if peak is None or not lo - 0.5 <= peak <= hi + 0.5:
            peak = float(sw.argmax(centre - FINE_HALF_SPAN, centre + FINE_HALF_SPAN))
        if abs(peak - centre) <= FINE_HALF_SPAN / 2:
            break
        centre = int(round(peak))
    top = max(sw.best.values())
    return peak, (top / floor if floor > 0 else (float("inf") if top > 0 else 0.0))
