"""Virtual sensor (magcam.sim.sensor) and test chart (magcam.sim.chart): known-answer tests."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from magcam.pipeline import color
from conftest import shared_file
from magcam.sim import chart
from magcam.sim.chart import COLORCHECKER_NAMES, COLORCHECKER_SRGB, draw_chart, patch_rects
from magcam.sim.sensor import SensorModel, load_scene

ROOT = Path(__file__).resolve().parents[1]
KODAK = shared_file("kodak24")
# Offset (dy, dx) of the red site in each CFA pattern; blue is diagonally opposite.
RED_SITE = {"RGGB": (0, 0), "BGGR": (1, 1), "GRBG": (0, 1), "GBRG": (1, 0)}


@pytest.fixture
def descriptor() -> dict:
    return json.loads((ROOT / "firmware/magcam_fw/descriptor.json").read_text())


def with_sensor(descriptor: dict, **changes) -> dict:
    d = copy.deepcopy(descriptor)
    d["sensor"].update(changes)
    return d


def flat(rgb, dtype=np.uint8) -> np.ndarray:
    return np.full((32, 32, 3), rgb, dtype)


def sites(raw: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    return {(dy, dx): raw[dy::2, dx::2].astype(np.float64) for dy in (0, 1) for dx in (0, 1)}


def channel_at(cfa: str, dy: int, dx: int) -> int:
    return "RGB".index(cfa[2 * dy + dx])


def expected_mean_dn(descriptor, srgb, exposure_us, gain) -> np.ndarray:
    """Mean DN per camera channel (R, G, B) of a flat sRGB scene, from the documented model."""
    s = descriptor["sensor"]
    cam = color.linear_srgb_to_camera(descriptor) @ color.srgb_to_linear(np.asarray(srgb) / 255.0)
    electrons = cam * exposure_us / 10000 * 0.8 * s["full_well_e"]
    return electrons * gain * (s["white_level"] - s["black_level"]) / s["full_well_e"] + s["black_level"]


def dn_per_electron(descriptor, gain) -> float:
    s = descriptor["sensor"]
    return gain * (s["white_level"] - s["black_level"]) / s["full_well_e"]


# ----------------------------------------------------------------------------- determinism


def test_same_arguments_give_identical_bytes(descriptor):
    a = SensorModel(descriptor, seed=5).render(256, 192, 8000, 2.0, frame_id=3)
    b = SensorModel(descriptor, seed=5)
    b.render(640, 480, 100, 1.0, frame_id=0)  # another size in between must not matter
    assert a.dtype == np.uint16 and a.shape == (192, 256)
    assert a.tobytes() == b.render(256, 192, 8000, 2.0, frame_id=3).tobytes()


def test_frame_id_and_seed_change_the_noise(descriptor):
    m = SensorModel(descriptor, scene=flat(128), seed=5)
    a = m.render(128, 96, 10000, 1.0, frame_id=1)
    b = m.render(128, 96, 10000, 1.0, frame_id=2)
    c = SensorModel(descriptor, scene=flat(128), seed=6).render(128, 96, 10000, 1.0, frame_id=1)
    assert np.mean(a != b) > 0.9 and np.mean(a != c) > 0.9
    # Same scene, same exposure: only the noise differs.
    assert abs(a.mean() - b.mean()) < 0.5


def test_without_a_scene_distance_the_lens_position_is_recorded_but_nothing_blurs(descriptor):
    # Defocus needs to know where the scene is (SensorModel(scene_distance_m=...), test_focus.py);
    # without it every lens position renders the same, so existing captures stay bit-exact.
    m = SensorModel(descriptor, seed=1)
    a = m.render(256, 192, 10000, 1.0, frame_id=0, lens_position=0)
    b = m.render(256, 192, 10000, 1.0, frame_id=0, lens_position=700)
    assert m.lens_position == 700
    assert np.array_equal(a, b)


# ----------------------------------------------------------------------------- levels and noise


def test_dark_frame_sits_at_black_level_with_read_noise(descriptor):
    gain = 8.0  # read noise of several DN, so rounding to integers barely adds to it
    raw = SensorModel(descriptor, scene=flat(0)).render(512, 384, 1, gain, frame_id=0).astype(np.float64)
    sigma = descriptor["sensor"]["read_noise_e"] * dn_per_electron(descriptor, gain)
    assert abs(raw.mean() - descriptor["sensor"]["black_level"]) < 0.1
    assert raw.std() == pytest.approx(math.sqrt(sigma**2 + 1 / 12), rel=0.02)


def test_dark_frame_with_zero_black_level_clips_at_zero_without_wrapping(descriptor):
    d = with_sensor(descriptor, black_level=0)
    raw = SensorModel(d, scene=flat(0)).render(256, 192, 1, 8.0, frame_id=0)
    assert raw.min() == 0 and raw.max() < 100
    assert 0.4 < np.mean(raw == 0) < 0.6  # the negative half of the read noise


@pytest.mark.parametrize("cfa", sorted(RED_SITE))
@pytest.mark.parametrize("srgb", [(128, 128, 128), (200, 120, 60), (40, 90, 170)])
def test_flat_scene_mean_per_cfa_channel(descriptor, cfa, srgb):
    d = with_sensor(descriptor, cfa=cfa)
    exposure_us, gain = 20000, 2.0
    raw = SensorModel(d, scene=flat(srgb), seed=2).render(512, 384, exposure_us, gain, frame_id=0)
    want = expected_mean_dn(d, srgb, exposure_us, gain)
    black = d["sensor"]["black_level"]
    for (dy, dx), v in sites(raw).items():
        c = channel_at(cfa, dy, dx)
        assert v.mean() - black == pytest.approx(want[c] - black, rel=0.01), (cfa, (dy, dx))


def test_white_scene_mean_is_the_as_shot_neutral(descriptor):
    # Hand-checkable: a linear 1.0 green fills 80 % of the well at 10 ms, i.e. 80 % of the
    # DN range at unit gain; red and blue follow the descriptor's as-shot neutral.
    raw = SensorModel(descriptor, scene=flat(255)).render(256, 192, 10000, 1.0, frame_id=0)
    s = descriptor["sensor"]
    span = 0.8 * (s["white_level"] - s["black_level"])
    neutral = color.as_shot_neutral(descriptor)
    assert neutral[1] == 1.0
    for (dy, dx), v in sites(raw).items():
        c = channel_at("RGGB", dy, dx)
        assert v.mean() == pytest.approx(s["black_level"] + span * neutral[c], rel=0.005)


def test_overexposed_white_clips_at_white_level(descriptor):
    m = SensorModel(descriptor, scene=flat(255))
    raw = m.render(256, 192, 60000, 4.0, frame_id=0)
    assert raw.dtype == np.uint16
    assert np.all(raw == descriptor["sensor"]["white_level"])
    chart_raw = SensorModel(descriptor).render(256, 192, 60_000_000, 64.0, frame_id=0)
    assert chart_raw.max() == descriptor["sensor"]["white_level"]


@pytest.mark.parametrize("exposure_us, gain", [(10000, 1.0), (2000, 4.0)])
def test_flat_field_noise_is_shot_plus_read(descriptor, exposure_us, gain):
    srgb = (128, 128, 128)
    raw = SensorModel(descriptor, scene=flat(srgb), seed=9).render(512, 384, exposure_us, gain, frame_id=4)
    s = descriptor["sensor"]
    cam = color.linear_srgb_to_camera(descriptor) @ color.srgb_to_linear(np.full(3, 128 / 255))
    electrons = cam * exposure_us / 10000 * 0.8 * s["full_well_e"]
    k = dn_per_electron(descriptor, gain)
    for (dy, dx), v in sites(raw).items():
        c = channel_at("RGGB", dy, dx)
        sigma = k * math.sqrt(electrons[c] + s["read_noise_e"] ** 2)
        assert v.std() == pytest.approx(math.sqrt(sigma**2 + 1 / 12), rel=0.05), (dy, dx)


# ----------------------------------------------------------------------------- CFA and scene geometry


@pytest.mark.parametrize("cfa", sorted(RED_SITE))
def test_cfa_layout_puts_red_and_blue_at_their_sites(descriptor, cfa):
    d = with_sensor(descriptor, cfa=cfa)
    red_site = RED_SITE[cfa]
    blue_site = (1 - red_site[0], 1 - red_site[1])
    for srgb, site in (((255, 0, 0), red_site), ((0, 0, 255), blue_site)):
        raw = SensorModel(d, scene=flat(srgb)).render(64, 48, 10000, 1.0, frame_id=0)
        means = {k: v.mean() for k, v in sites(raw).items()}
        assert max(means, key=means.get) == site, (cfa, srgb, means)


def test_rggb_has_red_at_origin(descriptor):
    raw = SensorModel(descriptor, scene=flat((255, 0, 0))).render(64, 48, 10000, 1.0, frame_id=0)
    black = descriptor["sensor"]["black_level"]
    red, others = raw[0::2, 0::2].mean() - black, raw[1::2, 1::2].mean() - black
    assert red > 10 * others


@pytest.mark.parametrize(
    "shape, size",
    [((100, 300), (64, 64)), ((300, 100), (64, 64)), ((100, 600), (96, 48))],
)
def test_scene_is_centre_cropped_to_the_frame_aspect(descriptor, shape, size):
    # Three bands (red, green, blue) along the long side: a centre crop to a squarer frame keeps
    # exactly the green band.
    h, w = shape
    scene = np.zeros((h, w, 3), np.uint8)
    if w > h:
        scene[:, : w // 3, 0], scene[:, w // 3 : 2 * w // 3, 1], scene[:, 2 * w // 3 :, 2] = 255, 255, 255
    else:
        scene[: h // 3, :, 0], scene[h // 3 : 2 * h // 3, :, 1], scene[2 * h // 3 :, :, 2] = 255, 255, 255
    raw = SensorModel(descriptor, scene=scene).render(*size, 10000, 1.0, frame_id=0)
    s = sites(raw)
    green = (s[(0, 1)].mean() + s[(1, 0)].mean()) / 2
    assert green > 3 * s[(0, 0)].mean() and green > 2 * s[(1, 1)].mean()


@pytest.mark.parametrize("name", ["kodim01.png", "kodim19.png"])
@pytest.mark.parametrize("size", [(1024, 768), (384, 512)])
def test_photograph_keeps_orientation(descriptor, name, size):
    src = load_scene(KODAK / name)
    w, h = size
    raw = SensorModel(descriptor, scene=src).render(w, h, 10000, 1.0, frame_id=0).astype(np.float64)
    green = (raw[0::2, 1::2] + raw[1::2, 0::2]) / 2 - descriptor["sensor"]["black_level"]

    sh, sw = src.shape[:2]
    if sw * h > w * sh:
        cw = round(sh * w / h)
        crop = src[:, (sw - cw) // 2 : (sw - cw) // 2 + cw]
    else:
        ch = round(sw * h / w)
        crop = src[(sh - ch) // 2 : (sh - ch) // 2 + ch]
    small = cv2.resize(crop, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    luminance = color.srgb_to_linear(small / 255.0) @ color.SRGB_TO_XYZ[1]

    def corr(a, b):
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    assert corr(green, luminance) > 0.95
    assert corr(green, luminance[::-1]) < 0.6  # upside down
    assert corr(green, luminance[:, ::-1]) < 0.6  # mirrored


def test_colour_outside_the_camera_gamut_gives_no_negative_light(descriptor):
    # A camera whose red channel is sRGB red minus 0.2 * green: pure green drives it negative,
    # which a sensor records as darkness (black level plus read noise).
    mix = np.array([[1.2, -0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    d = copy.deepcopy(descriptor)
    d["color"]["color_matrix_1"] = (mix @ color.XYZ_TO_SRGB).ravel().tolist()
    raw = SensorModel(d, scene=flat((0, 255, 0))).render(256, 192, 10000, 8.0, frame_id=0)
    red = raw[0::2, 0::2].astype(np.float64)
    assert abs(red.mean() - d["sensor"]["black_level"]) < 0.2
    assert red.std() == pytest.approx(d["sensor"]["read_noise_e"] * dn_per_electron(d, 8.0), rel=0.05)


def test_sixteen_bit_scene_matches_eight_bit(descriptor):
    a = SensorModel(descriptor, scene=flat((200, 100, 50))).render(64, 48, 10000, 1.0, frame_id=0)
    b = SensorModel(descriptor, scene=flat((200 * 257, 100 * 257, 50 * 257), np.uint16))
    assert np.abs(a.astype(int) - b.render(64, 48, 10000, 1.0, frame_id=0)).max() <= 1


def test_grey_scene_is_accepted(descriptor):
    grey = np.full((32, 32), 128, np.uint8)
    a = SensorModel(descriptor, scene=grey).render(64, 48, 10000, 1.0, frame_id=0)
    b = SensorModel(descriptor, scene=flat(128)).render(64, 48, 10000, 1.0, frame_id=0)
    assert np.array_equal(a, b)


# ----------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(width=15), dict(width=14), dict(height=16386), dict(width=64.0),
        dict(exposure_us=0), dict(exposure_us=60_000_001), dict(exposure_us=float("nan")),
        dict(analog_gain=0), dict(analog_gain=-1.0), dict(analog_gain=64.5),
        dict(frame_id=-1), dict(frame_id=1.5), dict(lens_position="near"),
    ],
)
def test_render_rejects_bad_arguments(descriptor, kwargs):
    args = dict(width=64, height=48, exposure_us=10000, analog_gain=1.0, frame_id=0) | kwargs
    with pytest.raises(ValueError):
        SensorModel(descriptor, scene=flat(128)).render(**args)


def test_render_accepts_the_limits(descriptor):
    m = SensorModel(descriptor, scene=flat(128))
    assert m.render(16, 16, 1, 64.0, frame_id=0).shape == (16, 16)
    assert m.render(16, 16, 60_000_000, 0.01, frame_id=0).shape == (16, 16)


@pytest.mark.parametrize(
    "change", [dict(cfa="RGBG"), dict(black_level=5000), dict(full_well_e=0), dict(read_noise_e=-1)]
)
def test_bad_descriptor_is_rejected(descriptor, change):
    with pytest.raises(ValueError):
        SensorModel(with_sensor(descriptor, **change))


@pytest.mark.parametrize(
    # float32 is linear light (magcam.sim.scenes); other float types are refused.
    "scene", [np.zeros((8, 8, 3), np.float64), np.zeros((0, 8, 3), np.uint8), np.zeros((8, 8, 2), np.uint8),
              np.full((8, 8, 3), np.nan, np.float32)]
)
def test_bad_scene_is_rejected(descriptor, scene):
    with pytest.raises(ValueError):
        SensorModel(descriptor, scene=scene)


# ----------------------------------------------------------------------------- load_scene


def test_load_scene_reads_rgb_in_rgb_order(tmp_path):
    bgra = np.zeros((6, 10, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 30, 20, 10, 128  # B, G, R, alpha
    path = tmp_path / "rgba.png"
    assert cv2.imwrite(str(path), bgra)
    img = load_scene(path)
    assert img.dtype == np.uint8 and img.shape == (6, 10, 3)
    assert img[0, 0].tolist() == [10, 20, 30]


def test_load_scene_expands_sixteen_bit_grey(tmp_path):
    grey = (np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 250)
    path = tmp_path / "grey16.png"
    assert cv2.imwrite(str(path), grey)
    img = load_scene(str(path))
    assert img.dtype == np.uint16 and img.shape == (12, 20, 3)
    for c in range(3):
        assert np.array_equal(img[..., c], grey)


def test_load_scene_kodak():
    img = load_scene(KODAK / "kodim01.png")
    assert img.dtype == np.uint8 and img.shape == (512, 768, 3)


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "garbage"])
def test_load_scene_errors_name_the_path(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"this is not a PNG file at all\n" * 10)
    with pytest.raises(ValueError) as err:
        load_scene(path)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------- test chart


def test_colorchecker_table():
    assert COLORCHECKER_SRGB.shape == (24, 3) and COLORCHECKER_SRGB.dtype == np.uint8
    assert len(COLORCHECKER_NAMES) == 24
    assert COLORCHECKER_NAMES[18].startswith("white")
    assert COLORCHECKER_SRGB[18].tolist() == [243, 243, 242]
    assert COLORCHECKER_SRGB[14].tolist() == [175, 54, 60]  # red
    # The bottom row is the neutral ramp, getting darker left to right.
    assert np.all(np.diff(COLORCHECKER_SRGB[18:, 1].astype(int)) < 0)


@pytest.mark.parametrize(
    "size", [(16, 16), (640, 480), (1024, 768), (1920, 1080), (480, 640), (16384, 16), (16, 16384)]
)
def test_chart_draws_at_size_with_patches_where_reported(size):
    w, h = size
    img = draw_chart(w, h)
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert np.array_equal(img, draw_chart(w, h))
    rects = patch_rects(w, h)
    assert len(rects) == 24
    covered = np.zeros((h, w), bool)
    for (x0, y0, x1, y1), rgb in zip(rects, COLORCHECKER_SRGB):
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert not covered[y0:y1, x0:x1].any()  # patches do not overlap
        covered[y0:y1, x0:x1] = True
        assert np.all(img[y0:y1, x0:x1] == rgb)
    assert img[0, 0].tolist() == list(chart.BACKGROUND)


@pytest.mark.parametrize("size", [(640, 480), (1024, 768), (1920, 1080)])
def test_chart_has_star_edges_and_text(size):
    w, h = size
    img = draw_chart(w, h)
    grey = img[..., 1]
    # Star (top right) and text panel (bottom right): both near-black and near-white pixels.
    for region in (grey[: h // 2, 2 * w // 3 :], grey[h // 2 :, 2 * w // 3 :]):
        assert (region <= chart.INK[0] + 10).sum() > 100
        assert (region >= chart.PAPER[0] - 10).sum() > 100
    # Star: about as much black as white along a circle halfway out.
    cx, cy, r = chart._layout(w, h).star
    t = np.linspace(0, 2 * np.pi, 3600, endpoint=False)
    ring = grey[np.round(cy + r / 2 * np.sin(t)).astype(int), np.round(cx + r / 2 * np.cos(t)).astype(int)]
    assert 0.4 < np.mean(ring < 128) < 0.6


def test_chart_slanted_edge_is_five_degrees():
    w, h = 1024, 768
    grey = draw_chart(w, h)[..., 1].astype(np.float64)
    cx, cy, side = chart._layout(w, h).edges[0]
    x0, x1 = int(cx - side / 2) + 2, int(cx)  # from inside the paper to inside the dark square
    # Sub-pixel position of the dark square's left edge, from the amount of ink on each row.
    ys = np.arange(int(cy - side / 6), int(cy + side / 6))
    edge = []
    for y in ys:
        row = grey[y, x0:x1]
        paper, ink = row[:3].mean(), row[-3:].mean()
        edge.append(x1 - np.sum((paper - row) / (paper - ink)))
    slope = np.polyfit(ys, edge, 1)[0]
    assert math.degrees(math.atan(abs(slope))) == pytest.approx(chart.SLANT_DEG, abs=0.2)


@pytest.mark.parametrize("bad", [(15, 64), (64, 16385), (64.0, 64), (True, 64)])
def test_chart_rejects_bad_sizes(bad):
    with pytest.raises(ValueError):
        draw_chart(*bad)
