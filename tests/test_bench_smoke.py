"""The benchmark scripts keep running: a tiny run of each, checked for its own verification."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_link_benchmark_runs_and_verifies():
    out = subprocess.run(
        [sys.executable, str(REPO / "tools/bench/link.py"), "--mib", "1", "--size", "320x240", "--frames", "1",
         "--repeat", "1", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["decoder"]["verified"]["chunks"] == report["decoder"]["chunks"]
    assert report["decoder"]["decode_mbps_wire"] > 0


def test_firmware_benchmark_runs_in_micropython_and_verifies():
    out = subprocess.run(
        [sys.executable, str(REPO / "tools/bench/firmware.py"), "--transitions", "20000", "--repeat", "1",
         "--no-bisect", "--json"],
        capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["micropython"].startswith("micropython")
    assert all(run["micropython"]["verified"] for run in report["decoder"])
    assert report["heap"]["budget_ok"]


def test_isp_benchmark_runs_every_engine_on_a_small_dng():
    out = subprocess.run([sys.executable, str(REPO / "tools/bench/isp.py"), "--sizes", "2", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["rows"]
    assert [r["engine"] for r in rows] == ["magcam", "magcam-fast", "linear", "ahd", "aahd"]
    assert all(r["cpsnr_db"] > 25 and r["seconds"] > 0 and r["rss_mb"] > 0 for r in rows)
    cpsnr = {r["engine"]: r["cpsnr_db"] for r in rows}
    assert cpsnr["magcam"] > cpsnr["magcam-fast"] > cpsnr["linear"]  # RIAS > Malvar > bilinear
    assert next(r for r in rows if r["engine"] == "ahd")["vs_ahd"] == 1.0


def test_defects_benchmark_keeps_detail_and_finds_defects():
    out = subprocess.run([sys.executable, str(REPO / "tools/bench/defects.py"), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for row in report["chart"]:  # measured: 138-198 -> 3-7 chart pixels taken for defects
        assert row["with_check"] * 10 < row["same_colour_only"]
    k = report["kodak"]  # measured: 21 432 -> 1 908 pixels of detail; 25 of 945 defects kept
    assert k["detail_lost_with_check"] * 5 < k["detail_lost_same_colour_only"]
    assert k["injected_found_by_same_colour_test"] > 500
    assert k["of_those_kept_by_check"] < 0.05 * k["injected_found_by_same_colour_test"]


def test_merge_benchmark_runs_and_gains_on_a_small_burst():
    out = subprocess.run([sys.executable, str(REPO / "tools/bench/merge.py"), "--quick", "--iso", "1600", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["frames_n"] == 4 and report["merge_s"] > 0 and report["rss_mb"] > 0
    assert report["psnr_gain_db"] > 1.0 and report["align_error_px"] < 0.5
    assert report["object_psnr_merged_db"] > report["object_psnr_single_db"]  # the moving square left no ghost
