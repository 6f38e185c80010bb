"""Defect correction: real detail taken for defects, and defects found, with and without the check
that keeps candidates whose neighbours share the deviation (``defects.correct``'s ``support``).

    python tools/bench/defects.py [--support 0.35] [--json]

- chart: the ISP benchmark's chart (tools/bench/isp.py's scene) rendered at 2 MP through the
  simulator's sensor model, noise-free and at gain 1, 4 and 16: every pixel the correction
  changes is real detail taken for a defect (the chart has none);
- kodak: the 24 Kodak images as linear RGGB mosaics (sRGB 8-bit ^2.2 x 0.8) with shot and read
  noise (sigma^2 = 5e-5 level + 1e-6), then with 60 hot (1.0) and dead (0.0) pixels injected at
  random, at least 5 px apart: pixels changed that were not injected are detail lost; of the
  injected pixels that the same-colour test finds, how many the check keeps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from demosaic import load_rgb, mosaic_rggb  # the sibling benchmark (this script's directory is on sys.path)

REPO = Path(__file__).resolve().parents[2]
KODAK = REPO.parent / "shared" / "data" / "kodak24"
SAME_COLOUR_ONLY = 1e9  # a share no neighbour reaches: the check never keeps a candidate


def _chart(gain: float, noise_free: bool) -> np.ndarray:
    from magcam.sim.sensor import SensorModel

    descriptor = json.loads((REPO / "firmware/magcam_fw/descriptor.json").read_text())
    if noise_free:
        descriptor["sensor"].update(full_well_e=1e9, read_noise_e=0.0)
    s = descriptor["sensor"]
    raw = SensorModel(descriptor).render(1632, 1224, 10000 / gain, gain, frame_id=1)
    return ((raw.astype(np.float32) - s["black_level"]) / np.float32(s["white_level"] - s["black_level"]))


def _noise(cfa: np.ndarray):
    from magcam.pipeline.noise import NoiseSampler, sigma_fn

    sampler = NoiseSampler("RGGB")
    sampler.add(cfa)
    return sigma_fn(*sampler.model())


def chart(support: float) -> list[dict]:
    from magcam.pipeline import defects

    rows = []
    for gain, noise_free in ((1, True), (1, False), (4, False), (16, False)):
        cfa = _chart(gain, noise_free)
        sigma = _noise(cfa)
        rows.append({"gain": gain, "noise_free": noise_free,
                     "same_colour_only": defects.correct(cfa.copy(), noise=sigma, support=SAME_COLOUR_ONLY),
                     "with_check": defects.correct(cfa.copy(), noise=sigma, support=support)})
    return rows


def kodak(support: float) -> dict:
    from magcam.pipeline import defects
    from magcam.pipeline.noise import sigma_fn

    rng = np.random.default_rng(0)
    sigma = sigma_fn(5e-5, 1e-6)
    out = {"images": 0, "pixels": 0, "detail_lost_same_colour_only": 0, "detail_lost_with_check": 0,
           "injected_found_by_same_colour_test": 0, "of_those_kept_by_check": 0}
    for path in sorted(KODAK.glob("kodim*.png")):
        cfa = mosaic_rggb(load_rgb(path).astype(np.float32) / 255) ** 2.2 * np.float32(0.8)
        noisy = (cfa + rng.normal(0, 1, cfa.shape) * np.sqrt(cfa * 5e-5 + 1e-6)).astype(np.float32)
        ys, xs = rng.integers(4, cfa.shape[0] - 4, 60), rng.integers(4, cfa.shape[1] - 4, 60)
        keep = np.ones(len(ys), bool)
        for i in range(len(ys)):
            keep[i] = not np.any((np.abs(ys[:i] - ys[i]) <= 4) & (np.abs(xs[:i] - xs[i]) <= 4) & keep[:i])
        ys, xs = ys[keep], xs[keep]
        broken = noisy.copy()
        broken[ys[::2], xs[::2]] = 1.0
        broken[ys[1::2], xs[1::2]] = 0.0
        injected = broken != noisy
        changed = {}
        for name, share in (("same_colour_only", SAME_COLOUR_ONLY), ("with_check", support)):
            fixed = broken.copy()
            defects.correct(fixed, noise=sigma, support=share)
            changed[name] = fixed != broken
            out[f"detail_lost_{name}"] += int(np.count_nonzero(changed[name] & ~injected))
        found = injected & changed["same_colour_only"]
        out["injected_found_by_same_colour_test"] += int(np.count_nonzero(found))
        out["of_those_kept_by_check"] += int(np.count_nonzero(found & ~changed["with_check"]))
        out["images"] += 1
        out["pixels"] += cfa.size
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--support", type=float, default=None, help="the check's share (default: defects.correct's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.support is None:
        import inspect

        from magcam.pipeline import defects

        args.support = inspect.signature(defects.correct).parameters["support"].default
    if not KODAK.is_dir():
        print(f"no Kodak images at {KODAK}", file=sys.stderr)
        return 1
    report = {"support": args.support, "chart": chart(args.support), "kodak": kodak(args.support)}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"defect correction, support {args.support}: pixels changed that are real detail")
    for r in report["chart"]:
        label = "noise-free" if r["noise_free"] else f"gain {r['gain']}"
        print(f"  chart 2 MP {label:>10}: same-colour test only {r['same_colour_only']:6d}   with the check "
              f"{r['with_check']:6d}")
    k = report["kodak"]
    print(f"  Kodak x{k['images']} ({k['pixels'] / 1e6:.1f} MP, noisy): same-colour test only "
          f"{k['detail_lost_same_colour_only']}   with the check {k['detail_lost_with_check']}")
    n, kept = k["injected_found_by_same_colour_test"], k["of_those_kept_by_check"]
    print(f"  injected defects the same-colour test finds: {n}; the check keeps {kept} of them "
          f"({100 * kept / max(n, 1):.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
