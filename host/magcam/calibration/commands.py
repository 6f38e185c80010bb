"""``magcam calibrate color`` and ``magcam calibrate shading`` (attached to the ``calibrate``
group in magcam.cli). Heavy imports happen inside the commands, so ``magcam --help`` stays fast.

    magcam calibrate color --port auto                      # capture the chart, fit, store on the module
    magcam calibrate color --corners 215,162,829,195,807,604,194,571 --dry-run --json
    magcam calibrate color --from chart.dng -o calibrated.json [--descriptor base.json]
    magcam calibrate shading --port auto --frames 8 --dark  # flat fields + a dark frame, store
    magcam calibrate shading --flat f1.dng --flat f2.dng --dark dark.dng -o calibrated.json
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from magcam.link import LinkError
from magcam.report import Reporter

_PORT_HELP = "Serial device of the module (e.g. /dev/ttyACM0), or auto."


def _load_descriptor(path: Path | None) -> dict:
    from magcam.sim.runner import DEFAULT_DESCRIPTOR

    path = path or DEFAULT_DESCRIPTOR
    try:
        d = json.loads(Path(path).read_text())
    except OSError as e:
        raise click.BadParameter(f"{path}: {e.strerror or e}", param_hint="--descriptor")
    except ValueError as e:
        raise click.BadParameter(f"{path}: not JSON ({e})", param_hint="--descriptor")
    if not isinstance(d, dict) or "color" not in d:
        raise click.BadParameter(f"{path}: not a module descriptor (no 'color' section)", param_hint="--descriptor")
    return d


@contextmanager
def _exit_on_failure(out: Reporter):
    """A capture, fit or store that fails says why on one line and exits 1 (no traceback)."""
    from magcam.pipeline.errors import PipelineError

    try:
        yield
    except (PipelineError, LinkError, OSError, ValueError) as e:
        out.error(str(e))
        sys.exit(1)


def _stored_text(stored: str | None, dry_run: bool) -> str:
    return f"on the module at {stored}" if stored else ("no (--dry-run)" if dry_run else "no")


def _finish(out: Reporter, res, new: dict, out_path: Path | None, stored: str | None) -> dict:
    """Warnings, the descriptor file if asked for (exit 1 if it cannot be written), and the
    summary every calibrate command reports: the fit's figures and where the result went."""
    for note in res.warnings:
        out.info(f"warning: {note}")
    if out_path is not None:
        try:
            _write_json(out_path, new)
        except OSError as e:
            out.error(f"cannot write {out_path}: {e.strerror or e}")
            sys.exit(1)
    summary = res.summary()
    summary["stored_on"] = stored
    summary["descriptor_file"] = None if out_path is None else str(out_path)
    return summary


def _check_out(out_path: Path | None) -> None:
    """Say now, before anything is captured or stored on the module, that ``-o`` cannot be
    written (it used to be found out after the module had the new calibration)."""
    from magcam.atomic import output_problem

    why = None if out_path is None else output_problem(out_path)
    if why is not None:
        raise click.BadParameter(f"{out_path}: {why}", param_hint="-o")


def _write_json(path: Path, obj: dict) -> None:
    from magcam.atomic import write_bytes_atomic

    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def _parse_corners(text: str | None):
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != 8:
        raise click.BadParameter(f"{text!r}: expected 8 numbers x,y,x,y,x,y,x,y (frame pixels)",
                                 param_hint="--corners")
    return [vals[i : i + 2] for i in range(0, 8, 2)]


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected WIDTHxHEIGHT, e.g. 1024x768", param_hint="--size")
    return w, h


def _check_fit(res, source: str) -> None:
    from magcam.calibration.color import MAX_MEAN_DE
    from magcam.pipeline.errors import PipelineError

    if res.after.mean > MAX_MEAN_DE:
        raise PipelineError(f"{source}: the fit is poor (mean dE2000 {res.after.mean:.1f} > {MAX_MEAN_DE}): not stored; check "
                            "the corners and light the chart evenly with daylight (--dry-run shows the figures)")


def _color_table(out: Reporter, res) -> None:
    from magcam.calibration.colorchecker import NAMES

    out._line(f"{'#':>2} {'patch':<14} {'before':>7} {'after':>7}")
    for i, name in enumerate(NAMES):
        b = "-" if res.before is None else f"{res.before.per_patch[i]:7.2f}"
        mark = "  clipped" if res.patches.clipped[i] else ""
        out._line(f"{i + 1:>2} {name:<14} {b:>7} {res.after.per_patch[i]:7.2f}{mark}")


