"""The fused tile path of magcam.process (pipeline/fused.py) against the stage modules it fuses.

The reference is the plain chain of stage modules (black, defects, shading, whitebalance,
highlights, demosaic, colour matrix, denoise, tone, sharpen, quantize) run on the whole frame,
as magcam.process ran them before fusing. The fused path keeps their float32 operations in the
same order, so the outputs are expected to be equal bit for bit (measured: equal on every
option set below, and on the 24 MP chart of tools/bench/isp.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from magcam import process, rawio
from magcam.frame import RawFrame
from magcam.pipeline import black, defects, denoise, filters, fused, highlights, sharpen, tone, whitebalance
from magcam.sim.sensor import SensorModel


def stage_chain(raw, **options) -> np.ndarray:
    """The whole frame through the stage modules one after another (no tiles, no fusing)."""
    plan = process.make_plan(raw, process.Options(tile=0, **options), warm=False)
    o = plan.opts
    cfa = black.normalize(raw.frame.data, raw.black, raw.white, 0, 0, raw.black_delta_v, raw.black_delta_h)
    if o.defects or plan.known is not None:
        defects.correct(cfa, noise=plan.noise, known=plan.known, detect=bool(o.defects))
    if plan.gain_map is not None:
        cfa *= plan.gain_map.region_gains(0, 0, raw.height, raw.width, raw.height, raw.width)
    whitebalance.apply(cfa, plan.site_mult)
    if plan.cfa_clip is not None:
        for dy in range(2):
            for dx in range(2):
                np.minimum(cfa[dy::2, dx::2], np.float32(plan.cfa_clip[dy, dx]), out=cfa[dy::2, dx::2])
    rgb = np.asarray(plan.demosaic_fn(cfa, raw.cfa), np.float32)
    if plan.rgb_clip is not None:
        for c in range(3):
            np.minimum(rgb[..., c], np.float32(plan.rgb_clip[c]), out=rgb[..., c])
    else:
        rgb = highlights.blend(rgb, plan.mult)
    if not np.array_equal(plan.matrix, np.eye(3)):  # elementwise, in the order r, g, b
        m = plan.matrix.astype(np.float32)
        r, g, b = rgb[..., 0].copy(), rgb[..., 1].copy(), rgb[..., 2].copy()
        for c in range(3):
            acc = r * m[c, 0]
            acc += g * m[c, 1]
            acc += b * m[c, 2]
            rgb[..., c] = acc
    if o.denoise > 0 or o.chroma_denoise > 0:
        rgb = denoise.denoise(rgb, chroma=o.chroma_denoise, luma=o.denoise, sigma=plan.luma_sigma,
                              chroma_sigma=plan.chroma_sigma)
    enc = plan.encoder(rgb)
    if o.sharpen > 0:
        enc = sharpen.sharpen(enc, o.sharpen, o.sharpen_radius)
    return tone.quantize(enc, plan.bits)


@pytest.fixture(scope="module")
def raw(descriptor):
    s = descriptor["sensor"]
    rng = np.random.default_rng(3)
    scene = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)  # blocky colour: edges everywhere
    data = SensorModel(descriptor, scene=scene, seed=2).render(200, 144, 10000, 4.0, 1)
    data[40:46, 60:66] = s["white_level"]  # clipped highlights
    dark, bright = s["black_level"] + 40, s["black_level"] + 3000
    data[90:110, 20:60] = dark + rng.integers(0, 30, (20, 40))
    data[100, 31] = data[97, 44] = s["white_level"]  # hot pixels on a dark area
    data[20:40, 100:140] = bright + rng.integers(0, 30, (20, 40))
    data[30, 120] = s["black_level"]  # a dead one on a bright area
    data[25, 110:112] = data[26, 111] = dark  # a small dark dot: detail, though each pixel stands out
    data[:6, :6] = dark
    data[1, 1] = s["white_level"]  # a hot pixel at the frame's edge
    raw = rawio.from_frame(RawFrame(data=data, frame_id=1, black_level=s["black_level"],
                                    white_level=s["white_level"]), descriptor)
    raw.black_delta_v = rng.normal(0, 2, raw.height).astype(np.float32)
    raw.black_delta_h = rng.normal(0, 2, raw.width).astype(np.float32)
    cfa = black.normalize(raw.frame.data, raw.black, raw.white, 0, 0, raw.black_delta_v, raw.black_delta_h)
    assert defects.correct(cfa.copy()) >= 4  # the defects path is exercised: those four at least
    # ... and so is the check that keeps candidates as detail (the dot)
    assert defects.correct(cfa.copy(), support=1e9) > defects.correct(cfa.copy())
    return raw


@pytest.mark.parametrize("options", [
    dict(),
    dict(bits=16, demosaic="fast"),
    dict(preset="quality", tone="filmic", bits=16, known_defects=[(10, 11), (0, 0), (199, 143)]),
    dict(preset="fast", demosaic="bilinear", wb="auto", output_color="p3"),
    dict(output_color="raw", gamma="linear", bits=16, chroma_denoise=1.0, sharpen=1.5, sharpen_radius=2.0),
    dict(denoise=1.5, chroma_denoise=0.0, lens_shading=np.linspace(0.9, 1.6, 4 * 3 * 5).reshape(4, 3, 5)),
], ids=["default", "fast-rias16", "quality-filmic-known", "bilinear-auto-p3", "raw-linear-strong", "luma-shading"])
def test_fused_tiles_equal_the_stage_modules_exactly(raw, options):
    ref = stage_chain(raw, **options)
    for tile, jobs in ((0, 1), (64, 2)):
        out = process.process_frame(raw, tile=tile, jobs=jobs, **options)
        diff = np.argwhere(out != ref)
        assert diff.size == 0, f"tile {tile}: {len(diff)} values differ, first at {diff[:3].tolist()}"


def test_defects_on_regions_too_small_for_a_3x3_plane_are_left_alone():
    # defects.correct skips site planes under 3x3 samples; the fused kernel must too.
    norm = np.full((4, 10), 0.2, np.float32)
    norm[2, 4] = 0.9
    out = np.empty_like(norm)
    ones = np.ones((2, 2), np.float32)
    params = np.array([0.02, 0.5, 8.0, 0, 0, 1, 0, 0.35], np.float32)
    fused.prepare_cfa(norm, 0, 4, 0, 10, True, params, np.zeros((0, 0), np.uint8), np.zeros((0, 0), np.float32),
                      ones, np.full((2, 2), np.inf, np.float32), out, 0, 0)
    ref = norm.copy()
    assert defects.correct(ref) == 0
    np.testing.assert_array_equal(out, ref)
    big = np.full((12, 12), 0.2, np.float32)
    big[6, 6] = 0.9
    out = np.empty_like(big)
    fused.prepare_cfa(big, 0, 12, 0, 12, True, params, np.zeros((0, 0), np.uint8), np.zeros((0, 0), np.float32),
                      ones, np.full((2, 2), np.inf, np.float32), out, 0, 0)
    assert out[6, 6] == np.float32(0.2)  # the hot pixel is replaced by its neighbours' median


@pytest.mark.parametrize("shape", [(2, 3), (3, 40), (37, 5), (64, 48)])
@pytest.mark.parametrize("taps", [filters.BINOMIAL5, filters.gaussian_kernel(1.0), filters.gaussian_kernel(2.0)])
def test_separable_filter_equals_filters_module(shape, taps):
    img = np.random.default_rng(0).random(shape, dtype=np.float32)
    np.testing.assert_array_equal(fused.separable(img, taps), filters.separable(img, taps))


def test_kernels_release_the_gil():
    # The tile threads of magcam.process only use both cores if the kernels drop the GIL.
    for name in ("normalize", "prepare_cfa", "colour", "encode", "sharpen_quantize", "_rows_pass", "_cols_pass"):
        kernel = getattr(fused, name)
        assert kernel.targetoptions.get("nogil") is True, name


def test_noise_model_from_a_subsample_of_bands_agrees_with_the_whole_frame(descriptor, monkeypatch):
    # make_plan reads only one of step column ranges of each analysis band for the noise model
    # on big frames (1 in 4 at 24 MP); on a noisy sensor render it must find the same noise.
    s = descriptor["sensor"]
    data = SensorModel(descriptor, seed=5).render(2048, 1536, 10000, 4.0, 1)
    raw = rawio.from_frame(RawFrame(data=data, frame_id=1, black_level=s["black_level"],
                                    white_level=s["white_level"]), descriptor)
    full = process.make_plan(raw, process.Options(), warm=False)
    monkeypatch.setattr(process, "_ANALYSIS_PIXELS", 2048 * 1536 // 4)  # 1 band in 4
    sub = process.make_plan(raw, process.Options(), warm=False)
    assert full.stats["noise_a"] > 1e-5  # a real shot-noise term, not the floor
    levels = np.array([0.02, 0.1, 0.3, 0.6], np.float32)
    ratio = sub.noise(levels) / full.noise(levels)
    assert np.all(np.abs(ratio - 1) < 0.05), ratio  # measured 1.3 % here, 1.5 % on a 24 MP render
