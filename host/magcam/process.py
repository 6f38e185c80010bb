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
stage              what                                                           tile margin
=================  =============================================================  ============
black              per-site black level, white -> 1.0                             0
defects            hot/dead pixels vs same-colour neighbours, known defects       2
shading            per-site lens shading gain map                                 0
whitebalance       multipliers on the CFA                                         0
highlights         clip (or blend) so clipped highlights stay neutral             0
demosaic           ``demosaic.METHODS[method]``                                   OVERLAP[method]
colour             camera RGB -> XYZ -> sRGB / Display P3 (or camera RGB kept)    0
denoise            chroma (half-res median) + luma (noise-adaptive coring)        12
tone               filmic shoulder (optional) + sRGB or linear transfer           0
sharpen            unsharp mask on luma                                           3 (radius 1)
=================  =============================================================  ============

Tiles are processed with a margin of the sum of those, in a thread pool (numpy and OpenCV
release the GIL), and only their cores are kept: the output is bit-identical to processing the
whole frame at once. Everything a stage needs from the whole frame (automatic white balance,
the noise model) is measured once before tiling.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from magcam.frame import RawFrame
from magcam.pipeline import black as black_stage
from magcam.pipeline import color, defects, demosaic, denoise, highlights, sharpen, tone, whitebalance
from magcam.pipeline.errors import PipelineError
from magcam.pipeline.noise import NoiseSampler, sigma_fn
from magcam.pipeline.shading import GainMap
from magcam.rawio import RawImage, from_frame, read

FORMATS = {"tiff": (".tif", ".tiff"), "png": (".png",), "jpeg": (".jpg", ".jpeg")}
PRESETS = ("default", "fast", "quality")
DEFAULT_TILE = 512
_ANALYSIS_ROWS = 256


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
    ``jobs``: worker threads (default: all cores). ``tile``: tile size in px (0: whole frame).
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
        for k in ("denoise", "chroma_denoise", "sharpen"):
            v = float(getattr(opts, k))
            if not (np.isfinite(v) and 0 <= v <= 10):
                raise PipelineError(f"{k} must be between 0 and 10, got {v}")
            setattr(opts, k, v)
        if not 0.3 <= opts.sharpen_radius <= 5:
            raise PipelineError(f"sharpen_radius must be 0.3..5, got {opts.sharpen_radius}")
        if opts.bits not in (None, 8, 16):
            raise PipelineError(f"bits must be 8 or 16, got {opts.bits}")
        if opts.jobs is not None and not (isinstance(opts.jobs, int) and opts.jobs >= 1):
            raise PipelineError(f"jobs must be a positive integer, got {opts.jobs!r}")
        if not (isinstance(opts.tile, int) and (opts.tile == 0 or opts.tile >= 16)):
            raise PipelineError(f"tile must be 0 (whole frame) or at least 16 px, got {opts.tile!r}")
        if opts.format is not None and opts.format not in FORMATS:
            raise PipelineError(f"format must be one of {', '.join(FORMATS)}, got {opts.format!r}")
        if not 1 <= int(opts.quality) <= 100:
            raise PipelineError(f"JPEG quality must be 1..100, got {opts.quality}")
        return opts


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
    margin: int
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
    neutral: np.ndarray
    stats: dict = field(default_factory=dict)


def make_plan(raw: RawImage, opts: Options) -> Plan:
    opts = opts.resolved()
    method = opts.demosaic
    fn = demosaic_methods()[method]
    margin = defects.MARGIN if opts.defects else 0
    margin += demosaic_overlap(method)
    if opts.denoise > 0 or opts.chroma_denoise > 0:
        margin += denoise.MARGIN
    if opts.sharpen > 0:
        margin += sharpen.margin(opts.sharpen_radius)
    margin += margin % 2  # tiles start on whole CFA cells

    gain_map = raw.gain_map
    if opts.lens_shading is False:
        gain_map = None
    elif isinstance(opts.lens_shading, GainMap):
        gain_map = opts.lens_shading
    elif opts.lens_shading is not None:
        gain_map = GainMap.from_grids(opts.lens_shading)
    known = raw.defects
    if opts.known_defects is not None:
        extra = np.asarray(opts.known_defects, dtype=np.int64).reshape(-1, 2)
        known = extra if known is None else np.concatenate([known, extra])

    black = black_stage.check_levels(raw.black, raw.white)
    stats: dict = {}
    need_noise = opts.defects or opts.denoise > 0
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
        clip_levels = mult * np.min(1.0 / out_mult)  # where the output reaches 1.0 in its first channel
        if opts.wb == "none":
            clip_levels = mult  # each channel at its own saturation: raw 1.0
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

    noise = luma_sigma = None
    if noise_ab is not None:
        noise = sigma_fn(*noise_ab)
        w = np.array([0.25, 0.5, 0.25]) @ matrix
        luma_sigma = sigma_fn(*noise_ab, scale=float(np.sqrt(np.sum((w * mult) ** 2))))
    return Plan(opts=opts, raw=raw, method=method, demosaic_fn=fn, margin=margin,
                site_mult=whitebalance.site_multipliers(mult, raw.cfa),
                cfa_clip=site_clip if opts.highlights == "clip" else None,
                rgb_clip=clip_levels if opts.highlights == "clip" else None,
                mult=mult, matrix=matrix, encoder=encoder, bits=bits, gain_map=gain_map, known=known,
                noise=noise, luma_sigma=luma_sigma, neutral=neutral, stats=stats)


