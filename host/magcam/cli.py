"""The `magcam` command: a thin layer over the library (magcam.connect, magcam.sim, ...)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import click

from . import __version__
from .atomic import write_bytes_atomic
from .link import LinkError
from .report import Reporter


@click.group()
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
    from .demo import run_demo
    from .sim import SimulatorError

    out = Reporter(json_mode)
    try:
        run_demo(out_dir, out, scene=scene, seed=seed)
    except (LinkError, SimulatorError, OSError, ValueError) as e:
        out.error(str(e))
        sys.exit(1)


@main.command()
@click.option("--scenario", type=click.Path(exists=True, dir_okay=False),
              help="Stimuli, one JSON object per line (turn, detach, attach, load, temp).")
@click.option("--scene", type=click.Path(exists=True, dir_okay=False), help="Image the virtual sensor sees.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sensor noise seed.")
@click.option("--flash", type=click.Path(file_okay=False, path_type=Path),
              help="The module's filesystem (fault log, descriptor), kept across runs (default: a fresh one).")
@click.option("--port-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the serial device path to this file.")
@click.option("--duration", type=float, help="Stop after this many seconds (default: until interrupted).")
def sim(scenario: str | None, scene: str | None, seed: int, flash: Path | None, port_file: Path | None,
        duration: float | None) -> None:
    """Start the simulated module and print its serial device path."""
    from .sim import Simulator, SimulatorError

    try:
        simulator = Simulator(scenario=scenario, scene=scene, seed=seed, flash=flash).start()
    except (SimulatorError, OSError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(1))
    try:
        click.echo(simulator.port)
        sys.stdout.flush()
        if port_file:
            write_bytes_atomic(port_file, (simulator.port + "\n").encode())
        deadline = None if duration is None else time.monotonic() + duration
        while not stop and simulator.alive():
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        status = 0 if (stop or simulator.alive()) else 1
        if status:
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
@click.option("--duration", type=float, help="Stop after this many seconds (default: until interrupted).")
def monitor(port: str, json_mode: bool, duration: float | None) -> None:
    """Print live events from the module: ring, attach, power, thermal, faults, link."""
    from .camera import connect

    out = Reporter(json_mode)
    # A live dashboard on a terminal; in a pipe (or a dumb terminal) plain lines, never ANSI.
    live = out.console is not None and not out.console.is_dumb_terminal
    try:
        with connect(port) as cam:
            if live:
                from .dashboard import run_dashboard

                run_dashboard(cam, duration=duration, console=out.console)
            else:
                for ev in cam.events(duration=duration):
                    out.event(ev)
            if cam.link.closed:
                out.error(f"link closed: {cam.link.close_reason}")
                sys.exit(1)
    except KeyboardInterrupt:
        pass
    except LinkError as e:
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
        check_template(template, count=plan.count, evs=plan.evs)
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


if __name__ == "__main__":
    main()
