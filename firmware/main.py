"""The board entry point (MicroPython and CircuitPython run ``/main.py`` at boot; on a Raspberry
Pi with Blinka: ``python3 firmware/main.py --board boards/rpi-blinka.json``).

Boot, in order:

1. Which runtime (``board.runtime()``), then which board file: ``/board.json`` if present, else
   the ``/boards/*.json`` whose ``match`` fits this machine (``board.pick_board``; on Blinka
   ``--board PATH`` or ``$MAGCAM_BOARD``, else the repository's ``boards/``). A bad or missing
   board file is printed (``magcam: board error: <file>: pins.hall: ...``) and the module
   comes up in safe mode with that reason: link up, nothing driven.
2. Stay in the REPL instead (MicroPython, where the app takes over the REPL's USB port): the
   file ``/magcam_noapp`` exists, the board's escape button is held (``repl_escape``), or
   Ctrl-C arrives within ``repl_escape.boot_wait_ms`` of boot.
3. ``BootState.begin(reset cause)``: after ``safe_mode.after_crashes`` boots in a row without a
   clean run, safe mode (``SafeHal``: load switch held open, the app reports the reason).
4. Build the HAL (``hal_machine.MachineHal`` / ``hal_circuitpython.CircuitPythonHal``), the
   transport (``StdioTransport`` on MicroPython's USB CDC; ``SerialTransport(usb_cdc.data)`` on
   CircuitPython; a pyserial port on Blinka), the app; start the watchdog (``watchdog_ms``):
   the control tick's ``hal.read_power()`` feeds it every 10 ms.
5. Run the app under ``safemode.supervise``, which marks the boot stable after
   ``safe_mode.stable_ms`` with the control loop alive. An exception anywhere from step 4 on:
   ``record_crash(traceback)``, then ``machine.reset()`` / ``microcontroller.reset()`` (Blinka:
   exit status 75 for the service manager to restart).

Each step is a function so the unix port and CPython test them (tests/firmware/test_safemode.py).

Usage::

    # on the device: copy firmware/main.py, firmware/boot.py, firmware/magcam_fw/ and one board
    # file as /board.json, then reset.
    import main; main.main()          # what the runtime does at boot
"""

import sys

from magcam_fw.board import (
    BoardError,
    check_fits,
    load,
    machine_name,
    pick_board,
    runtime,
    validate,
)
from magcam_fw.safemode import BootState, SafeHal, exc_text, supervise, traceback_text

NOAPP_FILE = "/magcam_noapp"
_MCU = ("micropython", "circuitpython")


def log(msg):
    print("magcam: " + msg)


def _exists(path):
    try:
        open(path).close()
        return True
    except OSError:
        return False


def _join(root, name):
    return root.rstrip("/") + "/" + name


def _here():
    f = globals().get("__file__") or ""
    i = f.rfind("/")
    return f[:i] if i > 0 else "."


_COPY_ADVICE = "copy the board file for this device"


def find_board(rt, machine, root="/", argv=(), environ=None):
    """The validated board dict for this device (rule: see the module docstring)."""
    if rt == "blinka":
        explicit = None
        if "--board" in argv:
            i = list(argv).index("--board")
            if i + 1 >= len(argv):
                raise BoardError("--board needs a path")
            explicit = argv[i + 1]
        elif environ and environ.get("MAGCAM_BOARD"):
            explicit = environ["MAGCAM_BOARD"]
        if explicit:  # named on the command line: the runtime must fit, the machine is the user's call
            return check_fits(load(explicit), explicit, rt, None, _COPY_ADVICE)
    explicit = _join(root, "board.json")
    if _exists(explicit):
        return check_fits(load(explicit), explicit, rt, machine, _COPY_ADVICE)
    import json
    import os

    folder = _join(root, "boards")
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except OSError:
        names = []
    cands = []
    for n in names:
        path = _join(folder, n)
        try:
            with open(path) as f:
                cands.append((path, json.loads(f.read())))
        except (OSError, ValueError) as e:
            raise BoardError("%s: not a readable board file (%s)" % (path, e))
    if not cands:
        raise BoardError("no board file: put one at %s (copy one of the repository's boards/*.json) "
                         "or several under %s/" % (explicit, folder))
    path, bd = pick_board(cands, machine, rt)
    validate(bd, path)
    return bd


def make_platform(rt, bd, **modules):
    """The runtime's Platform (watchdog, reset, reset cause, load switch off) for this board."""
    if rt == "micropython":
        from magcam_fw.hal_machine import Platform

        return Platform(bd, **modules)
    from magcam_fw.hal_circuitpython import Platform

    return Platform(bd, **modules)


def make_hal(rt, bd, **modules):
    if rt == "micropython":
        from magcam_fw.hal_machine import MachineHal

        return MachineHal(bd, **modules)
    from magcam_fw.hal_circuitpython import CircuitPythonHal

    return CircuitPythonHal(bd, **modules)


def make_state(rt, bd, nvm=None):
    """The BootState this board's ``safe_mode`` section describes ("nvm": CircuitPython's
    ``microcontroller.nvm``, since CIRCUITPY is read-only to code while USB owns it)."""
    sm = (bd or {}).get("safe_mode", {})
    path = sm.get("state_file", "/magcam_boot.json")
    after = sm.get("after_crashes", 3)
    if path == "nvm":
        if nvm is None:
            import microcontroller

            nvm = microcontroller.nvm
        return BootState("nvm", after, nvm=nvm)
    return BootState(path, after)


