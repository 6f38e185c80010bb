"""Demosaic methods: known answers, orientation, tiling, API contract and quality on real photographs.

CPSNR here is the image-pipeline issue's measure (8-bit RGB -> RGGB mosaic -> demosaic -> clip,
x 255, round -> PSNR over all three channels with a 10-pixel border cropped), on three Kodak and
three McMaster images; the full sets are in tools/bench/demosaic.py and docs/demosaic.md.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import shared_file
from magcam.frame import CFA_PATTERNS
from magcam.pipeline import demosaic as dm
from magcam.pipeline import demosaic_rias

METHODS = sorted(dm.METHODS)

# Mean CPSNR over the three images of each set below, measured: rias 39.23 / 34.35 (before
# stage 5's two-guide blue: 39.24 / 34.135, before stage 4's RI/MLRI slope mix: 39.28 / 34.078,
# before stage 1b: 39.33 / 33.30, all of which the McMaster floor rejects), fast 33.06 / 31.55,
# bilinear 27.04 / 30.54 (LibRaw AHD on the same images: 35.16 / 32.30).
HQ_FLOOR = {"kodak": 39.1, "mcmaster": 34.25}
KODAK = ["kodak24/kodim01.png", "kodak24/kodim05.png", "kodak24/kodim19.png"]
MCMASTER = ["mcmaster18/1.tif", "mcmaster18/5.tif", "mcmaster18/9.tif"]


def load_rgb(relative: str) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(shared_file(relative)), cv2.IMREAD_UNCHANGED)[..., ::-1])


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    out = np.empty(rgb.shape[:2], rgb.dtype)
    for k, colour in enumerate(pattern):
        out[k // 2 :: 2, k % 2 :: 2] = rgb[k // 2 :: 2, k % 2 :: 2, "RGB".index(colour)]
    return out


def cpsnr(reference: np.ndarray, rgb_float: np.ndarray, border: int = 10) -> float:
    out = np.round(np.clip(rgb_float, 0, 1) * 255)
    d = (out - reference.astype(np.float64))[border:-border, border:-border]
    return float(10 * np.log10(255.0**2 / np.mean(d * d)))


@pytest.fixture(scope="module")
def kodim05() -> np.ndarray:
    return load_rgb("kodak24/kodim05.png")


# --- API contract -------------------------------------------------------------------------------


def test_registry():
    assert {"bilinear", dm.PREVIEW, dm.DEFAULT} <= set(dm.METHODS)
    assert dm.PREVIEW == "fast" and dm.DEFAULT == "rias"
    assert set(dm.OVERLAP) == set(dm.METHODS)
    assert all(v >= 0 and v % 2 == 0 for v in dm.OVERLAP.values())
    assert dm.OVERLAP["rias"] >= demosaic_rias.RADIUS


@pytest.mark.parametrize("method", METHODS)
def test_output_type_and_shape(method):
    cfa = np.random.default_rng(1).random((32, 48)).astype(np.float64)  # any float dtype in
    out = dm.demosaic(cfa, "RGGB", method)
    assert out.shape == (32, 48, 3) and out.dtype == np.float32
    assert dm.demosaic(cfa, "RGGB", method).tobytes() == out.tobytes()  # deterministic


@pytest.mark.parametrize("shape", [(33, 32), (32, 33), (32,), (2, 32, 32)])
@pytest.mark.parametrize("method", METHODS)
def test_rejects_bad_shapes(method, shape):
    with pytest.raises(ValueError):
        dm.demosaic(np.zeros(shape, np.float32), "RGGB", method)


def test_rejects_bad_values_patterns_and_methods():
    cfa = np.zeros((32, 32), np.float32)
    cfa[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dm.demosaic(cfa, "RGGB")
    with pytest.raises(ValueError, match="pattern"):
        dm.demosaic(np.zeros((32, 32), np.float32), "RGBG")
    with pytest.raises(ValueError, match="method"):
        dm.demosaic(np.zeros((32, 32), np.float32), "RGGB", "nope")
    with pytest.raises(ValueError, match="16x16"):
        dm.demosaic(np.zeros((14, 32), np.float32), "RGGB", "rias")


# --- known answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", CFA_PATTERNS)
@pytest.mark.parametrize("method", METHODS)
def test_flat_field_stays_flat(method, pattern):
    out = dm.demosaic(np.full((40, 56), 0.37, np.float32), pattern, method)
    np.testing.assert_allclose(out, 0.37, atol=1e-6)


@pytest.mark.parametrize("pattern", CFA_PATTERNS)
@pytest.mark.parametrize("method", METHODS)
def test_pure_colour_field_is_reproduced_in_the_right_channels(method, pattern):
    colour = np.array([0.8, 0.45, 0.1], np.float32)
    cfa = mosaic(np.broadcast_to(colour, (40, 56, 3)), pattern).astype(np.float32)
    out = dm.demosaic(cfa, pattern, method)
    np.testing.assert_allclose(out, np.broadcast_to(colour, out.shape), atol=1e-5)


@pytest.mark.parametrize("pattern", CFA_PATTERNS)
@pytest.mark.parametrize("method", METHODS)
def test_orientation_on_a_photograph(method, pattern, kodim05):
    rgb = kodim05[100:228, 200:328]
    cfa = mosaic(rgb, pattern).astype(np.float32) / 255
    good = cpsnr(rgb, dm.demosaic(cfa, pattern, method))
    wrong = {"RGGB": "BGGR", "BGGR": "RGGB", "GRBG": "GBRG", "GBRG": "GRBG"}[pattern]  # R and B swapped
    bad = cpsnr(rgb, dm.demosaic(cfa, wrong, method))
    assert good > 25.0 and good > bad + 5.0


@pytest.mark.parametrize("method", METHODS)
def test_values_outside_unit_range_keep_their_scale(method, kodim05):
    """Negative values (noise below black) and values above 1 are not clipped or renormalised."""
    cfa = mosaic(kodim05[:96, :128], "RGGB").astype(np.float32) / 255
    base = dm.demosaic(cfa, "RGGB", method)
    shifted = dm.demosaic(cfa * 3.0 - 0.2, "RGGB", method)
    assert shifted.min() < -0.1 and shifted.max() > 2.0
    back = (shifted + 0.2) / 3.0
    if method in ("bilinear", "fast"):  # linear: exactly
        np.testing.assert_allclose(back, base, atol=1e-5)
    else:  # rias' variance floors are absolute (mosaic units), so only nearly: 65.4 dB measured
        assert abs(float(back.mean() - base.mean())) < 1e-3
        assert 10 * np.log10(1.0 / np.mean((back - base) ** 2)) > 38.0


# --- tiling -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
@pytest.mark.parametrize("method", METHODS)
def test_tiles_with_overlap_reproduce_the_whole_image_exactly(method, pattern, kodim05):
    cfa = mosaic(kodim05[:200, :260], pattern).astype(np.float32) / 255
    whole = dm.demosaic(cfa, pattern, method)
    ov = dm.OVERLAP[method]
    for y0, y1, x0, x1 in ((60, 140, 80, 180), (0, 64, 0, 90), (136, 200, 196, 260)):
        ty0, ty1, tx0, tx1 = max(y0 - ov, 0), min(y1 + ov, 200), max(x0 - ov, 0), min(x1 + ov, 260)
        tile = dm.demosaic(cfa[ty0:ty1, tx0:tx1], pattern, method)  # even offsets keep the phase
        inner = tile[y0 - ty0 : y1 - ty0, x0 - tx0 : x1 - tx0]
        # exact where the tile edge is at least OVERLAP away; tiles touching the image edge share it
        assert np.array_equal(inner, whole[y0:y1, x0:x1]), (y0, x0)


def test_rias_strips_are_seamless(monkeypatch, kodim05):
    """rias works internally in strips of rows: any strip height gives the same result."""
    cfa = mosaic(kodim05[:300, :200], "GRBG").astype(np.float32) / 255
    whole = dm.demosaic(cfa, "GRBG", "rias")
    monkeypatch.setattr(demosaic_rias, "STRIP", 64)
    assert np.array_equal(dm.demosaic(cfa, "GRBG", "rias"), whole)


def test_rias_reuses_its_workspace_safely(kodim05):
    """The kernel keeps its planes per thread between calls (a tile pipeline calls it per tile):
    a smaller call after a bigger one, a bigger one after that, and a call after freeing them
    give the results of a fresh workspace; ``demosaic()`` frees them when it is done."""
    pad = dm.OVERLAP["rias"]

    def run(cfa):
        out = np.empty(cfa.shape + (3,), np.float32)
        demosaic_rias.rias_padded(np.pad(cfa, pad, mode="reflect"), pad, 0, 0, out)
        return out

    cfas = [mosaic(kodim05[:h, :w], "RGGB").astype(np.float32) / 255 for h, w in ((160, 240), (96, 64), (200, 300))]
    expected = [dm.demosaic(cfa, "RGGB", "rias") for cfa in cfas]
    assert getattr(demosaic_rias._workspace, "buffers", None) is None
    for cfa, want in zip(cfas + cfas[::-1], expected + expected[::-1]):
        assert np.array_equal(run(cfa), want)
    assert demosaic_rias._workspace.buffers is not None
    demosaic_rias.free_workspace()
    assert np.array_equal(run(cfas[0]), expected[0])
    demosaic_rias.free_workspace()


# --- quality ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scores() -> dict:
    out = {}
    for name, files in (("kodak", KODAK), ("mcmaster", MCMASTER)):
        images = [load_rgb(f) for f in files]
        out[name] = {
            m: float(np.mean([cpsnr(rgb, dm.demosaic(mosaic(rgb, "RGGB").astype(np.float32) / 255, "RGGB", m))
                              for rgb in images]))
            for m in METHODS
        }
    return out


@pytest.mark.parametrize("dataset", ["kodak", "mcmaster"])
def test_quality_on_real_photographs(scores, dataset):
    s = scores[dataset]
    assert s[dm.DEFAULT] > HQ_FLOOR[dataset], s
    assert s[dm.PREVIEW] > s["bilinear"] + 1.0, s
    assert s[dm.DEFAULT] > s[dm.PREVIEW] + 1.5, s


def test_bilinear_matches_known_cpsnr(scores):
    # the same numbers as LibRaw's LINEAR on these images (tools/bench/demosaic.py --quick)
    assert scores["kodak"]["bilinear"] == pytest.approx(27.04, abs=0.01)
    assert scores["mcmaster"]["bilinear"] == pytest.approx(30.54, abs=0.01)