@click.command("color")
@click.option("--port", "-p", default="auto", show_default=True, help=_PORT_HELP)
@click.option("--from", "from_file", type=click.Path(path_type=Path), help="Calibrate from this DNG / RAW of the "
              "chart instead of capturing (needs -o or --dry-run).")
@click.option("--corners", metavar="X,Y,X,Y,X,Y,X,Y", help="Outer corners of the patch grid in frame pixels: "
              "dark skin, bluish green, black, white corner (default: find the chart).")
@click.option("--descriptor", "descriptor_path", type=click.Path(path_type=Path),
              help="With --from: the descriptor to update (default: the factory one).")
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the calibrated descriptor to this JSON file.")
@click.option("--size", default="1024x768", show_default=True, help="Capture size.")
@click.option("--exposure-us", type=int, default=10000, show_default=True, help="First exposure to try.")
@click.option("--gain", type=float, default=1.0, show_default=True, help="Analog gain.")
@click.option("--dry-run", is_flag=True, help="Fit and report, but do not store anything on the module.")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per line, for scripts.")
def color_cmd(port, from_file, corners, descriptor_path, out_path, size, exposure_us, gain, dry_run, json_mode):
    """Fit the colour matrix from a shot of a ColorChecker (daylight) and store it on the module.

    Prints CIEDE2000 per patch before (the module's current matrix) and after, mean and max.
    """
    from magcam.calibration import color as cal
    from magcam.calibration import device
    from magcam.pipeline import color as pipeline_color

    out = Reporter(json_mode)
    pts = _parse_corners(corners)
    if from_file is not None and out_path is None and not dry_run:
        raise click.UsageError("--from needs -o FILE.json (where the calibrated descriptor goes) or --dry-run")
    _check_out(out_path)
    stored = None
    with _exit_on_failure(out):
        if from_file is not None:
            from magcam import rawio

            base = _load_descriptor(descriptor_path)
            out.info(f"reading {from_file}")
            raw = rawio.read(from_file)
            # "Before" is the matrix the file carries, or the given descriptor's.
            before = None if descriptor_path is None else pipeline_color.xyz_to_camera(base)
            res = cal.calibrate(raw, pts, descriptor_matrix=before)
            new = cal.update_descriptor(base, res)
            if not dry_run:
                _check_fit(res, str(from_file))
        else:
            from magcam.camera import connect

            w, h = _size(size)
            with connect(port) as cam:
                out.info(f"capturing the chart on {cam.port}")
                raw, found = device.capture_chart(cam, w, h, pts, exposure_us, gain, progress=out.info)
                res = cal.calibrate(raw, found)
                new = cal.update_descriptor(cam.descriptor, res)
                if not dry_run:
                    _check_fit(res, cam.port)
                    device.store(cam, new)
                    stored = cam.port
    summary = _finish(out, res, new, out_path, stored)
    if json_mode:
        out.result(summary)
        return
    _color_table(out, res)
    rp = res.root_polynomial
    out.result({
        "dE2000 before": "-" if res.before is None else f"mean {res.before.mean:.2f}, max {res.before.max:.2f}",
        "dE2000 after": f"mean {res.after.mean:.2f}, max {res.after.max:.2f}",
        "root-polynomial (not stored)": f"mean {rp.mean:.2f}, max {rp.max:.2f}",
        "color_matrix_1": " ".join(f"{v:.4f}" for v in res.xyz_to_camera.ravel()),
        "stored": _stored_text(stored, dry_run),
        **({"descriptor": str(out_path)} if out_path else {}),
    })


