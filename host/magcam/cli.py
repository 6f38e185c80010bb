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
@click.option("--port", "-p", required=True, help="Serial device of the module (e.g. /dev/ttyACM0).")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object per event, for scripts.")
@click.option("--duration", type=float, help="Stop after this many seconds (default: until interrupted).")
def monitor(port: str, json_mode: bool, duration: float | None) -> None:
    """Print live events from the module: ring, attach, power, thermal, faults, link."""
    from .camera import connect

    out = Reporter(json_mode)
    try:
        with connect(port) as cam:
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


if __name__ == "__main__":
    main()
