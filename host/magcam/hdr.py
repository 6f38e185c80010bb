"""Exposure-bracket HDR merge in the raw domain: ``magcam hdr FILES... -o OUT``.

Frames of one scene taken at different exposures (``exposure time x analog gain``, from
ExposureTime and ISO) are merged per CFA site, before demosaicing, into one linear CFA frame in
the units of a reference frame (1.0 = that frame's white level above black):

* each sample is black-subtracted, normalised to its white level and divided by its exposure
  relative to the reference (``s_i = t_i / t_ref``): every frame then estimates the same
  radiance;
* weights are the inverse noise variance of that estimate, ``s_i^2 / (a_i x + b_i)``, from the
  shot + read noise model ``sigma^2 = a x + b`` of each frame (from the sensor's full well and
  read noise when a module descriptor is given, else measured on the frame with
  ``pipeline.noise``); ``x`` is the mean of the 8 same-colour neighbours, so a sample's own
  noise does not steer its weight (which would bias dark areas low);
* a whole 2x2 cell gets weight 0 in a frame where it is at or near saturation (smoothed level
  of any site >= 0.90 of white, or any sample of it or of the 8 cells around >= 0.98; in the
  shortest frame, which has no shorter one to take over, only its own samples >= 0.98), so a
  clipped channel never shifts the colour of a cell;
* motion-aware rejection: each frame's radiance, binned to 2x2 cells and box-smoothed 3x3, is
  compared with the reference frame's; cells differing by more than ``k`` sigma (noise of both,
  plus 2 % for calibration) are dropped, dilated by one cell, and the reference is used there.
  Where the reference is clipped its clipped value is a lower bound, and a frame that is darker
  than that bound is dropped too. A moving object therefore appears once, as in the reference;
* cells no frame can give (clipped in every usable frame) are set to the full scale, the
  radiance at which the shortest exposure clips: they are white, not pink.

Outputs: a 16-bit linear DNG (the merged maximum at WhiteLevel 65535, black 512,
BaselineExposure ``log2(maximum)`` so readers that honour it show the reference exposure;
colour matrices, neutral, make, model and the reference's exposure kept) and a JPEG developed
with ``magcam.process`` and compressed by ``pipeline.localtone``.

Usage::

    from magcam import hdr, rawio
    frames = [rawio.read(p) for p in ("b-2.dng", "b+0.dng", "b+2.dng")]
    res = hdr.merge_bracket(frames)                  # reference: the middle exposure
    res.cfa, res.stats["frames"], res.stats["rejected_fraction"]
    hdr.write_dng(res, "scene.dng")
    hdr.write_jpeg(res, "scene.jpg")
    summary = hdr.merge_files(["b-2.dng", "b+0.dng", "b+2.dng"], "scene")  # scene.dng + scene.jpg
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from magcam.atomic import atomic_path, output_problem, repeated
from magcam.frame import RawFrame
from magcam.pipeline import black as black_stage
from magcam.pipeline import localtone, tone
from magcam.pipeline.errors import PipelineError
from magcam.pipeline.noise import NoiseSampler
from magcam.rawio import RawImage

SAT_SMOOTH = 0.90  # a cell is "near saturation" when a site's 3x3 smoothed level reaches this ...
SAT_PIXEL = 0.98  # ... or any of its samples reaches this (fraction of white above black)
MODEL_REL = 0.02  # relative mismatch allowed between frames (exposure accuracy, linearity)
DEFAULT_K = 4.0
DNG_BLACK = 512  # pedestal: noise below black survives in the unsigned samples
DNG_WHITE = 65535
SAME_EXPOSURE = 0.01  # exposures closer than this (relative) count as the same

Progress = Callable[[str, int, int], None]


@dataclass
class HdrResult:
    """A merged bracket.

    ``cfa``: float32 (H, W) linear CFA in units of the reference frame (1.0 = its white above
    black); clipped cells hold ``full_scale``. ``scales``: each frame's exposure relative to the
    reference. ``stats``: per frame ``used`` (fraction of samples that went into the merge),
    ``weight_share``, ``saturated`` and ``rejected`` (motion) fractions; overall
    ``rejected_fraction`` and ``clipped_fraction``.
    """

    cfa: np.ndarray
    pattern: str
    reference: int
    scales: list[float]
    full_scale: float
    raw: RawImage  # the reference frame: colour, orientation, metadata
    sources: list[str]
    exposures: list[tuple[float, float]]  # (seconds, analog gain) per frame
    noise: list[tuple[float, float]]  # (a, b) per frame, normalised units
    stats: dict = field(default_factory=dict)

    @property
    def peak(self) -> float:
        """The largest merged value (what the DNG's WhiteLevel stands for)."""
        return float(max(np.max(self.cfa), 1e-6))


# ---- inputs --------------------------------------------------------------------------------


def exposure_of(raw: RawImage) -> tuple[float, float]:
    """(exposure time in s, analog gain) of a frame: ExposureTime and the frame's gain (rawio
    reads ISO / 100, gain 1 when the file has no ISO). ``PipelineError`` if the file has no
    usable exposure time."""
    t = raw.meta.get("exposure_time")
    try:
        t = float(t) if t is not None else None
    except (TypeError, ValueError):
        t = None
    if t is None or not math.isfinite(t) or t <= 0:
        raise PipelineError(f"{raw.source}: no usable exposure time (ExposureTime tag): cannot place it in a bracket")
    gain = float(raw.frame.analog_gain)  # rawio: ISO / 100 of a file (1 without one), a link frame's own
    if not math.isfinite(gain) or gain <= 0:
        raise PipelineError(f"{raw.source}: unusable analog gain {gain!r} (ISO)")
    return t, gain


def _check_bracket(images: Sequence[RawImage]) -> list[tuple[float, float]]:
    if len(images) < 2:
        name = f" ({images[0].source})" if images else ""
        raise PipelineError(f"an HDR merge needs at least two frames of a bracket, got {len(images)}{name}")
    first = images[0]
    for im in images[1:]:
        if (im.width, im.height) != (first.width, first.height):
            raise PipelineError(f"{im.source}: {im.width}x{im.height}, but {first.source} is "
                                f"{first.width}x{first.height}: the frames of a bracket must be the same size")
        if im.cfa != first.cfa:
            raise PipelineError(f"{im.source}: CFA {im.cfa}, but {first.source} is {first.cfa}")
    exposures = [exposure_of(im) for im in images]
    for i in range(len(images)):
        for j in range(i):
            ti, tj = exposures[i][0] * exposures[i][1], exposures[j][0] * exposures[j][1]
            if abs(ti / tj - 1) < SAME_EXPOSURE:
                raise PipelineError(f"{images[j].source} and {images[i].source} have the same exposure "
                                    f"({_describe(exposures[i])}): a bracket needs different exposures")
    return exposures


def _describe(exposure: tuple[float, float]) -> str:
    t, g = exposure
    shutter = f"1/{1 / t:.4g} s" if t < 1 else f"{t:.4g} s"
    return f"{shutter} at ISO {round(g * 100)}"


def _normalized(raw: RawImage) -> np.ndarray:
    black = black_stage.check_levels(raw.black, raw.white)
    return black_stage.normalize(raw.frame.data, black, raw.white, 0, 0, raw.black_delta_v, raw.black_delta_h)


def noise_models(images: Sequence[RawImage], gains: Sequence[float],
                 descriptor: dict | None = None) -> list[tuple[float, float]]:
    """(a, b) of ``sigma^2 = a x + b`` per frame, normalised units (white - black = 1).

    From the descriptor's ``sensor.full_well_e`` (electrons filling white - black at gain 1)
    and ``read_noise_e`` when given; else measured with ``pipeline.noise``, pooled over the
    frames taken at the same gain (they share one model, and a long frame alone is often too
    clipped to measure).
    """
    sensor = (descriptor or {}).get("sensor") or {}
    fw, rn = sensor.get("full_well_e"), sensor.get("read_noise_e")
    known = _positive(fw) and isinstance(rn, (int, float)) and math.isfinite(rn) and rn >= 0
    samplers: dict[float, NoiseSampler] = {}
    if not known:
        for raw, gain in zip(images, gains):
            samplers.setdefault(round(gain, 4), NoiseSampler(raw.cfa)).add(_normalized(raw))
        pooled = {g: s.model() for g, s in samplers.items()}
    out = []
    for raw, gain in zip(images, gains):
        span = float(raw.white - np.mean(raw.black))
        quant = 1.0 / (12.0 * span * span)  # rounding to whole DN
        if known:
            a = gain / float(fw)
            out.append((a, (float(rn) * a) ** 2 + quant))
        else:
            a, b = pooled[round(gain, 4)]
            out.append((a, max(b, quant)))
    return out


# ---- the merge -----------------------------------------------------------------------------


def _sites(x: np.ndarray) -> list[np.ndarray]:
    """The four CFA site planes (views), in pattern order."""
    return [x[dy::2, dx::2] for dy in range(2) for dx in range(2)]


def _box3(plane: np.ndarray) -> np.ndarray:
    return cv2.blur(np.ascontiguousarray(plane, dtype=np.float32), (3, 3), borderType=cv2.BORDER_REFLECT)


class _Frame:
    """One frame prepared for merging: normalised samples, smoothed per-site levels, cells."""

    def __init__(self, scale: float, noise: tuple[float, float], x: np.ndarray, shortest: bool):
        self.scale = np.float32(scale)
        self.a, self.b = np.float32(noise[0]), np.float32(noise[1])
        self.x = x
        self.smooth = [_box3(p) for p in _sites(x)]
        stack = np.stack(self.smooth)
        self.mean = stack.mean(axis=0)  # cell level (frame units), 36 samples
        self.max = stack.max(axis=0)
        clipped = np.stack(_sites(x)).max(axis=0) >= SAT_PIXEL
        # Next to a clipped cell the smoothed levels are biased low: not comparable, and
        # (except in the shortest frame, which has no one to hand its cells to) not used.
        self.near_clip = cv2.dilate(clipped.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
        self.saturated = clipped if shortest else self.near_clip | (self.max >= SAT_SMOOTH)

    def var_mean(self) -> np.ndarray:
        """Variance of ``mean / scale`` (reference units): the noise model over 36 samples."""
        return (self.a * np.maximum(self.mean, 0) + self.b) / (36 * self.scale * self.scale)

    def var_max(self) -> np.ndarray:
        return (self.a * np.maximum(self.max, 0) + self.b) / (9 * self.scale * self.scale)


def _motion(f: _Frame, ref: _Frame, k: float) -> np.ndarray:
    """Cells where ``f`` disagrees with the reference by more than ``k`` sigma."""
    yi, yr = f.mean / f.scale, ref.mean / ref.scale
    both = ~f.saturated & ~ref.saturated & ~f.near_clip & ~ref.near_clip
    tol2 = f.var_mean() + ref.var_mean() + (np.float32(MODEL_REL) * np.maximum(np.abs(yi), np.abs(yr))) ** 2
    bad = both & ((yi - yr) ** 2 > np.float32(k * k) * tol2)
    # Where the reference is clipped its value is a lower bound on the radiance.
    mi, mr = f.max / f.scale, ref.max / ref.scale
    bound = mr * np.float32(1 - k * MODEL_REL) - np.float32(k) * np.sqrt(f.var_max() + ref.var_max())
    bad |= ~f.saturated & ~f.near_clip & ref.saturated & (mi < bound)
    # One cell of margin: a moving edge differs less after smoothing than it does per pixel.
    return cv2.dilate(bad.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)


def merge_bracket(images: Sequence[RawImage], *, reference: int | None = None, deghost: bool = True,
                  k: float = DEFAULT_K, descriptor: dict | None = None,
                  progress: Progress | None = None) -> HdrResult:
    """Merge frames of one scene at different exposures into one linear CFA (see the module
    docstring). ``reference``: index into ``images`` of the frame that defines the units and
    wins where frames disagree; default the middle exposure (the shorter of the two middle
    ones for an even count). ``deghost=False`` turns motion rejection off. ``descriptor``: a
    module descriptor whose ``sensor.full_well_e`` / ``read_noise_e`` give the noise model;
    without it the model is measured on the frames (``noise_models``).
    ``progress(stage, done, total)``.

    ``PipelineError`` (naming the file) for a single frame, different sizes or CFA patterns,
    a missing exposure time, or two frames with the same exposure.
    """
    exposures = _check_bracket(images)
    n = len(images)
    t = [e[0] * e[1] for e in exposures]
    order = sorted(range(n), key=lambda i: t[i])
    if reference is None:
        reference = order[(n - 1) // 2]
    if not isinstance(reference, (int, np.integer)) or not 0 <= reference < n:
        raise PipelineError(f"reference must be a frame index 0..{n - 1}, got {reference!r}")
    reference = int(reference)
    if not (math.isfinite(k) and k > 0):
        raise PipelineError(f"k must be a positive number of sigmas, got {k!r}")
    scales = [t[i] / t[reference] for i in range(n)]
    full_scale = 1.0 / min(scales)
    h, w = images[0].height, images[0].width
    num = np.zeros((h, w), np.float32)
    den = np.zeros((h, w), np.float32)
    noise = noise_models(images, [e[1] for e in exposures], descriptor)
    per_frame: list[dict] = [{} for _ in range(n)]
    weight_sums = [0.0] * n
    ref_frame: _Frame | None = None
    for step, i in enumerate([reference] + [j for j in range(n) if j != reference], 1):
        raw = images[i]
        x = _normalized(raw)
        f = _Frame(scales[i], noise[i], x, shortest=i == order[0])
        if ref_frame is None:
            ref_frame = f
            rejected = np.zeros_like(f.saturated)
        else:
            rejected = (_motion(f, ref_frame, k) & ~f.saturated) if deghost else np.zeros_like(f.saturated)
        use = ~f.saturated & ~rejected
        inv_s = np.float32(1.0) / f.scale
        wsum = 0.0
        for (dy, dx), sm in zip(((0, 0), (0, 1), (1, 0), (1, 1)), f.smooth):
            site = x[dy::2, dx::2]
            # The level for the weight is the mean of the 8 same-colour neighbours, without the
            # sample itself: a weight that knew the sample's noise would bias the mean down.
            level = (sm * np.float32(9) - site) * np.float32(1 / 8)
            wt = (f.scale * f.scale) / (f.a * np.maximum(level, 0) + f.b)
            wt *= use
            num[dy::2, dx::2] += wt * site * inv_s
            den[dy::2, dx::2] += wt
            wsum += float(wt.sum(dtype=np.float64))
        weight_sums[i] = wsum
        cells = f.saturated.size
        per_frame[i] = {"source": raw.source, "exposure_s": exposures[i][0], "gain": exposures[i][1],
                        "scale": round(scales[i], 6), "used": round(float(np.count_nonzero(use)) / cells, 5),
                        "saturated": round(float(np.count_nonzero(f.saturated)) / cells, 5),
                        "rejected": round(float(np.count_nonzero(rejected)) / cells, 5),
                        "noise_a": float(noise[i][0]), "noise_b": float(noise[i][1])}
        del f, x
        if progress:
            progress("merge", step, n)
    clipped = den == 0
    cfa = np.divide(num, den, out=np.full_like(num, np.float32(full_scale)), where=~clipped)
    total_w = sum(weight_sums) or 1.0
    for i in range(n):
        per_frame[i]["weight_share"] = round(weight_sums[i] / total_w, 5)
    others = [per_frame[i]["rejected"] for i in range(n) if i != reference]
    stats = {"frames": per_frame, "reference": reference,
             "rejected_fraction": round(float(np.mean(others)), 5) if others else 0.0,
             "clipped_fraction": round(float(np.count_nonzero(clipped)) / clipped.size, 5),
             "dynamic_range_ev": round(math.log2(full_scale * max(scales)), 3)}
    return HdrResult(cfa=cfa, pattern=images[0].cfa, reference=reference, scales=scales, full_scale=full_scale,
                     raw=images[reference], sources=[im.source for im in images], exposures=exposures,
                     noise=noise, stats=stats)


# ---- outputs -------------------------------------------------------------------------------


def to_uint16(result: HdrResult) -> np.ndarray:
    """The merged CFA as the DNG stores it: ``DNG_BLACK + cfa / peak * (DNG_WHITE - DNG_BLACK)``."""
    scale = (DNG_WHITE - DNG_BLACK) / result.peak
    v = result.cfa * np.float32(scale) + np.float32(DNG_BLACK)
    np.rint(v, out=v)
    return np.clip(v, 0, DNG_WHITE, out=v).astype(np.uint16)


def write_dng(result: HdrResult, path: str | os.PathLike) -> Path:
    """Write the merged frame as a 16-bit linear DNG (atomically) with the reference's metadata
    (``dng.write_derived``); return the path."""
    from magcam import dng

    seconds, gain = result.exposures[result.reference]
    frame = RawFrame(data=to_uint16(result), frame_id=0, cfa=result.pattern, bits=16, black_level=DNG_BLACK,
                     white_level=DNG_WHITE, exposure_us=max(1, round(seconds * 1e6)), analog_gain=gain)
    baseline = math.log2(result.peak)
    info = {"hdr": {
        "sources": [Path(s).name for s in result.sources], "reference": result.reference,
        "exposure_s": [e[0] for e in result.exposures], "gain": [e[1] for e in result.exposures],
        "baseline_exposure": round(baseline, 4), "rejected_fraction": result.stats.get("rejected_fraction"),
        "clipped_fraction": result.stats.get("clipped_fraction")}}
    try:
        return dng.write_derived(path, frame, result.raw, software="magcam hdr", description=info,
                                 extra_tags=[(50730, dng.SRATIONAL, 1, dng.rational(baseline))])  # BaselineExposure
    except ValueError as e:
        raise PipelineError(f"{result.raw.source}: cannot write the merged DNG: {e}") from None


def _positive(v) -> bool:
    try:
        return math.isfinite(float(v)) and float(v) > 0
    except (TypeError, ValueError):
        return False


def develop(result: HdrResult, *, preset: str = "default", progress: Progress | None = None) -> np.ndarray:
    """The merged frame developed with ``magcam.process`` (linear sRGB, 16-bit) and tone mapped
    with ``pipeline.localtone``: (H, W, 3) uint8 sRGB in display orientation."""
    from magcam import process

    raw = result.raw
    # Headroom for white balance: the development pipeline clips each balanced channel at 1.0,
    # yet a merged red or blue is valid up to the full scale, so the data go in below white by
    # the largest multiplier, and clipped cells go in at white (neutral after clipping).
    neutral = raw.as_shot_neutral()
    head = float(np.max(neutral) / np.min(neutral))
    data = to_uint16(result).astype(np.float32)
    data = (data - DNG_BLACK) / np.float32(head) + DNG_BLACK
    clipped = result.cfa >= np.float32(result.full_scale * (1 - 1e-6))
    data[clipped] = DNG_WHITE
    frame = RawFrame(data=np.clip(np.rint(data), 0, DNG_WHITE).astype(np.uint16), frame_id=0, cfa=result.pattern,
                     bits=16, black_level=DNG_BLACK, white_level=DNG_WHITE, exposure_us=raw.frame.exposure_us)
    dev = RawImage(frame=frame, black=np.full((2, 2), float(DNG_BLACK)), white=float(DNG_WHITE),
                   xyz_to_camera=raw.xyz_to_camera, illuminant=raw.illuminant, matrices=raw.matrices,
                   neutral=raw.neutral, orientation=raw.orientation, gain_map=raw.gain_map, defects=raw.defects,
                   source=raw.source, meta=raw.meta)

    def tiles(done: int, total: int) -> None:
        if progress:
            progress("develop", done, total)

    lin = process.process_frame(dev, process.Options(preset=preset, gamma="linear", bits=16, sharpen=0.0),
                                progress=tiles)
    display = localtone.tonemap(lin.astype(np.float32) * np.float32(1 / 65535))
    del lin
    enc = tone.srgb_encode(display).astype(np.float32)
    if progress:
        progress("tone map", 1, 1)
    return tone.quantize(enc, 8)


def write_jpeg(result: HdrResult, path: str | os.PathLike, *, quality: int = 92,
               progress: Progress | None = None) -> Path:
    """Develop and tone map the merged frame (``develop``) and write it as a JPEG, atomically."""
    from magcam.pipeline import output

    rgb = develop(result, progress=progress)
    return output.write_image(path, "jpeg", [rgb], rgb.shape[:2], 8, icc_profile=output.icc_for("srgb", "srgb"),
                              meta=_jpeg_meta(result), output_color="srgb", quality=quality)


def _jpeg_meta(result: HdrResult) -> dict:
    meta = dict(result.raw.meta)
    seconds, gain = result.exposures[result.reference]
    meta["exposure_time"], meta["iso"] = seconds, round(gain * 100)
    return meta


# ---- files ---------------------------------------------------------------------------------


def output_paths(out: str | os.PathLike, first_input: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``OUT`` -> (OUT.dng, OUT.jpg). A ``.dng``, ``.jpg`` or ``.jpeg`` suffix on OUT is
    replaced (``scene.dng`` -> scene.dng + scene.jpg); any other name gets both suffixes added
    (``scene.v2`` -> scene.v2.dng + scene.v2.jpg). An existing directory (or a name ending in
    ``/``) receives ``<first input's stem>-hdr.dng`` / ``.jpg``."""
    text = os.fspath(out)
    p = Path(text)
    if p.is_dir() or text.endswith(("/", os.sep)):
        stem = Path(first_input).stem if first_input is not None else "hdr"
        base = p / f"{stem}-hdr"
    elif p.suffix.lower() in (".dng", ".jpg", ".jpeg"):
        base = p.with_suffix("")
    else:
        base = p
    if not base.name:
        raise PipelineError(f"{text}: not a usable output name")
    return base.parent / (base.name + ".dng"), base.parent / (base.name + ".jpg")


def merge_files(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, reference: int | None = None,
                deghost: bool = True, k: float = DEFAULT_K, descriptor: dict | None = None,
                progress: Progress | None = None) -> dict:
    """Read ``paths``, merge them and write OUT.dng and OUT.jpg (see ``output_paths``): both
    appear together or, on any error, neither does. Returns a summary (outputs, stats)."""
    from magcam import rawio

    if isinstance(paths, (str, bytes, os.PathLike)):  # one name would be merged letter by letter
        raise PipelineError(f"give the frames of the bracket as a list of files, not one name ({paths!r})")
    if len(paths) < 2:
        name = f" ({paths[0]})" if paths else ""
        raise PipelineError(f"an HDR merge needs at least two frames of a bracket, got {len(paths)}{name}")
    twice = repeated(paths)
    if twice is not None:
        raise PipelineError(f"{twice[1]} is given twice (a frame cannot be merged with itself)")
    dng_path, jpg_path = output_paths(out, paths[0])
    for o in (dng_path, jpg_path):  # said now, not after the reading and merging
        why = output_problem(o, paths, make_dirs=True)
        if why is not None:
            raise PipelineError(f"{o}: {why}")
    images = []
    for i, p in enumerate(paths, 1):
        images.append(rawio.read(p))
        if progress:
            progress("read", i, len(paths))
    result = merge_bracket(images, reference=reference, deghost=deghost, k=k, descriptor=descriptor,
                           progress=progress)
    del images
    dng_path.parent.mkdir(parents=True, exist_ok=True)
    # Both files are written to temporary names and renamed only when both are complete.
    with atomic_path(dng_path) as tmp_dng, atomic_path(jpg_path) as tmp_jpg:
        write_dng(result, tmp_dng)
        if progress:
            progress("write dng", 1, 1)
        write_jpeg(result, tmp_jpg, progress=progress)
    return {"dng": str(dng_path), "jpeg": str(jpg_path), "width": int(result.cfa.shape[1]),
            "height": int(result.cfa.shape[0]), "reference": result.reference,
            "reference_file": result.sources[result.reference], "baseline_exposure": round(math.log2(result.peak), 4),
            **{k_: v for k_, v in result.stats.items() if k_ != "reference"}}
