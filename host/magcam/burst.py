"""Burst align-and-merge: several noisy RAW frames of one handheld scene -> one cleaner RAW.

The HDR+ recipe (Hasinoff et al. 2016) on Bayer data: every frame is aligned to a reference
frame tile by tile on a Gaussian pyramid of its 2x2-binned grey image
(``magcam.pipeline.align``), then merged per CFA plane with weights that follow the measured
noise and reject whatever moved (``magcam.pipeline.merge``). The result is a Bayer frame again,
written as a 16-bit DNG with the reference's metadata, so anything that develops a DNG
(``magcam process``, LibRaw, dcraw) develops it.

Frames are processed one at a time against the reference (memory: the reference, one frame
and two accumulators, as float32 CFA planes). They must share size, CFA pattern and exposure.

Usage::

    from magcam import burst, rawio
    res = burst.merge_files(["b_0001.dng", "b_0002.dng", "b_0003.dng"], "merged.dng")
    res.frame, res.seconds, res.frames[1].shift_px        # RawFrame (uint16), timings, per frame

    images = [rawio.read(p) for p in paths]                 # or RawImages already in memory
    res = burst.merge_images(images, reference=0)
    burst.write_merged("merged.dng", res, images[0])

CLI: ``magcam merge FILES... -o OUT.dng [--reference N] [--json]``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from magcam import rawio
from magcam.atomic import output_problem, repeated
from magcam.frame import RawFrame
from magcam.jit import njit, prange
from magcam.pipeline import align, merge, noise
from magcam.pipeline.black import normalize
from magcam.pipeline.errors import PipelineError

Progress = Callable[[str, int, int], None]  # (stage, done, total)
_NOISE_BAND, _NOISE_STEP = 64, 256  # rows of the reference sampled for the noise model


@dataclass
class FrameReport:
    """How one frame went into the merge."""

    source: str
    shift_px: tuple[float, float]  # median sub-pixel (dy, dx) displacement to the reference, raw pixels
    weight: float  # mean merge weight: 1 fully merged, 0 fully rejected (the reference: 1)
    alignment: align.Alignment | None = None


@dataclass
class MergeResult:
    frame: RawFrame  # merged CFA, 16-bit, with the output black and white levels
    reference: int
    noise: tuple[float, float]  # the reference's noise model, sigma^2 = a level + b (white = 1)
    noise_source: str  # "given", "NoiseProfile" (the reference DNG's) or "measured"
    frames: list[FrameReport] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)  # align, merge, total (+ read, write from files)


def merge_images(images: Sequence[rawio.RawImage], reference: int = 0, progress: Progress | None = None,
                 strength: float = merge.STRENGTH, noise_model: tuple[float, float] | None = None) -> MergeResult:
    """Merge RawImages already in memory (at least two) onto ``images[reference]``.

    ``noise_model`` is ``(a, b)`` of ``sigma^2 = a level + b`` (white = 1) when the sensor's is
    known; else it comes from the reference file's DNG NoiseProfile, else it is measured."""
    images = list(images)
    _check_count(len(images), reference)
    order = [reference] + [i for i in range(len(images)) if i != reference]
    return _merge((images[i] for i in order), len(images), reference, progress, strength, noise_model)


def merge_files(paths: Sequence[str | os.PathLike], out: str | os.PathLike, reference: int = 0,
                progress: Progress | None = None, strength: float = merge.STRENGTH,
                noise_model: tuple[float, float] | None = None) -> MergeResult:
    """Read, merge and write ``out`` (a DNG, atomically). Every problem with an input is a
    ``PipelineError`` naming the file, raised before anything is written."""
    paths = [Path(p) for p in paths]
    _check_count(len(paths), reference)
    twice = repeated(paths)
    if twice is not None:  # merged with itself it would gain nothing, yet report two frames
        raise PipelineError(f"{twice[1]} is given twice (a frame cannot be merged with itself)")
    out = Path(out)
    why = output_problem(out, paths)
    if why is None and out.suffix.lower() != ".dng":
        # The merge is RAW: a .jpg or .tif name would hold a DNG that viewers cannot open.
        why = (f"the merged frame is a DNG: name it {out.with_suffix('.dng').name} "
               f"(then `magcam process` it to a JPEG or TIFF)")
    if why is not None:
        raise PipelineError(f"{out}: {why}")
    read_s = 0.0

    def frames() -> Iterable[rawio.RawImage]:
        nonlocal read_s
        for i in [reference] + [i for i in range(len(paths)) if i != reference]:
            t = time.perf_counter()
            image = rawio.read(paths[i])
            read_s += time.perf_counter() - t
            yield image

    ref_holder: list[rawio.RawImage] = []

    def keep_ref(it):
        for k, image in enumerate(it):
            if k == 0:
                ref_holder.append(image)
            yield image

    res = _merge(keep_ref(frames()), len(paths), reference, progress, strength, noise_model)
    t = time.perf_counter()
    write_merged(out, res, ref_holder[0])
    res.seconds["write"] = time.perf_counter() - t
    res.seconds["read"] = read_s  # frames are read as the merge goes: its total includes this
    res.seconds["total"] += res.seconds["write"]
    return res


