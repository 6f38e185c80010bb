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


_USAGE = "usage: micropython -m magcam_fw.sim_main --flash DIR [--sensor-dir DIR] [--scenario FILE]"
_OPTIONS = ("flash", "sensor-dir", "scenario")


def _args(argv):
    opts = {}
    i = 0
    while i < len(argv):
        if argv[i].startswith("--") and argv[i][2:] in _OPTIONS and i + 1 < len(argv):
            opts[argv[i][2:]] = argv[i + 1]
            i += 2
        else:
            _usage_error("not understood: " + argv[i])
    if "flash" not in opts:
        # It is where the module keeps its descriptor and fault log; the current directory (a
        # checkout, often) is no place for them. ``magcam sim`` gives a fresh one.
        _usage_error("--flash DIR is required: the module's filesystem, kept across resets")
    return opts


def _usage_error(why):
    sys.stderr.write("%s\n%s\n" % (_USAGE, why))  # MicroPython's SystemExit does not print it
    sys.exit(2)


def _read(path):
    with open(path) as f:
        return f.read()


def main(argv=None):
    opts = _args(sys.argv[1:] if argv is None else argv)
    flash = opts["flash"]
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
