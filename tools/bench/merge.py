"""Burst merge benchmark: time and PSNR gain of ``magcam.burst`` on 12 MP handheld bursts.

    python tools/bench/merge.py [--frames 8] [--size 4000x3000] [--iso 400] [--quick] [--json]

It builds a burst from the shared photographs: nine Kodak24 images tiled 3x3, cropped to 4:3
and upscaled (bicubic) to the frame size plus a margin. Each frame sees that scene moved by a
known random handheld shift (frame 0 none; the others integer or sub-pixel, up to
``--max-shift`` raw pixels, bicubic resampling), and one frame also holds a moving object (a
red square nowhere in the reference). Every frame is rendered to a noisy 12-bit Bayer frame by
the simulator's sensor model (shot + read noise at ``--iso``) and written as a DNG.

A child process then reads the DNGs into memory (file read timed apart), merges them
(``burst.merge_images``: alignment and merge timed, the kernels warmed up first on a small
crop), writes the merged DNG (timed apart) and reports its peak RSS. The merged CFA and the
reference frame are compared with the noise-free reference on the CFA in linear light
(normalised raw, white = 1, a 64-pixel border left out): PSNR of the single frame, of the merge,
and the gain in dB; plus the PSNR inside the moving object's square (a ghost would drag it down)
and the alignment error of the median tile displacement against the known shift.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "kodak24"
BORDER = 64
_CHILD = "--child"


def descriptor() -> dict:
    return json.loads((REPO / "firmware/magcam_fw/descriptor.json").read_text())


def scene(width: int, height: int, margin: int, photos: int = 9) -> np.ndarray:
    """uint16 sRGB canvas (height + 2 margin, width + 2 margin, 3): Kodak photos tiled 3x3
    (one for small frames), centre-cropped to the aspect ratio and resized bicubically: about
    2x up for 12 MP (3x3 photos) as for the quick size (the centre half of one photo), so the
    detail per pixel is alike and like a real lens's."""
    files = sorted(SHARED.glob("kodim*.png"))
    if len(files) < photos:
        raise SystemExit(f"need {photos} Kodak24 photographs in {SHARED}")
    side = 3 if photos >= 9 else 1
    imgs = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files[:side * side]]
    imgs = [cv2.resize(im, (768, 512), interpolation=cv2.INTER_AREA) if im.shape[:2] != (512, 768) else im
            for im in imgs]  # a few are portrait
    grid = np.vstack([np.hstack(imgs[r * side:(r + 1) * side]) for r in range(side)])
    if side == 1:  # the centre half, so a small frame is upscaled about as much as a 12 MP one
        gh, gw = grid.shape[:2]
        grid = grid[gh // 4:gh - gh // 4, gw // 4:gw - gw // 4]
    cw, ch = width + 2 * margin, height + 2 * margin
    gh, gw = grid.shape[:2]
    if gw * ch > cw * gh:  # crop the grid to the canvas aspect ratio
        keep = round(gh * cw / ch)
        grid = grid[:, (gw - keep) // 2:(gw - keep) // 2 + keep]
    else:
        keep = round(gw * ch / cw)
        grid = grid[(gh - keep) // 2:(gh - keep) // 2 + keep]
    canvas = cv2.resize(grid.astype(np.uint16) * 257, (cw, ch), interpolation=cv2.INTER_CUBIC)
    return canvas


def shifts(n: int, max_shift: float, seed: int) -> np.ndarray:
    """(n, 2) known displacements (dy, dx) in raw pixels: frame 0 none, then alternately whole
    pixels and sub-pixel, like a hand's tremor."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(-max_shift, max_shift, (n, 2))
    s[0] = 0
    s[1::2] = np.round(s[1::2])
    return s


def render_burst(canvas: np.ndarray, width: int, height: int, margin: int, disp: np.ndarray, *, iso: int,
                 seed: int, moving: int | None):
    """Noisy uint16 CFA frames (frame k shows the scene moved by ``disp[k]``: ``alt[p + d] =
    ref[p]``), the noise-free reference CFA normalised to white = 1, and the moving object's box."""
    from magcam.sim.sensor import SensorModel

    desc = descriptor()
    gain = iso / 100
    exposure = 10000 / gain  # same brightness at every ISO: fewer electrons, more noise
    frames, box = [], None
    for k, (dy, dx) in enumerate(disp):
        m = np.float32([[1, 0, margin - dx], [0, 1, margin - dy]])
        img = cv2.warpAffine(canvas, m, (width, height), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
        if k == moving:
            s = max(16, min(width, height) // 8) // 2 * 2
            y0, x0 = height // 2 - s // 2, width // 3
            img[y0:y0 + s, x0:x0 + s] = (60000, 4000, 4000)
            # Where the object is in the reference's coordinates (the frame moved by disp).
            box = (int(y0 - dy), int(x0 - dx), s)
        frames.append(SensorModel(desc, scene=img, seed=seed).render(width, height, exposure, gain, frame_id=k + 1))
        if k == 0:
            clean = dict(desc, sensor=dict(desc["sensor"], full_well_e=1e9, read_noise_e=0.0))
            truth = SensorModel(clean, scene=img, seed=seed).render(width, height, exposure, gain, frame_id=1)
    s = desc["sensor"]
    truth = (truth.astype(np.float32) - s["black_level"]) / (s["white_level"] - s["black_level"])
    return frames, truth, box, exposure, gain


def psnr(a: np.ndarray, b: np.ndarray, border: int = BORDER) -> float:
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def normalised(path: Path) -> np.ndarray:
    from magcam import rawio

    raw = rawio.read(path)
    return (raw.frame.data.astype(np.float32) - np.float32(raw.black.mean())) / np.float32(raw.white - raw.black.mean())


# ---- the measured process --------------------------------------------------------------------
def child(files: list[str], out: str) -> None:
    """Runs in its own process: read, merge from memory, write; prints one JSON line."""
    import resource

    from magcam import burst, rawio

    t = time.perf_counter()
    images = [rawio.read(f) for f in files]
    read_s = time.perf_counter() - t
    # Warm-up on a small crop: loads the cached numba kernels (compiles them on a first run).
    small = [rawio.from_frame(type(im.frame)(data=np.ascontiguousarray(im.frame.data[:256, :256]), frame_id=0,
                                             cfa=im.cfa, black_level=im.frame.black_level,
                                             white_level=im.frame.white_level)) for im in images[:2]]
    burst.merge_images(small)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t, cpu = time.perf_counter(), time.process_time()
    res = burst.merge_images(images, reference=0)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    t = time.perf_counter()
    burst.write_merged(out, res, images[0])
    write_s = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"read_s": read_s, "merge_s": wall, "merge_cpu_s": cpu, "align_s": res.seconds["align"],
                      "merge_only_s": res.seconds["merge"], "write_s": write_s, "rss_mb": rss,
                      "rss_inputs_mb": rss_before, "noise": res.noise, "noise_source": res.noise_source,
                      "frames": [{"shift_px": f.shift_px, "weight": f.weight} for f in res.frames]}))


def bench(args) -> dict:
    from magcam.dng import write_dng
    from magcam.frame import RawFrame

    width, height = (int(v) for v in args.size.lower().split("x"))
    margin = int(np.ceil(args.max_shift)) + 8
    t = time.perf_counter()
    canvas = scene(width, height, margin, photos=9 if width * height >= 4_000_000 else 1)
    disp = shifts(args.frames, args.max_shift, args.seed)
    moving = args.frames // 2 if args.moving else None
    frames, truth, box, exposure, gain = render_burst(canvas, width, height, margin, disp, iso=args.iso,
                                                      seed=args.seed, moving=moving)
    del canvas
    build_s = time.perf_counter() - t
    desc = descriptor()
    s = desc["sensor"]
    # write_dng stores the sensor's NoiseProfile (DNG tag 51041) from its full well and read
    # noise, as captures do; --measured-noise writes files without it, so the merge measures.
    file_desc = json.loads(json.dumps(desc))
    if args.measured_noise:
        del file_desc["sensor"]["full_well_e"]
    with tempfile.TemporaryDirectory(prefix="magcam-merge-") as tmp:
        files = []
        for k, data in enumerate(frames):
            f = Path(tmp) / f"burst_{k:02d}.dng"
            write_dng(f, RawFrame(data=data, frame_id=k + 1, black_level=s["black_level"],
                                  white_level=s["white_level"], exposure_us=round(exposure), analog_gain=gain),
                      file_desc)
            files.append(str(f))
        del frames
        out = Path(tmp) / "merged.dng"
        load_avg = os.getloadavg()[0]  # timings are only meaningful on an idle machine
        r = subprocess.run([sys.executable, __file__, _CHILD, str(out), *files], capture_output=True, text=True, check=False,
                           timeout=3600)
        if r.returncode != 0:
            raise SystemExit(f"merge failed: {r.stderr.strip()}")
        rep = json.loads(r.stdout.strip().splitlines()[-1])
        merged = normalised(out)
        single = normalised(Path(files[0]))
    rep.update(size=f"{width}x{height}", mp=width * height / 1e6, frames_n=args.frames, iso=args.iso,
               build_s=build_s, cpus=os.cpu_count(), load_avg=load_avg)
    rep["psnr_single_db"] = psnr(single, truth)
    rep["psnr_merged_db"] = psnr(merged, truth)
    rep["psnr_gain_db"] = rep["psnr_merged_db"] - rep["psnr_single_db"]
    if box is not None:
        y0, x0, sz = box
        y0, x0 = max(y0, 0), max(x0, 0)
        region = (slice(y0, y0 + sz), slice(x0, x0 + sz))
        rep["object_psnr_single_db"] = psnr(single[region], truth[region], 0)
        rep["object_psnr_merged_db"] = psnr(merged[region], truth[region], 0)
    est = np.array([f["shift_px"] for f in rep["frames"]])
    rep["align_error_px"] = float(np.abs(est - disp).max())
    rep["known_shifts_px"] = disp.round(2).tolist()
    return rep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT (even)")
    ap.add_argument("--iso", type=int, default=400, help="analog gain x 100; exposure scaled to keep brightness")
    ap.add_argument("--max-shift", type=float, default=24.0, help="largest handheld shift, raw pixels")
    ap.add_argument("--no-moving", dest="moving", action="store_false", help="no moving object")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--measured-noise", action="store_true",
                    help="no NoiseProfile in the DNGs: the merge measures the noise itself")
    ap.add_argument("--quick", action="store_true", help="a smoke test: 4 frames of 640x480")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.frames, args.size, args.max_shift = 4, "640x480", 8.0
    rep = bench(args)
    if args.json:
        print(json.dumps(rep))
        return 0
    print(f"Burst merge: {rep['frames_n']} x {rep['size']} ({rep['mp']:.1f} MP) ISO {rep['iso']}, "
          f"{rep['cpus']} CPUs; frames read from memory")
    print(f"  merge total   {rep['merge_s']:6.2f} s   (align {rep['align_s']:.2f} s, merge {rep['merge_only_s']:.2f} s; "
          f"CPU time {rep['merge_cpu_s']:.2f} s, load average {rep['load_avg']:.1f} at the start)")
    print(f"  file I/O      read {rep['read_s']:.2f} s for {rep['frames_n']} DNGs, write {rep['write_s']:.2f} s")
    print(f"  peak RSS      {rep['rss_mb']:.0f} MB (inputs loaded: {rep['rss_inputs_mb']:.0f} MB)")
    print(f"  PSNR (CFA, linear, vs noise-free reference): single {rep['psnr_single_db']:.2f} dB, merged "
          f"{rep['psnr_merged_db']:.2f} dB, gain {rep['psnr_gain_db']:+.2f} dB")
    if "object_psnr_merged_db" in rep:
        print(f"  moving object region: single {rep['object_psnr_single_db']:.2f} dB, merged "
              f"{rep['object_psnr_merged_db']:.2f} dB")
    print(f"  noise model   {rep['noise_source']}: sigma^2 = {rep['noise'][0]:.3g} level + {rep['noise'][1]:.3g}")
    print(f"  alignment: largest error of a frame's median shift {rep['align_error_px']:.2f} px; mean weights "
          + " ".join(f"{f['weight']:.2f}" for f in rep["frames"]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == _CHILD:
        child(sys.argv[3:], sys.argv[2])
    else:
        sys.exit(main())
