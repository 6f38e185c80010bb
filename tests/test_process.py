"""magcam.process and `magcam process`: tiles equal the whole frame, agreement with LibRaw on our
DNGs and a real camera RAW (colour and orientation), output files, malformed inputs, memory."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import rawpy
import tifffile
from click.testing import CliRunner

from conftest import mount_tmpfs, shared_file, tool
from magcam import process, rawio
from magcam.pipeline.shading import GainMap
from magcam.cli import main
from magcam.dng import BYTE, SHORT, SRATIONAL, UNDEFINED, write_dng
from magcam.frame import RawFrame
from magcam.pipeline.errors import PipelineError
from magcam.sim.sensor import SensorModel

KDC = shared_file("raw/kodak_dc50.kdc")
KODIM05 = shared_file("kodak24/kodim05.png")
BORDER = 8  # LibRaw and we fill the outermost pixels differently


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(KODIM05)), cv2.COLOR_BGR2RGB)


def frame_of(descriptor, scene, size=(768, 512), seed=1, gain=1.0) -> RawFrame:
    s = descriptor["sensor"]
    data = SensorModel(descriptor, scene=scene, seed=seed).render(size[0], size[1], 10000, gain, 1)
    return RawFrame(data=data, frame_id=1, black_level=s["black_level"], white_level=s["white_level"])


@pytest.fixture(scope="module")
def dng(tmp_path_factory, descriptor, scene):
    path = tmp_path_factory.mktemp("dng") / "kodim05.dng"
    write_dng(path, frame_of(descriptor, scene), descriptor)
    return path


def libraw(path, *, raw_linear=False, flip=0) -> np.ndarray:
    """rawpy's rendering with our pipeline's fast-preset settings: bilinear, camera white
    balance, sRGB, the sRGB curve (or camera RGB, linear, unbalanced), no auto brightness, the
    white level as white, clipped highlights, 16 bits."""
    with rawpy.imread(str(path)) as raw:
        if raw_linear:
            return raw.postprocess(demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR, output_color=rawpy.ColorSpace.raw,
                                   gamma=(1, 1), user_wb=[1.0, 1.0, 1.0, 1.0], no_auto_bright=True, output_bps=16,
                                   adjust_maximum_thr=0.0, user_flip=flip)
        return raw.postprocess(demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR, use_camera_wb=True,
                               output_color=rawpy.ColorSpace.sRGB, gamma=(2.4, 12.92), no_auto_bright=True,
                               adjust_maximum_thr=0.0, highlight_mode=rawpy.HighlightMode.Clip, output_bps=16,
                               user_flip=flip)


def agreement(ours: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean abs difference per channel (16-bit codes) inside the border, and the correlation
    of the two images averaged over 4x4 blocks."""
    assert ours.shape == ref.shape
    a = ours[BORDER:-BORDER, BORDER:-BORDER].astype(np.float64)
    b = ref[BORDER:-BORDER, BORDER:-BORDER].astype(np.float64)
    mad = np.abs(a - b).mean(axis=(0, 1))
    area = dict(fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    corr = np.corrcoef(cv2.resize(a, None, **area).ravel(), cv2.resize(b, None, **area).ravel())[0, 1]
    return mad, float(corr)


def run_cli(*args):
    return CliRunner().invoke(main, ["process", *map(str, args)], catch_exceptions=True)


# --- tiles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(process.demosaic_methods()))
@pytest.mark.parametrize("opts", [
    dict(preset="fast"),
    dict(preset="default", wb="auto", output_color="p3"),
    dict(preset="quality", tone="filmic", known_defects=[(33, 40), (100, 101)]),
    dict(preset="default", output_color="raw", gamma="linear"),
], ids=["fast", "default-auto-p3", "quality-filmic", "raw-linear"])
def test_tiled_output_equals_whole_frame_exactly(descriptor, scene, method, opts):
    frame = frame_of(descriptor, scene, size=(320, 224), gain=4.0)
    frame.data[50:54, 60:64] = frame.white_level  # clipped highlights straddling tiles
    frame.data[77, 91] = frame.white_level  # a hot pixel
    raw = rawio.from_frame(frame, descriptor)
    raw.gain_map = GainMap.from_grids(np.linspace(1.0, 1.4, 4 * 5 * 7).reshape(4, 5, 7))
    whole = process.process_frame(raw, demosaic=method, bits=16, tile=0, jobs=1, **opts)
    for tile, jobs in ((48, 2), (80, 1), (128, 2)):
        tiled = process.process_frame(raw, demosaic=method, bits=16, tile=tile, jobs=jobs, **opts)
        diff = np.argwhere(tiled != whole)
        assert diff.size == 0, f"tile {tile}: {len(diff)} values differ, first at {diff[:3].tolist()}"


# --- agreement with LibRaw ---------------------------------------------------------------------


def test_cli_output_of_our_dng_matches_libraw(dng, tmp_path):
    out = tmp_path / "ours.tif"
    r = run_cli(dng, "-o", out, "--preset", "fast", "--demosaic", "bilinear")  # LibRaw LINEAR's kernels
    assert r.exit_code == 0, r.output
    ours = tifffile.imread(out)
    mad, corr = agreement(ours, libraw(dng))
    # Measured: 4.0 / 4.7 / 5.7 codes of 16 bits (< 0.01 %), correlation 0.99999.
    assert np.all(mad < 40), mad
    assert corr > 0.98
    # The default preset adds defect correction, chroma denoise and sharpening, which change
    # single pixels of this very detailed scene (no optical blur in the simulator) but not its
    # colour: channel means within 2.5 % of LibRaw's (measured +1.6 %: smoothing the chroma
    # noise raises the mean of the sRGB-encoded values), correlation 0.993.
    r = run_cli(dng, "-o", tmp_path / "default.tif")
    assert r.exit_code == 0, r.output
    ours, ref = tifffile.imread(tmp_path / "default.tif"), libraw(dng)
    _, corr = agreement(ours, ref)
    ratio = ours.reshape(-1, 3).mean(axis=0) / ref.reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(ratio - 1) < 0.025), ratio
    assert corr > 0.98


