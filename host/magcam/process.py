"""RAW -> finished image, in tiles, on every core: the library API behind ``magcam process``.

Usage::

    from magcam import process
    rgb = process.process_frame(raw_image)                       # (H, W, 3) uint8 sRGB
    rgb = process.process_frame(frame, descriptor=desc, output_color="p3", bits=16)
    process.process_file("shot.dng", "shot.jpg")                 # format from the extension
    process.process_file("shot.dng", "shot.tif", process.Options(preset="quality", wb="auto"))
    lin = process.process_to_array("shot.dng", output_color="raw", gamma="linear", bits=16)

The stages (``magcam.pipeline``), in order, each its own module:

=================  =============================================================  ============
stage              what                                                           reach (px)
=================  =============================================================  ============
black              per-site black level, white -> 1.0                             0
defects            hot/dead pixels vs same-colour neighbours, unless the next     4
                   pixels share the deviation (detail); known defects
shading            per-site lens shading gain map                                 0
whitebalance       multipliers on the CFA                                         0
highlights         clip (or blend) so clipped highlights stay neutral             0
demosaic           ``demosaic.METHODS[method]``                                   OVERLAP[method]
colour             camera RGB -> XYZ -> sRGB / Display P3 (or camera RGB kept)    0
denoise            chroma (half-res median, within 3 sigma of the noise) + luma   12
                   (noise-adaptive coring)
tone               filmic shoulder (optional) + sRGB or linear transfer           0
sharpen            unsharp mask on luma                                           3 (radius 1)
=================  =============================================================  ============

A tile's core grows by the reach of denoise + sharpen to the demosaic's output, by
``OVERLAP[method]`` to its input and by the defects' 4 px to the CFA read; only the core is kept,
so the output is bit-identical to processing the whole frame at once. The demosaic kernels get
the real neighbouring mosaic as their padding (mirrored only at the frame's edges), so no work
goes into mirrored margins. Everything a stage needs from the whole frame (automatic white
balance, the noise model) is measured once before tiling.

Speed: the cheap stages run fused into five numba passes (``pipeline/fused.py``: normalize,
CFA preparation, colour, encoding, sharpen + quantize), all releasing the GIL. Tiles run on a
thread pool, one per core, with numba single-threaded inside each (a kernel's own worker team
on top of the pool would only contend for the same cores, and spins badly on a busy machine).
The numba kernels are loaded from the cache on a background thread while the file is read and
analysed. ``tools/bench/stages.py`` prints where the time goes.
"""

from __future__ import annotations

import inspect
import numbers
import os
import threading
import time
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from magcam.atomic import output_problem, same_file
from magcam.frame import RawFrame
from magcam.pipeline import black as black_stage
from magcam.pipeline import (color, defects, demosaic, demosaic_rias, denoise, filters, fused, highlights, sharpen, tone,
                             whitebalance)
from magcam.pipeline.errors import PipelineError
from magcam.pipeline.output import FORMATS, check_quality
from magcam.pipeline.noise import NoiseSampler, sigma_fn
from magcam.pipeline.shading import GainMap
from magcam.rawio import RawImage, check_path, from_frame, read

PRESETS = ("default", "fast", "quality")
DEFAULT_TILE = 768  # tile height; tiles are twice as wide (docs/pipeline.md: why this size)
_ANALYSIS_ROWS = 256
_ANALYSIS_PIXELS = 6_000_000  # enough 4x4-cell blocks for the noise model many times over


def demosaic_methods() -> dict[str, Callable]:
    """name -> fn(cfa float32 HxW, pattern) -> float32 HxWx3 (the demosaic module's contract)."""
    return dict(demosaic.METHODS)


def demosaic_overlap(method: str) -> int:
    return int(demosaic.OVERLAP[method])


def _preset_values(preset: str) -> dict:
    default, preview = demosaic.DEFAULT, demosaic.PREVIEW
    if preset == "fast":
        return dict(demosaic=preview, defects=False, denoise=0.0, chroma_denoise=0.0, sharpen=0.0,
                    highlights="clip")
    if preset == "quality":
        return dict(demosaic=default, defects=True, denoise=1.0, chroma_denoise=1.0, sharpen=0.5,
                    highlights="blend")
    return dict(demosaic=default, defects=True, denoise=0.0, chroma_denoise=0.6, sharpen=0.3, highlights="clip")