def make_transport(rt, bd):
    if rt in ("micropython", "micropython-unix"):
        from magcam_fw.transport_stdio import StdioTransport

        return StdioTransport()
    from magcam_fw.transport_serial import SerialTransport

    if rt == "circuitpython":
        import usb_cdc

        return SerialTransport(usb_cdc.data)
    if bd is None:
        raise BoardError("no board file, so no link.port to talk on")
    import serial

    link = bd["link"]
    return SerialTransport(serial.Serial(link["port"], link.get("baud", 115200), timeout=0))


def descriptor_text(storage):
    """(text, why): the device's own descriptor if it is usable, else the factory one and why
    the device's was not used (the app tells the host too)."""
    from magcam_fw import descriptor

    text, why = descriptor.usable(storage)
    if why:
        log("descriptor on the device unusable (%s): using the factory one" % why)
    return text, why


def stay_in_repl(rt, bd, machine=None, rp2=None, sleep_ms=None, exists=_exists):
    """Why to skip the app and stay in the REPL, or None. Only MicroPython needs this: its app
    owns the REPL's USB port (CircuitPython's console stays free). Ctrl-C during the boot wait
    raises KeyboardInterrupt, which ``main()`` also turns into "stay in the REPL"."""
    if rt != "micropython":
        return None
    if exists(NOAPP_FILE):
        return "%s exists (delete it to run the app)" % NOAPP_FILE
    esc = (bd or {}).get("repl_escape") or {}
    if esc.get("bootsel"):
        if rp2 is None:
            import rp2
        if rp2.bootsel_button():
            return "BOOTSEL is held"
    elif "pin" in esc:
        if machine is None:
            import machine
        low = esc.get("active", "low") == "low"
        p = machine.Pin(esc["pin"], machine.Pin.IN, machine.Pin.PULL_UP if low else machine.Pin.PULL_DOWN)
        if p.value() == (0 if low else 1):
            return "the escape button (GPIO %d) is held" % esc["pin"]
    wait = esc.get("boot_wait_ms", 0)
    if wait:
        log("starting in %d ms: Ctrl-C to stay in the REPL" % wait)
        if sleep_ms is None:
            import time

            sleep_ms = time.sleep_ms
        sleep_ms(wait)
    return None


def crashed(e, state, platform, reset=True):
    """The crash path: keep why, then reset (``reset=False``: safe mode, stay up)."""
    text = exc_text(e)
    log("crashed: " + text)
    log(traceback_text(e).rstrip())
    if state is not None:
        state.record_crash(text)
    if reset and platform is not None:
        platform.reset()


def run_app(rt, bd, hal, state, platform):
    """Build the transport and the app, start the watchdog, run until the link closes."""
    from magcam_fw.app import App
    from magcam_fw.compat import asyncio, sleep_ms

    transport = make_transport(rt, bd)
    try:
        text, why = descriptor_text(hal.storage)
        app = App(hal, transport, text, descriptor_problem=why)
        wd = (bd or {}).get("watchdog_ms", 5000)
        if wd and hal.watchdog(wd) is None:
            log("no hardware watchdog on this runtime")
        stable = (bd or {}).get("safe_mode", {}).get("stable_ms", 30000)
        asyncio.run(supervise(app, hal, state, stable, sleep_ms))
    finally:
        close = getattr(transport, "close", None)
        if close:
            close()


def main(argv=None):
    rt = runtime()
    argv = sys.argv[1:] if argv is None else argv
    bd = None
    platform = None
    state = None
    reason = None
    try:
        try:
            environ = None
            if rt == "blinka":
                import os

                environ = os.environ
            root = _here() + "/.." if rt == "blinka" else "/"
            bd = find_board(rt, machine_name(rt), root, argv, environ)
            log("board %s (%s)" % (bd["name"], bd["_path"]))
            for w in bd["_warnings"]:
                log("warning: " + w)
        except BoardError as e:
            reason = str(e)
            log("board error: " + reason)
        why = stay_in_repl(rt, bd)
        if why:
            log("staying in the REPL: " + why)
            return
    except KeyboardInterrupt:
        log("staying in the REPL (Ctrl-C)")
        return
    if bd is not None:
        platform = make_platform(rt, bd)
        state = make_state(rt, bd)
        safe, why = state.begin(platform.reset_cause())
        if state.error:
            log(state.error)
        if safe:
            reason = why
        elif why:
            log("the previous boot ended without a clean run: " + why)
    if reason is None:
        try:
            hal = make_hal(rt, bd)
        except BoardError as e:  # the file passed the checks but this board rejects a pin
            reason = str(e)
            log("board error: " + reason)
        except Exception as e:
            crashed(e, state, platform)
            raise
    if reason is not None:
        log("SAFE MODE: " + reason)
        hal = SafeHal(reason, platform, (bd or {}).get("storage", "/"))
    try:
        run_app(rt, bd, hal, state, platform)
    except Exception as e:
        crashed(e, state, platform, reset=reason is None)
        raise
    log("link closed")
    if rt in _MCU and platform is not None:
        platform.reset()


if __name__ == "__main__":
    main()