def test_cli_output_of_a_camera_raw_matches_libraw(tmp_path):
    out = tmp_path / "kdc.tif"
    r = run_cli(KDC, "-o", out, "--preset", "fast", "--demosaic", "bilinear")
    assert r.exit_code == 0, r.output
    ours = tifffile.imread(out)
    assert ours.shape == (512, 768, 3)
    mad, corr = agreement(ours, libraw(KDC))
    # Measured: 2.0 / 2.0 / 2.1 codes of 16 bits; the camera matrix is LibRaw's own (from the
    # file's Kodak ROMM tags, which rawpy does not expose: rawio measures it).
    assert np.all(mad < 40), mad
    assert corr > 0.98


def test_raw_linear_output_is_camera_rgb_like_libraw(dng):
    ours = process.process_to_array(dng, preset="fast", demosaic="bilinear", output_color="raw", gamma="linear",
                                    bits=16)
    mad, corr = agreement(ours, libraw(dng, raw_linear=True))
    assert np.all(mad < 4), mad  # measured 0.7 codes of 16 bits (rounding)
    assert corr > 0.999


def test_raw_output_balanced_as_shot_clips_every_channel_at_full_scale_like_libraw(descriptor, scene, tmp_path):
    """Camera RGB with the as-shot balance, on a frame with clipped highlights: every channel
    reaches full scale and a clipped highlight is white, as in LibRaw's raw output (green once
    stopped at 43 % and blue at 58 %: clipped highlights came out pink)."""
    path = write_dng(tmp_path / "over.dng", frame_of(descriptor, scene, size=(256, 192), gain=8.0), descriptor)
    ours = process.process_to_array(path, preset="fast", demosaic="bilinear", output_color="raw", gamma="linear",
                                    wb="asshot", bits=16)
    with rawpy.imread(str(path)) as raw:
        ref = raw.postprocess(demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR, output_color=rawpy.ColorSpace.raw,
                              gamma=(1, 1), use_camera_wb=True, no_auto_bright=True, output_bps=16,
                              adjust_maximum_thr=0.0, highlight_mode=rawpy.HighlightMode.Clip, user_flip=0)
    inner = ours[BORDER:-BORDER, BORDER:-BORDER]
    assert (inner == 65535).all(axis=-1).mean() > 0.05  # a good share of white, clipped highlights
    assert list(inner.reshape(-1, 3).max(axis=0)) == [65535] * 3
    mad, _ = agreement(ours, ref)
    assert np.all(mad < 8), mad  # measured 0.5-0.7 codes of 16 bits


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_follows_the_file(descriptor, scene, tmp_path, orientation):
    path = tmp_path / "rotated.dng"
    write_dng(path, frame_of(descriptor, scene, size=(256, 192)), descriptor,
              extra_tags=[(274, SHORT, 1, orientation)])
    ours = process.process_to_array(path, preset="fast", demosaic="bilinear", bits=16)
    ref = libraw(path, flip=None)  # LibRaw applies the file's orientation
    assert ours.shape == ref.shape == ((192, 256, 3) if orientation < 5 else (256, 192, 3))
    mad, corr = agreement(ours, ref)
    # measured 3.8..5.3 codes; rotated 180, or 7 taken for 5 (as it once was): thousands
    assert np.all(mad < 40) and corr > 0.98, (mad, corr)


def restriped(src, dst, how: str):
    """One of our single-strip 16-bit DNGs with its strip packed 12-bit (as many cameras write:
    tifffile needs imagecodecs for it, so LibRaw decodes it) or deflate-compressed (Adobe's
    lossless option, which LibRaw does not read), every other tag kept."""
    import zlib

    with tifffile.TiffFile(src) as t:
        page = t.pages[0]
        data = page.asarray()
        at = {code: page.tags[code].valueoffset for code in (258, 259, 273, 279)}
        assert len(page.dataoffsets) == 1 and page.tags[273].dtype == 4  # one strip, LONG offsets
    buf = bytearray(src.read_bytes())
    if how == "packed12":
        v = data.astype(np.uint32).reshape(-1, 2)
        strip = np.stack([v[:, 0] >> 4, ((v[:, 0] & 15) << 4) | (v[:, 1] >> 8), v[:, 1] & 255],
                         axis=1).astype(np.uint8).tobytes()
        struct.pack_into("<H", buf, at[258], 12)
    else:
        strip = zlib.compress(data.astype("<u2").tobytes())
        struct.pack_into("<H", buf, at[259], 8)
    struct.pack_into("<I", buf, at[273], len(buf))
    struct.pack_into("<I", buf, at[279], len(strip))
    dst.write_bytes(bytes(buf) + strip)
    return dst


@pytest.mark.parametrize("orientation", [1, 5, 7])
def test_a_dng_libraw_decodes_develops_as_its_16_bit_twin(descriptor, scene, tmp_path, orientation):
    """Samples packed 12-bit go through LibRaw, whose matrix for a DNG is scaled by its daylight
    multipliers (saturated colours were off by up to 40 %) and whose flip dropped the mirrored
    orientations (5 and 7 came out unrotated): the DNG's own tags now say both."""
    plain = write_dng(tmp_path / "plain.dng", frame_of(descriptor, scene, size=(256, 192)), descriptor,
                      extra_tags=[(274, SHORT, 1, orientation)])
    packed = restriped(plain, tmp_path / "packed.dng", "packed12")
    with rawpy.imread(str(packed)) as r:  # LibRaw reads it, and it is what the test says it is
        assert r.raw_image_visible.shape == (192, 256)
    ours = process.process_to_array(packed, preset="fast", demosaic="bilinear", bits=16)
    twin = process.process_to_array(plain, preset="fast", demosaic="bilinear", bits=16)
    assert ours.shape == twin.shape
    assert np.abs(ours.astype(np.int32) - twin).max() <= 2  # measured 0


