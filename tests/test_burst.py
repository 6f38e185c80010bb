"""Burst align-and-merge (magcam.burst, pipeline.align, pipeline.merge, `magcam merge`).

Bursts are rendered from a real photograph (Kodak24) by the simulator's sensor model, each frame
seeing the scene moved by a known shift (whole and sub-pixel), so the true displacement and the
noise-free reference are known.
"""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import shared_file
from magcam import burst, rawio
from magcam.cli import main
from magcam.dng import write_dng
from magcam.frame import RawFrame
from magcam.pipeline import align, merge
from magcam.pipeline.errors import PipelineError
from magcam.sim.sensor import SensorModel

W, H, MARGIN = 768, 512, 24
ISO = 1600
SHIFTS = np.array([[0, 0], [6, -10], [3.5, 7.25], [-13, 4.5], [-4, -3], [9.75, 12]], float)  # (dy, dx) raw px
BOX = (180, 300, 96)  # moving object: top, left, side (in the frame that has it)


@pytest.fixture(scope="module")
def canvas() -> np.ndarray:
    """The centre of a Kodak photograph, upscaled 2x (detail per pixel like a real lens's)."""
    img = cv2.cvtColor(cv2.imread(str(shared_file("kodak24/kodim19.png"))), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    ch, cw = (H + 2 * MARGIN) // 2, (W + 2 * MARGIN) // 2
    crop = img[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
    return cv2.resize(crop.astype(np.uint16) * 257, (W + 2 * MARGIN, H + 2 * MARGIN), interpolation=cv2.INTER_CUBIC)


def render(descriptor, canvas, shifts, moving: int | None = None, seed: int = 3):
    """Noisy 12-bit frames (frame k: ``alt[p + shift] = ref[p]``) and the noise-free reference,
    normalised to white = 1."""
    gain, exposure = ISO / 100, 10000 * 100 / ISO
    frames = []
    for k, (dy, dx) in enumerate(shifts):
        m = np.float32([[1, 0, MARGIN - dx], [0, 1, MARGIN - dy]])
        img = cv2.warpAffine(canvas, m, (W, H), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
        if k == moving:
            y, x, s = BOX
            img[y:y + s, x:x + s] = 65535  # a white card passing by
        frames.append(SensorModel(descriptor, scene=img, seed=seed).render(W, H, exposure, gain, frame_id=k + 1))
        if k == 0:
            clean = dict(descriptor, sensor=dict(descriptor["sensor"], full_well_e=1e9, read_noise_e=0.0))
            truth = SensorModel(clean, scene=img).render(W, H, exposure, gain, frame_id=1)
    s = descriptor["sensor"]
    truth = (truth.astype(np.float32) - s["black_level"]) / (s["white_level"] - s["black_level"])
    return frames, truth


def raw_images(descriptor, frames) -> list[rawio.RawImage]:
    s = descriptor["sensor"]
    return [rawio.from_frame(RawFrame(data=f, frame_id=k + 1, black_level=s["black_level"], white_level=s["white_level"],
                                      analog_gain=ISO / 100, exposure_us=10000 * 100 // ISO), descriptor)
            for k, f in enumerate(frames)]


def sensor_noise(descriptor) -> tuple[float, float]:
    s, g = descriptor["sensor"], ISO / 100
    return g / s["full_well_e"], (s["read_noise_e"] * g / s["full_well_e"]) ** 2


def normalised(frame: RawFrame) -> np.ndarray:
    return (frame.data.astype(np.float32) - frame.black_level) / np.float32(frame.white_level - frame.black_level)


def psnr(a, b, border: int = 32) -> float:
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def write_burst(tmp_path, descriptor, frames) -> list:
    s = descriptor["sensor"]
    paths = []
    for k, f in enumerate(frames):
        p = tmp_path / f"b_{k}.dng"
        write_dng(p, RawFrame(data=f, frame_id=k + 1, black_level=s["black_level"], white_level=s["white_level"],
                              analog_gain=ISO / 100, exposure_us=10000 * 100 // ISO), descriptor)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def burst_frames(descriptor, canvas):
    return render(descriptor, canvas, SHIFTS)


# ---- alignment ---------------------------------------------------------------------------------


def test_known_shifts_are_recovered_per_tile_to_within_a_pixel(descriptor, burst_frames):
    frames, _ = burst_frames
    images = raw_images(descriptor, frames)
    ref_planes = burst.planes(images[0])
    ref_grey = align.grey(ref_planes)
    ref = align.Pyramid(ref_grey)
    for k in range(1, len(frames)):
        a = align.align(ref, align.Pyramid(align.grey(burst.planes(images[k]))))
        true = SHIFTS[k]
        # Tiles with detail to align on, whose match lies inside the frame.
        ny, nx = a.cells.shape[:2]
        t = a.tile
        usable = np.zeros((ny, nx), bool)
        for ty in range(ny):
            for tx in range(nx):
                y0, x0 = ty * t, tx * t
                tile = ref_grey[y0:y0 + t, x0:x0 + t]
                inside = (y0 + true[0] / 2 >= 2 and x0 + true[1] / 2 >= 2 and y0 + t + true[0] / 2 <= ref_grey.shape[0] - 2
                          and x0 + t + true[1] / 2 <= ref_grey.shape[1] - 2)
                usable[ty, tx] = inside and tile.shape == (t, t) and tile.std() > 0.01
        assert usable.sum() > 0.5 * ny * nx
        sub_err = np.abs(a.pixels() - true)[usable].max(axis=-1)
        cell_err = np.abs(2.0 * a.cells - true)[usable].max(axis=-1)
        # Most tiles are within a pixel; the rest are on the photograph's picket fence, whose
        # repeats alias (measured: 85-99 % per frame; the merge rejects the misfits).
        assert np.mean(sub_err < 1.0) >= 0.8, (k, true, np.mean(sub_err < 1.0))
        assert np.median(sub_err) < 0.3, (k, true, np.median(sub_err))
        # The whole-cell search lands within a cell and a half (3 raw pixels), which the
        # sub-cell step (up to a cell either way) makes up.
        assert np.mean(cell_err <= 3.0) >= 0.85, (k, true, np.mean(cell_err <= 3.0))
        # The frame's motion (median over tiles) is found to a fraction of a pixel.
        assert np.all(np.abs(np.median(a.pixels().reshape(-1, 2), axis=0) - true) < 0.25), (k, true)


def test_alignment_refuses_frames_of_different_size():
    a = align.Pyramid(np.zeros((64, 64), np.float32))
    b = align.Pyramid(np.zeros((64, 80), np.float32))
    with pytest.raises(ValueError, match="cannot align"):
        align.align(a, b)


# ---- merge quality -----------------------------------------------------------------------------


def test_merge_beats_the_single_frame_on_a_photograph(descriptor, burst_frames):
    frames, truth = burst_frames
    images = raw_images(descriptor, frames)
    res = burst.merge_images(images, noise_model=sensor_noise(descriptor))
    single = psnr(normalised(RawFrame(data=frames[0], frame_id=1, black_level=256, white_level=4095)), truth)
    merged = psnr(normalised(res.frame), truth)
    assert merged - single > 3.0, (single, merged)
    assert res.noise_source == "given"
    # Every frame contributed: the shifts were found and the content agreed.
    assert all(f.weight > 0.25 for f in res.frames), [f.weight for f in res.frames]
    for f, true in zip(res.frames, SHIFTS):
        assert np.allclose(f.shift_px, true, atol=0.5), (f.shift_px, true)


def test_merge_with_measured_noise_still_gains(descriptor, burst_frames):
    frames, truth = burst_frames
    res = burst.merge_images(raw_images(descriptor, frames))  # no noise model given: measured
    single = psnr(normalised(RawFrame(data=frames[0], frame_id=1, black_level=256, white_level=4095)), truth)
    assert res.noise_source == "measured"
    assert psnr(normalised(res.frame), truth) - single > 1.5
    a_true = sensor_noise(descriptor)[0]
    assert 0.5 * a_true < res.noise[0] < 3 * a_true, res.noise


def test_a_moving_object_in_one_frame_leaves_no_ghost(descriptor, canvas):
    shifts = SHIFTS[:5]
    frames, truth = render(descriptor, canvas, shifts, moving=2)
    images = raw_images(descriptor, frames)
    y, x, s = BOX
    dy, dx = (round(v) for v in shifts[2])
    box = (slice(y - dy + 4, y - dy + s - 4), slice(x - dx + 4, x - dx + s - 4))  # in the reference's frame
    single = normalised(RawFrame(data=frames[0], frame_id=1, black_level=256, white_level=4095))

    noise_only = float(np.abs(single[box] - truth[box]).mean())
    robust = normalised(burst.merge_images(images, noise_model=sensor_noise(descriptor)).frame)
    # The same frames averaged at their known displacements with every weight ~1 (no
    # rejection): the card shows, so this test can see a ghost.
    ref_planes = burst.planes(images[0])
    plain = merge.Accumulator(ref_planes, sensor_noise(descriptor), strength=1e9)
    grid = align.tile_grid(*ref_planes.shape[1:])
    for image, shift in zip(images[1:], shifts[1:]):
        cells = np.floor(shift / 2).astype(np.int32)
        plain.add(burst.planes(image), np.broadcast_to(cells, (*grid, 2)).copy(), align.TILE,
                  np.broadcast_to((shift / 2 - cells).astype(np.float32), (*grid, 2)).copy())
    plain_out = np.empty_like(truth)
    merged_planes = plain.result()
    for i in range(4):
        plain_out[i // 2::2, i % 2::2] = merged_planes[i]
    assert float(np.abs(plain_out[box] - truth[box]).mean()) > 5 * noise_only
    assert float(np.abs(robust[box] - truth[box]).mean()) < noise_only  # no ghost, and less noise


# ---- files and the CLI -------------------------------------------------------------------------


def test_merged_dng_is_read_by_rawpy_with_the_reference_metadata(tmp_path, descriptor, burst_frames):
    import rawpy

    frames, _ = burst_frames
    paths = write_burst(tmp_path, descriptor, frames[:4])
    out = tmp_path / "merged.dng"
    res = burst.merge_files(paths, out, reference=1)
    assert res.reference == 1 and [f.source for f in res.frames] == [str(p) for p in paths]
    with rawpy.imread(str(out)) as raw:
        assert np.array_equal(raw.raw_image_visible, res.frame.data)
        assert raw.white_level == res.frame.white_level
        assert list(raw.black_level_per_channel) == [res.frame.black_level] * 4
        rgb = raw.postprocess(use_camera_wb=True, no_auto_bright=True)
        assert rgb.shape == (H, W, 3) and rgb.mean() > 20
    back = rawio.read(out)
    assert back.meta["make"] == descriptor["make"] and back.meta["model"] == descriptor["model"]
    assert back.cfa == descriptor["sensor"]["cfa"] and back.frame.bits == 16
    ref = rawio.read(paths[1])
    assert np.allclose(back.xyz_to_camera, ref.xyz_to_camera, atol=1e-3)
    assert np.allclose(back.neutral, ref.neutral, atol=1e-3)
    assert back.meta["exposure_time"] == pytest.approx(ref.meta["exposure_time"])
    # The merged CFA is the burst's scene seen from frame 1, in the same units as that frame.
    shifted = np.asarray(normalised(res.frame), np.float64)
    ref_norm = normalised(ref.frame)
    assert abs(shifted[64:-64, 64:-64].mean() - ref_norm[64:-64, 64:-64].mean()) < 0.002


def test_bad_inputs_are_refused_naming_the_file(tmp_path, descriptor, burst_frames):
    frames, _ = burst_frames
    paths = write_burst(tmp_path, descriptor, frames[:2])
    s = descriptor["sensor"]
    small = tmp_path / "small.dng"
    write_dng(small, RawFrame(data=frames[2][:256, :384].copy(), frame_id=3, black_level=s["black_level"],
                              white_level=s["white_level"], analog_gain=ISO / 100, exposure_us=10000 * 100 // ISO),
              descriptor)
    bggr = tmp_path / "bggr.dng"
    write_dng(bggr, RawFrame(data=frames[2], frame_id=3, cfa="BGGR", black_level=s["black_level"],
                             white_level=s["white_level"], analog_gain=ISO / 100, exposure_us=10000 * 100 // ISO),
              descriptor)
    longer = tmp_path / "longer.dng"  # twice the exposure: a bracket, not a burst
    write_dng(longer, RawFrame(data=frames[2], frame_id=3, black_level=s["black_level"], white_level=s["white_level"],
                               analog_gain=ISO / 100, exposure_us=2 * 10000 * 100 // ISO), descriptor)
    truncated = tmp_path / "truncated.dng"
    truncated.write_bytes(paths[1].read_bytes()[: 200_000])
    out = tmp_path / "out.dng"
    cases = [
        ([paths[0]], "at least 2 frames"),
        ([paths[0], small], "small.dng: frame is 384x256"),
        ([paths[0], bggr], "bggr.dng: CFA pattern BGGR"),
        ([paths[0], truncated], "truncated.dng: truncated"),
        ([paths[0], longer], "longer.dng: exposure x gain"),
        ([paths[0], tmp_path / "missing.dng"], "missing.dng: no such file"),
    ]
    for inputs, message in cases:
        with pytest.raises(PipelineError, match=message):
            burst.merge_files(inputs, out)
        assert not out.exists()
    with pytest.raises(PipelineError, match="out of range"):
        burst.merge_files(paths, out, reference=2)

    runner = CliRunner()
    for inputs, message in cases:
        r = runner.invoke(main, ["merge", *map(str, inputs), "-o", str(out)])
        assert r.exit_code == 1, (r.output, r.exception)
        assert isinstance(r.exception, SystemExit), r.exception  # an error message, not a crash
        assert message.split(":")[-1].strip() in r.output and "Traceback" not in r.output
        assert not out.exists()
    assert not list(tmp_path.glob(".out.dng.*"))  # no temporary file left behind


def test_cli_merges_and_reports_json(tmp_path, descriptor, burst_frames):
    frames, _ = burst_frames
    paths = write_burst(tmp_path, descriptor, frames[:3])
    out = tmp_path / "merged.dng"
    r = subprocess.run([sys.executable, "-m", "magcam.cli", "merge", *map(str, paths), "-o", str(out), "--json"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr

    lines = [json.loads(line) for line in r.stdout.splitlines()]
    result = lines[-1]
    assert result["type"] == "result" and result["frames"] == 3 and result["output"] == str(out)
    assert any(e.get("type") == "progress" for e in lines)
    assert np.allclose(result["shifts_px"], SHIFTS[:3], atol=0.5)
    assert rawio.read(out).frame.data.shape == (H, W)
    # A corrupt input through the real command: exit 1, one clear line, no traceback.
    bad = tmp_path / "bad.dng"
    bad.write_bytes(b"II*\x00" + b"\x00" * 64)
    r = subprocess.run([sys.executable, "-m", "magcam.cli", "merge", str(paths[0]), str(bad), "-o",
                        str(tmp_path / "x.dng")], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1 and "bad.dng" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "x.dng").exists()
    # A DNG under a viewer's suffix would not open: refused before any frame is read.
    for name in ("x.jpg", "x.tif", "x"):
        r = subprocess.run([sys.executable, "-m", "magcam.cli", "merge", *map(str, paths[:2]), "-o",
                            str(tmp_path / name)], capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 1 and "x.dng" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / name).exists()


def test_cli_reference_counts_from_one_like_hdr(tmp_path, descriptor, burst_frames):
    frames, _ = burst_frames
    paths = write_burst(tmp_path, descriptor, frames[:3])
    out = tmp_path / "merged.dng"
    cmd = [sys.executable, "-m", "magcam.cli", "merge", *map(str, paths), "-o", str(out), "--json"]
    r = subprocess.run([*cmd, "--reference", "2"], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["reference"] == 2 and result["reference_file"] == str(paths[1])  # as --reference counts
    assert np.allclose(result["shifts_px"][1], (0, 0), atol=0.01)  # the reference is not moved
    for bad in ("4", "0"):  # beyond the inputs, or not a position at all: usage errors, nothing written
        r = subprocess.run([*cmd, "--reference", bad], capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 2 and "--reference" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_frame_given_twice_or_an_existing_output_is_refused(tmp_path, descriptor, burst_frames):
    frames, _ = burst_frames
    paths = write_burst(tmp_path, descriptor, frames[:2])
    out = tmp_path / "merged.dng"
    with pytest.raises(PipelineError, match=f"{paths[0]} is given twice"):
        burst.merge_files([paths[0], paths[1], paths[0]], out)
    runner = CliRunner()
    r = runner.invoke(main, ["merge", str(paths[0]), str(paths[0]), "-o", str(out)])
    assert r.exit_code == 2 and "is given twice" in r.output and not out.exists(), r.output
    # An existing file (a capture, an earlier merge) is kept unless --force.
    r = runner.invoke(main, ["merge", str(paths[0]), str(paths[1]), "-o", str(tmp_path / "b_0003.dng")])
    assert r.exit_code == 0, r.output
    original = (tmp_path / "b_0003.dng").read_bytes()
    r = runner.invoke(main, ["merge", str(paths[0]), str(paths[1]), "-o", str(tmp_path / "b_0003.dng")])
    assert r.exit_code == 2 and "b_0003.dng exists; give --force" in r.output, r.output
    assert (tmp_path / "b_0003.dng").read_bytes() == original
    r = runner.invoke(main, ["merge", str(paths[1]), str(paths[0]), "-o", str(tmp_path / "b_0003.dng"), "--force"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "b_0003.dng").read_bytes() != original
