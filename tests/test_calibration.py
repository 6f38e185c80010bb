"""Colour and lens-shading calibration (magcam.calibration, `magcam calibrate color|shading`):
known answers on the simulator's sensor, whose truth differs from its descriptor."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import rawpy
from click.testing import CliRunner

import magcam
from conftest import shared_file, tool
from magcam import process, rawio
from magcam.calibration import color as cal
from magcam.calibration import colorchecker, device, shading
from magcam.cli import main
from magcam.dng import write_dng
from magcam.frame import RawFrame
from magcam.pipeline import color
from magcam.pipeline.shading import GainMap
from magcam.sim import Simulator
from magcam.sim.scenes import colorchecker_scene, flat_scene
from magcam.sim.sensor import SensorModel, load_scene

W, H = 1024, 768
# True XYZ -> camera matrices of two made-up sensors, both far from the factory descriptor's.
TRUE_A = [0.62, -0.12, -0.08, -0.50, 1.35, 0.15, -0.05, 0.15, 0.80]
TRUE_B = [0.95, -0.35, 0.02, -0.30, 1.10, 0.30, -0.20, 0.35, 0.55]
VIGNETTING = {"corner": [0.55, 0.6, 0.68], "center": [0.53, 0.46]}
# A chart turned 8 degrees, off-centre, in perspective.
CORNERS = np.array([[330.0, 250.0], [860.0, 322.0], [830.0, 660.0], [300.0, 600.0]])


def normalized(m) -> np.ndarray:
    m = np.asarray(m, np.float64).reshape(3, 3)
    return m / (m @ color.D65_WHITE_XYZ).max()


def capture(sensor: SensorModel, descriptor: dict, frame_id: int, exposure_us: int = 8000) -> rawio.RawImage:
    data = sensor.render(W, H, exposure_us=exposure_us, analog_gain=1.0, frame_id=frame_id)
    s = descriptor["sensor"]
    frame = RawFrame(data, frame_id, cfa=s["cfa"], bits=s["bits"], black_level=s["black_level"],
                     white_level=s["white_level"], exposure_us=exposure_us)
    return rawio.from_frame(frame, descriptor)


@pytest.fixture(scope="module")
def chart_scene() -> np.ndarray:
    return colorchecker_scene(W, H, corners=CORNERS)


# ---- CIEDE2000 and the reference data ----------------------------------------------------------

# Sharma, Wu, Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes,
# supplementary test data": pairs 1, 7, 13, 17, 25, 34 of their table.
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0009), 7.1792),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082),
]


def test_ciede2000_matches_sharma_test_data():
    lab1 = np.array([p[0] for p in SHARMA])
    lab2 = np.array([p[1] for p in SHARMA])
    np.testing.assert_allclose(cal.delta_e2000(lab1, lab2), [p[2] for p in SHARMA], atol=1e-4)


def test_reference_is_the_published_chart_under_d65():
    ref = colorchecker.reference_xyz()
    lab = cal.xyz_to_lab(ref)
    # X-Rite's post-2014 L*a*b* (D50) of the white and black patches; adapted to D65 (Bradford)
    # they keep their lightness and near-neutral tint.
    np.testing.assert_allclose(lab[18], [95.19, -1.03, 2.93], atol=0.5)  # white 9.5
    np.testing.assert_allclose(lab[23], [20.64, 0.07, -0.46], atol=0.5)  # black 2
    assert lab[14, 1] > 45  # red is red
    assert colorchecker.reference_linear_srgb()[17, 0] < 0  # cyan lies outside sRGB


# ---- colour --------------------------------------------------------------------------------------


def test_rendered_chart_is_found_and_the_true_matrix_recovered(descriptor, chart_scene):
    sensor = SensorModel(descriptor, scene=chart_scene, seed=1, truth={"color_matrix_1": TRUE_A})
    raw = capture(sensor, descriptor, 0)
    corners = colorchecker.detect(raw)
    assert np.abs(corners - CORNERS).max() < 1.5, corners
    res = cal.calibrate(raw)
    print(f"\ncolour: dE2000 before mean {res.before.mean:.2f} max {res.before.max:.2f}; "
          f"after mean {res.after.mean:.3f} max {res.after.max:.3f}; root-poly {res.root_polynomial.mean:.3f}")
    assert res.before.mean > 5  # the descriptor's matrix is not this sensor's
    assert res.after.mean <= 2 and res.after.max <= 2
    assert res.after.mean < 0.3  # noise only: the simulated sensor is exactly linear
    np.testing.assert_allclose(res.xyz_to_camera, normalized(TRUE_A), atol=2e-3)
    # Given corners give the same answer.
    given = cal.calibrate(raw, CORNERS)
    np.testing.assert_allclose(given.xyz_to_camera, res.xyz_to_camera, atol=1e-3)
    new = cal.update_descriptor(descriptor, res)
    assert new["color"]["color_matrix_1"] == [round(float(v), 4) for v in res.xyz_to_camera.ravel()]
    assert descriptor["color"]["color_matrix_1"] != new["color"]["color_matrix_1"]


@pytest.mark.parametrize("corners", [np.roll(CORNERS, 2, axis=0), [[700, 100], [700, 700], [300, 700], [300, 100]]],
                         ids=["upside-down", "on-its-side"])
def test_chart_is_read_the_right_way_round(descriptor, corners):
    corners = np.asarray(corners, np.float64)
    sensor = SensorModel(descriptor, scene=colorchecker_scene(W, H, corners=corners), truth={"color_matrix_1": TRUE_B})
    found = colorchecker.detect(capture(sensor, descriptor, 0))
    assert np.abs(found - corners).max() < 1.5, found


def test_a_flat_grey_is_no_chart(descriptor):
    raw = capture(SensorModel(descriptor, scene=flat_scene(0.4)), descriptor, 0)
    with pytest.raises(magcam.pipeline.errors.PipelineError, match="no ColorChecker found"):
        colorchecker.detect(raw)


def test_two_sensors_match_after_calibration(descriptor, chart_scene):
    """Two modules with different sensors, each calibrated, develop one scene to the same colours."""
    photo = load_scene(shared_file("kodak24/kodim23.png"))  # 768x512: parrots, saturated colours

    def develop(truth, desc, scene, frame_id):
        s = SensorModel(desc, scene=scene, seed=frame_id, truth={"color_matrix_1": truth})
        rgb = process.process_frame(capture(s, desc, frame_id).frame, descriptor=desc, preset="fast",
                                    gamma="linear", bits=16, tile=0)
        lin = rgb.astype(np.float64) / 65535
        # Compare 16x16 block means (demosaicing detail is not colour).
        blocks = lin[: H // 16 * 16, : W // 16 * 16].reshape(H // 16, 16, W // 16, 16, 3).mean(axis=(1, 3))
        return cal.xyz_to_lab(blocks.reshape(-1, 3) @ color.SRGB_TO_XYZ.T)

    calibrated = []
    for i, truth in enumerate((TRUE_A, TRUE_B)):
        s = SensorModel(descriptor, scene=chart_scene, seed=10 + i, truth={"color_matrix_1": truth})
        calibrated.append(cal.update_descriptor(descriptor, cal.calibrate(capture(s, descriptor, i), CORNERS)))
    before = cal.delta_e2000(develop(TRUE_A, descriptor, photo, 3), develop(TRUE_B, descriptor, photo, 4))
    after = cal.delta_e2000(develop(TRUE_A, calibrated[0], photo, 3), develop(TRUE_B, calibrated[1], photo, 4))
    print(f"\ntwo sensors, kodim23: dE2000 between them before {before.mean():.2f} (p95 "
          f"{np.percentile(before, 95):.2f}), after {after.mean():.2f} (p95 {np.percentile(after, 95):.2f})")
    assert before.mean() > 4
    assert after.mean() < 1.0 and np.percentile(after, 95) < 2.0


# ---- shading ---------------------------------------------------------------------------------


def flat_frames(descriptor, n: int, first_id: int, exposure_us: int = 17000):
    sensor = SensorModel(descriptor, scene=flat_scene(0.5), seed=5, truth={"vignetting": VIGNETTING})
    return [capture(sensor, descriptor, first_id + i, exposure_us) for i in range(n)], sensor


def test_truth_vignetting_is_what_the_sensor_renders(descriptor):
    sensor = SensorModel(descriptor, scene=flat_scene(0.5), truth={"vignetting": {"corner": 0.5, "center": [0.5, 0.5]}})
    m = sensor._camera_mosaic(W, H)
    assert m[0, 1] / m[H // 2, W // 2 + 1] == pytest.approx(0.5, abs=0.01)  # green sites: corner / centre


def test_flat_field_is_flattened_within_1_percent_by_the_pipeline(descriptor):
    flats, _ = flat_frames(descriptor, 4, 0)
    dark, _ = flat_frames(descriptor, 1, 100, exposure_us=1)
    res = shading.calibrate(flats, dark)
    new = shading.update_descriptor(descriptor, res, device.DEFAULT_MAX_BYTES, reserve=device.RESERVE_BYTES)
    assert shading.descriptor_bytes(new) <= device.DEFAULT_MAX_BYTES - device.RESERVE_BYTES
    np.testing.assert_allclose(res.falloff_pct[[0, 1, 3]], [45, 40, 32], atol=1.0)  # R, G, B corners
    test, _ = flat_frames(descriptor, 1, 50)
    opts = dict(preset="fast", output_color="raw", gamma="linear", bits=16, wb="none", tile=0)
    off = process.process_frame(test[0].frame, descriptor=descriptor, **opts).astype(np.float64)
    on = process.process_frame(test[0].frame, descriptor=new, **opts).astype(np.float64)
    before, after = shading.flatness_pct(off, 32), shading.flatness_pct(on, 32)
    print(f"\nshading: grid {res.grids.shape}, flatness before {before:.2f} %, after {after:.2f} %")
    assert before > 25
    assert after < 1.0


def test_dng_carries_the_gain_map_and_matrix(descriptor, tmp_path):
    flats, _ = flat_frames(descriptor, 2, 0)
    new = shading.update_descriptor(descriptor, shading.calibrate(flats), device.DEFAULT_MAX_BYTES)
    new["color"]["color_matrix_1"] = [round(v, 4) for v in normalized(TRUE_A).ravel().tolist()]
    test, _ = flat_frames(descriptor, 1, 60)
    path = write_dng(tmp_path / "flat.dng", test[0].frame, new)

    back = rawio.read(path)
    np.testing.assert_allclose(back.xyz_to_camera.ravel(), new["color"]["color_matrix_1"], atol=1e-4)
    expected = GainMap.from_grids(new["lens_shading"]["grids"]).region_gains(0, 0, H, W, H, W)
    np.testing.assert_array_equal(back.gain_map.region_gains(0, 0, H, W, H, W), expected)
    rgb = process.process_frame(back, preset="fast", output_color="raw", gamma="linear", bits=16, wb="none", tile=0)
    assert shading.flatness_pct(rgb.astype(np.float64), 32) < 1.0

    with rawpy.imread(str(path)) as r:
        assert r.raw_image.shape == (H, W)
        # LibRaw's rgb_cam comes from ColorMatrix1 alone: it must be the calibrated matrix's.
        np.testing.assert_allclose(r.color_matrix[:, :3], color.camera_to_linear_srgb(new), atol=1e-3)
    exif = subprocess.run([tool("exiftool"), "-s", "-OpcodeList2", str(path)], capture_output=True, text=True)
    assert "GainMap, GainMap, GainMap, GainMap" in exif.stdout
    dcraw = subprocess.run([tool("dcraw"), "-i", "-v", str(path)], capture_output=True, text=True)
    assert dcraw.returncode == 0 and "Filter pattern: RG/GB" in dcraw.stdout


# ---- the commands, over the protocol -------------------------------------------------------------


def _result(output: str) -> dict:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["type"] == "result", output
    return lines[-1]


def test_calibrate_commands_store_on_the_module_and_later_dngs_carry_it(tmp_path, descriptor):
    flash = tmp_path / "flash"
    truth = {"color_matrix_1": TRUE_A, "vignetting": VIGNETTING}
    runner = CliRunner()
    with Simulator(scene="flat", truth=truth, flash=flash) as sim:
        r = runner.invoke(main, ["calibrate", "shading", "--port", sim.port, "--frames", "3", "--dark", "--json"])
        assert r.exit_code == 0, r.output
        sh = _result(r.output)
        assert sh["stored_on"] == sim.port
        assert sh["flatness_before_pct"] > 20 and sh["flatness_after_pct"] < 1.5  # a new frame, raw CFA
    # Another boot, another scene, the same module: the shading map persisted in its flash.
    with Simulator(scene="colorchecker", truth=truth, flash=flash) as sim:
        with magcam.connect(sim.port) as cam:
            assert cam.descriptor["lens_shading"]["grids"] == json.loads((flash / "descriptor.json").read_text())[
                "lens_shading"]["grids"]
        stored = (flash / "descriptor.json").read_bytes()
        for cmd in ("color", "shading"):  # an -o that cannot be written: said before the module is touched
            r = runner.invoke(main, ["calibrate", cmd, "--port", sim.port, "-o", str(tmp_path / "no" / "cal.json")])
            assert r.exit_code == 2 and "does not exist" in r.output, r.output
        assert (flash / "descriptor.json").read_bytes() == stored
        r = runner.invoke(main, ["calibrate", "color", "--port", sim.port, "--json"])
        assert r.exit_code == 0, r.output
        res = _result(r.output)
        print(f"\ncalibrate color on the simulator: before mean {res['before']['mean_de2000']}, "
              f"after mean {res['after']['mean_de2000']} max {res['after']['max_de2000']}")
        assert res["before"]["mean_de2000"] > 5 and res["after"]["mean_de2000"] <= 1.0
        np.testing.assert_allclose(res["color_matrix_1"], normalized(TRUE_A).ravel(), atol=3e-3)
        sim.restart()
        with magcam.connect(sim.port) as cam:
            assert cam.descriptor["color"]["color_matrix_1"] == res["color_matrix_1"]  # persisted
            path = cam.capture_dng(tmp_path / "after.dng", width=W, height=H, exposure_us=8000)
    back = rawio.read(path)
    np.testing.assert_allclose(back.xyz_to_camera.ravel(), res["color_matrix_1"], atol=1e-4)
    assert back.gain_map is not None and len(back.gain_map.sites) == 4
    with rawpy.imread(str(path)) as r:
        np.testing.assert_allclose(r.color_matrix[:, :3], color.camera_to_linear_srgb(
            {"color": {"color_matrix_1": res["color_matrix_1"]}}), atol=1e-3)
    # The DNG developed by the pipeline shows the chart in its published colours.
    lin = process.process_frame(back, preset="fast", gamma="linear", bits=16, tile=0).astype(np.float64) / 65535
    corners = np.asarray(res["corners"]).reshape(4, 2)
    xyz = np.array([lin[int(q[:, 1].min()) + 2 : int(q[:, 1].max()) - 1, int(q[:, 0].min()) + 2 : int(q[:, 0].max()) - 1]
                    .reshape(-1, 3).mean(axis=0) for q in colorchecker.patch_quads(corners, 0.4)]) @ color.SRGB_TO_XYZ.T
    ref = colorchecker.reference_xyz()
    xyz *= cal.exposure_scale(xyz, ref)
    de = cal.delta_e2000(cal.xyz_to_lab(xyz), cal.xyz_to_lab(ref))
    # Cyan is outside sRGB and clipped by the output encoding; the other 23 must be right.
    print(f"developed DNG vs reference: mean dE2000 {np.delete(de, 17).mean():.2f}, cyan {de[17]:.2f}")
    assert np.delete(de, 17).mean() < 1.5


def test_calibrate_from_files_and_clear_errors(tmp_path, descriptor, chart_scene):
    s = SensorModel(descriptor, scene=chart_scene, seed=2, truth={"color_matrix_1": TRUE_B})
    chart = write_dng(tmp_path / "chart.dng", capture(s, descriptor, 0).frame, descriptor)
    flats, _ = flat_frames(descriptor, 2, 0)
    flat_paths = [write_dng(tmp_path / f"flat{i}.dng", f.frame, descriptor) for i, f in enumerate(flats)]
    runner = CliRunner()
    out = tmp_path / "cal.json"
    r = runner.invoke(main, ["calibrate", "color", "--from", str(chart), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(json.loads(out.read_text())["color"]["color_matrix_1"], normalized(TRUE_B).ravel(),
                               atol=3e-3)
    matrix = json.loads(out.read_text())["color"]["color_matrix_1"]
    r = runner.invoke(main, ["calibrate", "shading", "--flat", str(flat_paths[0]), "--flat", str(flat_paths[1]),
                             "--descriptor", str(out), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    both = json.loads(out.read_text())  # the shading step kept the colour step's matrix
    assert "lens_shading" in both and both["color"]["color_matrix_1"] == matrix
    assert shading.descriptor_bytes(both) <= device.DEFAULT_MAX_BYTES

    # Clear errors naming the file, no tracebacks, nothing written.
    missing = tmp_path / "nope.dng"
    r = runner.invoke(main, ["calibrate", "color", "--from", str(missing), "--dry-run"])
    assert r.exit_code == 1 and str(missing) in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["calibrate", "color", "--from", str(flat_paths[0]), "--dry-run"])
    assert r.exit_code == 1 and "no ColorChecker found" in r.output and str(flat_paths[0]) in r.output
    r = runner.invoke(main, ["calibrate", "color", "--from", str(chart), "--corners", "1,2,3", "--dry-run"])
    assert r.exit_code == 2 and "--corners" in r.output
    # Corners off the chart: a poor fit is refused, a grey one cannot be fitted at all.
    r = runner.invoke(main, ["calibrate", "color", "--from", str(chart), "-o", str(tmp_path / "bad.json"),
                             "--corners", "400,300,800,330,780,600,380,580"])
    assert r.exit_code == 1 and "the fit is poor" in r.output and not (tmp_path / "bad.json").exists()
    r = runner.invoke(main, ["calibrate", "color", "--from", str(chart), "--dry-run", "--corners",
                             "10,10,200,10,200,150,10,150"])
    assert r.exit_code == 1 and "degenerate" in r.output and str(chart) in r.output
    r = runner.invoke(main, ["calibrate", "shading", "--flat", str(chart)])
    assert r.exit_code == 2 and "-o" in r.output
    r = runner.invoke(main, ["calibrate", "shading", "--flat", str(chart), "--dark", str(missing), "--dry-run"])
    assert r.exit_code == 1 and str(missing) in r.output
    r = runner.invoke(main, ["sim", "--truth", '{"color_matrix_1": [1, 2]}'])
    assert r.exit_code == 1 and "color_matrix_1" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["sim", "--truth", '{"vignette": 0.5}'])
    assert r.exit_code == 1 and "unknown sensor truth keys ['vignette']" in r.output
    tight = shading.descriptor_bytes(descriptor) + 200  # not even the smallest grid fits
    with pytest.raises(magcam.pipeline.errors.PipelineError, match="does not fit"):
        shading.update_descriptor(descriptor, shading.calibrate(flats), tight)
