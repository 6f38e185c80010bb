"""Focus calibration: lens position -> focus distance, measured with AF on targets at known distances.

For each known distance the user places a target (a page of text, a chart) there and runs AF;
the AF peak is where that distance is in focus. The thin-lens model says the lens extension
``e = f^2 / (s - f)`` is linear in the lens position, ``e = mm_per_step * (p - p_inf)``, so a
least-squares line through the points gives ``p_inf`` (the position focused at infinity) and
``mm_per_step``; one point alone fixes ``p_inf`` at ``position_min`` (the factory assumption).

The result goes into the descriptor as ``lens.focus_table`` (written to the module with
``cam.write_descriptor``), small enough for the firmware's one-message descriptor cap::

    {"model": "thin_lens", "p_inf": 0.4, "mm_per_step": 0.004619, "rms_steps": 0.2,
     "points": [[570.1, 0.5], [274.5, 1.0], [89.3, 3.0]],          # [AF position, metres]
     "table": [[0, null], [125, 2.13], ...]}                      # [position, metres]; null: infinity

:func:`magcam.optics.subject_distance_m` reads it back (DNGs carry it as EXIF SubjectDistance).

Usage::

    from magcam.focus_calibration import calibrate_focus
    with magcam.connect(port) as cam:
        table = calibrate_focus(cam, [0.5, 1.0, 3.0], place=lambda d: input(f"target at {d} m, Enter"))
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
from magcam_fw import descriptor as fw_descriptor

from magcam.optics import distance_for_extension, extension_for_distance
from magcam.pipeline.errors import PipelineError

TABLE_ROWS = 9


def fit_thin_lens(points, focal_mm: float, position_min: float) -> tuple[float, float, float]:
    """(p_inf, mm_per_step, rms residual in lens steps) through [(position, metres), ...]."""
    if not points:
        raise PipelineError("focus calibration needs at least one measured distance")
    p = np.array([float(q) for q, _ in points])
    e = np.array([extension_for_distance(focal_mm, float(s)) for _, s in points])
    if len(points) == 1 or np.ptp(p) < 1e-9:
        p_inf = float(position_min)
        k = float(np.mean(e / np.maximum(p - p_inf, 1e-9)))
    else:
        k, b = np.polyfit(p, e, 1)
        k, p_inf = float(k), float(-b / k) if k else float(position_min)
    if not k > 0:
        raise PipelineError("focus calibration: nearer targets must focus at larger lens positions "
                            f"(points {points} give a slope of {k:.3g} mm/step)")
    rms = float(np.sqrt(np.mean(_residuals(points, focal_mm, p_inf, k) ** 2)))
    return p_inf, k, rms


def _residuals(points, focal_mm: float, p_inf: float, k: float) -> np.ndarray:
    """Each point's AF position minus the fit's position for its distance, in lens steps."""
    p = np.array([float(q) for q, _ in points])
    e = np.array([extension_for_distance(focal_mm, float(s)) for _, s in points])
    return p - (p_inf + e / k)


def depth_of_focus_steps(descriptor: dict, mm_per_step: float) -> float:
    """The lens's depth of focus, 2 N c with c two pixel pitches, in lens steps: a point further
    than this off the fit would blur its own target by more than two pixels."""
    from magcam.optics import LensModel

    lens = LensModel.from_descriptor(descriptor)
    pitch_mm = lens.sensor_width_mm / int(descriptor["sensor"]["width"])
    return 2 * lens.f_number * 2 * pitch_mm / mm_per_step


def check_consistent(points, descriptor: dict) -> None:
    """PipelineError when a point is further off the fit through all of them than the depth of
    focus (a target that was not at the stated distance). Two points always fit exactly."""
    if len(points) < 3:
        return
    focal = float(descriptor["lens"]["focal_mm"])
    p_inf, k, _ = fit_thin_lens(points, focal, int(descriptor["lens"]["position_min"]))
    off = np.abs(_residuals(points, focal, p_inf, k))
    worst = float(off.max())
    position, distance = points[int(off.argmax())]
    limit = depth_of_focus_steps(descriptor, k)
    if worst > limit:
        raise PipelineError(
            f"focus calibration: the point at {distance:g} m (AF at lens {position:.1f}) is {worst:.1f} steps "
            f"off the fit through all {len(points)} points, more than the lens's depth of focus ({limit:.1f} "
            f"steps): was the target really at {distance:g} m? Nothing stored; measure that distance again, "
            "or use --distances to start afresh")


def focus_table(points, descriptor: dict) -> dict:
    """The ``lens.focus_table`` entry for measured [(position, metres), ...]."""
    lens = descriptor["lens"]
    focal, lo, hi = float(lens["focal_mm"]), int(lens["position_min"]), int(lens["position_max"])
    p_inf, k, rms = fit_thin_lens(points, focal, lo)
    rows = []
    for pos in np.linspace(lo, hi, TABLE_ROWS):
        d = distance_for_extension(focal, (pos - p_inf) * k)
        rows.append([int(round(pos)), None if math.isinf(d) else round(d, 4)])
    return {"model": "thin_lens", "p_inf": round(p_inf, 3), "mm_per_step": round(k, 9), "rms_steps": round(rms, 3),
            "points": [[round(float(q), 2), float(s)] for q, s in sorted(points, key=lambda x: x[1])],
            "table": rows}


def with_focus_table(descriptor: dict, points, max_bytes: int | None = None) -> dict:
    """A copy of ``descriptor`` carrying the fitted table; checked as the firmware will check it."""
    new = copy.deepcopy(descriptor)
    new["lens"]["focus_table"] = focus_table(points, descriptor)
    text = json.dumps(new, separators=(",", ":"))
    why = fw_descriptor.check(text)
    if why:
        raise PipelineError(f"the calibrated descriptor would be refused by the module: {why}")
    if max_bytes is not None and len(text) > max_bytes:
        raise PipelineError(f"the calibrated descriptor is {len(text)} bytes, over the module's {max_bytes}")
    return new


def stored_points(descriptor: dict) -> list[tuple[float, float]]:
    """The (position, metres) points of an earlier calibration on the module, if any."""
    table = descriptor.get("lens", {}).get("focus_table")
    try:
        return [(float(p), float(s)) for p, s in table["points"]]
    except (TypeError, KeyError, ValueError):
        return []


def merge_point(points, position: float, distance_m: float) -> list[tuple[float, float]]:
    """Points with a new measurement; it replaces an older one at the same distance."""
    return [(p, s) for p, s in points if not math.isclose(s, distance_m, rel_tol=1e-6)] + [(position, distance_m)]


def calibrate_focus(cam, distances, *, place=None, keep=False, on_af=None, **af_kw) -> dict:
    """Run AF on a target at each distance (``place(d)`` is called first: prompt a person, or
    move the simulator's scene), fit, and write ``lens.focus_table`` to the module.

    ``keep=True`` adds to the points already stored on the module (one distance per run);
    ``on_af(distance, AfResult)`` reports each AF. Returns the table written."""
    from magcam.autofocus import autofocus

    for d in distances:
        if not (isinstance(d, (int, float)) and math.isfinite(d) and d * 1000 > float(cam.descriptor["lens"]["focal_mm"])):
            raise PipelineError(f"focus calibration distance {d!r} m: need a finite distance beyond the focal length")
        near = cam.descriptor["lens"].get("min_focus_m")
        if isinstance(near, (int, float)) and d < near:  # AF would stop at the end of travel, not at focus
            raise PipelineError(f"focus calibration distance {d:g} m is closer than the lens focuses "
                                f"(lens.min_focus_m {near:g} m): nothing measured or stored")
    points = stored_points(cam.descriptor) if keep else []
    for d in distances:
        if place:
            place(d)
        af = autofocus(cam, **af_kw)
        if on_af:
            on_af(d, af)
        points = merge_point(points, af.peak, float(d))
    check_consistent(points, cam.descriptor)
    new = with_focus_table(cam.descriptor, points, cam.hello.get("max_payload"))
    cam.write_descriptor(new)
    return new["lens"]["focus_table"]