def test_a_deflate_compressed_dng_develops_as_its_uncompressed_twin(descriptor, scene, tmp_path):
    plain = write_dng(tmp_path / "plain.dng", frame_of(descriptor, scene, size=(256, 192)), descriptor)
    deflated = restriped(plain, tmp_path / "deflate.dng", "deflate")
    with tifffile.TiffFile(deflated) as t:
        assert t.pages[0].compression == 8
    ours = process.process_to_array(deflated, preset="fast", bits=16)  # "truncated or corrupt" before
    np.testing.assert_array_equal(ours, process.process_to_array(plain, preset="fast", bits=16))


# --- outputs -----------------------------------------------------------------------------------


def test_outputs_carry_profile_exif_and_the_same_pixels(dng, tmp_path):
    from PIL import Image, ImageCms

    ref16 = process.process_to_array(dng, output_color="p3", bits=16)
    tif, png, jpg = tmp_path / "a.tif", tmp_path / "a.png", tmp_path / "a.jpg"
    process.process_file(dng, tif, output_color="p3")
    process.process_file(dng, png, output_color="p3", bits=16)
    process.process_file(dng, jpg, output_color="p3")
    with tifffile.TiffFile(tif) as t:
        page = t.pages[0]
        np.testing.assert_array_equal(page.asarray(), ref16)
        assert page.tags["Make"].value == "magcam"
        assert page.tags[34665].value["ExposureTime"] == (1, 100)  # in the EXIF IFD, where it belongs
        profile = page.tags[34675].value
    np.testing.assert_array_equal(cv2.imread(str(png), cv2.IMREAD_UNCHANGED)[..., ::-1], ref16)
    for path in (png, jpg):
        with Image.open(path) as im:
            assert im.size == (768, 512)
            profile = im.info["icc_profile"]
            assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile))).strip() == "Display P3"
            exif = im.getexif()
            assert exif[0x010F] == "magcam" and exif[0x0112] == 1
            assert exif.get_ifd(0x8769)[0x829A] == pytest.approx(0.01)  # ExposureTime
    ref8 = process.process_to_array(dng, output_color="p3", bits=8).astype(np.float64)
    assert np.abs(ref8 - ref16 / 257.0).max() < 0.75  # one encoding (a coarser table for 8 bits)
    with Image.open(jpg) as im:
        mse = np.mean((np.asarray(im).astype(np.float64) - ref8) ** 2)
    assert 10 * np.log10(255.0**2 / mse) > 33  # JPEG q92 4:4:4 on this detailed scene: 35.5 dB measured
    assert sorted(os.listdir(tmp_path)) == ["a.jpg", "a.png", "a.tif"]  # no temporaries left
    # Every tag EXIF requires is there, with its type (exiftool listed 9 missing from the JPEG).
    for path in (tif, png, jpg):
        r = subprocess.run([tool("exiftool"), "-validate", "-warning", "-a", "-s3", str(path)],
                           capture_output=True, text=True, check=True)
        assert r.stdout.strip() == "OK", (path.name, r.stdout)


@pytest.mark.parametrize("fmt", ["jpg", "png", "tif"])
def test_exif_says_srgb_only_for_the_srgb_curve(dng, tmp_path, fmt):
    """A viewer that ignores the ICC profile reads EXIF ColorSpace = sRGB as "apply the sRGB
    curve": linear sRGB must be uncalibrated (0xFFFF) there, as P3 and camera RGB are."""
    got = {}
    for color, gamma in (("srgb", "srgb"), ("srgb", "linear"), ("p3", "srgb"), ("raw", "linear")):
        out = tmp_path / f"{color}-{gamma}.{fmt}"
        process.process_file(dng, out, output_color=color, gamma=gamma, preset="fast",
                             bits=8 if fmt == "jpg" else 16)
        r = subprocess.run([tool("exiftool"), "-n", "-s3", "-ColorSpace", str(out)], capture_output=True, text=True,
                           check=True)
        got[color, gamma] = int(r.stdout.strip())
    assert got == {("srgb", "srgb"): 1, ("srgb", "linear"): 0xFFFF, ("p3", "srgb"): 0xFFFF, ("raw", "linear"): 0xFFFF}


def test_a_text_tag_stored_as_bytes_does_not_reach_the_exif_as_junk(descriptor, scene, tmp_path):
    path = write_dng(tmp_path / "bytes_make.dng", frame_of(descriptor, scene, size=(64, 48)), descriptor,
                     extra_tags=[(271, BYTE, 4, b"\xff\xfe\x00\x01"), (272, BYTE, 6, b"QA-1\x00\x00")])
    assert rawio.read(path).meta.get("make") is None and rawio.read(path).meta["model"] == "QA-1"
    process.process_file(path, tmp_path / "out.jpg", preset="fast")
    from PIL import Image

    with Image.open(tmp_path / "out.jpg") as im:
        exif = im.getexif()
    assert 0x010F not in exif and exif[0x0110] == "QA-1"  # Make left out, not "b'\xff\xfe...'"


# --- malformed inputs --------------------------------------------------------------------------