def _check_count(n: int, reference: int) -> None:
    if n < 2:
        raise PipelineError(f"a burst merge needs at least 2 frames, got {n}")
    if not 0 <= reference < n:
        raise PipelineError(f"reference frame {reference} is out of range: the burst has {n} frames (0..{n - 1})")


def _merge(images: Iterable[rawio.RawImage], n: int, reference: int, progress: Progress | None,
           strength: float, model: tuple[float, float] | None) -> MergeResult:
    """``images`` yields the reference first, then the other frames."""
    t_align = t_merge = 0.0
    t0 = time.perf_counter()
    it = iter(images)
    ref = next(it)
    if progress:
        progress("merge", 0, n)
    ref_planes = planes(ref)
    source = "given"
    if model is None:
        model, source = noise_profile(ref), "NoiseProfile"
    ref_pyr = align.Pyramid(align.grey(ref_planes))
    acc = None
    reports = [FrameReport(ref.source, (0.0, 0.0), 1.0)]
    if progress:
        progress("merge", 1, n)
    for k, image in enumerate(it, 2):
        _check_compatible(ref, image)
        t = time.perf_counter()
        alt_planes = planes(image)
        a = align.align(ref_pyr, align.Pyramid(align.grey(alt_planes)))
        t_align += time.perf_counter() - t
        t = time.perf_counter()
        if model is None:  # measured: the lower of the one-frame and the two-frame estimates
            model, source = _measured_noise(ref, ref_planes, alt_planes, a), "measured"
        if acc is None:
            acc = merge.Accumulator(ref_planes, model, strength)
        weight = acc.add(alt_planes, a.cells, a.tile, a.sub)
        t_merge += time.perf_counter() - t
        del alt_planes
        shift = np.median(a.pixels().reshape(-1, 2), axis=0)
        reports.append(FrameReport(image.source, (float(shift[0]), float(shift[1])), weight, a))
        if progress:
            progress("merge", k, n)
    if len(reports) != n:
        raise PipelineError(f"expected {n} frames, got {len(reports)}")
    t = time.perf_counter()
    frame = _to_frame(acc.result(), ref)
    t_merge += time.perf_counter() - t
    # Reports in input order: the reference was taken first.
    ordered = reports[1 : reference + 1] + [reports[0]] + reports[reference + 1 :]
    total = time.perf_counter() - t0
    return MergeResult(frame=frame, reference=reference, noise=model, noise_source=source, frames=ordered,
                       seconds={"align": t_align, "merge": t_merge, "total": total})


def _check_compatible(ref: rawio.RawImage, image: rawio.RawImage) -> None:
    if (image.height, image.width) != (ref.height, ref.width):
        raise PipelineError(f"{image.source}: frame is {image.width}x{image.height}, the reference "
                            f"{ref.source} is {ref.width}x{ref.height}; a burst must share one size")
    if image.cfa != ref.cfa:
        raise PipelineError(f"{image.source}: CFA pattern {image.cfa} differs from the reference's {ref.cfa}")
    e1, e2 = _exposure(ref), _exposure(image)
    if e1 and e2 and abs(e1 - e2) > 0.02 * max(e1, e2):
        raise PipelineError(f"{image.source}: exposure x gain {e2:g} differs from the reference's {e1:g}; "
                            "merge needs frames of one exposure (for brackets use HDR)")


def _exposure(image: rawio.RawImage) -> float | None:
    t, iso = image.meta.get("exposure_time"), image.meta.get("iso")
    try:
        return float(t) * (float(iso) if iso else 100.0) if t else None
    except (TypeError, ValueError):
        return None


# ---- frames <-> float CFA planes -------------------------------------------------------------


