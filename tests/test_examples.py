"""The examples run as a user would run them: against a simulated module found by --port auto."""

from __future__ import annotations

import subprocess
import sys

import pytest
import rawpy

from conftest import REPO
from magcam.sim import Simulator


@pytest.fixture
def sim(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGCAM_SIM_REGISTRY", str(tmp_path / "registry"))  # auto finds only this one
    with Simulator() as s:
        yield s


def run(name, *args, cwd):
    out = subprocess.run([sys.executable, str(REPO / "examples" / name), *args], capture_output=True, text=True,
                         timeout=120, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_capture_burst_example(sim, tmp_path):
    run("capture_burst.py", "--count", "3", "--out", "b", cwd=tmp_path)
    files = sorted((tmp_path / "b").iterdir())
    assert [f.name for f in files] == ["burst_000.dng", "burst_001.dng", "burst_002.dng"]
    with rawpy.imread(str(files[0])) as raw:
        assert raw.raw_image.shape == (768, 1024)


def test_bracket_example(sim, tmp_path):
    out = run("bracket_hdr.py", "--out", "h", cwd=tmp_path)
    assert "2500 us" in out and "10000 us" in out and "40000 us" in out
    names = sorted(p.name for p in (tmp_path / "h").iterdir())
    assert names == ["bracket_+0ev.dng", "bracket_+2ev.dng", "bracket_-2ev.dng", "hdr.dng", "hdr.jpg"]
    assert "reference bracket_+0ev.dng" in out  # the middle exposure, by default
    with rawpy.imread(str(tmp_path / "h" / "hdr.dng")) as raw:
        assert raw.raw_image.shape == (768, 1024)


def test_autofocus_example(tmp_path, monkeypatch):
    from magcam.optics import LensModel

    monkeypatch.setenv("MAGCAM_SIM_REGISTRY", str(tmp_path / "registry"))
    with Simulator(focus_distance=1.5) as s:
        out = run("autofocus.py", "--out", "sharp.dng", cwd=tmp_path)
        truth = LensModel.from_descriptor(s.descriptor).position_for_distance(1.5)
    focused = int(out.split("focused at lens position ")[1].split()[0])
    assert abs(focused - truth) <= 1, out
    assert f"sharp.dng at lens {focused}" in out
    with rawpy.imread(str(tmp_path / "sharp.dng")) as raw:
        assert raw.raw_image.shape == (768, 1024)


def test_watch_ring_example(sim, tmp_path):
    out = run("watch_ring.py", "--seconds", "0.5", cwd=tmp_path)
    assert "serial SIM-000001" in out and "lens moved to 250" in out