def patch_dims(path, width, height):
    data = bytearray(path.read_bytes())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (n,) = struct.unpack_from("<H", data, ifd)
    for i in range(n):
        off = ifd + 2 + 12 * i
        tag, typ = struct.unpack_from("<HH", data, off)
        if tag in (256, 257):
            value = width if tag == 256 else height
            struct.pack_into("<HHII", data, off, tag, 4, 1, value)
    path.write_bytes(bytes(data))


@pytest.fixture
def bad_files(tmp_path, descriptor):
    small = RawFrame(data=np.full((64, 96), 600, np.uint16), frame_id=1, black_level=256, white_level=4095)
    files = {}
    good = write_dng(tmp_path / "good.dng", small, descriptor)
    files["truncated"] = tmp_path / "truncated.dng"
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["cfa colours"] = write_dng(tmp_path / "cfa_colours.dng", small, descriptor,
                                     extra_tags=[(33422, BYTE, 4, bytes((0, 3, 1, 2)))])
    files["cfa not bayer"] = write_dng(tmp_path / "cfa_rggg.dng", small, descriptor,
                                       extra_tags=[(33422, BYTE, 4, bytes((0, 1, 1, 1)))])
    files["cfa dims"] = write_dng(tmp_path / "cfa_dims.dng", small, descriptor,
                                  extra_tags=[(33421, SHORT, 2, (6, 6))])
    files["zero size"] = tmp_path / "empty.dng"
    files["zero size"].write_bytes(b"")
    files["absurd"] = write_dng(tmp_path / "absurd.dng", small, descriptor)
    patch_dims(files["absurd"], 400000, 300000)
    files["zero dims"] = write_dng(tmp_path / "zero_dims.dng", small, descriptor)
    patch_dims(files["zero dims"], 0, 64)
    files["too big for data"] = write_dng(tmp_path / "big.dng", small, descriptor)
    patch_dims(files["too big for data"], 8000, 6000)
    files["not an image"] = tmp_path / "notes.dng"
    files["not an image"].write_text("shopping list: milk, eggs\n" * 40)
    files["random bytes"] = tmp_path / "random.cr2"
    files["random bytes"].write_bytes(np.random.default_rng(0).bytes(50000))
    files["a jpeg"] = tmp_path / "photo.nef"
    files["a jpeg"].write_bytes(cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))[1].tobytes())
    files["plain tiff"] = tmp_path / "plain.tif"
    tifffile.imwrite(files["plain tiff"], np.zeros((16, 16, 3), np.uint8))
    files["negative black"] = write_dng(tmp_path / "neg_black.dng", small, descriptor,
                                        extra_tags=[(50714, SRATIONAL, 1, (-100, 1))])
    files["garbage opcodes"] = write_dng(tmp_path / "opcodes.dng", small, descriptor,
                                         extra_tags=[(51009, UNDEFINED, 16, bytes(range(16)))])
    return good, files


EXPECTED = {
    "truncated": "truncated", "cfa colours": "colours other than red, green and blue",
    "cfa not bayer": "not a Bayer pattern", "cfa dims": "not a 2x2 Bayer", "zero size": "empty",
    "absurd": "absurd image size", "zero dims": "empty", "too big for data": "needs",
    "not an image": "not a RAW or DNG file", "random bytes": "not a RAW or DNG file",
    "a jpeg": "not a RAW or DNG file", "plain tiff": "not a RAW/DNG file",
    "negative black": "is negative", "garbage opcodes": "malformed DNG opcode list",
}


def test_malformed_inputs_raise_clear_errors(bad_files):
    _, files = bad_files
    for kind, path in files.items():
        with pytest.raises(PipelineError) as e:
            rawio.read(path)
        msg = str(e.value)
        assert msg.startswith(str(path)), (kind, msg)
        assert EXPECTED[kind] in msg, (kind, msg)


def test_cli_batch_processes_good_files_and_names_the_bad_ones(bad_files, tmp_path):
    good, files = bad_files
    out = tmp_path / "out"
    r = run_cli(good, *files.values(), "-o", out, "--json")
    assert r.exit_code == 1
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit)
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["input"] for e in events if e["type"] == "file"] == [str(good)]
    errors = [e["message"] for e in events if e["type"] == "error"]
    assert len(errors) == len(files)
    for path, message in zip(files.values(), errors):  # in a batch, each error says which file
        assert message.startswith(f"{path}: "), message
    assert events[-1] == {"type": "result", "processed": 1, "failed": len(files),
                          "failed_files": [str(p) for p in files.values()]}
    assert os.listdir(out) == ["good.jpg"]
    # Plain mode: one "error:" line per bad file on stderr, a summary naming them, no traceback.
    r = run_cli(good, files["truncated"], files["absurd"], "-o", tmp_path / "out2", "--format", "png")
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert f"error: {files['truncated']}: truncated" in r.output  # stderr (mixed in by click 8.1)
    assert "2 of 3 file(s) failed" in r.output
    assert (tmp_path / "out2" / "good.png").exists()


def test_cli_output_folders_and_names(bad_files, tmp_path):
    good, files = bad_files
    # A trailing slash says "folder", even where the name looks like a file's.
    for name in ("2024.06.01", "out.jpg"):
        r = CliRunner().invoke(main, ["process", str(good), "-o", f"{tmp_path / name}/", "--preset", "fast"])
        assert r.exit_code == 0, r.output
        assert os.listdir(tmp_path / name) == ["good.jpg"]
    # A missing folder for one output file: said before developing, and nothing written.
    r = run_cli(good, "-o", tmp_path / "missing" / "x.jpg")
    assert r.exit_code == 1 and f"directory {tmp_path / 'missing'} does not exist; {good} was not developed" in r.output
    assert not (tmp_path / "missing").exists()
    # A folder made for a batch whose every input is bad is not left behind, empty.
    r = run_cli(files["truncated"], files["zero size"], "-o", tmp_path / "new")
    assert r.exit_code == 1 and "2 of 2 file(s) failed" in r.output
    assert not (tmp_path / "new").exists()
    # An existing file where a folder is needed (a name without suffix, e.g. a device): usage error.
    r = run_cli(good, "-o", "/dev/null")
    assert r.exit_code == 2 and "is an existing file, not a directory" in r.output


