"""Entry point of the firmware in the MicroPython unix port (started by ``magcam sim``).

    micropython -m magcam_fw.sim_main --flash DIR [--sensor-dir DIR] [--scenario FILE]

stdin/stdout are the serial link; the host side of them is a pseudo-terminal. ``--flash`` is
the module's filesystem (descriptor.json, fault log, boot state), kept across resets.
"""

import sys

from magcam_fw import descriptor
from magcam_fw.app import App
from magcam_fw.compat import asyncio
from magcam_fw.hal_sim import SimHal
from magcam_fw.scenario import Player, parse
from magcam_fw.transport_stdio import StdioTransport


def _args(argv):
    opts = {}
    i = 0
    while i < len(argv):
        if argv[i].startswith("--") and i + 1 < len(argv):
            opts[argv[i][2:]] = argv[i + 1]
            i += 2
        else:
            raise SystemExit("usage: sim_main --flash DIR [--sensor-dir DIR] [--scenario FILE]")
    return opts


def _read(path):
    with open(path) as f:
        return f.read()


def main(argv=None):
    opts = _args(sys.argv[1:] if argv is None else argv)
    flash = opts.get("flash", ".")
    scenario = Player(parse(_read(opts["scenario"]))) if "scenario" in opts else None
    hal = SimHal(opts.get("sensor-dir"), scenario, storage=flash)
    transport = StdioTransport()
    text, why = descriptor.usable(flash)
    if why:  # as a board does (main.descriptor_text): the module still comes up
        sys.stderr.write("magcam: descriptor on the device unusable (%s): using the factory one\n" % why)
    try:
        asyncio.run(App(hal, transport, text, descriptor_problem=why).run())
    finally:
        transport.close()


if __name__ == "__main__":
    main()
