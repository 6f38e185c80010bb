"""Focus assist, host-driven contrast AF and focus calibration: measures and peaking on known blur,
the simulator's thin-lens defocus, AF end to end against the real firmware over a pty (three
scene distances, from both ends of the lens range, sensor noise on), the monitor's focus meter,
and focus calibration written to the module and into the next DNG."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import cv2
import magcam
import numpy as np
import pytest
from conftest import DESCRIPTOR_PATH, shared_file, tool
from magcam.focus_assist import (
    focus_measure,
    peaking_mask,
    peaking_overlay,
    tenengrad,
    variance_of_laplacian,
)
from magcam.frame import RawFrame
from magcam.optics import LensModel, subject_distance_m
from magcam.sim import Simulator
from magcam.sim.sensor import SensorModel

MAGCAM = [sys.executable, "-m", "magcam.cli"]
DESCRIPTOR = json.loads(DESCRIPTOR_PATH.read_text())
LENS = LensModel.from_descriptor(DESCRIPTOR)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """kodim05 as linear-ish grey float32 (the measures only care about structure)."""
    img = cv2.imread(str(shared_file("kodak24/kodim05.png")), cv2.IMREAD_GRAYSCALE)
    return img.astype(np.float32) * 8 + 50


def blurred(img, sigma):
    return img if sigma == 0 else cv2.GaussianBlur(img, (0, 0), sigma)


# ---- measures -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [tenengrad, variance_of_laplacian])
def test_measures_fall_monotonically_with_known_blur(photo, fn):
    values = [fn(blurred(photo, s)) for s in (0, 0.5, 1, 2, 4)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert fn(photo * 3) == pytest.approx(fn(photo), rel=1e-4)  # exposure does not change sharpness


def test_tenengrad_is_more_robust_to_noise_than_the_laplacian(photo):
    rng = np.random.default_rng(1)
    noisy = photo + rng.normal(0, 40, photo.shape).astype(np.float32)  # about 2 % of the mean level
    t_bias = tenengrad(noisy) / tenengrad(photo) - 1
    l_bias = variance_of_laplacian(noisy) / variance_of_laplacian(photo) - 1
    assert 0 < t_bias < l_bias / 2
    # With the noise on, Tenengrad still ranks the blur levels correctly.
    noisy_curve = [tenengrad(blurred(photo, s) + rng.normal(0, 40, photo.shape).astype(np.float32))
                   for s in (0, 0.7, 1.5, 3)]
    assert all(a > b for a, b in zip(noisy_curve, noisy_curve[1:])), noisy_curve


def test_peaking_marks_the_edges_of_a_sharp_image_not_of_a_blurred_one(photo):
    sharp, soft = peaking_mask(photo), peaking_mask(blurred(photo, 3))
    assert sharp.mean() > 0.02 and soft.mean() < sharp.mean() / 10
    # Marked pixels sit on strong gradients: their local contrast is far above the image's median.
    grad = cv2.magnitude(cv2.Sobel(photo, cv2.CV_32F, 1, 0), cv2.Sobel(photo, cv2.CV_32F, 0, 1))
    assert np.median(grad[sharp]) > 5 * np.median(grad)
    rgb = np.full(photo.shape + (3,), 90, np.uint8)
    over = peaking_overlay(rgb, sharp)
    assert (over[sharp] == (255, 0, 0)).all() and (over[~sharp] == 90).all()


# ---- the simulator's optics ----------------------------------------------------------------------
def test_thin_lens_model_round_trips_and_blur_is_zero_only_at_focus():
    assert LENS.focus_distance_m(LENS.position_min) == float("inf")
    assert LENS.focus_distance_m(LENS.position_max) == pytest.approx(0.3)
    for d in (0.5, 1.0, 3.0):
        p = LENS.position_for_distance(d)
        assert LENS.focus_distance_m(p) == pytest.approx(d)
        assert LENS.blur_mm(p, d) == pytest.approx(0, abs=1e-12)
        # c = f^2 / (N (s_f - f)) * |s - s_f| / s, the textbook form, at another position
        s_f = LENS.focus_distance_m(p + 100) * 1000
        expected = 35.0**2 / (1.4 * (s_f - 35.0)) * abs(d * 1000 - s_f) / (d * 1000)
        assert LENS.blur_mm(p + 100, d) == pytest.approx(expected)


def test_sensor_blur_grows_with_defocus_and_is_zero_at_focus():
    d = LENS.focus_distance_m(300)  # in focus at exactly lens position 300
    sensor = SensorModel(DESCRIPTOR, seed=3, scene_distance_m=d)
    sigmas = [sensor.blur_sigma_px(320, 300 + off) for off in (0, 5, 20, 80, 300)]
    assert sigmas[0] < 1e-9 and all(a < b for a, b in zip(sigmas, sigmas[1:]))
    assert sensor.blur_sigma_px(320, 280) == pytest.approx(sigmas[2], rel=1e-6)  # symmetric
    plain = SensorModel(DESCRIPTOR, seed=3).render(320, 240, 10000, 1.0, 7, 300)
    at_focus = sensor.render(320, 240, 10000, 1.0, 7, 300)
    assert np.abs(at_focus.astype(int) - plain).max() <= 1  # same noise, no blur
    sharpness = [focus_measure(RawFrame(sensor.render(320, 240, 10000, 1.0, 7, 300 + off), 7, black_level=256))
                 for off in (0, 10, 40, 160)]
    assert all(a > b for a, b in zip(sharpness, sharpness[1:])), sharpness


# ---- autofocus end to end ------------------------------------------------------------------------
@pytest.mark.parametrize("distance", [0.5, 1.0, 3.0])
def test_autofocus_ends_within_one_step_from_both_ends_with_noise(distance):
    truth = LENS.position_for_distance(distance)
    with Simulator(focus_distance=distance, seed=11) as sim:
        with magcam.connect(sim.port) as cam:
            for end in (LENS.position_min, LENS.position_max):
                assert cam.set_lens_position(end) == end
                af = cam.autofocus(exposure_us=2000, analog_gain=4.0)  # short and amplified: noisy frames
                assert abs(af.position - truth) <= 1, (distance, end, af.position, truth)
                assert cam.capture_raw(64, 48).lens_position == af.position  # the lens was left there
                assert af.frames == len(af.curve) < 70 and af.seconds < 10
                # the curve really peaks there: far points are much softer
                far = [m for p, m in af.curve if abs(p - truth) > 200]
                assert max(far) < 0.5 * af.measure
        if distance == 1.0:  # the command line, with its options, on the same module
            run = subprocess.run([*MAGCAM, "focus", "--sweep", "--port", sim.port, "--json", "--method", "laplacian",
                                  "--roi", "0.3,0.3,0.4,0.4", "--gain", "2"], capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stderr
            lines = [json.loads(line) for line in run.stdout.splitlines()]
            result = lines[-1]
            assert result["type"] == "result" and abs(result["position"] - truth) <= 1
            assert result["method"] == "laplacian" and result["roi"] == [0.3, 0.3, 0.4, 0.4]
            assert len([e for e in lines if e["type"] == "af"]) == result["frames"] == len(result["curve"])


def test_autofocus_on_a_featureless_scene_fails_and_puts_the_lens_back(tmp_path):
    from magcam.autofocus import MIN_CONTRAST, AutofocusFailed

    with Simulator(scene="flat", focus_distance=1.0, seed=11) as sim:
        with magcam.connect(sim.port) as cam:
            assert cam.set_lens_position(333) == 333
            with pytest.raises(AutofocusFailed, match="nothing to focus on") as failed:
                cam.autofocus(exposure_us=2000, analog_gain=4.0)  # noise is all there is to measure
            af = failed.value.result
            assert 1.0 < af.contrast < MIN_CONTRAST and af.frames == len(af.curve) > 25
            assert af.position == 333 and cam.capture_raw(64, 48).lens_position == 333
        run = subprocess.run([*MAGCAM, "focus", "--sweep", "--port", sim.port], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 1 and "nothing to focus on" in run.stderr.splitlines()[-1], run.stderr
        assert "Traceback" not in run.stderr


def test_autofocus_refused_by_a_hot_module_leaves_the_lens_where_it_was(tmp_path):
    from magcam.link import CommandRejected

    scenario = tmp_path / "hot.jsonl"
    scenario.write_text('{"t": 0, "do": "temp", "c": 67}\n')  # thermally suspended, rail still on
    with Simulator(scenario=scenario, focus_distance=1.0) as sim, magcam.connect(sim.port) as cam:
        assert any(e["type"] == "thermal" and e["state"] == "suspended" for e in cam.events(timeout=3))
        assert cam.set_lens_position(444) == 444
        with pytest.raises(CommandRejected, match="too_hot: captures suspended"):
            cam.autofocus()
        assert cam.lens_position == 444  # before: left at the first sweep position (0)


# ---- the monitor's focus meter -------------------------------------------------------------------
def test_monitor_focus_meter_tracks_the_ring(tmp_path):
    distance = 1.0
    truth = LENS.position_for_distance(distance)
    scenario = tmp_path / "turn.jsonl"
    scenario.write_text('{"t": 100, "do": "turn", "steps": -420, "rate": 80}\n')  # lens 500 -> ~0, slowly
    port_file = tmp_path / "port"
    sim = subprocess.Popen([*MAGCAM, "sim", "--scenario", str(scenario), "--port-file", str(port_file),
                            "--focus-distance", str(distance)], stdout=subprocess.PIPE, text=True)
    try:
        port = sim.stdout.readline().strip()
        mon = subprocess.run([*MAGCAM, "monitor", "--port", port, "--json", "--focus", "--focus-fps", "15",
                              "--duration", "3.5"], capture_output=True, text=True, timeout=60)
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    assert mon.returncode == 0, mon.stderr
    events = [json.loads(line) for line in mon.stdout.splitlines()]
    focus = [e for e in events if e["type"] == "focus"]
    assert len(focus) >= 20 and len({e["lens"] for e in focus}) >= 10  # frames while the ring turned
    assert any(e["type"] == "encoder" for e in events)
    # Sharper whenever clearly nearer focus; the best frame is within a few steps of it.
    for a in focus:
        for b in focus:
            if abs(a["lens"] - truth) + 25 < abs(b["lens"] - truth):
                assert a["measure"] > b["measure"], (a, b)
    best = max(focus, key=lambda e: e["measure"])
    assert best["peak_lens"] == best["lens"] and abs(best["lens"] - truth) < 25
    assert focus[-1]["peak"] == pytest.approx(best["measure"])


# ---- focus calibration ----------------------------------------------------------------------------
def test_focus_calibration_is_stored_on_the_module_and_in_the_next_dng(tmp_path):
    flash = tmp_path / "flash"
    with Simulator(focus_distance=2.0, flash=flash, seed=5) as sim:
        # Against a simulator the command moves its scene to each distance (no prompt) ...
        run = subprocess.run([*MAGCAM, "calibrate", "focus", "--port", sim.port, "--distances", "0.5,1,3", "--json"],
                             capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
        assert run.returncode == 0, run.stderr
        assert sim.sensor.scene_distance_m == 3.0
        first = json.loads(run.stdout.splitlines()[-1])["focus_table"]
        assert [s for _, s in first["points"]] == [0.5, 1.0, 3.0]
        assert first["p_inf"] == pytest.approx(LENS.position_min, abs=1.0)
        assert first["mm_per_step"] == pytest.approx(LENS.mm_per_step, rel=0.01) and first["rms_steps"] < 1
        # ... and one more distance per run with --at (the target is there now): added to those stored.
        sim.sensor.scene_distance_m = 2.0
        run = subprocess.run([*MAGCAM, "calibrate", "focus", "--port", sim.port, "--at", "2", "--json"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        table = json.loads(run.stdout.splitlines()[-1])["focus_table"]
        assert [s for _, s in table["points"]] == [0.5, 1.0, 2.0, 3.0] and table["points"][:2] == first["points"][:2]
        assert table["mm_per_step"] == pytest.approx(LENS.mm_per_step, rel=0.01) and table["rms_steps"] < 1
        on_flash = json.loads((flash / "descriptor.json").read_text())
        assert on_flash["lens"]["focus_table"] == table
        # The target is really at 3 m, the user says 1.5: that point is ~90 steps off the fit
        # through the others (a fit of rms 18 steps was once stored without a word). Refused.
        sim.sensor.scene_distance_m = 3.0
        run = subprocess.run([*MAGCAM, "calibrate", "focus", "--port", sim.port, "--at", "1.5"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        assert re.search(r"the point at 1.5 m \(AF at lens 8\d\.\d\) is \d+\.\d steps off the fit through all 5 "
                         r"points, more than the lens's depth of focus \([34]\.\d steps\)", run.stderr), run.stderr
        assert json.loads((flash / "descriptor.json").read_text())["lens"]["focus_table"] == table
        # Nearer than the lens focuses: AF would end at the end-stop, and a 1-point fit to that
        # replaced the good table (it once did). Refused before anything is measured.
        before = (flash / "descriptor.json").read_bytes()
        run = subprocess.run([*MAGCAM, "calibrate", "focus", "--port", sim.port, "--distances", "0.1", "--yes"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 1 and "closer than the lens focuses" in run.stderr and "Traceback" not in run.stderr
        assert (flash / "descriptor.json").read_bytes() == before
        with magcam.connect(sim.port) as cam:
            assert cam.descriptor["lens"]["focus_table"] == table  # the module serves it
            sim.sensor.scene_distance_m = 1.0
            cam.set_lens_position(round(LENS.position_for_distance(1.0)))
            dng = cam.capture_dng(tmp_path / "after.dng", width=256, height=192)
        expected = subject_distance_m(cam.descriptor, round(LENS.position_for_distance(1.0)))
        assert expected == pytest.approx(1.0, rel=0.01)
        exif = json.loads(subprocess.run([tool("exiftool"), "-j", "-n", "-SubjectDistance", str(dng)],
                                         capture_output=True, text=True, check=True).stdout)[0]
        assert exif["SubjectDistance"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("args,names", [
    (["calibrate", "focus", "--distances", "0.5,x"], ["--distances"]),
    (["calibrate", "focus"], ["--distances", "--at"]),
    (["focus", "--sweep", "--roi", "0.5,0.5,0.9,0.2"], ["--roi", "inside the frame"]),
    (["monitor", "--focus", "--focus-size", "big"], ["--focus-size"]),
    # sizes the module refuses were a traceback from start_stream, after the port was opened
    (["monitor", "--focus", "--focus-size", "7x7"], ["--focus-size", "7x7: size out of range"]),
    (["monitor", "--focus", "--focus-size", "16384x16384"], ["--focus-size", "frame too large"]),
    (["monitor", "--focus", "--focus-size", "321x240"], ["--focus-size", "must be even"]),
    # each option answers for itself (a bad --roi was blamed on --focus-size)
    (["monitor", "--focus", "--roi", "abc"], ["--roi", "four numbers"]),
    (["monitor", "--focus", "--roi", "1,1,1,1"], ["--roi", "inside the frame"]),
    # nan, inf and -5 were tracebacks; 0 streamed nothing without a word
    *[(["monitor", "--focus", "--focus-fps", v], ["--focus-fps", "0.1..60"]) for v in ("nan", "inf", "-5", "0")],
])
def test_focus_commands_reject_bad_input_clearly(args, names):
    from click.testing import CliRunner
    from magcam.cli import main

    run = CliRunner().invoke(main, [*args, "--port", "/nonexistent"])
    assert run.exit_code == 2 and all(n in run.output for n in names), run.output  # a usage error, no traceback


def test_monitor_without_a_board_for_auto_is_one_clear_error(tmp_path, monkeypatch):
    """`--port auto` (monitor's default) with no board: a traceback once, with no JSON error."""
    from click.testing import CliRunner
    from magcam.cli import main

    monkeypatch.setenv("MAGCAM_SIM_REGISTRY", str(tmp_path / "no-simulators"))
    monkeypatch.setattr("magcam.discovery.list_ports.comports", lambda: [])  # no USB boards either
    run = CliRunner().invoke(main, ["monitor", "--json"])
    assert run.exit_code == 1 and isinstance(run.exception, SystemExit), run.output  # not a PortError
    assert json.loads(run.stdout.splitlines()[-1]) == {
        "type": "error",
        "message": "no magcam board found: plug one in (see `magcam ports`) or give its port (--port on the command line)"}


def test_thin_lens_fit_recovers_a_known_lens_and_respects_the_descriptor_cap():
    from magcam.focus_calibration import fit_thin_lens, with_focus_table
    from magcam.pipeline.errors import PipelineError

    shifted = [(LENS.position_for_distance(d) + 7.5, d) for d in (0.4, 0.8, 2.0, 6.0)]  # p_inf moved to 7.5
    p_inf, k, rms = fit_thin_lens(shifted, 35.0, 0)
    assert p_inf == pytest.approx(7.5, abs=1e-6) and k == pytest.approx(LENS.mm_per_step) and rms < 1e-6
    one = fit_thin_lens([(LENS.position_for_distance(1.0), 1.0)], 35.0, 0)  # one point: p_inf = position_min
    assert one[0] == 0 and one[1] == pytest.approx(LENS.mm_per_step)
    with pytest.raises(PipelineError, match="nearer targets"):
        fit_thin_lens([(100, 0.5), (300, 3.0)], 35.0, 0)
    new = with_focus_table(DESCRIPTOR, shifted, max_bytes=4096)
    assert subject_distance_m(new, round(shifted[1][0])) == pytest.approx(0.8, rel=0.01)
    assert subject_distance_m(new, 0) == float("inf") and subject_distance_m(DESCRIPTOR, 500) is None
    with pytest.raises(PipelineError, match="over the module"):
        with_focus_table(DESCRIPTOR, shifted, max_bytes=600)


def test_dashboard_shows_the_focus_meter():
    import io

    from magcam.dashboard import Dashboard, DashboardView
    from magcam.focus_assist import FocusMeter
    from rich.console import Console

    meter = FocusMeter()
    sensor = SensorModel(DESCRIPTOR, seed=1, scene_distance_m=1.0)
    for i, lens in enumerate((200, 275, 350), 1):  # 275 is in focus
        ev = meter.event(RawFrame(sensor.render(320, 240, 10000, 1.0, i, lens), i, black_level=256, lens_position=lens))
    assert ev["peak_lens"] == 275 and 0 < ev["relative"] < 0.9
    dash = Dashboard(descriptor=DESCRIPTOR)
    dash.update(ev)
    out = io.StringIO()
    Console(file=out, width=140, color_system=None).print(DashboardView(dash))
    text = out.getvalue()
    assert "focus" in text and f"{ev['relative'] * 100:3.0f}%" in text and "@ 275)" in text