def _analyse(raw: RawImage, black, gain_map, grey, sampler) -> None:
    """One pass over the frame in fixed bands (independent of the tile size)."""
    data, h, w = raw.frame.data, raw.height, raw.width
    for y in range(0, h, _ANALYSIS_ROWS):
        y1 = min(h, y + _ANALYSIS_ROWS)
        band = black_stage.normalize(data[y:y1], black, raw.white, y, 0, raw.black_delta_v, raw.black_delta_h)
        if gain_map is not None:
            band *= gain_map.region_gains(y, 0, y1 - y, w, h, w)
        if grey is not None:
            grey.add(band)
        if sampler is not None:
            sampler.add(band)


# ---- one tile ----------------------------------------------------------------------------------


def _process_region(plan: Plan, ry0: int, rx0: int, ry1: int, rx1: int) -> np.ndarray:
    """Encoded float32 RGB of the frame region [ry0:ry1, rx0:rx1] (even corners)."""
    raw, o = plan.raw, plan.opts
    h, w = raw.height, raw.width
    cfa = black_stage.normalize(raw.frame.data[ry0:ry1, rx0:rx1], raw.black, raw.white, ry0, rx0,
                                raw.black_delta_v, raw.black_delta_h)
    if o.defects or plan.known is not None:
        defects.correct(cfa, noise=plan.noise, known=plan.known, y0=ry0, x0=rx0, detect=bool(o.defects))
    if plan.gain_map is not None:
        cfa *= plan.gain_map.region_gains(ry0, rx0, ry1 - ry0, rx1 - rx0, h, w)
    whitebalance.apply(cfa, plan.site_mult)
    if plan.cfa_clip is not None:
        for dy in range(2):
            for dx in range(2):
                site = cfa[dy::2, dx::2]
                np.minimum(site, np.float32(plan.cfa_clip[dy, dx]), out=site)
    rgb = plan.demosaic_fn(cfa, raw.cfa)
    del cfa
    rgb = np.asarray(rgb, dtype=np.float32)
    if plan.rgb_clip is not None:
        for c in range(3):
            np.minimum(rgb[..., c], np.float32(plan.rgb_clip[c]), out=rgb[..., c])
    else:
        rgb = highlights.blend(rgb, plan.mult)
    rgb = _apply_matrix(rgb, plan.matrix)
    if o.denoise > 0 or o.chroma_denoise > 0:
        rgb = denoise.denoise(rgb, chroma=o.chroma_denoise, luma=o.denoise, sigma=plan.luma_sigma)
    enc = plan.encoder(rgb)
    del rgb
    if o.sharpen > 0:
        enc = sharpen.sharpen(enc, o.sharpen, o.sharpen_radius)
    return enc


def _apply_matrix(rgb: np.ndarray, m: np.ndarray) -> np.ndarray:
    """3x3 colour matrix as elementwise float32 operations (a BLAS product may round a pixel
    differently depending on where it falls in the array)."""
    if np.array_equal(m, np.eye(3)):
        return rgb
    m = m.astype(np.float32)
    r, g, b = rgb[..., 0].copy(), rgb[..., 1].copy(), rgb[..., 2].copy()
    out = rgb
    for c in range(3):
        if m[c, 1] == 0 and m[c, 2] == 0 and m[c, 0] == 0:
            out[..., c] = 0
            continue
        acc = r * m[c, 0]
        acc += g * m[c, 1]
        acc += b * m[c, 2]
        out[..., c] = acc
    return out


def _tile_grid(h: int, w: int, tile: int) -> list[list[tuple[int, int, int, int]]]:
    """Rows of tile cores (y0, x0, y1, x1), all corners even."""
    if tile == 0:
        return [[(0, 0, h, w)]]
    t = max(16, tile - tile % 16)
    return [[(y, x, min(h, y + t), min(w, x + t)) for x in range(0, w, t)] for y in range(0, h, t)]


