"""DNG writer: the files are checked with independent readers (LibRaw via rawpy, dcraw, exiftool)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import rawpy
import tifffile

from magcam.dng import write_dng
from conftest import shared_file, tool
from magcam.frame import CFA_PATTERNS, RawFrame
from magcam.pipeline import color

REPO = Path(__file__).resolve().parents[1]
KODIM05 = shared_file("kodak24/kodim05.png")




def mosaic(camera_rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an (H, W, 3) image through a 2x2 CFA: one colour per pixel."""
    out = np.empty(camera_rgb.shape[:2], dtype=camera_rgb.dtype)
    for k, colour in enumerate(pattern):
        out[k // 2 :: 2, k % 2 :: 2] = camera_rgb[k // 2 :: 2, k % 2 :: 2, "RGB".index(colour)]
    return out


def kodak_frame(descriptor: dict, pattern: str = "RGGB") -> RawFrame:
    """kodim05 as the module would capture it: linear camera RGB, mosaicked, in 12-bit ADC units."""
    srgb = cv2.cvtColor(cv2.imread(str(KODIM05)), cv2.COLOR_BGR2RGB)
    camera = color.srgb_to_linear(srgb / 255.0) @ color.linear_srgb_to_camera(descriptor).T
    black, white = descriptor["sensor"]["black_level"], descriptor["sensor"]["white_level"]
    adc = black + np.clip(mosaic(camera, pattern), 0, 1) * (white - black)
    return RawFrame(
        data=np.round(adc).astype(np.uint16),
        frame_id=42,
        cfa=pattern,
        black_level=black,
        white_level=white,
        exposure_us=8000,
        analog_gain=2.0,
        lens_position=417,
        timestamp_ms=123456,
    )


@pytest.fixture(scope="module")
def kodak_dng(descriptor, tmp_path_factory) -> tuple[Path, RawFrame]:
    frame = kodak_frame(descriptor)
    path = write_dng(tmp_path_factory.mktemp("dng") / "kodim05.dng", frame, descriptor)
    return path, frame


def small_frame(**overrides) -> RawFrame:
    # LibRaw and dcraw refuse images under 22 pixels a side.
    fields = dict(data=np.full((32, 48), 1000, np.uint16), frame_id=1, black_level=256, white_level=4095)
    fields.update(overrides)
    return RawFrame(**fields)


# --- rawpy (LibRaw) --------------------------------------------------------------------------


def test_rawpy_reads_geometry_levels_and_samples(kodak_dng):
    path, frame = kodak_dng
    with rawpy.imread(str(path)) as raw:
        assert (raw.sizes.raw_height, raw.sizes.raw_width) == (512, 768)
        assert (raw.sizes.height, raw.sizes.width) == (512, 768)
        assert raw.raw_type == rawpy.RawType.Flat
        assert raw.black_level_per_channel == [frame.black_level] * 4
        assert raw.white_level == frame.white_level
        assert raw.raw_image.dtype == np.uint16
        np.testing.assert_array_equal(raw.raw_image, frame.data)


def test_rawpy_reads_colour_tags(kodak_dng, descriptor):
    path, _ = kodak_dng
    neutral = color.as_shot_neutral(descriptor)
    with rawpy.imread(str(path)) as raw:
        # LibRaw's camera multipliers are 1 / AsShotNeutral (green normalised to 1).
        wb = np.array(raw.camera_whitebalance[:3])
        np.testing.assert_allclose(wb / wb[1], 1 / neutral, rtol=1e-3)
        # Its rgb_cam is derived from ColorMatrix1 alone: it must equal our conversion.
        np.testing.assert_allclose(raw.color_matrix[:, :3], color.camera_to_linear_srgb(descriptor), atol=1e-3)


def test_rawpy_reads_exif_from_ifd0(kodak_dng):
    path, _ = kodak_dng
    with rawpy.imread(str(path)) as raw:
        assert raw.other.shutter_speed == pytest.approx(0.008)
        assert raw.other.aperture == pytest.approx(1.4)
        assert raw.other.focal_length == pytest.approx(35.0)
        assert raw.lens.model == "35mm F1.4"
        assert (raw.lens.min_focal, raw.lens.max_focal) == (35.0, 35.0)
        # ISO is not asserted: LibRaw only reads it from an EXIF sub-IFD (see magcam.dng).


@pytest.mark.parametrize("pattern", CFA_PATTERNS)
def test_cfa_pattern_round_trips_through_rawpy(pattern, descriptor, tmp_path):
    rng = np.random.default_rng(1)
    frame = small_frame(data=rng.integers(256, 4096, size=(32, 48), dtype=np.uint16), cfa=pattern)
    path = write_dng(tmp_path / f"{pattern}.dng", frame, descriptor)
    with rawpy.imread(str(path)) as raw:
        letters = raw.color_desc.decode()
        assert "".join(letters[i] for i in raw.raw_pattern.ravel()) == pattern
        np.testing.assert_array_equal(raw.raw_image, frame.data)


# --- dcraw -----------------------------------------------------------------------------------


def test_dcraw_identifies_the_file(kodak_dng):
    path, _ = kodak_dng
    result = subprocess.run([tool("dcraw"), "-i", "-v", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # dcraw strips the make from the front of the model and prints "Camera: <make> <model>".
    assert "Camera: magcam M43 35mm F1.4" in out
    assert "DNG Version: 1.4.0.0" in out
    assert re.search(r"Full size:\s+768 x 512", out)
    assert "Filter pattern: RG/GB" in out
    assert "Shutter: 1/125.0 sec" in out
    assert "Aperture: f/1.4" in out
    assert "Focal length: 35.0 mm" in out


# --- exiftool --------------------------------------------------------------------------------


def exiftool(path: Path) -> dict:
    result = subprocess.run([tool("exiftool"), "-j", "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def numbers(text) -> list[float]:
    return [float(v) for v in str(text).split()]


def test_exiftool_reports_dng_and_exif_tags(kodak_dng, descriptor):
    path, frame = kodak_dng
    tags = exiftool(path)
    assert tags["FileType"] == "DNG"
    assert tags["DNGVersion"] == "1 4 0 0"
    assert tags["DNGBackwardVersion"] == "1 1 0 0"
    assert tags["Make"] == "magcam"
    assert tags["Model"] == "magcam M43 35mm F1.4"
    assert tags["UniqueCameraModel"] == "magcam magcam M43 35mm F1.4"
    assert tags["CameraSerialNumber"] == "SIM-000001"
    assert tags["PhotometricInterpretation"] == 32803
    assert tags["CFARepeatPatternDim"] == "2 2"
    assert tags["CFAPattern2"] == "0 1 1 2"  # RGGB
    assert tags["BlackLevel"] == frame.black_level
    assert tags["WhiteLevel"] == frame.white_level
    assert numbers(tags["ColorMatrix1"]) == pytest.approx(descriptor["color"]["color_matrix_1"], abs=1e-4)
    assert tags["CalibrationIlluminant1"] == 21
    assert numbers(tags["AsShotNeutral"]) == pytest.approx(list(color.as_shot_neutral(descriptor)), abs=1e-4)
    assert tags["ExposureTime"] == pytest.approx(0.008)
    assert tags["ISO"] == 200
    assert tags["FNumber"] == pytest.approx(1.4)
    assert tags["FocalLength"] == pytest.approx(35.0)
    assert tags["LensModel"] == "35mm F1.4"
    assert numbers(tags["DNGLensInfo"]) == pytest.approx([35, 35, 1.4, 1.4])
    assert tags["Orientation"] == 1
    assert tags["Software"] == "magcam"
    assert re.fullmatch(r"\d{4}:\d\d:\d\d \d\d:\d\d:\d\d", tags["DateTimeOriginal"])
    meta = json.loads(tags["ImageDescription"])["magcam"]
    assert (meta["frame_id"], meta["lens_position"], meta["timestamp_ms"]) == (42, 417, 123456)


# --- file structure (tifffile as a reader) ---------------------------------------------------


def test_file_structure(kodak_dng):
    path, frame = kodak_dng
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1 and not tif.is_shaped  # no tifffile JSON metadata
        page = tif.pages[0]
        assert page.is_dng and not page.is_tiled
        tags = {tag.code: tag.value for tag in page.tags}
        assert tags[254] == 0  # NewSubfileType
        assert (tags[258], tags[259], tags[262], tags[277]) == (16, 1, 32803, 1)
        assert 273 in tags and 279 in tags and not {322, 323, 324, 325} & tags.keys()
        assert tags[50711] == 1  # CFALayout
        assert bytes(tags[50710]) == bytes((0, 1, 2))  # CFAPlaneColor
        assert tags[50713] == (1, 1)  # BlackLevelRepeatDim
        assert json.loads(page.description) == {
            "magcam": {"module": "magcam-m43-35f14", "frame_id": 42, "lens_position": 417, "timestamp_ms": 123456}
        }
        np.testing.assert_array_equal(page.asarray(), frame.data)


def test_extra_tags_add_and_override(descriptor, tmp_path):
    extra = [(50730, 10, 1, (-1, 2)), (42036, 2, 0, "custom lens")]  # BaselineExposure, LensModel
    path = write_dng(tmp_path / "x.dng", small_frame(), descriptor, software="magcam-test", extra_tags=extra)
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        assert tags[50730].value == (-1, 2)
        assert tags[42036].value == "custom lens"
        assert tags[305].value == "magcam-test"


# --- atomicity -------------------------------------------------------------------------------


def test_failed_encode_leaves_existing_file_untouched(descriptor, tmp_path, monkeypatch):
    target = tmp_path / "frame.dng"
    target.write_bytes(b"previous capture")

    def broken_write(self, *args, **kwargs):
        raise RuntimeError("encoder failed")

    monkeypatch.setattr(tifffile.TiffWriter, "write", broken_write)
    with pytest.raises(RuntimeError, match="encoder failed"):
        write_dng(target, small_frame(), descriptor)
    assert target.read_bytes() == b"previous capture"
    assert os.listdir(tmp_path) == ["frame.dng"]


@pytest.mark.parametrize("existing", [True, False])
def test_failure_while_writing_file_leaves_no_partial_file(existing, descriptor, tmp_path, monkeypatch):
    target = tmp_path / "frame.dng"
    if existing:
        target.write_bytes(b"previous capture")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    # fsync runs after all bytes went into the temporary file: the worst moment to fail.
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_dng(target, small_frame(), descriptor)
    assert os.listdir(tmp_path) == (["frame.dng"] if existing else [])
    if existing:
        assert target.read_bytes() == b"previous capture"


# --- input validation ------------------------------------------------------------------------


def _with_data(data):
    frame = small_frame()
    frame.data = data  # bypass RawFrame's own check: the writer must not rely on it
    return frame


@pytest.mark.parametrize(
    "frame, message",
    [
        (_with_data(np.zeros((8, 12), np.float32)), "uint16"),
        (_with_data(np.zeros((8, 12, 3), np.uint16)), "2-D"),
        (small_frame(data=np.zeros((7, 12), np.uint16)), "even"),
        (small_frame(data=np.zeros((8, 13), np.uint16)), "even"),
        (small_frame(black_level=4095, white_level=4095), "black_level"),
        (small_frame(black_level=5000, white_level=4095), "black_level"),
        (small_frame(white_level=5000), "bits"),
        (small_frame(exposure_us=0), "exposure_us"),
        (small_frame(analog_gain=0.0), "analog_gain"),
    ],
)
def test_invalid_frame_raises_value_error(frame, message, descriptor, tmp_path):
    with pytest.raises(ValueError, match=message):
        write_dng(tmp_path / "bad.dng", frame, descriptor)
    assert os.listdir(tmp_path) == []


def test_values_above_white_level_are_written_unchanged(descriptor, tmp_path):
    frame = small_frame(white_level=3000)
    frame.data[::3, ::5] = 4095
    path = write_dng(tmp_path / "hot.dng", frame, descriptor)
    with rawpy.imread(str(path)) as raw:
        np.testing.assert_array_equal(raw.raw_image, frame.data)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("make"), "make"),
        (lambda d: d.update(model="caméra"), "ASCII"),
        (lambda d: d["color"].update(illuminant_1="F2"), "illuminant"),
        (lambda d: d["color"].update(color_matrix_1=[1.0, 0.0]), "color_matrix_1"),
        (lambda d: d["lens"].update(f_number=0), "positive"),
    ],
)
def test_invalid_descriptor_raises_value_error(edit, message, descriptor, tmp_path):
    bad = json.loads(json.dumps(descriptor))
    edit(bad)
    with pytest.raises(ValueError, match=message):
        write_dng(tmp_path / "bad.dng", small_frame(), bad)
    assert os.listdir(tmp_path) == []


def test_structural_extra_tag_is_rejected(descriptor, tmp_path):
    with pytest.raises(ValueError, match="273"):
        write_dng(tmp_path / "bad.dng", small_frame(), descriptor, extra_tags=[(273, 4, 1, 0)])


def test_the_firmware_accepts_exactly_the_illuminants_the_dng_writer_knows():
    from magcam_fw import descriptor as fw_descriptor

    assert sorted(fw_descriptor.ILLUMINANTS) == sorted(color.ILLUMINANT_CODES)