def planes(image: rawio.RawImage) -> np.ndarray:
    """The frame's four CFA planes (site order of the pattern: top-left, top-right, bottom-left,
    bottom-right), black-subtracted and scaled to white = 1: float32 (4, H/2, W/2)."""
    data = image.frame.data
    black = np.asarray(image.black, np.float64)
    if image.black_delta_v is not None or image.black_delta_h is not None:
        cfa = normalize(data, black, image.white, delta_v=image.black_delta_v, delta_h=image.black_delta_h)
        return np.ascontiguousarray(np.stack([cfa[dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]))
    scale = (1.0 / (image.white - black)).astype(np.float32)
    return _split(data, black.astype(np.float32), scale)


@njit(parallel=True, cache=True, fastmath=True, nogil=True, error_model="numpy")
def _split(data, black, scale):  # pragma: no cover - compiled
    h, w = data.shape[0] // 2, data.shape[1] // 2
    out = np.empty((4, h, w), np.float32)
    for y in prange(h):
        for dy in range(2):
            row = data[2 * y + dy]
            for dx in range(2):
                p = 2 * dy + dx
                b, s = black[dy, dx], scale[dy, dx]
                for x in range(w):
                    out[p, y, x] = (np.float32(row[2 * x + dx]) - b) * s
    return out


def _output_levels(ref: rawio.RawImage) -> tuple[int, int]:
    """16-bit output black and white: the reference's, scaled by a whole factor, so the merged
    values keep the precision that averaging gained."""
    k = max(1, int(65535 // max(ref.white, 1)))
    return round(float(np.mean(ref.black)) * k), int(min(65535, round(ref.white * k)))


def _to_frame(merged: np.ndarray, ref: rawio.RawImage) -> RawFrame:
    black, white = _output_levels(ref)
    data = _join(merged, np.float32(black), np.float32(white - black))
    return RawFrame(data=data, frame_id=ref.frame.frame_id, cfa=ref.cfa, bits=16, black_level=black,
                    white_level=white, exposure_us=ref.frame.exposure_us, analog_gain=ref.frame.analog_gain,
                    timestamp_ms=ref.frame.timestamp_ms, lens_position=ref.frame.lens_position)


@njit(parallel=True, cache=True, fastmath=True, nogil=True, error_model="numpy")
def _join(planes, black, span):  # pragma: no cover - compiled
    _, h, w = planes.shape
    out = np.empty((2 * h, 2 * w), np.uint16)
    for y in prange(h):
        for dy in range(2):
            for dx in range(2):
                p = 2 * dy + dx
                for x in range(w):
                    v = np.float32(np.rint(black + planes[p, y, x] * span))
                    out[2 * y + dy, 2 * x + dx] = np.uint16(min(max(v, np.float32(0.0)), np.float32(65535.0)))
    return out


def noise_profile(ref: rawio.RawImage) -> tuple[float, float] | None:
    """The DNG NoiseProfile of the reference file (tag 51041: ``variance = S x + O`` per plane
    or for all, x normalised to white = 1), averaged over planes; None when it has none."""
    import tifffile

    try:
        with tifffile.TiffFile(ref.source) as tif:
            tag = tif.pages[0].tags.get(51041)
            if tag is None:
                return None
            v = np.asarray(tag.value, np.float64).ravel()
    except (OSError, ValueError, TypeError, KeyError, IndexError, tifffile.TiffFileError):
        return None  # not a TIFF, or an unreadable tag: measure instead
    if v.size < 2 or v.size % 2 or not np.all(np.isfinite(v)) or np.any(v[0::2] < 0) or np.any(v[1::2] < 0):
        return None
    a, b = float(v[0::2].mean()), float(v[1::2].mean())
    return (a, b) if a + b > 0 else None


def _spatial_noise(ref: rawio.RawImage) -> tuple[float, float]:
    """sigma^2 = a level + b of the reference alone, on bands of it (``pipeline.noise``)."""
    sampler = noise.NoiseSampler(ref.cfa)
    data, black = ref.frame.data, np.asarray(ref.black, np.float64)
    for y in range(0, ref.height, _NOISE_STEP):
        band = data[y : y + _NOISE_BAND]
        sampler.add(normalize(band, black, ref.white, y0=y, delta_v=ref.black_delta_v,
                              delta_h=ref.black_delta_h))
    return sampler.model()


def _measured_noise(ref: rawio.RawImage, ref_planes: np.ndarray, alt_planes: np.ndarray,
                    a: align.Alignment) -> tuple[float, float]:
    """Both estimates overstate the noise where the scene has detail (green-green within a
    frame; interpolation between frames), each in its own way: keep the lower at mid-grey."""
    models = [_spatial_noise(ref), merge.temporal_noise(ref_planes, alt_planes, a.cells, a.tile, a.sub)]
    return min(models, key=lambda m: m[0] * 0.18 + m[1])


# ---- output DNG --------------------------------------------------------------------------------


def write_merged(path: str | os.PathLike, res: MergeResult, ref: rawio.RawImage) -> Path:
    """Write the merged frame as a 16-bit DNG (atomically) carrying the reference's metadata
    (``dng.write_derived``: make, model, serial, lens, colour, orientation, capture time, lens
    shading), plus a note of the burst."""
    from magcam import dng

    try:
        return dng.write_derived(path, res.frame, ref, software="magcam merge",
                                 description={"burst": {"frames": len(res.frames), "reference": res.reference}})
    except ValueError as e:
        raise PipelineError(f"{ref.source}: cannot write its metadata to {path}: {e}") from None