def test_a_full_disk_is_said_as_such_and_leaves_nothing(dng, tmp_path):
    """A real 40 KiB tmpfs: every format fails as "No space left on device" (tifffile's short
    write once read "36864 requested and 28096 written") and leaves no partial file."""
    disk = tmp_path / "disk"
    refused = mount_tmpfs(disk, "40k")
    if refused is not None:
        pytest.skip(f"needs a small tmpfs to fill: {refused}")
    try:
        outputs = [run_cli(dng, "-o", disk / f"x.{ext}", "--preset", "fast") for ext in ("tif", "png", "jpg")]
        left = os.listdir(disk)
    finally:
        subprocess.run(["umount", str(disk)], check=False, timeout=30)
    for r in outputs:
        assert r.exit_code == 1 and "No space left on device" in r.output and "Traceback" not in r.output, r.output
    assert left == []


def test_a_frame_too_small_for_rias_develops_and_errors_name_the_file(descriptor, tmp_path):
    """Under 16 px a side the default demosaic falls back to the preview one (it raised a
    ValueError that ended the batch); an error from the stages names the file."""
    tiny = write_dng(tmp_path / "tiny.dng", RawFrame(data=np.full((8, 512), 900, np.uint16), frame_id=1,
                                                     black_level=256, white_level=4095), descriptor)
    res = process.process_file(tiny, tmp_path / "tiny.png")
    assert (res.height, res.width) == (8, 512) and res.stats["demosaic"].startswith("fast")
    dark = write_dng(tmp_path / "dark.dng", RawFrame(data=np.full((64, 64), 256, np.uint16), frame_id=1,
                                                     black_level=256, white_level=4095), descriptor)
    with pytest.raises(PipelineError, match=f"^{dark}: automatic white balance"):
        process.process_file(dark, tmp_path / "dark.png", wb="auto")


def test_cli_usage_errors(dng, tmp_path):
    r = run_cli(dng, "-o", tmp_path / "x.jpg", "--wb", "1,0,1")
    assert r.exit_code == 2 and "white balance" in r.output
    r = run_cli(dng, "-o", tmp_path / "x.jpg", "--demosaic", "nonsense")
    assert r.exit_code == 2 and "demosaic" in r.output
    r = run_cli(dng, "-o", tmp_path / "x.bmp")
    assert r.exit_code == 2 and "extension" in r.output
    r = run_cli(dng, dng, "-o", tmp_path / "x.jpg")
    assert r.exit_code == 2
    r = run_cli(dng, "-o", tmp_path / "x.jpg", "--chroma-denoise", "1.5")  # past 1 it would overshoot
    assert r.exit_code == 2 and "chroma_denoise must be a number from 0 to 1" in r.output
    r = run_cli(dng, "-o", tmp_path / "x.jpg", "--wb", "")  # an empty value is not "as shot"
    assert r.exit_code == 2 and "white balance must be asshot, auto, none or R,G,B, got ''" in r.output
    r = run_cli(dng, "-o", tmp_path / "x.jpg", "--format", "png")  # PNG data in a .jpg opens nowhere
    assert r.exit_code == 2 and "the extension '.jpg' says jpeg, the format asked for is png" in r.output
    with pytest.raises(PipelineError, match="says tiff"):
        process.process_file(dng, tmp_path / "x.tif", format="jpeg")
    for out in (tmp_path / "x.jpg", tmp_path / "dir"):  # known before any file is developed
        r = run_cli(dng, "-o", out, "--bits", "16", *(("--format", "jpeg") if out.suffix == "" else ()))
        assert r.exit_code == 2 and "JPEG holds 8 bits" in r.output
    r = run_cli(dng, "-o", tmp_path / "x.png", "--quality", "10")  # it was ignored, exit 0
    assert r.exit_code == 2 and "--quality is for JPEG output; this run writes PNG" in r.output
    assert os.listdir(tmp_path) == []


def test_library_formats_as_users_write_them_and_frames_where_a_path_goes(dng, tmp_path):
    """format="jpg" with x.jpg said "the extension '.jpg' says jpeg, the format asked for is jpg";
    a RawFrame given to process_file / process_to_array was a TypeError from os.stat."""
    assert process.output_format(tmp_path / "a.jpg", "JPG") == "jpeg"
    assert process.output_format(tmp_path / "a.tif", "tif") == "tiff"
    with pytest.raises(PipelineError, match=r"format must be one of tiff, png, jpeg \(or jpg, tif\), got 'bmp'"):
        process.output_format(tmp_path / "a.jpg", "bmp")
    result = process.process_file(dng, tmp_path / "b.jpg", format="jpg")
    assert result.format == "jpeg" and (tmp_path / "b.jpg").read_bytes()[:2] == b"\xff\xd8"
    frame = RawFrame(np.full((16, 16), 300, np.uint16), frame_id=1, black_level=256)
    for call in (lambda: process.process_to_array(frame), lambda: process.process_file(frame, tmp_path / "c.jpg")):
        with pytest.raises(PipelineError, match=r"got RawFrame; a frame from the camera goes to process\.process_frame"):
            call()
    assert sorted(os.listdir(tmp_path)) == ["b.jpg"]