@dataclass
class Options:
    """Processing options; ``None`` means "the preset's value".

    ``wb``: ``"asshot"``, ``"auto"`` (grey world), ``"none"`` or an (R, G, B) camera neutral;
    default ``asshot``, or ``none`` with ``output_color="raw"`` (camera RGB as recorded, like
    rawpy's ``output_color=raw, user_wb=[1, 1, 1, 1]``). ``denoise`` is the luma strength
    (~0..2, in units of the measured noise), ``chroma_denoise`` 0..1, ``sharpen`` the unsharp
    amount (0..~2). ``bits``: 8 or 16 (default 8 for JPEG/PNG and arrays, 16 for TIFF).
    ``jobs``: worker threads (default: all cores). ``tile``: tile height in px, tiles are twice as wide (0: whole frame).
    """

    preset: str = "default"
    demosaic: str | None = None
    output_color: str = "srgb"
    gamma: str = "srgb"
    wb: object = None
    denoise: float | None = None
    chroma_denoise: float | None = None
    sharpen: float | None = None
    sharpen_radius: float = 1.0
    highlights: str | None = None
    tone: str = "none"
    defects: bool | None = None
    known_defects: object = None
    lens_shading: object = None  # a GainMap or (4, gh, gw) grids; None: the file's; False: off
    bits: int | None = None
    jobs: int | None = None
    tile: int = DEFAULT_TILE
    format: str | None = None
    quality: int = 92

    def resolved(self) -> "Options":
        if self.preset not in PRESETS:
            raise PipelineError(f"unknown preset {self.preset!r}; expected one of {', '.join(PRESETS)}")
        base = _preset_values(self.preset)
        values = {k: (base[k] if getattr(self, k) is None and k in base else getattr(self, k))
                  for k in (f.name for f in fields(self))}
        opts = Options(**values)
        methods = demosaic_methods()
        if opts.demosaic not in methods:
            raise PipelineError(f"unknown demosaic method {opts.demosaic!r}; available: {', '.join(methods)}")
        if opts.output_color not in color.OUTPUT_SPACES:
            raise PipelineError(f"output_color must be one of {', '.join(color.OUTPUT_SPACES)}, got {opts.output_color!r}")
        if opts.gamma not in tone.GAMMAS:
            raise PipelineError(f"gamma must be one of {', '.join(tone.GAMMAS)}, got {opts.gamma!r}")
        if opts.tone not in tone.TONES:
            raise PipelineError(f"tone must be one of {', '.join(tone.TONES)}, got {opts.tone!r}")
        if opts.highlights not in highlights.MODES:
            raise PipelineError(f"highlights must be one of {', '.join(highlights.MODES)}, got {opts.highlights!r}")
        if opts.wb is None:
            opts.wb = "none" if opts.output_color == "raw" else "asshot"
        if isinstance(opts.wb, str):
            if opts.wb not in ("asshot", "auto", "none"):
                opts.wb = parse_wb(opts.wb)
        else:
            opts.wb = tuple(whitebalance.check_neutral(opts.wb) * 1.0)
        # chroma_denoise is the share of the colour noise taken away: past 1 it would overshoot
        for k, low, top in (("denoise", 0, 10), ("chroma_denoise", 0, 1), ("sharpen", 0, 10),
                            ("sharpen_radius", 0.3, 5)):
            v = getattr(opts, k)
            if not (_is_number(v) and np.isfinite(v) and low <= v <= top):
                raise PipelineError(f"{k} must be a number from {low} to {top}, got {v!r}")
            setattr(opts, k, float(v))
        if opts.defects not in (None, True, False):
            raise PipelineError(f"defects must be True or False, got {opts.defects!r}")
        if opts.bits is not None and not (_is_whole(opts.bits) and opts.bits in (8, 16)):
            raise PipelineError(f"bits must be 8 or 16, got {opts.bits!r}")
        if opts.jobs is not None and not (_is_whole(opts.jobs) and opts.jobs >= 1):
            raise PipelineError(f"jobs must be a positive integer, got {opts.jobs!r}")
        if not (_is_whole(opts.tile) and (opts.tile == 0 or opts.tile >= 16)):
            raise PipelineError(f"tile must be 0 (whole frame) or at least 16 px, got {opts.tile!r}")
        if opts.format is not None:
            opts.format = format_name(opts.format)
        opts.quality = check_quality(opts.quality)
        return opts


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_whole(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def parse_wb(text: str):
    """``asshot``, ``auto``, ``none`` or ``R,G,B`` (a camera neutral, any scale)."""
    t = text.strip().lower()
    if t in ("asshot", "auto", "none"):
        return t
    try:
        vals = tuple(float(v) for v in t.split(","))
    except ValueError:
        raise PipelineError(f"white balance must be asshot, auto, none or R,G,B, got {text!r}") from None
    return tuple(whitebalance.check_neutral(vals) * 1.0)


# ---- the plan: everything a tile needs, decided once per frame -------------------------------


@dataclass
class Plan:
    opts: Options
    raw: RawImage
    method: str
    demosaic_fn: Callable
    margin: int  # reach of a tile's core into the frame around it: cfa_margin + overlap + post
    site_mult: np.ndarray  # (2, 2) white-balance multipliers on the CFA
    cfa_clip: np.ndarray | None  # (2, 2) clip levels on the balanced CFA (clip mode)
    rgb_clip: np.ndarray | None  # (3,) clip levels after demosaicing (clip mode)
    mult: np.ndarray  # (3,) the demosaic white balance multipliers
    matrix: np.ndarray  # (3, 3) balanced camera RGB -> output linear RGB
    encoder: tone.Encoder
    bits: int
    gain_map: GainMap | None
    known: np.ndarray | None
    noise: Callable | None  # raw-domain sigma(level), for defects
    luma_sigma: Callable | None  # output-domain sigma(level), for luma denoise
    chroma_sigma: tuple | None  # (Cr, Cb) output-domain CHROMA_K sigma(level), for chroma denoise
    neutral: np.ndarray
    stats: dict = field(default_factory=dict)
    cfa_margin: int = 0  # defects' reach on the CFA
    overlap: int = 0  # the demosaic's (demosaic.OVERLAP)
    post: int = 0  # denoise + sharpen reach on the RGB, even
    padded_kernel: Callable | None = None  # the method's kernel on a padded mosaic, if it has one
    k: dict = field(default_factory=dict)  # the fused kernels' arguments (float32)
    frame_data: np.ndarray | None = None  # raw.frame.data, C-contiguous (one kernel signature)
    # Profiling hook (tools/bench/stages.py): called in the tile's thread with a stage's name as
    # that stage ends, and with "" as a tile starts.
    lap: Callable[[str], None] | None = None


def make_plan(raw: RawImage, opts: Options, *, warm: bool = True) -> Plan:
    opts = opts.resolved()
    method = opts.demosaic
    stats: dict = {}
    if method == "rias" and min(raw.height, raw.width) < demosaic.MIN_SIZE:
        # RIAS's windows need 16 px; a thumbnail-sized frame still develops, with the preview method
        method = demosaic.PREVIEW
        stats["demosaic"] = f"{method} (rias needs {demosaic.MIN_SIZE} px a side)"
    fn = demosaic_methods()[method]
    if warm:  # load the numba kernels from the cache while the analysis below runs
        _warm_up_in_background(fn, (opts.bits or 8))
    cfa_margin = defects.MARGIN if opts.defects else 0
    overlap = demosaic_overlap(method)
    post = 0
    if opts.denoise > 0 or opts.chroma_denoise > 0:
        post += denoise.MARGIN
    if opts.sharpen > 0:
        post += sharpen.margin(opts.sharpen_radius)
    post += post % 2  # tiles start on whole CFA cells
    margin = cfa_margin + overlap + post
    margin += margin % 2

    gain_map = raw.gain_map
    if opts.lens_shading is False:
        gain_map = None
    elif isinstance(opts.lens_shading, GainMap):
        gain_map = opts.lens_shading
    elif opts.lens_shading is not None:
        gain_map = GainMap.from_grids(opts.lens_shading)
    known = raw.defects
    if opts.known_defects is not None:
        extra = _defect_list(opts.known_defects, raw.height, raw.width)
        known = extra if known is None else np.concatenate([known, extra])

    black = black_stage.check_levels(raw.black, raw.white)
    need_noise = opts.defects or opts.denoise > 0 or opts.chroma_denoise > 0
    grey = whitebalance.GreyWorld(raw.cfa) if opts.wb == "auto" else None
    sampler = NoiseSampler(raw.cfa) if need_noise else None
    if grey is not None or sampler is not None:
        _analyse(raw, black, gain_map, grey, sampler)
    noise_ab = sampler.model() if sampler is not None else None
    if noise_ab is not None:
        stats["noise_a"], stats["noise_b"] = noise_ab

    if opts.wb == "asshot":
        neutral = raw.as_shot_neutral()
    elif opts.wb == "auto":
        neutral = grey.neutral()
    elif opts.wb == "none":
        neutral = np.ones(3)
    else:
        neutral = np.asarray(opts.wb, dtype=np.float64)
    neutral = whitebalance.check_neutral(neutral)
    stats["neutral"] = [round(float(v), 5) for v in neutral]

    if opts.output_color == "raw":
        # Demosaic balanced data (what the methods assume), then give back camera RGB
        # (``wb=none``) or camera RGB balanced by the requested neutral.
        dem_neutral = raw.as_shot_neutral() if opts.wb == "none" else neutral
        mult = whitebalance.multipliers(dem_neutral)
        out_mult = whitebalance.multipliers(neutral) if opts.wb != "none" else np.ones(3)
        matrix = np.diag(out_mult / mult)
        # Every channel clips where the output reaches 1.0, as LibRaw's raw output does: a
        # clipped highlight is white, and no channel stops short of full scale.
        clip_levels = mult / out_mult
    else:
        mult = whitebalance.multipliers(neutral)
        matrix = color.camera_to_output_matrix(raw.xyz_to_camera, neutral, opts.output_color)
        clip_levels = np.ones(3)
    site_clip = whitebalance.site_multipliers(clip_levels, raw.cfa)

    headroom = 1.25
    if opts.highlights == "blend":
        headroom = float(min(4.0, max(1.25, mult.mean())))
    bits = opts.bits or 8
    encoder = tone.Encoder(opts.gamma, opts.tone, headroom, steps=1 << (16 if bits == 8 else 20))

    noise = luma_sigma = chroma_sigma = None
    if noise_ab is not None:
        noise = sigma_fn(*noise_ab)
        w = np.array([0.25, 0.5, 0.25]) @ matrix
        luma_sigma = sigma_fn(*noise_ab, scale=float(np.sqrt(np.sum((w * mult) ** 2))))
        chroma_sigma = denoise.chroma_thresholds(*noise_ab, matrix, mult)
    plan = Plan(opts=opts, raw=raw, method=method, demosaic_fn=fn, margin=margin,
                site_mult=whitebalance.site_multipliers(mult, raw.cfa),
                cfa_clip=site_clip if opts.highlights == "clip" else None,
                rgb_clip=clip_levels if opts.highlights == "clip" else None,
                mult=mult, matrix=matrix, encoder=encoder, bits=bits, gain_map=gain_map, known=known,
                noise=noise, luma_sigma=luma_sigma, chroma_sigma=chroma_sigma, neutral=neutral, stats=stats,
                cfa_margin=cfa_margin, overlap=overlap, post=post)
    if min(raw.height, raw.width) > 2 * overlap + 2:  # else the mirrored padding needs more than the frame
        plan.padded_kernel = _padded_kernels().get(fn)
    plan.k = _kernel_args(plan, black, noise_ab)
    plan.frame_data = np.ascontiguousarray(raw.frame.data, dtype=np.uint16)
    return plan


def _defect_list(pairs, height: int, width: int) -> np.ndarray:
    """``known_defects`` as an (n, 2) array of (x, y) inside the frame (the convention of
    defects.correct and the descriptor's ``sensor.defects``), or a clear error."""
    try:
        a = np.asarray(pairs)
        ok = a.size == 0 or (a.dtype.kind in "iu" and a.ndim >= 1 and a.shape[-1] == 2)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise PipelineError("known_defects must be (x, y) pairs of whole numbers, "
                            f"got {str(pairs)[:60]!r}")
    a = a.astype(np.int64).reshape(-1, 2)
    outside = (a[:, 0] < 0) | (a[:, 0] >= width) | (a[:, 1] < 0) | (a[:, 1] >= height)
    if outside.any():
        x, y = a[np.argmax(outside)]
        raise PipelineError(f"known_defects: pixel ({x}, {y}) is outside the {width}x{height} frame")
    return a


def _kernel_args(plan: Plan, black: np.ndarray, noise_ab) -> dict:
    """The fused kernels' arguments, as the stage modules compute them (float32)."""
    raw, o, f32 = plan.raw, plan.opts, np.float32
    none2, inf = np.zeros((0, 0), f32), f32(np.inf)
    a, b = noise_ab if noise_ab is not None else (0.0, 0.0)
    k = {
        "black": black.astype(f32),
        "scale": np.array([[f32(1.0 / (raw.white - black[dy, dx])) for dx in range(2)] for dy in range(2)], f32),
        "dscale": f32(1.0) / (f32(raw.white) - black.astype(f32)),
        "delta_v": np.zeros(0, f32) if raw.black_delta_v is None else np.asarray(raw.black_delta_v, f32),
        "delta_h": np.zeros(0, f32) if raw.black_delta_h is None else np.asarray(raw.black_delta_h, f32),
        # fused.prepare_cfa's layout: defects.correct's floor, rel, k (its defaults), the noise model
        # sigma = sqrt(a v + b) (a, b, scale, in use), then its neighbour check's support share
        "defect_params": np.array([*_DEFECT_THRESHOLDS[:3], a, b, 1.0, plan.noise is not None, _DEFECT_THRESHOLDS[3]],
                                  f32),
        "site_mult": plan.site_mult.astype(f32),
        "cfa_clip": plan.cfa_clip.astype(f32) if plan.cfa_clip is not None else np.full((2, 2), inf),
        "rgb_clip": plan.rgb_clip.astype(f32) if plan.rgb_clip is not None else np.full(3, inf),
        "matrix": plan.matrix.astype(f32),
        "use_matrix": not np.array_equal(plan.matrix, np.eye(3)),
        "lut": plan.encoder.lut if plan.encoder.lut is not None else np.zeros(0, f32),
        "top": f32(plan.encoder.top),
        "taps": filters.gaussian_kernel(o.sharpen_radius) if o.sharpen > 0 else np.zeros(0, f32),
        "none2": none2,
        "none2_u8": np.zeros((0, 0), np.uint8),
        "top_code": f32(255 if plan.bits == 8 else 65535),
        # chroma denoise's noise thresholds (a, b, Cr scale, Cb scale) as in denoise.chroma_thresholds
        # (make_plan measures the noise model whenever chroma denoise is on)
        "chroma_noise": (np.array([a, b, *denoise.chroma_scales(plan.matrix, plan.mult)], f32)
                         if noise_ab is not None else np.zeros(0, f32)),
    }
    lut = k["lut"]
    k["lut_scale"] = f32((len(lut) - 1) / plan.encoder.top) if len(lut) else f32(1)
    return k


_DEFECT_THRESHOLDS = tuple(inspect.signature(defects.correct).parameters[k].default
                           for k in ("floor", "rel", "k", "support"))


def _padded_kernels() -> dict:
    """demosaic method -> its numba kernel ``(xp, pad, oy, ox, out)`` on a mosaic padded by
    ``demosaic.OVERLAP`` (what the method runs after padding). A tile can hand the kernel the
    real neighbouring data as padding, so no time goes into demosaicing mirrored margins."""
    from magcam.pipeline import demosaic_linear

    found = {}
    for name, kernel in (("rias", getattr(demosaic_rias, "rias_padded", None)),
                         ("fast", getattr(demosaic_linear, "malvar_kernel", None)),
                         ("bilinear", getattr(demosaic_linear, "bilinear_kernel", None))):
        fn = getattr(demosaic, name, None)
        if kernel is not None and fn is not None and demosaic.METHODS.get(name) is fn:
            found[fn] = kernel
    return found


def _analyse(raw: RawImage, black, gain_map, grey, sampler) -> None:
    """One pass over the frame in fixed bands (independent of the tile size). The noise model
    needs far fewer samples than a large frame has: with grey world off, each band gives only
    one of ``step`` column ranges, taken in turn from band to band so the samples cover the
    whole scene (at least ``_ANALYSIS_PIXELS`` pixels in all)."""
    data, h, w = raw.frame.data, raw.height, raw.width
    step = 1 if grey is not None else max(1, (h * w) // _ANALYSIS_PIXELS)
    chunk = -(-w // step // 8) * 8  # whole 4x4-cell blocks of the noise sampler
    for i, y in enumerate(range(0, h, _ANALYSIS_ROWS)):
        y1 = min(h, y + _ANALYSIS_ROWS)
        x = (i % step) * chunk
        x1 = min(w, x + chunk)
        if x >= x1:
            continue
        band = black_stage.normalize(data[y:y1, x:x1], black, raw.white, y, x, raw.black_delta_v, raw.black_delta_h)
        if gain_map is not None:
            band *= gain_map.region_gains(y, x, y1 - y, x1 - x, h, w)
        if grey is not None:
            grey.add(band)
        if sampler is not None:
            sampler.add(band)


_warm_lock = threading.Lock()
_warmed: set = set()


def _warm_up_in_background(fn: Callable, bits: int) -> None:
    """Load the demosaic's and the fused kernels from numba's cache (a cold process spends a
    few hundred ms there) on a thread of its own, so it overlaps reading and analysing."""
    key = (fn, bits)
    with _warm_lock:
        if key in _warmed:
            return
        _warmed.add(key)

    def warm():
        try:
            _run_tiny(fn, bits)
        except Exception:  # noqa: BLE001 - only a head start; the real call reports errors
            pass

    threading.Thread(target=warm, name="magcam-warm", daemon=True).start()


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel the tiles use: the demosaic methods
    and the fused stages, for 8- and 16-bit output. A cold cache compiles for tens of seconds."""
    demosaic.warm_up()
    for fn in demosaic_methods().values():
        for bits in (8, 16):
            _run_tiny(fn, bits)


def _run_tiny(fn: Callable, bits: int) -> None:
    kernel = _padded_kernels().get(fn)
    with _numba_threads(1):
        if kernel is not None:
            pad = next((demosaic.OVERLAP[n] for n, f in demosaic.METHODS.items() if f is fn), None)
            if pad is not None:
                out = np.empty((2, 2, 3), np.float32)
                kernel(np.zeros((2 + 2 * pad, 2 + 2 * pad), np.float32), pad, 0, 0, out)
        fused.warm_up(np.uint8 if bits == 8 else np.uint16)


@contextmanager
def _numba_threads(n: int):
    """numba's thread count for this thread (it is per thread): tiles already run one per core,
    and a kernel's own worker team on top of them would only contend (and spin)."""
    from magcam.jit import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


# ---- one tile ----------------------------------------------------------------------------------


def _tile(plan: Plan, core: tuple[int, int, int, int], dst: np.ndarray, dy: int, dx: int) -> None:
    """Develop the tile core (y0, x0, y1, x1) of the frame into ``dst[dy:, dx:]`` (quantised).

    Regions, all with even corners: the core grows by ``post`` (what denoise and sharpen read)
    to the demosaic's output O, by ``overlap`` to its input D, and by ``cfa_margin`` to the CFA
    that defect correction reads, each clipped to the frame; the padded kernels get D with the
    frame edges mirrored, as the demosaic does for the whole frame.
    """
    raw, o, k = plan.raw, plan.opts, plan.k
    lap = plan.lap or _no_lap
    h, w = raw.height, raw.width
    y0, x0, y1, x1 = core
    p, ov, cm = plan.post, plan.overlap, plan.cfa_margin
    oy0, ox0, oy1, ox1 = max(0, y0 - p), max(0, x0 - p), min(h, y1 + p), min(w, x1 + p)
    fy0, fx0, fy1, fx1 = max(0, oy0 - ov), max(0, ox0 - ov), min(h, oy1 + ov), min(w, ox1 + ov)
    py0, px0, py1, px1 = max(0, fy0 - cm), max(0, fx0 - cm), min(h, fy1 + cm), min(w, fx1 + cm)

    norm = np.empty((py1 - py0, px1 - px0), np.float32)
    fused.normalize(plan.frame_data, py0, py1, px0, px1, k["black"], k["scale"], k["dscale"],
                    k["delta_v"], k["delta_h"], norm)
    lap("black")
    gains = k["none2"]
    if plan.gain_map is not None:
        gains = plan.gain_map.region_gains(py0, px0, py1 - py0, px1 - px0, h, w)
    known = k["none2_u8"]
    if plan.known is not None and len(plan.known):
        known = _known_mask(plan.known, py0, px0, py1 - py0, px1 - px0)
    window = (fy0 - py0, fy1 - py0, fx0 - px0, fx1 - px0)
    oh, ow = oy1 - oy0, ox1 - ox0
    if plan.padded_kernel is not None:
        pt, pl = fy0 - (oy0 - ov), fx0 - (ox0 - ov)  # mirrored rows/columns above and left
        xp = np.empty((oh + 2 * ov, ow + 2 * ov), np.float32)
        fused.prepare_cfa(norm, *window, bool(o.defects), k["defect_params"], known, gains,
                          k["site_mult"], k["cfa_clip"], xp, pt, pl)
        del norm
        _mirror_edges(xp, pt, pt + fy1 - fy0, pl, pl + fx1 - fx0)
        lap("cfa")
        rgb = np.empty((oh, ow, 3), np.float32)
        plan.padded_kernel(xp, ov, *_red_at(raw.cfa), rgb)
        del xp
    else:
        cfa = np.empty((fy1 - fy0, fx1 - fx0), np.float32)
        fused.prepare_cfa(norm, *window, bool(o.defects), k["defect_params"], known, gains,
                          k["site_mult"], k["cfa_clip"], cfa, 0, 0)
        del norm
        lap("cfa")
        full = np.asarray(plan.demosaic_fn(cfa, raw.cfa), dtype=np.float32)
        rgb = np.ascontiguousarray(full[oy0 - fy0 : oy1 - fy0, ox0 - fx0 : ox1 - fx0])
        del cfa, full
    lap("demosaic")
    if plan.rgb_clip is None:
        rgb = highlights.blend(rgb, plan.mult)
    chroma = o.chroma_denoise > 0
    half_cr = half_cb = k["none2"]
    if chroma:
        half_cr = np.empty((oh // 2, ow // 2), np.float32)
        half_cb = np.empty_like(half_cr)
    fused.colour(rgb, k["rgb_clip"], k["matrix"], k["use_matrix"], half_cr, half_cb)
    lap("colour")
    if chroma:
        half_cr, half_cb = (_smooth_chroma(c) for c in (half_cr, half_cb))
    luma = k["none2"]
    if o.denoise > 0 and plan.luma_sigma is not None:
        y_plane, _, _ = denoise.to_opponent(rgb)
        luma = denoise._luma(y_plane, o.denoise, plan.luma_sigma)
    lap("denoise")
    ye = np.empty((oh, ow), np.float32) if o.sharpen > 0 else k["none2"]
    fused.encode(rgb, half_cr, half_cb, np.float32(o.chroma_denoise), k["chroma_noise"], luma, k["lut"],
                 k["lut_scale"], k["top"], ye)
    lap("tone")
    fused.sharpen_quantize(rgb, ye, k["taps"], np.float32(o.sharpen), k["top_code"],
                           y0 - oy0, x0 - ox0, y1 - oy0, x1 - ox0, dst, dy, dx)
    lap("sharpen+quantize")


def _smooth_chroma(half: np.ndarray) -> np.ndarray:
    """denoise._chroma at half resolution: 5x5 median (exact, OpenCV), 5-tap binomial."""
    if min(half.shape) >= 3:
        half = cv2.medianBlur(half, 5)
    return fused.separable(half, filters.BINOMIAL5)


def _red_at(pattern: str) -> tuple[int, int]:
    return divmod(pattern.index("R"), 2)


def _mirror_edges(xp: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> None:
    """Fill ``xp`` outside rows [r0, r1) and columns [c0, c1) by reflect-101 about the frame
    edges there (columns first, then whole rows: corners come out as cv2.copyMakeBorder's)."""
    hp, wp = xp.shape
    if c0 or c1 < wp:
        rows = xp[r0:r1]
        if c0:
            rows[:, :c0] = rows[:, 2 * c0 : c0 : -1]
        if c1 < wp:
            rows[:, c1:] = rows[:, c1 - 2 - np.arange(wp - c1)]
    if r0:
        xp[:r0] = xp[2 * r0 : r0 : -1]
    if r1 < hp:
        xp[r1:] = xp[r1 - 2 - np.arange(hp - r1)]


def _known_mask(known: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    k = np.asarray(known, dtype=np.int64).reshape(-1, 2)
    x, y = k[:, 0] - x0, k[:, 1] - y0
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    mask = np.zeros((h, w), np.uint8)
    mask[y[inside], x[inside]] = 1
    return mask


def _no_lap(name: str) -> None:
    pass


def _tile_grid(h: int, w: int, tile: int) -> list[list[tuple[int, int, int, int]]]:
    """Rows of tile cores (y0, x0, y1, x1), all corners even: the frame split evenly into tiles
    at most ``tile`` px tall and ``2 * tile`` wide (0: one tile). Wide tiles: the demosaic's
    per-row workspace is then big enough (>= 4 MB a plane) for numpy to back it with huge
    pages, which makes its fresh memory far cheaper to touch (-15 % demosaic time measured)."""
    if tile == 0:
        return [[(0, 0, h, w)]]

    def cuts(n: int, most: int) -> list[int]:
        t = max(16, most - most % 16)
        parts = -(-n // t)
        size = -(-n // parts)
        size += size % 2
        return list(range(0, n, size)) + [n]

    ys, xs = cuts(h, tile), cuts(w, 2 * tile)
    return [[(ya, xa, yb, xb) for xa, xb in zip(xs, xs[1:])] for ya, yb in zip(ys, ys[1:])]


def iter_bands(plan: Plan, progress: Callable[[int, int], None] | None = None,
               out: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Quantised output (uint8/uint16), one band of tile rows at a time, top to bottom, in the
    frame's stored orientation. Tiles run on ``plan.opts.jobs`` threads. With ``out`` (the whole
    (H, W, 3) output), tiles are written straight into it and the bands are views of it."""
    h, w = plan.raw.height, plan.raw.width
    grid = _tile_grid(h, w, plan.opts.tile)
    total = sum(len(r) for r in grid)
    jobs = plan.opts.jobs or os.cpu_count() or 1
    dtype = np.uint8 if plan.bits == 8 else np.uint16

    def new_band(row):
        y0, y1 = row[0][0], row[0][2]
        return out[y0:y1] if out is not None else np.empty((y1 - y0, w, 3), dtype)

    def run(core, band):
        if plan.lap:
            plan.lap("")
        _tile(plan, core, band, 0, core[1])

    done = 0
    if jobs == 1 or total == 1:
        # One tile at a time: a single tile may use the cores through numba's own threads.
        threads = jobs if total == 1 else 1
        try:
            for row in grid:
                band = new_band(row)
                for core in row:
                    with _numba_threads(threads):  # not across the yield: the caller's own setting there
                        run(core, band)
                    done += 1
                    if progress:
                        progress(done, total)
                yield band
        finally:  # the demosaic keeps its planes per thread for the next tile; not beyond the frame
            # (a worker thread's go with the thread)
            demosaic_rias.free_workspace()
        return
    from magcam.jit import numba

    def init():
        numba.set_num_threads(1)

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="magcam-tile", initializer=init) as pool:
        pending: deque = deque()

        def collect(band, futures):
            nonlocal done
            for fut in futures:
                fut.result()
                done += 1
                if progress:
                    progress(done, total)
            return band

        # Two tile rows in flight: the pool never idles at a band boundary.
        try:
            for row in grid:
                band = new_band(row)
                pending.append((band, [pool.submit(run, core, band) for core in row]))
                if len(pending) >= 2:
                    yield collect(*pending.popleft())
            while pending:
                yield collect(*pending.popleft())
        finally:  # an error, or the consumer stopped: drop the tiles not started yet
            for _, futures in pending:
                for fut in futures:
                    fut.cancel()


# ---- public API ----------------------------------------------------------------------------------


def _as_raw(raw, descriptor) -> RawImage:
    if isinstance(raw, RawImage):
        return raw
    if isinstance(raw, RawFrame):
        return from_frame(raw, descriptor)
    if isinstance(raw, (str, os.PathLike)):
        return read(raw)
    raise PipelineError(f"expected a RawImage, RawFrame or path, got {type(raw).__name__}")


def _options(options, overrides) -> Options:
    try:
        if options is None:
            options = Options()
        elif isinstance(options, dict):
            options = Options(**options)
        elif not isinstance(options, Options):
            raise PipelineError(f"options must be an Options or a dict, got {type(options).__name__}")
        if overrides:
            options = replace(options, **overrides)
    except TypeError as e:  # an option that does not exist
        raise PipelineError(f"{e}; options: {', '.join(f.name for f in fields(Options))}") from None
    return options


def process_frame(raw, options: Options | dict | None = None, *, descriptor: dict | None = None,
                  progress=None, **overrides) -> np.ndarray:
    """Develop ``raw`` (RawImage, RawFrame + ``descriptor``, or a path) to an (H, W, 3) uint8 or
    uint16 RGB array, in display orientation."""
    opts = _options(options, overrides)
    _warm_up_early(opts)
    raw = _as_raw(raw, descriptor)
    plan = make_plan(raw, opts)
    out = np.empty((raw.height, raw.width, 3), np.uint8 if plan.bits == 8 else np.uint16)
    for _ in iter_bands(plan, progress, out=out):
        pass
    return orient(out, raw.orientation)


def _warm_up_early(opts: Options) -> None:
    """Start loading the kernels before the file is read (bad options: make_plan says so)."""
    try:
        r = opts.resolved()
    except PipelineError:
        return
    _warm_up_in_background(demosaic_methods()[r.demosaic], r.bits or 8)


def process_to_array(path, **options) -> np.ndarray:
    """``process_frame(read(path), Options(**options))``."""
    opts = _options(options, None)
    _warm_up_early(opts)
    return process_frame(read(path), opts)


def orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels -> display pixels for an EXIF orientation (1..8)."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # transverse: the anti-diagonal mirror
        8: lambda a: np.rot90(a, 1),
    }
    f = ops.get(int(orientation), ops[1])
    return np.ascontiguousarray(f(img)) if orientation != 1 else img


_FORMAT_ALIASES = {"jpg": "jpeg", "tif": "tiff"}


def format_name(fmt) -> str:
    """``tiff``, ``png`` or ``jpeg`` for a format as a user writes it (``JPG``, ``tif``)."""
    name = _FORMAT_ALIASES.get(fmt.lower(), fmt.lower()) if isinstance(fmt, str) else None
    if name not in FORMATS:
        raise PipelineError(f"format must be one of {', '.join(FORMATS)} (or jpg, tif), got {fmt!r}")
    return name


def output_format(path, fmt: str | None) -> str:
    """The format ``path`` is written in: ``fmt``, else its extension's. A ``fmt`` its known
    extension contradicts (PNG data in ``x.jpg``) is refused: viewers go by the extension."""
    ext = Path(path).suffix.lower()
    said = next((name for name, exts in FORMATS.items() if ext in exts), None)
    if fmt:
        fmt = format_name(fmt)
        if said is not None and said != fmt:
            raise PipelineError(f"{path}: the extension {ext!r} says {said}, the format asked for is {fmt}; "
                                "make them agree")
        return fmt
    if said is not None:
        return said
    raise PipelineError(f"{path}: cannot tell the format from the extension {ext or '(none)'!r}; "
                        "use .tif, .png or .jpg or give a format")


def output_bits(fmt: str, bits: int | None) -> int:
    """Bits per channel of a ``fmt`` file: ``bits``, or 16 for TIFF and 8 otherwise."""
    if bits is None:
        return 16 if fmt == "tiff" else 8
    if fmt == "jpeg" and bits != 8:
        raise PipelineError("JPEG holds 8 bits per channel; use TIFF or PNG for 16")
    return bits


@dataclass
class Result:
    input: str
    output: str
    width: int
    height: int
    format: str
    bits: int
    seconds: float
    stats: dict


def process_file(src, dst, options: Options | dict | None = None, *, progress=None, **overrides) -> Result:
    """Read ``src``, develop it and write ``dst`` (TIFF, PNG or JPEG, atomically, with an ICC
    profile and EXIF). TIFF and PNG are written band by band as tiles finish, so memory stays
    near one band of output plus the RAW itself."""
    from magcam.pipeline import output

    t0 = time.perf_counter()
    check_path(src)
    opts = _options(options, overrides)
    fmt = output_format(dst, opts.format)
    opts = replace(opts, bits=output_bits(fmt, opts.bits))
    if same_file(src, dst):
        raise PipelineError(f"{dst}: is the input itself; write to a new file")
    why = output_problem(dst)
    if why is not None:  # known before developing: say it before the work, not after
        raise PipelineError(f"{dst}: {why}; {src} was not developed")
    _warm_up_early(opts)
    raw = read(src)
    try:
        plan = make_plan(raw, opts)
    except PipelineError as e:  # the stages do not know the file: a batch must say which one
        raise PipelineError(str(e) if str(src) in str(e) else f"{src}: {e}") from None
    profile = output.icc_for(plan.opts.output_color, plan.opts.gamma, raw.xyz_to_camera, plan.neutral)
    h, w = raw.height, raw.width
    bands = iter_bands(plan, progress)
    if raw.orientation != 1:  # rotate the whole image, then hand it over as one band
        full = np.concatenate(list(bands), axis=0)
        full = orient(full, raw.orientation)
        h, w = full.shape[:2]
        bands = iter([full])
    output.write_image(dst, fmt, bands, (h, w), plan.bits, icc_profile=profile, meta=raw.meta,
                       output_color=plan.opts.output_color, gamma=plan.opts.gamma, quality=opts.quality)
    return Result(str(src), str(dst), w, h, fmt, plan.bits, time.perf_counter() - t0, plan.stats)