def iter_bands(plan: Plan, progress: Callable[[int, int], None] | None = None) -> Iterator[np.ndarray]:
    """Quantised output (uint8/uint16), one band of tile rows at a time, top to bottom, in the
    frame's stored orientation. Tiles run on ``plan.opts.jobs`` threads."""
    h, w = plan.raw.height, plan.raw.width
    grid = _tile_grid(h, w, plan.opts.tile)
    total = sum(len(r) for r in grid)
    jobs = plan.opts.jobs or os.cpu_count() or 1
    m = plan.margin

    def run(core):
        y0, x0, y1, x1 = core
        ry0, rx0, ry1, rx1 = max(0, y0 - m), max(0, x0 - m), min(h, y1 + m), min(w, x1 + m)
        enc = _process_region(plan, ry0, rx0, ry1, rx1)
        return tone.quantize(enc[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0], plan.bits)

    done = 0
    dtype = np.uint8 if plan.bits == 8 else np.uint16
    if jobs == 1 or total == 1:
        for row in grid:
            band = np.empty((row[0][2] - row[0][0], w, 3), dtype)
            for core in row:
                band[:, core[1] : core[3]] = run(core)
                done += 1
                if progress:
                    progress(done, total)
            yield band
        return
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="magcam-tile") as pool:
        pending: deque = deque()

        def collect(row, futures):
            nonlocal done
            band = np.empty((row[0][2] - row[0][0], w, 3), dtype)
            for core, fut in zip(row, futures):
                band[:, core[1] : core[3]] = fut.result()
                done += 1
                if progress:
                    progress(done, total)
            return band

        # Two tile rows in flight: the pool never idles at a band boundary.
        try:
            for row in grid:
                pending.append((row, [pool.submit(run, core) for core in row]))
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
    if options is None:
        options = Options()
    elif isinstance(options, dict):
        options = Options(**options)
    if overrides:
        try:
            options = replace(options, **overrides)
        except TypeError as e:
            raise PipelineError(str(e)) from None
    return options


def process_frame(raw, options: Options | dict | None = None, *, descriptor: dict | None = None,
                  progress=None, **overrides) -> np.ndarray:
    """Develop ``raw`` (RawImage, RawFrame + ``descriptor``, or a path) to an (H, W, 3) uint8 or
    uint16 RGB array, in display orientation."""
    raw = _as_raw(raw, descriptor)
    plan = make_plan(raw, _options(options, overrides))
    out = np.empty((raw.height, raw.width, 3), np.uint8 if plan.bits == 8 else np.uint16)
    y = 0
    for band in iter_bands(plan, progress):
        out[y : y + band.shape[0]] = band
        y += band.shape[0]
    return orient(out, raw.orientation)


def process_to_array(path, **options) -> np.ndarray:
    """``process_frame(read(path), Options(**options))``."""
    return process_frame(read(path), Options(**options))


def orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels -> display pixels for an EXIF orientation (1..8)."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 1)[::-1],
        8: lambda a: np.rot90(a, 1),
    }
    f = ops.get(int(orientation), ops[1])
    return np.ascontiguousarray(f(img)) if orientation != 1 else img


def output_format(path, fmt: str | None) -> str:
    if fmt:
        return fmt
    ext = Path(path).suffix.lower()
    for name, exts in FORMATS.items():
        if ext in exts:
            return name
    raise PipelineError(f"{path}: cannot tell the format from the extension {ext or '(none)'!r}; "
                        "use .tif, .png or .jpg or give a format")


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
    opts = _options(options, overrides)
    fmt = output_format(dst, opts.format)
    if opts.bits is None:
        opts = replace(opts, bits=16 if fmt == "tiff" else 8)
    if fmt == "jpeg" and opts.bits != 8:
        raise PipelineError("JPEG holds 8 bits per channel; use TIFF or PNG for 16")
    raw = read(src)
    plan = make_plan(raw, opts)
    profile = output.icc_for(plan.opts.output_color, plan.opts.gamma, raw.xyz_to_camera, plan.neutral)
    h, w = raw.height, raw.width
    bands = iter_bands(plan, progress)
    if raw.orientation != 1:  # rotate the whole image, then hand it over as one band
        full = np.concatenate(list(bands), axis=0)
        full = orient(full, raw.orientation)
        h, w = full.shape[:2]
        bands = iter([full])
    output.write_image(dst, fmt, bands, (h, w), plan.bits, icc_profile=profile, meta=raw.meta,
                       output_color=plan.opts.output_color, quality=opts.quality)
    return Result(str(src), str(dst), w, h, fmt, plan.bits, time.perf_counter() - t0, plan.stats)

