"""`magcam hdr` and `magcam.hdr`: a synthetic bracket of known radiance (Poisson shot noise,
Gaussian read noise, 12-bit clipping) merged in the raw domain, against the truth and against
every single frame; a moving object that must not ghost; inputs that must be refused; the
command end to end (DNG read by rawpy, dcraw and exiftool; a tone-mapped JPEG); and a bracket
captured from the simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rawpy
from conftest import DESCRIPTOR_PATH, tool
from magcam import hdr, rawio
from magcam.dng import write_dng
from magcam.frame import RawFrame
from magcam.pipeline import localtone
from magcam.pipeline.errors import PipelineError
from PIL import Image

MAGCAM = [sys.executable, "-m", "magcam.cli"]
DESC = json.loads(DESCRIPTOR_PATH.read_text())
FW, READ_E, BLACK, WHITE = 20000.0, 3.0, 256, 4095  # the simulated sensor: electrons, 12-bit ADC
# Camera response of a grey per site of the RGGB cell: the descriptor's D65 neutral, so the
# scene develops grey.
SITE = np.array([[0.4326, 1.0], [1.0, 0.747]])


def radiance(h: int, w: int) -> np.ndarray:
    """Known radiance per CFA site, in units of the 0 EV frame's white: a ramp over 14 stops
    (2^-10 .. 2^4) left to right, with a +-30 % texture so smoothing has work to do."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    lum = 2.0 ** (-10 + 14 * x / (w - 1)) * (1 + 0.3 * np.sin(y / 5.0) * np.sin(x / 7.0))
    return lum * np.tile(SITE, (h // 2, w // 2))


def shoot(lum: np.ndarray, ev: float, seed: int, gain: float = 1.0, name: str | None = None) -> rawio.RawImage:
    """One frame at ``2^ev`` times the 10 ms base: Poisson electrons (the 0 EV white fills the
    full well), Gaussian read noise, rounded to DN and clipped at the white level."""
    rng = np.random.default_rng(seed)
    electrons = rng.poisson(lum * 2.0**ev * FW / gain) + rng.normal(0.0, READ_E, lum.shape)
    dn = np.clip(np.rint(electrons * gain * (WHITE - BLACK) / FW + BLACK), 0, WHITE).astype(np.uint16)
    frame = RawFrame(data=dn, frame_id=seed, cfa="RGGB", bits=12, black_level=BLACK, white_level=WHITE,
                     exposure_us=round(10000 * 2.0**ev / gain), analog_gain=gain)
    return rawio.from_frame(frame, DESC, source=name or f"ev{ev:+g}.dng")


def as_radiance(img: rawio.RawImage, scale: float) -> np.ndarray:
    """A single frame's own radiance estimate (black-subtracted, over its relative exposure)."""
    return (img.frame.data.astype(np.float64) - BLACK) / (WHITE - BLACK) / scale


def cell_max(a: np.ndarray) -> np.ndarray:
    h, w = a.shape
    return a.reshape(h // 2, 2, w // 2, 2).max(axis=(1, 3))


def rel_error(est: np.ndarray, truth: np.ndarray, cells: np.ndarray) -> tuple[float, float]:
    """(RMS, mean) relative error over every site of the selected 2x2 cells."""
    r = (est / truth - 1)[np.repeat(np.repeat(cells, 2, 0), 2, 1)]
    return float(np.sqrt(np.mean(r**2))), float(np.mean(r))


H, W = 256, 512
EVS = (-2, 0, 2)
# Bands of the brightest site of a cell (0 EV white = 1). The -2 EV frame clips at 4. A frame
# is used up to 0.9 of its white (hdr.SAT_SMOOTH), so 0.9..1.0 comes from the -2 EV frame alone
# and is left out of the "as good as the best frame" comparison.
BANDS = [(2**-10, 2**-7), (2**-7, 2**-4), (2**-4, 0.5), (0.5, 0.9), (1.0, 2.0), (2.0, 3.5)]
# Stated per-sample RMS relative error of the merge in each band (measured over three noise
# seeds: 8.6-8.7 %, 2.8 %, 1.2 %, 1.0 %, 1.4 %, 1.0-1.1 %: the photon and read noise of the
# frames combined), and its bias (measured: at most 0.11 %).
MAX_RMS = [0.095, 0.031, 0.0135, 0.0115, 0.016, 0.0125]
MAX_BIAS = 0.0025


@pytest.fixture(scope="module")
def bracket():
    lum = radiance(H, W)
    return lum, [shoot(lum, ev, seed) for seed, ev in enumerate(EVS)]


def test_known_radiance_is_recovered_better_than_by_any_frame(bracket):
    lum, frames = bracket
    res = hdr.merge_bracket(frames)
    assert res.reference == 1 and res.scales == [0.25, 1.0, 4.0] and res.full_scale == 4.0
    assert res.cfa.dtype == np.float32 and res.cfa.shape == (H, W)
    cmax = cell_max(lum)
    worst_single = [0.0] * len(frames)
    for (lo, hi), max_rms in zip(BANDS, MAX_RMS):
        cells = (cmax >= lo) & (cmax < hi)
        assert cells.sum() > 1500
        rms, bias = rel_error(res.cfa, lum, cells)
        assert rms <= max_rms and abs(bias) <= MAX_BIAS, (lo, hi, rms, bias)
        singles = [rel_error(as_radiance(f, s), lum, cells)[0] for f, s in zip(frames, res.scales)]
        # Never worse than the best frame for this band (within 3 %) ...
        assert rms <= 1.03 * min(singles), (lo, hi, rms, singles)
        worst_single = [max(a, b / rms) for a, b in zip(worst_single, singles)]
    # ... and every single frame is at least 3x worse than the merge somewhere (noise in the
    # shadows for the short ones, clipping in the highlights for the long ones).
    assert min(worst_single) >= 3.0, worst_single
    # Beyond the -2 EV frame's white the scene is clipped in every frame: full scale, neutral.
    gone = cell_max(lum / 1.15) > 4.0
    assert gone.any() and np.all(res.cfa[np.repeat(np.repeat(gone, 2, 0), 2, 1)] == np.float32(4.0))
    frames_stats = res.stats["frames"]
    assert frames_stats[2]["saturated"] > 0.3 and frames_stats[0]["saturated"] < frames_stats[2]["saturated"]
    assert res.stats["rejected_fraction"] < 0.005  # a static scene: (almost) nothing is motion
    assert abs(sum(f["weight_share"] for f in frames_stats) - 1) < 1e-3


def test_noise_model_from_the_descriptor_gives_the_same_radiance(bracket):
    lum, frames = bracket
    res = hdr.merge_bracket(frames, descriptor=DESC)
    assert res.noise[0] == pytest.approx((1 / FW, (READ_E / FW) ** 2 + 1 / (12 * (WHITE - BLACK) ** 2)))
    cells = (cell_max(lum) >= 2**-7) & (cell_max(lum) < 3.5)
    rms, bias = rel_error(res.cfa, lum, cells)
    assert rms < 0.02 and abs(bias) < MAX_BIAS


def test_exposure_is_time_times_gain():
    # The +2 EV frame made by 4x analog gain at the 0 EV time: ExposureTime alone would say
    # these two are the same exposure.
    lum = radiance(H, W)
    frames = [shoot(lum, -2, 20), shoot(lum, 0, 21), shoot(lum, 2, 22, gain=4.0)]
    res = hdr.merge_bracket(frames)
    assert res.scales == [0.25, 1.0, 4.0] and res.exposures[2] == (0.01, 4.0)
    cmax = cell_max(lum)
    for lo, hi in ((2**-7, 2**-4), (2**-4, 0.9), (1.0, 3.5)):
        rms, bias = rel_error(res.cfa, lum, (cmax >= lo) & (cmax < hi))
        assert abs(bias) < MAX_BIAS and rms < 0.06, (lo, hi, rms, bias)  # measured 4.5, 1.5, 1.3 %


def test_reference_sets_the_units(bracket):
    _, frames = bracket
    mid = hdr.merge_bracket(frames)
    short = hdr.merge_bracket(frames, reference=0)
    assert short.reference == 0 and short.scales == [1.0, 4.0, 16.0] and short.full_scale == 1.0
    # Same weights and the same samples, except where a motion decision against a different
    # reference went the other way (noise at k sigma: a few cells).
    same = np.isclose(short.cfa * 4, mid.cfa, rtol=1e-4, atol=1e-7)
    assert same.mean() > 0.99


def test_a_moving_object_does_not_ghost():
    lum = radiance(H, W)
    moved = lum.copy()
    region = (slice(100, 140), slice(150, 200))  # background ~0.02 of white there
    moved[region] = 0.05 * np.tile(SITE, (20, 25))  # an object there in the +2 EV frame only
    bright = (slice(60, 80), slice(430, 470))  # background ~1.6: clipped in the 0 EV reference
    moved_short = lum.copy()
    moved_short[bright] = 0.1  # a dark object there in the -2 EV frame only
    frames = [shoot(moved_short, -2, 10), shoot(lum, 0, 11), shoot(moved, 2, 12)]
    res = hdr.merge_bracket(frames)
    ref_rms, _ = rel_error(as_radiance(frames[1], 1.0), lum, _cells(region))
    rms, bias = rel_error(res.cfa, lum, _cells(region))
    assert rms <= 1.1 * ref_rms and abs(bias) < 0.01, (rms, bias, ref_rms)  # the reference's own noise
    # Where the reference is clipped, a frame darker than the clipped value is motion too: the
    # area stays clipped (white) instead of showing a dark ghost of the object.
    assert np.all(res.cfa[bright][4:-4, 4:-4] >= 0.9)
    stats = res.stats["frames"]
    assert stats[2]["rejected"] > 0.01 and stats[0]["rejected"] > 0.001
    # Without rejection the object appears: the test can fail.
    ghost = hdr.merge_bracket(frames, deghost=False)
    assert rel_error(ghost.cfa, lum, _cells(region))[0] > 0.3
    assert np.min(ghost.cfa[bright]) < 0.5


def _cells(region) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[region] = True
    return cell_max(m.astype(np.uint8)).astype(bool)


@pytest.mark.parametrize("case, message", [
    ("one", "at least two frames"),
    ("size", "must be the same size"),
    ("cfa", "CFA GRBG"),
    ("same", "have the same exposure"),
    ("no exposure", "no usable exposure time"),
])
def test_bad_brackets_are_refused_clearly(bracket, case, message):
    _, frames = bracket
    a, b = frames[0], frames[1]
    if case == "one":
        images = [a]
    elif case == "size":
        small = RawFrame(data=np.ascontiguousarray(b.frame.data[:128]), frame_id=1, bits=12, black_level=BLACK,
                         white_level=WHITE, exposure_us=10000)
        images = [a, rawio.from_frame(small, DESC, source="small.dng")]
    elif case == "cfa":
        other = RawFrame(data=b.frame.data, frame_id=1, cfa="GRBG", bits=12, black_level=BLACK, white_level=WHITE,
                         exposure_us=10000)
        images = [a, rawio.from_frame(other, DESC, source="grbg.dng")]
    elif case == "same":
        images = [a, b, shoot(radiance(H, W), -2, 5, name="again.dng")]
    else:
        images = [a, rawio.RawImage(frame=b.frame, black=b.black, white=b.white, source="noexif.dng")]
    with pytest.raises(PipelineError, match=message) as err:
        hdr.merge_bracket(images)
    assert case == "one" or images[-1].source in str(err.value)


def test_lens_shading_map_is_carried_into_the_dng(tmp_path):
    desc = {**DESC, "lens_shading": {"grids": (np.linspace(1, 1.6, 7)[None, None, :] * np.ones((4, 5, 7))).tolist()}}
    lum = radiance(64, 96)
    frames = [rawio.from_frame(shoot(lum, ev, s).frame, desc, source=f"{ev}.dng") for s, ev in enumerate(EVS)]
    hdr.write_dng(hdr.merge_bracket(frames), tmp_path / "shaded.dng")
    back = rawio.read(tmp_path / "shaded.dng")
    assert back.gain_map is not None
    grids = np.stack([m.grid for m in sorted(back.gain_map.sites, key=lambda m: (m.dy, m.dx))])
    np.testing.assert_allclose(grids, desc["lens_shading"]["grids"], atol=1e-6)


def test_output_names(tmp_path):
    assert hdr.output_paths(tmp_path / "scene") == (tmp_path / "scene.dng", tmp_path / "scene.jpg")
    assert hdr.output_paths(tmp_path / "scene.dng") == (tmp_path / "scene.dng", tmp_path / "scene.jpg")
    assert hdr.output_paths(tmp_path / "scene.JPG") == (tmp_path / "scene.dng", tmp_path / "scene.jpg")
    assert hdr.output_paths(tmp_path / "scene.v2") == (tmp_path / "scene.v2.dng", tmp_path / "scene.v2.jpg")
    assert hdr.output_paths(tmp_path, "x/b-2.dng") == (tmp_path / "b-2-hdr.dng", tmp_path / "b-2-hdr.jpg")


def test_local_tone_map_compresses_range_and_keeps_detail():
    # Two textured halves 10 stops apart: both must land on the display with their texture.
    y, x = np.mgrid[0:200, 0:400].astype(np.float32)
    texture = 1 + 0.2 * np.sign(np.sin(x / 3)) * np.sign(np.sin(y / 3))
    lum = np.where(x < 200, 2.0**-10, 1.0).astype(np.float32) * texture
    out = localtone.tonemap(np.repeat(lum[..., None], 3, axis=2))
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    dark, light = out[20:-20, 20:180, 1], out[20:-20, 220:380, 1]
    # Shadows lifted >10x (2^-10 would be 0.001 with a global scale), highlights not clipped.
    assert 0.01 < dark.mean() < 0.1 and 0.5 < light.mean() < 0.95 and np.mean(light > 0.999) < 0.01
    for half in (dark, light):  # the +-20 % texture survives (at least +-12 %)
        assert half.std() / half.mean() > 0.12


# ---- the command -----------------------------------------------------------------------------


def run_cli(*args, timeout=120):
    return subprocess.run([*MAGCAM, *args], capture_output=True, text=True, timeout=timeout, check=False)


def invoke(*args):
    """The command in this process (click's runner): an unexpected exception is not caught
    by the runner's exit code check, it fails the test."""
    from click.testing import CliRunner
    from magcam.cli import main

    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def dng_bracket(tmp_path_factory):
    """Three DNGs written with write_dng, as `magcam capture --bracket -2,0,2` names them."""
    d = tmp_path_factory.mktemp("bracket")
    lum = radiance(192, 256)
    paths = []
    for seed, ev in enumerate(EVS):
        img = shoot(lum, ev, seed)
        paths.append(write_dng(d / f"b{seed + 1}_{ev:+d}.dng", img.frame, DESC))
    return lum, paths


def test_cli_writes_a_linear_dng_and_a_tone_mapped_jpeg(dng_bracket, tmp_path):
    lum, paths = dng_bracket
    out = run_cli("hdr", *map(str, paths), "-o", str(tmp_path / "scene.dng"), "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert {e["stage"] for e in events if e["type"] == "progress"} >= {"read", "merge", "develop"}
    result = events[-1]
    assert result["type"] == "result" and result["reference_file"] == str(paths[1])
    assert result["dng"] == str(tmp_path / "scene.dng") and result["jpeg"] == str(tmp_path / "scene.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.dng", "scene.jpg"]  # no temporary left

    with rawpy.imread(result["dng"]) as raw:
        assert raw.raw_image.shape == (192, 256) and raw.white_level == 65535
        assert list(raw.black_level_per_channel) == [hdr.DNG_BLACK] * 4
        data = raw.raw_image.astype(np.float64)
        rgb = raw.postprocess(use_camera_wb=True, no_auto_bright=True)
        assert rgb.shape == (192, 256, 3)
    # The file holds the merged radiance: scaled so 4.0 (the -2 EV frame's white) is WhiteLevel.
    merged = (data - hdr.DNG_BLACK) / (65535 - hdr.DNG_BLACK) * 4.0
    cmax = cell_max(lum)
    cells = (cmax >= 2**-5) & (cmax < 3.5)
    rms, bias = rel_error(merged, lum, cells)
    assert rms < 0.02 and abs(bias) < 0.005, (rms, bias)

    info = subprocess.run([tool("dcraw"), "-i", "-v", result["dng"]], capture_output=True, text=True, timeout=60,
                          check=False)
    assert info.returncode == 0 and "magcam M43 35mm F1.4" in info.stdout and "256 x 192" in info.stdout
    assert "Shutter: 1/100.0 sec" in info.stdout  # the reference frame's exposure
    exif = json.loads(subprocess.run([tool("exiftool"), "-j", "-n", result["dng"]], capture_output=True,
                                     text=True, timeout=60, check=True).stdout)[0]
    assert exif["BaselineExposure"] == 2 and exif["WhiteLevel"] == 65535 and exif["BlackLevel"] == hdr.DNG_BLACK
    assert exif["Make"] == "magcam" and exif["ISO"] == 100
    assert exif["ColorMatrix1"].split() == [f"{v:g}" for v in DESC["color"]["color_matrix_1"]]
    assert json.loads(exif["ImageDescription"])["magcam"]["hdr"]["sources"] == [p.name for p in paths]

    # The JPEG shows the shadows (2^-10 of white at the left edge) and keeps highlight
    # texture, where the 0 EV frame alone is black on the left and clipped on the right.
    jpg = np.asarray(Image.open(result["jpeg"]).convert("L"), dtype=np.float64)
    assert jpg.shape == (192, 256)
    ref = run_cli("process", str(paths[1]), "-o", str(tmp_path / "ref.jpg"))
    assert ref.returncode == 0, ref.stderr
    single = np.asarray(Image.open(tmp_path / "ref.jpg").convert("L"), dtype=np.float64)
    assert jpg[:, :20].mean() > 25 and jpg[:, :20].mean() > 4 * single[:, :20].mean()
    assert single[:, 200:220].std() < 1 and jpg[:, 200:220].std() > 10  # clipped there in the single frame


@pytest.mark.parametrize("case", ["one file", "truncated", "empty", "not a raw", "sizes", "same exposure",
                                  "missing"])
def test_cli_refuses_bad_input_with_exit_1(dng_bracket, tmp_path, case):
    _, paths = dng_bracket
    bad = tmp_path / "bad.dng"
    if case == "one file":
        args, name = [paths[0]], str(paths[0])
    elif case == "truncated":
        bad.write_bytes(paths[1].read_bytes()[:5000])
        args, name = [paths[0], bad], str(bad)
    elif case == "empty":
        bad.write_bytes(b"")
        args, name = [paths[0], bad], str(bad)
    elif case == "not a raw":
        bad.write_text("hello\n" * 100)
        args, name = [paths[0], bad], str(bad)
    elif case == "sizes":
        img = shoot(radiance(64, 64), 1, 3)
        write_dng(bad, img.frame, DESC)
        args, name = [paths[0], bad], str(bad)
    elif case == "same exposure":
        bad.write_bytes(paths[1].read_bytes())  # another file of the same exposure
        args, name = [paths[0], paths[1], bad], str(bad)
    else:
        args, name = [paths[0], tmp_path / "nope.dng"], str(tmp_path / "nope.dng")
    # In-process (a second each saved); a real process for one case, to see its stderr whole.
    out = run_cli("hdr", *map(str, args), "-o", str(tmp_path / "o")) if case == "truncated" else \
        invoke("hdr", *map(str, args), "-o", str(tmp_path / "o"))
    assert out.returncode == 1, (out.stdout, out.stderr)
    # Progress lines, if any, come before (stderr, in a pipe); the error is the last line.
    last = out.stderr.splitlines()[-1]
    assert last.startswith("error: ") and name in last and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "o.dng").exists() and not (tmp_path / "o.jpg").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left



@pytest.mark.parametrize("out", ["b2_+0", "b2_+0.jpg", "b2_+0.dng"])
def test_cli_never_writes_over_an_input(dng_bracket, tmp_path, out):
    """-o b2_+0 means b2_+0.dng and .jpg: the first is the middle frame itself."""
    _, paths = dng_bracket
    copies = [tmp_path / p.name for p in paths]
    for src, dst in zip(paths, copies):
        dst.write_bytes(src.read_bytes())
    res = invoke("hdr", *map(str, copies), "-o", str(tmp_path / out))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"error: {copies[1]}: is also an input" in res.stderr
    assert [c.read_bytes() for c in copies] == [p.read_bytes() for p in paths]
    assert sorted(tmp_path.iterdir()) == sorted(copies)  # no JPEG, no temporary

def test_cli_usage_errors_exit_2(dng_bracket, tmp_path):
    _, paths = dng_bracket
    out = invoke("hdr", *map(str, paths), "-o", str(tmp_path / "o"), "--reference", "4")
    assert out.returncode == 2 and "--reference" in out.stderr and "Traceback" not in out.stderr
    # A frame given twice (also through another name) would be merged with itself.
    link = tmp_path / "again.dng"
    link.symlink_to(paths[1])
    for twice in (paths[1], link):
        out = invoke("hdr", str(paths[0]), str(paths[1]), str(twice), "-o", str(tmp_path / "o"))
        assert out.returncode == 2 and f"{twice} is given twice" in out.stderr, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.dng"]


def test_cli_never_replaces_an_existing_file_without_force(dng_bracket, tmp_path):
    _, paths = dng_bracket
    original = tmp_path / "keep.dng"  # say, a capture: `-o keep` would replace it
    original.write_bytes(paths[0].read_bytes())
    out = invoke("hdr", *map(str, paths), "-o", str(tmp_path / "keep"))
    assert out.returncode == 2 and f"{original} exists; give --force" in out.stderr, out.stderr
    assert original.read_bytes() == paths[0].read_bytes() and not (tmp_path / "keep.jpg").exists()
    out = invoke("hdr", *map(str, paths), "-o", str(tmp_path / "keep"), "--force")
    assert out.returncode == 0, out.stderr
    assert original.read_bytes() != paths[0].read_bytes() and (tmp_path / "keep.jpg").exists()


def test_cli_out_ending_in_a_slash_is_a_new_folder(dng_bracket, tmp_path):
    _, paths = dng_bracket
    out = invoke("hdr", *map(str, paths), "-o", f"{tmp_path / 'new'}/", "--reference", "1", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    stem = paths[0].stem
    assert result["dng"] == str(tmp_path / "new" / f"{stem}-hdr.dng") and Path(result["jpeg"]).is_file()
    assert result["reference"] == 1 and result["reference_file"] == str(paths[0])  # counted as --reference is
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


def test_an_unwritable_output_folder_is_said_before_any_work(dng_bracket, tmp_path):
    _, paths = dng_bracket
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: a file where a folder should be
            locked.rmdir()
            locked.write_text("a file")
        calls = []
        with pytest.raises(PipelineError, match=f"{locked}"):
            hdr.merge_files(paths, locked / "sub" / "x", progress=lambda *a: calls.append(a))
        assert calls == []  # nothing was read or merged first
    finally:
        if locked.is_dir():
            locked.chmod(0o755)


def test_one_name_instead_of_a_list_is_said(dng_bracket, tmp_path):
    _, paths = dng_bracket
    for one in (str(paths[0]), paths[0]):  # a str was merged letter by letter: "b is given twice"
        with pytest.raises(PipelineError, match=r"give the frames of the bracket as a list of files, not one name"):
            hdr.merge_files(one, tmp_path / "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_simulator_bracket_end_to_end(tmp_path):
    from magcam.sim import Simulator

    with Simulator() as sim:
        cap = run_cli("capture", "--port", sim.port, "--out", str(tmp_path), "--width", "256", "--height", "192",
                      "--bracket", "-2,0,2", "--filename", "b%n.dng")
    assert cap.returncode == 0, cap.stderr
    files = [str(tmp_path / f"b{i}.dng") for i in (1, 2, 3)]
    out = invoke("hdr", *files, "-o", str(tmp_path / "hdr"), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert [f["scale"] for f in result["frames"]] == [0.25, 1.0, 4.0]
    assert result["rejected_fraction"] < 0.01  # a still chart: no motion
    merged = rawio.read(tmp_path / "hdr.dng")
    ref = rawio.read(files[1])
    # Where the reference is well exposed the merge agrees with it (in the reference's units).
    peak = 2.0 ** result["baseline_exposure"]
    m = (merged.frame.data.astype(np.float64) - hdr.DNG_BLACK) / (65535 - hdr.DNG_BLACK) * peak
    r = (ref.frame.data.astype(np.float64) - ref.black[0, 0]) / (ref.white - ref.black[0, 0])
    ok = (r > 0.1) & (r < 0.8)
    assert ok.mean() > 0.2 and abs(np.median(m[ok] / r[ok]) - 1) < 0.01
    assert (tmp_path / "hdr.jpg").stat().st_size > 1000