@pytest.mark.parametrize("options, message", [
    ({"bogus": 1}, r"unexpected keyword argument 'bogus'; options: preset, demosaic"),
    ({"denoise": "x"}, r"denoise must be a number from 0 to 10, got 'x'"),
    ({"sharpen_radius": "a"}, r"sharpen_radius must be a number from 0\.3 to 5, got 'a'"),
    ({"sharpen_radius": float("nan")}, r"sharpen_radius must be a number"),
    ({"bits": "8"}, r"bits must be 8 or 16, got '8'"),
    ({"jobs": True}, r"jobs must be a positive integer, got True"),
    ({"quality": "x"}, r"JPEG quality must be a whole number 1\.\.100, got 'x'"),
    ({"quality": float("nan")}, r"JPEG quality must be a whole number"),
    ({"defects": "maybe"}, r"defects must be True or False"),
    ({"lens_shading": "x"}, r"lens shading grids must be numbers"),
    ({"lens_shading": np.zeros((4, 3, 3))}, r"lens shading gains must be finite and above 0"),
    ({"known_defects": "x"}, r"known_defects must be \(x, y\) pairs"),
    ({"known_defects": [(1.5, 2)]}, r"known_defects must be \(x, y\) pairs"),
    ({"known_defects": 5}, r"known_defects must be \(x, y\) pairs"),
    ({"known_defects": [(5, 5), (99999, 3)]}, r"known_defects: pixel \(99999, 3\) is outside the 768x512 frame"),
    ({"known_defects": [(767, 511), (600, 512)]}, r"known_defects: pixel \(600, 512\) is outside the 768x512 frame"),
])
def test_bad_library_options_are_pipeline_errors_naming_the_option(dng, options, message):
    """Every bad option is one error type (PipelineError, a ValueError) with the option's name;
    it used to be TypeError, a bare ValueError from float() or int(), or nothing at all."""
    with pytest.raises(PipelineError, match=message):
        process.process_to_array(dng, **options)
    with pytest.raises(PipelineError, match=message):
        process.process_frame(dng, process.Options(), **options) if "bogus" in options else \
            process.process_frame(dng, options)