@click.command("shading")
@click.option("--port", "-p", default="auto", show_default=True, help=_PORT_HELP)
@click.option("--frames", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Flat-field frames to capture and average.")
@click.option("--dark", "dark", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
              help="Subtract a dark frame: alone, capture one (shortest exposure, or after --cover); with "
                   "--flat, a DNG/RAW dark frame file.")
@click.option("--dark-frames", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Dark frames to capture and average (with --dark).")
@click.option("--cover", is_flag=True, help="Ask to cover the lens before the dark frames (then they use the "
              "flat fields' exposure).")
@click.option("--flat", "flat_files", multiple=True, type=click.Path(path_type=Path),
              help="Calibrate from these flat-field DNG/RAW files (repeat the option) instead of capturing.")
@click.option("--descriptor", "descriptor_path", type=click.Path(path_type=Path),
              help="With --flat: the descriptor to update (default: the factory one).")
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the calibrated descriptor to this JSON file.")
@click.option("--size", default="1024x768", show_default=True, help="Capture size (the map is relative: it "
              "applies at every size).")
@click.option("--exposure-us", type=int, help="Flat-field exposure (default: found by trial frames).")
@click.option("--gain", type=float, default=1.0, show_default=True, help="Analog gain.")
@click.option("--grid", metavar="WxH", help="Gain grid size (default: the finest that fits the module).")
@click.option("--max-bytes", type=int, help="With --flat: the descriptor size limit (default: the firmware's).")
@click.option("--dry-run", is_flag=True, help="Fit and report, but do not store anything on the module.")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per line, for scripts.")
def shading_cmd(port, frames, dark, dark_frames, cover, flat_files, descriptor_path, out_path, size, exposure_us,
                gain, grid, max_bytes, dry_run, json_mode):
    """Measure lens shading from flat fields (a diffuser over the lens, or an evenly lit white
    card filling the view) and store per-CFA-site gain grids on the module."""
    import numpy as np

    from magcam.calibration import device, shading
    from magcam.pipeline.shading import GainMap

    out = Reporter(json_mode)
    grid_wh = _size(grid) if grid else None
    if grid_wh and not (2 <= grid_wh[0] <= 64 and 2 <= grid_wh[1] <= 64):
        raise click.BadParameter(f"{grid}: each side must be 2..64", param_hint="--grid")
    if flat_files and out_path is None and not dry_run:
        raise click.UsageError("--flat needs -o FILE.json (where the calibrated descriptor goes) or --dry-run")
    if not flat_files and dark not in (None, "-"):
        raise click.UsageError("--dark FILE goes with --flat FILES; to capture a dark frame give --dark alone")
    _check_out(out_path)
    stored, verify = None, None
    with _exit_on_failure(out):
        if flat_files:
            from magcam import rawio

            base = _load_descriptor(descriptor_path)
            flats = []
            for i, f in enumerate(flat_files):
                out.info(f"reading flat field {i + 1}/{len(flat_files)}: {f}")
                flats.append(rawio.read(f))
            darks = [rawio.read(dark)] if dark not in (None, "-") else []
            res = shading.calibrate(flats, darks or None)
            new = shading.update_descriptor(base, res, max_bytes or device.DEFAULT_MAX_BYTES, grid_wh,
                                            reserve=device.RESERVE_BYTES)
        else:
            from magcam.camera import connect

            w, h = _size(size)

            def ask_cover() -> None:
                click.prompt("cover the lens (cap on, lights off), then press Enter", default="",
                             show_default=False, prompt_suffix=" ", err=True)

            with connect(port) as cam:
                out.info(f"flat-field frames on {cam.port}")
                flats, darks, exp = device.capture_flats(
                    cam, w, h, frames, dark_frames if dark else 0, exposure_us, gain,
                    cover=ask_cover if cover else None, progress=out.info)
                res = shading.calibrate(flats, darks or None)
                new = shading.update_descriptor(cam.descriptor, res, device.max_descriptor_bytes(cam), grid_wh,
                                                reserve=device.RESERVE_BYTES)
                # Check on a frame the fit has not seen: how flat the pipeline's correction makes it.
                if not cover:
                    check = device.capture_raw(cam, w, h, exp, gain)
                    cfa = shading.normalized_cfa(check, darks)
                    gains = GainMap.from_grids(new["lens_shading"]["grids"]).region_gains(0, 0, *cfa.shape, *cfa.shape)
                    verify = {"flatness_before_pct": round(shading.flatness_pct(cfa), 2),
                              "flatness_after_pct": round(shading.flatness_pct(cfa * gains), 2)}
                if not dry_run:
                    device.store(cam, new)
                    stored = cam.port
    summary = _finish(out, res, new, out_path, stored)
    summary.update(verify or {})
    summary["descriptor_bytes"] = shading.descriptor_bytes(new)
    if json_mode:
        out.result(summary)
        return
    fall = ", ".join(f"{k} {v:.1f} %" for k, v in summary["falloff_pct"].items())
    out.result({
        "fall-off (centre to corner)": fall,
        "grid": f"{summary['grid'][0]}x{summary['grid'][1]} per CFA site, largest gain {float(np.max(res.grids)):.3f}",
        "fit residual": f"{res.residual_pct:.3f} %",
        **({"flatness of a new frame": f"{verify['flatness_before_pct']:.2f} % -> {verify['flatness_after_pct']:.2f} %"}
           if verify else {}),
        "descriptor": f"{summary['descriptor_bytes']} bytes",
        "stored": _stored_text(stored, dry_run),
        **({"file": str(out_path)} if out_path else {}),
    })