def test_cli_refuses_a_batch_whose_outputs_would_collide(dng, tmp_path):
    """Two inputs of one name (each card's IMG_0001) would go to one output, the second silently
    replacing the first: refused before anything is developed, an earlier output untouched."""
    for d in ("card1", "card2"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "IMG_0001.dng").write_bytes(dng.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    (out / "IMG_0001.jpg").write_bytes(b"an earlier result")
    a, b = tmp_path / "card1" / "IMG_0001.dng", tmp_path / "card2" / "IMG_0001.dng"
    r = run_cli(a, b, "-o", out)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"{a} and {b} would both be written to {out / 'IMG_0001.jpg'}" in r.output
    assert os.listdir(out) == ["IMG_0001.jpg"] and (out / "IMG_0001.jpg").read_bytes() == b"an earlier result"
    r = run_cli(a, tmp_path / "card1" / ".." / "card1" / "IMG_0001.dng", "-o", out)
    assert r.exit_code == 2 and "is given twice" in r.output
    # Other formats are other names: no clash.
    r = run_cli(a, "-o", out, "--format", "png")
    assert r.exit_code == 0 and sorted(os.listdir(out)) == ["IMG_0001.jpg", "IMG_0001.png"]
    # Nor onto an input: --format tiff would write a TIFF over the DNG. The library refuses too.
    before = a.read_bytes()
    r = run_cli(a, "-o", a, "--format", "tiff")
    assert r.exit_code == 2 and f"{a} is the input itself" in r.output
    r = run_cli(a, b, "-o", tmp_path / "card1", "--format", "tiff")  # both to card1/IMG_0001.tif
    assert r.exit_code == 2 and "would both be written" in r.output
    with pytest.raises(PipelineError, match="is the input itself"):
        process.process_file(a, tmp_path / "card2" / ".." / "card1" / "IMG_0001.dng", format="tiff")
    assert a.read_bytes() == before and sorted(os.listdir(tmp_path / "card1")) == ["IMG_0001.dng"]

def test_cli_in_a_real_process_has_no_traceback(bad_files, tmp_path):
    _, files = bad_files
    r = subprocess.run([sys.executable, "-m", "magcam.cli", "process", str(files["truncated"]), str(files["zero size"]),
                        "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.count("error: ") == 3  # two files and the summary


def test_libraw_s_own_complaint_is_folded_into_one_error_line(tmp_path):
    """LibRaw prints "NAME: Unexpected end of file" on stderr itself: that went out beside our
    "truncated or corrupt RAW file (Input/output error)". Now only our line, with its words."""
    cut = tmp_path / "cut.kdc"
    cut.write_bytes(KDC.read_bytes()[:20000])
    r = subprocess.run([sys.executable, "-m", "magcam.cli", "process", str(cut), "-o", str(tmp_path / "o.jpg")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert f"error: {cut}: truncated or corrupt RAW file (LibRaw: Unexpected end of file)" in lines, r.stderr
    assert all(line.startswith("error: ") for line in lines), r.stderr
    assert not (tmp_path / "o.jpg").exists()


@pytest.mark.parametrize("says, refused", [("Corrupt data near 0x1f00", True), ("Unexpected end of file", True),
                                           ("some remark", False)])
def test_a_data_error_libraw_survives_is_still_refused(monkeypatch, capfd, tmp_path, says, refused):
    """LibRaw's data-error handler prints and carries on with zeros: such an image is not one
    to develop. Its other remarks are passed on as it would have printed them."""
    name = str(tmp_path / "a.kdc")
    image = object()

    def libraw_decoding(path, tiff):  # what LibRaw does on such a file: print, then return
        os.write(2, f"{path}: {says}\n".encode())
        return image

    monkeypatch.setattr(rawio, "_read_rawpy_unguarded", libraw_decoding)
    if refused:
        with pytest.raises(PipelineError, match=f"truncated or corrupt RAW file \\(LibRaw: {says}\\)"):
            rawio._read_rawpy(name, 0)
        assert capfd.readouterr().err == ""
    else:
        assert rawio._read_rawpy(name, 0) is image
        assert capfd.readouterr().err == f"{name}: {says}\n"


def test_a_remark_libraw_makes_beside_a_failure_is_passed_on_and_the_failure_raised(monkeypatch, capfd, tmp_path):
    name = str(tmp_path / "a.kdc")

    def libraw_failing(path, tiff):
        os.write(2, f"{path}: some remark\n".encode())
        raise PipelineError(f"{path}: truncated or corrupt RAW file (Input/output error)")

    monkeypatch.setattr(rawio, "_read_rawpy_unguarded", libraw_failing)
    with pytest.raises(PipelineError, match=r"\(Input/output error\)"):  # was an UnboundLocalError
        rawio._read_rawpy(name, 0)
    assert capfd.readouterr().err == f"{name}: some remark\n"


def test_libraw_watch_passes_other_stderr_output_on(capfd):
    with rawio._libraw_messages("/x/a.kdc") as said:
        os.write(2, b"/x/a.kdc: Corrupt data near 0x1234\n")
        os.write(2, b"another thread's warning\n")
    assert said == ["Corrupt data near 0x1234"]
    assert capfd.readouterr().err == "another thread's warning\n"


# --- memory ------------------------------------------------------------------------------------


def test_peak_memory_stays_near_the_raw_size(tmp_path, descriptor):
    # 24 MP: the whole frame as float32 RGB would be 290 MB on its own, and an untiled pipeline
    # holds several such arrays; tiled, the RAW, one band of work and the 8-bit output remain.
    w, h = 5664, 4248
    data = np.random.default_rng(0).integers(256, 4095, size=(h, w), dtype=np.uint16)
    write_dng(tmp_path / "big.dng", RawFrame(data=data, frame_id=1, black_level=256, white_level=4095), descriptor)
    del data
    code = textwrap.dedent(f"""
        import resource, sys
        from magcam.process import process_file
        process_file({str(tmp_path / 'big.dng')!r}, {str(tmp_path / 'big.jpg')!r}, jobs=2)
        try:  # VmHWM: a spawned child's ru_maxrss on Linux also counts pytest's RSS at the spawn
            print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) // 1024)
        except OSError:
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    # Compiling the numba kernels (on a cold cache as on a fresh machine) is a one-off that
    # needs memory of its own: do it first, then measure the processing.
    warm = subprocess.run([sys.executable, "-c", "from magcam import process; process.warm_up()"],
                          capture_output=True, text=True, timeout=300)
    assert warm.returncode == 0, warm.stderr
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    peak_mb = int(r.stdout.split()[-1])
    # About 200 MB of this is the runtime (numpy, OpenCV, rawpy, Pillow) and numba's LLVM; the
    # JPEG encoder holds two copies of the 8-bit image. Measured: 532 MB with the default 768 x
    # 1536 tiles, 613-643 with 1024 x 2048. Untiled, 24 MP would need well over 1.5 GB; 100 MP
    # tiled measured 1.15 GB (JPEG) and 0.91 GB (TIFF, 1024 px tiles), under the 1.5 GB budget.
    assert peak_mb < 750, peak_mb


def test_dng_per_site_black_level_and_short_neutral(descriptor, tmp_path):
    from magcam.dng import RATIONAL

    blk = np.array([[250, 262], [256, 244]])
    data = np.empty((64, 96), np.uint16)
    for dy in range(2):
        for dx in range(2):
            data[dy::2, dx::2] = blk[dy, dx] + 900  # a flat field: 900 units above each site's black
    path = write_dng(tmp_path / "blk.dng", RawFrame(data=data, frame_id=1, black_level=256, white_level=4095),
                     descriptor, extra_tags=[(50713, SHORT, 2, (2, 2)), (50714, SHORT, 4, tuple(int(v) for v in blk.ravel())),
                                             (50728, RATIONAL, 3, (1, 1, 1, 1, 1, 1))])
    raw = rawio.read(path)
    np.testing.assert_array_equal(raw.black, blk)
    np.testing.assert_array_equal(raw.neutral, [1, 1, 1])
    out = process.process_frame(raw, preset="fast", demosaic="bilinear", output_color="raw", wb="asshot",
                                gamma="linear", bits=16, tile=0)
    # DNG: linear = (v - black) / (white - black), per site. R (black 250) and B (244) come out
    # flat at their own level; G mixes its two sites (262, 256).
    inner = out[2:-2, 2:-2].astype(np.float64)
    level = lambda b: 900 / (4095 - b) * 65535  # noqa: E731
    assert np.abs(inner[..., 0] - level(250)).max() <= 1
    assert np.abs(inner[..., 2] - level(244)).max() <= 1
    assert level(256) - 1 <= inner[..., 1].min() and inner[..., 1].max() <= level(262) + 1
    with rawpy.imread(str(path)) as r:  # LibRaw reads the same blacks
        colors = r.raw_colors_visible[:2, :2]
        libraw_black = np.array([[r.black_level_per_channel[colors[y, x]] for x in range(2)] for y in range(2)])
    np.testing.assert_array_equal(libraw_black, blk)


def test_follows_the_demosaic_contract(monkeypatch, descriptor, scene):
    # demosaic.METHODS / OVERLAP / DEFAULT / PREVIEW, as the demosaic module publishes them:
    # presets pick DEFAULT and PREVIEW, tiles get OVERLAP[method] more margin, and a method
    # that reads 4 px around each pixel still gives tiles equal to the whole frame.
    from magcam.pipeline import demosaic, filters

    calls = []

    def wide(cfa, pattern):
        calls.append(cfa.shape)
        rgb = bilinear(cfa, pattern)
        return filters.separable(rgb, filters.gaussian_kernel(0.6)) + 0  # reads 2 more px each side

    bilinear = demosaic.METHODS["bilinear"]
    monkeypatch.setattr(demosaic, "METHODS", {"bilinear": bilinear, "wide": wide}, raising=False)
    monkeypatch.setattr(demosaic, "OVERLAP", {"bilinear": 2, "wide": 4}, raising=False)
    monkeypatch.setattr(demosaic, "DEFAULT", "wide", raising=False)
    monkeypatch.setattr(demosaic, "PREVIEW", "bilinear", raising=False)
    raw = rawio.from_frame(frame_of(descriptor, scene, size=(256, 192)), descriptor)
    assert process.make_plan(raw, process.Options()).method == "wide"
    assert process.make_plan(raw, process.Options(preset="fast")).method == demosaic.PREVIEW
    assert process.make_plan(raw, process.Options(preset="fast", demosaic="wide")).margin == 4
    whole = process.process_frame(raw, tile=0, bits=16)
    assert calls == [(192, 256)]
    np.testing.assert_array_equal(process.process_frame(raw, tile=64, jobs=2, bits=16), whole)
    with pytest.raises(PipelineError, match="available: bilinear, wide"):
        process.process_frame(raw, demosaic="ahd")


def test_a_frame_too_big_for_the_memory_is_one_error_and_the_batch_goes_on(tmp_path, descriptor):
    """A phone's memory: under an address-space limit the small frame fits and the 100 MP one
    does not. That one is a one-line error, the next file is still developed, exit 1."""
    small = write_dng(tmp_path / "small.dng", RawFrame(data=np.full((480, 640), 1200, np.uint16), frame_id=1,
                                                        black_level=256, white_level=4095), descriptor)
    big = write_dng(tmp_path / "big.dng", RawFrame(data=np.full((8672, 11552), 1200, np.uint16), frame_id=2,
                                                    black_level=256, white_level=4095), descriptor)
    cmd = [sys.executable, "-m", "magcam.cli", "process", "--jobs", "1"]
    probe = textwrap.dedent(f"""
        from magcam.cli import main
        try:
            main(["process", {str(small)!r}, "-o", {str(tmp_path / 'probe.jpg')!r}, "--jobs", "1"])
        except SystemExit:
            pass
        print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmPeak")))
    """)
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (tmp_path / "probe.jpg").is_file(), r.stderr
    limit = (int(r.stdout.split()[-1]) + 300 * 1024) * 1024  # the small frame's need + 300 MB: 100 MP needs ~800 more

    def limited():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    out = tmp_path / "out"
    r = subprocess.run([*cmd, str(big), str(small), "-o", f"{out}/"], capture_output=True, text=True, timeout=300,
                       preexec_fn=limited)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"error: {big}: not enough memory to develop it; nothing written" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["small.jpg"]  # no partial big.jpg, no temporary


def test_a_capture_folder_develops_with_its_sidecars_skipped(tmp_path, descriptor, scene):
    shots = tmp_path / "shots"
    shots.mkdir()
    for name in ("a", "b"):  # as `magcam capture` leaves them: a DNG and its JSON sidecar
        write_dng(shots / f"{name}.dng", frame_of(descriptor, scene, size=(96, 64)), descriptor)
        (shots / f"{name}.json").write_text('{"frame_id": 1}')
    (shots / "c.dng").write_bytes(b"II*\x00" + b"\x00" * 40)  # and one damaged file
    out = tmp_path / "dev"
    inputs = [str(p) for p in sorted(shots.iterdir())]
    r = run_cli(*inputs, "-o", f"{out}/", "--preset", "fast", "--json")
    assert r.exit_code == 1, r.output
    events = [json.loads(line) for line in r.output.splitlines()]
    assert [e["input"] for e in events if e["type"] == "skipped"] == [str(shots / "a.json"), str(shots / "b.json")]
    assert [e["input"] for e in events if e["type"] == "file"] == [str(shots / "a.dng"), str(shots / "b.dng")]
    errors = [e for e in events if e["type"] == "error"]
    assert [e["input"] for e in errors] == [str(shots / "c.dng")] and "c.dng" in errors[0]["message"]
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.jpg"]
    # Without --json: one line says what was skipped; a lone .json is no sidecar and is refused.
    r = run_cli(str(shots / "a.dng"), str(shots / "a.json"), "-o", str(tmp_path / "one.jpg"), "--preset", "fast")
    assert r.exit_code == 0 and "skipped 1 capture sidecar(s)" in r.output, r.output
    r = run_cli(str(shots / "b.json"), "-o", str(tmp_path / "lone.jpg"))
    assert r.exit_code == 1 and "b.json" in r.output and not (tmp_path / "lone.jpg").exists(), r.output
    # A batch none of whose files develops leaves none of the folders it made.
    r = run_cli(str(shots / "c.dng"), str(shots / "b.json"), "-o", f"{tmp_path / 'new' / 'deeper'}/")
    assert r.exit_code == 1 and not (tmp_path / "new").exists(), r.output


def test_in_a_pipe_progress_stays_off_stdout(dng, tmp_path):
    r = subprocess.run([sys.executable, "-m", "magcam.cli", "process", str(dng), "-o", str(tmp_path / "x.jpg"),
                        "--preset", "fast"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"{dng} -> {tmp_path / 'x.jpg'} (768x512") and lines[1:] == ["processed: 1",
                                                                                          "failed: 0"], r.stdout
    assert f"{dng.name}: 100% (" in r.stderr  # a person watching a log still sees it go
